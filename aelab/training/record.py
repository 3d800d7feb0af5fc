"""What a run leaves in its folder: metrics.json (written atomically), Hydra's record
(`.hydra/`), and its HParams session on the logger."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.training.folder import CHECKPOINT, METRICS

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


def log_session(
    logger: Any, cfg: DictConfig, choices: dict[str, str], result: dict[str, Any],
    job: tuple[list[str], set[str]] | None = None,
) -> None:
    """The run's HParams session (hyperparameters, final/val_* and final/test_* metrics, its
    status), then the logger closed; nothing without a logger. Every session declares both
    val and test columns: TensorBoard takes its columns from one run's session, and a
    diverged run's (no test metrics) would otherwise hide the test columns of all. `job`:
    (overrides, swept keys) of a run that is no Hydra job (a stacked run), for the session."""
    from aelab.training.loggers import TensorBoardLogger

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
