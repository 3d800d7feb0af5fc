"""Fault-injection callbacks for the reliability tests, added to a run from the command line:

    python -m aelab ... +callbacks.pace._target_=faults.Pace +callbacks.pace.seconds=0.05

(the tests put this folder on PYTHONPATH). Callbacks are left out of the config stored in
checkpoints, so a run resumed without them is the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import lightning as L
import pytest
import torch

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def faults_on_path(monkeypatch):
    """Import this fixture into a test module: its subprocesses can then import `faults`."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS),
                                                                   os.environ.get("PYTHONPATH")])))


class Pace(L.Callback):
    """Sleep after every training batch, so a test can act while an epoch is under way."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class Signal(L.Callback):
    """Send this process `signum` at the start of training batch `batch` (a list of
    `steps_per_call` steps) of epoch `epoch`."""

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


class Crash(L.Callback):
    """Raise RuntimeError at the start of epoch `epoch` when the learning rate is `lr`
    (so one run of a learning-rate sweep crashes)."""

    def __init__(self, lr: float, epoch: int = 1) -> None:
        self.lr, self.epoch = lr, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        if trainer.current_epoch == self.epoch and math.isclose(lr, self.lr):
            raise RuntimeError(f"injected crash at lr={lr}")


def sha1s(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> the sha1 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def read_only_means() -> str | None:
    """How this process can make a folder unwritable to itself: "chmod" (not root), "chattr"
    (root, which chmod does not stop, with chattr +i working here), or None."""
    if os.geteuid() != 0:
        return "chmod"
    if shutil.which("chattr") is None:
        return None
    probe = Path(tempfile.mkdtemp())
    try:
        made = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        return "chattr" if made else None
    finally:
        probe.rmdir()


def make_read_only(folder: Path, read_only: bool = True) -> None:
    """Make `folder` unwritable (or writable again): chmod a-w, or chattr +i as root."""
    if read_only_means() == "chattr":
        subprocess.run(["chattr", "+i" if read_only else "-i", str(folder)], check=True)
    else:
        os.chmod(folder, 0o555 if read_only else 0o755)


class ReadOnly(L.Callback):
    """At the end of epoch `epoch`, before last.ckpt is written (a Checkpoint callback runs
    last), write the sha1 of every file of the run folder to `manifest` and make the folder
    unwritable (make_read_only)."""

    def __init__(self, epoch: int, folder: str, manifest: str) -> None:
        self.epoch, self.folder, self.manifest = epoch, Path(folder), Path(manifest)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.manifest.write_text(json.dumps(sha1s(self.folder)))
            make_read_only(self.folder)
