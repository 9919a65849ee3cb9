"""The applicability domain of a dataset: what kind of structures, which elements, what sizes.

A classifier answers for any image it is given, also for a molecule handed to a crystal model or
a chlorine compound handed to a model that never saw chlorine. The dataset build records, over
the training split, the structure kind (molecule or crystal), how many training structures hold
each element and the range of atom counts; training copies it into the run's ``config.json``,
and prediction checks every input against it: the wrong kind is an error (the images would mean
something else), unseen elements and sizes outside the training range are warnings.

A *summary* of one structure is ``(atomic numbers present, sorted; number of atoms; periodic;
number of heavy atoms)``, :meth:`andersonn.structures.Structure.summary`, cheap to make where the
structure is parsed (older three-field summaries are accepted: no heavy-atom range then).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from andersonn.structures.elements import SYMBOL_TO_Z, SYMBOLS
from andersonn.structures.structure import StructureSummary

__all__ = ["FEATURE_QUANTILE", "MIN_PER_DIMENSION", "Domain", "DomainNote", "FeatureDomain",
           "image_summaries"]

KINDS = ("molecule", "crystal", "mixed")


class DomainNote(str):
    """A warning that an input lies outside the training domain, as opposed to a reader's
    caveat on the input itself (fragments laid apart, disordered sites): a plain string that
    ``evaluate`` can tell apart when it splits accuracy inside / outside the domain."""


@dataclass(frozen=True)
class Domain:
    """What the training split held.

    ``kind``: ``"molecule"``, ``"crystal"`` or ``"mixed"``; ``elements``: element symbol →
    number of training structures containing it (``None``: not recorded); ``atoms``: fewest and
    most atoms per structure (per cell for crystals; ``None``: not recorded); ``n``: training
    structures summarised (0 when only the kind is known).
    """

    kind: str
    elements: Mapping[str, int] | None = None
    atoms: tuple[int, int] | None = None
    n: int = 0
    heavy_atoms: tuple[int, int] | None = None

    @classmethod
    def from_summaries(cls, summaries: Iterable[Sequence[Any]]) -> Domain:
        """The domain of the structures behind ``summaries`` (at least one)."""
        counts: Counter[int] = Counter()
        sizes: list[int] = []
        heavy: list[int] = []
        kinds: set[bool] = set()
        for numbers, n_atoms, periodic, *rest in summaries:
            counts.update(set(numbers))
            sizes.append(int(n_atoms))
            kinds.add(bool(periodic))
            if rest:
                heavy.append(int(rest[0]))
        if not sizes:
            raise ValueError("a domain needs at least one structure")
        kind = "mixed" if len(kinds) > 1 else ("crystal" if kinds.pop() else "molecule")
        elements = {SYMBOLS[z]: counts[z] for z in sorted(counts)}
        heavy_range = (min(heavy), max(heavy)) if len(heavy) == len(sizes) else None
        return cls(kind, elements, (min(sizes), max(sizes)), len(sizes), heavy_range)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {"kind": self.kind, "n": self.n,
                "elements": dict(self.elements) if self.elements is not None else None,
                "atoms": list(self.atoms) if self.atoms is not None else None,
                "heavy_atoms": list(self.heavy_atoms) if self.heavy_atoms is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Domain:
        """Inverse of :meth:`to_dict`; a malformed record raises ``ValueError``."""
        kind = str(data.get("kind"))
        if kind not in KINDS:
            raise ValueError(f"domain kind {kind!r} is not one of {', '.join(KINDS)}")
        elements = data.get("elements")
        atoms = data.get("atoms")
        if elements is not None:
            elements = {str(k): int(v) for k, v in dict(elements).items()}
            unknown = [k for k in elements if k not in SYMBOL_TO_Z]
            if unknown:
                raise ValueError(f"domain lists unknown element(s) {', '.join(unknown[:5])}")
        return cls(kind, elements, _range(atoms), int(data.get("n", 0)),
                   _range(data.get("heavy_atoms")))

    def describe(self) -> str:
        """One line for ``data info`` and reports."""
        parts = [f"{self.kind}s" if self.kind != "mixed" else "molecules and crystals"]
        if self.n:
            parts.append(f"{self.n} training structures")
        if self.elements is not None:
            parts.append(f"{len(self.elements)} elements ({_symbol_list(self.elements)})")
        if self.atoms is not None:
            parts.append(f"{_span(*self.atoms)} atoms"
                         + (" per cell" if self.kind == "crystal" else ""))
        if self.heavy_atoms is not None and self.kind == "molecule":
            parts.append(f"{_span(*self.heavy_atoms)} heavy atoms")
        return ", ".join(parts)

    def kind_error(self, kind: str) -> str | None:
        """The error for a structure of ``kind`` ("molecule" or "crystal") given to a model of
        the other kind; None where the kind fits."""
        if self.kind in ("molecule", "crystal") and kind != self.kind:
            return (f"a {kind}, but this model was trained on {self.kind}s only; "
                    f"its prediction would mean nothing")
        return None

    def check(self, summary: StructureSummary | Sequence[Any]) -> tuple[str | None, list[str]]:
        """``(error, warnings)`` for one structure's summary.

        The wrong kind (a molecule for a crystal model, or the reverse) is an error; elements no
        training structure held, and (molecules) atom counts outside the training range, are
        warnings. Crystal cells are not size-checked: a supercell is the same crystal.
        """
        numbers, n_atoms, periodic, *rest = summary
        kind = "crystal" if periodic else "molecule"
        problem = self.kind_error(kind)
        if problem is not None:
            return problem, []
        warnings: list[str] = []
        if self.elements is not None:
            unseen = [SYMBOLS[z] for z in numbers if SYMBOLS[z] not in self.elements]
            if unseen:
                warnings.append(f"element{'s' if len(unseen) > 1 else ''} "
                                f"{', '.join(unseen)} not in any of the {self.n} training "
                                "structures")
        if self.atoms is not None and kind == "molecule":
            lo, hi = self.atoms
            n_heavy = int(rest[0]) if rest and self.heavy_atoms is not None else None
            inside = lo <= n_atoms <= hi
            if n_heavy is None:
                if not inside:
                    warnings.append(f"{n_atoms} atoms; the training molecules had "
                                    f"{_span(lo, hi)}")
            else:
                h_lo, h_hi = self.heavy_atoms  # type: ignore[misc]
                if not (inside and h_lo <= n_heavy <= h_hi):
                    warnings.append(f"{n_atoms} atoms ({n_heavy} heavy); the training "
                                    f"molecules had {_span(lo, hi)} ({_span(h_lo, h_hi)} "
                                    "heavy)")
        return None, [DomainNote(w) for w in warnings]


def _span(lo: int, hi: int) -> str:
    """``5–9``, or ``7`` when the range is one number."""
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    lo, hi = (int(v) for v in value)
    return lo, hi


def _symbol_list(elements: Mapping[str, int], limit: int = 12) -> str:
    symbols = sorted(elements, key=lambda s: SYMBOL_TO_Z[s])
    if len(symbols) <= limit:
        return " ".join(symbols)
    return " ".join(symbols[:limit]) + f" … {symbols[-1]}"


FEATURE_QUANTILE = 0.999  # training structures farther than this quantile: the warning's line
MIN_PER_DIMENSION = 5  # fewer training images than this × summary size: no feature domain


def image_summaries(images: Any, rows: Any = None, chunk: int = 4096) -> np.ndarray:
    """(N, 2C) per-channel mean and maximum over each image's occupied pixels (float64), of
    ``images[rows]`` (all when None), read ``chunk`` images at a time (memory-mapped builds)."""
    index = np.arange(len(images)) if rows is None else np.asarray(rows)
    parts = []
    for start in range(0, len(index), chunk):
        img = np.asarray(images[index[start:start + chunk]], dtype=np.float64)
        occupied = np.abs(img).sum(1, keepdims=True) > 0
        count = np.maximum(occupied.sum((2, 3)), 1)
        mean = (img * occupied).sum((2, 3)) / count
        peak = np.where(occupied, img, -np.inf).max((2, 3))
        parts.append(np.concatenate([mean, np.where(np.isfinite(peak), peak, 0.0)], 1))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


@dataclass(frozen=True)
class FeatureDomain:
    """Where the training images lie: mean and (regularised) precision of their per-channel
    summaries, and the Mahalanobis distance that ``FEATURE_QUANTILE`` of them stay within.

    Elements are a coarse check: a metal-organic framework is made of elements a crystal model
    has seen, yet it is nothing like its training crystals. Its summary lies far from theirs.
    """

    mean: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    threshold: float

    @classmethod
    def fit(cls, images: Any, rows: Any = None) -> FeatureDomain:
        """Fit to training images (N, C, H, W) (``images[rows]`` when given); ``ValueError``
        when N < 5 × 2C (too few to estimate a covariance: every input would look far away)."""
        x = image_summaries(images, rows)
        if x.shape[0] < MIN_PER_DIMENSION * max(x.shape[1], 1):
            raise ValueError(f"a feature domain needs {MIN_PER_DIMENSION} training images per "
                             f"summary dimension ({MIN_PER_DIMENSION * x.shape[1]}), got "
                             f"{x.shape[0]}")
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False)
        ridge = 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12)
        precision = np.linalg.inv(cov + ridge * np.eye(len(cov)))
        d = _mahalanobis(x, mean, precision)
        return cls(tuple(mean.tolist()), tuple(tuple(r) for r in precision.tolist()),
                   float(np.quantile(d, FEATURE_QUANTILE)))

    def distances(self, images: Any) -> np.ndarray:
        """Mahalanobis distance of each image's summary from the training summaries."""
        return _mahalanobis(image_summaries(images), np.asarray(self.mean),
                            np.asarray(self.precision))

    def check(self, image: np.ndarray) -> list[str]:
        """A warning when ``image`` (C, H, W) lies beyond the training threshold."""
        d = float(self.distances(image[None])[0])
        if d <= self.threshold:
            return []
        return [DomainNote(f"unlike the training structures (feature distance {d:.1f}; "
                           f"{FEATURE_QUANTILE:.1%} of them are within {self.threshold:.1f})")]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {"mean": list(self.mean), "precision": [list(r) for r in self.precision],
                "threshold": self.threshold, "quantile": FEATURE_QUANTILE}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureDomain:
        """Inverse of :meth:`to_dict`; a malformed record raises ``ValueError``."""
        mean = np.asarray(data["mean"], dtype=np.float64)
        precision = np.asarray(data["precision"], dtype=np.float64)
        if mean.ndim != 1 or precision.shape != (len(mean), len(mean)):
            raise ValueError("feature domain: mean and precision shapes disagree")
        return cls(tuple(mean.tolist()), tuple(tuple(r) for r in precision.tolist()),
                   float(data["threshold"]))


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = x - mean
    return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", centred, precision, centred), 0.0))
