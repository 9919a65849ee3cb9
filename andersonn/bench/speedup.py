"""Headline speed-up benchmark (``andersonn bench speedup TASK``).

On one dataset, seed, cell and tolerance, four models are trained *in lockstep* (every
optimisation step is taken by each variant in turn on the same mini-batch, so background load on
a shared machine hits all of them alike and every ratio is taken in the same run):

* ``forward`` / ``anderson`` / ``broyden``: the DEQ classifier (:func:`andersonn.models.build_model`
  ``"deq"``, implicit backward solved with the same solver as the forward pass), identical
  initial weights;
* ``explicit``: the explicit network of ``explicit_depth`` cells with its width chosen so its
  parameter count matches the DEQ's (``match_params``).

Measured (training wall time counts the optimisation steps only; validation passes are excluded
and timed separately):

* wall time per epoch; forward and backward f evaluations per batch (mean per sample, and the
  batch's iteration count = max per sample);
* validation accuracy ``evals_per_epoch`` times per epoch, giving accuracy-vs-time curves;
* **common accuracy**: the highest validation accuracy that every DEQ variant reaches during the
  run (min over DEQ variants of their peak). Time to reach it = training wall time at the first
  validation point at or above it. A second target, ``fraction`` × the best DEQ peak, may be out
  of reach for some variant: then the time is "not reached" and the speed-up against it is a lower
  bound (the variant's whole training time divided by the other's time-to-target);
* **compute saved** = 1 − t_anderson / t_forward (time to target), and in f evaluations
  1 − F_anderson / F_forward (F: f evaluations per sample summed over the steps to target,
  forward + backward), and per batch;
* final test accuracy (best-validation weights, the variant's own solver);
* **inference at matched residual**: the Anderson-trained weights are solved with forward
  iteration, Anderson and Broyden at tol 1e-2, 1e-3, 1e-4 (``max_iter`` large); the achieved
  residual (worst sample's returned-iterate relative residual) and the converged fraction are
  checked, and the time per structure (median over interleaved repeats) and f evaluations are
  compared;
* **spectrum of the trained cell**: for a few test structures, the spectral radius ρ of
  ∂f/∂z at z* (power iteration) and the Ritz values of 40 Arnoldi steps fitted with a disk
  (:mod:`andersonn.bench.spectrum`), giving the best forward / Krylov f-evaluation ratio any
  Anderson-type method can reach on these weights — the ceiling of the inference speed-up;
* **residual vs time** on one batch: each solver runs with tol 0 while every f evaluation is
  time-stamped; the crossover is the first time after which Anderson's best residual stays below
  forward iteration's at equal wall time (Anderson's extra cost per iteration has been repaid).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from andersonn.bench.report import (
    fmt,
    machine_info,
    markdown_table,
    new_figure,
    ratio,
    results_dir,
    save_figure,
    set_threads,
    write_results,
)
from andersonn.errors import AndersonnError, ConfigError
from andersonn.training.inputs import channel_stats, class_weights
from andersonn.training.warm_start import WarmStarts

__all__ = ["DEQ_SOLVERS", "SpeedupSettings", "run_speedup"]

DEQ_SOLVERS = ("forward", "anderson", "broyden")
VARIANTS = (*DEQ_SOLVERS, "explicit")
_SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass
class SpeedupSettings:
    """Everything the speed-up benchmark varies; ``quick()`` gives the smoke-sized version."""

    epochs: int = 5
    batch_size: int = 64
    hidden: int = 48
    kernel: int = 3
    groups: int = 8
    tol: float = 1e-3
    max_iter: int = 30
    solver_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # Anderson only
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    explicit_depth: int = 6
    evals_per_epoch: int = 4
    target_fraction: float = 0.95
    limit: int | None = None
    train_limit: int | None = None
    build_limit: int | None = None
    val_limit: int | None = 1024
    inference_tols: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    inference_max_iter: int = 500
    inference_limit: int | None = 512
    inference_batch: int = 128
    repeats: int = 3
    trace_batch: int = 32
    trace_iters: int = 60
    spectrum_samples: int = 4
    spectrum_steps: int = 40
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    cuda_graph: bool = False  # forward solves (training and inference) as CUDA-graph blocks
    warm_start: bool = False  # DEQ variants: each sample's solve starts at its last fixed point

    @classmethod
    def quick(cls, **overrides: Any) -> SpeedupSettings:
        """Small enough for a few minutes on a 2-core CPU."""
        base: dict[str, Any] = {"epochs": 3, "hidden": 32, "train_limit": 512,
                                "build_limit": 1000, "evals_per_epoch": 3,
                                "val_limit": 256, "inference_limit": 64, "repeats": 2,
                                "trace_iters": 30, "inference_max_iter": 300}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "hidden", "max_iter", "evals_per_epoch", "repeats",
                     "trace_batch", "trace_iters", "inference_batch", "inference_max_iter"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.inference_limit is not None and self.inference_limit < 1:
            raise ConfigError(f"--inference-limit must be >= 1 (got {self.inference_limit})")
        if self.limit is not None and self.limit < 6:
            raise ConfigError(f"--limit must be at least 6 (got {self.limit})")
        if not 0 < self.target_fraction <= 1:
            raise ConfigError("target_fraction must be in (0, 1]")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but no CUDA device is available")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_task(task: str, limit: int | None = None, build_limit: int | None = None) -> Any:
    """The latest cached build of ``task``; when there is none (or it is stale), the build with
    ``limit`` (else ``build_limit``) is opened, or built first."""
    from andersonn.data import build_dataset, load_dataset

    try:
        return load_dataset(task)
    except AndersonnError as exc:
        n = limit if limit is not None else build_limit
        try:
            return load_dataset(task, limit=n)
        except AndersonnError:
            pass
        print(f"andersonn: {exc}; building dataset {task!r}"
              f"{f' (limit {n})' if n is not None else ''}", file=sys.stderr)
        return _build_keeping_latest(task, n, build_dataset)


def _build_keeping_latest(task: str, limit: int | None, build: Callable[..., Any]) -> Any:
    """Build ``task``; a benchmark's (sub-)build must not become the cache's ``LATEST`` build
    that ``andersonn train`` picks up, so a previous pointer is put back afterwards."""
    from andersonn.data.build import datasets_root
    from andersonn.fileio import atomic_write_text

    pointer = datasets_root() / task / "LATEST"
    before = pointer.read_text() if pointer.is_file() else None
    ds = build(task, limit=limit)
    if before is not None and limit is not None:
        atomic_write_text(pointer, before)
    return ds


def split_tensors(ds: Any, limit: int | None, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Train/val/test tensors; with ``limit``, a seeded random subset of the structures (each
    keeps its split)."""
    splits = np.asarray(ds.splits)
    n = len(splits)
    idx = np.arange(n)
    if limit is not None and limit < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for name, code in _SPLITS.items():
        sel = idx[splits[idx] == code]
        images = np.ascontiguousarray(np.asarray(ds.images[sel], dtype=np.float32))
        labels = np.asarray(ds.labels, dtype=np.int64)[sel].copy()
        out[name] = (torch.from_numpy(images), torch.from_numpy(labels))
    if out["train"][0].shape[0] == 0 or out["val"][0].shape[0] == 0:
        raise AndersonnError("the dataset has an empty train or val split (raise --limit)")
    return out


