"""The warnings prediction gives (:class:`DomainWarning`, :class:`ConvergenceWarning`) and
:func:`_warn`, which attributes a warning to the user's line rather than to andersonn's."""

from __future__ import annotations

from andersonn.errors import warn_user

__all__ = ["ConvergenceWarning", "DomainWarning"]


class DomainWarning(UserWarning):
    """Inputs lie outside what the model was trained on (unseen elements, unusual sizes)."""


class ConvergenceWarning(UserWarning):
    """The fixed-point solve of some inputs stopped at ``max_iter`` short of its tolerance."""


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside andersonn: the user's line."""
    warn_user(message, category)
