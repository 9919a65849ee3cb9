"""On-disk dataset cache: plain ``.npy`` + JSON, written atomically, read without unpickling.

A cache directory holds::

    images.npy    float32 (N, C, H, W), opened with np.load(mmap_mode="r", allow_pickle=False)
    labels.npy    int64 (N,)
    splits.npy    int8 (N,): 0 train, 1 val, 2 test
    ids.json      list of N entry ids
    meta.json     task, classes, label rule + thresholds, featurizer version, image spec,
                  sources + sha256, cache key, counts
    report.json   skipped entries with reasons (optional)
    COMPLETE      written last: size and sha256 of every file above

:func:`write_cache` builds everything in a temporary sibling directory and renames it into place,
so an interrupted build never leaves a directory that :func:`open_cache` accepts: a directory
without ``COMPLETE``, or whose files do not match its sizes, is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.data.splits import split_indices
from andersonn.errors import AndersonnError
from andersonn.fileio import atomic_write_json, with_filename

__all__ = ["COMPLETE", "CachedDataset", "ensure_writable", "file_sha256", "is_complete",
           "open_cache", "os_reason", "write_cache"]

COMPLETE = "COMPLETE"
_ARRAYS = ("images.npy", "labels.npy", "splits.npy")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_writable(folder: str | os.PathLike[str], chosen: bool = False) -> Path:
    """Create ``folder`` (a task's folder of the dataset cache) when missing and check that a
    file can be made in it, so that a build that could not be stored is refused before any work;
    an :class:`AndersonnError` says why not. ``chosen``: the cache root was given (``--cache-dir``)
    rather than taken from the environment; the message's way out says which to change."""
    path = Path(folder)
    way_out = ("give a writable --cache-dir" if chosen else
               "set ANDERSONN_CACHE to a writable folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = "it is a file, not a folder" if path.is_file() else os_reason(exc)
        raise AndersonnError(f"cannot write the dataset cache {path}: {why}; {way_out}") from None
    return path


def os_reason(exc: OSError) -> str:
    """The system's reason for ``exc`` in lower case (``read-only file system``)."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def write_cache(
    directory: str | os.PathLike[str],
    *,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[str],
    splits: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    meta: dict[str, Any],
    report: dict[str, Any] | None = None,
) -> Path:
    """Write a complete dataset to ``directory`` atomically (replacing any old one); return it."""
    target = Path(directory)
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels_arr = np.asarray(labels, dtype=np.int64)
    splits_arr = np.asarray(splits, dtype=np.int8)
    n = len(labels_arr)
    if images.ndim != 4 or images.shape[0] != n or len(splits_arr) != n or len(ids) != n:
        raise ValueError(
            f"inconsistent dataset: images {images.shape}, labels {n}, splits {len(splits_arr)}, "
            f"ids {len(ids)}"
        )
    if n and (labels_arr.min() < 0 or labels_arr.max() >= len(classes)):
        raise ValueError("labels out of range of classes")
    meta = {**meta, "classes": list(classes), "n": n, "image_shape": list(images.shape[1:])}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, arr in zip(_ARRAYS, (images, labels_arr, splits_arr), strict=True):
            try:
                with open(tmp / name, "wb") as handle:
                    np.save(handle, arr, allow_pickle=False)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                if exc.filename is not None:
                    raise
                raise with_filename(exc, target / name) from exc
        atomic_write_json(tmp / "ids.json", [str(i) for i in ids])
        atomic_write_json(tmp / "meta.json", meta)
        atomic_write_json(tmp / "report.json", report or {"skipped": []})
        files = {
            p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(tmp.iterdir())
        }
        atomic_write_json(tmp / COMPLETE, {"files": files})
        _fsync_dir(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def is_complete(directory: str | os.PathLike[str], verify: bool = False) -> bool:
    """Whether ``directory`` is a complete cache (sizes match; sha256 too when ``verify``)."""
    try:
        _check_complete(Path(directory), verify)
    except AndersonnError:
        return False
    return True


def _check_complete(directory: Path, verify: bool) -> dict[str, Any]:
    marker = directory / COMPLETE
    if not marker.is_file():
        raise AndersonnError(
            f"dataset cache {directory} is incomplete (no {COMPLETE} marker: interrupted build?); "
            "rebuild it with `andersonn data build`"
        )
    try:
        record = json.loads(marker.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise AndersonnError(f"dataset cache {directory} has a damaged {COMPLETE} marker") from None
    for name in (*_ARRAYS, "ids.json", "meta.json"):
        if name not in files:
            raise AndersonnError(f"dataset cache {directory} lacks {name}; rebuild it")
    for name, info in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != info["size"]:
            raise AndersonnError(f"dataset cache {directory}: {name} is missing or truncated")
        if verify and file_sha256(path) != info["sha256"]:
            raise AndersonnError(f"dataset cache {directory}: {name} fails its sha256 check")
    return record


class CachedDataset:
    """A dataset opened from the cache: memory-mapped images, labels, splits, ids, meta."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        reading = "images.npy"  # the file being read, for the message
        try:
            self.images: np.ndarray = np.load(
                directory / reading, mmap_mode="r", allow_pickle=False
            )
            reading = "labels.npy"
            self.labels: np.ndarray = np.load(directory / reading, allow_pickle=False)
            reading = "splits.npy"
            self.splits: np.ndarray = np.load(directory / reading, allow_pickle=False)
            reading = "ids.json"
            self.ids: list[str] = json.loads((directory / reading).read_text())
            reading = "meta.json"
            self.meta: dict[str, Any] = json.loads((directory / reading).read_text())
            reading = "report.json"
            report = directory / reading
            self.report: dict[str, Any] = (json.loads(report.read_text()) if report.is_file()
                                           else {})
            self.classes: list[str] = list(self.meta.get("classes", []))
        except (ValueError, OSError, AttributeError, TypeError) as exc:
            # damaged at the right size (a size check passes it); numpy's own message would
            # suggest unpickling the file
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise AndersonnError(
                f"{directory}: damaged dataset build ({reading}: {why}); rebuild it with "
                "`andersonn data build TASK --force`, or remove it with `andersonn data clean`"
            ) from None

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"CachedDataset(task={self.meta.get('task')!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])}, dir={os.fspath(self.directory)!r})"
        )

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the entries in split ``name`` (train, val or test)."""
        return split_indices(self.splits, name)

    def torch_split(self, name: str) -> Any:
        """A ``torch.utils.data.Dataset`` of ``(float32 image tensor, int64 label)`` for a split."""
        from andersonn.data._torch import SplitDataset

        return SplitDataset(self.images, self.labels, self.split_indices(name))


def open_cache(directory: str | os.PathLike[str], verify: bool = False) -> CachedDataset:
    """Open a complete cache directory; an incomplete or damaged one raises AndersonnError."""
    path = Path(directory)
    _check_complete(path, verify)
    return CachedDataset(path)