# --------------------------------------------------------------------------------------------
# models and lockstep training
# --------------------------------------------------------------------------------------------
def _solver_opts(name: str, s: SpeedupSettings, tol: float, max_iter: int,
                 graphs: bool = True) -> dict[str, Any]:
    extra = s.solver_options if name == "anderson" else {}
    graph = {"cuda_graph": True} if graphs and s.cuda_graph else {}
    return {**extra, **graph, "tol": tol, "max_iter": max_iter}


def build_variants(s: SpeedupSettings, shape: tuple[int, int, int], k: int
                   ) -> dict[str, nn.Module]:
    """The three DEQs (same seed → same initial weights) and the parameter-matched explicit net."""
    from andersonn.models import build_model, count_parameters

    c, h, w = shape
    common = {"in_channels": c, "height": h, "width": w, "num_classes": k, "hidden": s.hidden,
              "kernel": s.kernel, "groups": s.groups}
    models: dict[str, nn.Module] = {}
    for name in DEQ_SOLVERS:
        torch.manual_seed(s.seed)
        opts = _solver_opts(name, s, s.tol, s.max_iter)
        models[name] = build_model("deq", solver=name, solver_options=opts, backward="implicit",
                                   backward_options={"tol": s.tol, "max_iter": s.max_iter},
                                   **common)
    torch.manual_seed(s.seed)
    models["explicit"] = build_model("explicit", depth=s.explicit_depth,
                                     match_params=count_parameters(models["anderson"]),
                                     **common)
    return models


