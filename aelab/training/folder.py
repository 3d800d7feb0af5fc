"""The run folder: one owner at a time, never reused without resume=true, what it holds.

Nothing here imports torch.

- A run folder is owned by one process at a time (`RunFolderLock`, an advisory
  `flock` that the kernel drops when the process dies, even by SIGKILL).
- A folder that already holds a run (metrics.json or last.ckpt) is only reused
  with `resume=true`: a run never overwrites another's results or mixes its
  TensorBoard events with them.
- A folder that cannot be written is refused before any work (`check_writable`,
  `FolderNotWritable`), with the folder named.
- Whether a resumed run matches its checkpoint is `aelab.config.resume`'s to say.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from aelab.errors import FolderNotWritable, RunFolderError

log = logging.getLogger("aelab")

CHECKPOINT = "last.ckpt"
METRICS = "metrics.json"
LOCK = ".aelab.lock"
# statuses that resume=true leaves alone: the run is a result (a diverged run diverges again)
FINISHED = ("completed", "diverged")


class RunFolderLock:
    """Exclusive ownership of a run folder for one process; refuses a folder in use.

    The lock file is removed on release, so a refused or finished run leaves nothing.
    Without fcntl (Windows) the lock is a no-op.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            check_writable(self.path.parent)
            raise not_writable(self.path.parent, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunFolderError(
                f"run folder {self.path.parent} is in use by another aelab process; wait for it "
                f"to finish, or give this run its own folder (hydra.run.dir=<new folder>)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:  # a folder made read-only meanwhile: the file stays, unlocked
                pass
            finally:
                os.close(self.fd)  # releases the lock
                self.fd = None


def not_writable(folder: Path, exc: OSError | str) -> FolderNotWritable:
    """The refusal of run folder `folder`, which cannot be written (`exc`: why)."""
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc.strerror or exc}"
    return FolderNotWritable(
        f"run folder {folder} cannot be written ({why}); nothing was run. Make it writable, "
        f"or give the run another folder (hydra.run.dir=..., or hydra.sweep.dir=... for a "
        f"sweep)."
    )


def check_writable(folder: Path) -> None:
    """Refuse a run folder that cannot be made or written: the folder, or the nearest of its
    parents that exists, must be a folder this process may write to."""
    here = Path(folder)
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    if not os.path.isdir(here):
        raise not_writable(folder, f"{here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise not_writable(folder, f"{here} is read-only to this user")


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The folder's metrics.json, or None when it is missing or unreadable."""
    try:
        data = json.loads((folder / METRICS).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished(previous: dict[str, Any] | None, max_epochs: int | None) -> bool:
    """True when resume=true should skip the run: completed (to max_epochs) or diverged."""
    if not previous or previous.get("status") not in FINISHED:
        return False
    if previous["status"] == "completed" and max_epochs is not None:
        return int(previous.get("epochs", 0)) >= max_epochs
    return True


def refuse_used_folder(folder: Path) -> None:
    """Without resume=true, refuse a folder that holds another run's results or checkpoint."""
    held = [name for name in (METRICS, CHECKPOINT) if (folder / name).exists()]
    if held:
        raise RunFolderError(
            f"run folder {folder} already holds a run ({', '.join(held)}); nothing was changed. "
            f"Add resume=true to continue it (or skip it when completed), or give this run a "
            f"new folder (drop hydra.run.dir / hydra.sweep.dir, or pick another)."
        )


def remove_stale_events(folder: Path) -> None:
    """Delete TensorBoard event files of an earlier attempt that left no checkpoint."""
    for path in folder.glob("events.out.tfevents.*"):
        log.warning("removing %s, the events of an earlier attempt with no checkpoint", path.name)
        path.unlink()


def describe_checkpoint(folder: Path) -> str:
    """Where the last good state is, for the divergence and interrupt messages."""
    ckpt = folder / CHECKPOINT
    if ckpt.is_file():
        return f"{ckpt} holds the last finished epoch"
    return "no epoch finished, so there is no checkpoint"

