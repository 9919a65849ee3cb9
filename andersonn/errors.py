"""User-facing error and warning types.

An :class:`AndersonnError` carries a one-line message that names the offending input and the
reason; the command-line interface prints it without a traceback and exits non-zero. An
:class:`AndersonnWarning` is shown there as one line too, and the command goes on.
"""

from __future__ import annotations

import os
import sys
import warnings


class AndersonnError(Exception):
    """An error the user can act on; its message is shown as is, on one line."""


class InputError(AndersonnError, ValueError):
    """Bad user input: an unreadable structure, an unknown option, a malformed file."""


class ConfigError(AndersonnError, ValueError):
    """An unknown, misspelt or inconsistent option."""


class ResumeConflict(ConfigError):
    """A run cannot be resumed: it was made with other settings or on other data."""


class SolverDivergence(AndersonnError, FloatingPointError):
    """A fixed-point solve produced NaN or Inf."""


class FolderBusy(AndersonnError):
    """Another process holds a folder's lock (:func:`andersonn.fileio.folder_lock`)."""


class AndersonnWarning(UserWarning):
    """A warning the user can act on; the command-line interface shows it as one line,
    ``andersonn: warning: <message>``."""


class UnfinishedRunWarning(AndersonnWarning):
    """A run is used before its training finished: its best weights so far, uncalibrated."""


# the andersonn package's folder: frames of its modules are skipped by warn_user
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside andersonn (the user's line in a
    notebook or script), not to andersonn's own code."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
