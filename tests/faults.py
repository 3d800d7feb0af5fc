"""Fault-injection callbacks for the reliability tests, added to a run from the command line:

    python -m aelab ... +callbacks.pace._target_=faults.Pace +callbacks.pace.seconds=0.05

(the tests put this folder on PYTHONPATH). Callbacks are left out of the config stored in
checkpoints, so a run resumed without them is the same run.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch


class Pace(L.Callback):
    """Sleep after every training batch, so a test can act while an epoch is under way."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class Signal(L.Callback):
    """Send this process `signum` at the start of batch `batch` of epoch `epoch`."""

    def __init__(self, epoch: int, batch: int = 0, signum: int = signal.SIGTERM) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class KillDuringSave(L.Callback):
    """At the end of epoch `epoch`, SIGKILL this process halfway through writing the checkpoint.

    The checkpoint is written in full to its temporary file, cut to half its size (what a
    kill during the write leaves), and the process is killed before the rename.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        save = trainer.save_checkpoint

        def save_and_die(filepath, *args, **kwargs):
            save(filepath, *args, **kwargs)
            path = Path(filepath)
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

        trainer.save_checkpoint = save_and_die


class Poison(L.Callback):
    """Set one weight to `value` after the last training batch of epoch `epoch`
    (an overflow that the per-step loss check cannot see before the epoch ends)."""

    def __init__(self, epoch: int, value: float = math.nan) -> None:
        self.epoch, self.value = epoch, value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = self.value
