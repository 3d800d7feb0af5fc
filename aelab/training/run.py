"""One run: compose -> validate -> build -> train -> record (metrics.json, HParams).

Reliability (aelab.training.folder, aelab.config.resume): bad input is refused before anything
but the log is written; resume=true skips finished runs (of the same settings) and continues
from last.ckpt; a non-finite loss ends the run as "diverged"; SIGINT/SIGTERM and crashes are
recorded in metrics.json; a folder that can no longer be written stops the run with its last
good checkpoint kept (`FolderNotWritable`, nothing recorded).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.config.checks import trainer_refusal
from aelab.config.validate import Validated, instantiate, validate
from aelab.errors import (
    AelabError,
    ConfigError,
    Diverged,
    FolderNotWritable,
    Interrupted,
    RunFolderError,
)
from aelab.training.divergence import divergence_causes
from aelab.training.folder import (
    CHECKPOINT,
    RunFolderLock,
    describe_checkpoint,
    finished,
    read_metrics,
    refuse_used_folder,
    remove_stale_events,
)
from aelab.training.record import (
    record_unfinished,
    run_result,
    save_hydra_record,
    write_result,
)

log = logging.getLogger("aelab")

MODULE_TRAINER_KEYS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
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
    or an unreadable checkpoint, unless the folder holds a run: RunFolderError, nothing
    written). With `resume=true` a finished
    run is skipped (its metrics returned) and a run with a `last.ckpt` continues from
    it. A non-finite loss returns status "diverged"; an unexpected exception records
    "failed" and propagates; SIGINT/SIGTERM record "interrupted" and raise SystemExit
    (130 / 143).
    """
    started = time.perf_counter()
    choices = dict(choices or {})
    out_dir = Path(cfg.paths.output_dir)
    overrides = list(overrides or [])
    with RunFolderLock(out_dir):
        resume = cfg.get("resume", False) is True
        previous = read_metrics(out_dir)
        # a run is there that a refusal must not overwrite: finished, or with a checkpoint
        held = finished(previous, None) or (out_dir / CHECKPOINT).exists()
        if not resume:
            refuse_used_folder(out_dir)
        live: dict[str, Any] = {}  # the logger and the MetricHistory, once _run has made them
        try:
            checked = validate(cfg, out_dir)
            if resume and finished(previous, cfg.trainer.get("max_epochs")):
                epochs = previous.get("epochs")
                log.info(
                    "resume=true: %s already %s (%s epoch%s); skipped. Delete its metrics.json "
                    "to run it again.", out_dir, previous["status"], epochs,
                    "" if epochs == 1 else "s",
                )
                return previous
            if previous is None and not (out_dir / CHECKPOINT).exists():
                save_hydra_record(out_dir, cfg)  # a fresh folder: its record from the start
            with restored_env(NVML_CHECK):
                return _run(checked, choices, overrides, out_dir, started, live)
        except RunFolderError:
            raise
        except AelabError as exc:
            if record_refusal and held:  # the run there is not this one's to overwrite
                raise RunFolderError(f"{exc} (resume=true: {out_dir} holds a finished run or "
                                     f"a checkpoint, left as it was)") from None
            if record_refusal:  # a combination refused by design is a result of the sweep
                status = "refused" if isinstance(exc, ConfigError) else "failed"
                record_unfinished(out_dir, cfg, choices, started, status, error=exc,
                                  overrides=overrides, **_live(live))
            raise
        except Exception as exc:
            if not os.access(out_dir, os.W_OK | os.X_OK):  # nothing can be recorded there
                raise stopped_unwritable(out_dir, exc) from None
            record_unfinished(out_dir, cfg, choices, started, "failed", error=exc,
                              overrides=overrides, **_live(live))
            raise


def stopped_unwritable(out_dir: Path, exc: BaseException) -> FolderNotWritable:
    """The run's stop when its folder became unwritable while it trained (`exc`: the write
    that failed); its last good checkpoint stays."""
    return FolderNotWritable(
        f"run folder {out_dir} can no longer be written ({type(exc).__name__}: {exc}); the "
        f"run stopped. {describe_checkpoint(out_dir)}. Make the folder writable, then continue "
        f"with {_resume_hint(out_dir)}.", mid_run=True)


def _live(live: dict[str, Any]) -> dict[str, Any]:
    """_record's `logger` and `history` from what _run made before it stopped."""
    history = live.get("history")
    return {"logger": live.get("logger"), "history": history.history if history else None}


