"""Errors that stop a run before any training, each naming the option to change; and
`Interrupted`, SIGTERM as an exception (`stop_on_sigterm`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class AelabError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


class ConfigError(AelabError):
    """The composed configuration is invalid or inconsistent."""


class DataError(AelabError):
    """The dataset cannot be found or read."""


class CheckpointError(AelabError):
    """A checkpoint to resume from cannot be read safely or belongs to another configuration."""


class RunFolderError(AelabError):
    """The run folder is in use by another process, already holds a run (not resuming), holds
    a run with other settings (resuming) or cannot be written.

    Never recorded in the folder's metrics.json: the folder is not this run's to write. In a
    multirun the job is noted as refused (aelab.sweeps.outcome) and the sweep exits 2.
    """


class ResumeMismatch(RunFolderError, ConfigError):
    """resume=true met a run folder whose run (finished or not) has other settings; the
    message lists the differences, and the folder is left byte for byte as it was."""


class FolderNotWritable(RunFolderError):
    """The run folder cannot be written: refused before any work (exit 2) or, when it became
    unwritable while the run trained (`mid_run`), the run stops with its last good checkpoint
    kept (exit 1)."""

    def __init__(self, message: str, mid_run: bool = False) -> None:
        super().__init__(message)
        self.mid_run = mid_run


class Interrupted(BaseException):  # like KeyboardInterrupt: no "except Exception" stops it
    """SIGTERM reached a stacked sweep (raised by aelab.stacked.slots.stop_on_sigterm)."""


class Diverged(Exception):
    """Training produced a non-finite loss or weights; raised at once by the FiniteGuard callback.

    Not an AelabError: the input was valid, the run is a result (status "diverged").
    """

    def __init__(self, message: str, epoch: int, step: int, global_step: int, what: str) -> None:
        super().__init__(message)
        self.epoch, self.step, self.global_step, self.what = epoch, step, global_step, what


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `Interrupted` inside the block (main thread only). A Lightning fit
    inside it calls this handler after its own, so a run stops at once, recorded "interrupted"."""
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
