"""The :class:`Structure` object: atoms, optional periodic cell and the atom-bond network."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from andersonn.structures.elements import MASS, SYMBOLS

StructureSummary = tuple[tuple[int, ...], int, bool, int]
"""(atomic numbers present, sorted; atom count; periodic; heavy-atom count): see
:meth:`Structure.summary`."""


@dataclass
class Structure:
    """A molecule or a periodic crystal with its atom-bond network.

    Attributes:
        name: where it came from (file name, SMILES, caller-given id).
        numbers: atomic numbers, shape (N,), int.
        positions: Cartesian coordinates in Å, shape (N, 3), float64.
        cell: lattice vectors as rows in Å, shape (3, 3), or ``None`` for a molecule.
        bonds: bonded atom pairs (i < j), shape (M, 2), int. For crystals a pair may repeat
            (bonds to different periodic images); see ``bond_lengths``.
        bond_orders: bond orders, shape (M,) (aromatic = 1.5; geometric estimates for xyz and
            crystals, see :mod:`andersonn.structures.network`).
        bond_lengths: bond lengths in Å, shape (M,).
        fmt: the format it was read from.
        charge: net charge in e (sum of formal charges for RDKit inputs; 0 for xyz/crystals).
        notes: how the reader had to interpret the input (disordered sites resolved, the
            fragments of a SMILES laid apart), for the user to see next to the answer.
    """

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    bond_orders: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bond_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fmt: str = ""
    charge: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def periodic(self) -> bool:
        """True for a crystal (a cell is set)."""
        return self.cell is not None

    @property
    def kind(self) -> str:
        """``"crystal"`` or ``"molecule"``."""
        return "crystal" if self.periodic else "molecule"

    @property
    def n_atoms(self) -> int:
        """Number of atoms (in the cell, for crystals)."""
        return len(self.numbers)

    def summary(self) -> StructureSummary:
        """``(atomic numbers present, sorted; atom count; periodic; atoms other than H)``: what
        a dataset's applicability domain (:mod:`andersonn.data.domain`) is made of."""
        return (tuple(int(z) for z in np.unique(self.numbers)), self.n_atoms, self.periodic,
                int((np.asarray(self.numbers) != 1).sum()))

    @property
    def symbols(self) -> list[str]:
        """Element symbols."""
        return [SYMBOLS[int(z)] for z in self.numbers]

    @property
    def volume(self) -> float | None:
        """Cell volume in Å^3 (``None`` for molecules)."""
        return None if self.cell is None else float(abs(np.linalg.det(self.cell)))

    @property
    def density(self) -> float | None:
        """Mass density in g/cm^3 (``None`` for molecules)."""
        vol = self.volume
        if vol is None or vol <= 0:
            return None
        return float(MASS[self.numbers].sum() / vol * 1.66053906660)

    @property
    def formula(self) -> str:
        """Hill-ordered formula of the atoms held (cell content for crystals)."""
        counts: dict[str, int] = {}
        for s in self.symbols:
            counts[s] = counts.get(s, 0) + 1
        keys = sorted(counts)
        if "C" in counts:
            keys = sorted(counts, key=lambda s: (s != "C", s != "H", s))
        return "".join(f"{k}{counts[k] if counts[k] > 1 else ''}" for k in keys)

    def neighbours(self, i: int) -> list[tuple[int, float, float]]:
        """Bonded neighbours of atom ``i`` as (j, bond order, length), sorted by length."""
        out = []
        triples = zip(self.bonds, self.bond_orders, self.bond_lengths, strict=True)
        for (a, b), order, length in triples:
            if a == i:
                out.append((int(b), float(order), float(length)))
            elif b == i:
                out.append((int(a), float(order), float(length)))
        return sorted(out, key=lambda t: (t[2], t[0]))

    def __repr__(self) -> str:
        return (f"Structure(name={self.name!r}, kind={self.kind}, formula={self.formula}, "
                f"n_atoms={self.n_atoms}, n_bonds={len(self.bonds)})")
