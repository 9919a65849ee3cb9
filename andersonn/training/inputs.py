"""What training takes from a dataset: split tensors, normalisation, class weights, its domain.

Shared by the training loop (:mod:`andersonn.training.trainer`), the loading of finished runs
(:mod:`andersonn.training.runs`) and the speed-up benchmark, so all see a dataset the same way.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.errors import AndersonnError
from andersonn.training.config import TrainConfig
from andersonn.training.distributed import DistInfo, broadcast_object, stop_together

__all__ = [
    "channel_stats",
    "class_weights",
    "feature_domain",
    "fold_of",
    "labelled_dataset_of",
    "load_task_dataset",
    "meta_value",
    "recorded_build_key",
    "run_label_rule",
    "split_tensors",
]

def meta_value(meta: dict[str, Any], *names: str, default: Any = None) -> Any:
    """First of ``names`` present in a dataset's ``meta`` (tolerant of key spelling)."""
    for name in names:
        if name in meta and meta[name] is not None:
            return meta[name]
    return default



def split_tensors(ds: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float32) and labels (int64) of ``split`` of a dataset (anything with
    ``images``, ``labels`` and ``splits``)."""
    from andersonn.data.splits import split_indices

    idx = split_indices(ds.splits, split)
    images = torch.from_numpy(np.ascontiguousarray(np.asarray(ds.images[idx], dtype=np.float32)))
    labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64)[idx].copy())
    return images, labels


def fold_of(ds: Any, train: dict[str, Any]) -> Any:
    """``ds`` seen through the cross-validation fold of a training config (``folds``/``fold``),
    or ``ds`` itself when the config has none."""
    if train.get("folds") is None:
        return ds
    from andersonn.data.folds import FoldView

    return FoldView(ds, int(train["folds"]), int(train["fold"]))


def run_label_rule(meta: dict[str, Any], labels: str | None) -> Any:
    """A dataset's label rule in words as a run given the labels file ``labels`` records it:
    naming that file. Byte-identical labels files share one build, whose own rule names the
    file it was first built from."""
    rule = meta_value(meta, "label_rule", "rule", "label")
    built = meta.get("labels_file")
    if labels is None or not isinstance(rule, str) or not built:
        return rule
    old, new = Path(built).name, Path(labels).name
    return rule.replace(f"{old} column ", f"{new} column ", 1)


def load_task_dataset(cfg: TrainConfig, info: DistInfo | None = None,
                      progress: bool = True, key: str | None = None) -> Any:
    """Load ``cfg.task`` (building it first, on rank 0, when missing or stale), or the
    dataset of ``cfg.labels``. Without ``limit`` the task's latest build is taken (what
    ``andersonn data build`` made last); the run records which (``dataset.cache_key``).
    ``key``: a built-in task's build to take while it is cached (a resumed run's own), before
    the latest or the ``limit`` build.

    Under torchrun every rank opens rank 0's build (by its key, from the cache it sees), so
    all train on the same data; a failure on any rank stops every rank with its message."""
    info = info or DistInfo()
    ds, failure = None, None
    if info.is_main:
        try:
            ds = _load_or_build(cfg, progress, key)
        except AndersonnError as exc:
            failure = exc
    stop_together(failure, info)
    if not info.distributed:
        return ds
    where = broadcast_object([ds.directory.parent.name, ds.directory.name] if ds else None, info)
    if not info.is_main:
        from andersonn.data.build import cached_build, datasets_root

        folder, build = where  # type: ignore[misc]
        ds = cached_build(folder, build)
        if ds is None:
            failure = AndersonnError(
                f"rank {info.rank}: dataset build {build} of {folder} (rank 0's) is not in this "
                f"machine's cache ({datasets_root() / folder / build}): share the cache "
                "(ANDERSONN_CACHE) between the machines, or build it on each first")
    stop_together(failure, info)
    return ds


def _load_or_build(cfg: TrainConfig, progress: bool, key: str | None = None) -> Any:
    from andersonn.data import build_dataset, load_dataset
    from andersonn.data.build import SubsetBuildWarning, cached_build, subset_limit

    if cfg.labels is not None:
        return labelled_dataset_of(cfg.to_dict(), progress=progress, report=True)
    own = cached_build(cfg.task, key) if key is not None else None
    if own is not None:
        return own
    kwargs = {"limit": cfg.limit} if cfg.limit is not None else {}
    try:
        with warnings.catch_warnings():  # said below in the command's own words
            warnings.simplefilter("ignore", SubsetBuildWarning)
            ds = load_dataset(cfg.task, **kwargs)
    except AndersonnError as exc:
        print(f"andersonn: {why_building(exc, cfg.task, cfg.limit)}", file=sys.stderr)
        return build_dataset(cfg.task, limit=cfg.limit, workers=cfg.workers, progress=progress)
    subset = subset_limit(ds.meta)
    if cfg.limit is None and subset is not None:  # the latest is a subset
        print(f"andersonn: training on the latest {cfg.task} build: {len(ds):,} entries "
              f"(--limit {subset}); give --limit to choose another build, or "
              f"`andersonn data build {cfg.task}` for the full set", file=sys.stderr)
    return ds


def why_building(exc: AndersonnError, task: str, limit: int | None) -> str:
    """The line printed before a task's dataset is built (for training, a benchmark), after
    ``load_dataset`` found no usable build (``exc``)."""
    from andersonn.data.build import DatasetUnavailable

    which = f"{task} build{f' (--limit {limit})' if limit is not None else ''}"
    if isinstance(exc, DatasetUnavailable):
        if exc.state == "stale":
            return f"the cached {which} is stale ({exc.detail}): building a current one"
        if exc.state == "incomplete":
            return (f"the cached {which} in {exc.directory} is incomplete or damaged: "
                    "rebuilding it")
        return f"no {which} is cached yet: building it"
    return f"{exc}: building the {which}"


def recorded_build_key(run_dir: str | Path) -> str | None:
    """The key of the built-in task's build a run (its ``config.json``) was trained on; None
    where none is recorded, the file cannot be read, or the run trained on a labels file (which
    finds its build from the file)."""
    try:
        run = json.loads((Path(run_dir) / "config.json").read_text())
        key = None if (run.get("train") or {}).get("labels") else \
            (run.get("dataset") or {}).get("cache_key")
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return key if isinstance(key, str) and key else None


def labelled_dataset_of(train: dict[str, Any], progress: bool = False,
                        report: bool = False, key: str | None = None) -> Any:
    """The (cached) dataset of a training config's labels file (``labels`` etc.); ``report``
    prints one line on what it holds and which rows were skipped. ``key``: the cache key of
    a run's own build, refused when the labels file no longer gives it (see
    :func:`andersonn.data.labelled.build_labelled_dataset`)."""
    from andersonn.data.labelled import build_labelled_dataset, describe_skipped

    ds = build_labelled_dataset(train["labels"], image=train.get("image"),
                                classes=train.get("classes"), bins=train.get("bins"),
                                workers=train.get("workers"), progress=progress, key=key,
                                input_column=train.get("input_column"),
                                label_column=train.get("label_column"))
    if report:
        counts = ", ".join(f"{c}: {n}" for c, n in zip(ds.classes, ds.meta["class_counts"],
                                                        strict=True))
        skipped = ds.report.get("skipped", [])
        where = f"; all in {ds.directory / 'report.json'}" if len(skipped) > 3 else ""
        print(f"andersonn: {train['labels']}: {len(ds)} structures ({counts}) as "
              f"{ds.meta.get('image')} images; {describe_skipped(skipped)}{where}",
              file=sys.stderr)
    return ds


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of images (N, C, ...); a (near-)constant channel gets std 1."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    mean = flat.mean(dim=1)
    std = flat.std(dim=1)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return mean.float(), std.float()


def class_weights(labels: torch.Tensor, k: int, mode: str = "auto") -> torch.Tensor | None:
    """Inverse-frequency class weights when classes are imbalanced (≥ 1.5×), else None."""
    if mode == "none" or labels.numel() == 0:
        return None
    counts = torch.bincount(labels, minlength=k).double().clamp_min(1)
    if counts.max() / counts.min() < 1.5:
        return None
    return (counts.sum() / (k * counts)).float()



def feature_domain(images: Any, rows: Any = None) -> dict[str, Any] | None:
    """Where the training images lie (predict warns about inputs far from them), or None when
    there are too few to tell."""
    from andersonn.data.domain import FeatureDomain

    try:
        return FeatureDomain.fit(images, rows).to_dict()
    except ValueError:
        return None


