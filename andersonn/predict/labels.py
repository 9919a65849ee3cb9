"""Class labels for :meth:`Classifier.fit` and :meth:`~Classifier.score`: labels as a 1-D
array (missing ones refused), encoded as class indices (with or without a given class order),
matched against fitted classes, and a fit's train / validation split (the given ``val`` pair,
or a seeded share of every class held out)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from andersonn.data.labelled import MAX_NUMBERED_CLASSES
from andersonn.errors import InputError
from andersonn.predict.checks import (
    _check_finite,
    _check_same_length,
    _images_or_inputs,
    _plain,
)
from andersonn.predict.inputs import _one_line

_HOLDOUT = 0.15
"""The share of each class fit() holds out for model selection and calibration."""


def _label_array(y: Any, what: str) -> np.ndarray:
    """``y`` as a 1-D array (an (N, 1) column raveled); refuses missing labels (NaN, None)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if isinstance(y, (str, bytes)):
        raise InputError(f"{what}: give one label per input (a list or array), not one string")
    if not isinstance(y, (np.ndarray, Sequence)) and not hasattr(y, "__array__") \
            and isinstance(y, Iterable):
        y = list(y)
    try:
        arr = np.asarray(y)
    except ValueError as exc:
        raise InputError(f"{what}: labels must be one value per input ({_one_line(exc)})") \
            from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        hint = " (one-hot labels: give y.argmax(axis=1))" if arr.ndim == 2 else ""
        raise InputError(f"{what}: labels must have shape (N,), one per input, got shape "
                         f"{arr.shape}{hint}")
    if arr.dtype.kind == "f":
        missing = np.isnan(arr)
    elif arr.dtype.kind == "O":
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in arr],
                           dtype=bool)
    else:
        missing = np.zeros(len(arr), dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        shown = ", ".join(str(i) for i in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise InputError(f"{what}: {len(rows)} missing label(s) (NaN or None) at row(s) "
                         f"{shown}; drop those inputs or give them a class")
    return arr


def _encode_labels(y: Any, classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """(class index of every label (N,), the classes): without ``classes`` the sorted distinct
    labels; with them, integer labels are indices into ``classes`` (so are whole-number float
    labels, unless the classes are floats), others class names."""
    arr = _label_array(y, "fit: y")
    if classes is None:
        try:
            values, index = np.unique(arr, return_inverse=True)
        except TypeError:
            raise InputError("fit: y mixes kinds of labels (numbers and strings?); give labels "
                             "of one kind") from None
        if len(values) < 2:
            raise InputError(f"fit: y holds {len(values)} distinct label(s); a classifier needs "
                             "at least two classes")
        if arr.dtype.kind == "f" and len(values) > MAX_NUMBERED_CLASSES \
                and not np.all(values == np.round(values)):
            raise InputError(f"fit: y holds {len(values)} different numbers: values, not class "
                             "labels? Bin them into classes first, e.g. "
                             "np.digitize(y, [2.5]) for two classes split at 2.5")
        _check_distinct_names(values, "fit: y")
        return index.reshape(-1).astype(np.int64), values
    values = np.asarray(_plain(list(classes)))
    if values.ndim != 1:
        raise InputError("fit: classes must be a flat list of class names")
    names = _check_distinct_names(values, "fit: classes")
    if values.dtype.kind != "f":
        arr = _integral_as_int(arr)
    if arr.dtype.kind in "iu":
        bad = arr[(arr < 0) | (arr >= len(values))]
        if len(bad):
            raise InputError(f"fit: label {bad[0]} is not an index into the {len(values)} "
                             f"classes (integer labels with classes= are indices 0..."
                             f"{len(values) - 1})")
        return arr.astype(np.int64), values
    index = {n: i for i, n in enumerate(names)}
    try:
        return np.array([index[str(v)] for v in arr.tolist()], dtype=np.int64), values
    except KeyError as exc:
        raise InputError(f"fit: label {exc.args[0]!r} is not one of the classes {names}") \
            from None


def _integral_as_int(arr: np.ndarray) -> np.ndarray:
    """Float labels that are all whole numbers (1.0, 2.0: a pandas column of integers with a
    float dtype) as integers; any other labels as they are."""
    if arr.dtype.kind == "f" and len(arr) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    return arr


def _check_distinct_names(values: np.ndarray, what: str) -> list[str]:
    """The classes' names (their ``str``), refused when two coincide (the run stores names)."""
    names = [str(v) for v in values.tolist()]
    if len(set(names)) != len(names):
        raise InputError(f"{what}: two classes have the same name ({names}); give labels of "
                         "one kind")
    return names


def _label_indices(y: Any, classes: np.ndarray, what: str, strict: bool) -> np.ndarray:
    """Class index of every label of ``y`` (-1 for a label that is no class, or an error when
    ``strict``): numbers match equal numbers, other labels match by name; integer labels
    (integral floats too, as a pandas column holds them) against non-numeric classes (a loaded
    run's names) are indices."""
    arr = _label_array(y, what)
    numeric_classes = classes.dtype.kind in "iufb"
    if not numeric_classes:
        arr = _integral_as_int(arr)
    if arr.dtype.kind in "iu" and not numeric_classes:
        bad = arr[(arr < 0) | (arr >= len(classes))]
        if len(bad):
            raise InputError(f"{what}: label {bad[0]} is not a class index (0..."
                             f"{len(classes) - 1}) nor a class name")
        return arr.astype(np.int64)
    if arr.dtype.kind in "iufb" and numeric_classes:
        keys, labels = classes.tolist(), arr.tolist()  # 1 == 1.0 == True, as dict keys too
    else:
        keys, labels = [str(c) for c in classes.tolist()], [str(v) for v in arr.tolist()]
    index = {k: i for i, k in enumerate(keys)}
    out = np.array([index.get(v, -1) for v in labels], dtype=np.int64)
    if strict and (out < 0).any():
        raise InputError(f"{what}: label {labels[int(np.argmax(out < 0))]!r} is not one of the "
                         f"classes {keys}")
    return out


def _holdout_split(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Train (0) / val (1) split holding out a seeded ``_HOLDOUT`` share of every class of two
    or more members."""
    rng = np.random.default_rng(seed)
    splits = np.zeros(len(labels), np.int8)
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(labels == c))
        splits[idx[:max(1, round(_HOLDOUT * len(idx)))] if len(idx) > 1 else []] = 1
    return splits


def _fit_splits(images: np.ndarray, labels: np.ndarray, values: np.ndarray, val: Any,
                classes: Sequence[Any] | None, seed: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, splits: train 0 / val 1) a fit on images trains on: the given
    ``val`` pair (images, labels) joined after the training images (checked as they are), or
    else a :func:`_holdout_split` of ``labels`` (``values``: the fitted classes)."""
    if val is None:
        return images, labels, _holdout_split(labels, len(values), seed)
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise InputError("fit: val must be a pair (images, labels)")
    xv, _ = _images_or_inputs(val[0], "fit: val images")
    if xv is None or xv.shape[1:] != images.shape[1:]:
        given = "structures" if xv is None else f"shape {xv.shape[1:]}"
        raise InputError(f"fit: val images must be images of the training images' "
                         f"shape (C, H, W) = {images.shape[1:]}, got {given}")
    yv = (_encode_labels(val[1], classes)[0] if classes is not None
          else _label_indices(val[1], values, "fit: val labels", strict=True))
    _check_same_length(len(xv), len(yv), "fit: val", "images")
    _check_finite(xv, "fit: val images")
    splits = np.concatenate([np.zeros(len(labels), np.int8), np.ones(len(xv), np.int8)])
    return np.concatenate([images, xv]), np.concatenate([labels, yv]), splits
