"""Evaluation of a model on a split: accuracy and per-class scores, solver statistics, calibration.

``eval_pass`` is sharded under ``torchrun`` (each rank takes every world-th sample and the sums
are all-reduced); ``evaluate`` is its one-process front for notebooks and benchmarks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from andersonn.models import count_parameters
from andersonn.training.calibration import MIN_SAMPLES as MIN_CALIBRATION_SAMPLES
from andersonn.training.calibration import calibration_bins, ece_from_bins, fit_temperature
from andersonn.training.config import TrainConfig
from andersonn.training.distributed import DistInfo, all_reduce_max, all_reduce_sum
from andersonn.training.metrics import classification_report

__all__ = ["bf16_autocast", "calibrate_split", "calibration_record", "eval_pass", "evaluate",
           "mean_trace", "pooled_trace", "report_test_split", "sharded_ece", "solver_comparison",
           "stat_values"]


def stat_values(stats: Any) -> tuple[float, float, float]:
    """(mean nfev, max nfev, mean final residual) of a SolverStats, zeros when absent."""
    if stats is None:
        return 0.0, 0.0, 0.0
    nfev = getattr(stats, "nfev", None)
    res = getattr(stats, "residual", None)
    if nfev is None:
        return 0.0, 0.0, 0.0
    nfev = torch.as_tensor(nfev).double()
    res_mean = (float(torch.as_tensor(res).double().nan_to_num(0.0).mean())
                if res is not None else 0.0)
    if nfev.numel() == 0:
        return 0.0, 0.0, res_mean
    return float(nfev.mean()), float(nfev.max()), res_mean


def mean_trace(stats: Any) -> np.ndarray | None:
    """Mean relative residual per iteration over *all* samples: a sample that has stopped keeps
    its last residual (its row is NaN after it stops), so easy samples leaving the active set
    do not make the curve jump up."""
    trace = getattr(stats, "trace", None) if stats is not None else None
    if trace is None:
        return None
    t = torch.as_tensor(trace).detach().double().cpu().numpy()
    if t.ndim == 1:
        return t
    if t.size == 0:
        return None
    t = np.where(np.isfinite(t) & (t > 0), t, np.nan)
    # forward-fill each row along the iterations
    idx = np.where(np.isfinite(t), np.arange(t.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = t[np.arange(t.shape[0])[:, None], idx]
    started = np.isfinite(filled).all(axis=0)  # iterations where every sample has a value
    if not started.any():
        return None
    return filled[:, started].mean(axis=0)


def bf16_autocast(enabled: bool, device: torch.device) -> Any:
    """bfloat16 autocast on ``device`` when ``enabled`` (``--bf16``), else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)



