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

This module trains the variants and assembles the result; the post-training probes (inference,
spectrum, residual traces) are in :mod:`andersonn.bench.speedup_probes`, the tables, targets and
plots in :mod:`andersonn.bench.speedup_report`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from andersonn.bench.checks import check_tolerances, tolerance_problem
from andersonn.bench.report import (
    CUDA_GRAPH_NEEDS_CUDA,
    allocation_failures,
    check_memory,
    machine_info,
    ratio,
    results_dir,
    set_threads,
    write_results,
)
from andersonn.bench.speedup_probes import (
    crossover,
    inference_at_tolerances,
    residual_traces,
    trained_cell_spectrum,
)
from andersonn.bench.speedup_report import (
    DEQ_SOLVERS,
    VARIANTS,
    plots,
    saved,
    speedup_markdown,
    target_ratios,
    targets_met,
)
from andersonn.data.splits import SPLIT_NAMES
from andersonn.errors import AndersonnError, ConfigError
from andersonn.training.inputs import channel_stats, class_weights
from andersonn.training.trainer import plural
from andersonn.training.warm_start import WarmStarts

__all__ = ["RUN_FILES", "SEEDS_FILES", "SpeedupSettings", "run_speedup"]


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
        # limit: a 1000-structure subset of whatever build is cached (a full build too), so
        # quick stays small; build_limit: the build made when none is cached
        base: dict[str, Any] = {"epochs": 3, "hidden": 32, "train_limit": 512, "limit": 1000,
                                "build_limit": 1000, "evals_per_epoch": 3,
                                "val_limit": 256, "inference_limit": 64, "repeats": 2,
                                "trace_iters": 30, "inference_max_iter": 300}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) on a setting the benchmark cannot run with."""
        for name in ("epochs", "batch_size", "hidden", "max_iter", "evals_per_epoch", "repeats",
                     "trace_batch", "trace_iters", "inference_batch", "inference_max_iter",
                     "kernel", "groups", "explicit_depth"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("inference_limit", "train_limit", "val_limit", "build_limit", "threads"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        for name in ("spectrum_samples", "spectrum_steps", "seed"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)})")
        check_tolerances("--inference-tols", self.inference_tols)
        problem = tolerance_problem(self.tol) if self.tol != 0 else None  # 0: max_iter always
        if problem is not None:
            raise ConfigError(f"--tol: {problem}")
        if self.limit is not None and self.limit < 6:
            raise ConfigError(f"--limit must be at least 6 (got {self.limit})")
        if not 0 < self.target_fraction <= 1:
            raise ConfigError("target_fraction must be in (0, 1]")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but no CUDA device is available")
        if self.cuda_graph and self.device != "cuda":
            raise ConfigError(CUDA_GRAPH_NEEDS_CUDA)

    def options_for(self, name: str, tol: float, max_iter: int, graphs: bool = True
                    ) -> dict[str, Any]:
        """Solver options of the DEQ variant ``name`` at ``tol`` / ``max_iter``: Anderson also
        gets ``solver_options``; with ``graphs``, ``cuda_graph`` when these settings ask for it."""
        extra = self.solver_options if name == "anderson" else {}
        graph = {"cuda_graph": True} if graphs and self.cuda_graph else {}
        return {**extra, **graph, "tol": tol, "max_iter": max_iter}


# the files one run writes into its results folder, and those of a --seeds run's summary
RUN_FILES = ("speedup.json", "speedup.md", "val_acc_vs_time.png", "residual_vs_time.png",
             "inference_time.png")
SEEDS_FILES = ("seeds.json", "seeds.md")


def refuse_seeds_folder(out_dir: Path) -> None:
    """A single run must not write into the folder of a ``--seeds`` run: the folder would show
    two results, and the seeds' (hours of runs) are not to be replaced by one run's."""
    found = [name for name in SEEDS_FILES if (out_dir / name).exists()]
    if found:
        raise ConfigError(f"--out {out_dir} holds the summary of a --seeds run ({found[0]}); "
                          "give another --out for a single run, or run with --seeds again")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_task(task: str, limit: int | None = None, build_limit: int | None = None, *,
              progress: bool = True) -> Any:
    """The latest cached build of ``task``; when there is none (or it is stale), the build with
    ``limit`` (else ``build_limit``) is opened, or built first (``progress``: its bar)."""
    from andersonn.data import build_dataset, load_dataset
    from andersonn.data.build import SubsetBuildWarning

    try:
        with warnings.catch_warnings():  # a subset is fine here: --limit subsets it anyway
            warnings.simplefilter("ignore", SubsetBuildWarning)
            return load_dataset(task)
    except AndersonnError as exc:
        n = limit if limit is not None else build_limit
        try:
            return load_dataset(task, limit=n)
        except AndersonnError:
            pass
        from andersonn.training.inputs import why_building

        # exc is about the latest build; the one built is that of n
        print(f"andersonn: {why_building(exc, task, None)}"
              + (f" (with --limit {n})" if n is not None else ""), file=sys.stderr)
        return _build_keeping_latest(task, n, functools.partial(build_dataset,
                                                               progress=progress))


def _build_keeping_latest(task: str, limit: int | None, build: Callable[..., Any]) -> Any:
    """Build ``task``; a benchmark's (sub-)build must not become the cache's ``LATEST`` build
    that ``andersonn train`` picks up, so a previous pointer is put back afterwards (and one
    the sub-build created is removed)."""
    from andersonn.data.build import datasets_root
    from andersonn.fileio import atomic_write_text

    pointer = datasets_root() / task / "LATEST"
    before = pointer.read_text() if pointer.is_file() else None
    ds = build(task, limit=limit)
    if limit is not None:
        if before is not None:
            atomic_write_text(pointer, before)
        else:
            pointer.unlink(missing_ok=True)
    return ds


def split_tensors(ds: Any, limit: int | None, seed: int, train_limit: int | None = None,
                  val_limit: int | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Train/val/test tensors; with ``limit``, a seeded random subset of the structures (each
    keeps its split); ``train_limit`` / ``val_limit`` then cap the training / validation split
    (seeded subsets, seeds ``seed + 2`` / ``seed + 1``). Every subset is drawn on the indices,
    so only the chosen images are read from the (memory-mapped) build."""
    splits = np.asarray(ds.splits)
    n = len(splits)
    idx = np.arange(n)
    if limit is not None and limit < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    caps = {"train": (train_limit, seed + 2), "val": (val_limit, seed + 1)}
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for code, name in enumerate(SPLIT_NAMES):
        sel = idx[splits[idx] == code]
        cap, cap_seed = caps.get(name, (None, 0))
        if cap is not None and sel.shape[0] > cap:
            sel = sel[np.sort(np.random.default_rng(cap_seed).choice(sel.shape[0], cap,
                                                                     replace=False))]
        images = np.ascontiguousarray(np.asarray(ds.images[sel], dtype=np.float32))
        labels = np.asarray(ds.labels, dtype=np.int64)[sel].copy()
        out[name] = (torch.from_numpy(images), torch.from_numpy(labels))
    if out["train"][0].shape[0] == 0 or out["val"][0].shape[0] == 0:
        raise AndersonnError("the dataset has an empty train or val split (raise --limit)")
    return out


