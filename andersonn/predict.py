"""A scikit-learn-like classifier over trained runs: ``fit``, ``predict``, ``predict_proba``.

``Classifier.load(run_dir)`` reads a finished run (safetensors weights + ``config.json``) and
refuses one whose featuriser version differs from the installed one, because its images would
mean something else. Every structure is checked against the run's applicability domain
(:mod:`andersonn.data.domain`): a molecule given to a crystal model (or the reverse) fails,
elements no training structure held and molecule sizes outside the training range come back as
warnings (``Prediction.warnings``; :class:`DomainWarning` from ``predict``/``predict_proba``).
Inputs are images ``(N, C, H, W)`` or structures: SMILES strings, structure
files (xyz, sdf, mol, mol2, pdb, cif, POSCAR, vasprun.xml, ...; gzip read through; a file of
several structures gives one input per structure), :class:`andersonn.structures.Structure`
objects, or text files listing such inputs one per line, or directories (their structure
files). ``Scientist``
is another name for ``Classifier``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.data.domain import Domain, FeatureDomain
from andersonn.errors import AndersonnError, InputError
from andersonn.fileio import atomic_write_json, atomic_write_text
from andersonn.structures.readers import (
    MULTI_RECORD_FORMATS,
    StructureRecord,
    format_from_path,
    is_dir,
    is_file,
    read_records,
    sniff_file,
    structure_files,
)

__all__ = ["Classifier", "ConvergenceWarning", "DomainWarning", "Prediction", "Scientist",
           "expand_inputs", "format_table", "write_predictions"]

LIST_SUFFIXES = {".txt", ".lst", ".list", ".smi", ".smiles"}


class DomainWarning(UserWarning):
    """Inputs lie outside what the model was trained on (unseen elements, unusual sizes)."""


class ConvergenceWarning(UserWarning):
    """The fixed-point solve of some inputs stopped at ``max_iter`` short of its tolerance."""


@dataclasses.dataclass
class Prediction:
    """The outcome for one input: its class and probabilities, or why it failed; ``warnings``
    say where a readable input lies outside the model's training domain."""

    input: str
    ok: bool
    label: str | None = None
    probabilities: dict[str, float] | None = None
    iterations: float | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    source: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The input as read (a path, SMILES or record): what ``--out FILE.sdf`` writes back."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the ``--out FILE.json`` record)."""
        return {"input": self.input, "ok": self.ok, "class": self.label,
                "probabilities": self.probabilities, "iterations": self.iterations,
                "error": self.error, "warnings": list(self.warnings)}


def expand_inputs(inputs: Iterable[Any]) -> list[Any]:
    """Expand text files that list inputs (one per line; ``#`` comments, blank lines skipped),
    directories (their structure files, by name: xyz, sdf, mol, cif, POSCAR, ...; sorted,
    not recursive; a ``.smi`` file in them is a list, as when named directly) and files that
    hold several structures (an SDF of many molecules, a multi-frame xyz, a CIF of several
    data blocks, mol2 molecules, PDB models: one :class:`~andersonn.structures.StructureRecord`
    each, named ``FILE#k (title)``).

    A ``.txt``/``.lst``/``.list``/``.smi`` file is a list; its relative paths are resolved
    against the list's folder when such a file exists there. A directory without structure
    files stays one input, which then fails with that reason; so does an unreadable file.
    """
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, str) and not item.strip():
            out.append(item)  # fails alone as an empty input (Path("") would be the cwd)
            continue
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if is_dir(path):
                files = [os.fspath(f) for f in structure_files(path)]
                out.extend(expand_inputs(files) if files else [os.fspath(item)])  # .smi lists
                continue
            if (path.suffix.lower() in LIST_SUFFIXES and is_file(path)
                    and not _holds_a_structure(path)):
                out.extend(_listed_inputs(path))
                continue
            out.extend(_file_records(os.fspath(item)))
        else:
            out.append(item)
    return out


