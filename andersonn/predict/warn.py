"""The warnings prediction gives (:class:`DomainWarning`, :class:`ConvergenceWarning`) and
:func:`_warn`, which attributes a warning to the user's line rather than to andersonn's."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["ConvergenceWarning", "DomainWarning"]


class DomainWarning(UserWarning):
    """Inputs lie outside what the model was trained on (unseen elements, unusual sizes)."""


class ConvergenceWarning(UserWarning):
    """The fixed-point solve of some inputs stopped at ``max_iter`` short of its tolerance."""


# the andersonn package's folder (this module is andersonn/predict/warn.py): frames of any of
# its modules are skipped, so a warning points at the caller outside andersonn
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside andersonn: the user's line."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