# --------------------------------------------------------------------------------------------
# models and lockstep training
# --------------------------------------------------------------------------------------------
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
        opts = s.options_for(name, s.tol, s.max_iter)
        models[name] = build_model("deq", solver=name, solver_options=opts, backward="implicit",
                                   backward_options={"tol": s.tol, "max_iter": s.max_iter},
                                   **common)
    torch.manual_seed(s.seed)
    models["explicit"] = build_model("explicit", depth=s.explicit_depth,
                                     match_params=count_parameters(models["anderson"]),
                                     **common)
    return models


def estimate_bytes(s: SpeedupSettings, shape: tuple[int, int, int], k: int) -> int:
    """A rough estimate of the benchmark's peak memory (float32): the four models' weights,
    gradients and AdamW moments (sized on the meta device, nothing allocated) and about 24
    hidden-width feature maps per row of the largest batch (solver history, cell activations),
    plus the explicit network's activations of every cell."""
    from andersonn.models import build_model, count_parameters

    c, h, w = shape
    with torch.device("meta"):  # the explicit network's parameters are matched to the DEQ's
        params = 4 * count_parameters(build_model(
            "deq", in_channels=c, height=h, width=w, num_classes=k, hidden=s.hidden,
            kernel=s.kernel, groups=s.groups))
    feature_map = s.hidden * h * w * 4
    rows = max(s.batch_size, s.inference_batch, s.trace_batch)
    return 16 * params + feature_map * (24 * rows + 8 * s.explicit_depth * s.batch_size)


