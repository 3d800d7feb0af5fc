"""One run: build everything from the config, fit, test, write metrics.json and hparams."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.checks import check_config

log = logging.getLogger("aelab")

HPARAM_KEYS = (
    "data.name",
    "model.hidden",
    "model.output_activation",
    "data.batch_size",
    "optimizer.lr",
    "trainer.max_epochs",
    "seed",
    "l2_penalty",
    "loss.reduction",
)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def hparams(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The run's hyperparameters for TensorBoard's HParams tab: group choices and key values."""
    params: dict[str, Any] = {
        k: v
        for k, v in choices.items()
        if v is not None and "/" not in k and k not in ("paths", "logger", "callbacks", "trainer")
    }
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key)
        params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


def quiet_lightning() -> None:
    """Route Lightning's messages through Hydra's log once (no duplicates, no tips)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in record.getMessage()
    )
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(
        logging.WARNING
    )
    for message in (".*LeafSpec.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=message)


def run(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Train and test one autoencoder; return the dict written to `metrics.json`."""
    started = time.perf_counter()
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ProgressBar

    from aelab.build import build
    from aelab.callbacks import MetricHistory

    quiet_lightning()

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)

    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    history = MetricHistory()
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = L.Trainer(
        **cfg.trainer,
        logger=logger,
        callbacks=[*callbacks, history],
        default_root_dir=str(out_dir),
        enable_checkpointing=False,
    )
    trainer.fit(parts.module, datamodule=parts.data)
    val = {
        k.removeprefix("val/"): v[-1] for k, v in history.history.items() if k.startswith("val/")
    }
    test = {
        k.removeprefix("test/"): float(v)
        for k, v in trainer.test(parts.module, datamodule=parts.data, verbose=False)[0].items()
    }

    result = {
        "status": "completed",
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "seed": cfg.seed,
        "choices": dict(choices or {}),
        "val": val,
        "test": test,
        "history": history.history,
    }
    write_json(out_dir / "metrics.json", result)
    if logger:
        final = {f"final/val_{k}": v for k, v in val.items()}
        final |= {f"final/test_{k}": v for k, v in test.items()}
        logger.log_hyperparams(hparams(cfg, choices or {}), metrics=final)
        logger.finalize("success")
    log.info(
        "test mse %.5f  test bce %.5f  (%d epochs, %.1f s) -> %s",
        test["mse"],
        test["bce"],
        result["epochs"],
        result["wall_time_s"],
        out_dir,
    )
    return result
