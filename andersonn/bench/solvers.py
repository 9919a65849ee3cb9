"""Benchmark of the fixed-point solvers on a convolutional DEQ cell (``andersonn bench solvers``).

The cell is the paper's (the implicit-layers tutorial's CIFAR cell,
:class:`~andersonn.bench.cells.ConvDEQCell`)::

    f(z, x) = GN3(ReLU(z + GN2(x + conv3x3_2(GN1(ReLU(conv3x3_1(z)))))))

48 channels, hidden width 64, 8 groups, 32×32 feature maps, batch 128, conv weights drawn from
N(0, 0.01) as in the tutorial, injected input x ~ N(0, 1). Two versions are solved:

* ``init``: the cell as initialised;
* ``weak``: "weakly contractive", like a trained DEQ: the second convolution's weights are scaled
  by the largest factor s (bisection on log s) for which, on the first ``PROBE`` samples, the
  median per-sample spectral radius of ∂f/∂z at z* is at most ``target_median`` and the largest
  at most ``target_max``. (GN1 makes f invariant to the scale of conv1, so conv2 is the knob.)
  The per-sample spectral radius of the whole batch is then measured and reported; if any
  sample reaches ``target_max`` or fails to converge, s is lowered by 2 % and re-measured
  (at most twice). The init cell's radius is measured on the probe only.

Spectral radius (:func:`~andersonn.bench.cells.contraction_rates`): power iteration
v ← Jv/‖Jv‖ with exact Jacobian–vector products (``torch.func.jvp``) at the fixed point found by
Anderson (rel. tol 1e-4); the estimate is the geometric mean of ‖Jv‖ over the last 30 of 60
iterations (the asymptotic per-step contraction rate of forward iteration near z*). As a
cross-check, the observed asymptotic rate of forward iteration (geometric mean of the residual
ratio over its last 50 steps) is reported.

Forward iteration's iterates do not depend on the tolerance, so it is run once per cell at the
tightest tolerance (``max_iter`` 500 on the weak cell) and its f evaluations at the looser
tolerances are read off the residual trace (first iteration with residual ≤ tol: exactly what a
separate run with ``check_every=1`` would count; its wall time is then not measured). The other
solvers (``max_iter`` 200) are run once per (cell, tolerance), in alternating order, after one
warm-up solve each; with ``repeats`` > 1 every point is solved that many times (the order
reversed each time) and the solve of median wall time is reported, with all the wall times.
f is wrapped by a timer (synchronised on CUDA) to split wall time into time in f and outside.
torchdeq 0.1.0's Anderson (``torchdeq.solver.get_solver("anderson")``, same m = 5, λ = 1e-4)
runs as an external baseline when installed; it stops when the whole batch has converged.
A last section measures how many bytes autograd keeps for one DEQ forward with implicit backward
as the number of solver iterations grows (saved-tensor hooks), against unrolled backprop.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from andersonn.bench.cells import (
    ConvDEQCell,
    contraction_rates,
    make_weakly_contractive,
    rate_summary,
    settle_scale,
)
from andersonn.bench.checks import check_tolerances
from andersonn.errors import ConfigError
from andersonn.fileio import atomic_write_json, atomic_write_text
from andersonn.solvers import get_solver

TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
SOLVER_NAMES = ("forward_iteration", "anderson", "broyden", "torchdeq_anderson")

PROBE = 16
FULL = {"channels": 48, "hidden": 64, "size": 32, "batch": 128, "groups": 8}
QUICK = {"channels": 8, "hidden": 8, "size": 8, "batch": 16, "groups": 4}
MAX_ITER = {"forward_iteration": 500}
DEFAULT_MAX_ITER = 200
QUICK_MAX_ITER = {"forward_iteration": 300}
QUICK_DEFAULT_MAX_ITER = 150


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedMap:
    """Wrap f: count calls and rows, accumulate seconds spent inside f."""

    def __init__(self, f: Callable[..., Tensor], device: torch.device) -> None:
        self.f, self.device = f, device
        self.seconds, self.calls, self.rows = 0.0, 0, 0

    def __call__(self, z: Tensor, *args: Any) -> Tensor:
        _sync(self.device)
        t = time.perf_counter()
        out = self.f(z, *args)
        _sync(self.device)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.rows += z.shape[0]
        return out


def _torchdeq_solver() -> Callable[..., Any] | None:
    try:
        from torchdeq.solver import get_solver as td_get_solver
    except Exception:
        return None
    return td_get_solver("anderson")


def _call_solver(solver: str, f: Callable[..., Tensor], x: Tensor, tol: float, max_iter: int,
                 cuda_graph: bool = False) -> tuple[Tensor, Any]:
    """One solve of z = f(z, x) from zeros; torchdeq returns no per-sample stats (None)."""
    z0 = torch.zeros_like(x)
    with torch.no_grad():
        if solver == "torchdeq_anderson":
            td = _torchdeq_solver()
            if td is None:
                raise ConfigError("torchdeq is not installed")
            z, _, _ = td(lambda z: f(z, x), z0, max_iter=max_iter, tol=tol, stop_mode="rel",
                         m=5, lam=1e-4, tau=1.0)
            return z, None
        return get_solver(solver)(f, z0, tol=tol, max_iter=max_iter, stop_mode="rel",
                                  args=(x,), on_divergence="mark", cuda_graph=cuda_graph)


def _timed_solve(solver: str, f: Callable[..., Tensor], x: Tensor, tol: float, max_iter: int,
                 cuda_graph: bool = False) -> tuple[Tensor, Any, float]:
    _sync(x.device)
    start = time.perf_counter()
    z, stats = _call_solver(solver, f, x, tol, max_iter, cuda_graph)
    _sync(x.device)
    return z, stats, time.perf_counter() - start


def graph_f_seconds_per_row(cell: nn.Module, x: Tensor, replays: int = 20) -> float:
    """GPU time of one evaluation of f per batch row, f captured as a CUDA graph (no launch
    cost): what f costs inside a graph-captured solve."""
    z = torch.zeros_like(x)
    with torch.no_grad():
        cell(z, x)
        _sync(x.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            cell(z, x)
        graph.replay()
        _sync(x.device)
        start = time.perf_counter()
        for _ in range(replays):
            graph.replay()
        _sync(x.device)
    return (time.perf_counter() - start) / replays / x.shape[0]


def solve_once(
    solver: str,
    cell: nn.Module,
    x: Tensor,
    tol: float,
    max_iter: int,
    graph_f_per_row: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """One timed solve; returns (plain-JSON record, SolverStats or None for torchdeq).

    On the CPU one solve with f wrapped by the timer gives both the wall time and the time in f.
    On CUDA the timer must synchronise around every call of f, which stops the host from
    queueing work ahead of the GPU; there the wall time comes from a second, uninstrumented
    solve (same iterates), and the time outside f is that wall time minus the time in f.
    ``graph_f_per_row`` (CUDA, seconds per row from :func:`graph_f_seconds_per_row`): our
    solvers also run a third time with ``cuda_graph=True``; that solve's wall time is reported,
    the eager one as ``wall_time_eager``, and the time in f is rows × the graph-captured cost.
    """
    device = x.device
    timed = TimedMap(cell, device)
    batch = x.shape[0]
    z, stats, wall = _timed_solve(solver, timed, x, tol, max_iter)
    wall_instrumented = wall
    wall_eager = f_time = None
    graph_blocks = graph_captures = 0
    if device.type == "cuda":
        _, _, wall = _timed_solve(solver, cell, x, tol, max_iter)
        if graph_f_per_row is not None and solver != "torchdeq_anderson":
            wall_eager = wall
            _, gstats, wall = _timed_solve(solver, cell, x, tol, max_iter, cuda_graph=True)
            graph_blocks, graph_captures = gstats.graph_blocks, gstats.graph_captures
            f_time = timed.rows * graph_f_per_row
            if gstats.messages:
                warnings.warn("; ".join(gstats.messages), stacklevel=2)
    f_time = timed.seconds if f_time is None else f_time
    if stats is None:  # torchdeq: whole-batch stopping, no per-sample counts
        nfev = torch.full((batch,), timed.calls, dtype=torch.float64)
        with torch.no_grad():
            fz = cell(z, x)
        residual = (fz - z).flatten(1).norm(dim=1) / (fz.flatten(1).norm(dim=1) + 1e-9)
        converged = residual <= tol * 1.0001
        lowest = residual
    else:
        nfev, converged, lowest = stats.nfev.double(), stats.converged, stats.lowest_residual
    outside = max(wall - f_time, 0.0)
    record = {
        "solver": solver,
        "tol": tol,
        "max_iter": max_iter,
        "measured": True,
        "nfev_mean": float(nfev.mean()),
        "nfev_median": float(nfev.median()),
        "nfev_max": float(nfev.max()),
        "f_rows": timed.rows,
        "f_calls": timed.calls,
        "wall_time": wall,
        "wall_time_instrumented": wall_instrumented,
        "wall_time_eager": wall_eager,
        "cuda_graph_blocks": graph_blocks,
        "cuda_graph_captures": graph_captures,
        "f_time": f_time,
        "f_time_eager": timed.seconds,
        "overhead_fraction": outside / wall if wall > 0 else 0.0,
        "overhead_vs_f": outside / f_time if f_time else 0.0,
        "overhead_ms_per_call": 1000 * outside / max(timed.calls, 1),
        "converged_fraction": float(converged.double().mean()),
        "residual_max": float(lowest.double().max().cpu()),
    }
    return record, stats


def median_solve(solves: Sequence[tuple[dict[str, Any], Any]]) -> tuple[dict[str, Any], Any]:
    """Of repeated solves of one point (same iterates, other timings), the one with the median
    wall time (the lower median of an even count), its record listing every repeat's wall time
    (``wall_times``, sorted) so the spread is on record."""
    ranked = sorted(solves, key=lambda solve: solve[0]["wall_time"])
    record, stats = ranked[(len(ranked) - 1) // 2]
    return {**record, "repeats": len(ranked),
            "wall_times": [solve[0]["wall_time"] for solve in ranked]}, stats


_PROFILER_NOISE = re.compile(r"^(USDT|STAGE):|ActivityProfiler|[Kk]ineto")


@contextlib.contextmanager
def profiler_quiet() -> Iterator[None]:
    """Hold back what the profiler's C++ side (Kineto) prints on file descriptor 2 inside the
    block (``USDT: ... profiler_start`` lines and the like): the block's stderr goes to a
    temporary file, and every line of it that is not such profiler noise is written back to
    stderr afterwards, so nothing else is lost. Only this block's output is filtered."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(True)
                    if not _PROFILER_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def dispatch_counts(cell: nn.Module, x: Tensor, solvers: Sequence[str],
                    iterations: tuple[int, int] = (10, 30)) -> dict[str, dict[str, float]]:
    """Operator calls (and, on CUDA, kernel launches) per solver iteration, from the profiler.

    Each solver runs with tol = 0 for the two iteration counts; the difference of the counts over
    the difference of the iterations removes set-up and final statistics. Includes f's own
    operators (``f`` row: one call of the cell). On a GPU at small sizes every launch costs
    microseconds of host time, so these counts explain the time outside f.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if x.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)

    def count(fn: Callable[[], Any]) -> tuple[int, int]:
        with profiler_quiet(), profile(activities=activities) as prof:
            fn()
            _sync(x.device)
        events = prof.events()
        ops = sum(1 for e in events if e.cpu_parent is None and e.device_type.name == "CPU"
                  and e.name.startswith("aten::"))
        kernels = sum(1 for e in events if e.device_type.name == "CUDA")
        return ops, kernels

    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        _call_solver("forward_iteration", cell, x, 0.0, 2)  # warm-up
        ops, kernels = count(lambda: cell(torch.zeros_like(x), x))
    out["f"] = {"ops": float(ops), "kernels": float(kernels)}
    lo, hi = iterations
    for solver in solvers:
        _call_solver(solver, cell, x, 0.0, lo)  # warm-up
        ops_lo, k_lo = count(lambda s=solver: _call_solver(s, cell, x, 0.0, lo))
        ops_hi, k_hi = count(lambda s=solver: _call_solver(s, cell, x, 0.0, hi))
        out[solver] = {"ops": (ops_hi - ops_lo) / (hi - lo),
                       "kernels": (k_hi - k_lo) / (hi - lo)}
    return out


def forward_by_tolerance(stats: Any, tolerances: Sequence[float], max_iter: int
                         ) -> list[dict[str, Any]]:
    """f evaluations forward iteration needs for each tolerance, read off one run's trace.

    Forward iteration's iterates do not depend on ``tol``; with ``check_every=1`` a sample stops
    after the first evaluation whose residual is ≤ tol, so its count is that index + 1 (or
    ``max_iter``, not converged, if no traced residual reaches tol). ``stats`` must come from a
    run at a tolerance ≤ all of ``tolerances`` with ``max_iter`` evaluations allowed.
    """
    trace = stats.trace.double()
    out = []
    for tol in tolerances:
        hit = (trace <= tol) & torch.isfinite(trace)
        converged = hit.any(1)
        idx = hit.double().argmax(1)
        first = torch.where(converged, idx.double() + 1.0, float(max_iter))
        at_stop = trace.gather(1, idx.unsqueeze(1)).squeeze(1)
        lowest = torch.nan_to_num(trace, nan=float("inf")).min(1).values
        best = torch.where(converged, at_stop, lowest)
        out.append({
            "solver": "forward_iteration",
            "tol": tol,
            "max_iter": max_iter,
            "measured": False,
            "nfev_mean": float(first.mean()),
            "nfev_median": float(first.median()),
            "nfev_max": float(first.max()),
            "f_rows": int(first.sum()),
            "f_calls": None,
            "wall_time": None,
            "f_time": None,
            "overhead_fraction": None,
            "overhead_vs_f": None,
            "overhead_ms_per_call": None,
            "converged_fraction": float(converged.double().mean()),
            "residual_max": float(best.max()),
        })
    return out


def tail_rates(stats: Any, window: int = 50) -> Tensor:
    """Observed asymptotic contraction per step of forward iteration, per sample: geometric
    mean of r_{k+1}/r_k over the last ``window`` traced steps of each sample."""
    trace = stats.trace.double()
    rates = []
    for row in trace:
        r = row[torch.isfinite(row) & (row > 0)]
        r = r[-(window + 1):]
        rates.append(float((r[-1] / r[0]) ** (1.0 / (r.numel() - 1))) if r.numel() > 2
                     else float("nan"))
    return torch.tensor(rates, dtype=torch.float64)


def saved_bytes(deq_factory: Callable[[int], nn.Module], x: Tensor, iterations: int) -> int:
    """Bytes autograd saves for backward in one DEQ forward run for exactly ``iterations``."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    deq = deq_factory(iterations)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = deq(x)
    out.sum().backward()
    return total


