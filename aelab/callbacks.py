"""Lightning callbacks: reconstruction images, an atomic last checkpoint, the metric history."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from aelab.images import tile


def tensorboard(trainer: L.Trainer):
    """The run's TensorBoard SummaryWriter, or None when TensorBoard logging is off."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ReconstructionGrid(L.Callback):
    """Each validation epoch: the first `n_images` validation inputs above their reconstructions."""

    def __init__(self, n_images: int = 16) -> None:
        self.n_images = n_images

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.sanity_checking:
            return
        x = trainer.datamodule.probe(self.n_images)
        with torch.no_grad():
            y = pl_module.reconstruct(x)
        x = pl_module.normalization.decode(x)
        grid = tile(torch.cat([x, y]).clamp(0, 1).cpu(), columns=len(x))
        writer.add_image("reconstructions", grid, global_step=trainer.current_epoch)


class LastCheckpoint(L.Callback):
    """Write `last.ckpt` in the run folder at the end of every epoch, atomically.

    The checkpoint is written to a temporary file and renamed over the old one, so
    a kill during the save leaves the previous checkpoint intact.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)


class MetricHistory(L.Callback):
    """Collect the epoch-level metrics (one sync per epoch) for metrics.json."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            if not key.endswith(("_step", "_epoch")):
                self.history.setdefault(key, []).append(float(value))
