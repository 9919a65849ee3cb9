"""Benchmark of the fixed-point solvers on a convolutional DEQ cell (``andersonn bench solvers``).

The cell follows the paper's convolutional DEQ layer::

    f(z, x) = GroupNorm(x + conv3x3(GroupNorm(ReLU(conv3x3(z)))))

with conv weights drawn from N(0, 0.01) as in the paper's set-up and a random injected input x.
Two versions are solved:

* ``init``: the cell as initialised (strongly contractive: forward iteration converges fast);
* ``weak``: the second convolution's weights are scaled up by a factor s found by bisection so
  that the asymptotic contraction rate of forward iteration is close to
  ``target_rate`` (0.98 by default) for the slowest of the first 32 samples: the spectral radius
  of ∂f/∂z at z* (power iteration with central differences in float64) is close to 1.

Each (cell, tolerance, solver) combination is solved once on the same batch; f evaluations per
sample, wall time, time spent inside f (f is wrapped by a timer; on CUDA the timer synchronises),
and the overhead share outside f are recorded. torchdeq 0.1.0's Anderson
(``torchdeq.solver.get_solver("anderson")``) runs as an external baseline when it is installed.
A second section measures how many bytes autograd keeps for one DEQ forward with implicit
backward as the number of solver iterations grows (saved-tensor hooks; constant means memory
does not grow with iterations), against unrolled backprop.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from andersonn.errors import ConfigError
from andersonn.fileio import atomic_write_json
from andersonn.solvers import get_solver

TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
SOLVER_NAMES = ("forward_iteration", "anderson", "broyden", "torchdeq_anderson")

PROBE = 32
FULL = {"channels": 32, "size": 16, "batch": 128, "groups": 8}
QUICK = {"channels": 8, "size": 8, "batch": 16, "groups": 4}


class ConvDEQCell(nn.Module):
    """conv3x3 → ReLU → GroupNorm, add injected input, conv3x3, GroupNorm (batch-independent)."""

    def __init__(self, channels: int = 32, groups: int = 8, std: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, 0.0, std)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return self.norm2(x + self.conv2(self.norm1(F.relu(self.conv1(z)))))


def contraction_rates(cell: nn.Module, x: Tensor, iterations: int = 24) -> Tensor:
    """Spectral radius of the cell's Jacobian ∂f/∂z at its fixed point (power iteration).

    The fixed point is found with Anderson (in float64); then v ← J v / ‖J v‖ with J v from
    central differences, and the radius is the geometric mean of ‖J v‖ over the last half of the
    iterations, per sample (a CPU tensor of shape (B,)). This is the asymptotic per-step
    contraction rate of forward iteration near z*.
    """
    cell64 = copy.deepcopy(cell).double()
    x64 = x.detach().double()
    with torch.no_grad():
        z, _ = get_solver("anderson")(
            cell64, torch.zeros_like(x64), tol=1e-8, max_iter=100, args=(x64,),
            on_divergence="mark",
        )
        gen = torch.Generator().manual_seed(1)
        v = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
        view = (-1, *[1] * (v.dim() - 1))
        v = v / v.flatten(1).norm(dim=1).view(view)
        eps = 1e-5
        logs = []
        for k in range(iterations):
            jv = (cell64(z + eps * v, x64) - cell64(z - eps * v, x64)) / (2 * eps)
            norm = jv.flatten(1).norm(dim=1).clamp_min(1e-30)
            if k >= iterations // 2:
                logs.append(norm.log())
            v = jv / norm.view(view)
    return torch.stack(logs).mean(0).exp().cpu()


def make_weakly_contractive(
    cell: ConvDEQCell, x: Tensor, target_rate: float = 0.98, steps: int = 10
) -> tuple[float, float]:
    """Scale ``cell.conv2`` weights in place so the slowest sample contracts at ≈ ``target_rate``.

    Bisection on log(scale) in [1, 64] on the Jacobian's spectral radius at the fixed point
    (:func:`contraction_rates`, max over the samples of ``x``); returns (scale, max radius).
    """
    base = cell.conv2.weight.detach().clone()

    def rate_at(scale: float) -> float:
        with torch.no_grad():
            cell.conv2.weight.copy_(base * scale)
        r = float(contraction_rates(cell, x).max())
        return r if math.isfinite(r) else float("inf")

    lo, hi = 0.0, math.log(64.0)
    best = (1.0, rate_at(1.0))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        r = rate_at(math.exp(mid))
        if r < target_rate:
            lo = mid
            if abs(r - target_rate) < abs(best[1] - target_rate) or best[1] >= 1:
                best = (math.exp(mid), r)
        else:
            hi = mid
    with torch.no_grad():
        cell.conv2.weight.copy_(base * best[0])
    return best


class TimedMap:
    """Wrap f: count calls and rows, accumulate seconds spent inside f."""

    def __init__(self, f: Callable[..., Tensor], device: torch.device) -> None:
        self.f, self.device = f, device
        self.seconds, self.calls, self.rows = 0.0, 0, 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, z: Tensor, *args: Any) -> Tensor:
        self._sync()
        t = time.perf_counter()
        out = self.f(z, *args)
        self._sync()
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


def solve_once(
    solver: str,
    cell: nn.Module,
    x: Tensor,
    tol: float,
    max_iter: int,
) -> dict[str, Any]:
    """One timed solve; returns a plain-JSON record."""
    device = x.device
    timed = TimedMap(cell, device)
    z0 = torch.zeros_like(x)
    batch = x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if solver == "torchdeq_anderson":
        td = _torchdeq_solver()
        if td is None:
            raise ConfigError("torchdeq is not installed")
        with torch.no_grad():
            z, _, _ = td(
                lambda z: timed(z, x), z0, max_iter=max_iter, tol=tol, stop_mode="rel",
                m=5, lam=1e-4, tau=1.0,
            )
        nfev = torch.full((batch,), timed.calls, dtype=torch.float64)
        with torch.no_grad():
            fz = cell(z, x)
        residual = (fz - z).flatten(1).norm(dim=1) / (fz.flatten(1).norm(dim=1) + 1e-9)
        converged = residual <= tol * 1.0001
        lowest = residual
    else:
        with torch.no_grad():
            z, stats = get_solver(solver)(
                timed, z0, tol=tol, max_iter=max_iter, stop_mode="rel", args=(x,)
            )
        nfev, converged, lowest = stats.nfev.double(), stats.converged, stats.lowest_residual
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    return {
        "solver": solver,
        "tol": tol,
        "nfev_mean": float(nfev.mean()),
        "nfev_max": float(nfev.max()),
        "f_rows": timed.rows,
        "f_calls": timed.calls,
        "wall_time": wall,
        "f_time": timed.seconds,
        "overhead_fraction": max(wall - timed.seconds, 0.0) / wall if wall > 0 else 0.0,
        "overhead_vs_f": max(wall - timed.seconds, 0.0) / timed.seconds if timed.seconds else 0.0,
        "converged_fraction": float(converged.double().mean()),
        "residual_max": float(lowest.double().max().cpu()),
    }


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
    size: int | None = None,
    batch: int | None = None,
    tolerances: Sequence[float] = TOLERANCES,
    solvers: Sequence[str] = SOLVER_NAMES,
    target_rate: float = 0.98,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready result (see module docstring).

    ``threads`` sets torch's intra-op thread count for the run (restored afterwards); on a shared
    CPU one thread avoids oversubscription, which otherwise slows small convolutions ~10×.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(quick=quick, device=device, channels=channels, size=size, batch=batch,
                    tolerances=tolerances, solvers=solvers, target_rate=target_rate, seed=seed,
                    progress=progress)
    finally:
        torch.set_num_threads(old_threads)


def _run(
    *,
    quick: bool,
    device: str,
    channels: int | None,
    size: int | None,
    batch: int | None,
    tolerances: Sequence[float],
    solvers: Sequence[str],
    target_rate: float,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"option device={device!r} is not valid; choose one of: 'cpu', 'cuda'")
    dims = dict(QUICK if quick else FULL)
    for key, value in (("channels", channels), ("size", size), ("batch", batch)):
        if value is not None:
            dims[key] = int(value)
    if dims["channels"] % dims["groups"]:
        dims["groups"] = 1
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = ConvDEQCell(dims["channels"], dims["groups"]).to(dev)
    shape = (dims["batch"], dims["channels"], dims["size"], dims["size"])
    x = torch.randn(shape, generator=gen).to(dev)
    skipped: list[str] = []
    solvers = list(solvers)
    if "torchdeq_anderson" in solvers and _torchdeq_solver() is None:
        solvers.remove("torchdeq_anderson")
        skipped.append("torchdeq_anderson (torchdeq not importable; pip install torchdeq==0.1.0)")
    max_iters = {"forward_iteration": 1500 if not quick else 600}
    default_max = 300 if not quick else 150

    cells: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        probe = x[: min(PROBE, shape[0])]
        rates = contraction_rates(cell, probe)
        cells["init"] = {
            "scale": 1.0, "rate": float(rates.max()), "rate_mean": float(rates.mean())
        }
        init_state = {k: v.clone() for k, v in cell.state_dict().items()}
        weak_cell = ConvDEQCell(dims["channels"], dims["groups"]).to(dev)
        weak_cell.load_state_dict(init_state)
        scale, _ = make_weakly_contractive(weak_cell, probe, target_rate, 6 if quick else 10)
        rates = contraction_rates(weak_cell, probe)
        cells["weak"] = {
            "scale": scale, "rate": float(rates.max()), "rate_mean": float(rates.mean())
        }
    jobs = [(c, t, s) for c in ("init", "weak") for t in tolerances for s in solvers]
    bar = tqdm(jobs, desc="bench solvers", disable=not progress, leave=False)
    for cell_name, tol, solver in bar:
        bar.set_postfix_str(f"{cell_name} {solver} tol={tol:g}")
        f = cell if cell_name == "init" else weak_cell
        record = solve_once(solver, f, x, tol, max_iters.get(solver, default_max))
        record["cell"] = cell_name
        results.append(record)
    bar.close()
    mem_iters = (5, 10, 20) if quick else (10, 20, 40)
    mem_x = x[: min(4, shape[0])]
    memory = memory_section(weak_cell, mem_x, mem_iters)
    return {
        "benchmark": "solvers",
        "device": device,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "dims": dims,
        "cells": cells,
        "results": results,
        "memory": memory,
        "skipped": skipped,
        "targets": targets(results),
    }


def _find(results: Sequence[dict[str, Any]], cell: str, solver: str, tol: float) -> dict | None:
    for r in results:
        if r["cell"] == cell and r["solver"] == solver and math.isclose(r["tol"], tol):
            return r
    return None


def targets(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the issue's targets on the results."""
    out: dict[str, Any] = {}
    fwd = _find(results, "weak", "forward_iteration", 1e-4)
    ours = _find(results, "weak", "anderson", 1e-4)
    if fwd and ours:
        ratio = fwd["nfev_mean"] / max(ours["nfev_mean"], 1e-12)
        out["nfev_ratio_forward_over_anderson_weak_1e-4"] = ratio
        out["nfev_ratio_met"] = ratio >= 10 and ours["converged_fraction"] == 1.0
    speedups = []
    for r in results:
        if r["solver"] != "torchdeq_anderson":
            continue
        mine = _find(results, r["cell"], "anderson", r["tol"])
        if mine:
            speedups.append({"cell": r["cell"], "tol": r["tol"],
                             "speedup": r["wall_time"] / max(mine["wall_time"], 1e-12)})
    if speedups:
        out["speedup_vs_torchdeq"] = speedups
        out["speedup_min"] = min(s["speedup"] for s in speedups)
        out["speedup_met"] = out["speedup_min"] >= 1.5
    overheads = [r["overhead_vs_f"] for r in results if r["solver"] == "anderson"]
    if overheads:
        out["anderson_overhead_vs_f_max"] = max(overheads)
        out["overhead_met"] = max(overheads) < 0.10
    return out


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_benchmark` result."""
    d = result["dims"]
    lines = [
        f"solver benchmark on {result['device']} (torch {result['torch']}, "
        f"{result['threads']} threads): batch {d['batch']}, {d['channels']} channels, "
        f"{d['size']}x{d['size']}",
    ]
    for name, info in result["cells"].items():
        lines.append(f"  cell {name}: conv2 scale {info['scale']:.3g}, "
                     f"Jacobian spectral radius at z* (first {PROBE} samples) max "
                     f"{info['rate']:.4f}, mean {info['rate_mean']:.4f}")
    head = (f"{'cell':<5} {'tol':>7} {'solver':<18} {'nfev':>7} {'max':>5} {'wall s':>8} "
            f"{'f s':>8} {'outside f':>9} {'conv':>5} {'max res':>9}")
    lines += [head, "-" * len(head)]
    for r in result["results"]:
        lines.append(
            f"{r['cell']:<5} {r['tol']:>7.0e} {r['solver']:<18} {r['nfev_mean']:>7.1f} "
            f"{r['nfev_max']:>5.0f} {r['wall_time']:>8.3f} {r['f_time']:>8.3f} "
            f"{100 * r['overhead_fraction']:>8.1f}% {r['converged_fraction']:>5.2f} "
            f"{r['residual_max']:>9.2e}"
        )
    lines.append("autograd bytes saved per DEQ forward (implicit vs unrolled backward):")
    for m in result["memory"]:
        lines.append(f"  {m['iterations']:>4} iterations: "
                     f"implicit {m['implicit_saved_bytes']:>12,d}   "
                     f"unroll {m['unroll_saved_bytes']:>12,d}")
    t = result["targets"]
    if "nfev_ratio_forward_over_anderson_weak_1e-4" in t:
        lines.append(f"target nfev(forward)/nfev(anderson) >= 10 on weak cell at 1e-4: "
                     f"{t['nfev_ratio_forward_over_anderson_weak_1e-4']:.1f}x "
                     f"({'met' if t['nfev_ratio_met'] else 'NOT met'})")
    if "speedup_min" in t:
        per = ", ".join(f"{s['cell']}@{s['tol']:.0e}: {s['speedup']:.2f}x"
                        for s in t["speedup_vs_torchdeq"])
        lines.append(f"target wall time vs torchdeq anderson >= 1.5x: min {t['speedup_min']:.2f}x "
                     f"({'met' if t['speedup_met'] else 'NOT met'}) [{per}]")
    if "anderson_overhead_vs_f_max" in t:
        lines.append(f"target anderson overhead < 10% of time in f: max "
                     f"{100 * t['anderson_overhead_vs_f_max']:.1f}% "
                     f"({'met' if t['overhead_met'] else 'NOT met'})")
    for s in result["skipped"]:
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


def main(out: str | Path | None = None, quick: bool = False, device: str = "cpu",
         progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Run, print the table, write ``solvers.json`` into ``out`` (atomically); return result."""
    result = run_benchmark(quick=quick, device=device, progress=progress, **kwargs)
    print(format_table(result))
    if out is not None:
        path = Path(out) / ("solvers_quick.json" if quick else "solvers.json")
        atomic_write_json(path, result)
        print(f"wrote {path}")
    return result