def memory_section(cell: nn.Module, x: Tensor, iterations: Sequence[int]) -> list[dict[str, Any]]:
    """Autograd memory of implicit vs unrolled backward as solver iterations grow."""
    from andersonn.deq import DEQ

    rows = []
    x = x.detach().requires_grad_()
    for it in iterations:
        opts = {"tol": 0.0, "max_iter": it}
        implicit = saved_bytes(
            lambda n, o=opts: DEQ(cell, solver_options=o, backward_options={"max_iter": 10}),
            x,
            it,
        )
        unrolled = saved_bytes(
            lambda n, o=opts: DEQ(cell, solver_options=o, backward="unroll", unroll_steps=n),
            x,
            it,
        )
        rows.append({"iterations": it, "implicit_saved_bytes": implicit,
                     "unroll_saved_bytes": unrolled})
    return rows


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    channels: int | None = None,
    hidden: int | None = None,
    size: int | None = None,
    batch: int | None = None,
    tolerances: Sequence[float] = TOLERANCES,
    solvers: Sequence[str] = SOLVER_NAMES,
    target_median: float = 0.98,
    target_max: float = 0.99,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = None,
    tf32: bool = False,
    cuda_graph: bool = False,
    repeats: int = 1,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready result (see module docstring).

    ``threads`` sets torch's intra-op thread count for the run (restored afterwards); on a shared
    CPU one thread avoids oversubscription, which otherwise slows small convolutions ~10×.
    ``tf32``: allow TF32 convolutions on CUDA (off by default: it floors the residual every
    solver can reach, see :func:`andersonn.bench.report.tf32_mode`). ``cuda_graph`` (CUDA):
    our solvers' wall times come from solves with ``cuda_graph=True`` (see :func:`solve_once`).
    ``repeats``: solves per point; each point reports the one of median wall time
    (:func:`median_solve`).
    """
    from andersonn.bench.report import (
        CUDA_GRAPH_NEEDS_CUDA,
        allocation_failures,
        check_memory,
        check_positive,
        check_threads,
        tf32_mode,
    )

    threads = check_threads(threads)
    for flag, value in (("--channels", channels), ("--hidden", hidden), ("--size", size),
                        ("--batch", batch), ("--repeat", repeats)):
        check_positive(flag, value)
    if cuda_graph and device != "cuda":
        raise ConfigError(CUDA_GRAPH_NEEDS_CUDA)
    check_tolerances("tolerances", tolerances)
    dims = _dims(quick, channels, hidden, size, batch)
    what, advice = _size_options(dims)
    check_memory(estimate_bytes(dims, quick), what, advice, device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with tf32_mode(tf32), allocation_failures(what, advice):
            result = _run(quick=quick, device=device, channels=channels, hidden=hidden,
                          size=size, batch=batch, tolerances=tolerances, solvers=solvers,
                          target_median=target_median, target_max=target_max, seed=seed,
                          progress=progress, cuda_graph=cuda_graph and device == "cuda",
                          repeats=repeats)
        result["tf32"] = bool(tf32) and device == "cuda"
        return result
    finally:
        torch.set_num_threads(old_threads)


def estimate_bytes(dims: dict[str, int], quick: bool) -> int:
    """A rough lower bound of the benchmark's peak memory for ``dims`` (float32): Broyden's
    2 × 8 stored directions plus the iterate, f(z), the residual and the input of the whole batch
    (20 feature maps per sample), and the memory section's unrolled backward, about 4 feature
    maps per iteration on at most 4 samples."""
    per_sample = dims["channels"] * dims["size"] ** 2 * 4
    unrolled = min(4, dims["batch"]) * (20 if quick else 40) * 4
    return per_sample * (20 * dims["batch"] + unrolled)


def _size_options(dims: dict[str, int]) -> tuple[str, str]:
    """(what, advice) of a memory refusal: the sizes in use and the options that set them."""
    what = (f"bench solvers with batch {dims['batch']} × {dims['channels']} channels × "
            f"{dims['size']}×{dims['size']} feature maps (--batch, --channels, --size)")
    return what, "lower --size, --batch or --channels"


def _dims(quick: bool, channels: int | None, hidden: int | None, size: int | None,
          batch: int | None) -> dict[str, int]:
    dims = dict(QUICK if quick else FULL)
    if channels is not None:
        dims["channels"] = int(channels)
        if hidden is None:  # keep the tutorial's ratio 64 / 48
            dims["hidden"] = max(1, round(int(channels) * 4 / 3))
    for key, value in (("hidden", hidden), ("size", size), ("batch", batch)):
        if value is not None:
            dims[key] = int(value)
    if dims["channels"] % dims["groups"] or dims["hidden"] % dims["groups"]:
        dims["groups"] = 1
    return dims


def _run(
    *,
    quick: bool,
    device: str,
    channels: int | None,
    hidden: int | None,
    size: int | None,
    batch: int | None,
    tolerances: Sequence[float],
    solvers: Sequence[str],
    target_median: float,
    target_max: float,
    seed: int,
    progress: bool,
    cuda_graph: bool = False,
    repeats: int = 1,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"option device={device!r} is not valid; choose one of: 'cpu', 'cuda'")
    began = time.perf_counter()
    dims = _dims(quick, channels, hidden, size, batch)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = ConvDEQCell(dims["channels"], dims["hidden"], dims["groups"]).to(dev)
    shape = (dims["batch"], dims["channels"], dims["size"], dims["size"])
    x = torch.randn(shape, generator=gen).to(dev)
    skipped: list[str] = []
    solvers = list(solvers)
    if "torchdeq_anderson" in solvers and _torchdeq_solver() is None:
        solvers.remove("torchdeq_anderson")
        skipped.append("torchdeq_anderson (torchdeq not importable; pip install torchdeq==0.1.0)")
    max_iters = QUICK_MAX_ITER if quick else MAX_ITER
    default_max = QUICK_DEFAULT_MAX_ITER if quick else DEFAULT_MAX_ITER
    tolerances = sorted(tolerances, reverse=True)

    cells: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    probe = x[: min(PROBE, shape[0])]
    weak_cell = copy.deepcopy(cell)
    construction = make_weakly_contractive(weak_cell, probe, target_median, target_max,
                                           steps=5 if quick else 6,
                                           hi_scale=8.0 if quick else 4.0)
    rates, conv, factor = settle_scale(weak_cell, x, target_max)
    cells["weak"] = {
        "construction": (
            f"conv2 weights x s (largest s by bisection on log s in [1, "
            f"{8 if quick else 4}] with median "
            f"rho <= {target_median} and max rho <= {target_max} on the first "
            f"{probe.shape[0]} samples; then x0.98 while any of all {shape[0]} samples had "
            "rho >= target_max or z* not located to rel. residual 1e-3)"
        ),
        "scale": construction["scale"] * factor,
        "probe": construction["probe"],
        "rho_located_fraction": float(conv.double().mean()),
        "rho": rate_summary(rates),
    }
    rates, conv = contraction_rates(cell, probe)  # uniform at init: the probe suffices
    cells["init"] = {"construction": "as initialised (conv weights N(0, 0.01))", "scale": 1.0,
                     "rho_located_fraction": float(conv.double().mean()),
                     "rho": rate_summary(rates)}
    cells = {"init": cells["init"], "weak": cells["weak"]}
    setup_time = time.perf_counter() - began

    graph_f = {name: graph_f_seconds_per_row(c, x) for name, c in
               (("init", cell), ("weak", weak_cell))} if cuda_graph else {}
    # warm-up: one short solve of each solver (first-call costs: allocator, oneDNN primitives)
    for solver in solvers:
        solve_once(solver, cell, x, max(tolerances), 10, graph_f.get("init"))
    jobs: list[tuple[str, float | None, list[str]]] = []
    for cell_name in ("init", "weak"):
        if "forward_iteration" in solvers:
            jobs.append((cell_name, None, ["forward_iteration"]))
        others = [s for s in solvers if s != "forward_iteration"]
        for i, tol in enumerate(tolerances):
            jobs.append((cell_name, tol, others if i % 2 == 0 else others[::-1]))
    bar = tqdm(jobs, desc="bench solvers", disable=not progress, leave=False)
    for cell_name, tol, order in bar:
        f = cell if cell_name == "init" else weak_cell
        solved: dict[str, list[tuple[dict[str, Any], Any]]] = {name: [] for name in order}
        for repeat in range(repeats):  # each repeat in the other order: drifts in machine load
            for solver in (order if repeat % 2 == 0 else order[::-1]):  # fall on both
                bar.set_postfix_str(f"{cell_name} {solver} tol={tol or min(tolerances):g}"
                                    + (f" ({repeat + 1}/{repeats})" if repeats > 1 else ""))
                mi = max_iters.get(solver, default_max)
                solved[solver].append(solve_once(solver, f, x, tol or min(tolerances), mi,
                                                 graph_f.get(cell_name)))
        for solver in order:
            record, stats = median_solve(solved[solver])
            if tol is None:  # forward iteration: one run at the tightest tolerance
                mi = max_iters.get(solver, default_max)
                for r in forward_by_tolerance(stats, tolerances, mi):
                    if math.isclose(r["tol"], min(tolerances)):
                        r = record  # the measured run itself
                    r["cell"] = cell_name
                    results.append(r)
                tail = tail_rates(stats)
                cells[cell_name]["forward_tail_rate"] = {
                    "median": float(tail.nanmedian()), "max": float(tail[~tail.isnan()].max())
                    if bool((~tail.isnan()).any()) else None}
                continue
            record["cell"] = cell_name
            results.append(record)
    bar.close()
    order_key = {name: i for i, name in enumerate(SOLVER_NAMES)}
    results.sort(key=lambda r: (r["cell"] != "init", -r["tol"], order_key.get(r["solver"], 9)))
    mem_iters = (5, 10, 20) if quick else (10, 20, 40)
    mem_x = x[: min(4, shape[0])]
    memory = memory_section(weak_cell, mem_x, mem_iters)
    dispatch = dispatch_counts(cell, x, solvers, (3, 8) if quick else (10, 30))
    return {
        "benchmark": "solvers",
        "device": device,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "repeats": repeats,
        "cuda_graph": cuda_graph,
        "graph_f_ms_per_row": {k: 1000 * v for k, v in graph_f.items()},
        "dims": dims,
        "cell": "GN3(ReLU(z + GN2(x + conv2(GN1(ReLU(conv1(z)))))))",
        "max_iter": {"forward_iteration": max_iters.get("forward_iteration", default_max),
                     "others": default_max},
        "cells": cells,
        "results": results,
        "memory": memory,
        "dispatch_per_iteration": dispatch,
        "skipped": skipped,
        "setup_seconds": setup_time,
        "total_seconds": time.perf_counter() - began,
        "targets": targets(results),
    }


def _find(results: Sequence[dict[str, Any]], cell: str, solver: str, tol: float) -> dict | None:
    for r in results:
        if r["cell"] == cell and r["solver"] == solver and math.isclose(r["tol"], tol):
            return r
    return None


def bound_kind(base_converged: float, ours_converged: float) -> str | None:
    """What a ratio base / ours (f evaluations or wall time) is when a solver hit its iteration
    cap on some sample (converged fraction < 1): its count or time is then that of the cap, not
    of meeting the tolerance. ``"lower"`` (only the baseline capped: its true cost is higher),
    ``"upper"`` (only ours capped), ``"undetermined"`` (both), None (both converged: a ratio at
    equal tolerance)."""
    base_capped, ours_capped = base_converged < 1.0, ours_converged < 1.0
    if base_capped and ours_capped:
        return "undetermined"
    if base_capped:
        return "lower"
    if ours_capped:
        return "upper"
    return None


_BOUND_MARK = {None: "", "lower": ">=", "upper": "<=", "undetermined": "~"}


def targets(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the issue's targets on the results."""
    out: dict[str, Any] = {}
    ratios = []
    for r in results:
        if r["cell"] != "weak" or r["solver"] != "forward_iteration":
            continue
        ours = _find(results, "weak", "anderson", r["tol"])
        if ours:
            kind = bound_kind(r["converged_fraction"], ours["converged_fraction"])
            ratios.append({"tol": r["tol"], "ratio": r["nfev_mean"] / max(ours["nfev_mean"], 1e-12),
                           "bound": kind, "lower_bound": kind == "lower",
                           "upper_bound": kind == "upper",
                           "forward_converged": r["converged_fraction"],
                           "anderson_converged": ours["converged_fraction"]})
    if ratios:
        out["nfev_ratio_forward_over_anderson_weak"] = ratios
        at = [q for q in ratios if math.isclose(q["tol"], 1e-4)]
        if at:
            q = at[0]
            out["nfev_ratio_forward_over_anderson_weak_1e-4"] = q["ratio"]
            out["nfev_ratio_is_lower_bound"] = q["lower_bound"]
            out["nfev_ratio_bound"] = q["bound"]
            out["nfev_ratio_met"] = q["ratio"] >= 10 and q["anderson_converged"] == 1.0
    speedups = []
    for r in results:
        if r["solver"] != "torchdeq_anderson":
            continue
        mine = _find(results, r["cell"], "anderson", r["tol"])
        if mine:
            # torchdeq's wall time over ours: a capped solver's time is its time to the cap
            kind = bound_kind(r["converged_fraction"], mine["converged_fraction"])
            speedups.append({"cell": r["cell"], "tol": r["tol"],
                             "speedup": r["wall_time"] / max(mine["wall_time"], 1e-12),
                             "bound": kind, "torchdeq_converged": r["converged_fraction"],
                             "anderson_converged": mine["converged_fraction"]})
    if speedups:
        out["speedup_vs_torchdeq"] = speedups
        # the verdict is over points where both solvers met the tolerance on every sample;
        # elsewhere the ratio is time to an iteration cap, not speed at equal tolerance
        equal = [s for s in speedups if s["bound"] is None]
        out["speedup_verdict_over"] = "points where both solvers converged on every sample"
        out["speedup_points_excluded"] = [
            {"cell": s["cell"], "tol": s["tol"], "bound": s["bound"]}
            for s in speedups if s["bound"] is not None]
        out["speedup_min"] = min(s["speedup"] for s in equal) if equal else None
        out["speedup_met"] = (out["speedup_min"] >= 1.5) if equal else None
        weak = [s["speedup"] for s in equal if s["cell"] == "weak"]
        if weak:
            out["speedup_min_weak"] = min(weak)
    overheads = [r["overhead_vs_f"] for r in results if r["solver"] == "anderson"]
    if overheads:
        out["anderson_overhead_vs_f_max"] = max(overheads)
        out["overhead_met"] = max(overheads) < 0.10
        weak = [r["overhead_vs_f"] for r in results
                if r["solver"] == "anderson" and r["cell"] == "weak"]
        if weak:
            out["anderson_overhead_vs_f_weak_max"] = max(weak)
    td = [r["overhead_vs_f"] for r in results if r["solver"] == "torchdeq_anderson"]
    if td:
        out["torchdeq_overhead_vs_f_max"] = max(td)
    return out


