"""The :class:`Classifier` estimator (``Scientist`` is another name for it): scikit-learn's
``fit`` / ``predict`` / ``predict_proba`` / ``score`` over trained runs, ``load`` of a finished
run, and ``predict_inputs`` with a per-input :class:`~andersonn.predict.Prediction`.

It ties the other modules of :mod:`andersonn.predict` together: it checks what it is given
(:mod:`~andersonn.predict.checks`, :mod:`~andersonn.predict.labels`), reads a run's settings
(:mod:`~andersonn.predict.run_files`), reads and encodes inputs a chunk at a time
(:mod:`~andersonn.predict.featurize`) and runs the model over the images
(:mod:`~andersonn.predict.inference`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.data.domain import Domain, DomainNote, FeatureDomain
from andersonn.errors import AndersonnError, ConfigError, InputError, warn_user
from andersonn.predict.checks import (
    _check_finite,
    _check_new_run_dir,
    _check_same_length,
    _images_or_inputs,
    _plain,
    _positive_int,
    _train_config,
)
from andersonn.predict.featurize import _Chunked, _progress, featurize_all, infer_in_chunks
from andersonn.predict.inference import _shortfall_note, infer_images, merge_images
from andersonn.predict.inputs import _input_name, expand_inputs, without_name
from andersonn.predict.labels import (
    _encode_labels,
    _fit_splits,
    _holdout_split,
    _label_indices,
)
from andersonn.predict.output import Prediction
from andersonn.predict.run_files import (
    _run_domain,
    _run_feature_domain,
    _run_temperature,
    check_featurizer_version,
    run_image_spec,
)
from andersonn.predict.warn import ConvergenceWarning, DomainWarning, ReadCaveatWarning

__all__ = ["Classifier", "Scientist"]


class Classifier:
    """Train, load and apply a DEQ (or explicit) graph-image classifier, scikit-learn style.

    ``Classifier(image=None, conformers=1, predict_batch_size=256, **train_config)`` takes any
    :class:`andersonn.training.TrainConfig` field (``model="deq"``, ``solver="anderson"``,
    ``epochs``, ``batch_size`` (training), ``hidden``, ...; numpy numbers are taken as Python
    numbers); ``image`` is the graph-image preset :meth:`fit` encodes structures with (default:
    by their kind); ``conformers``: a SMILES input is averaged over up to this many force-field
    conformers; ``predict_batch_size``: images per inference batch (both checked when
    assigned too). ``get_params`` / ``set_params`` cover all of them; ``get_params`` gives
    back the very objects the constructor (or ``set_params``) was given, checked but not
    rewritten (numpy numbers excepted, taken as Python numbers on the way in), so
    ``sklearn.base.clone`` gives an unfitted copy.
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
        self.conformers = conformers
        self.predict_batch_size = predict_batch_size
        given = {k: _plain(v) for k, v in config.items()}
        self.train_config = _train_config(given)
        self._keep_settings(given)
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
    @property
    def conformers(self) -> int:
        """Up to this many force-field conformers are averaged for a SMILES input (>= 1)."""
        return self._conformers

    @conformers.setter
    def conformers(self, value: int) -> None:
        self._conformers = _positive_int("conformers", value)

    @property
    def predict_batch_size(self) -> int:
        """Images per inference batch (>= 1)."""
        return self._predict_batch_size

    @predict_batch_size.setter
    def predict_batch_size(self, value: int) -> None:
        self._predict_batch_size = _positive_int("predict_batch_size", value)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters: ``image``, ``conformers``, ``predict_batch_size`` and
        every training setting (``type(self)(**self.get_params())`` is an unfitted copy). A
        value given to the constructor or :meth:`set_params` comes back as that very object
        (as ``sklearn.base.clone`` requires), the others as the training config holds them."""
        return {"image": self.image, "conformers": self.conformers,
                "predict_batch_size": self.predict_batch_size, **self._settings()}

    def set_params(self, **params: Any) -> Classifier:
        """Change parameters (as :meth:`get_params` names them); checked together, as the
        constructor checks them (:class:`ConfigError`); returns ``self``.

        Most training settings apply to the next :meth:`fit`. On a fitted (or loaded) DEQ the
        inference solve follows at once: ``solver``, ``solver_options``, ``eval_tol`` /
        ``eval_max_iter`` (``tol`` / ``max_iter`` where those are None) change what
        :meth:`predict` and the others solve with; and ``device`` moves a fitted model there.
        A refused change leaves the classifier as it was."""
        own = {k: params.pop(k) for k in _OWN_PARAMS if k in params}
        given = {k: _plain(v) for k, v in params.items()}
        settings = self._settings()
        config = _train_config({**settings, **given})
        conformers = _positive_int("conformers", own.get("conformers", self.conformers))
        batch = _positive_int("predict_batch_size",
                              own.get("predict_batch_size", self.predict_batch_size))
        if self.model_ is not None:
            self._apply_inference_settings(self.train_config, config, "device" in given)
        self.train_config, self.conformers, self.predict_batch_size = config, conformers, batch
        self.image = own.get("image", self.image)
        self._keep_settings({**settings, **given})
        return self

    def _apply_inference_settings(self, old: Any, new: Any, move: bool) -> None:
        """Give the fitted model the inference settings of training config ``new`` (the one
        it answered with was ``old``): the DEQ's solver and evaluation options where they
        changed, and where ``move``, ``new.device``. Raises :class:`ConfigError` with the
        model as it was."""
        model = self._check_fitted()
        device = None
        if move:  # checked before anything changes
            from andersonn.training.distributed import resolve_device

            device = resolve_device(new.device, what=f"set_params(device={new.device!r})")
        before, after = old.forward_options(evaluation=True), new.forward_options(evaluation=True)
        if _solves(model) and (old.solver != new.solver or before != after):
            name, options = model.solver_name, dict(model.solver_options)
            # options that changed, over the model's own (so a load's override of another
            # option stays); options the config no longer holds are dropped
            model.solver_options = {k: v for k, v in options.items()
                                    if k in after or k not in before}
            model.solver_options.update({k: v for k, v in after.items()
                                         if k not in before or before[k] != v})
            try:
                model.set_solver(new.solver if new.solver != old.solver else None)
            except AndersonnError as exc:
                model.solver_name, model.solver_options = name, options
                raise ConfigError(f"set_params: {exc}") from None
        if device is not None and device != self.device:
            model.to(device)
            self.device = device

    def _keep_settings(self, given: dict[str, Any]) -> None:
        """Keep the training settings as given (numpy numbers already Python ones), for
        :meth:`get_params` to give back unchanged while the training config still holds
        them."""
        self._given_settings = dict(given)

    def _settings(self) -> dict[str, Any]:
        """Every training setting but ``image`` (a labels file's preset: the Classifier's own
        ``image`` is the one): the object given for it where the training config still holds
        an equal value, else the config's value (the config may have been replaced since)."""
        current = self.train_config.to_dict()
        current.pop("image")
        kept = self.__dict__.get("_given_settings", {})
        settings = {k: kept[k] if k in kept and _same(kept[k], v) else v
                    for k, v in current.items()}
        self._given_settings = settings  # later calls give back these same objects
        return settings

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
        ``eval_max_iter``); ``solver`` / ``solver_options`` override them, and
        :meth:`get_params` shows the overrides (``solver``; ``solver_options``' ``tol`` and
        ``max_iter`` as ``eval_tol`` and ``eval_max_iter``, its other options in
        ``solver_options``). The classes are the run's class names (strings: a run does not
        record the labels' original kind)."""
        from andersonn.training import TrainConfig, load_run

        model, run_config = load_run(run_dir, device=device,
                                     what=f"{cls.__name__}.load(device={device!r})")
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
            check_featurizer_version(run_dir, version, self._spec())
        self.device = next(model.parameters()).device  # as load_run resolved it
        self.run_dir_ = str(run_dir)
        if solver is not None or solver_options is not None:
            model.set_solver(solver, solver_options)
            if _solves(model):
                self.train_config = _with_inference_solver(self.train_config, solver,
                                                           solver_options, cls.__name__)
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
        ...). With ``classes`` (the class order), integer labels (and whole-number floats,
        unless the classes are floats) are indices into it and any other labels are class
        names. NaN / None labels are refused. Images without ``val``
        hold out a stratified 15 % (seeded) for model selection and calibration; so do
        structures (encoded with the :attr:`image` preset, default: by their kind; unreadable
        ones are skipped with a warning; ``val`` is for images only). Everything else is
        trained on: nothing is set aside for a test. ``out_dir``: a new folder that keeps the
        run (loadable with :meth:`load`); one that already holds a run is refused.
        """
        images, inputs = _images_or_inputs(X, "fit: X")
        _check_new_run_dir(out_dir)
        device = self.train_config.device
        if isinstance(device, (str, torch.device)):  # refused before any featurising
            from andersonn.training.distributed import resolve_device

            resolve_device(device, what=f"Classifier(device={device!r})")
        if images is None:
            return self._fit_structures(inputs, y, classes, val, out_dir, progress)
        labels, values = _encode_labels(y, classes)
        _check_same_length(len(images), len(labels), "fit", "images")
        _check_finite(images, "fit: X")
        images, all_labels, splits = _fit_splits(images, labels, values, val, classes,
                                                 self.train_config.seed)
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
            warn_user(f"fit: {describe_skipped(ds.report['skipped'])}", UserWarning)
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
            self.spec_ = run_image_spec(self.config_)
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
        return featurize_all(setup, inputs, workers, bar)

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

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (N, K) float64, solver iterations per sample (N,), shortfall (N,)):
        the shortfall is a sample's lowest relative residual over the tolerance where the
        solver stopped short of it, else 0. A model without a solver has NaN iterations."""
        return infer_images(self._check_fitted(), images, self.predict_batch_size, self.device,
                            self.temperature_, len(self.classes_))

    def _infer_inputs(self, images: np.ndarray, counts: Sequence[int] | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_infer` with the images of one input (its conformers, ``counts``) merged:
        the mean of their probabilities, the sum of their solver evaluations (the cost), the
        largest shortfall."""
        return merge_images(*self._infer(images), counts)

    def _infer_in_chunks(self, items: Sequence[Any],
                         infer: Callable[[np.ndarray], tuple[np.ndarray, ...]], workers: int = 1,
                         bar: Any | None = None, conformers: int | None = None,
                         all_or_none: bool = False) -> _Chunked:
        """Read and encode ``items`` ``PREDICT_CHUNK`` at a time and apply ``infer`` (images
        → arrays with a row per image) to their images, so the images in memory stay bounded
        however many inputs there are. ``infer`` is given whole :attr:`predict_batch_size`
        batches (the last excepted): the batches of all the images at once, the same answers.
        ``all_or_none``: once an input has failed, the rest are only read (for their errors),
        nothing more is inferred."""
        shape = tuple(self.config_.get("image_shape") or ()) or (0, 0, 0)
        return infer_in_chunks(lambda chunk: self._featurize(chunk, workers, bar, conformers),
                               items, infer, self.predict_batch_size, shape, all_or_none)

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
        for kind, category, is_domain in (("outside the training domain", DomainWarning, True),
                                          ("read with a caveat", ReadCaveatWarning, False)):
            named = [f"{_input_name(items[i])}: {'; '.join(picked)}"
                     for i, notes in enumerate(done.notes)
                     if (picked := [n for n in notes if isinstance(n, DomainNote) == is_domain])]
            if named:
                warn_user(f"{len(named)} input(s) {kind}: {' | '.join(named[:5])}", category)
        return done.outputs, done.counts

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K), float64, columns in :attr:`classes_` order, for images or
        structure inputs (all must be readable; read, encoded and inferred
        ``PREDICT_CHUNK`` at a time); a :class:`ConvergenceWarning` where a solve stopped
        short of its tolerance."""
        outputs, counts = self._outputs(X, self._infer)
        probs, _iters, short = merge_images(*outputs, counts)
        stopped = np.flatnonzero(short > 1.0)
        if len(stopped):
            rows = ", ".join(str(i) for i in stopped[:5]) + (", …" if len(stopped) > 5 else "")
            note = _shortfall_note(float(short[stopped].max()), _PYTHON_SOLVER_ADVICE)[0]
            warn_user(f"{len(stopped)} of {len(short)} input(s) (rows {rows}): {note}",
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
        (whole-number floats too) against string classes (a loaded run) are class indices. A
        label that is none of :attr:`classes_` is refused (:class:`InputError`)."""
        self._check_fitted()
        truth = _label_indices(y, self.classes_, "score: y", strict=True)
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
        The inputs are read, encoded and inferred ``PREDICT_CHUNK`` at a time, so the
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
        probs, iters, short = merge_images(*done.outputs, done.counts)
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
_PYTHON_SOLVER_ADVICE = ("try a larger max_iter (Classifier.load(..., "
                         "solver_options={'max_iter': N})) or another solver (solver=...)")
"""What the Python API advises where a fixed-point solve stopped short (the CLI's advice names
its --max-iter and --solver)."""


def _solves(model: torch.nn.Module) -> bool:
    """Whether a model solves a fixed point (a DEQ, not the explicit network)."""
    return getattr(model, "model_name", "deq") == "deq" and hasattr(model, "set_solver")


def _with_inference_solver(config: Any, solver: str | None,
                           solver_options: dict[str, Any] | None, where: str) -> Any:
    """``config`` (a TrainConfig) with a load's solver overrides, as :meth:`Classifier.load`
    applied them: ``solver``, ``solver_options``' ``tol`` / ``max_iter`` as ``eval_tol`` /
    ``eval_max_iter`` and its other options merged into ``solver_options``."""
    options = {k: _plain(v) for k, v in (solver_options or {}).items()}
    changes: dict[str, Any] = {} if solver is None else {"solver": solver}
    for option, field in (("tol", "eval_tol"), ("max_iter", "eval_max_iter")):
        if option in options:
            changes[field] = options.pop(option)
    if options:
        changes["solver_options"] = {**config.solver_options, **options}
    try:
        return _train_config({**config.to_dict(), **changes})
    except ConfigError as exc:
        raise ConfigError(f"{where}.load: solver={solver!r}, solver_options="
                          f"{solver_options!r}: {exc}") from None


def _same(a: Any, b: Any) -> bool:
    """Whether a setting as given (``a``) is the value the training config holds (``b``)."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a value whose == is not a plain truth value
        return False
_BATCH_SIZE_NOTE = ("Classifier.batch_size is deprecated: the inference batch is "
                    "predict_batch_size (batch_size= in Classifier(...) is the training batch)")


class _ArrayDataset:
    """In-memory dataset with the attributes the trainer reads."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                 classes: list[str]) -> None:
        self.images, self.labels, self.splits, self.classes = images, labels, splits, classes
        self.ids = [str(i) for i in range(len(labels))]
        self.meta: dict[str, Any] = {"task": "custom"}
