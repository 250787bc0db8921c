"""Errors that mean "the user asked for something impossible" rather than "cifarlab has a bug".

The CLI prints these as one line and exits non-zero, without a traceback.
"""


class CifarlabError(Exception):
    """Base class for user-facing errors (bad config, missing data, bad checkpoint...)."""


class ConfigError(CifarlabError):
    """A config key, value or type is wrong."""


class DataError(CifarlabError):
    """CIFAR-10 could not be found, downloaded, verified or decoded."""


class CheckpointError(CifarlabError):
    """A checkpoint or run directory is missing or unreadable."""
