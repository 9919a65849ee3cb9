"""The training loop: AdamW + cosine schedule, per-epoch metrics, atomic checkpoints, DDP.

One code path serves one process and ``torchrun --nproc_per_node N``: the global batch
(``batch_size``) is split evenly over ranks with a :class:`DistributedSampler` (so the union of
the ranks' batches is the single-process batch), gradients are averaged by
:class:`DistributedDataParallel`, metrics are all-reduced, and only rank 0 writes files, logs and
the progress bar. Whole splits are held in memory as tensors: per-batch Python overhead is one
index, one forward, one backward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from andersonn import __version__
from andersonn.errors import (
    AndersonnError,
    AndersonnWarning,
    ConfigError,
    ResumeConflict,
    warn_user,
)
from andersonn.fileio import (
    LOCK_NAME,
    TEMP_NAME,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    remove_temp_files,
)
from andersonn.models import build_model, count_parameters, vector_channels_for
from andersonn.training import checkpoint as ckpt
from andersonn.training.config import TrainConfig
from andersonn.training.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    broadcast_object,
    cleanup,
    resolve_device,
    setup,
    stop_together,
)
from andersonn.training.evaluation import (
    bf16_autocast,
    calibrate_split,
    eval_pass,
    report_test_split,
    stat_values,
)
from andersonn.training.inputs import (
    channel_stats,
    class_weights,
    feature_domain,
    fold_of,
    load_task_dataset,
    meta_value,
    recorded_build_key,
    run_label_rule,
    split_tensors,
)
from andersonn.training.warm_start import WarmStarts

__all__ = ["TrainResult", "TrainingInterrupted", "conflict_message", "conflicting_values",
           "epochs_held", "inapplicable_settings", "plural", "resolve_device",
           "resume_conflicts", "settings_conflicts", "train"]

# Fields that define the model/data: a resumed run must agree on them. (lr and weight_decay
# too: the optimizer's state, loaded from the checkpoint, would keep the old ones; and the loss
# the epochs were trained on: a run's config.json describes all of its epochs.)
_RESUME_KEYS = ("task", "model", "hidden", "kernel", "groups", "depth", "match_params",
                "vector_heads", "seed", "batch_size", "limit", "folds", "fold", "lr",
                "weight_decay", "label_smoothing", "class_weights", "grad_clip")
# ... and, for a DEQ, how its fixed point was solved and differentiated in training (eval_tol
# and eval_max_iter may change: they decide only validation, calibration and the test; a change
# is recorded in config.json's "resumes")
_RESUME_SOLVER_KEYS = ("solver", "tol", "max_iter", "solver_options", "backward",
                       "backward_tol", "backward_max_iter", "jac_reg", "jac_samples",
                       "warm_start")
# settings a resume may change without it being worth a record in config.json's "resumes"
_UNRECORDED = ("threads", "workers", "device", "plots")
# what a folder holding a run (or the start of one) holds
_RUN_FILES = ("config.json", ckpt.POINTER, "checkpoints", "metrics.jsonl", "model.safetensors")
# What a finished run's config.json gains at the end of training: kept while a resume that
# extends it runs, so the file describes model.safetensors until the new one replaces it.
# "finished" ({epoch, epochs, stopped, test}; null until the final stage is done) comes with the
# last file the final stage writes, so it marks a run whose final stage completed
_FINAL_KEYS = ("calibration", "best_epoch", "best_val_acc", "finished")
# ... and on the data it was trained on (from the run's config.json)
_RESUME_DATA_KEYS = ("featurizer_version", "image_spec", "classes", "label_rule", "thresholds")


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``: a count and its noun, plural unless the count is 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def epochs_held(epoch: int) -> str:
    """``epoch 1`` or ``epochs 1–N``: the finished epochs of a run (``epoch`` >= 1)."""
    return "epoch 1" if epoch == 1 else f"epochs 1–{epoch}"


def _stopped_after(epoch: int, epochs: int, reason: str) -> str:
    """``stopped after epoch 3 of 8 (patience)``: an early stop, as said and returned."""
    return f"stopped after epoch {epoch} of {epochs} ({reason})"


def _say_stopped(info: DistInfo, why: str, epoch: int, epochs: int, reason: str) -> None:
    """Say an early stop on stderr (rank 0; an outcome, not progress: also without it)."""
    if info.is_main:
        print(f"andersonn: {why}; {_stopped_after(epoch, epochs, reason)}", file=sys.stderr)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``run_dir`` holds the checkpoint of ``epoch`` (0: none yet) of
    ``epochs``, from which ``--resume`` continues."""

    def __init__(self, run_dir: Path, epoch: int, epochs: int) -> None:
        held = "no finished epoch" if epoch == 0 else epochs_held(epoch)
        super().__init__(f"interrupted: {run_dir} holds {held} of {epochs}")
        self.run_dir, self.epoch, self.epochs = run_dir, epoch, epochs


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any] | None
    run_config: dict[str, Any]

    @property
    def stopped(self) -> str | None:
        """``stopped after epoch 3 of 8 (max_time_s)`` (or ``patience``) when training ended
        before its planned epochs, else None."""
        done = self.run_config.get("finished") or {}
        if not done.get("stopped"):
            return None
        return _stopped_after(done["epoch"], done["epochs"], done["stopped"])


