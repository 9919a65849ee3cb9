"""Deep ensembles: several trained runs of one task answering together.

``Ensemble.from_runs([run_a, run_b, ...])`` loads finished runs (typically the same command with
different ``--seed``) and averages their calibrated class probabilities. It is a
:class:`andersonn.predict.Classifier`, so ``predict``, ``predict_proba``, ``score`` and
``predict_inputs`` work as for one run; each input is read and encoded once. The members must
agree on the task, the classes, the image spec, the image shape and the featuriser version
(otherwise their images or outputs would mean different things); the first member's
applicability domain is used for the domain warnings. ``iterations`` of a prediction is the sum
of the members' solver evaluations: the ensemble's cost (over the members that solve a fixed
point; none when no member does).

``Ensemble.of_seeds(n, **train_config)`` + ``fit`` trains ``n`` members whose seeds are
``seed, seed + 1, ...``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.predict import Classifier, _check_new_run_dir, merge_conformers

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
        """Load finished runs (see :meth:`Classifier.load`); refuse runs that disagree."""
        return cls._from_runs(run_dirs, device, solver, solver_options, "from_runs")

    @classmethod
    def _from_runs(cls, run_dirs: Sequence[str | Path], device: str, solver: str | None,
                   solver_options: dict[str, Any] | None, method: str) -> Ensemble:
        """:meth:`from_runs`, a refused ``device`` named as the parameter of ``method``."""
        from andersonn.training.distributed import resolve_device

        if not run_dirs:
            raise InputError("an Ensemble needs at least one run directory")
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
        self._check_fitted()
        outputs = [member._infer(images) for member in self.members]
        probs = np.mean([p for p, _, _ in outputs], axis=0)
        iters = solver_evaluations(np.stack([it for _, it, _ in outputs]))
        return probs, iters, np.max([s for _, _, s in outputs], axis=0)

    def member_probabilities(self, X: Any) -> np.ndarray:
        """Each member's calibrated probabilities, shape (members, N, K)."""
        outputs, counts = self._outputs(X, self._member_infer)
        return self._per_member(*outputs, counts)[0]

    def member_outputs(self, images: np.ndarray, counts: Sequence[int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Each member's calibrated probabilities (members, N, K) and solver evaluations
        (members, N) per input; ``counts``: images per input (its conformers), merged as in
        :func:`andersonn.predict.merge_conformers`."""
        return self._per_member(*self._member_infer(images), counts)

    def _member_infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each member's calibrated probabilities (N, members, K) and solver evaluations
        (N, members) per image: a row per image, as :meth:`_infer_in_chunks` joins them."""
        self._check_fitted()
        outputs = [member._infer(images)[:2] for member in self.members]
        return (np.stack([p for p, _ in outputs], axis=1),
                np.stack([it for _, it in outputs], axis=1))

    @staticmethod
    def _per_member(probs: np.ndarray, iters: np.ndarray, counts: Sequence[int] | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_member_infer`'s arrays per input (``counts``: images per input), members
        first: (members, N, K) and (members, N)."""
        probs, iters = merge_conformers(probs, iters, counts)
        return probs.transpose(1, 0, 2), iters.T

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        runs = [getattr(m, "run_dir_", None) for m in self.members]
        shown = runs if all(runs) else f"{len(self.members)} members"
        return f"Ensemble({shown})"