def _interruption(exc: BaseException, seen: BaseException | None) -> int | None:
    """The exit code for a SIGINT (130) or SIGTERM (143) that stopped fit, else None
    (`Interrupted`: SIGTERM in a stacked sweep, aelab.errors.stop_on_sigterm)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    for e in (exc, seen):
        if isinstance(e, (SIGTERMException, Interrupted)):
            return 128 + signal.SIGTERM
        if isinstance(e, KeyboardInterrupt):
            return 128 + signal.SIGINT
    return None


def _diagnostics(trainer: Any, diverged: str | None = None) -> dict[str, Any]:
    """The Diagnostics callback's verdict and final numbers for metrics.json ({} when it is off)."""
    from aelab.diagnostics.callback import Diagnostics

    found = [c for c in trainer.callbacks if isinstance(c, Diagnostics)]
    return found[0].summary(diverged) if found else {}


def _resume_hint(out_dir: Path) -> str:
    """How to continue this run: the same command with resume=true in the same folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return f"resume=true and the same {shlex.quote(f'paths.output_dir={out_dir}')}"
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        where = shlex.quote(f"hydra.sweep.dir={hydra_cfg.sweep.dir}")
        return f"the same sweep command plus resume=true {where}"
    return f"the same command plus resume=true {shlex.quote(f'hydra.run.dir={out_dir}')}"


def _is_tensorboard(logger_cfg: DictConfig) -> bool:
    """True when the logger config builds a TensorBoardLogger (whose kwargs reach SummaryWriter)."""
    from hydra.utils import get_class
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return issubclass(get_class(str(logger_cfg.get("_target_"))), TensorBoardLogger)
    except Exception:  # not a class: instantiate will say what is wrong
        return False


def _run(
    checked: Validated,
    choices: dict[str, str],
    overrides: list[str],
    out_dir: Path,
    started: float,
    live: dict[str, Any],
) -> dict[str, Any]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Checkpoint, ProgressBar

    from aelab.training.build import build
    from aelab.training.callbacks import FiniteGuard, MetricHistory, RunRecord
    from aelab.training.loggers import remove_sessions

    quiet_lightning()
    cfg, resume_from, resume_step = checked.cfg, checked.resume_from, checked.resume_step
    record = RunRecord(checked.fingerprint, overrides)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, verbose=False)
    parts = build(checked)

    logger_cfg = cfg.get("logger")
    try:
        if logger_cfg and resume_from is not None and _is_tensorboard(logger_cfg):
            # hide the killed attempt's events after the checkpoint: TensorBoard shows one curve
            logger = instantiate(logger_cfg, purge_step=resume_step)
        else:
            logger = instantiate(logger_cfg) if logger_cfg else False
    except Exception as exc:  # a missing package, an option the class refuses, ...
        raise ConfigError(f"logger: {type(exc).__name__}: {exc}; choose logger=tensorboard, "
                          f"csv, wandb or none, or fix the logger.* option it names.") from None
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
        raise ConfigError(trainer_refusal(cfg.trainer, exc)) from None

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
        return record_unfinished(
            out_dir, cfg, choices, started, "diverged",
            error=message, history=history.history, overrides=overrides, logger=logger,
            diverged_at={"epoch": exc.epoch, "step": exc.step, "global_step": exc.global_step},
            **_diagnostics(trainer, diverged=exc.what),
        )
    except (KeyboardInterrupt, SystemExit, Interrupted) as exc:
        code = _interruption(exc, record.exception)
        if code is None:
            raise
        message = (
            f"interrupted ({signal.Signals(code - 128).name}) in epoch "
            f"{trainer.current_epoch + 1}/{trainer.max_epochs}; "
            f"{describe_checkpoint(out_dir)}. Continue with {_resume_hint(out_dir)}."
        )
        log.warning("%s", message)
        record_unfinished(out_dir, cfg, choices, started, "interrupted", error=message,
                history=history.history, overrides=overrides, logger=logger)
        raise SystemExit(code) from None

    try:
        tested = trainer.test(parts.module, datamodule=parts.data, verbose=False)[0]
    except (KeyboardInterrupt, SystemExit, Interrupted) as exc:
        code = _interruption(exc, record.exception) or 128 + signal.SIGINT
        record_unfinished(out_dir, cfg, choices, started, "interrupted", history=history.history,
                error="interrupted during the test; resume=true runs the test again",
                overrides=overrides, logger=logger)
        raise SystemExit(code) from None
    test = {k.removeprefix("test/"): float(v) for k, v in tested.items()}

    extra = {} if record.resumed_from_epoch is None else {
        "resumed_from_epoch": record.resumed_from_epoch}
    result = run_result(out_dir, cfg, choices, overrides, started, "completed", history.history,
                        epochs=trainer.current_epoch, test=test, **extra, **_diagnostics(trainer))
    write_result(out_dir, cfg, result, logger)
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
