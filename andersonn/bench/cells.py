"""The benchmark's conv DEQ cell like the paper's, and how contractive it is.

:class:`ConvDEQCell` is the implicit-layers tutorial's CIFAR cell that ``andersonn bench solvers``
and ``andersonn bench spectrum`` solve; :func:`contraction_rates` measures the per-sample spectral
radius of ∂f/∂z at the fixed point by power iteration with exact Jacobian–vector products, and
:func:`make_weakly_contractive` / :func:`settle_scale` scale the cell's second convolution until
it is "weakly contractive" (like a trained DEQ).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from andersonn.solvers import get_solver

__all__ = ["ConvDEQCell", "contraction_rates", "make_weakly_contractive", "quiet_jvp",
           "rate_summary", "settle_scale"]


class ConvDEQCell(nn.Module):
    """f(z, x) = GN3(ReLU(z + GN2(x + conv2(GN1(ReLU(conv1(z))))))), batch-independent."""

    def __init__(self, channels: int = 48, hidden: int = 64, groups: int = 8,
                 std: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, hidden)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.norm3 = nn.GroupNorm(groups, channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, 0.0, std)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        y = self.norm1(F.relu(self.conv1(z)))
        return self.norm3(F.relu(z + self.norm2(x + self.conv2(y))))


def contraction_rates(cell: nn.Module, x: Tensor, iterations: int = 60,
                      tol: float = 1e-4, max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """Per-sample spectral radius of ∂f/∂z at the fixed point, by power iteration.

    Finds z* with Anderson (rel. tol ``tol``), then iterates v ← Jv/‖Jv‖ with exact
    Jacobian–vector products; the radius is the geometric mean of ‖Jv‖ over the second half of
    the iterations (with a clustered spectrum this converges from below: an estimate).
    Returns (radius, located), CPU tensors of shape (B,): ``located`` is False where z* was not
    found to a relative residual ≤ 10·tol (there the radius is not meaningful: treat as ≥ 1).
    10·tol because Anderson stagnates slightly above tol on a few samples of the weak cell,
    where forward iteration does converge; a z* to 1e-3 changes the estimate by far less than
    the power iteration's own error.
    """
    with quiet_jvp():
        from torch.func import jvp

        return _power_iteration(cell, x, jvp, iterations, tol, max_iter)


@contextlib.contextmanager
def quiet_jvp() -> Iterator[None]:
    """Silence the DeprecationWarning torch's first forward-mode AD call raises (it loads jvp
    decompositions via the deprecated torch.jit.script: internal, nothing to act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*",
                                category=DeprecationWarning)
        yield


def _power_iteration(cell: Callable[..., Tensor], x: Tensor, jvp: Callable[..., Any],
                     iterations: int, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        z, stats = get_solver("anderson")(
            cell, torch.zeros_like(x), tol=tol, max_iter=max_iter, args=(x,),
            on_divergence="mark",
        )
        gen = torch.Generator().manual_seed(1)
        v = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
        view = (-1, *[1] * (v.dim() - 1))
        v = v / v.flatten(1).norm(dim=1).view(view)
        logs = []
        for k in range(iterations):
            _, jv = jvp(lambda q: cell(q, x), (z,), (v,))
            norm = jv.flatten(1).norm(dim=1).clamp_min(1e-30)
            if k >= iterations // 2:
                logs.append(norm.log())
            v = jv / norm.view(view)
    located = stats.lowest_residual <= 10 * tol
    return torch.stack(logs).mean(0).exp().cpu(), located


def rate_summary(rates: Tensor) -> dict[str, Any]:
    """Distribution of per-sample spectral radii (plain JSON)."""
    r = rates.double()
    q = torch.quantile(r, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64))
    return {"n": int(r.numel()), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]),
            "p90": float(q[3]), "max": float(q[4]), "mean": float(r.mean()),
            "values": [round(float(v), 5) for v in r]}


def make_weakly_contractive(
    cell: ConvDEQCell, x: Tensor, target_median: float = 0.98, target_max: float = 0.99,
    steps: int = 6, hi_scale: float = 4.0,
) -> dict[str, Any]:
    """Scale ``cell.conv2`` in place: largest s with median ρ ≤ target_median, max ρ ≤ target_max.

    ρ is the per-sample spectral radius (:func:`contraction_rates`) on the samples of ``x``
    (the probe); bisection on log s in [0, log ``hi_scale``]. Returns {"scale", "probe": summary}.
    """
    base = cell.conv2.weight.detach().clone()

    def rates_at(scale: float) -> tuple[Tensor, bool]:
        with torch.no_grad():
            cell.conv2.weight.copy_(base * scale)
        r, conv = contraction_rates(cell, x)
        ok = bool(conv.all()) and bool(torch.isfinite(r).all())
        ok = ok and float(r.median()) <= target_median and float(r.max()) <= target_max
        return r, ok

    lo, hi = 0.0, math.log(hi_scale)
    best_scale, best_rates = 1.0, None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        r, ok = rates_at(math.exp(mid))
        if ok:
            lo, best_scale, best_rates = mid, math.exp(mid), r
        else:
            hi = mid
    if best_rates is None:
        best_rates, _ = rates_at(1.0)
    with torch.no_grad():
        cell.conv2.weight.copy_(base * best_scale)
    return {"scale": best_scale, "probe": rate_summary(best_rates)}


def settle_scale(cell: ConvDEQCell, x: Tensor, target_max: float, tries: int = 2
                 ) -> tuple[Tensor, Tensor, float]:
    """Measure ρ on all of ``x``; lower conv2 by 2 % while a sample has ρ ≥ target_max or
    does not converge. Returns (rates, converged, total factor applied)."""
    factor = 1.0
    for attempt in range(tries + 1):
        rates, conv = contraction_rates(cell, x)
        if (bool(conv.all()) and float(rates.max()) < target_max) or attempt == tries:
            break
        with torch.no_grad():
            cell.conv2.weight.mul_(0.98)
        factor *= 0.98
    return rates, conv, factor