def _bound_of(q: dict[str, Any]) -> str | None:
    """A ratio row's bound kind (older results carry only ``lower_bound``)."""
    if "bound" in q:
        return q["bound"]
    return "lower" if q.get("lower_bound") else None


def _fmt(value: float | None, spec: str) -> str:
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_benchmark` result."""
    d = result["dims"]
    lines = [
        f"solver benchmark on {result['device']} (torch {result['torch']}, "
        f"{result['threads']} threads): batch {d['batch']}, {d['channels']} channels "
        f"(hidden {d['hidden']}), {d['size']}x{d['size']}"
        + (f", TF32 {'on' if result.get('tf32') else 'off'}" if result["device"] == "cuda" else "")
        + (", our solvers with cuda_graph=True (wall; f time = rows x graph-captured f)"
           if result.get("cuda_graph") else "")
        + (f"; wall times: median of {result['repeats']} solves"
           if result.get("repeats", 1) > 1 else ""),
    ]
    for name, info in result["cells"].items():
        rho = info["rho"]
        tail = info.get("forward_tail_rate") or {}
        lines.append(
            f"  cell {name}: conv2 x {info['scale']:.4g}; spectral radius of df/dz at z* over "
            f"{rho['n']} samples: min {rho['min']:.4f} p10 {rho['p10']:.4f} median "
            f"{rho['median']:.4f} p90 {rho['p90']:.4f} max {rho['max']:.4f}"
            + (f"; forward tail rate median {tail['median']:.4f}" if tail.get("median") else "")
        )
    head = (f"{'cell':<5} {'tol':>7} {'solver':<18} {'nfev':>7} {'max':>5} {'wall s':>8} "
            f"{'f s':>8} {'outside f':>9} {'ms/call':>8} {'conv':>5} {'max res':>9}")
    lines += [head, "-" * len(head)]
    for r in result["results"]:
        share = None if r["overhead_fraction"] is None else 100 * r["overhead_fraction"]
        lines.append(
            f"{r['cell']:<5} {r['tol']:>7.0e} {r['solver']:<18} {r['nfev_mean']:>7.1f} "
            f"{r['nfev_max']:>5.0f} {_fmt(r['wall_time'], '>8.3f')} {_fmt(r['f_time'], '>8.3f')} "
            f"{_fmt(share, '>8.1f')}{'%' if share is not None else ' '} "
            f"{_fmt(r['overhead_ms_per_call'], '>8.1f')} "
            f"{r['converged_fraction']:>5.2f} {r['residual_max']:>9.2e}"
        )
    lines.append("forward iteration: one run at the tightest tolerance; rows without wall time "
                 "are read off its residual trace")
    lines.append("autograd bytes saved per DEQ forward (implicit vs unrolled backward):")
    for m in result["memory"]:
        lines.append(f"  {m['iterations']:>4} iterations: "
                     f"implicit {m['implicit_saved_bytes']:>12,d}   "
                     f"unroll {m['unroll_saved_bytes']:>12,d}")
    dispatch = result.get("dispatch_per_iteration") or {}
    if dispatch:
        cuda = result["device"] == "cuda"
        lines.append("per iteration, f included (profiler): " + ", ".join(
            f"{name} {d['ops']:.0f} ops" + (f" / {d['kernels']:.0f} kernels" if cuda else "")
            for name, d in dispatch.items()))
    t = result["targets"]
    if "nfev_ratio_forward_over_anderson_weak_1e-4" in t:
        bound = _BOUND_MARK[t.get("nfev_ratio_bound", "lower" if t["nfev_ratio_is_lower_bound"]
                                  else None)]
        bound += " " if bound else ""
        per = ", ".join(f"{q['tol']:.0e}: {_BOUND_MARK[_bound_of(q)]}{q['ratio']:.1f}x"
                        for q in t["nfev_ratio_forward_over_anderson_weak"])
        lines.append(f"target nfev(forward)/nfev(anderson) >= 10 on weak cell at 1e-4: "
                     f"{bound}{t['nfev_ratio_forward_over_anderson_weak_1e-4']:.1f}x "
                     f"({'met' if t['nfev_ratio_met'] else 'NOT met'}) [{per}]")
    if t.get("speedup_vs_torchdeq"):
        per = ", ".join(f"{s['cell']}@{s['tol']:.0e}: {_BOUND_MARK[s.get('bound')]}"
                        f"{s['speedup']:.2f}x" for s in t["speedup_vs_torchdeq"])
        if t.get("speedup_min") is None:
            verdict = "undecided: no point where both solvers converged on every sample"
        else:
            verdict = (f"min {t['speedup_min']:.2f}x over points where both converged "
                       f"({'met' if t['speedup_met'] else 'NOT met'})")
        lines.append(f"target wall time vs torchdeq anderson >= 1.5x: {verdict} [{per}]")
        if t.get("speedup_points_excluded"):
            lines.append("  (>= / <= / ~: a solver hit its iteration cap on some sample "
                         "(torchdeq / ours / both): time to the cap, a bound, left out of the "
                         "verdict)")
    if "anderson_overhead_vs_f_max" in t:
        lines.append(f"target anderson overhead < 10% of time in f: max "
                     f"{100 * t['anderson_overhead_vs_f_max']:.1f}% "
                     f"({'met' if t['overhead_met'] else 'NOT met'}; torchdeq's max "
                     f"{100 * t.get('torchdeq_overhead_vs_f_max', float('nan')):.1f}%)")
    lines.append(f"setup (cell construction, spectral radii) {result['setup_seconds']:.0f} s, "
                 f"total {result['total_seconds']:.0f} s")
    for s in result["skipped"]:
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


def solvers_markdown(result: dict[str, Any]) -> str:
    """The printed table of a :func:`run_benchmark` result as a markdown document."""
    return (f"## bench solvers{' (quick)' if result.get('quick') else ''}\n\n```\n"
            + format_table(result) + "\n```\n")


def main(out: str | Path | None = None, quick: bool = False, device: str = "cpu",
         progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Run, print the table, write ``solvers.json`` and ``solvers.md`` (``solvers_quick.*``
    with ``quick``) into ``out`` atomically; return the result. ``out`` is created and checked
    before the run, so a bad path fails at once."""
    from andersonn.bench.report import results_dir

    out_dir = results_dir("solvers", None, out) if out is not None else None
    result = run_benchmark(quick=quick, device=device, progress=progress, **kwargs)
    print(format_table(result))
    if out_dir is not None:
        stem = "solvers_quick" if quick else "solvers"
        atomic_write_json(out_dir / f"{stem}.json", result)
        atomic_write_text(out_dir / f"{stem}.md", solvers_markdown(result))
        print(f"wrote {out_dir / f'{stem}.json'} and {out_dir / f'{stem}.md'}")
    return result