def _listed_inputs(listing: Path) -> list[Any]:
    """The inputs a list file names, one per line. A ``.smi`` line is ``SMILES [name]``: a
    named SMILES becomes a record called ``SMILES (name)``, so the name reaches the output."""
    smiles_file = listing.suffix.lower() in {".smi", ".smiles"}
    out: list[Any] = []
    for line in listing.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, title = line, ""
        if smiles_file:
            token, *rest = line.split()
            title = " ".join(rest)
        for candidate in (listing.parent / token, Path(token)):
            if is_file(candidate):
                out.extend(_file_records(str(candidate)))
                break
        else:
            out.append(StructureRecord(f"{token} ({title})", token, "smiles") if title
                       else token)
    return out


def _holds_a_structure(path: Path) -> bool:
    """True when a list-named file (``.txt`` & co.) holds a structure file's content instead
    (a CIF, SDF, mol2, vasprun.xml, ... saved as text): it is then read as that structure."""
    return sniff_file(path) in {"cif", "sdf", "mol", "mol2", "vasprun", "espresso-in", "xsf",
                                "pymatgen-dict"}


def _file_records(item: str) -> list[Any]:
    """``[item]``, or the records of a file that holds several structures."""
    if format_from_path(item) not in MULTI_RECORD_FORMATS or not is_file(item):
        return [item]
    try:
        records = read_records(item)
    except InputError:
        return [item]  # read again when featurised, which reports the reason
    return [item] if len(records) == 1 else list(records)


def _input_name(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item) or "''"
    return str(getattr(item, "name", None) or type(item).__name__)


