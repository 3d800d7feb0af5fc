"""Errors that stop a run before any training, each naming the option to change."""


class AelabError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


class ConfigError(AelabError):
    """The composed configuration is invalid or inconsistent."""


class DataError(AelabError):
    """The dataset cannot be found or read."""
