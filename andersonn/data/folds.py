"""Stratified k-fold splits for cross-validation, and a dataset seen through one fold.

:func:`stratified_folds` deals every structure into one of ``k`` folds, class by class, so each
fold holds about a k-th of every class. Fold ``i`` (1-based) of a cross-validation tests on the
structures of fold ``i``; of the rest, about a tenth of the whole dataset (stratified) validates
(early stopping and the temperature) and the others train (:func:`fold_split`). Every structure
is tested exactly once over the k folds, so the pooled out-of-fold predictions score the model on
the whole dataset instead of one 10 % test split. Like :mod:`andersonn.data.splits` the result
depends only on the labels, ``k``, the fold and the seed (numpy ``PCG64``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from andersonn.data.splits import split_indices
from andersonn.errors import ConfigError

__all__ = ["VAL_FRACTION", "FoldView", "fold_split", "stratified_folds"]

VAL_FRACTION = 0.1
"""Share of the whole dataset (per class) that validates in each fold, as in the 80/10/10 split."""


def stratified_folds(labels: Sequence[int] | np.ndarray, folds: int, seed: int = 0, *,
                     classes: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0 … ``folds`` − 1) of every item; each class is dealt round-robin in a seeded
    random order, continuing where the previous class stopped so the folds' sizes differ by at
    most one. ``classes``: the class names (by label index), for the refusal of too small a
    class."""
    y = np.asarray(labels, dtype=np.int64)
    if int(folds) < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds (got {folds})")
    present, counts = np.unique(y, return_counts=True)
    if len(y) and counts.min() < folds:
        worst = int(present[np.argmin(counts)])
        name = repr(str(classes[worst])) if classes is not None and worst < len(classes) \
            else str(worst)
        raise ConfigError(f"{folds} folds need at least {folds} structures of every class; "
                          f"class {name} has {int(counts.min())}")
    out = np.zeros(len(y), dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([seed, 2]))
    start = 0
    for cls in present:
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        out[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)
    return out


def fold_split(labels: Sequence[int] | np.ndarray, folds: int, fold: int, seed: int = 0,
               val_fraction: float = VAL_FRACTION, *,
               classes: Sequence[str] | None = None) -> np.ndarray:
    """Train (0) / val (1) / test (2) codes for fold ``fold`` (1-based) of ``folds``: its fold
    tests, a stratified ``val_fraction`` of the whole dataset from the other folds validates
    (at least one structure per class, never the last one left to train on), the rest
    trains. ``classes``: the class names, for messages."""
    if not 1 <= int(fold) <= int(folds):
        raise ConfigError(f"fold must be between 1 and {folds} (got {fold})")
    y = np.asarray(labels, dtype=np.int64)
    which = stratified_folds(y, folds, seed, classes=classes)
    out = np.where(which == fold - 1, 2, 0).astype(np.int8)
    rng = np.random.Generator(np.random.PCG64([seed, 3, fold]))
    for cls in np.unique(y):
        rest = np.flatnonzero((y == cls) & (out == 0))
        n_val = min(max(1, round(val_fraction * int((y == cls).sum()))), len(rest) - 1)
        if n_val > 0:
            out[rest[rng.permutation(len(rest))[:n_val]]] = 1
    return out


class FoldView:
    """``dataset`` with its splits replaced by fold ``fold`` of a ``folds``-fold
    cross-validation; everything else (images, labels, ids, classes, …) is the dataset's."""

    def __init__(self, dataset: Any, folds: int, fold: int, seed: int = 0) -> None:
        self.dataset = dataset
        self.splits = fold_split(np.asarray(dataset.labels), folds, fold, seed,
                                 classes=getattr(dataset, "classes", None))
        self.meta = {**dict(getattr(dataset, "meta", {}) or {}),
                     "cross_validation": {"folds": int(folds), "fold": int(fold),
                                          "seed": int(seed)}}

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        cv = self.meta["cross_validation"]
        return f"FoldView({self.dataset!r}, fold {cv['fold']} of {cv['folds']})"

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the entries in split ``name`` (train, val or test) of this fold."""
        return split_indices(self.splits, name)

    def torch_split(self, name: str) -> Any:
        """A ``torch.utils.data.Dataset`` of ``(float32 image tensor, int64 label)`` for a split."""
        from andersonn.data._torch import SplitDataset

        return SplitDataset(self.dataset.images, self.dataset.labels, self.split_indices(name))
