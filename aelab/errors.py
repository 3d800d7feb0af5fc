"""Errors that stop a run before any training, each naming the option to change."""


class AelabError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


class ConfigError(AelabError):
    """The composed configuration is invalid or inconsistent."""


class DataError(AelabError):
    """The dataset cannot be found or read."""


class CheckpointError(AelabError):
    """A checkpoint to resume from cannot be read safely or belongs to another configuration."""


class RunFolderError(AelabError):
    """The run folder is in use by another process or already holds a run (not resuming).

    Never recorded in the folder's metrics.json: the folder is not this run's to write.
    """


class Diverged(Exception):
    """Training produced a non-finite loss or weights; raised at once by the FiniteGuard callback.

    Not an AelabError: the input was valid, the run is a result (status "diverged").
    """

    def __init__(self, message: str, epoch: int, step: int, global_step: int, what: str) -> None:
        super().__init__(message)
        self.epoch, self.step, self.global_step, self.what = epoch, step, global_step, what