def _nfev(stats: Any) -> tuple[float, float, float]:
    """(mean per-sample f evaluations, batch iterations = max, converged fraction) of a
    SolverStats; (0, 0, 1) when there is none (explicit network)."""
    if stats is None or getattr(stats, "nfev", None) is None or stats.nfev.numel() == 0:
        return 0.0, 0.0, 1.0
    nfev = stats.nfev.double()
    conv = getattr(stats, "converged", None)
    frac = float(conv.double().mean()) if conv is not None and conv.numel() else 1.0
    return float(nfev.mean()), float(nfev.max()), frac


def _lr_lambda(total: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))


class _Run:
    """One variant's optimiser state, timers, counters and validation curve."""

    def __init__(self, name: str, model: nn.Module, s: SpeedupSettings, total_steps: int,
                 weight: Tensor | None, device: torch.device, n_train: int) -> None:
        self.name, self.model, self.s, self.device = name, model.to(device), s, device
        self.warm = (WarmStarts(n_train, (model.hidden, model.height, model.width))
                     if s.warm_start and hasattr(model, "cell") else None)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "norm" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "norm" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=s.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(total_steps))
        self.weight = weight.to(device) if weight is not None else None
        self.train_time = 0.0
        self.val_time = 0.0
        self.epoch_times: list[float] = []
        self._epoch_t = 0.0
        self.steps = 0
        self.samples = 0
        self.fevals = 0.0  # f evaluations on samples, forward + backward, cumulative
        # per step: fwd, fwd_max, bwd, bwd_max, fwd converged fraction, bwd converged fraction
        self.batch_stats: list[tuple[float, ...]] = []
        self.curve: list[dict[str, float]] = []
        self.best_acc = -1.0
        self.best_state: dict[str, Tensor] | None = None

    def step(self, xb: Tensor, yb: Tensor, index: Tensor | None = None) -> float:
        """One optimiser step on (xb, yb); ``index``: their training-sample numbers (for warm
        starts; the table's lookup and store are timed with the step)."""
        model = self.model
        model.train()
        sync = self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        warm = self.warm if index is not None else None
        logits = model(xb) if warm is None else warm.forward(model, model, xb, index)
        loss = F.cross_entropy(logits, yb, weight=self.weight)
        fwd = model.solver_stats()["forward"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.s.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.s.grad_clip)
        self.opt.step()
        self.sched.step()
        if sync:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        lval = float(loss.detach())
        if not math.isfinite(lval):
            raise AndersonnError(f"{self.name}: training diverged at step {self.steps} "
                                 f"(loss {lval}); try a smaller lr or a tighter tol")
        f_mean, f_max, f_conv = _nfev(fwd)
        b_mean, b_max, b_conv = _nfev(model.solver_stats()["backward"])
        self.batch_stats.append((f_mean, f_max, b_mean, b_max, f_conv, b_conv))
        self.fevals += (f_mean + b_mean) * xb.shape[0]
        self.train_time += dt
        self._epoch_t += dt
        self.steps += 1
        self.samples += int(xb.shape[0])
        return lval

    def end_epoch(self) -> None:
        self.epoch_times.append(self._epoch_t)
        self._epoch_t = 0.0

    def validate(self, x: Tensor, y: Tensor, epoch: float, batch: int) -> float:
        from andersonn.training import evaluate

        t0 = time.perf_counter()
        m = evaluate(self.model, x, y, batch_size=batch, device=self.device)
        self.val_time += time.perf_counter() - t0
        acc = float(m["accuracy"])
        self.curve.append({"epoch": epoch, "step": self.steps, "train_time_s": self.train_time,
                           "fevals_per_sample": self.fevals / max(1, self.samples)
                           if self.samples else 0.0, "fevals": self.fevals, "val_acc": acc,
                           "val_fwd_nfev": float(m.get("fwd_nfev", 0.0))})
        if acc > self.best_acc + 1e-12:
            self.best_acc = acc
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return acc

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()

    def summary(self) -> dict[str, Any]:
        arr = np.asarray(self.batch_stats, dtype=np.float64).reshape(-1, 6)
        means = arr.mean(axis=0) if arr.size else np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
        return {"train_time_s": self.train_time, "val_time_s": self.val_time,
                "epoch_times_s": self.epoch_times,
                "time_per_epoch_s": float(np.mean(self.epoch_times)) if self.epoch_times else None,
                "steps": self.steps, "fwd_nfev": float(means[0]), "fwd_nfev_max": float(means[1]),
                "bwd_nfev": float(means[2]), "bwd_nfev_max": float(means[3]),
                "fevals_per_sample_per_step": float(means[0] + means[2]),
                "fwd_converged": float(means[4]), "bwd_converged": float(means[5]),
                "peak_val_acc": self.best_acc, "curve": self.curve}


