"""A callback that records when training starts and how long each epoch takes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L


class EpochTimer(L.Callback):
    """Wall time of every epoch (training, validation and epoch-end callbacks together) and the
    Unix time of the first training step; written to `timing.json` in the run folder."""

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "timing.json"
        self.first_step_unix: float | None = None
        self.starts: list[float] = []
        self.epoch_s: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        if self.starts:
            self.epoch_s.append(now - self.starts[-1])
        self.starts.append(now)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.starts:
            self.epoch_s.append(time.perf_counter() - self.starts[-1])
        self.path.write_text(
            json.dumps({"first_step_unix": self.first_step_unix, "epoch_s": self.epoch_s})
        )