def _one_line(exc: BaseException) -> str:
    """The first line of an error, at most 300 characters; a very long word in it (a long
    SMILES as the input's name) is shortened so that the reason after it still shows."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = re.sub(r"\S{101,}", lambda m: f"{m.group(0)[:60]}...{m.group(0)[-20:]}", line)
    return line[:300]


class Classifier:
    """Train, load and apply a DEQ (or explicit) graph-image classifier.

    ``Classifier(image=None, **train_config)`` takes any :class:`andersonn.training.TrainConfig`
    field (``model="deq"``, ``solver="anderson"``, ``epochs``, ``hidden``, ...); ``image`` is
    the graph-image preset :meth:`fit` encodes structures with (default: by their kind).
    Fitted attributes: ``model_``, ``classes_``, ``config_`` (the run config), ``spec_``,
    ``domain_`` (:class:`andersonn.data.domain.Domain` of the training split, or ``None``),
    ``temperature_`` (the logits are divided by it before the softmax: temperature scaling
    fitted on the validation split, :mod:`andersonn.training.calibration`; 1 when absent).
    Settings: ``batch_size`` (inference), ``conformers`` (a SMILES input is averaged over up
    to this many force-field conformers; 1, the default, is one conformer).
    """

    def __init__(self, image: str | None = None, **config: Any) -> None:
        from andersonn.training import TrainConfig

        self.image = image  # the graph-image preset fit() encodes structures with (None: by kind)
        self.train_config = TrainConfig.from_dict({}, **config)
        self.model_: torch.nn.Module | None = None
        self.classes_: list[str] = []
        self.config_: dict[str, Any] = {}
        self.spec_: Any = None
        self.domain_: Domain | None = None
        self.feature_domain_: FeatureDomain | None = None
        self.temperature_ = 1.0
        self.device = torch.device("cpu")
        self.batch_size = 256
        self.conformers = 1

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", solver: str | None = None,
             solver_options: dict[str, Any] | None = None) -> Classifier:
        """Load a finished run; refuse a featuriser-version mismatch (AndersonnError)."""
        from andersonn.training import TrainConfig, load_run

        model, run_config = load_run(run_dir, device=device)
        self = cls.__new__(cls)
        self.image = None
        try:
            self.train_config = TrainConfig.from_dict(run_config.get("train", {}))
        except AndersonnError:
            self.train_config = TrainConfig()
        self.model_, self.config_ = model, run_config
        self.classes_ = [str(c) for c in run_config.get("classes", [])]
        self.spec_ = None
        self.domain_ = _run_domain(run_dir, run_config)
        self.feature_domain_ = _run_feature_domain(run_dir, run_config)
        self.temperature_ = _run_temperature(run_dir, run_config)
        version = run_config.get("featurizer_version")
        if version is not None and run_config.get("image_spec") is not None:
            spec = self._spec()
            if str(version) != spec.featurizer_version:
                raise AndersonnError(
                    f"{run_dir}: trained on {spec.name} images of featuriser version {version}, "
                    f"but this andersonn makes version {spec.featurizer_version}; its images "
                    "would differ — retrain the model (or install the matching andersonn)")
        self.device = next(model.parameters()).device  # as load_run resolved it
        self.batch_size = 256
        self.conformers = 1
        if solver is not None or solver_options is not None:
            model.set_solver(solver, solver_options)
        return self

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[Any], classes: Sequence[str] | None = None,
            val: tuple[Any, Sequence[Any]] | None = None, out_dir: str | Path | None = None,
            progress: bool = False) -> Classifier:
        """Train on images ``X`` (N, C, H, W), or on structures (SMILES, structure files,
        records), with labels ``y`` (class indices or names).

        Structures are encoded with the :attr:`image` preset (default: by their kind),
        unreadable ones are skipped with a warning, and they are split 80/10/10 by class
        (``val`` is then not taken); the fitted classifier then predicts on structures too.
        Images without ``val`` hold out a stratified 15 % (seeded) for model selection.
        """
        if not isinstance(X, (np.ndarray, torch.Tensor)):
            return self._fit_structures(X, y, classes, val, out_dir, progress)
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 4:
            raise InputError(f"fit expects images of shape (N, C, H, W) or a list of "
                             f"structures, got an array of shape {x.shape}")
        labels, names = self._encode_labels(y, classes)
        if val is not None:
            xv = np.asarray(val[0], dtype=np.float32)
            yv, _ = self._encode_labels(val[1], names)
            images = np.concatenate([x, xv])
            all_labels = np.concatenate([labels, yv])
            splits = np.concatenate([np.zeros(len(x), np.int8), np.ones(len(xv), np.int8)])
        else:
            rng = np.random.default_rng(self.train_config.seed)
            splits = np.zeros(len(x), np.int8)
            for c in range(len(names)):
                idx = rng.permutation(np.flatnonzero(labels == c))
                splits[idx[:max(1, round(0.15 * len(idx)))] if len(idx) > 1 else []] = 1
            images, all_labels = x, labels
        # images carry no elements: the run records no domain to check inputs against
        return self._fit_dataset(_ArrayDataset(images, all_labels, splits, names), names,
                                 out_dir, progress)

    def _fit_structures(self, X: Any, y: Sequence[Any], classes: Sequence[str] | None,
                        val: Any, out_dir: str | Path | None, progress: bool) -> Classifier:
        from andersonn.data.labelled import describe_skipped, labelled_dataset

        if val is not None:
            raise InputError("fit on structures splits them 80/10/10 itself; val is for images")
        if isinstance(X, (str, os.PathLike)) or len(X) != len(y):
            raise InputError(f"fit: give one label per structure (a list of inputs and a list "
                             f"of labels), got {type(X).__name__} and {len(y)} labels")
        labels, names = self._encode_labels(y, classes)
        ds = labelled_dataset(list(X), labels.tolist(), names, image=self.image,
                              seed=self.train_config.seed, progress=progress)
        if ds.report["skipped"]:
            warnings.warn(f"fit: {describe_skipped(ds.report['skipped'])}", stacklevel=3)
        return self._fit_dataset(ds, names, out_dir, progress)

    def _fit_dataset(self, ds: Any, names: list[str], out_dir: str | Path | None,
                     progress: bool) -> Classifier:
        """Train on a dataset (its own splits) and take the fitted run's model, classes,
        domains and temperature."""
        from andersonn.training import train

        cfg = dataclasses.replace(self.train_config, evaluate_test=False, plots=False)
        with tempfile.TemporaryDirectory(prefix="andersonn-fit-") as tmp:
            result = train(cfg, out_dir if out_dir is not None else tmp, dataset=ds,
                           progress=progress)
        self.model_, self.config_ = result.model, result.run_config
        self.classes_, self.spec_ = names, None
        self.domain_ = _run_domain("fit", result.run_config)
        self.feature_domain_ = _run_feature_domain("fit", result.run_config)
        self.temperature_ = _run_temperature("fit", result.run_config)
        return self

    @staticmethod
    def _encode_labels(y: Sequence[Any], classes: Sequence[str] | None
                       ) -> tuple[np.ndarray, list[str]]:
        arr = np.asarray(y)
        if arr.dtype.kind in "iu":
            names = [str(c) for c in classes] if classes is not None else \
                [str(i) for i in range(int(arr.max()) + 1)]
            return arr.astype(np.int64), names
        names = [str(c) for c in classes] if classes is not None else \
            sorted({str(v) for v in arr})
        index = {n: i for i, n in enumerate(names)}
        try:
            return np.array([index[str(v)] for v in arr], dtype=np.int64), names
        except KeyError as exc:
            raise InputError(f"label {exc.args[0]!r} is not one of the classes {names}") from None

    # -- featurisation -----------------------------------------------------------------------
    def _spec(self) -> Any:
        if self.spec_ is None:
            from andersonn.images import IMAGE_SPECS, ImageSpec

            raw = self.config_.get("image_spec")
            if raw is None:
                raise AndersonnError("this model was trained on raw images (no image spec); "
                                     "pass images, not structures")
            self.spec_ = IMAGE_SPECS[raw] if isinstance(raw, str) else ImageSpec.from_dict(raw)
        return self.spec_

    def featurize(self, inputs: Sequence[Any]) -> tuple[np.ndarray, list[int], list[str]]:
        """Images of the inputs that could be read; returns (images, ok_indices, errors) where
        ``errors[i]`` is the one-line reason input ``i`` failed ("" when it did not). One image
        per input: a SMILES gets its first conformer, whatever :attr:`conformers` says."""
        return self._featurize(inputs, conformers=1)[:3]

    def _featurize(self, inputs: Sequence[Any], workers: int = 1, progress: bool = False,
                   conformers: int | None = None
                   ) -> tuple[np.ndarray, list[int], list[str], list[list[str]], list[int]]:
        """:meth:`featurize` plus the domain warnings of each input and the number of images
        of each readable one: up to ``conformers`` (default :attr:`conformers`) for a SMILES,
        one otherwise; the images of one input are consecutive. ``workers`` > 1 reads and
        encodes file and SMILES inputs in that many processes (results keep input order)."""
        shape = tuple(self.config_.get("image_shape", ())) or None
        count = max(1, int(self.conformers if conformers is None else conformers))
        setup = (self._spec(), self.domain_, shape, self.feature_domain_, count)
        results: Iterable[_Featurized]
        if workers > 1 and len(inputs) > 1 and all(isinstance(i, READABLE) for i in inputs):
            results = _featurize_in_processes(setup, inputs, workers)
        else:
            results = (_featurize_with(setup, item) for item in inputs)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(inputs), desc="featurize", unit="input",
                           mininterval=0.5, file=sys.stderr)
        images, ok, errors, notes, counts = [], [], [], [], []
        for i, (stack, error, note) in enumerate(results):
            errors.append(error)
            notes.append(note)
            if stack is not None:
                images.append(stack)
                ok.append(i)
                counts.append(len(stack))
        arr = (np.concatenate(images) if images
               else np.zeros((0, *(shape or (0, 0, 0))), np.float32))
        return arr, ok, errors, notes, counts

    # -- inference ---------------------------------------------------------------------------
    def _check_fitted(self) -> torch.nn.Module:
        if self.model_ is None:
            raise AndersonnError("this Classifier is not fitted; call fit() or Classifier.load()")
        return self.model_

    @torch.no_grad()
    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (N, K), solver iterations per sample (N,), shortfall (N,)): the
        shortfall is a sample's lowest relative residual over the tolerance where the solver
        stopped short of it, else 0. A model without a solver has NaN iterations."""
        model = self._check_fitted()
        model.eval()
        probs, iters, short = [], [], []
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        for start in range(0, x.shape[0], self.batch_size):
            xb = x[start:start + self.batch_size].to(self.device)
            probs.append(torch.softmax(model(xb).float() / self.temperature_, dim=1).cpu())
            stats = model.solver_stats()["forward"]
            nfev = getattr(stats, "nfev", None) if stats is not None else None
            if nfev is None:  # an explicit network: no solver, no iterations
                iters.append(torch.full((xb.shape[0],), float("nan"), dtype=torch.float64))
                short.append(torch.zeros(xb.shape[0], dtype=torch.float64))
            else:
                iters.append(torch.as_tensor(nfev).double().cpu().reshape(-1))
                short.append(_shortfall(stats))
        if not probs:
            return np.zeros((0, len(self.classes_))), np.zeros(0), np.zeros(0)
        return torch.cat(probs).numpy(), torch.cat(iters).numpy(), torch.cat(short).numpy()

    def _infer_inputs(self, images: np.ndarray, counts: Sequence[int] | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_infer` with the images of one input (its conformers, ``counts``) merged:
        the mean of their probabilities, the sum of their solver evaluations (the cost), the
        largest shortfall."""
        probs, iters, short = self._infer(images)
        merged, iters = merge_conformers(probs, iters, counts)
        if len(merged) != len(probs):
            short = np.maximum.reduceat(short, _first_rows(counts))
        return merged, iters, short

    def _as_images(self, X: Any) -> tuple[np.ndarray, list[int] | None]:
        """Images of ``X`` (images already, or inputs to read) and the images per input."""
        if isinstance(X, (np.ndarray, torch.Tensor)) and np.ndim(X) == 4:
            return np.asarray(X, dtype=np.float32), None
        items = expand_inputs([X] if isinstance(X, (str, os.PathLike)) else X)
        images, _ok, errors, notes, counts = self._featurize(items)
        bad = [f"{_input_name(items[i])}: {e}" for i, e in enumerate(errors) if e]
        if bad:
            raise InputError(f"{len(bad)} input(s) could not be featurised: {'; '.join(bad[:5])}")
        outside = [f"{_input_name(items[i])}: {'; '.join(n)}" for i, n in enumerate(notes) if n]
        if outside:
            warnings.warn(f"{len(outside)} input(s) outside the training domain: "
                          f"{' | '.join(outside[:5])}", DomainWarning, stacklevel=3)
        return images, counts

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K) for images or structure inputs (all must be readable);
        a :class:`ConvergenceWarning` where a solve stopped short of its tolerance."""
        probs, _iters, short = self._infer_inputs(*self._as_images(X))
        stopped = np.flatnonzero(short > 1.0)
        if len(stopped):
            rows = ", ".join(str(i) for i in stopped[:5]) + (", …" if len(stopped) > 5 else "")
            note = _shortfall_note(float(short[stopped].max()))[0]
            warnings.warn(f"{len(stopped)} of {len(short)} input(s) (rows {rows}): {note}",
                          ConvergenceWarning, stacklevel=2)
        return probs

    def predict(self, X: Any) -> np.ndarray:
        """Class names (N,) for images or structure inputs."""
        probs = self.predict_proba(X)
        return np.array([self.classes_[i] for i in probs.argmax(axis=1)], dtype=object)

    def score(self, X: Any, y: Sequence[Any]) -> float:
        """Mean accuracy on ``X`` against labels ``y`` (class names or indices), as in
        scikit-learn."""
        truth = np.asarray(y)
        predicted = self.predict(X)
        if truth.dtype.kind in "iu":
            predicted = np.array([self.classes_.index(str(c)) for c in predicted])
        else:
            truth = truth.astype(str)
        if len(truth) != len(predicted):
            raise InputError(f"score: {len(predicted)} inputs but {len(truth)} labels")
        return float(np.mean(predicted == truth))

    def predict_inputs(self, inputs: Sequence[Any], workers: int | None = 1,
                       progress: bool = False) -> list[Prediction]:
        """Predict each input; unreadable ones get ``ok=False`` and a one-line ``error``.

        ``workers``: processes that read and encode the inputs (``None``: every core when
        there are at least 64 inputs); ``progress``: a progress bar for 64 inputs or more.
        """
        items = expand_inputs(inputs)
        if workers is None:
            workers = (os.cpu_count() or 1) if len(items) >= 64 else 1
        images, ok, errors, notes, counts = self._featurize(items, max(1, int(workers)),
                                                            progress and len(items) >= 64)
        probs, iters, short = (self._infer_inputs(images, counts) if ok
                               else (np.zeros((0, 0)), np.zeros(0), np.zeros(0)))
        out = [Prediction(_input_name(item), False, error=errors[i], source=item)
               for i, item in enumerate(items)]
        for row, i in enumerate(ok):
            p = probs[row]
            out[i] = Prediction(_input_name(items[i]), True, self.classes_[int(p.argmax())],
                                {c: float(v) for c, v in zip(self.classes_, p, strict=False)},
                                float(iters[row]) if np.isfinite(iters[row]) else None,
                                source=items[i],
                                warnings=notes[i] + _shortfall_note(float(short[row])))
        return out


Scientist = Classifier

_Featurized = tuple[np.ndarray | None, str, list[str]]
READABLE = (str, os.PathLike, StructureRecord)
"""Input types read as structures (anything else is taken as a ready ``Structure``)."""
_Setup = tuple[Any, Domain | None, tuple[int, ...] | None, FeatureDomain | None, int]
_FEATURIZER: _Setup | None = None


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
    """:func:`_featurize_with` of every input in up to ``workers`` processes, in input order.

    A worker killed by a crash in native code (RDKit, spglib) breaks the pool: the inputs after
    the last result received go to a fresh pool, and where that makes no progress the next
    input is read alone in a process of its own, so only the input that crashes fails."""
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    start, stalled_at = 0, -1
    while start < len(inputs):
        rest, round_start = inputs[start:], start
        alone = start == stalled_at
        pool = cf.ProcessPoolExecutor(1 if alone else min(workers, len(rest)), mp_context=ctx,
                                      initializer=_init_featurizer, initargs=(setup,))
        try:
            chunk = 1 if alone else max(1, min(32, len(rest) // (workers * 8) or 1))
            for result in pool.map(_featurize_item, rest[:1] if alone else rest,
                                   chunksize=chunk):
                start += 1
                yield result
        except cf.process.BrokenProcessPool:
            if alone:
                yield None, "reading it crashed the process (native code in RDKit or spglib)", []
                start += 1
            elif start == round_start:  # no result at all from this pool: isolate the next
                stalled_at = start
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def read_in_domain(item: Any, domain: Domain | None, max_atoms: int | None,
                   conformers: int = 1) -> tuple[list[Any], list[str]]:
    """The structures of one input (up to ``conformers`` for a SMILES; a ``Structure`` as it
    is) and the warnings on the first: the reader's notes and those of checking it against
    ``domain``; raises
    :class:`InputError` when the domain refuses it (a crystal for a molecule model)."""
    from andersonn.structures import read_conformers

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
    encoded with ``setup`` = (image spec, domain to check against, image shape the model takes,
    feature domain to check the image against, conformers per SMILES). A SMILES gets up to
    that many conformers, anything else one image; the domain checks look at the first
    (lowest-energy) conformer."""
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


def _shortfall(stats: Any) -> torch.Tensor:
    """Per sample: lowest relative residual / tolerance where the solve did not converge."""
    low = torch.as_tensor(stats.lowest_residual).double().cpu().reshape(-1)
    done = torch.as_tensor(stats.converged).cpu().reshape(-1)
    return torch.where(done, 0.0, low / max(float(stats.tol), 1e-30)).nan_to_num(float("inf"))


def _shortfall_note(shortfall: float) -> list[str]:
    if shortfall <= 1.0:
        return []
    return [f"the solver stopped short of its tolerance (best residual {shortfall:.3g}× the "
            "tolerance): the answer may be unreliable; try --max-iter or another --solver"]


def merge_conformers(probs: np.ndarray, iters: np.ndarray, counts: Sequence[int] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per input: the mean of its images' probabilities and the sum of their solver
    evaluations (``counts``: consecutive images per input; ``None``: one each)."""
    if counts is None or len(counts) == len(probs):
        return probs, iters
    starts = _first_rows(counts)
    sizes = np.asarray(counts, dtype=np.float64)
    return np.add.reduceat(probs, starts, axis=0) / sizes[:, None], np.add.reduceat(iters, starts)


def _first_rows(counts: Sequence[int]) -> np.ndarray:
    """Index of each input's first image, given the images per input (its conformers)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _run_feature_domain(run_dir: str | Path, run_config: dict[str, Any]
                        ) -> FeatureDomain | None:
    """The run's feature domain (None for runs without one)."""
    record = run_config.get("feature_domain")
    if not record:
        return None
    try:
        return FeatureDomain.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise AndersonnError(f"{run_dir}: config.json has a malformed feature domain "
                             f"({exc})") from None


def _run_temperature(run_dir: str | Path, run_config: dict[str, Any]) -> float:
    """The run's fitted probability temperature (1.0 for runs without one)."""
    record = run_config.get("calibration") or {}
    try:
        value = float(record.get("temperature", 1.0))
    except (AttributeError, TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise AndersonnError(f"{run_dir}: config.json has a malformed calibration temperature "
                             f"({record!r:.80})")
    return value


def _run_domain(run_dir: str | Path, run_config: dict[str, Any]) -> Domain | None:
    """The run's recorded domain; for runs that predate it, the kind its task implies."""
    from andersonn.data.tasks import TASKS

    record = run_config.get("domain")
    if record:
        try:
            return Domain.from_dict(record)
        except (TypeError, ValueError) as exc:
            raise AndersonnError(f"{run_dir}: config.json has a malformed domain ({exc})") from None
    task = TASKS.get(str(run_config.get("task")))
    return Domain(task.kind) if task is not None else None


class _ArrayDataset:
    """In-memory dataset with the attributes the trainer reads."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                 classes: list[str]) -> None:
        self.images, self.labels, self.splits, self.classes = images, labels, splits, classes
        self.ids = [str(i) for i in range(len(labels))]
        self.meta: dict[str, Any] = {"task": "custom"}


# -- output ----------------------------------------------------------------------------------
def format_table(preds: Sequence[Prediction], classes: Sequence[str]) -> str:
    """A plain-text table of predictions (for the terminal)."""
    rows = [["input", "class", *[f"p({c})" for c in classes], "iterations"]]
    for p in preds:
        if p.ok and p.probabilities is not None:
            label = f"{p.label}{' *' if p.warnings else ''}"
            rows.append([p.input, label, *[f"{p.probabilities[c]:.3f}" for c in classes],
                         f"{p.iterations:.1f}" if p.iterations is not None else "-"])
        else:
            rows.append([p.input, "ERROR", *["-"] * len(classes), "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    widths[0] = min(widths[0], 60)
    lines = []
    for r in rows:
        first = r[0] if len(r[0]) <= 60 else "…" + r[0][-59:]
        lines.append("  ".join([first.ljust(widths[0])] +
                               [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    if any(p.ok and p.warnings for p in preds):
        lines.append("* see the warnings above: outside the training domain, read with a caveat, "
                     "or solved short of the tolerance")
    return "\n".join(lines)


def write_predictions(path: str | Path, preds: Sequence[Prediction], classes: Sequence[str],
                      meta: dict[str, Any] | None = None) -> None:
    """Write predictions atomically as JSON (``.json``), CSV (``.csv``) or, for molecules, an
    SD file of the inputs with the predictions as data fields (``.sdf``,
    :mod:`andersonn.predict_sdf`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        from andersonn.predict_sdf import sdf_predictions

        atomic_write_text(path, sdf_predictions(preds, classes))
    elif suffix == ".json":
        atomic_write_json(path, {**(meta or {}), "classes": list(classes),
                                 "predictions": [p.to_dict() for p in preds]})
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["input", "status", "class", *[f"p_{c}" for c in classes],
                         "iterations", "error", "warnings"])
        for p in preds:
            probs = [f"{p.probabilities[c]:.6f}" for c in classes] if p.probabilities else \
                [""] * len(classes)
            writer.writerow([p.input, "ok" if p.ok else "error", p.label or "", *probs,
                             "" if p.iterations is None else f"{p.iterations:.2f}",
                             p.error or "", "; ".join(p.warnings)])
        atomic_write_text(path, buf.getvalue())
    else:
        raise InputError(f"{path}: --out must end in .json, .csv or .sdf")