@torch.no_grad()
def eval_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int,
              device: torch.device, info: DistInfo, bf16: bool = False,
              weight: torch.Tensor | None = None, traces: bool = False,
              return_logits: bool = False, classes: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """Sharded evaluation: each rank takes every world-th sample; sums are all-reduced, and
    ``fwd_nfev_max`` is each step's maximum over all ranks' batches of that step.
    ``classes`` names the per-class scores and enables task extras (e.g. metal vs non-metal);
    ``return_logits`` adds this rank's ``logits`` and ``labels`` (its shard, on the CPU)."""
    was_training = model.training
    model.eval()
    idx = torch.arange(info.rank, x.shape[0], info.world_size)
    # every rank's number of steps: rank 0's shard is the largest
    steps = -(-len(range(0, x.shape[0], info.world_size)) // batch_size)
    cm = torch.zeros(k, k, dtype=torch.float64)
    sums = torch.zeros(4, dtype=torch.float64)  # loss, n, nfev, residual
    step_max = torch.zeros(steps, dtype=torch.float64)  # each step's nfev max
    trace_list: list[tuple[np.ndarray, int]] = []
    kept_logits: list[torch.Tensor] = []
    t0 = time.perf_counter()
    for step, start in enumerate(range(0, idx.numel(), batch_size)):
        b = idx[start:start + batch_size]
        xb, yb = x[b].to(device, non_blocking=True), y[b].to(device, non_blocking=True)
        with bf16_autocast(bf16, device):
            logits = model(xb)
        logits = logits.float()
        loss = F.cross_entropy(logits, yb, weight=weight, reduction="sum")
        pred = logits.argmax(dim=1)
        cm += torch.bincount((yb * k + pred).cpu(), minlength=k * k).reshape(k, k).double()
        fwd = model.solver_stats()["forward"] if hasattr(model, "solver_stats") else None
        nf, nfmax, res = stat_values(fwd)
        sums += torch.tensor([float(loss), b.numel(), nf * b.numel(), res * b.numel()],
                             dtype=torch.float64)
        step_max[step] = nfmax
        if traces:
            tr = mean_trace(fwd)
            if tr is not None and tr.size:
                trace_list.append((tr, b.numel()))
        if return_logits:
            kept_logits.append(logits.cpu())
    wall = time.perf_counter() - t0
    all_reduce_sum(cm, info)
    all_reduce_sum(sums, info)
    all_reduce_max(step_max, info)
    pooled = pooled_trace(trace_list, info) if traces else None
    model.train(was_training)
    n = max(sums[1].item(), 1.0)
    out = classification_report(cm.numpy(), list(classes) if classes is not None else None)
    out.update({"loss": sums[0].item() / n, "fwd_nfev": sums[2].item() / n,
                "fwd_nfev_max": step_max.sum().item() / max(steps, 1),
                "fwd_residual": sums[3].item() / n, "wall_time_s": wall,
                "samples_per_s": n / wall if wall > 0 else 0.0})
    if pooled is not None:
        out["residual_trace"] = pooled
    if return_logits:
        out["logits"] = torch.cat(kept_logits) if kept_logits else torch.zeros(0, k)
        out["labels"] = y[idx].cpu()
    return out


def pooled_trace(traces: Sequence[tuple[np.ndarray, int]], info: DistInfo
                 ) -> list[float] | None:
    """The mean relative residual per iteration over all samples of all ranks, from each
    batch's :func:`mean_trace` and its number of samples (None where no batch has a trace).
    A batch whose solve stopped keeps its last residual (as a sample does in
    :func:`mean_trace`): the traces are padded to the longest of all ranks with their last
    value, then averaged weighted by their samples. Called by every rank (collectives)."""
    width = torch.tensor([max((t.size for t, _ in traces), default=0)], dtype=torch.float64)
    width_all = int(all_reduce_max(width, info).item())
    if width_all == 0:
        return None
    sums = torch.zeros(width_all + 1, dtype=torch.float64)  # weighted sums, then the weight
    for trace, count in traces:
        padded = np.concatenate([trace, np.full(width_all - trace.size, trace[-1])])
        sums[:width_all] += torch.as_tensor(padded * count, dtype=torch.float64)
        sums[width_all] += count
    all_reduce_sum(sums, info)
    return [float(v) for v in sums[:width_all] / sums[width_all]]


def evaluate(model: nn.Module, images: Any, labels: Any, classes: Sequence[str] | None = None,
             batch_size: int = 256, solver: str | None = None,
             solver_options: dict[str, Any] | None = None, device: str | torch.device = "cpu",
             traces: bool = False, bf16: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``images``/``labels`` (optionally with another solver/tolerance).

    Returns accuracy, balanced_accuracy, macro_f1, per_class, confusion_matrix, loss, fwd_nfev
    (mean per sample), fwd_nfev_max (mean per batch), fwd_residual, wall_time_s, samples_per_s,
    and ``residual_trace`` (the mean over all samples, :func:`pooled_trace`) when ``traces``.
    The model's own solver is restored afterwards.
    """
    dev = torch.device(device)
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    k = int(getattr(model, "num_classes", int(y.max()) + 1))
    old = (getattr(model, "solver_name", None), dict(getattr(model, "solver_options", {}) or {}))
    changed = (solver is not None or solver_options is not None) and hasattr(model, "set_solver")
    if changed:
        model.set_solver(solver, solver_options)
    try:
        out = eval_pass(model, x, y, k, batch_size, dev, DistInfo(), bf16=bf16, traces=traces,
                        classes=classes)
    finally:
        if changed:
            model.solver_options = {}
            model.set_solver(old[0], old[1])
    return out


def report_test_split(model: nn.Module, cfg: TrainConfig, xte: torch.Tensor, yte: torch.Tensor,
                      k: int, classes: list[str], device: torch.device, info: DistInfo,
                      weight: torch.Tensor | None, best_epoch: int, best_val: float,
                      history: list[dict[str, Any]], temperature: float = 1.0
                      ) -> dict[str, Any]:
    """``test_metrics.json`` of a run: scores, calibration and solver statistics on the test
    split (and, on rank 0, a residual trace of each solver for the plot)."""
    test = eval_pass(model, xte, yte, k, cfg.eval_batch_size, device, info, cfg.bf16, weight,
                     traces=True, classes=classes, return_logits=True)
    test["calibration"] = calibration_record(test.pop("logits"), test.pop("labels"),
                                             temperature, info)
    solver: dict[str, Any] = {"name": cfg.solver if cfg.model == "deq" else None,
                              "fwd_nfev": test.pop("fwd_nfev"),
                              "fwd_nfev_max": test.pop("fwd_nfev_max"),
                              "fwd_residual": test.pop("fwd_residual"),
                              "residual_trace": test.pop("residual_trace", None)}
    if history:
        last = history[-1]
        solver.update({"train_fwd_nfev": last["fwd_nfev"], "train_bwd_nfev": last["bwd_nfev"],
                       "train_fwd_residual": last["fwd_residual"]})
    if cfg.model == "deq" and info.is_main:
        solver["comparison"] = solver_comparison(model, cfg, xte[:64].to(device))
    return {"task": cfg.task, "model": cfg.model, "classes": classes, **test,
            "solver": solver, "best_epoch": best_epoch, "best_val_acc": best_val,
            "params": count_parameters(model), "epochs": len(history),
            "train_wall_time_s": history[-1]["wall_time_s"] if history else 0.0}


def sharded_ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                info: DistInfo) -> float:
    """Expected calibration error of ``softmax(logits / temperature)`` over all ranks' shards."""
    bins = calibration_bins(torch.softmax(logits.double() / temperature, dim=1), labels)
    return ece_from_bins(all_reduce_sum(bins, info))


def calibration_record(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                       info: DistInfo) -> dict[str, float]:
    """``test_metrics.json`` → ``calibration``: the test ECE before and after the temperature."""
    return {"temperature": temperature, "ece": sharded_ece(logits, labels, 1.0, info),
            "ece_calibrated": sharded_ece(logits, labels, temperature, info)}


def calibrate_split(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor, k: int,
                    batch_size: int, device: torch.device, info: DistInfo, bf16: bool = False
                    ) -> dict[str, Any]:
    """Temperature scaling of the best-val model on the validation split (all ranks agree)."""
    val = eval_pass(model, xv, yv, k, batch_size, device, info, bf16, return_logits=True)
    logits, labels = val["logits"], val["labels"]
    n = int(all_reduce_sum(torch.tensor([labels.numel()], dtype=torch.float64), info).item())
    if n < MIN_CALIBRATION_SAMPLES:
        return {"method": "none", "split": "val", "temperature": 1.0,
                "reason": f"{n} validation samples (a fit needs {MIN_CALIBRATION_SAMPLES})"}
    t = fit_temperature(logits, labels, reduce=lambda v: all_reduce_sum(v, info))
    return {"method": "temperature", "split": "val", "temperature": t,
            "val_ece": sharded_ece(logits, labels, 1.0, info),
            "val_ece_calibrated": sharded_ece(logits, labels, t, info)}


@torch.no_grad()
def solver_comparison(model: nn.Module, cfg: TrainConfig, xb: torch.Tensor) -> dict[str, Any]:
    """Residual trace of each solver on one test batch at a tight tolerance (for the plot)."""
    out: dict[str, Any] = {}
    saved = (model.solver_name, dict(model.solver_options))
    for name in ("anderson", "forward"):
        try:
            model.set_solver(name, {"tol": 1e-6, "max_iter": max(cfg.max_iter, 30)})
            model(xb)
            stats = model.solver_stats()["forward"]
            nf, _, res = stat_values(stats)
            trace = mean_trace(stats)
            out[name] = {"nfev": nf, "residual": res,
                         "trace": [float(v) for v in trace] if trace is not None else []}
        except Exception as exc:  # a comparison must never sink the run
            out[name] = {"error": str(exc)}
    model.solver_options = {}
    model.set_solver(*saved)
    return out