def _set_threads(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


def _build(cfg: TrainConfig, shape: Sequence[int], k: int,
           channels: Sequence[str] | None = None) -> nn.Module:
    c, h, w = (int(v) for v in shape)
    common = {"in_channels": c, "height": h, "width": w, "num_classes": k, "kernel": cfg.kernel,
              "groups": cfg.groups}
    vector = vector_channels_for(channels) if cfg.vector_heads else []
    if vector:
        common.update(vector_channels=vector, vector_heads=cfg.vector_heads)
    if cfg.model == "deq":
        return build_model("deq", hidden=cfg.hidden, solver=cfg.solver,
                           solver_options=cfg.forward_options(), backward=cfg.backward,
                           backward_options=cfg.backward_options(), **common)
    match = None
    if cfg.match_params:
        probe = build_model("deq", hidden=cfg.hidden, solver=cfg.solver,
                            solver_options=cfg.forward_options(), **common)
        match = count_parameters(probe)
    return build_model("explicit", hidden=cfg.hidden, depth=cfg.depth, match_params=match,
                       **common)


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _sources(cfg: TrainConfig, meta: dict[str, Any]) -> Any:
    """The dataset's sources; for a labels file, the path this run was given (a build is
    shared by byte-identical files, and its own record names the first one built)."""
    sources = meta_value(meta, "sources")
    if cfg.labels is None or not isinstance(sources, dict) or \
            not isinstance(sources.get("labels"), dict):
        return sources
    return {**sources, "labels": {**sources["labels"], "file": os.path.abspath(cfg.labels)}}


def _run_config(cfg: TrainConfig, model: nn.Module, ds: Any, classes: list[str],
                mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor | None,
                info: DistInfo) -> dict[str, Any]:
    meta = dict(getattr(ds, "meta", {}) or {})
    return {
        "task": meta_value(meta, "task", default=cfg.task),
        "classes": classes,
        "label_rule": run_label_rule(meta, cfg.labels),
        "thresholds": meta_value(meta, "thresholds"),
        "featurizer_version": meta_value(meta, "featurizer_version", "featurizer"),
        "image_spec": meta_value(meta, "image_spec", "spec"),
        "domain": meta_value(meta, "domain"),  # what predict checks inputs against
        "image_shape": [model.in_channels, model.height, model.width],
        "model": model.hparams,
        "params": count_parameters(model),
        "solver": {"name": cfg.solver if cfg.model == "deq" else None,
                   "train": cfg.forward_options() if cfg.model == "deq" else None,
                   "eval": cfg.forward_options(evaluation=True) if cfg.model == "deq" else None,
                   "backward": cfg.backward if cfg.model == "deq" else None},
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "class_weights": weight.tolist() if weight is not None else None,
        "train": cfg.to_dict(),
        # the build itself (a task's latest build is taken when no limit is given): evaluate
        # and calibrate reopen it by its key
        "dataset": {"n": len(ds.labels), "sources": _sources(cfg, meta),
                    "cache_key": meta_value(meta, "cache_key", "key"),
                    **({"limit": meta.get("limit")} if cfg.labels is None else {})},
        "world_size": info.world_size,
        "andersonn_version": __version__,
        "torch_version": torch.__version__,
        "finished": None,  # the final stage's record, once it is done
    }


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that is a file, or a cross-validation's directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file; give a folder for the run")
    from andersonn.crossval import is_cross_validation

    if is_cross_validation(run_dir):
        raise ConfigError(f"{run_dir} holds a cross-validation (fold-1 … fold-K); give --folds "
                          "K to continue it, or another folder for a single run")


def _checkpoint_train(folder: Path) -> dict[str, Any]:
    """The train config stored with a checkpoint (``{}`` when it cannot be read: the full
    load that follows reports a damaged checkpoint)."""
    try:
        return dict(json.loads((folder / "state.json").read_text()).get("config") or {})
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _final_fields(run_dir: Path) -> dict[str, Any]:
    """The final fields of a finished run's ``config.json`` (none for an unfinished run)."""
    if not (run_dir / "model.safetensors").is_file():
        return {}
    try:
        old = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {key: old[key] for key in _FINAL_KEYS if isinstance(old, dict) and key in old}


def _dropped_calibration(run_dir: Path) -> str | None:
    """The note of a resume that drops the temperature of an unfinished run (one fitted by
    ``andersonn calibrate`` to the checkpoint's best weights so far, which further training
    may replace); None where there is none to drop (a finished run keeps its final fields)."""
    if (run_dir / "model.safetensors").is_file():
        return None
    try:
        record = json.loads((run_dir / "config.json").read_text()).get("calibration")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(record, dict) or record.get("method") != "temperature":
        return None  # none fitted (T = 1): nothing changes
    try:
        shown = f" {float(record['temperature']):.4g}"
    except (KeyError, TypeError, ValueError):
        shown = ""
    return (f"{run_dir}: its probability temperature{shown} is dropped: it was fitted to the "
            "best weights so far, which further training may replace; the run is calibrated "
            "again when it finishes (stopped before that, refit it with `"
            f"{shlex.join(['andersonn', 'calibrate', str(run_dir)])}`)")


def _check_splits(task: str, ds: Any, cfg: TrainConfig) -> None:
    """Refuse a dataset whose train or val split is empty, naming the split, the build and
    what gives a larger one."""
    from andersonn.data.splits import SPLIT_NAMES

    codes = np.asarray(ds.splits)
    sizes = {name: int((codes == code).sum()) for code, name in enumerate(SPLIT_NAMES)}
    empty = [name for name in ("train", "val") if sizes[name] == 0]
    if not empty:
        return
    meta = dict(getattr(ds, "meta", {}) or {})
    key = meta_value(meta, "cache_key", "key")
    if cfg.labels is not None:
        build, remedy = f"built from {cfg.labels}", f"add structures to {cfg.labels}"
    elif key:
        limit = meta.get("limit")
        build = f"build {key}{f', --limit {limit}' if limit else ''}"
        remedy = "train on a larger build (raise --limit)"
    else:
        build, remedy = "as given", "give a dataset with more structures"
    counts = ", ".join(f"{n} {name}" for name, n in sizes.items())
    raise AndersonnError(f"too few structures to train on in dataset {task!r} ({build}): its "
                         f"{' and '.join(empty)} "
                         f"{'split is' if len(empty) == 1 else 'splits are'} empty ({counts}); "
                         f"{remedy}")


def _check_classes(task: str, ytr: torch.Tensor, classes: list[str]) -> None:
    """Refuse a dataset whose train split lacks a class, or that has fewer than two."""
    counts = torch.bincount(ytr, minlength=len(classes)).tolist()
    missing = [f"{c} (0)" for c, n in zip(classes, counts, strict=False) if n == 0]
    if len(classes) < 2 or missing:
        what = (f"class {', '.join(missing)} in its train split" if len(classes) >= 2
                else f"only class {', '.join(classes) or 'none'}")
        raise AndersonnError(f"too few structures to train on in dataset {task!r}: "
                             f"{what}; a classifier needs at least two classes, each in the "
                             "train split")


def _rank_batch(batch: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of a global batch of sample indices (its r-th, r+W-th, ... entry) and
    which of them count (all but the padding: a rank short of the others in an epoch's last
    batch repeats a sample, so that every rank computes a batch of the same size)."""
    if not info.distributed:
        return batch, torch.ones(batch.numel(), dtype=torch.bool)
    local = batch[info.rank::info.world_size]
    size = -(-batch.numel() // info.world_size)
    keep = torch.zeros(size, dtype=torch.bool)
    keep[:local.numel()] = True
    if local.numel() < size:
        fill = local[:1] if local.numel() else batch[:1]
        local = torch.cat([local, fill.expand(size - local.numel())])
    return local, keep


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
          dataset: Any = None, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.task`` (or ``dataset``); see docs/training.md."""
    cfg.validate()
    info = setup(cfg.torch_device())
    # the caller's torch threads and random state are theirs: training sets and seeds its own
    # (so a run repeats bit for bit) and hands both back as it found them
    threads = torch.get_num_threads()
    device = cfg.torch_device(info)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                contextlib.ExitStack() as held:
            return _train(cfg, out_dir, resume, dataset, progress, on_epoch, info, held)
    finally:
        torch.set_num_threads(threads)
        cleanup(info)


# settings of one model only: a run of the other model is neither refused nor recorded over them
_EXPLICIT_ONLY = ("depth", "match_params")


def inapplicable_settings(model: str) -> tuple[str, ...]:
    """The settings that change nothing for ``model`` (``deq`` or ``explicit``): the explicit
    network's depth and width matching for a DEQ, the fixed-point solve for the explicit one."""
    if model == "deq":
        return _EXPLICIT_ONLY
    return (*_RESUME_SOLVER_KEYS, "eval_tol", "eval_max_iter")


def _as_json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), for comparisons."""
    return json.loads(json.dumps(value))


def conflicting_values(old_train: dict[str, Any], cfg: TrainConfig
                       ) -> dict[str, tuple[Any, Any]]:
    """The settings in which a run's train config ``old_train`` differs from ``cfg`` so that
    the run cannot be continued with ``cfg`` (the model, its data, the optimizer, the loss,
    and a DEQ's training solve), each with its old and new value."""
    model = old_train.get("model", "deq")
    keys = _RESUME_KEYS + (_RESUME_SOLVER_KEYS if model == "deq" else ())
    ignored = inapplicable_settings(model) if cfg.model == model else ()
    new = cfg.to_dict()
    # compared as JSON (tuples vs lists, ints vs floats of one value)
    return {key: (old_train[key], new[key]) for key in keys
            if key in old_train and key in new and key not in ignored
            and _as_json(old_train[key]) != _as_json(new[key])}


def settings_conflicts(old_train: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Names of the settings in which a run's train config ``old_train`` differs from ``cfg``
    so that the run cannot be continued with ``cfg`` (see :func:`conflicting_values`)."""
    return list(conflicting_values(old_train, cfg))


def _shown(value: Any) -> str:
    """A setting's value in a message: compact JSON, long ones cut short."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 40 else text[:37] + "..."


def conflict_message(run_dir: str | Path, diff: dict[str, tuple[Any, Any]]) -> str:
    """The one-line refusal of a resume whose settings differ: ``cannot resume R: it was
    trained with different lr (0.001 there, 0.002 now)``; a fold of a cross-validation resumed
    as a single run is told how to resume it as a fold."""
    run_dir = Path(run_dir)
    folds, fold = diff.get("folds", (None, None))[0], diff.get("fold", (None, None))[0]
    if isinstance(folds, int) and isinstance(fold, int) and diff["folds"][1] is None:
        return (f"{run_dir} is fold {fold} of a {folds}-fold cross-validation: resume it with "
                f"--out {run_dir.parent} --folds {folds} --fold {fold} --resume")
    values = [f"{_shown(old)} there, {_shown(new)} now" for old, new in diff.values()]
    detail = values[0] if len(diff) == 1 else "; ".join(
        f"{key} {text}" for key, text in zip(diff, values, strict=True))
    return f"cannot resume {run_dir}: it was trained with different {', '.join(diff)} ({detail})"


def _resume_record(old_train: dict[str, Any], cfg: TrainConfig, epoch: int,
                   run_dir: Path, world_sizes: tuple[int | None, int] = (None, 1)
                   ) -> list[dict[str, Any]]:
    """config.json's ``resumes``: those of the run so far, plus this one (after ``epoch``)
    with the settings it changes (``{key: [old, new]}``; none, no record), the number of
    processes too (``world_sizes``: the run's so far, None where unknown, and this one's)."""
    try:
        earlier = list(json.loads((run_dir / "config.json").read_text()).get("resumes") or [])
    except (OSError, ValueError, AttributeError, TypeError):
        earlier = []
    new = _as_json(cfg.to_dict())
    skip = (*_UNRECORDED, *inapplicable_settings(cfg.model))
    changed = {key: [old_train[key], new[key]] for key in sorted(new)
               if key in old_train and key not in skip and old_train[key] != new[key]}
    if world_sizes[0] is not None and world_sizes[0] != world_sizes[1]:
        changed["world_size"] = list(world_sizes)
    return earlier + ([{"after_epoch": epoch, "changed": changed}] if changed else [])


def _trained_world_size(history: list[dict[str, Any]], run_dir: Path) -> int | None:
    """The number of processes the run's last finished epoch ran on: its record's (runs
    trained before it was recorded: config.json's), None where unknown."""
    value = history[-1].get("world_size") if history else None
    if value is None:
        try:
            value = json.loads((run_dir / "config.json").read_text()).get("world_size")
        except (OSError, ValueError, AttributeError):
            return None
    return value if isinstance(value, int) and value >= 1 else None


def _processes(count: int) -> str:
    return f"{count} process{'' if count == 1 else 'es'}"


def _world_size_note(run_dir: Path, epoch: int, before: int, now: int, batch_size: int) -> str:
    """The note of a resume on another number of processes than the run's last epoch ran on:
    the global batch (``batch_size``) and data order stay, the per-process batch and the
    order of the sums do not."""
    return (f"{run_dir}: {epochs_held(epoch)} ran on {_processes(before)}, this resume on "
            f"{now}: the global batch stays {batch_size} ({batch_size // now} per process) and "
            "the data order too, but sums run in another order: the run will not repeat an "
            "uninterrupted one bit for bit")


def resume_conflicts(run_dir: str | Path, old_train: dict[str, Any], cfg: TrainConfig,
                     run_config: dict[str, Any]) -> list[str]:
    """Names of the settings and data properties in which the run in ``run_dir`` (its
    checkpoint's train config ``old_train`` and its ``config.json``) differs from ``cfg`` and the
    run config about to be written; empty when it can be resumed."""
    return list(_resume_conflict_values(run_dir, old_train, cfg, run_config))


def _resume_conflict_values(run_dir: str | Path, old_train: dict[str, Any], cfg: TrainConfig,
                            run_config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`resume_conflicts`, each with its old and new value."""
    diff = conflicting_values(old_train, cfg)
    try:
        old_run = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return diff
    # compared as JSON (tuples vs lists); keys an older config.json lacks are not compared
    for key in _RESUME_DATA_KEYS:
        if key in old_run and old_run[key] != _as_json(run_config.get(key)):
            diff[key] = (old_run[key], run_config.get(key))
    old_data, new_data = old_run.get("dataset") or {}, run_config.get("dataset") or {}
    for key in ("n", "cache_key"):
        if old_data.get(key) is not None and new_data.get(key) is not None \
                and old_data[key] != new_data[key]:
            diff[f"dataset {key}"] = (old_data[key], new_data[key])
    return diff


def _holds_run_files(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in _RUN_FILES)


def _preflight(cfg: TrainConfig, run_dir: Path, resume: bool) -> Path | None:
    """Rank 0's checks of the run directory, before any data is loaded (or built); returns the
    checkpoint to resume from (None: a new run). Removes the temporary files of atomic writes
    that a killed process left in the run. Called with the run's lock held."""
    pointer, weights = (run_dir / ckpt.POINTER).exists(), (run_dir / "model.safetensors").exists()
    if weights and not pointer:
        # a finished run whose checkpoints are gone (a shipped or copied run): nothing to
        # continue from, and a new run would overwrite it
        # (with --resume a ResumeConflict: the demo sets such a folder aside)
        raise (ResumeConflict if resume else AndersonnError)(
            f"{run_dir} already holds a run (model.safetensors"
            f"{', config.json' if (run_dir / 'config.json').exists() else ''}) "
            f"with no checkpoint to {'continue' if resume else 'resume'} from "
            f"({ckpt.POINTER}); choose another --out for a new run")
    if not resume and (pointer or (run_dir / "config.json").exists()):
        raise AndersonnError(f"{run_dir} already holds a run; pass --resume to continue it or "
                             "choose another --out")
    folder = ckpt.latest_checkpoint(run_dir) if resume else None
    if resume and folder is None and run_dir.is_dir() and not _holds_run_files(run_dir) \
            and any(p for p in run_dir.iterdir()
                    if not TEMP_NAME.match(p.name) and p.name != LOCK_NAME):
        # the runs/ folder above a run, a run's plots/: --resume would train a new run in it
        raise ConfigError(f"cannot resume {run_dir}: it holds no run (no {ckpt.POINTER} or "
                          "config.json) but other files; give the run's own folder, or an "
                          "empty or new one to start a run")
    if folder is not None:
        early = conflicting_values(_checkpoint_train(folder), cfg)
        if early:
            raise ResumeConflict(conflict_message(run_dir, early))
        held = ckpt.checkpoint_epoch(run_dir)
        if held is not None and cfg.epochs < held:
            raise ConfigError(f"{run_dir} already holds {plural(held, 'epoch')}; --epochs must "
                              f"be at least {held}")
    if _holds_run_files(run_dir):
        for sub in (run_dir, run_dir / "checkpoints", run_dir / "plots"):
            remove_temp_files(sub, recursive=sub.name == "checkpoints")
    return folder


def _train(cfg: TrainConfig, out_dir: str | Path | None, resume: bool, dataset: Any,
           progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None,
           info: DistInfo, held: contextlib.ExitStack) -> TrainResult:
    device = cfg.torch_device(info)
    _set_threads(cfg)
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / f"{cfg.task}-{cfg.model}"
    # rank 0 checks the run directory (every rank stops with its message when it refuses) and
    # names the checkpoint every rank resumes from
    folder, failure = None, None
    if info.is_main:
        try:
            _check_run_dir(run_dir)
            # one trainer per run folder (held until train returns): a second one would
            # interleave its checkpoints and metrics with the first's
            held.enter_context(folder_lock(run_dir, "another training"))
            folder = _preflight(cfg, run_dir, resume)
        except (AndersonnError, OSError) as exc:
            failure = exc
    stop_together(failure, info)
    where = broadcast_object(str(folder) if folder is not None else None, info)
    folder = Path(where) if isinstance(where, str) else None

    key = recorded_build_key(run_dir) if folder is not None and dataset is None else None
    ds = fold_of(dataset if dataset is not None else load_task_dataset(cfg, info, progress, key),
                 cfg.to_dict())
    classes = [str(c) for c in (getattr(ds, "classes", None) or [])]
    k = len(classes) if classes else int(np.max(ds.labels)) + 1
    classes = classes or [str(i) for i in range(k)]
    task = meta_value(dict(getattr(ds, "meta", {}) or {}), "task", default=cfg.task)
    _check_splits(task, ds, cfg)
    xtr, ytr = split_tensors(ds, "train")
    xva, yva = split_tensors(ds, "val")
    _check_classes(task, ytr, classes)
    mean, std = channel_stats(xtr)
    weight = class_weights(ytr, k, cfg.class_weights)

    torch.manual_seed(cfg.seed)
    spec = meta_value(dict(getattr(ds, "meta", {}) or {}), "image_spec", "spec") or {}
    model = _build(cfg, xtr.shape[1:], k, spec.get("channels") if isinstance(spec, dict) else None)
    if cfg.jac_reg > 0:
        model.set_jacobian_regularization(cfg.jac_samples)
    model.set_normalization(mean, std)
    model.to(device)
    run_config = _run_config(cfg, model, ds, classes, mean, std, weight, info)
    run_config["feature_domain"] = feature_domain(xtr)
    wdev = weight.to(device) if weight is not None else None

    if info.world_size > 1 and cfg.batch_size % info.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the world size "
                          f"{info.world_size}")
    # the global data order of an epoch is one process's (DistributedSampler's shuffle, seed +
    # epoch); each step's global batch is dealt over the ranks (rank r: its r-th, r+W-th, ...
    # sample), and a rank short of the others in the last batch is padded with copies that
    # count for nothing (loss, gradient and metrics are those of one process)
    sampler = DistributedSampler(range(xtr.shape[0]), num_replicas=1, rank=0, shuffle=True,
                                 seed=cfg.seed)
    steps_per_epoch = math.ceil(xtr.shape[0] / cfg.batch_size)
    wtr = (weight[ytr] if weight is not None else torch.ones(ytr.shape[0])).double()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or "norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch))

    warm = None
    if cfg.warm_start and cfg.model == "deq":
        warm = WarmStarts(xtr.shape[0], (model.hidden, model.height, model.width), info)
        if info.is_main and progress:
            print(f"andersonn: warm starts: {warm.nbytes / 2**20:.0f} MiB of fixed points kept "
                  "in memory", file=sys.stderr)

    history: list[dict[str, Any]] = []
    start_epoch, best_val, best_epoch, wall_total = 0, -1.0, 0, 0.0
    best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
    if folder is not None:
        saved, failure = None, None
        try:
            saved = ckpt.load_checkpoint(folder)
            diff = _resume_conflict_values(run_dir, saved["state"].get("config", {}), cfg,
                                           run_config)
            if diff:
                raise ResumeConflict(conflict_message(run_dir, diff))
        except (AndersonnError, OSError) as exc:  # a rank that cannot read the checkpoint
            failure = exc
        stop_together(failure, info)
        assert saved is not None
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        best_state = {k_: v.to(device) for k_, v in saved["best"].items()}
        st = saved["state"]
        start_epoch, best_val = int(st["epoch"]), float(st["best_val"])
        best_epoch, wall_total = int(st["best_epoch"]), float(st["wall_time_s"])
        history = list(st["history"])
        if warm is not None and saved["warm_states"] is not None \
                and saved["warm_states"].shape == warm.table.shape:
            warm.table.copy_(saved["warm_states"])
        before = _trained_world_size(history, run_dir)
        run_config["resumes"] = _resume_record(st.get("config", {}), cfg, start_epoch, run_dir,
                                               (before, info.world_size))
        if not run_config["resumes"]:
            del run_config["resumes"]
        if info.is_main and progress:
            print(f"andersonn: resuming {run_dir} after epoch {start_epoch}", file=sys.stderr)
        if info.is_main and before is not None and before != info.world_size:
            note = _world_size_note(run_dir, start_epoch, before, info.world_size,
                                    cfg.batch_size)
            print(f"andersonn: note: {note}", file=sys.stderr)
        if cfg.epochs > int(st.get("config", {}).get("epochs", cfg.epochs)):
            # training extended: re-plan the cosine schedule over the new total
            scheduler.lr_lambdas[0] = _lr_lambda(cfg.epochs * steps_per_epoch,
                                                 cfg.warmup_epochs * steps_per_epoch)
    elif resume and info.is_main and progress:
        print(f"andersonn: no checkpoint in {run_dir}; starting a new run", file=sys.stderr)
    failure = None
    if info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            dropped = _dropped_calibration(run_dir) if folder is not None else None
            atomic_write_json(run_dir / "config.json", {**run_config, **_final_fields(run_dir)}
                              if folder is not None else run_config)
            if dropped is not None:
                warn_user(dropped, AndersonnWarning)
        except (AndersonnError, OSError) as exc:
            failure = exc
    stop_together(failure, info)

    net: nn.Module = model
    if info.distributed:
        with warnings.catch_warnings():  # buffers are identical on every rank: no sync needed
            warnings.simplefilter("ignore", FutureWarning)
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)

    show = progress and info.is_main
    bars: list[Any] = []  # the epoch's progress bar, closed before a Ctrl-C is reported
    saved_epoch = start_epoch
    stopped = None  # why training ended before its planned epochs: "patience", "max_time_s"
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            # checked before the epoch, so resuming a run that stopped early does not train on
            if cfg.patience is not None and epoch - 1 - best_epoch >= cfg.patience:
                stopped = "patience"
                _say_stopped(info, "no validation improvement for "
                             f"{plural(epoch - 1 - best_epoch, 'epoch')} (best: epoch "
                             f"{best_epoch})", epoch - 1, cfg.epochs, stopped)
                break
            # the training time so far (wall_time_s, over every epoch of the run, resumed or
            # not) against max_time_s, checked before the epoch as patience is: a resumed run
            # that stopped for time stays stopped unless max_time_s grows. Rank 0's clock
            # decides, so that every rank stops after the same epoch
            if broadcast_object(cfg.max_time_s is not None and wall_total >= cfg.max_time_s,
                                info):
                stopped = "max_time_s"
                _say_stopped(info, f"time limit reached ({wall_total:.1f} s of training, "
                             f"max_time_s {cfg.max_time_s:g})", epoch - 1, cfg.epochs, stopped)
                break
            sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(sampler)), dtype=torch.long)
            model.train()
            sums = torch.zeros(7, dtype=torch.float64)
            # loss, correct, n, fwd_nfev*n, bwd_nfev*n, fwd_res*n, jacobian penalty*n
            # each step's forward and backward nfev maximum: over all ranks' parts of the step's
            # global batch (an all-reduce MAX, apart from the sums)
            step_max = torch.zeros(steps_per_epoch, 2, dtype=torch.float64)
            bar = None
            if show:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                           leave=False, dynamic_ncols=True, file=sys.stderr)
                bars[:] = [bar]
            t0 = time.perf_counter()
            for step in range(steps_per_epoch):
                glob = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                b, keep = _rank_batch(glob, info)
                # the global batch's weight sum: one process's cross-entropy mean, whose
                # gradient DDP's average over ranks then equals (hence the world-size factor)
                denom = float(wtr[glob].sum())
                xb, yb = xtr[b].to(device, non_blocking=True), ytr[b].to(device, non_blocking=True)
                with bf16_autocast(cfg.bf16, device):
                    logits = net(xb) if warm is None else warm.forward(net, model, xb, b)
                per_sample = F.cross_entropy(logits.float(), yb, weight=wdev, reduction="none",
                                             label_smoothing=cfg.label_smoothing)
                mask = keep.to(device=device, dtype=per_sample.dtype)
                local_sum = (per_sample * mask).sum()
                loss = local_sum * (info.world_size / denom)
                fwd_stats = model.solver_stats()["forward"]
                jac = model.jacobian_loss() if cfg.jac_reg > 0 else None
                optimizer.zero_grad(set_to_none=True)
                (loss if jac is None else loss + cfg.jac_reg * jac).backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                n = int(keep.sum())
                n_glob = glob.numel()
                nf, nfmax, res = stat_values(fwd_stats)
                bf, bfmax, _ = stat_values(model.solver_stats()["backward"])
                # this rank's share of the global batch's mean loss (summed over ranks below)
                lval = float(local_sum.detach()) / denom
                finite = torch.tensor([0.0 if math.isfinite(lval) else 1.0], dtype=torch.float64)
                if info.distributed:  # every rank stops at the same step
                    all_reduce_sum(finite, info)
                if finite.item():
                    what = lval if not math.isfinite(lval) else "not finite on another rank"
                    raise AndersonnError(f"training diverged at epoch {epoch} step {step} (loss "
                                         f"{what}); try a smaller --lr or a tighter solver tol")
                correct = float(((logits.detach().argmax(1) == yb) & keep.to(device)).sum())
                sums += torch.tensor([lval * n_glob, correct, n, nf * n, bf * n, res * n,
                                      float(jac.detach()) * n if jac is not None else 0.0],
                                     dtype=torch.float64)
                step_max[step] = torch.tensor([nfmax, bfmax], dtype=torch.float64)
                if bar is not None:
                    bar.update(1)
                    if step % 5 == 0 or step == steps_per_epoch - 1:
                        seen = max(sums[2].item(), 1.0)
                        bar.set_postfix(loss=f"{sums[0] / seen:.3f}", acc=f"{sums[1] / seen:.3f}",
                                        it=f"{sums[3] / seen:.1f}", refresh=False)
            train_time = time.perf_counter() - t0
            if bar is not None:
                bar.close()
                bars.clear()
            all_reduce_sum(sums, info)
            all_reduce_max(step_max, info)
            t1 = time.perf_counter()
            if cfg.model == "deq":
                model.set_solver(cfg.solver, cfg.forward_options(evaluation=True))
            val = eval_pass(model, xva, yva, k, cfg.eval_batch_size, device, info, cfg.bf16, wdev)
            if cfg.model == "deq":
                model.set_solver(cfg.solver, cfg.forward_options())
            val_time = time.perf_counter() - t1
            epoch_time = time.perf_counter() - t0
            wall_total += epoch_time
            n_all = max(sums[2].item(), 1.0)
            max_means = (step_max.sum(dim=0) / max(steps_per_epoch, 1)).tolist()
            improved = val["accuracy"] > best_val + 1e-12
            if improved:
                best_val, best_epoch = val["accuracy"], epoch
                best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
            record = {
                "epoch": epoch, "train_loss": sums[0].item() / n_all,
                "train_acc": sums[1].item() / n_all, "val_loss": val["loss"],
                "val_acc": val["accuracy"], "val_balanced_acc": val["balanced_accuracy"],
                "val_macro_f1": val["macro_f1"], "lr": optimizer.param_groups[0]["lr"],
                "train_time_s": train_time, "val_time_s": val_time, "epoch_time_s": epoch_time,
                "wall_time_s": wall_total, "fwd_nfev": sums[3].item() / n_all,
                "fwd_nfev_max": max_means[0], "bwd_nfev": sums[4].item() / n_all,
                "bwd_nfev_max": max_means[1], "fwd_residual": sums[5].item() / n_all,
                "jac_loss": sums[6].item() / n_all,
                "val_fwd_nfev": val["fwd_nfev"], "samples_per_s": n_all / max(train_time, 1e-9),
                "best": improved, "world_size": info.world_size,
            }
            history.append(record)
            failure = None
            if info.is_main:
                try:
                    state = {"best_val": best_val, "best_epoch": best_epoch,
                             "wall_time_s": wall_total, "history": history,
                             "config": cfg.to_dict()}
                    ckpt.save_checkpoint(run_dir, epoch, model_state=model.state_dict(),
                                         best_state=best_state, optimizer=optimizer.state_dict(),
                                         scheduler=scheduler.state_dict(), state=state,
                                         warm_states=warm.table if warm is not None else None)
                    saved_epoch = epoch
                    _write_jsonl(run_dir / "metrics.jsonl", history)
                    if progress:
                        print(f"epoch {epoch}/{cfg.epochs}  loss {record['train_loss']:.4f}  "
                              f"acc {record['train_acc']:.4f}  val_acc {record['val_acc']:.4f}  "
                              f"val_bal {record['val_balanced_acc']:.4f}  "
                              f"fwd_it {record['fwd_nfev']:.1f}  bwd_it {record['bwd_nfev']:.1f}"
                              f"  {epoch_time:.1f}s{'  *' if improved else ''}", file=sys.stderr)
                    if on_epoch is not None:
                        on_epoch(record)
                except (AndersonnError, OSError) as exc:  # a full disk, a failing callback
                    failure = exc
            stop_together(failure, info)  # (every rank waits for rank 0's checkpoint here)
            saved_epoch = epoch

        # -- final: best-val weights, test metrics, plots -------------------------------------
        model.load_state_dict(best_state)
        model.eval()
        if cfg.model == "deq":
            model.set_solver(cfg.solver, cfg.forward_options(evaluation=True))
        # the validation split is never empty here (checked above)
        calibration = calibrate_split(model, xva, yva, k, cfg.eval_batch_size, device, info,
                                      cfg.bf16)
        temperature = calibration["temperature"]
        run_config["calibration"] = calibration  # every rank's result carries it
        test_metrics = None
        if cfg.evaluate_test:
            xte, yte = split_tensors(ds, "test")
            if xte.shape[0]:
                test_metrics = report_test_split(model, cfg, xte, yte, k, classes, device, info,
                                                  wdev, best_epoch, best_val, history,
                                                  temperature)
        run_config["best_epoch"], run_config["best_val_acc"] = best_epoch, best_val
        run_config["finished"] = {"epoch": saved_epoch,
                                  "epochs": cfg.epochs, "stopped": stopped,
                                  "test": test_metrics is not None}
        failure = None
        if info.is_main:
            try:
                if test_metrics is not None:
                    atomic_write_json(run_dir / "test_metrics.json", test_metrics)
                if cfg.plots:
                    _plots(run_dir, history, test_metrics, classes, cfg)
                # last, back to back: the weights and the config that describes them (its
                # calibration); config.json's "finished" marks a complete run (a process killed
                # before this is resumed into the final stage: crossval._finished)
                ckpt.save_weights(run_dir / "model.safetensors", model.state_dict(),
                                  metadata={"format": "andersonn",
                                            "task": str(run_config["task"])})
                atomic_write_json(run_dir / "config.json", run_config)
            except (AndersonnError, OSError) as exc:
                failure = exc
        stop_together(failure, info)
    except KeyboardInterrupt:
        for bar in bars:  # the message goes on a line of its own
            bar.close()
        raise TrainingInterrupted(run_dir, saved_epoch, cfg.epochs) from None
    return TrainResult(run_dir, model, cfg, history, test_metrics, run_config)


def _plots(run_dir: Path, history: list[dict[str, Any]], test: dict[str, Any] | None,
           classes: list[str], cfg: TrainConfig) -> None:
    from andersonn.training import plots

    pdir = run_dir / "plots"
    try:
        if history:
            plots.plot_learning_curves(history, pdir / "learning_curves.png",
                                       title=f"{cfg.task} · {cfg.model}"
                                       f"{f' · {cfg.solver}' if cfg.model == 'deq' else ''}")
        if test is not None:
            plots.plot_confusion(test["confusion_matrix"], classes, pdir / "confusion_matrix.png")
            traces = {}
            comp = test["solver"].get("comparison") or {}
            for name, item in comp.items():
                if item.get("trace"):
                    traces[f"{name} (tol 1e-6)"] = item["trace"]
            if test["solver"].get("residual_trace"):
                traces[f"{cfg.solver} (eval, test mean)"] = test["solver"]["residual_trace"]
            if traces:
                plots.plot_residuals(traces, pdir / "residuals.png")
    except Exception as exc:  # plots are a by-product; never lose a finished run over them
        print(f"andersonn: warning: plotting failed: {exc}", file=sys.stderr)