def time_to_target(curve: list[dict[str, float]], target: float) -> dict[str, Any] | None:
    """The first validation point at or above ``target`` (None if never reached)."""
    for point in curve:
        if point["val_acc"] >= target - 1e-12:
            return point
    return None


# --------------------------------------------------------------------------------------------
# inference at matched residual, residual-vs-time traces
# --------------------------------------------------------------------------------------------
def _set_solver(model: nn.Module, name: str, opts: dict[str, Any]) -> None:
    model.solver_options = {}
    model.set_solver(name, dict(opts))


@torch.no_grad()
def inference_at_tolerances(model: nn.Module, x: Tensor, y: Tensor, s: SpeedupSettings,
                            device: torch.device) -> list[dict[str, Any]]:
    """Time per structure, f evaluations and achieved residual for each (tol, solver)."""
    saved = (model.solver_name, dict(model.solver_options))
    model.eval()
    runs: dict[tuple[float, str], list[float]] = {}
    stats: dict[tuple[float, str], dict[str, Any]] = {}
    n = x.shape[0]
    sync = device.type == "cuda"
    try:
        _set_solver(model, "anderson", {"tol": 1e-2, "max_iter": 10})
        model(x[: min(n, 8)].to(device))  # warm-up (allocator, kernels)
        for rep in range(s.repeats):
            for tol in s.inference_tols:
                k = rep % len(DEQ_SOLVERS)  # rotate the order: no solver always runs first
                for name in DEQ_SOLVERS[k:] + DEQ_SOLVERS[:k]:
                    _set_solver(model, name, _solver_opts(name, s, tol, s.inference_max_iter))
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
        _set_solver(model, *saved)
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
                         "compute_saved": _saved(t, base),
                         "feval_saved": _saved(st["nfev_mean"], base_f)})
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
        inj = model.embed(model.normalize(x.to(device))).cpu()
    # on the CPU in float64-capable form: a few structures, the cost is negligible
    spec = jacobian_spectrum(copy.deepcopy(cell).cpu(), inj, steps)
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
    that iterate (tol 0, ``trace_iters`` iterations; median times over ``repeats``)."""
    from andersonn.solvers import get_solver

    model.eval()
    inj = model.embed(xb.to(device))
    cell = model.cell
    sync = device.type == "cuda"
    stamps: dict[str, list[list[float]]] = {name: [] for name in DEQ_SOLVERS}
    traces: dict[str, list[float]] = {}
    for _ in range(s.repeats):
        for name in DEQ_SOLVERS:
            marks: list[float] = []

            def timed(z: Tensor, x: Tensor, _marks: list[float] = marks) -> Tensor:
                out = cell(z, x)
                if sync:
                    torch.cuda.synchronize()
                _marks.append(time.perf_counter())
                return out

            # eager: the timer synchronises inside f, which a CUDA graph cannot capture
            opts = _solver_opts(name, s, 0.0, s.trace_iters, graphs=False)
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


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def run_speedup(task: str, settings: SpeedupSettings | None = None, *, dataset: Any = None,
                out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the speed-up benchmark; write JSON, markdown and plots; return the result dict."""
    s = settings or SpeedupSettings()
    s.validate()
    threads = set_threads(s.threads)
    device = torch.device(s.device)
    out_dir = results_dir("speedup", task, out)
    log: Callable[[str], None] = (lambda msg: print(msg, file=sys.stderr, flush=True)) \
        if progress else (lambda msg: None)

    ds = dataset if dataset is not None else load_task(task, s.limit, s.build_limit)
    data = split_tensors(ds, s.limit, s.seed)
    xtr, ytr = data["train"]
    xva, yva = data["val"]
    if s.train_limit is not None and xtr.shape[0] > s.train_limit:
        keep = torch.from_numpy(np.sort(np.random.default_rng(s.seed + 2).choice(
            xtr.shape[0], s.train_limit, replace=False)))
        xtr, ytr = xtr[keep], ytr[keep]
    if s.val_limit is not None and xva.shape[0] > s.val_limit:
        keep = torch.from_numpy(np.sort(np.random.default_rng(s.seed + 1).choice(
            xva.shape[0], s.val_limit, replace=False)))
        xva, yva = xva[keep], yva[keep]
    xte, yte = data["test"] if data["test"][0].shape[0] else data["val"]
    classes = [str(c) for c in (getattr(ds, "classes", None) or [])]
    k = len(classes) if classes else int(max(int(ytr.max()), int(yva.max()))) + 1
    shape = (int(xtr.shape[1]), int(xtr.shape[2]), int(xtr.shape[3]))

    from andersonn.models import count_parameters

    models = build_variants(s, shape, k)
    mean, std = channel_stats(xtr)
    for m in models.values():
        m.set_normalization(mean, std)
    weight = class_weights(ytr, k)
    steps_per_epoch = math.ceil(xtr.shape[0] / s.batch_size)
    total = steps_per_epoch * s.epochs
    runs = {name: _Run(name, models[name], s, total, weight, device, xtr.shape[0])
            for name in VARIANTS}
    per = min(s.evals_per_epoch, steps_per_epoch)
    eval_steps = {round(j * steps_per_epoch / per) for j in range(1, per + 1)}
    log(f"bench speedup {task}: train {xtr.shape[0]}, val {xva.shape[0]}, test {xte.shape[0]}, "
        f"{s.epochs} epochs × {steps_per_epoch} steps, params "
        + ", ".join(f"{n} {count_parameters(m)}" for n, m in models.items()))

    gen = torch.Generator().manual_seed(s.seed)
    for r in runs.values():
        r.validate(xva, yva, 0.0, s.inference_batch)
    started = time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        order = torch.randperm(xtr.shape[0], generator=gen)
        for step in range(steps_per_epoch):
            b = order[step * s.batch_size:(step + 1) * s.batch_size]
            xb, yb = xtr[b].to(device), ytr[b].to(device)
            for r in runs.values():
                r.step(xb, yb, b)
            if step + 1 in eval_steps:
                ep = epoch - 1 + (step + 1) / steps_per_epoch
                accs = {n: r.validate(xva, yva, ep, s.inference_batch) for n, r in runs.items()}
                log(f"  epoch {ep:5.2f}  " + "  ".join(
                    f"{n} acc {accs[n]:.3f} t {runs[n].train_time:6.1f}s" for n in runs)
                    + f"  [{time.perf_counter() - started:.0f}s]")
        for r in runs.values():
            r.end_epoch()

    summaries = {n: r.summary() for n, r in runs.items()}
    for n in VARIANTS:
        summaries[n]["params"] = count_parameters(models[n])
    common = min(summaries[n]["peak_val_acc"] for n in DEQ_SOLVERS)
    best = max(summaries[n]["peak_val_acc"] for n in DEQ_SOLVERS)
    targets = {"common": common, "fraction": s.target_fraction * best}
    reach: dict[str, dict[str, Any]] = {}
    for tname, tval in targets.items():
        reach[tname] = {}
        for n in VARIANTS:
            p = time_to_target(summaries[n]["curve"], tval)
            reach[tname][n] = {"reached": p is not None,
                               "time_s": p["train_time_s"] if p else None,
                               "fevals": p["fevals"] if p else None,
                               "epoch": p["epoch"] if p else None,
                               "bound_time_s": summaries[n]["train_time_s"],
                               "bound_fevals": runs[n].fevals}
    ratios = {tname: _target_ratios(reach[tname]) for tname in targets}

    # test accuracy with best-val weights, each variant's own solver
    from andersonn.training import evaluate

    for n, r in runs.items():
        r.restore_best()
        m = evaluate(r.model, xte, yte, batch_size=s.inference_batch, device=device)
        summaries[n]["test_acc"] = float(m["accuracy"])
        summaries[n]["test_balanced_acc"] = float(m["balanced_accuracy"])
    log("  inference at matched residual ...")
    xin, yin = xte, yte
    if s.inference_limit is not None and xin.shape[0] > s.inference_limit:
        xin, yin = xin[: s.inference_limit], yin[: s.inference_limit]
    inference = inference_at_tolerances(runs["anderson"].model, xin, yin, s, device)
    log("  spectrum of the trained cell ...")
    spectrum = trained_cell_spectrum(runs["anderson"].model, xte[: s.spectrum_samples],
                                     s.spectrum_steps, device)
    log("  residual-vs-time traces ...")
    traces = residual_traces(runs["anderson"].model, xte[: s.trace_batch], s, device)
    cross = crossover(traces["anderson"], traces["forward"])
    fwd_t = np.diff([0.0, *traces["forward"]["time_s"]])
    and_t = np.diff([0.0, *traces["anderson"]["time_s"]])
    penalty = ratio(float(np.median(and_t)), float(np.median(fwd_t)))

    per_batch = {n: {"fwd": summaries[n]["fwd_nfev"], "bwd": summaries[n]["bwd_nfev"]}
                 for n in DEQ_SOLVERS}
    fwd_epoch = summaries["forward"]["time_per_epoch_s"]
    result: dict[str, Any] = {
        "bench": "speedup", "task": task, "settings": _settings_dict(s),
        "machine": {**machine_info(s.device), "torch_threads": threads},
        "data": {"train": int(xtr.shape[0]), "val": int(xva.shape[0]),
                 "test": int(xte.shape[0]), "classes": classes, "image_shape": list(shape)},
        "variants": summaries, "targets": targets, "time_to_target": reach, "ratios": ratios,
        "per_batch_compute_saved": {
            n: _saved(per_batch[n]["fwd"] + per_batch[n]["bwd"],
                      per_batch["forward"]["fwd"] + per_batch["forward"]["bwd"])
            for n in ("anderson", "broyden")},
        "epoch_time_speedup": {n: ratio(fwd_epoch, summaries[n]["time_per_epoch_s"])
                               for n in VARIANTS},
        "inference": inference, "trained_cell_spectrum": spectrum,
        "residual_traces": traces, "crossover": cross,
        "anderson_cost_per_iteration_vs_forward": penalty,
    }
    result["targets_met"] = _targets_met(result)
    markdown = speedup_markdown(result)
    write_results(out_dir, "speedup", result, markdown)
    _plots(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result


def _saved(x: float | None, base: float | None) -> float | None:
    r = ratio(x, base)
    return None if r is None else 1.0 - r


def _target_ratios(reach: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-up of each variant over forward iteration in time (and f evals) to the target."""
    f = reach["forward"]
    out: dict[str, Any] = {}
    for n in ("anderson", "broyden", "explicit"):
        r = reach[n]
        if not r["reached"]:
            out[n] = {"speedup": None, "lower_bound": False, "compute_saved": None,
                      "feval_saved": None, "note": "not reached"}
            continue
        base_t = f["time_s"] if f["reached"] else f["bound_time_s"]
        base_f = f["fevals"] if f["reached"] else f["bound_fevals"]
        out[n] = {"speedup": ratio(base_t, r["time_s"]), "lower_bound": not f["reached"],
                  "compute_saved": _saved(r["time_s"], base_t),
                  "feval_saved": _saved(r["fevals"], base_f) if n != "explicit" else None,
                  "note": "forward not reached: lower bound" if not f["reached"] else ""}
    return out


def _targets_met(res: dict[str, Any]) -> dict[str, Any]:
    train = res["ratios"]["common"]["anderson"]
    inf = [r for r in res["inference"] if r["solver"] == "anderson"]
    tight = min(inf, key=lambda r: r["tol"]) if inf else None
    v = res["variants"]
    bound = ratio(v["forward"]["fevals_per_sample_per_step"],
                  v["anderson"]["fevals_per_sample_per_step"])
    return {"train_5x": {"value": train["speedup"], "feval_bound": bound,
                         "met": bool(train["speedup"] is not None and train["speedup"] >= 5)},
            "inference_8x": {"tol": tight["tol"] if tight else None,
                             "value": tight["speedup_vs_forward"] if tight else None,
                             "feval_bound": tight["feval_ratio_vs_forward"] if tight else None,
                             "met": bool(tight and tight["speedup_vs_forward"]
                                         and tight["speedup_vs_forward"] >= 8)}}


def _settings_dict(s: SpeedupSettings) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["inference_tols"] = list(s.inference_tols)
    return d


def _speed(r: dict[str, Any]) -> str:
    if r.get("speedup") is None:
        return r.get("note") or "–"
    return ("≥ " if r.get("lower_bound") else "") + f"{r['speedup']:.2f}×"


def speedup_markdown(res: dict[str, Any]) -> str:
    """The speed-up tables (training, inference, crossover, targets) as markdown."""
    v, reach, t = res["variants"], res["time_to_target"], res["targets"]
    m = res["machine"]
    lines = [f"## bench speedup: {res['task']}\n",
             f"Machine: {m.get('processor')}, {m.get('cpu_count')} CPU cores, torch "
             f"{m.get('torch')} ({m.get('torch_threads')} thread(s)), device {m.get('device')}"
             f"{', ' + m['gpu'] if m.get('gpu') else ''}. Data: train {res['data']['train']}, "
             f"val {res['data']['val']}, test {res['data']['test']}; tol "
             f"{res['settings']['tol']}, max_iter {res['settings']['max_iter']}, "
             f"{res['settings']['epochs']} epochs, batch {res['settings']['batch_size']}, "
             f"hidden {res['settings']['hidden']}, seed {res['settings']['seed']}"
             + ("; DEQs warm-started from the last epoch" if res["settings"].get("warm_start")
                else "") + ".\n",
             f"Common validation accuracy (highest reached by every DEQ variant): "
             f"**{t['common']:.4f}**; fraction target ({res['settings']['target_fraction']} × "
             f"best DEQ peak): {t['fraction']:.4f}. Times are training wall time "
             "(validation excluded).\n"]
    rows = []
    for n in VARIANTS:
        s = v[n]
        rc, rf = reach["common"][n], reach["fraction"][n]
        rat = res["ratios"]["common"].get(n, {})
        ratf = res["ratios"]["fraction"].get(n, {})
        rows.append([n, s["params"], s["time_per_epoch_s"],
                     f"{s['fwd_nfev']:.1f} / {s['fwd_nfev_max']:.1f}" if n != "explicit" else "–",
                     f"{s['bwd_nfev']:.1f} / {s['bwd_nfev_max']:.1f}" if n != "explicit" else "–",
                     f"{s['fwd_converged']:.2f} / {s['bwd_converged']:.2f}" if n != "explicit"
                     else "–", s["peak_val_acc"],
                     fmt(rc["time_s"]) if rc["reached"] else "not reached",
                     "1×" if n == "forward" else _speed(rat),
                     fmt(rf["time_s"]) if rf["reached"] else "not reached",
                     "1×" if n == "forward" else _speed(ratf), s["test_acc"]])
    lines.append(markdown_table(
        ["variant", "params", "s / epoch", "fwd f-evals / batch (mean / max)",
         "bwd f-evals / batch (mean / max)", "converged fwd / bwd", "peak val acc",
         "t → common acc (s)",
         "speed-up vs forward", "t → fraction target (s)", "speed-up (fraction)", "test acc"],
        rows))
    saved_rows = []
    for n in ("anderson", "broyden"):
        r = res["ratios"]["common"][n]
        saved_rows.append([n, fmt(r.get("compute_saved")), fmt(r.get("feval_saved")),
                           fmt(res["per_batch_compute_saved"][n]),
                           fmt(res["epoch_time_speedup"][n])])
    lines.append("\nCompute saved against forward iteration (same run):\n")
    lines.append(markdown_table(
        ["solver", "time to common acc: 1 − t/t_fwd", "f-evals to common acc: 1 − F/F_fwd",
         "f-evals per batch (fwd+bwd): 1 − F/F_fwd", "epoch-time speed-up"], saved_rows))
    inf_rows = [[f"{r['tol']:.0e}", r["solver"], r["time_per_structure_s"] * 1e3,
                 r["nfev_mean"], r["residual_max"], r["converged_fraction"],
                 "yes" if r["matched"] else "NO", r["accuracy"],
                 "1×" if r["solver"] == "forward" else fmt(r["speedup_vs_forward"], suffix="×"),
                 "–" if r["solver"] == "forward"
                 else f"{fmt(r['compute_saved'])} / {fmt(r['feval_saved'])}"]
                for r in res["inference"]]
    lines.append(f"\nInference on the Anderson-trained weights ({res['inference'][0]['n']} test "
                 f"structures, max_iter {res['settings']['inference_max_iter']}, median of "
                 f"{res['settings']['repeats']} interleaved repeats):\n")
    lines.append(markdown_table(
        ["tol", "solver", "ms / structure", "f-evals (mean)", "max residual", "converged",
         "matched", "accuracy", "speed-up vs forward", "compute saved (time / f-evals)"],
        inf_rows))
    spec = res.get("trained_cell_spectrum")
    if spec:
        lines.append(
            f"\nSpectrum of the Anderson-trained cell ({spec['n']} test structures, "
            f"{spec['arnoldi_steps']} Arnoldi steps): ρ(∂f/∂z) at z* "
            f"{min(spec['rho_power']):.3f}–{max(spec['rho_power']):.3f} (forward iteration "
            f"needs ≈ log(tol)/log ρ evaluations); best Krylov rate of the fitted disk "
            f"{min(spec['krylov_rate']):.3f}–{max(spec['krylov_rate']):.3f}, so no "
            f"Anderson-type method can need fewer than about 1/"
            f"{max(spec['predicted_ratio']):.1f} of forward iteration's f evaluations at a "
            f"small tolerance (predicted ratio {min(spec['predicted_ratio']):.1f}–"
            f"{max(spec['predicted_ratio']):.1f}×; see `andersonn bench spectrum`).\n")
    cross = res["crossover"]
    pen = res["anderson_cost_per_iteration_vs_forward"]
    lines.append("\nResidual vs time (one batch, tol 0): Anderson costs "
                 f"{fmt(pen)}× forward iteration's time per iteration; "
                 + (f"crossover at {cross['time_s'] * 1e3:.1f} ms (Anderson iteration "
                    f"{cross['anderson_iteration']}, residual {cross['residual']:.2e} vs "
                    f"forward {cross['forward_residual_at_time']:.2e})."
                    if cross else "no crossover within the traced iterations.") + "\n")
    tm = res["targets_met"]
    lines.append(
        f"\nTargets: training ≥5× sooner to common accuracy: "
        f"**{'met' if tm['train_5x']['met'] else 'not met'}** ({fmt(tm['train_5x']['value'])}×); "
        f"inference ≥8× at tol {fmt(tm['inference_8x']['tol'])}: "
        f"**{'met' if tm['inference_8x']['met'] else 'not met'}** "
        f"({fmt(tm['inference_8x']['value'])}×). Zero-overhead bounds (forward / Anderson "
        f"f-evaluation ratio): training {fmt(tm['train_5x'].get('feval_bound'))}× per batch, "
        f"inference {fmt(tm['inference_8x'].get('feval_bound'))}×.\n")
    return "\n".join(lines)


def _plots(res: dict[str, Any], out_dir: Path) -> None:
    try:
        fig, ax = new_figure()
        for n in VARIANTS:
            c = res["variants"][n]["curve"]
            ax.plot([p["train_time_s"] for p in c], [p["val_acc"] for p in c], marker="o",
                    ms=3, label=n)
        ax.axhline(res["targets"]["common"], color="grey", ls="--", lw=1,
                   label=f"common acc {res['targets']['common']:.3f}")
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{res['task']}: validation accuracy vs wall time")
        ax.legend()
        save_figure(fig, out_dir / "val_acc_vs_time.png")

        fig, ax = new_figure()
        for n in DEQ_SOLVERS:
            tr = res["residual_traces"][n]
            ax.semilogy(np.asarray(tr["time_s"]) * 1e3, tr["best_residual"], marker=".",
                        label=n)
        cross = res["crossover"]
        if cross:
            ax.axvline(cross["time_s"] * 1e3, color="grey", ls="--", lw=1,
                       label=f"crossover {cross['time_s'] * 1e3:.1f} ms")
        ax.set_xlabel("wall time (ms)")
        ax.set_ylabel("relative residual (best so far, batch mean)")
        ax.set_title("residual vs time, one batch")
        ax.legend()
        save_figure(fig, out_dir / "residual_vs_time.png")

        fig, ax = new_figure()
        tols = list(res["settings"]["inference_tols"])
        width = 0.8 / len(DEQ_SOLVERS)
        for i, n in enumerate(DEQ_SOLVERS):
            vals = [next(r["time_per_structure_s"] * 1e3 for r in res["inference"]
                         if r["solver"] == n and r["tol"] == tol) for tol in tols]
            ax.bar(np.arange(len(tols)) + i * width, vals, width, label=n)
        ax.set_xticks(np.arange(len(tols)) + width, [f"{t:.0e}" for t in tols])
        ax.set_xlabel("relative residual tolerance")
        ax.set_ylabel("inference time per structure (ms)")
        ax.set_title("inference at matched residual")
        ax.legend()
        save_figure(fig, out_dir / "inference_time.png")
    except Exception as exc:  # plots are a by-product: never lose the numbers over them
        print(f"andersonn: warning: plotting failed: {exc}", file=sys.stderr)
