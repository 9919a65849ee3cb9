"""Type-II Anderson acceleration, batched, with per-sample convergence and safeguarding.

With history x_i and residuals g_i = f(x_i) − x_i (i over the last m iterates) the next iterate is

    z = Σ α_i x_i + β Σ α_i g_i,   α = argmin ‖Σ α_i g_i‖² + λ̃‖α‖²  s.t. Σ α_i = 1,

solved in closed form per sample: w = (G Gᵀ + λ̃ I)⁻¹ 1, α = w / Σw, on the small (m×m) system in
float64 (batched Cholesky, no host sync; in CUDA-graph solves an elimination in plain tensor ops,
:func:`solve_spd`, which a graph can capture).
λ̃ = λ · (harmonic mean_i ‖g_i‖²) makes the Tikhonov term scale-free, so tight tolerances stay
reachable (a harmonic mean, so that the old large residuals of a long window do not inflate it).
Where the elimination fails (singular or non-finite history: a pivot that is not positive)
that sample falls back to a plain Picard step from its newest iterate. History buffers
(B, m, n) of f(x_i) and g_i are preallocated in float32 (float64 for float64 input); G Gᵀ is
updated one row per iteration instead of recomputed. On the CPU the history storage is kept per
thread between solves (:func:`release_workspace` frees it): a fresh 100-MB buffer costs tens of ms
of page faults on first touch, a sizeable share of a loose-tolerance solve.

Stagnation fallback (``stall_patience``, default 10; ``None`` or 0 disables): on nonsmooth maps
(ReLU cells) Anderson can stall for good on a few samples, its best residual flat while plain
forward iteration still converges. A sample whose best residual has not fallen by 10 % in
``stall_patience`` iterations restarts from its best iterate and takes plain steps z + βg
(unsafeguarded, like forward iteration) until its best falls by 10 % again and at least m such
steps were taken; then Anderson resumes with those steps as its history. If 3 × stall_patience
plain steps bring no such fall (f is not contractive there), Anderson resumes from where they
ended and that sample gets no further fallback. Samples that never stall are unaffected (bit for
bit). ``SolverStats.stalled`` counts the fallbacks per sample.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from andersonn.solvers.base import (
    FixedPointMap,
    SolverStats,
    check_options,
    compact_rows_in_place,
    integer_option,
    number_option,
    run,
    sync_is_cheap,
)


def _unshared(buf: Tensor, python_refs: int) -> bool:
    """True when nothing but the solver holds ``buf``: no other Python reference and no view.

    ``python_refs`` is the number of references the solver itself holds (the pool list).
    Used to recycle the (b, n) output buffers of :meth:`_Anderson.propose` on the CPU, where a
    fresh 25 MB allocation costs several ms of page faults per iteration; without the (private)
    storage use-count API nothing is recycled.
    """
    # getrefcount also counts this function's parameter and its own argument
    if sys.getrefcount(buf) > python_refs + 2:
        return False
    try:
        # the temporary storage object holds one reference of its own
        return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) <= 2
    except Exception:  # pragma: no cover - API missing in this torch
        return False


def solve_spd(a: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """Solve the small systems a x = rhs, a (b, u, u) symmetric, by elimination without pivoting.

    Returns x (b, u) and a (b,) flag: every pivot positive and finite, which for a symmetric
    matrix holds exactly when it is positive definite (where elimination without pivoting is
    stable). Plain tensor ops (4 per column) rather than LAPACK, so a CUDA graph can capture it;
    eagerly, a batched Cholesky launches fewer kernels.
    """
    u = rhs.shape[1]
    aug = torch.cat([a, rhs.unsqueeze(2)], dim=2)
    lowest = aug[:, 0, 0]
    for j in range(u):
        pivot = aug[:, j, j : j + 1]
        lowest = torch.minimum(lowest, pivot[:, 0])  # NaN propagates, so NaN fails the test
        row = aug[:, j] / pivot
        aug = torch.addcmul(aug, aug[:, :, j : j + 1], row.unsqueeze(1), value=-1.0)
        aug[:, j] = row
    return aug[:, :, u], (lowest > 0) & torch.isfinite(lowest)


_TINY = torch.finfo(torch.float64).tiny ** 0.5  # keeps the regularised system positive definite
_SMALLEST, _LARGEST = torch.finfo(torch.float64).tiny, torch.finfo(torch.float64).max


class _Workspace(threading.local):
    """Per-thread CPU storage for the history buffers, reused by the next solve on the thread.

    ``busy`` is set while a solve holds it, so a solve nested inside f (or a re-entrant call)
    allocates its own buffers instead of overwriting the outer solve's history."""

    def __init__(self) -> None:
        self.busy = False
        self.storage: Tensor | None = None


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free the history storage the CPU Anderson solver keeps for this thread's next solve."""
    if not _WORKSPACE.busy:
        _WORKSPACE.storage = None


