"""The applicability domain of a dataset: what kind of structures, which elements, what sizes.

A classifier answers for any image it is given, also for a molecule handed to a crystal model or
a chlorine compound handed to a model that never saw chlorine. The dataset build records, over
the training split, the structure kind (molecule or crystal), how many training structures hold
each element and the range of atom counts; training copies it into the run's ``config.json``,
and prediction checks every input against it: the wrong kind is an error (the images would mean
something else), unseen elements and sizes outside the training range are warnings.

A *summary* of one structure is ``(atomic numbers present, sorted; number of atoms; periodic)``,
:meth:`andersonn.structures.Structure.summary`, cheap to make where the structure is parsed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from andersonn.structures.elements import SYMBOL_TO_Z, SYMBOLS
from andersonn.structures.structure import StructureSummary as Summary

__all__ = ["Domain"]

KINDS = ("molecule", "crystal", "mixed")


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

    @classmethod
    def from_summaries(cls, summaries: Iterable[Summary]) -> Domain:
        """The domain of the structures behind ``summaries`` (at least one)."""
        counts: Counter[int] = Counter()
        sizes: list[int] = []
        kinds: set[bool] = set()
        for numbers, n_atoms, periodic in summaries:
            counts.update(set(numbers))
            sizes.append(int(n_atoms))
            kinds.add(bool(periodic))
        if not sizes:
            raise ValueError("a domain needs at least one structure")
        kind = "mixed" if len(kinds) > 1 else ("crystal" if kinds.pop() else "molecule")
        elements = {SYMBOLS[z]: counts[z] for z in sorted(counts)}
        return cls(kind, elements, (min(sizes), max(sizes)), len(sizes))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {"kind": self.kind, "n": self.n,
                "elements": dict(self.elements) if self.elements is not None else None,
                "atoms": list(self.atoms) if self.atoms is not None else None}

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
        if atoms is not None:
            lo, hi = (int(v) for v in atoms)
            atoms = (lo, hi)
        return cls(kind, elements, atoms, int(data.get("n", 0)))

    def describe(self) -> str:
        """One line for ``data info`` and reports."""
        parts = [f"{self.kind}s" if self.kind != "mixed" else "molecules and crystals"]
        if self.n:
            parts.append(f"{self.n} training structures")
        if self.elements is not None:
            parts.append(f"{len(self.elements)} elements ({_symbol_list(self.elements)})")
        if self.atoms is not None:
            parts.append(f"{self.atoms[0]}–{self.atoms[1]} atoms"
                         + (" per cell" if self.kind == "crystal" else ""))
        return ", ".join(parts)

    def check(self, summary: Summary) -> tuple[str | None, list[str]]:
        """``(error, warnings)`` for one structure's summary.

        The wrong kind (a molecule for a crystal model, or the reverse) is an error; elements no
        training structure held, and (molecules) atom counts outside the training range, are
        warnings. Crystal cells are not size-checked: a supercell is the same crystal.
        """
        numbers, n_atoms, periodic = summary
        kind = "crystal" if periodic else "molecule"
        if self.kind in ("molecule", "crystal") and kind != self.kind:
            return (f"a {kind}, but this model was trained on {self.kind}s only; "
                    f"its prediction would mean nothing"), []
        warnings: list[str] = []
        if self.elements is not None:
            unseen = [SYMBOLS[z] for z in numbers if SYMBOLS[z] not in self.elements]
            if unseen:
                warnings.append(f"element{'s' if len(unseen) > 1 else ''} "
                                f"{', '.join(unseen)} not in any of the {self.n} training "
                                "structures")
        if self.atoms is not None and kind == "molecule":
            lo, hi = self.atoms
            if not lo <= n_atoms <= hi:
                warnings.append(f"{n_atoms} atoms; the training molecules had {lo}–{hi}")
        return None, warnings


def _symbol_list(elements: Mapping[str, int], limit: int = 12) -> str:
    symbols = sorted(elements, key=lambda s: SYMBOL_TO_Z[s])
    if len(symbols) <= limit:
        return " ".join(symbols)
    return " ".join(symbols[:limit]) + f" … {symbols[-1]}"
