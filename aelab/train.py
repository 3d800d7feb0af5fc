"""One run: build everything from the config, fit, test, write metrics.json and hparams.

Reliability (see aelab/reliability.py): bad input is refused before anything but the log
is written; resume=true skips finished runs and continues from last.ckpt; a non-finite
loss ends the run as "diverged"; SIGINT/SIGTERM and crashes are recorded in metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.checks import check_config
from aelab.errors import AelabError, ConfigError, Diverged, RunFolderError
from aelab.keys import check_keys
from aelab.reliability import (
    CHECKPOINT,
    RunFolderLock,
    check_checkpoint_config,
    describe_checkpoint,
    divergence_causes,
    fingerprint,
    finished,
    read_checkpoint,
    read_metrics,
    refuse_used_folder,
    remove_stale_events,
)

log = logging.getLogger("aelab")

HPARAM_KEYS = (  # keys a run's config lacks (model.channels of an MLP) are left out
    "model.hidden",
    "model.channels",
    "model.code_dim",
    "model.variational",
    "model.beta",
    "model.output_activation",
    "data.batch_size",
    "optimizer.lr",
    "optimizer.weight_decay",
    "trainer.max_epochs",
    "seed",
    "l2_penalty",
    "loss.reduction",
)


MODULE_TRAINER_KEYS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically: a temporary file, flushed to disk, then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    """NaN and inf survive json.dumps; anything else unknown (a tensor) becomes a float or str."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def hparams(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The run's hyperparameters for TensorBoard's HParams tab: group choices and key values."""
    params: dict[str, Any] = {
        k: v
        for k, v in choices.items()
        if v is not None and "/" not in k
        and k not in ("hydra", "paths", "logger", "callbacks", "trainer")
    }
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


def log_session(
    logger: Any, cfg: DictConfig, choices: dict[str, str], result: dict[str, Any],
    job: tuple[list[str], set[str]] | None = None,
) -> None:
    """The run's HParams session (hyperparameters, final/val_* and final/test_* metrics, its
    status), then the logger closed; nothing without a logger. Every session declares both
    val and test columns: TensorBoard takes its columns from one run's session, and a
    diverged run's (no test metrics) would otherwise hide the test columns of all. `job`:
    (overrides, swept keys) of a run that is no Hydra job (a stacked run), for the session."""
    from aelab.loggers import TensorBoardLogger

    if not logger:
        return
    final = {f"final/{part}_{k}": v for part in ("val", "test")
             for k, v in result.get(part, {}).items() if math.isfinite(v)}
    status = result["status"]
    if isinstance(logger, TensorBoardLogger):
        names = {*result.get("val", {}), *result.get("test", {})}
        tags = [f"final/{part}_{k}" for part in ("val", "test") for k in sorted(names)]
        overrides, swept = job if job is not None else (None, None)
        logger.log_hyperparams(hparams(cfg, choices), metrics=final, status=status,
                               metric_tags=tags, overrides=overrides, swept_keys_=swept)
    elif status == "completed":
        logger.log_hyperparams(hparams(cfg, choices), metrics=final)
    logger.finalize("success" if status == "completed" else "failed")


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
HYDRA_RECORD = ".hydra"


def save_hydra_record(out_dir: Path, cfg: DictConfig) -> None:
    """Write Hydra's record of the run (`.hydra/{config,hydra,overrides}.yaml`) into its folder.

    Hydra itself writes none (`hydra.output_subdir: null`): the run writes it only once it owns
    the folder, so a refused rerun or resume leaves an existing run's record as it was.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    folder = out_dir / HYDRA_RECORD
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


@contextmanager
def restored_env(name: str) -> Iterator[None]:
    """Put environment variable `name` back as it was (or absent) on leaving."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _not_noise(record: logging.LogRecord) -> bool:
    """False for Lightning's tips and its "GPU/TPU/HPU available" lines when none is used."""
    message = record.getMessage()
    if "Tip:" in message:
        return False
    if record.levelno == logging.INFO and message.startswith(("TPU available", "HPU available")):
        return False
    return not (message.startswith("GPU available:") and "used: False" in message)


