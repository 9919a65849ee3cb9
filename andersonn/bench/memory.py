"""Training-memory benchmark (``andersonn bench memory``): DEQ vs explicit network in depth.

For each effective depth d (default 4, 8, 16, 32, 64) one training step (forward + backward, no
optimiser step) at a fixed batch is measured for

* ``deq``: the DEQ classifier with the solver forced to run exactly d iterations (tol 0,
  max_iter d) and implicit backward (its adjoint solve also tol 0, max_iter d);
* ``explicit``: the explicit classifier with d stacked cells of the same width.

Each configuration runs in a fresh Python subprocess (``python -m andersonn.bench.memory
--worker``) so no allocator state leaks between measurements; inputs are random images of the
task's image shape (memory does not depend on the values). The number reported is the step's
**peak memory above the process's memory just before the step**:

* CPU: the kernel's high-water mark of resident memory. Just before the step the worker resets
  it to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux ≥ 4.0) and reads ``VmHWM``
  from ``/proc/self/status`` after the step; peak − RSS-before is the step's memory. Where
  ``clear_refs`` is not available the worker falls back to ``getrusage(RUSAGE_SELF).ru_maxrss``
  after the step minus RSS before it (an upper bound if importing torch peaked higher);
* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the
  memory allocated before the step.

As a noise-free cross-check the worker also sums the bytes autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``, distinct storages). Memory is then fitted
linearly in depth (least squares); memory is "flat in depth" when the fit grows by at most 25 %
across the measured depths (:func:`fit_budget`, the one rule of the budget read-out and of the
DEQ's target), and the largest depth that fits a budget is read off the measured points, or
extrapolated from a growing fit beyond the measured range (marked as such).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.bench.report import (
    allocation_message,
    check_memory,
    fmt,
    machine_info,
    markdown_table,
    new_figure,
    results_dir,
    save_figure,
    write_results,
)
from andersonn.errors import AndersonnError, ConfigError

__all__ = ["DEFAULT_DEPTHS", "MemorySettings", "fit_budget", "measure_step", "run_memory"]

DEFAULT_DEPTHS = (4, 8, 16, 32, 64)
MODELS = ("deq", "explicit")
_MARK = "ANDERSONN_MEMORY "
MB = 1024.0 * 1024.0


DEFAULT_TASK = "crystal-gap"


def task_shape(task: str = DEFAULT_TASK) -> tuple[tuple[int, int, int], int]:
    """(image shape (C, atoms, slots), number of classes) of ``task``'s graph images, from the
    current image spec: the one source of the benchmark's default shape and the CLI's."""
    from andersonn.data import TASKS
    from andersonn.images import IMAGE_SPECS

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    spec = TASKS[task]
    c, h, w = (int(v) for v in IMAGE_SPECS[spec.image_spec].shape)
    return (c, h, w), len(spec.classes)


@dataclasses.dataclass
class MemorySettings:
    """What the memory benchmark measures; ``quick()`` gives the smoke-sized version. The image
    shape and class count default to crystal-gap's current graph images (:func:`task_shape`)."""

    depths: tuple[int, ...] = DEFAULT_DEPTHS
    batch_size: int = 64
    hidden: int = 48
    image_shape: tuple[int, int, int] = dataclasses.field(
        default_factory=lambda: task_shape()[0])  # (C, atoms, slots)
    num_classes: int = dataclasses.field(default_factory=lambda: task_shape()[1])
    solver: str = "anderson"
    budget_mb: float = 1024.0
    device: str = "cpu"
    repeats: int = 1
    seed: int = 0
    timeout_s: float = 600.0

    @classmethod
    def quick(cls, **overrides: Any) -> MemorySettings:
        """Smaller batch; same depths."""
        base: dict[str, Any] = {"batch_size": 32}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) on a setting the benchmark cannot run with."""
        if not self.depths or any(int(d) < 1 for d in self.depths):
            raise ConfigError(f"depths must be positive integers (got {list(self.depths)})")
        for flag, value in (("--batch-size", self.batch_size), ("--hidden", self.hidden),
                            ("--repeats", self.repeats), ("num_classes", self.num_classes)):
            if int(value) < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        if len(self.image_shape) != 3 or min(int(v) for v in self.image_shape) < 1:
            raise ConfigError(f"image_shape must be 3 positive sizes (got {self.image_shape})")
        if not (math.isfinite(self.budget_mb) and self.budget_mb > 0):
            raise ConfigError(f"--budget-mb must be positive (got {self.budget_mb})")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--device cuda requested but no CUDA device is available")


# --------------------------------------------------------------------------------------------
# the worker (runs in a fresh subprocess)
# --------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure_step(config: dict[str, Any]) -> dict[str, Any]:
    """Measure one forward+backward step of ``config`` in *this* process (use a fresh one)."""
    import gc

    import torch
    import torch.nn.functional as F

    from andersonn.models import build_model, count_parameters

    torch.set_num_threads(1)
    torch.manual_seed(int(config.get("seed", 0)))
    c, h, w = (int(v) for v in config["image_shape"])
    depth, kind = int(config["depth"]), str(config["model"])
    device = torch.device(config.get("device", "cpu"))
    common = {"in_channels": c, "height": h, "width": w, "num_classes": int(config["num_classes"]),
              "hidden": int(config["hidden"])}
    if kind == "deq":
        forced = {"tol": 0.0, "max_iter": depth}
        model = build_model("deq", solver=config.get("solver", "anderson"),
                            solver_options=forced, backward="implicit",
                            backward_options=dict(forced), **common)
    else:
        model = build_model("explicit", depth=depth, **common)
    model.to(device).train()
    b = int(config["batch_size"])
    x = torch.randn(b, c, h, w, device=device)
    y = torch.randint(0, int(config["num_classes"]), (b,), device=device)

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            saved[key] = max(saved.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:  # pragma: no cover - tensors without storage
            pass
        return t

    # warm-up on 2 samples: one-off library initialisation (kernel selection, thread pools,
    # allocator arenas) must not be charged to the measured step
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        F.cross_entropy(model(x[:2]), y[:2]).backward()
    model.zero_grad(set_to_none=False)
    gc.collect()
    out: dict[str, Any] = {"model": kind, "depth": depth, "params": count_parameters(model)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        method = "cuda.max_memory_allocated"
    else:
        rss_kb = _status_kb("VmRSS")
        before = rss_kb * 1024 if rss_kb is not None else 0
        method = "VmHWM after clear_refs" if (_reset_hwm() and rss_kb is not None) \
            else "ru_maxrss - rss_before"
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        hwm = _status_kb("VmHWM") if method.startswith("VmHWM") else None
        peak = hwm * 1024 if hwm is not None else _maxrss_bytes()
    out.update({"step_time_s": time.perf_counter() - t0, "method": method,
                "before_bytes": int(before), "peak_bytes": int(peak),
                "step_peak_mb": max(0, int(peak) - int(before)) / MB,
                "autograd_saved_mb": sum(saved.values()) / MB})
    stats = model.solver_stats()
    if stats.get("forward") is not None:
        out["fwd_iterations"] = int(stats["forward"].nfev.max())
    if stats.get("backward") is not None:
        out["bwd_iterations"] = int(stats["backward"].nfev.max())
    return out


def _worker_runtime() -> bool:
    """Set the worker process up as the ``andersonn`` command sets itself up (the glibc
    allocator tuning of :mod:`andersonn.runtime`, unless ``ANDERSONN_MALLOC_TUNING=0``), so
    the step is measured under the allocator real training uses; return whether it is tuned."""
    from andersonn.runtime import tune_cpu_allocator

    return tune_cpu_allocator()


def _run_worker(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "andersonn.bench.memory", "--worker", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        raise AndersonnError(f"memory worker timed out after {timeout:.0f}s on "
                             f"{config['model']} depth {config['depth']}") from None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    failed = allocation_message(tail)
    if failed is not None:
        what, advice = _size_options(config)
        raise ConfigError(f"{what} ran out of memory on {config['model']} depth "
                          f"{config['depth']} ({failed} failed); {advice}")
    raise AndersonnError(f"memory worker failed on {config['model']} depth {config['depth']} "
                         f"(exit {proc.returncode}): {tail}")


def _size_options(config: dict[str, Any]) -> tuple[str, str]:
    """(what, advice) of a memory refusal: the sizes in use and the options that set them."""
    what = (f"bench memory with batch {config['batch_size']}, hidden {config['hidden']} and "
            f"depths up to {config['depth']} on {'×'.join(str(v) for v in config['image_shape'])} "
            "images (--batch-size, --hidden, --depths)")
    return what, "lower --batch-size, --hidden or the largest of --depths"


def estimate_bytes(config: dict[str, Any]) -> int:
    """A rough estimate of one worker's peak memory (float32) for ``config``: weights and
    gradients (sized on the meta device, nothing allocated) plus about 8 hidden-width feature
    maps per sample and cell for the explicit network, 24 per sample for the DEQ (solver
    history, the cell's activations)."""
    import torch

    from andersonn.models import build_model, count_parameters

    c, h, w = (int(v) for v in config["image_shape"])
    common = {"in_channels": c, "height": h, "width": w, "num_classes": int(config["num_classes"]),
              "hidden": int(config["hidden"])}
    depth = int(config["depth"])
    with torch.device("meta"):
        model = (build_model("explicit", depth=depth, **common) if config["model"] == "explicit"
                 else build_model("deq", **common))
    maps = 8 * depth if config["model"] == "explicit" else 24
    feature_map = int(config["hidden"]) * h * w * 4
    return 8 * count_parameters(model) + maps * int(config["batch_size"]) * feature_map


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------
FLAT_GROWTH = 0.25  # fitted growth over the measured depths, relative: "flat in depth" below


def fit_budget(depths: list[int], mb: list[float], budget_mb: float) -> dict[str, Any]:
    """Linear fit mb ≈ a + b·depth, whether memory is flat in depth, and the largest depth
    within ``budget_mb``; the points may come in any order.

    **Flat in depth** (the one definition, also the DEQ target's): the fitted growth across
    the measured depths, b·(d_max − d_min), is at most ``FLAT_GROWTH`` (25 %) of the fitted
    memory at the smallest depth (``growth`` in the result; ``flat`` None with one depth).
    The largest depth: where a measured point is over budget, the crossing between the last
    point under it and the first over it (interpolated; 0 when the smallest depth is over
    already); otherwise a flat fit is ``unbounded`` (``max_depth`` None), and a growing one is
    extrapolated (``extrapolated`` True).
    """
    pairs = sorted(zip((float(v) for v in depths), (float(v) for v in mb), strict=True))
    d = np.asarray([p[0] for p in pairs], dtype=np.float64)
    m = np.asarray([p[1] for p in pairs], dtype=np.float64)
    several = len(np.unique(d)) >= 2
    slope, intercept = (np.polyfit(d, m, 1) if several else (0.0, float(m[0])))
    slope, intercept = float(slope), float(intercept)
    growth = flat = None
    if several:
        base = intercept + slope * float(d[0])
        rise = slope * float(d[-1] - d[0])
        growth = rise / base if base > 0 else None  # None: no positive memory to compare to
        flat = growth <= FLAT_GROWTH if growth is not None else rise <= 0
    out: dict[str, Any] = {"slope_mb_per_layer": slope, "intercept_mb": intercept,
                           "budget_mb": budget_mb, "growth": growth, "flat": flat}
    over = [i for i, v in enumerate(m) if v > budget_mb]
    if over:
        i = over[0]
        if i == 0:
            out.update({"max_depth": 0, "extrapolated": False, "unbounded": False,
                        "note": f"over budget already at depth {int(d[0])}"})
            return out
        d0, d1, m0, m1 = d[i - 1], d[i], m[i - 1], m[i]
        cross = d0 + (budget_mb - m0) * (d1 - d0) / (m1 - m0) if m1 > m0 else d0
        out.update({"max_depth": math.floor(cross + 1e-9), "extrapolated": False,
                    "unbounded": False,
                    "note": "interpolated between measured depths"})
        return out
    if flat is None:
        out.update({"max_depth": None, "extrapolated": False, "unbounded": False,
                    "note": f"one depth measured ({int(d[0])}): nothing to extrapolate"})
        return out
    if flat:
        out.update({"max_depth": None, "extrapolated": True, "unbounded": True,
                    "note": "flat in depth: no depth limit within the budget"})
        return out
    out.update({"max_depth": math.floor((budget_mb - intercept) / slope + 1e-9),
                "extrapolated": True,
                "unbounded": False, "note": "extrapolated linearly beyond the measured depths"})
    return out


def run_memory(settings: MemorySettings | None = None, *, out: str | Path | None = None,
               progress: bool = True, task: str | None = None) -> dict[str, Any]:
    """Run the memory benchmark; write JSON, markdown and a plot; return the result dict."""
    s = settings or MemorySettings()
    s.validate()
    # the budget read-out and the tables go by depth: in increasing order, each once
    s = dataclasses.replace(s, depths=tuple(sorted({int(d) for d in s.depths})))

    def config(kind: str, depth: int) -> dict[str, Any]:
        return {"model": kind, "depth": int(depth), "batch_size": s.batch_size,
                "hidden": s.hidden, "image_shape": list(s.image_shape),
                "num_classes": s.num_classes, "solver": s.solver, "device": s.device,
                "seed": s.seed}

    deepest = config("explicit", s.depths[-1])
    check_memory(max(estimate_bytes(deepest), estimate_bytes(config("deq", s.depths[-1]))),
                 *_size_options(deepest), device=s.device)
    out_dir = results_dir("memory", task, out)
    rows: list[dict[str, Any]] = []
    for depth in s.depths:
        for kind in MODELS:
            cfg = config(kind, depth)
            reps = [_run_worker(cfg, s.timeout_s) for _ in range(s.repeats)]
            best = min(reps, key=lambda r: r["step_peak_mb"])
            best["step_peak_mb_repeats"] = [r["step_peak_mb"] for r in reps]
            rows.append(best)
            if progress:
                print(f"  {kind:8s} depth {depth:3d}: {best['step_peak_mb']:8.1f} MB peak, "
                      f"{best['autograd_saved_mb']:8.1f} MB saved by autograd, "
                      f"{best['step_time_s']:.2f}s", file=sys.stderr, flush=True)
    fits: dict[str, Any] = {}
    for kind in MODELS:
        pts = [r for r in rows if r["model"] == kind]
        fits[kind] = fit_budget([r["depth"] for r in pts], [r["step_peak_mb"] for r in pts],
                                s.budget_mb)
    deepest = max(s.depths)
    deq_top = next(r for r in rows if r["model"] == "deq" and r["depth"] == deepest)
    exp_top = next(r for r in rows if r["model"] == "explicit" and r["depth"] == deepest)
    deq_pts = [r["step_peak_mb"] for r in rows if r["model"] == "deq"]
    ratio_top = deq_top["step_peak_mb"] / exp_top["step_peak_mb"] if exp_top["step_peak_mb"] \
        else None
    spread = (max(deq_pts) - min(deq_pts)) / max(min(deq_pts), 1e-9)
    result: dict[str, Any] = {
        "bench": "memory", "settings": {**dataclasses.asdict(s), "depths": list(s.depths),
                                        "image_shape": list(s.image_shape)},
        # the workers' allocator state, not this process's: they are what is measured
        "machine": {**machine_info(s.device), "torch_threads": 1,
                    "cpu_allocator_tuned": all(r.get("cpu_allocator_tuned", False)
                                               for r in rows)},
        "rows": rows, "fits": fits,
        "deq_vs_explicit_at_max_depth": ratio_top, "max_depth": deepest,
        "deq_relative_spread": spread,  # (max − min) / min of the measured points, for reference
        "targets_met": {
            # flat as the budget read-out decides it (fit_budget), not a second rule
            "deq_flat": {"value": fits["deq"]["growth"], "met": bool(fits["deq"]["flat"])},
            "tenth_at_max_depth": {"value": ratio_top,
                                   "met": bool(ratio_top is not None and ratio_top <= 0.1)}},
    }
    markdown = memory_markdown(result)
    write_results(out_dir, "memory", result, markdown)
    _plot(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result


def memory_markdown(res: dict[str, Any]) -> str:
    """The memory tables as markdown."""
    s, m = res["settings"], res["machine"]
    by = {(r["model"], r["depth"]): r for r in res["rows"]}
    lines = ["## bench memory\n",
             f"Machine: {m.get('processor')}, {m.get('cpu_count')} CPU cores, torch "
             f"{m.get('torch')}, device {m.get('device')}{', ' + m['gpu'] if m.get('gpu') else ''}"
             f". One forward+backward step, batch {s['batch_size']}, hidden {s['hidden']}, "
             f"images {tuple(s['image_shape'])}; DEQ: {s['solver']}, tol 0, max_iter = depth, "
             f"implicit backward. Method: {res['rows'][0]['method']} (peak minus memory just "
             "before the step), fresh process per row, glibc allocator "
             f"{'tuned as by the andersonn command' if m.get('cpu_allocator_tuned') else 'untuned'}"
             ".\n"]
    rows = []
    for d in s["depths"]:
        deq, exp = by[("deq", d)], by[("explicit", d)]
        rows.append([d, deq["step_peak_mb"], exp["step_peak_mb"],
                     fmt(deq["step_peak_mb"] / exp["step_peak_mb"]) if exp["step_peak_mb"]
                     else "–", deq["autograd_saved_mb"], exp["autograd_saved_mb"],
                     deq["params"], exp["params"]])
    lines.append(markdown_table(
        ["depth", "DEQ peak MB", "explicit peak MB", "DEQ / explicit", "DEQ autograd-saved MB",
         "explicit autograd-saved MB", "DEQ params", "explicit params"], rows))
    fit_rows = []
    for kind in MODELS:
        f = res["fits"][kind]
        if f["unbounded"]:
            md = "unbounded (flat)"
        elif f["max_depth"] == 0:
            md = f"< {min(s['depths'])} (over budget at every measured depth)"
        elif f["max_depth"] is None:
            md = f"≥ {max(s['depths'])} (one depth measured)"
        else:
            md = f"{f['max_depth']}" + (" (extrapolated)" if f["extrapolated"] else "")
        fit_rows.append([kind, f["slope_mb_per_layer"], f["intercept_mb"], md])
    lines.append(f"\nLargest depth within {s['budget_mb']:g} MB (linear fit in depth):\n")
    lines.append(markdown_table(["model", "MB / layer", "intercept MB", "max depth"], fit_rows))
    tm = res["targets_met"]
    lines.append(f"\nTargets: DEQ memory flat in depth (fitted growth over the measured "
                 f"depths {fmt(tm['deq_flat']['value'])} of its memory at depth "
                 f"{min(s['depths'])}; flat: ≤ {FLAT_GROWTH:g}): "
                 f"**{'met' if tm['deq_flat']['met'] else 'not met'}**; DEQ ≤ 1/10 of explicit at "
                 f"depth {res['max_depth']}: "
                 f"**{'met' if tm['tenth_at_max_depth']['met'] else 'not met'}** "
                 f"(ratio {fmt(tm['tenth_at_max_depth']['value'])}).\n")
    return "\n".join(lines)


def _plot(res: dict[str, Any], out_dir: Path) -> None:
    try:
        fig, ax = new_figure()
        for kind in MODELS:
            pts = sorted((r["depth"], r["step_peak_mb"], r["autograd_saved_mb"])
                         for r in res["rows"] if r["model"] == kind)
            d = [p[0] for p in pts]
            line = ax.plot(d, [p[1] for p in pts], marker="o", label=f"{kind} (peak)")[0]
            ax.plot(d, [p[2] for p in pts], ls=":", marker="x", color=line.get_color(),
                    label=f"{kind} (autograd-saved)")
        ax.axhline(res["settings"]["budget_mb"], color="grey", ls="--", lw=1, label="budget")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("effective depth (solver iterations / stacked cells)")
        ax.set_ylabel("training-step memory (MB)")
        ax.set_title("peak training memory vs depth")
        ax.legend()
        save_figure(fig, out_dir / "memory_vs_depth.png")
    except Exception as exc:  # plots are a by-product
        print(f"andersonn: warning: plotting failed: {exc}", file=sys.stderr)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m andersonn.bench.memory")
    parser.add_argument("--worker", required=True, help="JSON config of one measurement")
    args = parser.parse_args(argv)
    tuned = _worker_runtime()
    result = {**measure_step(json.loads(args.worker)), "cpu_allocator_tuned": tuned}
    print(_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - subprocess entry point
    sys.exit(_main())