class _Anderson:
    """Ring buffer of the last ``m`` pairs (f(x_i), g_i) in two preallocated (b, m, n) buffers.

    Per iteration the history is read twice (one batched product for the new Gram row, one for
    the mix) and written once per buffer (f(x) copied into its slot; g is written straight into
    its slot by the driver through :meth:`residual_buffer`). No roll, cat or clone: slots are
    addressed modulo m, and the mix uses all slots in use in any order (α is per slot).
    """

    uses_safeguard = True
    POOL = 3  # recycled (b, n) iterate buffers (CPU only)
    capturable = False  # set by the driver for CUDA-graph solves: no LAPACK in propose

    def __init__(self, m: int, lam: float, beta: float) -> None:
        self.m, self.lam, self.beta = m, lam, beta
        self.workspace: _Workspace | None = None

    def init(self, z: Tensor, fz: Tensor) -> None:
        b, n = z.shape
        if sync_is_cheap(z.device) and not _WORKSPACE.busy:
            _WORKSPACE.busy = True
            self.workspace = _WORKSPACE
        self._alloc(b, n, z)
        self.GG = torch.zeros(b, self.m, self.m, dtype=torch.float64, device=z.device)
        self.valid = torch.zeros(b, self.m, dtype=torch.bool, device=z.device)
        self.plain = torch.zeros(b, dtype=torch.bool, device=z.device)
        self.free = ~self.plain  # rows that take Anderson steps (kept: ~plain per iteration)
        self.eye = torch.eye(self.m, dtype=torch.float64, device=z.device)
        self.floor = torch.tensor(_TINY, dtype=torch.float64, device=z.device)  # of λ̃
        self.pos = self.used = 0
        # Python-side facts that let eager CPU solves skip the masking in propose: no row takes
        # plain steps, and every slot in use is valid once pos >= dirty_until (a restart
        # invalidates a row's older slots until m more pairs have been inserted)
        self.synced = sync_is_cheap(z.device)
        self.any_plain = False
        self.dirty_until = 0
        self._insert(fz, torch.sub(fz, z, out=self.residual_buffer()))

    def _alloc(self, b: int, n: int, like: Tensor) -> None:
        # uninitialised on purpose: only the slots in use are ever read
        size = b * self.m * n
        ws = self.workspace
        if ws is None:
            self.F = like.new_empty(b, self.m, n)
            self.G = like.new_empty(b, self.m, n)
        else:
            # an inference tensor (allocated under torch.inference_mode) cannot be written
            # outside it: a validation pass in inference mode must not break the next solve
            stale = ws.storage is not None and (
                ws.storage.numel() < 2 * size or ws.storage.dtype != like.dtype
                or (ws.storage.is_inference() and not torch.is_inference_mode_enabled()))
            if ws.storage is None or stale:
                ws.storage = None  # free the old storage before allocating the new one
                ws.storage = like.new_empty(2 * size)
            self.F = ws.storage[:size].view(b, self.m, n)
            self.G = ws.storage[size:2 * size].view(b, self.m, n)
        self.recycle = sync_is_cheap(like.device)
        self.pool: list[Tensor] = []

    def residual_buffer(self) -> Tensor:
        """Where the driver writes g = f(z) − z of the point being evaluated: the next slot.

        That slot holds the oldest residual, which no longer matters once the next iterate
        has been proposed (accept overwrites it in any case)."""
        return self.G[:, self.pos % self.m]

    def _insert(self, fz: Tensor, g: Tensor) -> None:
        s = self.pos % self.m
        slot = self.G[:, s]
        if g.data_ptr() != slot.data_ptr() or g.stride() != slot.stride():
            slot.copy_(g)
        self.F[:, s].copy_(fz)
        self.pos += 1
        u = self.used = min(self.pos, self.m)
        row = self._gram_row(u, slot)  # the writes cast it to float64 (no kernel of its own)
        self.GG[:, s, :u] = row
        self.GG[:, :u, s] = row
        self.valid[:, s] = True
        self.last = s

    def _gram_row(self, u: int, g: Tensor) -> Tensor:
        """(b, u) inner products of the slots in use with g: one read of the G history.

        On the CPU a loop of matrix–vector products (one per sample, written into one output)
        streams the history ~1.7× faster than ``bmm``, whose batched GEMM path handles the
        (u × n)·(n × 1) shape poorly; elsewhere one ``bmm``."""
        hist = self.G[:, :u]
        if not self.recycle:
            return torch.bmm(hist, g.unsqueeze(2)).squeeze(2)
        row = hist.new_empty(hist.shape[0], u)
        for i in range(hist.shape[0]):
            torch.mv(hist[i], g[i], out=row[i])
        return row

    def _output(self) -> Tensor:
        """A (b, n) tensor for the next iterate: recycled when nobody else holds it."""
        b, _, n = self.F.shape
        if self.recycle:
            for i in range(len(self.pool)):
                if _unshared(self.pool[i], 1):  # held by the pool list only
                    return self.pool[i]
            if len(self.pool) < self.POOL:
                self.pool.append(self.F.new_empty(b, n))
                return self.pool[-1]
        return self.F.new_empty(b, n)

    def _tikhonov(self, diag: Tensor, valid: Tensor | None = None) -> Tensor:
        """λ̃ = λ · the harmonic mean of ‖g_i‖² over the valid slots (``diag``: ‖g_i‖²;
        ``valid``: the (b, m) slots in use, None for all), plus a floor that keeps the system
        positive definite.

        Not the arithmetic mean: in a long window the oldest, largest residuals dominate it and
        the term swamps the system (m = 20 took 48 evaluations where λ = 0 takes 19; m = 100
        did not converge). The harmonic mean follows the smallest residuals (m = 20, 40, 100:
        19) and gives the arithmetic mean's evaluations at m = 5 on the benchmark's conv cells.
        Divisions and sums only (no log/exp, whose vectorised and scalar kernels can differ in
        the last bit), so the weights agree bit for bit between both paths and batch sizes.
        A zero ‖g_i‖² (an exact fixed point) makes λ̃ the floor; five kernels in all."""
        if valid is None:
            inverse = diag.reciprocal()  # (1.0 / x is reciprocal, then × 1.0: two kernels)
            count = diag.new_full(diag.shape[:1], diag.shape[1])
        else:
            inverse = torch.where(valid, diag, math.inf).reciprocal()
            count = valid.sum(1, dtype=diag.dtype)
        return torch.addcdiv(self.floor, count, inverse.sum(1), value=self.lam)

    def _weights_all_valid(self) -> Tensor | None:
        """α (b, m) when the ring is full, every slot is valid and no row takes plain steps: the
        general path's system without its masks (half the operations, which matters when f is
        cheap). None where the general path must decide (a failed factorisation, a weight sum
        that is not positive and finite)."""
        gg, u = self.GG, self.m
        reg = self._tikhonov(torch.diagonal(gg, dim1=1, dim2=2))
        a = gg.clone()
        a.diagonal(dim1=1, dim2=2).add_(reg.unsqueeze(1))
        chol, info = torch.linalg.cholesky_ex(a)
        w = torch.cholesky_solve(a.new_ones(a.shape[0], u, 1), chol).squeeze(2)
        wsum = w.sum(1, keepdim=True)
        low = float(wsum.min())
        if int(info.max()) != 0 or not _SMALLEST <= low <= _LARGEST:  # as the general path
            return None
        return w / wsum

    def propose(self) -> Tensor:
        # only with a full ring: then the general path computes bit for bit the same weights
        # (the same m×m system), so a row's iterates never depend on which path its batch took
        fast = (self.synced and not self.capturable and not self.any_plain
                and self.used == self.m and self.pos >= self.dirty_until)
        alpha_u = self._weights_all_valid() if fast else None
        if alpha_u is not None:
            return self._mix(alpha_u.to(self.F.dtype).unsqueeze(1))
        # Every operation below is a kernel launch on an accelerator, where at these sizes the
        # launches, not the arithmetic, are the cost: hence the system masked in one where, the
        # Picard weights read from a cached identity, no isfinite (four kernels each).
        valid = self.valid
        vf = valid.to(torch.float64)
        reg = self._tikhonov(torch.diagonal(self.GG, dim1=1, dim2=2), valid)
        # invalid slots: (1 + λ̃) × identity rows and columns and a zero right-hand side, hence
        # a zero weight
        a = torch.where(valid.unsqueeze(2) & valid.unsqueeze(1), self.GG, self.eye)
        a.diagonal(dim1=1, dim2=2).add_(reg.unsqueeze(1))
        if self.capturable:
            w, factored = solve_spd(a, vf)
        else:  # fewer kernels than solve_spd, which matters for an eager GPU loop
            chol, info = torch.linalg.cholesky_ex(a)
            w = torch.cholesky_solve(vf.unsqueeze(2), chol).squeeze(2)
            factored = info == 0
        wsum = w.sum(1, keepdim=True)
        alpha = w / wsum
        # a finite sum means finite weights (an Inf or NaN term makes the sum Inf or NaN), as in
        # _weights_all_valid; α = w / Σw would overflow only for a vanishing positive Σw, and
        # that iterate would be rejected by the safeguard (divergence without it), as before
        total = wsum.squeeze(1)
        ok = factored & (total.clamp(_SMALLEST, _LARGEST) == total) & self.free  # 0 < Σw < inf
        u = self.used
        alpha = torch.where(ok.unsqueeze(1), alpha, self.eye[self.last])
        return self._mix(alpha[:, :u].to(self.F.dtype).unsqueeze(1))

    def _mix(self, alpha: Tensor) -> Tensor:
        """The next iterate from the (b, 1, u) weights of the slots in use."""
        u = self.used
        # Σα x + β Σα g = Σα f − (1 − β) Σα g  (x = f − g): one batched product when β = 1
        z = self._output()
        torch.bmm(alpha, self.F[:, :u], out=z.unsqueeze(1))
        if self.beta != 1.0:
            z.sub_(torch.bmm(alpha, self.G[:, :u]).squeeze(1), alpha=1.0 - self.beta)
        return z

    def graph_key(self) -> int | None:
        """Position in the ring buffer once it is full (what a captured block bakes in)."""
        return self.pos % self.m if self.used == self.m else None

    def graph_advance(self, iterations: int) -> None:
        """Advance the counters as ``iterations`` accepted iterates would (graph replay)."""
        self.pos += iterations
        self.last = (self.pos - 1) % self.m

    def plain_steps(self, rows: Tensor) -> None:
        """Rows marked True propose the plain step z + βg from their newest pair (stagnation)."""
        if rows is self.plain:
            return
        if self.synced and not self.capturable:
            self.any_plain = bool(rows.any())
        self.plain, self.free = rows, ~rows

    def accept(self, z: Tensor, fz: Tensor, g: Tensor, restart: Tensor | None) -> None:
        if restart is not None:
            self.valid.masked_fill_(restart.unsqueeze(1), False)
            if not self.capturable:  # graph blocks must not change Python state (graph_advance)
                self.dirty_until = self.pos + self.m
        self._insert(fz, g)

    def select(self, keep: Tensor) -> None:
        u = self.used
        rows = keep.nonzero().squeeze(1)  # index_select: ~3x faster than a boolean mask
        b, n = rows.numel(), self.F.shape[2]
        if self.synced:
            self.F, self.G = compact_rows_in_place((self.F, self.G), rows.tolist(), u)
            self.pool = []  # recycled iterate buffers have the old row count
        else:
            # copy only the slots in use (the rest stay uninitialised); the selection makes
            # copies first, so this is safe when the new buffers reuse the old (workspace) storage
            kept_f = self.F[:, :u].index_select(0, rows)
            kept_g = self.G[:, :u].index_select(0, rows)
            self._alloc(b, n, kept_f)
            self.F[:, :u] = kept_f
            self.G[:, :u] = kept_g
        self.GG, self.valid, self.plain, self.free = (
            t.index_select(0, rows) for t in (self.GG, self.valid, self.plain, self.free))

    def close(self) -> None:
        """Hand the workspace back (the solve is over); drop references to the buffers."""
        if self.workspace is not None:
            self.workspace.busy = False
            self.workspace = None
        self.F = self.G = None  # type: ignore[assignment]
        self.pool = []


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
    stall_patience: int | None = 10,
    eps: float = 1e-9,
    args: Sequence[Any] = (),
    on_divergence: str = "raise",
    cuda_graph: bool = False,
    row_args: Sequence[int] | None = None,
    **unknown: Any,
) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration (window ``m``, relative Tikhonov ``lam``, mixing ``beta``).

    ``safeguard``: reject an iterate whose residual exceeds ``safeguard_factor`` × the sample's
    best and restart its history from the best iterate. ``stall_patience``: iterations without
    a 10 % fall of a sample's best residual before it falls back to plain steps for a while
    (module docstring); ``None`` or 0 disables. Returns (z*, stats).
    """
    check_options("anderson", unknown, ANDERSON_OPTIONS)
    m = integer_option("m", m, 1)
    lam = number_option("lam", lam, 0.0)
    beta = number_option("beta", beta, 0.0, low_open=True)  # β = 0 never moves
    # None or 0: no stagnation fallback
    patience = 0 if stall_patience is None else integer_option("stall_patience",
                                                               stall_patience, 0)
    # a solve holds at most max_iter pairs: a larger window would only allocate (B, m, n)
    # slots it never fills
    method = _Anderson(min(m, integer_option("max_iter", max_iter, 1)), lam, beta)
    try:
        return run(
            "anderson",
            method,
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
            safeguard=safeguard,
            safeguard_factor=safeguard_factor,
            stall_patience=patience,
            stall_min_steps=m,
        )
    finally:
        method.close()


ANDERSON_OPTIONS = (
    "tol", "max_iter", "stop_mode", "check_every", "m", "lam", "beta", "safeguard",
    "safeguard_factor", "stall_patience", "eps", "args", "on_divergence", "cuda_graph",
    "row_args",
)
