"""What a run leaves in its folder: metrics.json (written atomically), Hydra's record
(`.hydra/`), and its HParams session on the logger."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.training.folder import CHECKPOINT, METRICS

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


# the final diagnostics that compare runs: metrics.json's "diagnostics" key -> session metric
SESSION_DIAGNOSTICS = {
    "blob/ev": "final/ev",
    "collapse/norm_ratio/W1": "final/W1_norm_ratio",
    "latent/active_units": "final/active_units",  # a VAE's
    "latent/kl_total": "final/kl_total",
}
TEST_ONLY = ("iwae",)  # test metrics that validation does not compute


def session_metrics(result: dict[str, Any], variational: bool) -> tuple[dict[str, float],
                                                                        list[str]]:
    """(the run's final metrics, the session's metric columns): final/val_* and final/test_*
    (both declared, whatever the run reached: TensorBoard takes its columns from one run's
    session, and a diverged run's, with no test, would hide the test columns of all), and
    the final diagnostics of SESSION_DIAGNOSTICS. No column without a value in some run."""
    names = {*result.get("val", {}), *result.get("test", {})} - {"step", "epoch", *TEST_ONLY}
    tags = [f"final/{part}_{k}" for part in ("val", "test") for k in sorted(names)]
    if variational:
        tags += [f"final/test_{k}" for k in TEST_ONLY]
    final = {f"final/{part}_{k}": float(v) for part in ("val", "test")
             for k, v in result.get(part, {}).items() if f"final/{part}_{k}" in tags}
    diagnostics = result.get("diagnostics") or {}
    for key, tag in SESSION_DIAGNOSTICS.items():
        if key in diagnostics:
            tags.append(tag)
            final[tag] = float(diagnostics[key])
    return {k: v for k, v in final.items() if math.isfinite(v)}, tags


def log_session(
    logger: Any, cfg: DictConfig, choices: dict[str, str], result: dict[str, Any],
    job: tuple[list[str], set[str]] | None = None,
) -> None:
    """The run's hyperparameters and final metrics (`session_metrics`; the verdict as the
    hyperparameter `verdict`) on its logger, then the logger closed; nothing without a logger.

    aelab's TensorBoardLogger writes an HParams session ending with the run's status; any
    other logger gets `log_hyperparams` (with `status` too) and `log_metrics` of the final
    metrics. A logger that fails here is reported, not fatal: metrics.json is written
    already. `job`: (overrides, swept keys) of a run that is no Hydra job (a stacked run)."""
    from aelab.training.loggers import TensorBoardLogger

    if not logger:
        return
    status = result["status"]
    final, tags = session_metrics(result, bool(OmegaConf.select(cfg, "model.variational")))
    params = hparams(cfg, choices)
    if result.get("verdict"):
        params["verdict"] = result["verdict"]
    try:
        if isinstance(logger, TensorBoardLogger):
            overrides, swept = job if job is not None else (None, None)
            logger.log_hyperparams(params, metrics=final, status=status, metric_tags=tags,
                                   overrides=overrides, swept_keys_=swept)
        else:
            logger.log_hyperparams({**params, "status": status})
            if final:
                step = (result.get("test") or {}).get("step") or (
                    result.get("diverged_at") or {}).get("global_step")
                logger.log_metrics(final, step=None if step is None else int(step))
        logger.finalize("success" if status == "completed" else "failed")
    except Exception as exc:  # the run's record is metrics.json: a logger does not undo it
        log.warning("the %s logger could not record the run's end (%s: %s); metrics.json holds "
                    "it", type(logger).__name__, type(exc).__name__, exc)
    finish_logger(logger)


def finish_logger(logger: Any) -> None:
    """End a Weights & Biases run (Lightning's WandbLogger leaves it open), so that the next
    run of a sweep in this process gets a run of its own."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        try:
            logger.experiment.finish()
        except Exception as exc:
            log.warning("wandb could not finish the run (%s: %s)", type(exc).__name__, exc)


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


def run_result(
    out_dir: Path,
    cfg: DictConfig,
    choices: dict[str, str],
    overrides: list[str] | None,
    started: float,
    status: str,
    history: dict[str, list[float]] | None,
    *,
    epochs: int | None = None,
    test: dict[str, float] | None = None,
    error: BaseException | str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The dict a run writes to metrics.json: status, length, choices, the last validation
    metrics, the test metrics, the per-epoch history and anything in `extra` (diagnostics).
    `epochs` defaults to the history's length."""
    history = history or {}
    result: dict[str, Any] = {
        "status": status,
        "epochs": epochs if epochs is not None
        else max((len(v) for v in history.values()), default=0),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "seed": cfg.get("seed"),
        "choices": choices,
        "overrides": list(overrides or []),
        "val": {k.removeprefix("val/"): v[-1] for k, v in history.items() if k.startswith("val/")},
        "test": test or {},
        "history": history,
        "checkpoint": "last.ckpt" if (out_dir / CHECKPOINT).is_file() else None,
    }
    if error is not None:
        result["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return result | extra


def write_result(out_dir: Path, cfg: DictConfig, result: dict[str, Any], logger: Any = None,
                 job: tuple[list[str], set[str]] | None = None) -> dict[str, Any]:
    """metrics.json (atomically) and the HParams session of a finished or stopped run; a
    finished run gets its `diagnosis` (aelab.doctor), printed too."""
    from aelab.doctor.diagnose import attach_diagnosis

    attach_diagnosis(result, cfg)
    write_json(out_dir / METRICS, result)
    log_session(logger, cfg, result["choices"], result, job)
    return result


def record_unfinished(
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
    result = run_result(out_dir, cfg, choices, overrides, started, status, history, error=error,
                        **extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_hydra_record(out_dir, cfg)
    return write_result(out_dir, cfg, result, logger, job)
