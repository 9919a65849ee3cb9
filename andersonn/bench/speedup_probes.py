"""Post-training probes of ``andersonn bench speedup`` on the trained weights.

:func:`inference_at_tolerances` solves the test structures with each DEQ solver at each
tolerance and compares time per structure, f evaluations and the achieved residual (inference at
matched residual); :func:`trained_cell_spectrum` measures ρ(∂f/∂z) at z* and the Krylov (disk)
bound on the forward / Anderson f-evaluation ratio of the trained cell; :func:`residual_traces`
time-stamps every f evaluation of each solver on one batch, and :func:`crossover` finds the wall
time after which Anderson's best residual stays below forward iteration's. The probes take the
benchmark's :class:`~andersonn.bench.speedup.SpeedupSettings`, imported here for type checking
only (``andersonn.bench.speedup`` imports this module).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from andersonn.bench.report import ratio
from andersonn.bench.speedup_report import DEQ_SOLVERS, saved

if TYPE_CHECKING:
    from andersonn.bench.speedup import SpeedupSettings

__all__ = ["crossover", "fixed_point_problem", "inference_at_tolerances", "residual_traces",
           "trained_cell_spectrum"]


def fixed_point_problem(model: nn.Module, x: Tensor) -> tuple[nn.Module, Tensor]:
    """The DEQ cell of ``model`` and the injection its forward pass solves with on the raw
    images ``x``: z* = cell(z*, inj), inj = stem(normalize(x)), as
    :meth:`andersonn.models.networks.GraphImageClassifier.forward` computes it. Call under
    ``torch.no_grad()`` for probes."""
    return model.cell, model.embed(model.normalize(x))


def _set_solver(model: nn.Module, name: str, opts: dict[str, Any]) -> None:
    model.solver_options = {}
    model.set_solver(name, dict(opts))


@torch.no_grad()
def inference_at_tolerances(model: nn.Module, x: Tensor, y: Tensor, s: SpeedupSettings,
                            device: torch.device) -> list[dict[str, Any]]:
    """Time per structure, f evaluations and achieved residual for each (tol, solver)."""
    original = (model.solver_name, dict(model.solver_options))
    model.eval()
    runs: dict[tuple[float, str], list[float]] = {}
    stats: dict[tuple[float, str], dict[str, Any]] = {}
    n = x.shape[0]
    sync = device.type == "cuda"
    try:
        _set_solver(model, "anderson", {"tol": 1e-2, "max_iter": 10})
        model(x[: min(n, s.inference_batch)].to(device))  # warm-up at the timed batch size
        for rep in range(s.repeats):
            for tol in s.inference_tols:
                k = rep % len(DEQ_SOLVERS)  # rotate the order: no solver always runs first
                for name in DEQ_SOLVERS[k:] + DEQ_SOLVERS[:k]:
                    _set_solver(model, name, s.options_for(name, tol, s.inference_max_iter))
                    nfev, low, conv, correct = [], [], [], 0
                    if sync:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for start in range(0, n, s.inference_batch):
                        xb = x[start:start + s.inference_batch].to(device)
                        logits = model(xb)
                        st = model.solver_stats()["forward"]
                        if rep == 0:
                            correct += int((logits.argmax(1).cpu()
                                            == y[start:start + s.inference_batch]).sum())
                            nfev.append(st.nfev.double())
                            low.append(st.lowest_residual.double())
                            conv.append(st.converged)
                    if sync:
                        torch.cuda.synchronize()
                    runs.setdefault((tol, name), []).append(time.perf_counter() - t0)
                    if rep == 0:
                        nf, lo, cv = torch.cat(nfev), torch.cat(low), torch.cat(conv)
                        stats[(tol, name)] = {
                            "nfev_mean": float(nf.mean()), "nfev_max": int(nf.max()),
                            "residual_mean": float(lo.mean()), "residual_max": float(lo.max()),
                            "converged_fraction": float(cv.double().mean()),
                            "accuracy": correct / max(1, n)}
    finally:
        _set_solver(model, *original)
    rows = []
    for tol in s.inference_tols:
        base = statistics.median(runs[(tol, "forward")]) / max(1, n)
        base_f = stats[(tol, "forward")]["nfev_mean"]
        for name in DEQ_SOLVERS:
            t = statistics.median(runs[(tol, name)]) / max(1, n)
            st = stats[(tol, name)]
            matched = st["converged_fraction"] >= 1.0 and st["residual_max"] <= tol * (1 + 1e-6)
            rows.append({"tol": tol, "solver": name, "time_per_structure_s": t,
                         "times_s": runs[(tol, name)], "n": n, **st, "matched": matched,
                         "speedup_vs_forward": ratio(base, t),
                         "feval_ratio_vs_forward": ratio(base_f, st["nfev_mean"]),
                         "compute_saved": saved(t, base),
                         "feval_saved": saved(st["nfev_mean"], base_f)})
    return rows


def trained_cell_spectrum(model: nn.Module, x: Tensor, steps: int, device: torch.device
                          ) -> dict[str, Any] | None:
    """ρ(∂f/∂z) at z* and the disk (Krylov) bound on the forward/Anderson f-evaluation ratio
    for the DEQ cell of ``model`` on the structures ``x`` (None for a model without a cell)."""
    from andersonn.bench.spectrum import jacobian_spectrum

    cell = getattr(model, "cell", None)
    if cell is None or x.shape[0] == 0 or steps < 2:
        return None
    model.eval()
    with torch.no_grad():
        cell, inj = fixed_point_problem(model, x.to(device))
    # on the CPU in float64-capable form: a few structures, the cost is negligible
    spec = jacobian_spectrum(copy.deepcopy(cell).cpu(), inj.cpu(), steps)
    samples = spec["samples"]
    return {"n": len(samples), "arnoldi_steps": steps,
            "rho_power": [s["rho_power"] for s in samples],
            "rho_ritz": [s["rho_ritz"] for s in samples],
            "krylov_rate": [s["disk"]["rate"] for s in samples],
            "predicted_ratio": [s["predicted_ratio"] for s in samples],
            "union_predicted_ratio": spec["union_predicted_ratio"]}


@torch.no_grad()
def residual_traces(model: nn.Module, xb: Tensor, s: SpeedupSettings, device: torch.device
                    ) -> dict[str, dict[str, list[float]]]:
    """Per solver: wall time (s) at each f evaluation and the batch-mean relative residual of
    that iterate (tol 0, ``trace_iters`` iterations; median times over ``repeats``).

    The problem is the model's own (:func:`fixed_point_problem`: normalised images, stem
    injection, z₀ = 0). One untimed short solve per solver warms the kernels up first, and the
    solver order is rotated between repeats, so no solver always runs first."""
    from andersonn.solvers import get_solver

    model.eval()
    cell, inj = fixed_point_problem(model, xb.to(device))
    sync = device.type == "cuda"
    for name in DEQ_SOLVERS:  # warm-up: first-call costs are not charged to any solver
        get_solver(name)(cell, torch.zeros_like(inj), args=(inj,),
                         **s.options_for(name, 0.0, 2, graphs=False), on_divergence="mark")
    stamps: dict[str, list[list[float]]] = {name: [] for name in DEQ_SOLVERS}
    traces: dict[str, list[float]] = {}
    for rep in range(s.repeats):
        k = rep % len(DEQ_SOLVERS)
        for name in DEQ_SOLVERS[k:] + DEQ_SOLVERS[:k]:
            marks: list[float] = []

            def timed(z: Tensor, x: Tensor, _marks: list[float] = marks) -> Tensor:
                out = cell(z, x)
                if sync:
                    torch.cuda.synchronize()
                _marks.append(time.perf_counter())
                return out

            # eager: the timer synchronises inside f, which a CUDA graph cannot capture
            opts = s.options_for(name, 0.0, s.trace_iters, graphs=False)
            t0 = time.perf_counter()
            _, st = get_solver(name)(timed, torch.zeros_like(inj), args=(inj,), **opts,
                                     on_divergence="mark")
            stamps[name].append([m - t0 for m in marks])
            if name not in traces:
                tr = st.trace.double()
                tr = torch.where(torch.isfinite(tr), tr, torch.nan)
                traces[name] = [float(v) for v in torch.nanmean(tr, dim=0)]
    out: dict[str, dict[str, list[float]]] = {}
    for name in DEQ_SOLVERS:
        k = min(len(traces[name]), *(len(r) for r in stamps[name]))
        times = [statistics.median(r[i] for r in stamps[name]) for i in range(k)]
        res = traces[name][:k]
        best = list(np.minimum.accumulate(np.asarray(res, dtype=np.float64)))
        out[name] = {"time_s": times, "residual": res, "best_residual": [float(v) for v in best]}
    return out


def crossover(a: dict[str, list[float]], f: dict[str, list[float]]) -> dict[str, Any] | None:
    """First wall time after which Anderson's best residual stays strictly below forward
    iteration's (compared at equal wall time, step functions); None if it never does."""
    grid = sorted(set(a["time_s"]) | set(f["time_s"]))

    def at(tr: dict[str, list[float]], t: float) -> float:
        i = int(np.searchsorted(np.asarray(tr["time_s"]), t, side="right")) - 1
        return tr["best_residual"][i] if i >= 0 else math.inf

    below = [at(a, t) < at(f, t) for t in grid]
    first = next((t for t, b in zip(grid, below, strict=True) if b), None)
    idx = None
    for i in range(len(grid) - 1, -1, -1):
        if not below[i]:
            break
        idx = i
    if idx is None:
        return None
    t = grid[idx]
    it = int(np.searchsorted(np.asarray(a["time_s"]), t, side="right"))
    return {"time_s": t, "anderson_iteration": it, "residual": at(a, t),
            "forward_residual_at_time": at(f, t), "first_below_time_s": first}
