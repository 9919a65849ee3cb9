"""Reading and encoding prediction inputs into graph images, a chunk of inputs at a time.

Each input is read (up to ``conformers`` structures for a SMILES), checked against the run's
applicability domain and encoded; a failure is one line for that input alone. The inputs are
encoded in this process or in worker processes (:func:`_featurize_in_processes`, whose
initialiser sets the module-level :data:`_FEATURIZER`). :func:`infer_in_chunks` reads
:data:`andersonn.predict.PREDICT_CHUNK` inputs at a time and infers their images, so the images
in memory stay bounded however many inputs there are.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from andersonn.data.domain import Domain, FeatureDomain
from andersonn.errors import InputError
from andersonn.predict.inputs import UnusableInput, _one_line
from andersonn.structures.readers import StructureRecord

__all__ = ["READABLE", "featurize_all", "infer_in_chunks", "read_in_domain"]

READABLE = (str, os.PathLike, StructureRecord)
"""Input types read as structures (a ``Structure`` is taken as it is; anything else is
refused)."""

_Featurized = tuple[np.ndarray | None, str, list[str]]
_Setup = tuple[Any, Domain | None, tuple[int, ...] | None, FeatureDomain | None, int]
"""(image spec, domain to check against, image shape the model takes, feature domain to check
the image against, conformers per SMILES)."""
_Featurizer = Callable[[Sequence[Any]],
                       tuple[np.ndarray, list[int], list[str], list[list[str]], list[int]]]
_FEATURIZER: _Setup | None = None


class _Chunked(NamedTuple):
    """What :func:`infer_in_chunks` gives: the indices of the readable inputs, every input's
    one-line error ("" when none) and domain warnings, the images per readable input, and the
    arrays of ``infer`` over all their images, in order."""

    ok: list[int]
    errors: list[str]
    notes: list[list[str]]
    counts: list[int]
    outputs: tuple[np.ndarray, ...]


def read_in_domain(item: Any, domain: Domain | None, max_atoms: int | None,
                   conformers: int = 1) -> tuple[list[Any], list[str]]:
    """The structures of one input (up to ``conformers`` for a SMILES; a ``Structure`` as it
    is) and the warnings on the first: the reader's notes and those of checking it against
    ``domain``; raises
    :class:`InputError` when the domain refuses it (a crystal for a molecule model)."""
    from andersonn.structures import Structure, read_conformers
    from andersonn.structures.readers import is_smiles, parses_as_smiles

    if isinstance(item, UnusableInput):
        raise InputError(item.reason)
    if not isinstance(item, (*READABLE, Structure)):
        raise InputError(f"{type(item).__name__}: not a SMILES, a path or a Structure")
    problem = domain.kind_error("molecule") if domain is not None else None
    if problem is not None and is_smiles(item) and parses_as_smiles(item):
        # a SMILES is a molecule: refused before its 3-D embedding (seconds for a long one);
        # a word that is no SMILES either (a mistyped folder, a formula) is left to the reader,
        # which says why
        raise InputError(problem)
    structures = (read_conformers(item, conformers, max_atoms=max_atoms)
                  if isinstance(item, READABLE) else [item])
    notes: list[str] = list(getattr(structures[0], "notes", []))
    if domain is not None and hasattr(structures[0], "summary"):
        problem, outside = domain.check(structures[0].summary())
        if problem is not None:
            raise InputError(problem)
        notes += outside
    return structures, notes


def _featurize_with(setup: _Setup, item: Any) -> _Featurized:
    """(images (k, C, H, W) or None, one-line error or "", domain warnings) of one input,
    encoded with ``setup`` (:data:`_Setup`). A SMILES gets up to that many conformers,
    anything else one image; the domain checks look at the first (lowest-energy) conformer."""
    from andersonn.images import encode

    spec, domain, shape, feature_domain, conformers = setup
    try:
        structures, notes = read_in_domain(item, domain, spec.max_atoms, conformers)
        stack = np.stack([np.asarray(encode(s, spec), dtype=np.float32) for s in structures])
        if shape is not None and tuple(stack.shape[1:]) != shape:
            raise InputError(f"image shape {stack.shape[1:]} does not fit the model")
        if feature_domain is not None:
            notes = notes + feature_domain.check(stack[0])
        return stack, "", notes
    except Exception as exc:  # every failure is reported per input, the rest go on
        return None, _one_line(exc), []


def _init_featurizer(setup: _Setup) -> None:
    """Worker-process initialiser: what :func:`_featurize_item` encodes with."""
    global _FEATURIZER
    _FEATURIZER = setup


def _featurize_item(item: Any) -> _Featurized:
    """:func:`_featurize_with` the worker process's setup."""
    assert _FEATURIZER is not None
    return _featurize_with(_FEATURIZER, item)


