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

import contextlib
import csv
import dataclasses
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from andersonn.data.domain import Domain, FeatureDomain
from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.fileio import atomic_write_json, atomic_write_text, decode_text
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
           "UnusableInput", "expand_inputs", "format_table", "without_name",
           "write_predictions"]

LIST_SUFFIXES = {".txt", ".lst", ".list", ".smi", ".smiles"}
PREDICT_CHUNK = 4096
"""Inputs :meth:`Classifier.predict_inputs`, :meth:`~Classifier.predict_proba` and
:func:`andersonn.evaluate.evaluate_labelled` read, encode and infer at a time (about 16 KB per
polarity image: 64 MB of images per chunk, per conformer)."""


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

    @property
    def reason(self) -> str:
        """Why the input failed ("" when it did not), without its name in front: for a line
        that names the input first (``cannot predict C1CC: unparsable SMILES``)."""
        return without_name(self.error or "", self.input)

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
    against the list's folder when such a file exists there, and the folders and lists it
    names are expanded in turn (a list that includes itself, directly or through others, is
    one input that fails with that reason). A directory without structure files stays one
    input, which then fails with that reason; so does an unreadable file.
    """
    return _expand(inputs, frozenset())


@dataclasses.dataclass(frozen=True)
class UnusableInput:
    """An input that expanding the inputs already found unusable: it fails with ``reason``
    (a one-line message that names it) wherever it is read."""

    name: str
    reason: str


def _expand(inputs: Iterable[Any], lists: frozenset[Path]) -> list[Any]:
    """:func:`expand_inputs`, inside the list files ``lists`` (resolved paths)."""
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, str) and not item.strip():
            out.append(item)  # fails alone as an empty input (Path("") would be the cwd)
            continue
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if is_dir(path):
                files = [os.fspath(f) for f in structure_files(path)]
                out.extend(_expand(files, lists) if files else [os.fspath(item)])  # .smi lists
                continue
            if (path.suffix.lower() in LIST_SUFFIXES and is_file(path)
                    and not _holds_a_structure(path)):
                out.extend(_listed_inputs(path, lists))
                continue
            out.extend(_file_records(os.fspath(item)))
        else:
            out.append(item)
    return out


def _listed_inputs(listing: Path, lists: frozenset[Path] = frozenset()) -> list[Any]:
    """The inputs a list file names, one per line, expanded as :func:`expand_inputs` expands
    its inputs (``lists``: the list files it is named in). A ``.smi`` line is ``SMILES
    [name]``: a named SMILES becomes a record called ``SMILES (name)``, so the name reaches
    the output."""
    key = listing.resolve()
    if key in lists:
        return [UnusableInput(os.fspath(listing), f"{os.fspath(listing)}: a list file that "
                              "includes itself (directly or through other lists)")]
    lists = lists | {key}
    smiles_file = listing.suffix.lower() in {".smi", ".smiles"}
    out: list[Any] = []
    for line in decode_text(listing.read_bytes()).splitlines():  # as structure files are
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, title = line, ""
        if smiles_file:
            token, *rest = line.split()
            title = " ".join(rest)
        for candidate in (listing.parent / token, Path(token)):
            if is_file(candidate) or is_dir(candidate):
                out.extend(_expand([str(candidate)], lists))
                break
        else:
            out.append(StructureRecord(f"{token} ({title})", token, "smiles") if title
                       else token)
    if not out:  # reported as one bad input, not dropped without a word
        return [UnusableInput(os.fspath(listing), f"{os.fspath(listing)}: empty file: it "
                              "lists no inputs")]
    return out


def _holds_a_structure(path: Path) -> bool:
    """True when a list-named file (``.txt`` & co.) holds a structure file's content instead
    (an xyz, POSCAR, CIF, SDF, mol2, vasprun.xml, ... saved as text): it is then read as that
    structure."""
    return sniff_file(path) in {"xyz", "poscar", "cif", "sdf", "mol", "mol2", "vasprun",
                                "espresso-in", "xsf", "pymatgen-dict"}


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
    return _shorten_words(line)[:300]


def _shorten_words(text: str) -> str:
    """``text`` with every word of over 100 characters as its start, ``...`` and its end."""
    return re.sub(r"\S{101,}", lambda m: f"{m.group(0)[:60]}...{m.group(0)[-20:]}", text)


def without_name(error: str, name: str) -> str:
    """``error`` without the input's ``name`` in front: a reader's message names its input
    (``C1CC: unparsable SMILES``), so a line that names the input itself names it once."""
    for shown in dict.fromkeys((name, _shorten_words(name))):
        if shown and error.startswith(f"{shown}: "):
            return error[len(shown) + 2:]
    return error


class Classifier:
    """Train, load and apply a DEQ (or explicit) graph-image classifier, scikit-learn style.

    ``Classifier(image=None, conformers=1, predict_batch_size=256, **train_config)`` takes any
    :class:`andersonn.training.TrainConfig` field (``model="deq"``, ``solver="anderson"``,
    ``epochs``, ``batch_size`` (training), ``hidden``, ...; numpy numbers are taken as Python
    numbers); ``image`` is the graph-image preset :meth:`fit` encodes structures with (default:
    by their kind); ``conformers``: a SMILES input is averaged over up to this many force-field
    conformers; ``predict_batch_size``: images per inference batch. ``get_params`` /
    ``set_params`` cover all of them (``sklearn.base.clone`` gives an unfitted copy).
    Fitted attributes: ``model_``, ``classes_`` (numpy array: the sorted label values of
    :meth:`fit`, of the labels' own kind; class names, strings, for a loaded run),
    ``config_`` (the run config), ``spec_``, ``domain_`` (:class:`andersonn.data.domain.Domain`
    of the training split, or ``None``), ``temperature_`` (the logits are divided by it before
    the softmax: temperature scaling fitted on the validation split,
    :mod:`andersonn.training.calibration`; 1 when absent).
    """

    def __init__(self, image: str | None = None, *, conformers: int = 1,
                 predict_batch_size: int = 256, **config: Any) -> None:
        self.image = image  # the graph-image preset fit() encodes structures with (None: by kind)
        self.conformers = _positive_int("conformers", conformers)
        self.predict_batch_size = _positive_int("predict_batch_size", predict_batch_size)
        self.train_config = _train_config(config)
        self._unfit()

    def _unfit(self) -> None:
        """No fitted state (set before every fit and load)."""
        self.model_: torch.nn.Module | None = None
        self.classes_: np.ndarray = np.array([], dtype=object)
        self.config_: dict[str, Any] = {}
        self.spec_: Any = None
        self.domain_: Domain | None = None
        self.feature_domain_: FeatureDomain | None = None
        self.temperature_ = 1.0
        self.device = torch.device("cpu")
        self.__dict__.pop("run_dir_", None)

    # -- parameters (scikit-learn's estimator interface) -------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters: ``image``, ``conformers``, ``predict_batch_size`` and
        every training setting (``type(self)(**self.get_params())`` is an unfitted copy)."""
        settings = self.train_config.to_dict()
        settings.pop("image")  # a labels file's preset: Classifier's own ``image`` is the one
        return {"image": self.image, "conformers": self.conformers,
                "predict_batch_size": self.predict_batch_size, **settings}

    def set_params(self, **params: Any) -> Classifier:
        """Change parameters (as :meth:`get_params` names them); checked together, as the
        constructor checks them (:class:`ConfigError`); returns ``self``."""
        own = {k: params.pop(k) for k in _OWN_PARAMS if k in params}
        settings = self.train_config.to_dict()
        settings.pop("image")
        config = _train_config({**settings, **params})
        conformers = _positive_int("conformers", own.get("conformers", self.conformers))
        batch = _positive_int("predict_batch_size",
                              own.get("predict_batch_size", self.predict_batch_size))
        self.train_config, self.conformers, self.predict_batch_size = config, conformers, batch
        self.image = own.get("image", self.image)
        return self

    def __repr__(self) -> str:
        defaults = Classifier().get_params()
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k, v) != v
                 or k not in defaults]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def batch_size(self) -> int:
        """Deprecated name of :attr:`predict_batch_size` (``batch_size=`` given to the
        constructor is the training batch, ``train_config.batch_size``)."""
        warnings.warn(_BATCH_SIZE_NOTE, FutureWarning, stacklevel=2)
        return self.predict_batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        warnings.warn(_BATCH_SIZE_NOTE, FutureWarning, stacklevel=2)
        self.predict_batch_size = value

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", solver: str | None = None,
             solver_options: dict[str, Any] | None = None) -> Classifier:
        """Load a finished run; refuse a featuriser-version mismatch (AndersonnError).

        A DEQ answers with the run's evaluation solver settings (``eval_tol``,
        ``eval_max_iter``); ``solver`` / ``solver_options`` override them. The classes are
        the run's class names (strings: a run does not record the labels' original kind)."""
        from andersonn.training import TrainConfig, load_run

        model, run_config = load_run(run_dir, device=device)
        self = cls.__new__(cls)
        try:
            self.train_config = TrainConfig.from_dict(run_config.get("train", {}))
        except AndersonnError:
            self.train_config = TrainConfig()
        self.image = self.train_config.image
        self.conformers, self.predict_batch_size = 1, 256
        self._unfit()
        self.model_, self.config_ = model, run_config
        self.classes_ = np.array([str(c) for c in run_config.get("classes", [])], dtype=object)
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
        self.run_dir_ = str(run_dir)
        if solver is not None or solver_options is not None:
            model.set_solver(solver, solver_options)
        return self

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, classes: Sequence[Any] | None = None,
            val: tuple[Any, Any] | None = None, out_dir: str | Path | None = None,
            progress: bool = False) -> Classifier:
        """Train on images ``X`` (N, C, H, W) (an array, a tensor, or a list of equal-shape
        (C, H, W) arrays), or on structures (SMILES, structure files, records; a list, a 1-D
        string array, a pandas Series), with labels ``y``, one per input.

        Without ``classes`` the classes are the sorted distinct labels (``classes_``) and
        :meth:`predict` answers with label values of the same kind (ints, bools, strings,
        ...). With ``classes`` (the class order), integer labels are indices into it and any
        other labels are class names. NaN / None labels are refused. Images without ``val``
        hold out a stratified 15 % (seeded) for model selection and calibration; so do
        structures (encoded with the :attr:`image` preset, default: by their kind; unreadable
        ones are skipped with a warning; ``val`` is for images only). Everything else is
        trained on: nothing is set aside for a test. ``out_dir``: a new folder that keeps the
        run (loadable with :meth:`load`); one that already holds a run is refused.
        """
        images, inputs = _images_or_inputs(X, "fit: X")
        _check_new_run_dir(out_dir)
        if images is None:
            return self._fit_structures(inputs, y, classes, val, out_dir, progress)
        labels, values = _encode_labels(y, classes)
        _check_same_length(len(images), len(labels), "fit", "images")
        _check_finite(images, "fit: X")
        if val is not None:
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
            images = np.concatenate([images, xv])
            all_labels = np.concatenate([labels, yv])
            splits = np.concatenate([np.zeros(len(labels), np.int8), np.ones(len(xv), np.int8)])
        else:
            splits = _holdout_split(labels, len(values), self.train_config.seed)
            all_labels = labels
        names = [str(v) for v in values]
        # images carry no elements: the run records no domain to check inputs against
        return self._fit_dataset(_ArrayDataset(images, all_labels, splits, names), values,
                                 out_dir, progress)

    def _fit_structures(self, X: list[Any], y: Any, classes: Sequence[Any] | None, val: Any,
                        out_dir: str | Path | None, progress: bool) -> Classifier:
        from andersonn.data.labelled import describe_skipped, labelled_dataset

        if val is not None:
            raise InputError("fit on structures holds out its own validation split; val is for "
                             "images")
        labels, values = _encode_labels(y, classes)
        _check_same_length(len(X), len(labels), "fit", "structures")
        names = [str(v) for v in values]
        cfg = self.train_config
        # train / val only, as for images: a test tenth would be wasted (fit reports no test
        # score); the training domain follows this split
        ds = labelled_dataset(X, labels.tolist(), names, image=self.image, seed=cfg.seed,
                              workers=cfg.workers, progress=progress,
                              split=lambda y: _holdout_split(y, len(names), cfg.seed))
        if ds.report["skipped"]:
            _warn(f"fit: {describe_skipped(ds.report['skipped'])}", UserWarning)
        return self._fit_dataset(ds, values, out_dir, progress)

    def _fit_dataset(self, ds: Any, values: np.ndarray, out_dir: str | Path | None,
                     progress: bool) -> Classifier:
        """Train on a dataset (its own splits) and take the fitted run's model, classes,
        domains, temperature and device."""
        from andersonn.training import train

        cfg = dataclasses.replace(self.train_config, evaluate_test=False, plots=False)
        self._unfit()
        with tempfile.TemporaryDirectory(prefix="andersonn-fit-") as tmp:
            result = train(cfg, out_dir if out_dir is not None else tmp, dataset=ds,
                           progress=progress)
        self.model_, self.config_ = result.model, result.run_config
        self.classes_ = values
        self.domain_ = _run_domain("fit", result.run_config)
        self.feature_domain_ = _run_feature_domain("fit", result.run_config)
        self.temperature_ = _run_temperature("fit", result.run_config)
        self.device = next(self.model_.parameters()).device  # where training put it ("auto")
        if out_dir is not None:
            self.run_dir_ = str(out_dir)
        return self

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

    def _featurize(self, inputs: Sequence[Any], workers: int = 1, bar: Any | None = None,
                   conformers: int | None = None
                   ) -> tuple[np.ndarray, list[int], list[str], list[list[str]], list[int]]:
        """:meth:`featurize` plus the domain warnings of each input and the number of images
        of each readable one: up to ``conformers`` (default :attr:`conformers`) for a SMILES,
        one otherwise; the images of one input are consecutive. ``workers`` > 1 reads and
        encodes file and SMILES inputs in that many processes (results keep input order).
        ``bar``: a progress bar (:func:`_progress`) advanced by one per input."""
        self._check_fitted()
        shape = tuple(self.config_.get("image_shape", ())) or None
        count = max(1, int(self.conformers if conformers is None else conformers))
        setup = (self._spec(), self.domain_, shape, self.feature_domain_, count)
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

    # -- inference ---------------------------------------------------------------------------
    def _check_fitted(self) -> torch.nn.Module:
        if self.model_ is None:
            load = "from_runs()" if hasattr(self, "members") else "Classifier.load()"
            raise AndersonnError(f"this {type(self).__name__} is not fitted; call fit() or "
                                 f"{load}")
        return self.model_

    def _class_names(self) -> list[str]:
        """The classes as the run records them (strings: table columns, JSON keys)."""
        return [str(c) for c in self.classes_]

    @torch.no_grad()
    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (N, K) float64, solver iterations per sample (N,), shortfall (N,)):
        the shortfall is a sample's lowest relative residual over the tolerance where the
        solver stopped short of it, else 0. A model without a solver has NaN iterations."""
        model = self._check_fitted()
        model.eval()
        probs, iters, short = [], [], []
        step = self.predict_batch_size
        for start in range(0, len(images), step):
            # a copy of each batch: images may be a read-only memmap (a cached dataset's),
            # which torch would not take without a warning, and which need not fit in memory
            xb = torch.tensor(np.asarray(images[start:start + step], dtype=np.float32),
                              device=self.device)
            probs.append(torch.softmax(model(xb).double() / self.temperature_, dim=1).cpu())
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
        return _merge_images(*self._infer(images), counts)

    def _infer_in_chunks(self, items: Sequence[Any],
                         infer: Callable[[np.ndarray], tuple[np.ndarray, ...]], workers: int = 1,
                         bar: Any | None = None, conformers: int | None = None,
                         all_or_none: bool = False) -> _Chunked:
        """Read and encode ``items`` :data:`PREDICT_CHUNK` at a time and apply ``infer`` (images
        → arrays with a row per image) to their images, so the images in memory stay bounded
        however many inputs there are. ``infer`` is given whole :attr:`predict_batch_size`
        batches (the last excepted): the batches of all the images at once, the same answers.
        ``all_or_none``: once an input has failed, the rest are only read (for their errors),
        nothing more is inferred."""
        step = self.predict_batch_size
        ok: list[int] = []
        errors: list[str] = []
        notes: list[list[str]] = []
        counts: list[int] = []
        outputs: list[tuple[np.ndarray, ...]] = []
        pending: list[np.ndarray] = []  # images not inferred yet: less than a batch
        for start in range(0, len(items), PREDICT_CHUNK):
            images, ok_c, errors_c, notes_c, counts_c = self._featurize(
                items[start:start + PREDICT_CHUNK], workers, bar, conformers)
            ok += [start + i for i in ok_c]
            errors += errors_c
            notes += notes_c
            counts += counts_c
            if all_or_none and any(errors):
                continue
            if len(images):
                pending.append(images)
            waiting = sum(len(a) for a in pending)
            ready = waiting if start + PREDICT_CHUNK >= len(items) else waiting - waiting % step
            if ready:
                stack = np.concatenate(pending)
                outputs.append(infer(stack[:ready]))
                # a copy, so the chunk's whole stack is not kept alive by a view of its tail
                pending = [stack[ready:].copy()] if ready < waiting else []
        if not outputs:  # nothing inferred: infer's own empty arrays, of the right shapes
            shape = tuple(self.config_.get("image_shape") or ()) or (0, 0, 0)
            outputs.append(infer(np.zeros((0, *shape), np.float32)))
        return _Chunked(ok, errors, notes, counts,
                        tuple(np.concatenate(o) for o in zip(*outputs, strict=True)))

    def _outputs(self, X: Any, infer: Callable[[np.ndarray], tuple[np.ndarray, ...]]
                 ) -> tuple[tuple[np.ndarray, ...], list[int] | None]:
        """``infer`` of the images of ``X`` (images already, or inputs to read, which must all
        be readable: :meth:`_infer_in_chunks`) and the images per input (None for images)."""
        self._check_fitted()
        given, items = _images_or_inputs(X, "X")
        if given is not None:
            shape = tuple(self.config_.get("image_shape") or ())
            if shape and given.shape[1:] != shape:
                raise InputError(f"X: images of shape (C, H, W) = {given.shape[1:]}, but this "
                                 f"model takes {shape}")
            _check_finite(given, "X")
            return infer(given), None
        items = expand_inputs(items)
        done = self._infer_in_chunks(items, infer, all_or_none=True)
        bad = [f"{_input_name(items[i])}: {without_name(e, _input_name(items[i]))}"
               for i, e in enumerate(done.errors) if e]
        if bad:
            raise InputError(f"{len(bad)} input(s) could not be featurised: {'; '.join(bad[:5])}")
        outside = [f"{_input_name(items[i])}: {'; '.join(n)}"
                   for i, n in enumerate(done.notes) if n]
        if outside:
            _warn(f"{len(outside)} input(s) outside the training domain: "
                  f"{' | '.join(outside[:5])}", DomainWarning)
        return done.outputs, done.counts

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K), float64, columns in :attr:`classes_` order, for images or
        structure inputs (all must be readable; read, encoded and inferred
        :data:`PREDICT_CHUNK` at a time); a :class:`ConvergenceWarning` where a solve stopped
        short of its tolerance."""
        outputs, counts = self._outputs(X, self._infer)
        probs, _iters, short = _merge_images(*outputs, counts)
        stopped = np.flatnonzero(short > 1.0)
        if len(stopped):
            rows = ", ".join(str(i) for i in stopped[:5]) + (", …" if len(stopped) > 5 else "")
            note = _shortfall_note(float(short[stopped].max()))[0]
            _warn(f"{len(stopped)} of {len(short)} input(s) (rows {rows}): {note}",
                  ConvergenceWarning)
        return probs

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each input (N,), an element of :attr:`classes_`: of the
        labels' own kind after :meth:`fit`, class names (strings) for a loaded run."""
        probs = self.predict_proba(X)
        return self.classes_[probs.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy on ``X`` against labels ``y``, as in scikit-learn: labels of the kind
        :meth:`fit` took (a number matches an equal number), or class names; integer labels
        against string classes (a loaded run) are class indices."""
        self._check_fitted()
        truth = _label_indices(y, self.classes_, "score: y", strict=False)
        if not len(truth):
            raise InputError("score: no inputs to score")
        predicted = self.predict_proba(X).argmax(axis=1)
        if len(truth) != len(predicted):
            raise InputError(f"score: {len(predicted)} inputs but {len(truth)} labels")
        return float(np.mean(predicted == truth))

    def predict_inputs(self, inputs: Sequence[Any], workers: int | None = 1,
                       progress: bool = False) -> list[Prediction]:
        """Predict each input; unreadable ones get ``ok=False`` and a one-line ``error``.

        ``workers``: processes that read and encode the inputs (``None``: every core when
        there are at least 64 inputs); ``progress``: a progress bar for 64 inputs or more.
        The inputs are read, encoded and inferred :data:`PREDICT_CHUNK` at a time, so the
        images in memory stay bounded however many inputs there are; the inference batches
        are those of all the images at once (the same answers), as in :meth:`predict_proba`.
        """
        self._check_fitted()
        items = expand_inputs(inputs)
        if workers is None:
            workers = (os.cpu_count() or 1) if len(items) >= 64 else 1
        with _progress(len(items), progress and len(items) >= 64) as bar:
            done = self._infer_in_chunks(items, self._infer, max(1, int(workers)), bar)
        ok, errors, notes = done.ok, done.errors, done.notes
        probs, iters, short = _merge_images(*done.outputs, done.counts)
        names = self._class_names()
        out = [Prediction(_input_name(item), False, error=errors[i], source=item)
               for i, item in enumerate(items)]
        for row, i in enumerate(ok):
            p = probs[row]
            if not np.isfinite(p).all():
                out[i].error = ("the model's output is not finite (the fixed-point solve "
                                "diverged); try another --solver")
                continue
            out[i] = Prediction(_input_name(items[i]), True, names[int(p.argmax())],
                                {c: float(v) for c, v in zip(names, p, strict=False)},
                                float(iters[row]) if np.isfinite(iters[row]) else None,
                                source=items[i],
                                warnings=notes[i] + _shortfall_note(float(short[row])))
        return out


Scientist = Classifier

_OWN_PARAMS = ("image", "conformers", "predict_batch_size")
"""Constructor parameters that are the Classifier's own, not training settings."""
_BATCH_SIZE_NOTE = ("Classifier.batch_size is deprecated: the inference batch is "
                    "predict_batch_size (batch_size= in Classifier(...) is the training batch)")
_HOLDOUT = 0.15
"""The share of each class fit() holds out for model selection and calibration."""
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside andersonn: the user's line."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars (also inside lists, tuples and dicts) as Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _train_config(config: dict[str, Any]) -> Any:
    """The :class:`TrainConfig` of constructor keywords (None is taken as given)."""
    from andersonn.training import TrainConfig

    return TrainConfig.from_dict({k: _plain(v) for k, v in config.items()})


def _positive_int(name: str, value: Any) -> int:
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


def _holdout_split(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Train (0) / val (1) split holding out a seeded ``_HOLDOUT`` share of every class of two
    or more members."""
    rng = np.random.default_rng(seed)
    splits = np.zeros(len(labels), np.int8)
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(labels == c))
        splits[idx[:max(1, round(_HOLDOUT * len(idx)))] if len(idx) > 1 else []] = 1
    return splits


def _images_or_inputs(X: Any, what: str) -> tuple[np.ndarray | None, list[Any] | None]:
    """(images (N, C, H, W) float32, None) when ``X`` holds images, else (None, its inputs).

    Images: a 4-D numeric array or tensor (detached), or a sequence of equal-shape 3-D ones.
    Inputs: a string or path (one input), a sequence, a 1-D string / object array, or any
    other iterable (a generator, a pandas Series)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(X, (str, os.PathLike, StructureRecord)):
        return None, [X]
    if not isinstance(X, (np.ndarray, Sequence)):
        if hasattr(X, "__array__"):  # a pandas Series or Index
            X = np.asarray(X)
        elif isinstance(X, Iterable):
            X = list(X)
        else:
            return None, [X]  # one structure object
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim > 1:
                raise InputError(f"{what}: give the inputs as a 1-D list or array, got an "
                                 f"array of shape {X.shape}")
            X = X.reshape(-1).tolist()
        elif X.ndim == 4:
            return X.astype(np.float32, copy=False), None
        else:
            hint = "; one image: pass X[None]" if X.ndim == 3 else ""
            raise InputError(f"{what}: expected images of shape (N, C, H, W) or a list of "
                             f"structures, got an array of shape {X.shape}{hint}")
    items = list(X)
    if items and all(isinstance(i, (np.ndarray, torch.Tensor)) for i in items):
        arrays = [np.asarray(i.detach().cpu() if isinstance(i, torch.Tensor) else i)
                  for i in items]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1 or len(shapes[0]) != 3:
            raise InputError(f"{what}: a list of arrays is taken as images, each (C, H, W) and "
                             f"all of one shape; got shapes {', '.join(map(str, shapes[:3]))}")
        return np.stack(arrays).astype(np.float32, copy=False), None
    return None, items


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
    labels; with them, integer labels are indices into ``classes``, others class names."""
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
        _check_distinct_names(values, "fit: y")
        return index.reshape(-1).astype(np.int64), values
    values = np.asarray(_plain(list(classes)))
    if values.ndim != 1:
        raise InputError("fit: classes must be a flat list of class names")
    names = _check_distinct_names(values, "fit: classes")
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
    against non-numeric classes (a loaded run's names) are indices."""
    arr = _label_array(y, what)
    numeric_classes = classes.dtype.kind in "iufb"
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

_Featurized = tuple[np.ndarray | None, str, list[str]]


class _Chunked(NamedTuple):
    """What :meth:`Classifier._infer_in_chunks` gives: the indices of the readable inputs,
    every input's one-line error ("" when none) and domain warnings, the images per readable
    input, and the arrays of ``infer`` over all their images, in order."""

    ok: list[int]
    errors: list[str]
    notes: list[list[str]]
    counts: list[int]
    outputs: tuple[np.ndarray, ...]


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
    """:func:`_featurize_with` of every input in up to ``workers`` processes, in input order;
    an input whose reading kills its process fails alone (:func:`map_in_processes`)."""
    from andersonn.parallel import CRASHED, map_in_processes

    return map_in_processes(
        _featurize_item, inputs, workers, initializer=_init_featurizer, initargs=(setup,),
        crashed=lambda _: (None, CRASHED, []))


def read_in_domain(item: Any, domain: Domain | None, max_atoms: int | None,
                   conformers: int = 1) -> tuple[list[Any], list[str]]:
    """The structures of one input (up to ``conformers`` for a SMILES; a ``Structure`` as it
    is) and the warnings on the first: the reader's notes and those of checking it against
    ``domain``; raises
    :class:`InputError` when the domain refuses it (a crystal for a molecule model)."""
    from andersonn.structures import read_conformers

    if isinstance(item, UnusableInput):
        raise InputError(item.reason)
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
    evaluations (``counts``: consecutive images per input; ``None``: one each). A row per
    image: (N, K) and (N,), or with more axes after the first (an ensemble's members)."""
    if counts is None or len(counts) == len(probs):
        return probs, iters
    starts = _first_rows(counts)
    sizes = np.asarray(counts, dtype=np.float64).reshape(-1, *[1] * (np.ndim(probs) - 1))
    return np.add.reduceat(probs, starts, axis=0) / sizes, np.add.reduceat(iters, starts, axis=0)


def _merge_images(probs: np.ndarray, iters: np.ndarray, short: np.ndarray,
                  counts: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image outputs of :meth:`Classifier._infer` as per-input ones: the images of one
    input (its conformers, ``counts``) merged by :func:`merge_conformers`, with the largest
    shortfall."""
    merged, iters = merge_conformers(probs, iters, counts)
    if len(merged) != len(probs):
        short = np.maximum.reduceat(short, _first_rows(counts))
    return merged, iters, short


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
    elif suffix == ".json":  # strict JSON: no NaN (a model without a solver has None)
        record = {**(meta or {}), "classes": list(classes),
                  "predictions": [p.to_dict() for p in preds]}
        atomic_write_json(path, record, allow_nan=False)
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

