"""Deep ensembles: several trained runs of one task answering together.

``Ensemble.from_runs([run_a, run_b, ...])`` loads finished runs (typically the same command with
different ``--seed``) and averages their calibrated class probabilities. It is a
:class:`andersonn.predict.Classifier`, so ``predict``, ``predict_proba``, ``score`` and
``predict_inputs`` work as for one run; each input is read and encoded once. The members must
agree on the task, the classes, the image spec, the image shape and the featuriser version
(otherwise their images or outputs would mean different things), and no run may be given
twice (it would count as two members); the first member's applicability domain is used for
the domain warnings. ``iterations`` of a prediction is the sum of the members' solver
evaluations: the ensemble's cost (over the members that solve a fixed point; none when no
member does).

``Ensemble.of_seeds(n, **train_config)`` + ``fit`` trains ``n`` members whose seeds are
``seed, seed + 1, ...``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.predict import Classifier, _check_new_run_dir
from andersonn.predict.inference import merge_images

__all__ = ["MATCHED_KEYS", "Ensemble", "solver_evaluations"]

MATCHED_KEYS = ("task", "classes", "image_spec", "image_shape", "featurizer_version")
"""Run-config entries every member must share."""


def solver_evaluations(iters: np.ndarray) -> np.ndarray:
    """The ensemble's solver evaluations per input from its members' (members, N): the sum
    over the members that solve a fixed point (an explicit network's are NaN); NaN where
    none does."""
    iters = np.asarray(iters, dtype=np.float64)
    solved = ~np.isnan(iters)
    return np.where(solved.any(axis=0), np.where(solved, iters, 0.0).sum(axis=0), np.nan)


class Ensemble(Classifier):
    """The mean of its members' calibrated probabilities (members: fitted or unfitted
    :class:`Classifier` objects; unfitted ones are trained by :meth:`fit`)."""

    def __init__(self, members: Sequence[Classifier]) -> None:
        # a list is kept as given: get_params gives back that very object (sklearn's clone)
        members = members if type(members) is list else list(members)
        if not members:
            raise InputError("an Ensemble needs at least one member")
        if not all(isinstance(m, Classifier) for m in members):
            raise InputError("Ensemble members must be andersonn Classifier objects")
        super().__init__()
        self.members = members
        self.train_config = members[0].train_config
        if all(m.model_ is not None for m in members):
            self._adopt_members()

    @classmethod
    def from_runs(cls, run_dirs: Sequence[str | Path], device: str = "cpu",
                  solver: str | None = None, solver_options: dict[str, Any] | None = None
                  ) -> Ensemble:
        """Load finished runs (see :meth:`Classifier.load`); refuse runs that disagree, and a
        run given twice (as resolved paths: it would count as two members)."""
        return cls._from_runs(run_dirs, device, solver, solver_options, "from_runs")

    @classmethod
    def _from_runs(cls, run_dirs: Sequence[str | Path], device: str, solver: str | None,
                   solver_options: dict[str, Any] | None, method: str) -> Ensemble:
        """:meth:`from_runs`, a refused ``device`` named as the parameter of ``method``."""
        from andersonn.training.distributed import resolve_device

        if not run_dirs:
            raise InputError("an Ensemble needs at least one run directory")
        _check_distinct_runs(run_dirs)
        resolve_device(device, what=f"{cls.__name__}.{method}(device={device!r})")
        return cls([Classifier.load(d, device=device, solver=solver,  # each names its run_dir_
                                    solver_options=solver_options) for d in run_dirs])

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", solver: str | None = None,
             solver_options: dict[str, Any] | None = None) -> Ensemble:
        """An ensemble of the one run ``run_dir`` (see :meth:`from_runs`)."""
        return cls._from_runs([run_dir], device, solver, solver_options, "load")

    @classmethod
    def of_seeds(cls, n: int, **config: Any) -> Ensemble:
        """``n`` unfitted members with the same training config and seeds seed, seed+1, ..."""
        if n < 1:
            raise InputError(f"of_seeds: n must be at least 1, got {n}")
        first = Classifier(**config)
        seed = first.train_config.seed
        return cls([first] + [Classifier(**{**config, "seed": seed + i}) for i in range(1, n)])

    def fit(self, X: Any, y: Sequence[Any], classes: Sequence[str] | None = None,
            val: tuple[Any, Sequence[Any]] | None = None, out_dir: str | Path | None = None,
            progress: bool = False) -> Ensemble:
        """Fit every member on the same data (member ``i`` writes to ``out_dir/member-i``).

        Without ``val`` each member holds out its own seeded 15 % for model selection, so the
        members also differ in the data they select on."""
        dirs = [Path(out_dir) / f"member-{i}" if out_dir is not None else None
                for i in range(len(self.members))]
        for member_dir in dirs:  # refused before any member trains
            _check_new_run_dir(member_dir)
        X, y = (list(v) if isinstance(v, Iterator) else v for v in (X, y))  # each member reads
        self._unfit()
        for member, member_dir in zip(self.members, dirs, strict=True):
            member.fit(X, y, classes=classes, val=val, out_dir=member_dir, progress=progress)
        self._adopt_members()
        return self

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameter: ``members``, the very list given to it, as
        ``sklearn.base.clone`` requires (``type(self)(**self.get_params())`` is an ensemble
        of the same members)."""
        return {"members": self.members}

    def set_params(self, **params: Any) -> Ensemble:
        """Replace ``members`` (the only parameter); the ensemble is then refitted or adopts
        them when all are fitted."""
        unknown = sorted(set(params) - {"members"})
        if unknown:
            raise ConfigError(f"unknown Ensemble parameter(s) {', '.join(unknown)}; it has "
                              "members (set a member's own with "
                              "ensemble.members[i].set_params(...))")
        if "members" in params:
            # a fresh ensemble, state copied over: its checks run before anything is replaced,
            # and Classifier.__init__'s defaults (set through the members: predict_batch_size)
            # never reach the members being replaced
            fresh = type(self)(params["members"])
            vars(self).clear()
            vars(self).update(vars(fresh))
        return self

    def _adopt_members(self) -> None:
        """Check the fitted members agree and take the shared attributes from the first."""
        first = self.members[0]
        for i, member in enumerate(self.members[1:], start=1):
            for key in MATCHED_KEYS:
                if member.config_.get(key) != first.config_.get(key):
                    name = getattr(member, "run_dir_", None) or f"member {i}"
                    raise AndersonnError(
                        f"{name}: its {key} ({member.config_.get(key)!r:.60}) differs from the "
                        f"first member's ({first.config_.get(key)!r:.60}); an ensemble needs "
                        "runs of one task on the same images")
        self.model_ = first.model_
        self.config_ = first.config_
        self.classes_ = first.classes_.copy()
        self.spec_ = first.spec_
        self.domain_ = first.domain_
        self.feature_domain_ = first.feature_domain_
        self.temperature_ = 1.0  # each member applies its own
        self.device = first.device

    @property
    def predict_batch_size(self) -> int:
        """Inference batch size of every member."""
        return self.members[0].predict_batch_size if hasattr(self, "members") else 256

    @predict_batch_size.setter
    def predict_batch_size(self, value: int) -> None:
        for member in getattr(self, "members", []):
            member.predict_batch_size = value

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean probabilities (N, K), summed solver evaluations (N,) and the largest solver
        shortfall (N,) over the members."""
        probs, iters, short = self._member_infer(images)
        return probs.mean(axis=1), solver_evaluations(iters.T), short.max(axis=1)

    def member_probabilities(self, X: Any) -> np.ndarray:
        """Each member's calibrated probabilities, shape (members, N, K)."""
        outputs, counts = self._outputs(X, self._member_infer)
        return self._per_member(*outputs, counts)[0]

    def member_outputs(self, images: np.ndarray, counts: Sequence[int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each member's calibrated probabilities (members, N, K), solver evaluations and
        solver shortfall (members, N; the lowest relative residual where a solve stopped short
        of its tolerance, else 0) per input; ``counts``: images per input (its conformers),
        merged as in :func:`andersonn.predict.merge_conformers`."""
        return self._per_member(*self._member_infer(images), counts)

    def _member_infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each member's calibrated probabilities (N, members, K), solver evaluations and
        solver shortfall (N, members) per image (:meth:`Classifier._infer`): a row per image,
        as :meth:`_infer_in_chunks` joins them. The one loop over the members: the ensemble's
        own answers (:meth:`_infer`) and :mod:`andersonn.evaluate` start from it."""
        self._check_fitted()
        outputs = [member._infer(images) for member in self.members]
        probs, iters, short = (np.stack(arrays, axis=1) for arrays in zip(*outputs, strict=True))
        return probs, iters, short

    @staticmethod
    def _per_member(probs: np.ndarray, iters: np.ndarray, short: np.ndarray,
                    counts: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_member_infer`'s arrays per input (``counts``: images per input, merged by
        :func:`andersonn.predict.inference.merge_images`), members first: (members, N, K),
        (members, N) and (members, N)."""
        probs, iters, short = merge_images(probs, iters, short, counts)
        return probs.transpose(1, 0, 2), iters.T, short.T

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        runs = [getattr(m, "run_dir_", None) for m in self.members]
        shown = runs if all(runs) else f"{len(self.members)} members"
        return f"Ensemble({shown})"


def _check_distinct_runs(runs: Sequence[str | Path]) -> None:
    """Refuse a run given twice (compared as resolved paths): an ensemble of a run with itself
    would score as an ensemble of two."""
    seen: dict[Path, str | Path] = {}
    for run in runs:
        key = Path(run).resolve()
        if key in seen:
            first = seen[key]
            spelled = "" if str(first) == str(run) else f" (as {first} and {run})"
            raise InputError(f"run {first} is given twice{spelled}; an ensemble needs distinct "
                             "runs: give each once")
        seen[key] = run
