"""Checking what the :class:`~andersonn.predict.Classifier` is given, before any work: its
parameters (numpy numbers taken as Python ones), images versus structure inputs, image
values, lengths, and a fit's output folder. Every refusal is one line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.errors import ConfigError, InputError
from andersonn.structures.readers import StructureRecord
from andersonn.structures.structure import Structure


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars (also inside lists, tuples and dicts) as Python ones, and
    tuples as lists. A list or dict that holds no numpy scalar is given back itself, not a
    copy: the constructor keeps what it is given (scikit-learn's ``clone`` checks that
    ``get_params`` returns the very objects the constructor received)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        plain = {k: _plain(v) for k, v in value.items()}
        return value if all(plain[k] is v for k, v in value.items()) else plain
    return value


def _train_config(config: dict[str, Any]) -> Any:
    """The :class:`TrainConfig` of constructor keywords (None is taken as given)."""
    from andersonn.training import TrainConfig

    return TrainConfig.from_dict({k: _plain(v) for k, v in config.items()})


def _positive_int(name: str, value: Any) -> int:
    """``value`` (a Python or numpy integer >= 1) as an int; else a :class:`ConfigError`."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1 (got {value!r})")
    return value


def _check_new_run_dir(out_dir: str | Path | None) -> None:
    """Refuse an ``out_dir`` that already holds a run (fit trains afresh, it never resumes)."""
    from andersonn.training.checkpoint import POINTER

    if out_dir is not None and (Path(out_dir) / POINTER).exists():
        raise InputError(f"fit: {out_dir} already holds a run; give another out_dir (a new "
                         "folder), or remove that one first")


def _check_same_length(n_inputs: int, n_labels: int, where: str, what: str) -> None:
    """Refuse inputs and labels of different lengths."""
    if n_inputs != n_labels:
        raise InputError(f"{where}: {n_inputs} {what} but {n_labels} labels; give one label per "
                         "input")


def _check_finite(images: np.ndarray, what: str) -> None:
    """Refuse images holding NaN or infinity (they would make every solve of their batch
    diverge), naming the first rows."""
    bad = np.flatnonzero(~np.isfinite(images).all(axis=tuple(range(1, images.ndim))))
    if len(bad):
        rows = ", ".join(str(i) for i in bad[:5]) + (", …" if len(bad) > 5 else "")
        raise InputError(f"{what}: {len(bad)} image(s) hold NaN or infinite values (row(s) "
                         f"{rows})")


def _images_or_inputs(X: Any, what: str) -> tuple[np.ndarray | None, list[Any] | None]:
    """(images (N, C, H, W) float32, None) when ``X`` holds images, else (None, its inputs).

    Images: a 4-D numeric array or tensor (detached), or a sequence of equal-shape 3-D ones.
    Inputs: a string or path (one input), a sequence, a 1-D string / object array, or any
    other iterable (a generator, a pandas Series)."""
    if isinstance(X, torch.Tensor):
        X = _tensor_array(X)
    if isinstance(X, (str, os.PathLike, StructureRecord)):
        return None, [X]
    if not isinstance(X, (np.ndarray, Sequence)):
        if hasattr(X, "__array__"):  # a pandas Series or Index
            X = np.asarray(X)
        elif isinstance(X, Iterable):
            X = list(X)
        else:
            X = [X]  # one structure object
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim > 1:
                raise InputError(f"{what}: give the inputs as a 1-D list or array, got an "
                                 f"array of shape {X.shape}")
            X = X.reshape(-1).tolist()
        elif X.ndim == 4:
            _check_real(X, what)
            # contiguous: a reversed or strided view (X[::-1]) has strides torch refuses
            return np.ascontiguousarray(X, dtype=np.float32), None
        else:
            hint = "; one image: pass X[None]" if X.ndim == 3 else ""
            raise InputError(f"{what}: expected images of shape (N, C, H, W) or a list of "
                             f"structures, got an array of shape {X.shape}{hint}")
    items = list(X)
    if items and all(isinstance(i, (np.ndarray, torch.Tensor)) for i in items):
        arrays = [_tensor_array(i) if isinstance(i, torch.Tensor) else i for i in items]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1 or len(shapes[0]) != 3:
            raise InputError(f"{what}: a list of arrays is taken as images, each (C, H, W) and "
                             f"all of one shape; got shapes {', '.join(map(str, shapes[:3]))}")
        for a in arrays:
            _check_real(a, what)
        return np.stack(arrays).astype(np.float32, copy=False), None
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, StructureRecord, Structure)):
            raise InputError(f"{what}: input {i} ({type(item).__name__}): not a SMILES, a path "
                             "or a Structure; images must be one (N, C, H, W) array")
    return None, items


def _tensor_array(x: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array (detached, on the CPU); floating tensors as float32
    (numpy has no bfloat16); complex ones stay complex, for :func:`_check_real` to refuse."""
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x.resolve_conj()).numpy()


def _check_real(images: np.ndarray, what: str) -> None:
    """Refuse complex images (taking them as float32 would drop the imaginary part)."""
    if images.dtype.kind == "c":
        raise InputError(f"{what}: complex images ({images.dtype}); give real values")