def _size_options(s: SpeedupSettings, shape: tuple[int, int, int]) -> tuple[str, str]:
    """(what, advice) of a memory refusal: the sizes in use and the options that set them."""
    what = (f"bench speedup with hidden {s.hidden}, batch {s.batch_size} and inference batch "
            f"{s.inference_batch} on {'×'.join(str(v) for v in shape)} images (--hidden, "
            "--batch-size, --inference-batch)")
    return what, "lower --hidden, --batch-size or --inference-batch"


def _image_shape(task: str, dataset: Any) -> tuple[tuple[int, int, int], int] | None:
    """(image shape, classes) the run will see, known before any data is read: the given
    dataset's, else the built-in task's image spec; None when neither says."""
    if dataset is not None:
        images = getattr(dataset, "images", None)
        classes = getattr(dataset, "classes", None)
        if images is None or len(getattr(images, "shape", ())) != 4 or not classes:
            return None
        return tuple(int(v) for v in images.shape[1:]), len(classes)  # type: ignore[return-value]
    from andersonn.bench.memory import task_shape
    from andersonn.data import TASKS

    return task_shape(task) if task in TASKS else None


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
# the benchmark
# --------------------------------------------------------------------------------------------
def run_speedup(task: str, settings: SpeedupSettings | None = None, *, dataset: Any = None,
                out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the speed-up benchmark; write JSON, markdown and plots; return the result dict."""
    s = settings or SpeedupSettings()
    s.validate()
    known = _image_shape(task, dataset)
    if known is not None:
        check_memory(estimate_bytes(s, *known), *_size_options(s, known[0]), device=s.device)
    threads = set_threads(s.threads)
    device = torch.device(s.device)
    out_dir = results_dir("speedup", task, out)
    refuse_seeds_folder(out_dir)
    log: Callable[[str], None] = (lambda msg: print(msg, file=sys.stderr, flush=True)) \
        if progress else (lambda msg: None)

    ds = dataset if dataset is not None else load_task(task, s.limit, s.build_limit,
                                                                 progress=progress)
    data = split_tensors(ds, s.limit, s.seed, s.train_limit, s.val_limit)
    xtr, ytr = data["train"]
    xva, yva = data["val"]
    xte = data["test"][0]
    if not (xtr.shape[0] and xva.shape[0] and xte.shape[0]):
        empty = [name for name, (x, _y) in data.items() if not x.shape[0]]
        raise ConfigError(f"bench speedup {task}: the {', '.join(empty)} split(s) of the build "
                          f"are empty ({sum(int(x.shape[0]) for x, _y in data.values())} "
                          f"entries); use a larger build (--limit, or "
                          f"`andersonn data build {task}`)")
    classes = [str(c) for c in (getattr(ds, "classes", None) or [])]
    k = len(classes) if classes else int(max(int(ytr.max()), int(yva.max()))) + 1
    shape = (int(xtr.shape[1]), int(xtr.shape[2]), int(xtr.shape[3]))

    with allocation_failures(*_size_options(s, shape)):
        return _train_and_probe(task, s, data, classes, shape, k, out_dir, threads, device,
                                log)


def _train_and_probe(task: str, s: SpeedupSettings, data: dict[str, tuple[Tensor, Tensor]],
                     classes: list[str], shape: tuple[int, int, int], k: int, out_dir: Path,
                     threads: int, device: torch.device,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The lockstep training, the probes and the result files of :func:`run_speedup`."""
    xtr, ytr = data["train"]
    xva, yva = data["val"]
    xte, yte = data["test"]

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
        f"{plural(s.epochs, 'epoch')} × {plural(steps_per_epoch, 'step')}, params "
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
    ratios = {tname: target_ratios(reach[tname]) for tname in targets}

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
            n: saved(per_batch[n]["fwd"] + per_batch[n]["bwd"],
                      per_batch["forward"]["fwd"] + per_batch["forward"]["bwd"])
            for n in ("anderson", "broyden")},
        "epoch_time_speedup": {n: ratio(fwd_epoch, summaries[n]["time_per_epoch_s"])
                               for n in VARIANTS},
        "inference": inference, "trained_cell_spectrum": spectrum,
        "residual_traces": traces, "crossover": cross,
        "anderson_cost_per_iteration_vs_forward": penalty,
    }
    result["targets_met"] = targets_met(result)
    markdown = speedup_markdown(result)
    write_results(out_dir, "speedup", result, markdown)
    plots(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result


def _settings_dict(s: SpeedupSettings) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["inference_tols"] = list(s.inference_tols)
    return d
