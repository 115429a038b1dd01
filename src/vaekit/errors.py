"""Exceptions whose message is meant for the user: one line naming the problem and the fix.

The CLI prints ``vaekit: error: <message>`` for any :class:`VaekitError` and exits non-zero;
the Python API raises them unchanged. Each subclass also derives from the built-in exception a
caller would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing files).
"""

from __future__ import annotations


class VaekitError(Exception):
    """Base class of every error vaekit raises on purpose."""


class ConfigError(VaekitError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(VaekitError, ValueError):
    """Data are missing, truncated, of the wrong shape, or hold values the model cannot take."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file does not exist."""


class ChecksumError(DataError):
    """A downloaded or cached file does not have the expected sha256 or md5."""


class CheckpointError(VaekitError, OSError):
    """A run directory or checkpoint is missing, corrupt or does not match its configuration."""


class TrainingDivergedError(VaekitError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


class VaekitWarning(UserWarning):
    """A warning vaekit gives on purpose (the command line prints it as one line)."""