def _featurize_in_processes(setup: _Setup, inputs: Sequence[Any], workers: int
                            ) -> Iterator[_Featurized]:
    """:func:`_featurize_with` of every input in up to ``workers`` processes, in input order;
    an input whose reading kills its process fails alone (:func:`map_in_processes`)."""
    from andersonn.parallel import CRASHED, map_in_processes

    return map_in_processes(
        _featurize_item, inputs, workers, initializer=_init_featurizer, initargs=(setup,),
        crashed=lambda _: (None, CRASHED, []))


def featurize_all(setup: _Setup, inputs: Sequence[Any], workers: int = 1,
                  bar: Any | None = None
                  ) -> tuple[np.ndarray, list[int], list[str], list[list[str]], list[int]]:
    """(images, indices of the readable inputs, one-line error per input ("" when none),
    domain warnings per input, images per readable input) of ``inputs`` encoded with
    ``setup``; the images of one input are consecutive. ``workers`` > 1 reads and encodes file
    and SMILES inputs in that many processes (results keep input order). ``bar``: a progress
    bar (:func:`_progress`) advanced by one per input."""
    shape = setup[2]
    results: Iterable[_Featurized]
    if workers > 1 and len(inputs) > 1 and all(isinstance(i, (*READABLE, UnusableInput))
                                               for i in inputs):
        results = _featurize_in_processes(setup, inputs, workers)
    else:
        results = (_featurize_with(setup, item) for item in inputs)
    images, ok, errors, notes, counts = [], [], [], [], []
    for i, (stack, error, note) in enumerate(results):
        if bar is not None:
            bar.update(1)
        errors.append(error)
        notes.append(note)
        if stack is not None:
            images.append(stack)
            ok.append(i)
            counts.append(len(stack))
    arr = (np.concatenate(images) if images
           else np.zeros((0, *(shape or (0, 0, 0))), np.float32))
    return arr, ok, errors, notes, counts


def infer_in_chunks(featurize: _Featurizer, items: Sequence[Any],
                    infer: Callable[[np.ndarray], tuple[np.ndarray, ...]], step: int,
                    image_shape: tuple[int, ...], all_or_none: bool = False) -> _Chunked:
    """Read and encode ``items`` ``PREDICT_CHUNK`` at a time with ``featurize`` (a chunk
    of inputs → what :func:`featurize_all` gives) and apply ``infer`` (images → arrays with a
    row per image) to their images. ``infer`` is given whole batches of ``step`` images (the
    last excepted): the batches of all the images at once, the same answers; with no images
    at all, ``infer`` of an empty ``image_shape`` stack. ``all_or_none``: once an input has
    failed, the rest are only read (for their errors), nothing more is inferred."""
    import andersonn.predict as package  # its PREDICT_CHUNK, as the user may have set it

    chunk = int(package.PREDICT_CHUNK)
    ok: list[int] = []
    errors: list[str] = []
    notes: list[list[str]] = []
    counts: list[int] = []
    outputs: list[tuple[np.ndarray, ...]] = []
    pending: list[np.ndarray] = []  # images not inferred yet: less than a batch
    for start in range(0, len(items), chunk):
        images, ok_c, errors_c, notes_c, counts_c = featurize(items[start:start + chunk])
        ok += [start + i for i in ok_c]
        errors += errors_c
        notes += notes_c
        counts += counts_c
        if all_or_none and any(errors):
            continue
        if len(images):
            pending.append(images)
        waiting = sum(len(a) for a in pending)
        ready = waiting if start + chunk >= len(items) else waiting - waiting % step
        if ready:
            stack = np.concatenate(pending)
            outputs.append(infer(stack[:ready]))
            # a copy, so the chunk's whole stack is not kept alive by a view of its tail
            pending = [stack[ready:].copy()] if ready < waiting else []
    if not outputs:  # nothing inferred: infer's own empty arrays, of the right shapes
        outputs.append(infer(np.zeros((0, *image_shape), np.float32)))
    return _Chunked(ok, errors, notes, counts,
                    tuple(np.concatenate(o) for o in zip(*outputs, strict=True)))


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Any | None]:
    """A progress bar over ``total`` inputs being read and encoded (on stderr) when ``show``,
    else None; closed on leaving."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="featurize", unit="input", mininterval=0.5, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()
