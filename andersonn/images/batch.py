"""Parallel batch featurisation: many (content, fmt, name) inputs -> stacked images.

Bad entries never stop a batch: they are skipped and listed as (index, name, reason).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from andersonn.errors import AndersonnError
from andersonn.images.encode import encode
from andersonn.images.spec import ImageSpec, get_spec
from andersonn.structures.structure import StructureSummary as Summary

_SPEC: ImageSpec | None = None
_Result = tuple[int, np.ndarray | None, str, float, Summary | None]


@dataclass
class FeaturizeResult:
    """Outcome of :func:`featurize_many`.

    images: (n_ok, C, H, W) float32; ok_indices: input index of each image;
    failures: (index, name, reason) of every skipped input; seconds: wall time;
    cpu_seconds: CPU time spent on the items, summed over workers (load-independent cost);
    summaries: :meth:`Structure.summary` of each image's structure (elements, atoms, periodic),
    aligned with ``ok_indices``.
    """

    images: np.ndarray
    ok_indices: list[int] = field(default_factory=list)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def n_ok(self) -> int:
        """Number of images produced."""
        return len(self.ok_indices)


def featurize_one(content: Any, fmt: str, name: str, spec: ImageSpec | str) -> np.ndarray:
    """Parse and encode one in-memory input (raises InputError on bad input)."""
    return _featurize_summarized(content, fmt, name, spec)[0]


SOURCE = "source"
"""The ``fmt`` of an input whose content is a source as a user gives it (a path, a SMILES or a
:class:`~andersonn.structures.StructureRecord`), read as ``predict`` reads it."""


def _featurize_summarized(content: Any, fmt: str, name: str, spec: ImageSpec | str
                          ) -> tuple[np.ndarray, Summary]:
    from andersonn.structures.readers import parse_structure, read_conformers

    if fmt == SOURCE:
        s = read_conformers(content, 1, max_atoms=get_spec(spec).max_atoms)[0]
    else:
        s = parse_structure(content, fmt, name, bonds=False)
    return encode(s, spec), s.summary()


def _preload() -> None:
    import rdkit.Chem  # noqa: F401
    import scipy.spatial  # noqa: F401

    import andersonn.structures.readers  # noqa: F401


def _init_worker(spec: ImageSpec) -> None:
    global _SPEC
    _SPEC = spec
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread per worker process: the workers are the parallelism


@contextlib.contextmanager
def _in_this_process(spec: ImageSpec) -> Iterator[None]:
    """A worker's quiet setup for featurising in the caller's own process, undone afterwards:
    the readers' :func:`~andersonn.structures.readers.quiet` (the caller's warning filters and
    RDKit log levels are as they were after it), and the featuriser's worker state ``_SPEC``."""
    global _SPEC
    from andersonn.structures.readers import quiet

    saved_spec, _SPEC = _SPEC, spec
    try:
        with quiet():
            yield
    finally:
        _SPEC = saved_spec


def _work(item: tuple[int, Any, str, str]) -> _Result:
    index, content, fmt, name = item
    assert _SPEC is not None
    t0 = time.process_time()
    img: np.ndarray | None = None
    summary: Summary | None = None
    try:
        (img, summary), reason = _featurize_summarized(content, fmt, name, _SPEC), ""
    except AndersonnError as exc:
        reason = str(exc)
    except Exception as exc:  # a bug or library crash on one input must not stop the batch
        reason = f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return index, img, reason, time.process_time() - t0, summary


def _crashed(item: tuple[int, Any, str, str]) -> _Result:
    index, _, _, name = item
    from andersonn.parallel import CRASHED

    return index, None, f"{name}: {CRASHED}", 0.0, None


def featurize_many(inputs: Sequence[tuple[Any, str, str]] | Iterable[tuple[Any, str, str]],
                   spec: ImageSpec | str, workers: int | None = None, progress: bool = True,
                   desc: str = "", chunksize: int | None = None) -> FeaturizeResult:
    """Featurise ``inputs`` (each ``(content, fmt, name)``; ``fmt`` :data:`SOURCE`: content is
    a path, SMILES or record) with a process pool.

    ``workers=None`` uses ``os.cpu_count()``; ``workers=1`` runs in-process. Results keep input
    order; failures are reported, not raised.
    """
    spec = get_spec(spec)
    items = [(k, c, f, str(nm)) for k, (c, f, nm) in enumerate(inputs)]
    n = len(items)
    workers = os.cpu_count() or 1 if workers is None else max(1, int(workers))
    workers = min(workers, max(1, n))
    if chunksize is None:
        chunksize = max(1, min(256, n // (workers * 24) or 1))
    t0 = time.perf_counter()
    images: list[np.ndarray | None] = [None] * n
    summaries: list[Summary | None] = [None] * n
    cpu = 0.0
    failures: list[tuple[int, str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc or f"featurize {spec.name}", unit="struct",
                   smoothing=0.1, mininterval=0.5)
    try:
        if workers == 1:
            with _in_this_process(spec):
                cpu = _consume(map(_work, items), images, summaries, failures, items, bar)
        else:
            from andersonn.parallel import map_in_processes

            _preload()  # import heavy modules once, before forking the workers
            results = map_in_processes(_work, items, workers, crashed=_crashed,
                                       initializer=_init_worker, initargs=(spec,),
                                       chunksize=chunksize)
            cpu = _consume(results, images, summaries, failures, items, bar)
    finally:
        if bar is not None:
            bar.close()
    ok = [k for k in range(n) if images[k] is not None]
    stack = (np.stack([images[k] for k in ok]).astype(np.float32, copy=False) if ok
             else np.zeros((0, *spec.shape), dtype=np.float32))
    failures.sort()
    return FeaturizeResult(images=stack, ok_indices=ok, failures=failures,
                           summaries=[summaries[k] for k in ok],  # type: ignore[misc]
                           seconds=time.perf_counter() - t0, cpu_seconds=cpu)


def _consume(results: Iterable[_Result], images: list[np.ndarray | None],
             summaries: list[Summary | None], failures: list[tuple[int, str, str]],
             items: list[tuple[int, Any, str, str]], bar: Any) -> float:
    cpu = 0.0
    for index, img, reason, seconds, summary in results:
        cpu += seconds
        if img is None:
            failures.append((index, items[index][3], reason))
        else:
            images[index], summaries[index] = img, summary
        if bar is not None:
            bar.update(1)
    return cpu
