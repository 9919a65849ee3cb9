"""Checks of benchmark settings shared by the command line and the Python API; import-light (no
torch), so the argument parser can use them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from andersonn.errors import ConfigError

__all__ = ["check_tolerances", "tolerance_problem"]


def tolerance_problem(value: Any) -> str | None:
    """Why ``value`` is not a relative residual tolerance (a finite number in (0, 1)), or None.
    A relative tolerance of 1 or more is met by any iterate; one of 0 or less by none."""
    if isinstance(value, bool):
        return f"{value!r} is not a number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{value!r} is not a number"
    if not math.isfinite(number):
        return f"must be a finite number, got {value}"
    if number <= 0:
        return f"must be a positive number, got {value}"
    if number >= 1:
        return f"must be below 1 (a relative tolerance), got {value}"
    return None


def check_tolerances(name: str, values: Sequence[Any]) -> tuple[float, ...]:
    """``values`` as floats; :class:`ConfigError` naming ``name`` when there is none or one is
    not in (0, 1) (:func:`tolerance_problem`)."""
    if isinstance(values, str | bytes) or not values:
        raise ConfigError(f"{name} must list at least one tolerance (got {values!r})")
    for value in values:
        problem = tolerance_problem(value)
        if problem is not None:
            raise ConfigError(f"{name}: {problem} (in {list(values)})")
    return tuple(float(v) for v in values)
