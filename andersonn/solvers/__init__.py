"""Batched fixed-point solvers for z = f(z): forward iteration, Anderson, Broyden.

Every solver has one call shape::

    z_star, stats = solver(f, z0, *, tol=1e-4, max_iter=50, stop_mode="rel", check_every=None,
                           args=(), on_divergence="raise", cuda_graph=False, row_args=None,
                           **method_options)

``z0`` is a batch (B, ...); ``f(z, *args)`` must return a tensor of z's shape and accept any
batch size, because converged samples are dropped from the batch (the per-sample tensors of
``args`` are cut to the same rows: by default every tensor whose leading dimension is B;
``row_args``, a tuple of positions in ``args``, names them explicitly, e.g. when a shared weight
happens to have B rows). ``f`` must therefore be batch-independent (GroupNorm/LayerNorm, not
BatchNorm). ``stats`` is a :class:`SolverStats`. Unknown options raise
:class:`andersonn.errors.ConfigError`; a NaN/Inf residual (from ``f``, or iterates past the float
range) raises :class:`andersonn.errors.SolverDivergence` (or, with ``on_divergence="mark"``, flags
the samples).
``cuda_graph=True`` (CUDA only, ignored elsewhere) captures each block of ``check_every``
iterations between two convergence checks as a CUDA graph and replays it (:mod:`.graphs`): same
results, a fraction of the kernel-launch time. ``f`` must then be capturable (no host syncs);
if it is not, the solve goes on without graphs and says so in ``stats.messages``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import Tensor

from andersonn.errors import ConfigError
from andersonn.solvers.anderson import ANDERSON_OPTIONS, anderson, release_workspace
from andersonn.solvers.base import FixedPointMap, SolverStats, check_options
from andersonn.solvers.broyden import BROYDEN_OPTIONS, broyden
from andersonn.solvers.forward import FORWARD_OPTIONS, forward_iteration

Solver = Callable[..., tuple[Tensor, SolverStats]]

SOLVERS: dict[str, Solver] = {
    "anderson": anderson,
    "broyden": broyden,
    "forward_iteration": forward_iteration,
}

_ALIASES = {
    "forward": "forward_iteration",
    "picard": "forward_iteration",
    "fixed_point": "forward_iteration",
}


def get_solver(name: str) -> Solver:
    """Return the solver registered under ``name`` (aliases: forward, picard, fixed_point)."""
    key = _ALIASES.get(name, name)
    if key not in SOLVERS:
        valid = sorted(SOLVERS)
        close = difflib.get_close_matches(str(name), valid + sorted(_ALIASES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown solver {name!r}{hint}; valid solvers: {', '.join(valid)}")
    return SOLVERS[key]


_OPTIONS = {"anderson": ANDERSON_OPTIONS, "broyden": BROYDEN_OPTIONS,
            "forward_iteration": FORWARD_OPTIONS}


def check_solver_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for an unknown solver or option name, before any solve (a
    misspelt option of a validation-time solve would otherwise surface hours into training).
    The values are checked when the solver runs."""
    get_solver(name)
    key = _ALIASES.get(name, name)
    valid = _OPTIONS[key]
    check_options(key, {k: v for k, v in options.items() if k not in valid}, valid)


def solve(
    f: FixedPointMap, z0: Tensor, solver: str = "anderson", **opts: Any
) -> tuple[Tensor, SolverStats]:
    """Solve z = f(z) from ``z0`` with the named solver; ``opts`` go to the solver."""
    return get_solver(solver)(f, z0, **opts)


__all__ = [
    "SOLVERS",
    "FixedPointMap",
    "Solver",
    "SolverStats",
    "anderson",
    "broyden",
    "check_solver_options",
    "forward_iteration",
    "get_solver",
    "release_workspace",
    "solve",
]
