"""Deterministic stratified splits and subsets.

Both functions depend only on the labels and the seed (numpy ``PCG64``), so the same inputs give
the same result on every machine. Per-class counts are allocated by the largest-remainder method,
so each class is split in the requested proportions up to one item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from andersonn.errors import ConfigError

__all__ = ["SPLIT_NAMES", "split_indices", "stratified_split", "stratified_subset"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def split_indices(splits: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """Indices of the items whose split code (0 train, 1 val, 2 test) is split ``name``."""
    if name not in SPLIT_NAMES:
        raise ConfigError(f"unknown split {name!r}; choose train, val or test")
    return np.flatnonzero(np.asarray(splits) == SPLIT_NAMES.index(name))


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` (largest remainder, stable ties)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(np.int64)
    remainder = exact - base
    for i in np.argsort(-remainder, kind="stable")[: total - int(base.sum())]:
        base[i] += 1
    return [int(x) for x in base]


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """Assign each item to train (0), val (1) or test (2), stratified by label; int8 array."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ConfigError(f"split fractions must be three non-negative numbers, got {fractions}")
    y = np.asarray(labels, dtype=np.int64)
    out = np.zeros(len(y), dtype=np.int8)
    rng = np.random.Generator(np.random.PCG64(seed))
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        n_train, n_val, _ = _allocate(len(idx), fractions)
        out[idx[n_train : n_train + n_val]] = 1
        out[idx[n_train + n_val :]] = 2
    return out


def stratified_subset(
    labels: Sequence[int] | np.ndarray, n: int, seed: int = 0
) -> np.ndarray:
    """Sorted indices of a deterministic class-stratified subset of ``n`` items."""
    y = np.asarray(labels, dtype=np.int64)
    if n < 0:
        raise ConfigError(f"--limit must be positive, got {n}")
    if n >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = _allocate(n, counts.tolist())
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    chosen: list[np.ndarray] = []
    for cls, k in zip(classes, quota, strict=True):
        idx = np.flatnonzero(y == cls)
        chosen.append(idx[rng.permutation(len(idx))[:k]])
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)
