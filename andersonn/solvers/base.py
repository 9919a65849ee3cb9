"""Shared machinery of the batched fixed-point solvers: the driver loop, statistics, options.

Every solver finds z* = f(z*) for a batch z of shape (B, ...). The driver in :func:`run` owns
everything that is common to all methods, so a method only says how to propose the next iterate
and how to absorb an evaluated one:

* the batch is flattened to (B, n) and kept in a *history dtype* (float64 for float64 input,
  float32 otherwise — also when ``f`` runs in bf16/fp16 or under autocast);
* convergence is checked only every ``check_every`` iterations (one host sync per check; on
  accelerators by default each row at its own adaptive checks, at most every 5 iterations:
  sooner where the fall of its residual predicts its convergence), and
  at each check the samples that reached ``tol`` (or produced NaN/Inf) are retired and the state
  is compacted, so ``f`` is evaluated only on the still-active rows from then on. ``f`` must be
  batch-independent (row i of f(z) depends on row i of z only: GroupNorm, not BatchNorm);
* per-sample bookkeeping: f evaluations, final and lowest residual, converged / diverged flags,
  residual trace (grown in doubling chunks at the checks, returned as a compact copy),
  safeguard rejections; the best iterate per sample is returned;
* residual norms are plain norms in the history dtype; a float32 sum of squares overflows once
  the norm passes ~1.8e19, so on the CPU (a host check is free) rows whose norm is not finite
  are recomputed with :func:`scaled_norm`, and on accelerators an overflowed ‖f(z)‖ gives an
  Inf residual (never finite / Inf = 0, "converged"): a NaN/Inf residual is divergence;
* safeguarding (for the accelerated methods): an iterate whose residual is more than
  ``safeguard_factor`` times the best one so far (or not finite) is rejected, and the method
  restarts that sample's history from its best iterate;
* stagnation fallback (``stall_patience``, Anderson): a sample whose best residual has not
  fallen to ``STALL_GAIN`` × its value at the last such fall for ``stall_patience`` iterations
  restarts from its best iterate and takes plain (Picard) steps, unsafeguarded like forward
  iteration, until its best falls by that factor again and at least ``stall_min_steps`` plain
  steps were taken; then the method resumes from there. After ``STALL_GIVE_UP`` ×
  ``stall_patience`` plain steps without such a fall it resumes as well and that sample gets no
  further fallback. The watch is updated at the convergence checks (every ``check_every``
  iterations), so patience is counted in whole check intervals. Counted per sample in
  ``SolverStats.stalled``.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from andersonn.errors import ConfigError, InputError, SolverDivergence
from andersonn.solvers.graphs import BlockGraphs

FixedPointMap = Callable[..., Tensor]

STOP_MODES = ("rel", "abs")
DIVERGENCE_MODES = ("raise", "mark")
COMPACT = 8  # retired rows are dropped from the batch once they are 1/8 of it (1/2 in graphs)
COMPACT_GRAPH = 2
STALL_GAIN = 0.9  # stagnation fallback: a fall of the best residual by 10 % is progress
STALL_GIVE_UP = 3  # ... and plain steps are given up after 3 × patience of them without progress
CHECK_EVERY = 5  # on accelerators, by default, at most this many iterations between checks
TRACE_COLUMNS = 64  # the residual trace starts this wide (at most max_iter) and doubles as needed
# Tests and profiling set this False to run, on the CPU, exactly the code path of accelerators
# (no host syncs between checks, no CPU-only shortcuts), which no CPU-only machine would cover.
_CPU_SHORTCUTS = True


def sync_is_cheap(device: torch.device) -> bool:
    """Whether the solvers may read values back to the host at any time (the CPU): then they take
    data-dependent shortcuts; on accelerators the loop never syncs between convergence checks."""
    return device.type == "cpu" and _CPU_SHORTCUTS


@dataclass
class SolverStats:
    """Per-sample statistics of one batched solve (tensors of shape (B,) on the CPU).

    ``residual`` is the residual of the last iterate a sample saw, ``lowest_residual`` that of
    the returned (best) iterate; ``trace`` is (B, iterations) with NaN after a sample retired;
    ``rejected`` counts safeguard rejections, ``stalled`` stagnation fallbacks.
    Residuals are relative (‖f(z) − z‖ / (‖f(z)‖ + eps)) or absolute as ``stop_mode`` says.
    """

    solver: str
    stop_mode: str
    tol: float
    nfev: Tensor
    residual: Tensor
    lowest_residual: Tensor
    converged: Tensor
    diverged: Tensor
    rejected: Tensor
    stalled: Tensor
    trace: Tensor
    wall_time: float
    iterations: int
    history_dtype: str
    messages: list[str] = field(default_factory=list)
    graph_blocks: int = 0  # cuda_graph: blocks run as graphs (captured + replayed)
    graph_captures: int = 0  # ... of which captured (each costs an eager block and more)

    @classmethod
    def empty(cls, solver: str, stop_mode: str, tol: float, history_dtype: str,
              wall_time: float = 0.0) -> SolverStats:
        """The statistics of a solve over an empty batch (B = 0)."""
        none = torch.zeros(0, dtype=torch.long)
        no = torch.zeros(0, dtype=torch.bool)
        nothing = torch.zeros(0)
        return cls(solver, stop_mode, tol, none, nothing, nothing.clone(), no, no.clone(),
                   none.clone(), none.clone(), torch.zeros(0, 0), wall_time, 0, history_dtype)

    @property
    def batch_size(self) -> int:
        """Number of samples B."""
        return int(self.nfev.shape[0])

    def summary(self) -> dict[str, Any]:
        """A plain-JSON dict: means and extremes over the batch, plus wall time.
        ``residual_mean`` / ``residual_max`` are those of the returned (best) iterates, i.e. of
        ``lowest_residual``, over the samples where it is finite."""
        low = self.lowest_residual.double()
        finite = low[torch.isfinite(low)]
        return {
            "solver": self.solver,
            "stop_mode": self.stop_mode,
            "tol": float(self.tol),
            "batch_size": self.batch_size,
            "iterations": int(self.iterations),
            "nfev_mean": float(self.nfev.double().mean()) if self.batch_size else 0.0,
            "nfev_max": int(self.nfev.max()) if self.batch_size else 0,
            "nfev_total": int(self.nfev.sum()),
            "converged_fraction": float(self.converged.double().mean()) if self.batch_size else 1.0,
            "diverged": int(self.diverged.sum()),
            "rejected_steps": int(self.rejected.sum()),
            "stall_fallbacks": int(self.stalled.sum()),
            "residual_mean": float(finite.mean()) if finite.numel() else None,
            "residual_max": float(finite.max()) if finite.numel() else None,
            "wall_time": float(self.wall_time),
            "history_dtype": self.history_dtype,
            "cuda_graph_blocks": int(self.graph_blocks),
            "cuda_graph_captures": int(self.graph_captures),
            "messages": list(self.messages),
        }


def check_options(solver: str, unknown: dict[str, Any], valid: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for the first unknown option, suggesting the closest name."""
    if not unknown:
        return
    name = sorted(unknown)[0]
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown option {name!r} for solver {solver!r}{hint}; valid options: "
        + ", ".join(sorted(valid))
    )