def quiet_lightning() -> None:
    """Route Lightning's messages through Hydra's log once (no duplicates, no tips)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_noise)
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(
        logging.WARNING
    )
    for message in (".*LeafSpec.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=message)


def run(
    cfg: DictConfig,
    choices: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    record_refusal: bool = False,
) -> dict[str, Any]:
    """Train and test one autoencoder; return the dict written to `metrics.json`.

    The run owns its folder while it runs (`RunFolderLock`). Invalid input raises an
    AelabError before anything is written but the log (`record_refusal=True`, in a
    multirun, records it: status "refused" for a ConfigError, "failed" for missing data
    or an unreadable checkpoint). With `resume=true` a finished
    run is skipped (its metrics returned) and a run with a `last.ckpt` continues from
    it. A non-finite loss returns status "diverged"; an unexpected exception records
    "failed" and propagates; SIGINT/SIGTERM record "interrupted" and raise SystemExit
    (130 / 143).
    """
    started = time.perf_counter()
    choices = dict(choices or {})
    out_dir = Path(cfg.paths.output_dir)
    with RunFolderLock(out_dir):
        resume = cfg.get("resume", False)
        previous = read_metrics(out_dir)
        if resume is True and finished(previous, cfg.trainer.get("max_epochs")):
            log.info(
                "resume=true: %s already %s (%s epochs); skipped. Delete its metrics.json to run "
                "it again.", out_dir, previous["status"], previous.get("epochs"),
            )
            return previous
        if resume is not True:
            refuse_used_folder(out_dir)
        if previous is None and not (out_dir / CHECKPOINT).exists():
            save_hydra_record(out_dir, cfg)  # a fresh folder: its record from the start
        overrides = list(overrides or [])
        live: dict[str, Any] = {}  # the logger and the MetricHistory, once _run has made them
        try:
            with restored_env(NVML_CHECK):
                return _run(cfg, choices, overrides, out_dir, started, live)
        except RunFolderError:
            raise
        except AelabError as exc:
            if record_refusal:  # a combination refused by design is a result of the sweep
                status = "refused" if isinstance(exc, ConfigError) else "failed"
                _record(out_dir, cfg, choices, started, status, error=exc, overrides=overrides,
                        **_live(live))
            raise
        except Exception as exc:
            _record(out_dir, cfg, choices, started, "failed", error=exc, overrides=overrides,
                    **_live(live))
            raise


def _live(live: dict[str, Any]) -> dict[str, Any]:
    """_record's `logger` and `history` from what _run made before it stopped."""
    history = live.get("history")
    return {"logger": live.get("logger"), "history": history.history if history else None}


