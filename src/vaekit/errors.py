"""Exceptions whose message is meant for the user: one line naming the problem and the fix.

The CLI prints ``vaekit: error: <message>`` for any :class:`VaekitError` and exits non-zero;
the Python API raises them unchanged. Each subclass also derives from the built-in exception a
caller would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing files).
"""

from __future__ import annotations


class VaekitError(Exception):
    """Base class of every error vaekit raises on purpose. ``exit_code``: the command line's
    exit status for it (1; 2 for usage errors such as a missing optional package)."""

    exit_code: int = 1


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


def did_you_mean(name: object, choices) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``name``, or
    ``""`` when none is close (difflib's ratio >= 0.6)."""
    import difflib

    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(c) for c in choices if str(c) != name], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
