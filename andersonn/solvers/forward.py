"""Forward (Picard) iteration z ← (1 − damping)·f(z) + damping·z, batched, per-sample stopping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from andersonn.solvers.base import (
    FixedPointMap,
    SolverStats,
    check_options,
    number_option,
    run,
)


class _Forward:
    uses_safeguard = False

    def __init__(self, damping: float) -> None:
        self.damping = float(damping)

    def init(self, z: Tensor, fz: Tensor) -> None:
        self.z, self.fz = z, fz
        self.scratch: Tensor | None = None

    def residual_buffer(self) -> Tensor:
        """Scratch for g = f(z) − z (only its norm is used: nothing keeps it)."""
        if self.scratch is None or self.scratch.shape != self.fz.shape:
            self.scratch = torch.empty_like(self.fz)
        return self.scratch

    def propose(self) -> Tensor:
        if self.damping == 0.0:
            return self.fz
        return self.fz.lerp(self.z, self.damping)

    def accept(self, z: Tensor, fz: Tensor, g: Tensor, restart: Tensor | None) -> None:
        self.z, self.fz = z, fz

    def graph_key(self) -> int | None:
        """Every iteration is the same (once the scratch buffer exists)."""
        return 0 if self.scratch is not None else None

    def graph_advance(self, iterations: int) -> None:
        """No counters."""

    def select(self, keep: Tensor) -> None:
        self.z, self.fz = self.z[keep], self.fz[keep]
        self.scratch = None


def forward_iteration(
    f: FixedPointMap,
    z0: Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 50,
    stop_mode: str = "rel",
    check_every: int | None = None,
    damping: float = 0.0,
    eps: float = 1e-9,
    args: Sequence[Any] = (),
    on_divergence: str = "raise",
    cuda_graph: bool = False,
    row_args: Sequence[int] | None = None,
    **unknown: Any,
) -> tuple[Tensor, SolverStats]:
    """Plain fixed-point iteration; ``damping`` in [0, 1) mixes in the previous iterate.

    ``f(z, *args)`` gets the active rows of z and of the per-sample tensors in ``args`` (those
    with leading dimension B, or those ``row_args`` lists). Returns (z*, stats); see
    :mod:`andersonn.solvers` for the common options.
    """
    check_options("forward_iteration", unknown, FORWARD_OPTIONS)
    damping = number_option("damping", damping, 0.0, 1.0)  # damping 1 never moves
    return run(
        "forward_iteration",
        _Forward(damping),
        f,
        z0,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        check_every=check_every,
        eps=eps,
        args=args,
        on_divergence=on_divergence,
        cuda_graph=cuda_graph,
        row_args=row_args,
        safeguard=False,
        safeguard_factor=1.0,
    )


FORWARD_OPTIONS = (
    "tol", "max_iter", "stop_mode", "check_every", "damping", "eps", "args", "on_divergence",
    "cuda_graph", "row_args",
)