def _record(
    out_dir: Path,
    cfg: DictConfig,
    choices: dict[str, str],
    started: float,
    status: str,
    *,
    error: BaseException | str | None = None,
    history: dict[str, list[float]] | None = None,
    overrides: list[str] | None = None,
    logger: Any = None,
    job: tuple[list[str], set[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write metrics.json (and the HParams session, with a logger) for a run that did not
    complete; the last finite metrics come along (`job`: see log_session)."""
    history = history or {}
    result: dict[str, Any] = {
        "status": status,
        "epochs": max((len(v) for v in history.values()), default=0),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "seed": cfg.get("seed"),
        "choices": choices,
        "overrides": overrides or [],
        "val": {k.removeprefix("val/"): v[-1] for k, v in history.items() if k.startswith("val/")},
        "test": {},
        "history": history,
        "checkpoint": "last.ckpt" if (out_dir / CHECKPOINT).is_file() else None,
    }
    if error is not None:
        result["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    result |= extra
    out_dir.mkdir(parents=True, exist_ok=True)
    save_hydra_record(out_dir, cfg)
    write_json(out_dir / "metrics.json", result)
    log_session(logger, cfg, choices, result, job)
    return result


def _interruption(exc: BaseException, seen: BaseException | None) -> int | None:
    """The exit code for a SIGINT (130) or SIGTERM (143) that stopped fit, else None."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    for e in (exc, seen):
        if isinstance(e, SIGTERMException):
            return 128 + signal.SIGTERM
        if isinstance(e, KeyboardInterrupt):
            return 128 + signal.SIGINT
    return None


def _diagnostics(trainer: Any, diverged: str | None = None) -> dict[str, Any]:
    """The Diagnostics callback's verdict and final numbers for metrics.json ({} when it is off)."""
    from aelab.diagnostics_callback import Diagnostics

    found = [c for c in trainer.callbacks if isinstance(c, Diagnostics)]
    return found[0].summary(diverged) if found else {}


def _resume_hint(out_dir: Path) -> str:
    """How to continue this run: the same command with resume=true in the same folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return f"resume=true and the same paths.output_dir={out_dir}"
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"the same sweep command plus resume=true hydra.sweep.dir={hydra_cfg.sweep.dir}"
    return f"the same command plus resume=true hydra.run.dir={out_dir}"


def _is_tensorboard(logger_cfg: DictConfig) -> bool:
    """True when the logger config builds a TensorBoardLogger (whose kwargs reach SummaryWriter)."""
    from hydra.utils import get_class
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return issubclass(get_class(str(logger_cfg.get("_target_"))), TensorBoardLogger)
    except Exception:  # not a class: instantiate will say what is wrong
        return False


def _run(
    cfg: DictConfig,
    choices: dict[str, str],
    overrides: list[str],
    out_dir: Path,
    started: float,
    live: dict[str, Any],
) -> dict[str, Any]:
    check_keys(cfg)
    check_config(cfg)

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Checkpoint, ProgressBar

    from aelab.build import build, instantiate
    from aelab.callbacks import FiniteGuard, MetricHistory, RunRecord
    from aelab.loggers import remove_sessions

    quiet_lightning()

    ckpt_path = out_dir / CHECKPOINT
    resume_from: Path | None = None
    record = RunRecord(fingerprint(cfg), overrides)
    if cfg.get("resume") and ckpt_path.is_file():
        checkpoint = read_checkpoint(ckpt_path)
        check_checkpoint_config(ckpt_path, checkpoint, cfg, record.state_key)
        resume_from, resume_step = ckpt_path, int(checkpoint.get("global_step", 0))
        del checkpoint

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)

    logger_cfg = cfg.get("logger")
    if logger_cfg and resume_from is not None and _is_tensorboard(logger_cfg):
        # hide the killed attempt's events after the checkpoint: TensorBoard shows one curve
        logger = instantiate(logger_cfg, purge_step=resume_step)
    else:
        logger = instantiate(logger_cfg) if logger_cfg else False
    history = MetricHistory()
    live.update(logger=logger, history=history)
    guard = FiniteGuard(divergence_causes(cfg, choices))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    try:
        trainer = L.Trainer(
            # clipping and accumulation are applied by the module (manual optimisation)
            **{k: v for k, v in cfg.trainer.items() if k not in MODULE_TRAINER_KEYS},
            logger=logger,
            callbacks=[*callbacks, guard, history, record],
            default_root_dir=str(out_dir),
            # only the checkpoint callbacks of the config (LastCheckpoint): none of Lightning's
            enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        )
    except Exception as exc:  # MisconfigurationException, a missing accelerator package, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"trainer: Lightning refuses these trainer options ({first}); change the trainer.* "
            f"option it names (see conf/trainer/default.yaml)."
        ) from None

    if trainer.strategy.root_device.type == "cpu":
        # Lightning sets this (to keep forks CUDA-free); on a machine without a GPU it makes
        # every torch.cuda.is_available() - called by Adam at each step - dlopen NVML anew
        # (~30 us). Training on the CPU never initialises CUDA, so the plain check is safe.
        os.environ[NVML_CHECK] = "0"

    # from here on the run writes to its folder
    save_hydra_record(out_dir, cfg)
    if resume_from is None:
        remove_stale_events(out_dir)
        log.info("training from scratch -> %s", out_dir)
    else:
        remove_sessions(out_dir)  # the interrupted attempt's: this run writes its own
        log.info("resume=true: continuing from %s", resume_from)
    try:
        trainer.fit(
            parts.module,
            datamodule=parts.data,
            ckpt_path=str(resume_from) if resume_from else None,
            weights_only=True,
        )
    except Diverged as exc:
        message = f"{exc}\n{describe_checkpoint(out_dir)}."
        log.error("%s", message)
        return _record(
            out_dir, cfg, choices, started, "diverged",
            error=message, history=history.history, overrides=overrides, logger=logger,
            diverged_at={"epoch": exc.epoch, "step": exc.step, "global_step": exc.global_step},
            **_diagnostics(trainer, diverged=exc.what),
        )
    except (KeyboardInterrupt, SystemExit) as exc:
        code = _interruption(exc, record.exception)
        if code is None:
            raise
        message = (
            f"interrupted ({signal.Signals(code - 128).name}) at epoch {trainer.current_epoch}; "
            f"{describe_checkpoint(out_dir)}. Continue with {_resume_hint(out_dir)}."
        )
        log.warning("%s", message)
        _record(out_dir, cfg, choices, started, "interrupted", error=message,
                history=history.history, overrides=overrides, logger=logger)
        raise SystemExit(code) from None

    val = {
        k.removeprefix("val/"): v[-1] for k, v in history.history.items() if k.startswith("val/")
    }
    try:
        tested = trainer.test(parts.module, datamodule=parts.data, verbose=False)[0]
    except (KeyboardInterrupt, SystemExit) as exc:
        code = _interruption(exc, record.exception) or 128 + signal.SIGINT
        _record(out_dir, cfg, choices, started, "interrupted", history=history.history,
                error="interrupted during the test; resume=true runs the test again",
                overrides=overrides, logger=logger)
        raise SystemExit(code) from None
    test = {k.removeprefix("test/"): float(v) for k, v in tested.items()}

    result = {
        "status": "completed",
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "seed": cfg.seed,
        "choices": choices,
        "overrides": overrides,
        "val": val,
        "test": test,
        "history": history.history,
        "checkpoint": "last.ckpt" if ckpt_path.is_file() else None,
    }
    if record.resumed_from_epoch is not None:
        result["resumed_from_epoch"] = record.resumed_from_epoch
    result |= _diagnostics(trainer)
    write_json(out_dir / "metrics.json", result)
    log_session(logger, cfg, choices, result)
    log.info(
        "test mse %.5f  test bce %.5f  (%d epochs, %.1f s) -> %s",
        test["mse"],
        test["bce"],
        result["epochs"],
        result["wall_time_s"],
        out_dir,
    )
    if "verdict" in result:
        log.info("verdict: %s (%s)", result["verdict"], result["verdict_reason"])
    return result
