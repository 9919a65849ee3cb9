"""Type-II Anderson acceleration, batched, with per-sample convergence and safeguarding.

With history x_i and residuals g_i = f(x_i) − x_i (i over the last m iterates) the next iterate is

    z = Σ α_i x_i + β Σ α_i g_i,   α = argmin ‖Σ α_i g_i‖² + λ̃‖α‖²  s.t. Σ α_i = 1,

solved in closed form per sample: w = (G Gᵀ + λ̃ I)⁻¹ 1, α = w / Σw, on the small (m×m) system in
float64 (Cholesky, batched, no host sync). λ̃ = λ · mean_i ‖g_i‖² makes the Tikhonov term scale-free,
so tight tolerances stay reachable. Where the factorisation fails (singular or non-finite
history) that sample falls back to a plain Picard step from its newest iterate. History buffers
(B, m, n) of f(x_i) and g_i are preallocated in float32 (float64 for float64 input); G Gᵀ is
updated one row per iteration instead of recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from andersonn.errors import ConfigError
from andersonn.solvers.base import FixedPointMap, SolverStats, check_options, run


class _Anderson:
    uses_safeguard = True

    def __init__(self, m: int, lam: float, beta: float) -> None:
        self.m, self.lam, self.beta = m, lam, beta

    def init(self, z: Tensor, fz: Tensor) -> None:
        b, n = z.shape
        # uninitialised on purpose: only the first ``used`` slots are ever read
        self.F = z.new_empty(b, self.m, n)
        self.G = z.new_empty(b, self.m, n)
        self.GG = torch.zeros(b, self.m, self.m, dtype=torch.float64, device=z.device)
        self.valid = torch.zeros(b, self.m, dtype=torch.bool, device=z.device)
        self.pos = self.used = 0
        self._insert(fz, fz - z)

    def _insert(self, fz: Tensor, g: Tensor) -> None:
        s = self.pos % self.m
        self.F[:, s] = fz
        self.G[:, s] = g
        self.pos += 1
        u = self.used = min(self.pos, self.m)
        row = torch.bmm(self.G[:, :u], g.unsqueeze(2)).squeeze(2).to(torch.float64)
        self.GG[:, s, :u] = row
        self.GG[:, :u, s] = row
        self.valid[:, s] = True
        self.last = s

    def propose(self) -> Tensor:
        valid = self.valid
        vf = valid.to(torch.float64)
        diag = torch.where(valid, torch.diagonal(self.GG, dim1=1, dim2=2), 0.0)
        scale = diag.sum(1) / vf.sum(1).clamp(min=1.0)
        reg = self.lam * scale + torch.finfo(torch.float64).tiny ** 0.5
        pair = valid.unsqueeze(2) & valid.unsqueeze(1)
        a = torch.where(pair, self.GG, 0.0) + torch.diag_embed(
            torch.where(valid, reg.unsqueeze(1), 1.0)
        )
        chol, info = torch.linalg.cholesky_ex(a)
        w = torch.cholesky_solve(vf.unsqueeze(2), chol).squeeze(2)
        wsum = w.sum(1, keepdim=True)
        alpha = w / wsum
        ok = (info == 0) & torch.isfinite(alpha).all(1) & (wsum.squeeze(1) > 0)
        picard = torch.zeros_like(alpha)
        picard[:, self.last] = 1.0
        u = self.used
        alpha = torch.where(ok.unsqueeze(1), alpha, picard)[:, :u].to(self.F.dtype).unsqueeze(1)
        # Σα x + β Σα g = Σα f − (1 − β) Σα g  (x = f − g): one batched product when β = 1
        z = torch.bmm(alpha, self.F[:, :u]).squeeze(1)
        if self.beta != 1.0:
            z.sub_(torch.bmm(alpha, self.G[:, :u]).squeeze(1), alpha=1.0 - self.beta)
        return z

    def accept(self, z: Tensor, fz: Tensor, g: Tensor, restart: Tensor | None) -> None:
        if restart is not None:
            self.valid &= ~restart.unsqueeze(1)
        self._insert(fz, g)

    def select(self, keep: Tensor) -> None:
        u = self.used
        if u < self.m:  # copy only the slots in use; the rest stay uninitialised
            f_new = self.F.new_empty(int(keep.sum()), self.m, self.F.shape[2])
            g_new = torch.empty_like(f_new)
            f_new[:, :u] = self.F[keep, :u]
            g_new[:, :u] = self.G[keep, :u]
            self.F, self.G = f_new, g_new
        else:
            self.F, self.G = self.F[keep], self.G[keep]
        self.GG, self.valid = self.GG[keep], self.valid[keep]


def anderson(
    f: FixedPointMap,
    z0: Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 50,
    stop_mode: str = "rel",
    check_every: int | None = None,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    safeguard: bool = True,
    safeguard_factor: float = 10.0,
    eps: float = 1e-9,
    args: Sequence[Any] = (),
    on_divergence: str = "raise",
    **unknown: Any,
) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration (window ``m``, relative Tikhonov ``lam``, mixing ``beta``).

    ``safeguard``: reject an iterate whose residual exceeds ``safeguard_factor`` × the sample's
    best and restart its history from the best iterate. Returns (z*, stats).
    """
    check_options("anderson", unknown, ANDERSON_OPTIONS)
    if int(m) < 1:
        raise ConfigError(f"option m={m!r} must be at least 1")
    if float(lam) < 0:
        raise ConfigError(f"option lam={lam!r} must be non-negative")
    return run(
        "anderson",
        _Anderson(int(m), float(lam), float(beta)),
        f,
        z0,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        check_every=check_every,
        eps=eps,
        args=args,
        on_divergence=on_divergence,
        safeguard=safeguard,
        safeguard_factor=float(safeguard_factor),
    )


ANDERSON_OPTIONS = (
    "tol", "max_iter", "stop_mode", "check_every", "m", "lam", "beta", "safeguard",
    "safeguard_factor", "eps", "args", "on_divergence",
)
