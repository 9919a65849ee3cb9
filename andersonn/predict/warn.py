"""The warnings prediction gives: :class:`DomainWarning`, :class:`ReadCaveatWarning` and
:class:`ConvergenceWarning` (raised with :func:`andersonn.errors.warn_user`, attributed to the
user's line rather than to andersonn's)."""

from __future__ import annotations

from andersonn.errors import AndersonnWarning

__all__ = ["ConvergenceWarning", "DomainWarning", "ReadCaveatWarning"]


class DomainWarning(AndersonnWarning):
    """Inputs lie outside what the model was trained on (unseen elements, unusual sizes)."""


class ReadCaveatWarning(AndersonnWarning):
    """Inputs were read with a caveat on the input itself (a SMILES of several fragments laid
    apart, partly occupied crystal sites): the answer holds for the structure as read."""


class ConvergenceWarning(AndersonnWarning):
    """The fixed-point solve of some inputs stopped at ``max_iter`` short of its tolerance."""