def integer_option(option: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; a float (2.5), bool or string is refused
    rather than truncated."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < minimum:
        raise ConfigError(f"option {option}={value!r} must be an integer of at least {minimum}")
    return number


def number_option(option: str, value: Any, low: float, high: float = math.inf, *,
                  low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a finite float from ``low`` to ``high`` (each end open or closed)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if real else math.nan  # "1e-3" or True: a mistake, not a number
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        if high == math.inf:
            span = f"{'above' if low_open else 'at least'} {low:g}"
        else:
            span = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                    f"{')' if high_open else ']'}")
        raise ConfigError(f"option {option}={value!r} must be a number {span}")
    return number


def _check_choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(
            f"option {option}={value!r} is not valid; choose one of: "
            + ", ".join(repr(c) for c in choices)
        )


class Method(Protocol):
    """What a solver method implements; the driver calls these on the active rows only."""

    uses_safeguard: bool

    def init(self, z: Tensor, fz: Tensor) -> None:
        """Start from the first evaluated pair (z0, f(z0)), both (b, n)."""

    def propose(self) -> Tensor:
        """Return the next iterate to evaluate, (b, n)."""

    def accept(self, z: Tensor, fz: Tensor, g: Tensor, restart: Tensor | None) -> None:
        """Absorb an evaluated pair (g = fz − z); rows with ``restart`` True drop their history
        and restart from this pair (the driver then passes the sample's best iterate instead).
        The tensors may be kept by reference but must not be modified in place."""

    def select(self, keep: Tensor) -> None:
        """Keep only the rows where the boolean mask ``keep`` is True."""

    # Optional: ``residual_buffer() -> Tensor`` returns a (b, n) tensor the driver may write
    # g = f(z) − z into (with ``out=``) before calling ``accept``; the method must not rely on
    # its old contents after ``propose``.
    # For ``cuda_graph``: ``graph_key() -> Hashable | None`` (what a captured block of
    # iterations bakes in, e.g. a ring-buffer position; None: not capturable now) and
    # ``graph_advance(iterations)`` (advance Python-side counters as that many iterations would,
    # after a replay); a ``capturable`` attribute, if present, is set True for such solves.
    # Needed for ``stall_patience``: ``plain_steps(rows)`` with a (b,) bool mask, set each time
    # the stall watch updates (before the ``accept`` of a check iteration): rows marked True
    # propose plain (Picard) steps from their newest pair until the mask changes.


class _LoopState:
    """The tensors the driver's iterations update, one row per active sample, as attributes
    (so a CUDA-graph block can snapshot, copy back and compare them generically)."""

    def __init__(self, **tensors: Tensor) -> None:
        vars(self).update(tensors)


class _StallWatch:
    """Per-sample stagnation detector and fallback switch; all state is (b,) device tensors.

    A row *stalls* when its best residual has not fallen to ``STALL_GAIN`` × its value at the
    last such fall (``anchor``) for ``patience`` iterations; the driver restarts it from its best
    iterate and it takes plain steps until the best has fallen by that factor and at least
    ``min_steps`` plain steps were taken. A row whose plain steps bring no such fall in
    ``STALL_GIVE_UP`` × ``patience`` steps (f is not contractive there, say) goes back to the
    method without a restart and never stalls again.
    """

    def __init__(self, best_res: Tensor, patience: int, min_steps: int) -> None:
        self.patience, self.min_steps = patience, min_steps
        zeros = torch.zeros_like(best_res, dtype=torch.int64)  # never modified in place
        self.anchor = best_res
        self.wait = zeros  # iterations since the best last fell by the gain factor
        self.steps = zeros  # iterations since the last stall
        self.stalls = zeros  # stalls so far
        self.plain = torch.zeros_like(best_res, dtype=torch.bool)  # rows taking plain steps
        self.guarded = ~self.plain  # ~plain, kept so that iterations need not recompute it
        self.enabled = ~self.plain  # rows that may still stall
        self.any_plain = False  # (update_synced only) whether plain may hold a True

    def update(self, best_res: Tensor, iterations: int = 1) -> Tensor:
        """Advance ``iterations`` iterations (the driver calls this once per convergence check,
        so on a GPU it costs a dozen small kernels per ``check_every`` iterations, not per
        iteration); return the rows that stall now (to restart from their best)."""
        self._advance(best_res, iterations)
        return self._transitions()

    def update_synced(self, best_res: Tensor, iterations: int = 1) -> Tensor | None:
        """:meth:`update` where a host sync is free (the CPU): while no row takes plain steps
        and none has waited ``patience`` iterations, only the progress bookkeeping runs — the
        transitions would change nothing — and None (no row stalls) is returned."""
        self._advance(best_res, iterations)
        if not self.any_plain and int(self.wait.max()) < self.patience:
            return None
        stall = self._transitions()
        self.any_plain = bool(self.plain.any())
        return stall

    def _advance(self, best_res: Tensor, iterations: int) -> None:
        gain = best_res <= STALL_GAIN * self.anchor
        self.anchor = torch.where(gain, best_res, self.anchor)
        self.wait = torch.where(gain, 0, self.wait + iterations)
        self.steps = self.steps + iterations

    def _transitions(self) -> Tensor:
        steps = self.steps
        fell = self.wait < steps  # the best fell since the stall (at the stall, wait >= patience)
        resume = self.plain & fell & (steps >= self.min_steps)
        give_up = self.plain & ~fell & (steps >= STALL_GIVE_UP * self.patience)
        stall = (self.wait >= self.patience) & ~self.plain & self.enabled
        self.enabled = self.enabled & ~give_up
        self.steps = torch.where(stall, 0, steps)
        self.stalls = self.stalls + stall
        self.plain = (self.plain & ~(resume | give_up)) | stall
        self.guarded = ~self.plain
        return stall

    def select(self, keep: Tensor) -> None:
        """Keep only the rows where ``keep`` is True."""
        self.anchor, self.wait, self.steps = self.anchor[keep], self.wait[keep], self.steps[keep]
        self.stalls, self.plain = self.stalls[keep], self.plain[keep]
        self.enabled, self.guarded = self.enabled[keep], self.guarded[keep]


def autocast_state(device_type: str) -> tuple[bool, torch.dtype | None] | None:
    """The caller's autocast setting on ``device_type`` as (enabled, dtype); None on a device
    without autocast support."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
        return enabled, (torch.get_autocast_dtype(device_type) if enabled else None)
    except (RuntimeError, TypeError):  # pragma: no cover - device without autocast support
        return None


@contextlib.contextmanager
def _autocast_off(device_type: str) -> Iterator[tuple[bool, torch.dtype | None]]:
    """Disable autocast for the solver's own arithmetic; yield the caller's autocast state."""
    state = autocast_state(device_type)
    if state is None:
        yield False, None
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield state


def merge_rows(best: Tensor, new: Tensor, take: Tensor, in_place: bool) -> Tensor:
    """``best`` with the rows where ``take`` is True replaced by those of ``new`` (CPU).

    In place when ``in_place`` (``best`` is the caller's own copy), else into a fresh copy of
    whichever tensor contributes more rows. Row copies in a Python loop: on the CPU 2-5x faster
    than ``torch.where`` over the whole (b, n) tensors, which reads both and writes a third.
    """
    rows = take.nonzero().squeeze(1).tolist()
    if in_place:
        target, source = best, new
    elif 2 * len(rows) >= take.numel():
        target, source, rows = new.clone(), best, (~take).nonzero().squeeze(1).tolist()
    else:
        target, source = best.clone(), new
    for i in rows:
        target[i].copy_(source[i])
    return target


def compact_rows_in_place(buffers: Sequence[Tensor], kept: list[int], slots: int
                          ) -> list[Tensor]:
    """Move the rows ``kept`` (ascending) of contiguous (b, m, n) history buffers to the front,
    slots ``[:slots]`` only, and return the (len(kept), m, n) prefix views (CPU compaction).

    Only rows that change place are copied, once, without a new allocation (a gather into new
    buffers copies every kept row, and a copy back into reused storage copies it again). A run
    of consecutive kept rows moves down by its shift in chunks no longer than the shift, so a
    chunk's source and destination never overlap and nothing is read after being overwritten
    (every destination lies below every source still to be read).
    """
    dst, j = 0, 0
    while j < len(kept):
        end = j + 1
        while end < len(kept) and kept[end] == kept[end - 1] + 1:
            end += 1
        start, length = kept[j], end - j
        shift = start - dst
        done = 0
        while shift and done < length:
            size = min(shift, length - done)
            for buf in buffers:
                buf[dst + done:dst + done + size, :slots].copy_(
                    buf[start + done:start + done + size, :slots])
            done += size
        dst += length
        j = end
    return [buf[:len(kept)] for buf in buffers]


def scaled_norm(x: Tensor) -> Tensor:
    """Row norms of a (b, n) tensor in float64, scaled by each row's largest magnitude first, so
    finite values never overflow the sum of squares (a plain float32 norm overflows once the norm
    passes ~1.8e19); a row with NaN/Inf gets a non-finite norm."""
    x = x.double()
    scale = x.abs().amax(dim=1, keepdim=True)
    scale = torch.where((scale > 0) & torch.isfinite(scale), scale, 1.0)
    return torch.linalg.vector_norm(x / scale, dim=1) * scale.squeeze(1)


def _recompute_overflowed(res: Tensor, overflowed: Tensor, g: Tensor, fz: Tensor | None,
                          eps: float) -> Tensor:
    """``res`` (a fresh tensor) with the ``overflowed`` rows (their plain norms not finite)
    recomputed from :func:`scaled_norm` (``fz`` given: relative residuals). Finite iterates
    keep their true residual; rows with NaN/Inf in g or f(z), or a residual beyond ``res``'s
    dtype, stay non-finite, which the driver treats as divergence."""
    rows = overflowed.nonzero().squeeze(1)
    exact = scaled_norm(g.index_select(0, rows))
    if fz is not None:
        exact = exact / (scaled_norm(fz.index_select(0, rows)) + eps)
    res[rows] = exact.to(res.dtype)
    return res


def per_sample_args(args: Any, row_args: Any, batch: int) -> tuple[tuple[Any, ...], list[bool]]:
    """``args`` as a tuple and, for each, whether it is per-sample (cut to the active rows when
    converged rows are dropped): every tensor with leading dimension ``batch`` when
    ``row_args`` is None, else exactly the positions ``row_args`` lists."""
    if not isinstance(args, (tuple, list)):
        raise ConfigError(f"option args must be a tuple or list of f's extra arguments, got "
                          f"{type(args).__name__}")
    args = tuple(args)

    def batched(a: Any) -> bool:
        return isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch

    if row_args is None:
        return args, [batched(a) for a in args]
    if not isinstance(row_args, (tuple, list)):
        raise ConfigError(f"option row_args={row_args!r} must be a tuple or list of positions "
                          "in args")
    rows = [False] * len(args)
    for value in row_args:
        i = integer_option("row_args", value, 0)
        if i >= len(args):
            raise ConfigError(f"option row_args names position {i}, but args has {len(args)} "
                              "items")
        if not batched(args[i]):
            raise ConfigError(f"option row_args names args[{i}], which is not a tensor with "
                              f"leading dimension B = {batch}")
        rows[i] = True
    return args, rows


# what lowers a solver's step, for the divergence message (Broyden has no such option)
_STEP_ADVICE = {"anderson": "lower the mixing beta, ", "forward_iteration": "add damping, "}


def history_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """float64 input keeps float64; everything else (fp32, bf16, fp16) is kept in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def run(
    name: str,
    method: Method,
    f: FixedPointMap,
    z0: Tensor,
    *,
    tol: float,
    max_iter: int,
    stop_mode: str,
    check_every: int | None,
    eps: float,
    args: Sequence[Any],
    on_divergence: str,
    safeguard: bool,
    safeguard_factor: float,
    stall_patience: int = 0,
    stall_min_steps: int = 1,
    cuda_graph: bool = False,
    row_args: Sequence[int] | None = None,
) -> tuple[Tensor, SolverStats]:
    """Drive ``method`` on ``f`` from ``z0``; see the module docstring for the contract."""
    start = time.perf_counter()
    _check_choice("stop_mode", stop_mode, STOP_MODES)
    _check_choice("on_divergence", on_divergence, DIVERGENCE_MODES)
    if not isinstance(z0, Tensor) or z0.dim() < 1:
        raise InputError("z0 must be a tensor with a leading batch dimension (B, ...)")
    if z0.is_complex():  # the history is real: the imaginary part would be dropped
        raise InputError(f"z0 must be a real tensor, got {z0.dtype}; solve for the real and "
                         "imaginary parts as real numbers (torch.view_as_real)")
    if not z0.is_floating_point():
        raise InputError(f"z0 must be a floating-point tensor, got {z0.dtype} (the iterates "
                         "would be truncated to it)")
    max_iter = integer_option("max_iter", max_iter, 1)
    tol = number_option("tol", tol, 0.0)
    eps = number_option("eps", eps, 0.0, low_open=True)  # 0 makes f(z) = z = 0 a 0/0
    safeguard_factor = number_option("safeguard_factor", safeguard_factor, 1.0)
    # the default on accelerators: each row is checked at most every CHECK_EVERY iterations,
    # sooner where the fall of its residual predicts its convergence (see own_checks)
    adaptive = check_every is None and not sync_is_cheap(z0.device)
    if check_every is None:
        check_every = 1 if sync_is_cheap(z0.device) else CHECK_EVERY
    check_every = integer_option("check_every", check_every, 1)
    if not isinstance(cuda_graph, bool):
        raise ConfigError(f"option cuda_graph={cuda_graph!r} must be True or False")
    if not isinstance(safeguard, bool):  # "False" would mean True
        raise ConfigError(f"option safeguard={safeguard!r} must be True or False")
    explicit_rows = row_args is not None
    args, row_args = per_sample_args(args, row_args, z0.shape[0])
    if z0.shape[0] == 0:  # an empty batch: nothing to solve (the loop below would not end)
        return z0.detach().clone(), SolverStats.empty(
            name, stop_mode, tol, str(history_dtype_for(z0.dtype)).removeprefix("torch."),
            time.perf_counter() - start)

    device, in_dtype = z0.device, z0.dtype
    batch, shape = z0.shape[0], tuple(z0.shape[1:])
    hdtype = history_dtype_for(in_dtype)
    dtype_name = str(hdtype).removeprefix("torch.")
    rel = stop_mode == "rel"
    # CPU: a host check is free, so norms that overflowed are recomputed exactly (scaled_norm);
    # accelerators never sync between checks: there a norm past the float range is non-finite
    exact_overflow = sync_is_cheap(device)
    sliced = [i for i, is_row in enumerate(row_args) if is_row]
    # f failing after a compaction may be an argument cut to the active rows by mistake
    slice_hint = (
        f"{name}: f failed after converged rows were dropped from the batch; args {sliced} were "
        f"cut to the same rows because their first dimension equals the batch size {batch}. If "
        "one of them is shared by all samples, pass row_args listing only the per-sample ones "
        "(row_args=() for none)"
    ) if sliced and not explicit_rows else None
    epoch = 0  # compactions so far

    with torch.no_grad(), _autocast_off(device.type) as (ac_enabled, ac_dtype):

        def call(z: Tensor, active_args: tuple[Any, ...]) -> Tensor:
            zin = z.view(z.shape[0], *shape)
            if zin.dtype != in_dtype:  # a Python test is cheaper than a no-op .to() dispatch
                zin = zin.to(in_dtype)
            try:
                if ac_enabled:  # no weight-cast cache in graphs: it would outlive the capture
                    with torch.autocast(device_type=device.type, dtype=ac_dtype,
                                        cache_enabled=not cuda_graph):
                        out = f(zin, *active_args)
                else:
                    out = f(zin, *active_args)
            except Exception as exc:
                if epoch and slice_hint is not None and hasattr(exc, "add_note"):
                    exc.add_note(slice_hint)  # Python >= 3.11
                raise
            if not isinstance(out, Tensor) or tuple(out.shape) != tuple(zin.shape):
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise InputError(
                    f"{name}: f must return a tensor shaped like z {tuple(zin.shape)}, got {got}"
                )
            if not out.is_floating_point():
                raise InputError(f"{name}: f must return real floating-point values, got "
                                 f"{out.dtype} (the iterates would be truncated to it)")
            out = out.reshape(z.shape[0], -1)
            return out if out.dtype == hdtype else out.to(hdtype)

        def residual(g: Tensor, fz: Tensor) -> Tensor:
            r = torch.linalg.vector_norm(g, dim=1)
            # (CPU) one cheap reduction says whether any norm is not finite: the sum of the
            # norms, or the dot product of both (NaN where one is Inf and the other 0); a
            # spurious overflow of the reduction itself only costs a recomputation of no rows
            if not rel:
                if exact_overflow and not math.isfinite(float(r.sum())):
                    r = _recompute_overflowed(r, ~torch.isfinite(r), g, None, eps)
                return r
            d = torch.linalg.vector_norm(fz, dim=1)
            res = r / (d + eps)
            if exact_overflow:
                if not math.isfinite(float(torch.dot(r, d))):
                    res = _recompute_overflowed(res, ~torch.isfinite(r) | ~torch.isfinite(d), g,
                                                fz, eps)
                return res
            # an overflowed ‖f(z)‖ would make the residual 0 ("converged"): make it Inf instead
            # (d is a norm: d == inf is isinf in one kernel instead of two)
            return res.masked_fill_(d == math.inf, math.inf)

        def is_check(k: int) -> bool:
            """Convergence is checked (one host sync) before evaluation k + 1: every
            ``check_every`` evaluations, or (adaptive) after every block, and at z0 (a warm
            start may have converged there already: it then costs one evaluation)."""
            return k == 1 or k >= max_iter or adaptive or k % check_every == 0

        def grid_after(k: int) -> int:
            """The first multiple of ``check_every`` after ``k`` (or ``max_iter``): where fixed
            checks fall, and the stall watch is updated."""
            return min(max_iter, (k // check_every + 1) * check_every)

        def own_checks(k: int, due: Tensor) -> int:
            """(adaptive checks) Schedule each row's next own check and return the next host
            check. A row due now is next checked when, at the rate its best residual fell since
            its last own check, it reaches tol — 1 to ``check_every`` iterations on, never past
            the next multiple of ``check_every`` (where the stall watch is updated) nor
            ``max_iter``. A row is retired only at its own checks, so its schedule, iterates
            and result depend on its own residuals alone: the batch result equals solo solves.
            On a GPU a check costs a host sync and a few kernels, an iteration ~100 kernels, so
            a check where a row probably converges beats up to check_every − 1 wasted
            iterations."""
            best = s.best_res.double()  # a float32 ratio of residuals can underflow to 0
            # (at z0 there is no rate yet, 0: the next check is on the grid)
            rate = torch.log(best / s.own_best) / (k - s.own_k).clamp(min=1)
            need = torch.where(rate < 0, torch.log(tol / best) / rate, float(check_every))
            # NaN (−inf / −inf: a residual that fell past the float range, or tol 0): longest
            step = torch.ceil(need.nan_to_num(check_every).clamp(1, check_every)).to(torch.int64)
            s.own_next = torch.where(due, (step + k).clamp(max=grid_after(k)), s.own_next)
            s.own_k = torch.where(due, k, s.own_k)
            s.own_best = torch.where(due, best, s.own_best)
            nxt = int(torch.where(s.alive, s.own_next, max_iter).min())  # the check's sync
            return max(k + 1, nxt)

        z0_flat = z0.detach().reshape(batch, -1).to(hdtype)
        n = z0_flat.shape[1]
        out = torch.empty(batch, n, dtype=hdtype, device=device)
        res_out = torch.full((batch,), float("inf"), dtype=hdtype, device=device)
        low_out = res_out.clone()
        nfev_out = torch.zeros(batch, dtype=torch.int64, device=device)
        conv_out = torch.zeros(batch, dtype=torch.bool, device=device)
        div_out = torch.zeros(batch, dtype=torch.bool, device=device)
        rej_out = torch.zeros(batch, dtype=torch.int64, device=device)
        stall_out = torch.zeros(batch, dtype=torch.int64, device=device)
        # widened (doubled) at the checks as needed, outside any captured block: a (B, max_iter)
        # buffer would cost B × max_iter × 4 bytes whatever the number of iterations
        trace = torch.full((batch, min(max_iter, TRACE_COLUMNS)), float("nan"), dtype=hdtype,
                           device=device)
        messages: list[str] = []

        idx: Tensor | None = None  # global rows of the active set; None = all rows
        active_args = args
        z = z0_flat
        fz = call(z, active_args)
        res = residual(fz - z, fz)
        trace[:, 0] = res
        method.init(z, fz)
        # everything an iteration updates, one row per active sample; best_* are modified in
        # place only in eager CPU solves once they are the driver's own copies (best_owned),
        # the flags and counters are
        s = _LoopState(
            best_z=z, best_fz=fz, best_res=res, res=res,
            bad=~torch.isfinite(res),
            rejected=torch.zeros(batch, dtype=torch.int64, device=device),
            restarted=torch.zeros(batch, dtype=torch.bool, device=device),
            alive=torch.ones(batch, dtype=torch.bool, device=device),  # active, not retired
            # residuals of the iterations since the last check, written to trace at the check
            trace_block=trace.new_empty(batch, min(check_every, max_iter)),
        )
        n_alive = batch
        # a method that does not keep g by reference may name a buffer to write it into
        # (Anderson: its next history slot), saving an allocation and a copy per iteration
        g_buffer = getattr(method, "residual_buffer", None)
        use_guard = safeguard and method.uses_safeguard
        watch = _StallWatch(res, stall_patience, stall_min_steps) if stall_patience else None
        graphs = BlockGraphs.for_device(device, method) if cuda_graph else None
        if graphs is not None and hasattr(method, "capturable"):
            method.capturable = True  # type: ignore[attr-defined]
        graph_objs = [s, method] + ([watch] if watch is not None else [])
        # On the CPU a host sync is free, so cheap data-dependent shortcuts avoid full-size
        # copies; on accelerators (and in graphs) the loop never syncs between checks.
        cheap_sync = sync_is_cheap(device) and graphs is None
        # (eager CPU solves) whether best_z / best_fz are the driver's own copies, updated in
        # place row by row, rather than references to an iterate the method may still hold
        best_owned = [False]
        compact = COMPACT_GRAPH if graphs is not None else COMPACT
        adaptive = adaptive and graphs is None  # graphs replay blocks of one length
        if adaptive:  # each row's next own check (the first at z0), and the iteration and
            # best residual (float64) of its last one
            s.own_next = torch.ones_like(s.rejected)
            s.own_k = torch.ones_like(s.rejected)
            s.own_best = s.best_res.double()
        next_check = 1  # (adaptive) the next host check: set at the first, at z0
        watched = 1  # iterations at the last update of the stall watch
        k = 1  # f evaluations so far for every active row
        flushed = 1  # trace columns before this one are written

        def iterate(j: int, watch_iterations: int, masked: bool) -> None:
            """One iteration on the active rows; its residual goes to column j of the block.
            ``watch_iterations`` > 0: update the stall watch (the iteration before a check)."""
            z = method.propose()
            fz = call(z, active_args)
            g = torch.sub(fz, z, out=g_buffer()) if g_buffer is not None else fz - z
            res = residual(g, fz)
            s.trace_block[:, j] = torch.where(s.alive, res, float("nan")) if masked else res
            # residuals are >= 0, Inf or NaN: one comparison says "not finite" (isfinite is a
            # composite of four kernels on accelerators, where every launch counts)
            nonfinite = torch.logical_not(res < math.inf)
            # with the safeguard, a non-finite value at an extrapolated iterate is just rejected;
            # it counts as divergence only at the first iterate (z0), without the safeguard, or
            # when the Picard step from the best iterate right after a restart fails too.
            s.bad |= nonfinite if not use_guard else nonfinite & s.restarted
            improved = res < s.best_res
            s.best_res = torch.where(improved, res, s.best_res)
            if cheap_sync:
                n_improved = int(improved.sum())
                if n_improved == improved.numel():
                    s.best_z, s.best_fz = z, fz  # by reference: nothing modifies them in place
                    best_owned[0] = False
                elif n_improved:
                    s.best_z = merge_rows(s.best_z, z, improved, best_owned[0])
                    s.best_fz = merge_rows(s.best_fz, fz, improved, best_owned[0])
                    best_owned[0] = True
            else:
                s.best_z = torch.where(improved[:, None], z, s.best_z)
                s.best_fz = torch.where(improved[:, None], fz, s.best_fz)
            restart = None
            if use_guard:
                # the Picard step right after a restart is the safe step, never rejected: a
                # rejection there would restart from the same point into the same step again
                # (on bools a > b is a & ~b, in one kernel instead of two)
                over = torch.gt(res > safeguard_factor * s.best_res, s.restarted)
                if watch is not None:  # plain steps go unguarded, like forward iteration
                    over &= watch.guarded
                restart = over | nonfinite
                s.rejected += restart
            if watch is not None and watch_iterations:
                if cheap_sync:
                    stall = watch.update_synced(s.best_res, watch_iterations)
                else:
                    stall = watch.update(s.best_res, watch_iterations)
                method.plain_steps(watch.plain)  # type: ignore[attr-defined]
                if stall is not None:
                    restart = stall if restart is None else restart | stall
            if restart is not None:
                s.restarted = restart
                if not cheap_sync or bool(restart.any()):
                    z = torch.where(restart[:, None], s.best_z, z)
                    fz = torch.where(restart[:, None], s.best_fz, fz)
                    g = torch.sub(fz, z, out=g) if g_buffer is not None else fz - z
                else:
                    restart = None
            method.accept(z, fz, g, restart)
            s.res = res

        def global_rows() -> Tensor:
            """Global row numbers of the active set (built only where a check needs them)."""
            return torch.arange(batch, device=device) if idx is None else idx

        while True:
            if is_check(k):
                if k > flushed:
                    if k > trace.shape[1]:
                        wider = trace.new_full((batch, min(max_iter, max(k, 2 * trace.shape[1]))),
                                               float("nan"))
                        wider[:, :flushed] = trace[:, :flushed]
                        trace = wider
                    columns = s.trace_block[:, : k - flushed]
                    if idx is None:
                        trace[:, flushed:k] = columns
                    else:
                        trace[idx, flushed:k] = columns
                    flushed = k
                done = s.best_res <= tol
                s.bad &= s.alive
                due = s.alive & (s.own_next == k) if adaptive else s.alive  # own check now
                retire = (done | s.bad) & due if k < max_iter else s.alive.clone()
                if bool(retire.any()):
                    rows = global_rows()
                    bad_now = s.bad & retire
                    n_bad = int(bad_now.sum())
                    if n_bad:
                        bad_rows = rows[bad_now].tolist()
                        at_z0 = k == 1
                        msg = (
                            f"{name}: the residual became NaN/Inf for {n_bad} of {batch} samples "
                            f"(rows {bad_rows[:8]}{'...' if n_bad > 8 else ''}) "
                            + ("at z0: f(z0) is not finite" if at_z0 else
                               f"by iteration {k}: f returned NaN/Inf, or the iterates grew past "
                               f"the {dtype_name} range")
                        )
                        if on_divergence == "raise":
                            step = "" if at_z0 else _STEP_ADVICE.get(name, "")
                            raise SolverDivergence(
                                f"{msg}; {step}check the cell and its input, or pass "
                                "on_divergence='mark' to keep the other samples"
                            )
                        messages.append(msg)
                    retired = retire.nonzero().squeeze(1)
                    r = rows.index_select(0, retired)
                    value = s.best_fz.index_select(0, retired)
                    # a finite residual implies a finite f(z): scan the rows only otherwise
                    if not cheap_sync or not bool(torch.isfinite(s.best_res[retire]).all()):
                        finite_rows = torch.isfinite(value).all(dim=1, keepdim=True)
                        value = torch.where(finite_rows, value, z0_flat[r])
                    out.index_copy_(0, r, value)
                    res_out[r] = s.res[retire]
                    low_out[r] = s.best_res[retire]
                    nfev_out[r] = k
                    conv_out[r] = done[retire] & ~s.bad[retire]
                    div_out[r] = s.bad[retire]
                    rej_out[r] = s.rejected[retire]
                    if watch is not None:
                        stall_out[r] = watch.stalls[retire]
                    s.alive &= ~retire  # in place: a captured graph reads this tensor
                    n_alive = int(s.alive.sum())
                    if n_alive == 0:
                        break
                if adaptive:
                    next_check = own_checks(k, due)
                # Retired rows are recorded at once and dropped from the batch (a copy of all
                # solver state) once they are >= 1/COMPACT of it: f never spends more than that
                # share of its work on retired rows, and compaction stays rare. In graph solves
                # each compaction costs a recapture, so they compact at 1/2.
                if (s.alive.numel() - n_alive) * compact >= s.alive.numel():
                    keep = s.alive
                    kept = keep.nonzero().squeeze(1)  # index_select: ~3x faster than a mask
                    idx = global_rows().index_select(0, kept)
                    for key, value in list(vars(s).items()):
                        setattr(s, key, value.index_select(0, kept))
                    best_owned[0] = True  # fresh copies
                    if watch is not None:
                        watch.select(keep)
                    active_args = tuple(
                        a[idx] if is_row else a for a, is_row in zip(args, row_args, strict=True)
                    )
                    method.select(keep)
                    epoch += 1

            length = (next_check if adaptive else grid_after(k)) - k
            # the stall watch advances on the grid of check_every (blocks end on it, or earlier)
            end = k + length
            watch_iterations = 0
            if watch is not None and (end % check_every == 0 or end >= max_iter):
                watch_iterations, watched = end - watched, end

            def block(masked: bool, length: int = length, watch_iterations: int = watch_iterations
                      ) -> None:
                for j in range(length):
                    iterate(j, watch_iterations if j == length - 1 else 0, masked)

            masked = n_alive != s.alive.numel()
            if graphs is None:
                block(masked)
            else:
                graphs.run((epoch, length), length, graph_objs,
                           eager=lambda m=masked: block(m), block=lambda: block(True))
            k += length
        graph_blocks = graph_captures = 0
        if graphs is not None:
            if graphs.failure:
                messages.append(graphs.failure)
            graph_blocks = graphs.replays + graphs.captures
            graph_captures = graphs.captures

    iterations = k
    stats = SolverStats(
        solver=name,
        stop_mode=stop_mode,
        tol=tol,
        nfev=nfev_out.cpu(),
        residual=res_out.cpu(),
        lowest_residual=low_out.cpu(),
        converged=conv_out.cpu(),
        diverged=div_out.cpu(),
        rejected=rej_out.cpu(),
        stalled=stall_out.cpu(),
        trace=trace[:, :iterations].contiguous().cpu(),  # a compact copy, not a view
        wall_time=time.perf_counter() - start,
        iterations=iterations,
        history_dtype=dtype_name,
        messages=messages,
        graph_blocks=graph_blocks,
        graph_captures=graph_captures,
    )
    return out.view(batch, *shape).to(in_dtype), stats
