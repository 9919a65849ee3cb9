"""What every structure reader shares: its one-line errors, quiet chemistry libraries, and the
checks a built :class:`Structure` must pass before it is handed on (:func:`structure_from_arrays`
builds one from arrays and runs them)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from andersonn.errors import InputError
from andersonn.structures.elements import MAX_Z, symbol_to_z
from andersonn.structures.network import (
    MIN_CONTACT,
    MIN_SITE_DISTANCE,
    molecular_bonds,
    overlapping_atoms,
    overlapping_sites,
    periodic_bonds,
)
from andersonn.structures.structure import Structure


def _fail(name: str, reason: str) -> InputError:
    reason = " ".join(str(reason).split())
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return InputError(f"{name}: {reason}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence RDKit's logger and Python warnings (pymatgen) inside readers; both are as the
    caller had them afterwards (RDKit's ``BlockLogs`` restores each log's own status)."""
    from rdkit import rdBase

    blocked = rdBase.BlockLogs()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        del blocked


MAX_VOLUME_PER_ATOM = 1000.0
"""Å³ per atom: a crystal above this is refused as a vacuum-padded box (or a wrong cell). Real
frameworks stay far below it: the loosest of CoRE MOF 2019's 12,020 ASR CIFs has 285 Å³ per
atom, of the 7,116 crystal-gap structures 123 Å³ per atom."""


MAX_COORDINATE = 1e6
"""Å: a coordinate or cell vector component beyond this is refused (a unit mistake or a
corrupt file); the neighbour searches overflow near 1e300 Å."""


def _check_atoms(s: Structure, name: str) -> None:
    """Refuse what no reader should pass on: no atoms, unknown elements, non-finite
    coordinates or ones beyond :data:`MAX_COORDINATE`, a degenerate or vacuum-padded cell,
    atoms on top of each other (a molecule's within :data:`MIN_CONTACT` Å; a crystal's within
    :data:`MIN_SITE_DISTANCE` Å under periodic boundaries)."""
    if s.n_atoms == 0:
        raise _fail(name, "no atoms")
    bad = (s.numbers <= 0) | (s.numbers > MAX_Z)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _fail(name, f"unknown element (atomic number {int(s.numbers[k])}) at atom {k + 1}")
    if not np.isfinite(s.positions).all():
        raise _fail(name, "non-finite coordinates")
    largest = float(np.abs(s.positions).max())
    if largest > MAX_COORDINATE:
        raise _fail(name, f"coordinates too large ({largest:.3g} Å; at most "
                          f"{MAX_COORDINATE:.0e} Å expected)")
    if s.cell is not None:
        if not np.isfinite(s.cell).all():
            raise _fail(name, "non-finite cell")
        largest = float(np.abs(s.cell).max())
        if largest > MAX_COORDINATE:
            raise _fail(name, f"cell vectors too large ({largest:.3g} Å; at most "
                              f"{MAX_COORDINATE:.0e} Å expected)")
        vol = abs(np.linalg.det(s.cell))
        if not np.isfinite(vol) or vol < 1e-3:
            raise _fail(name, "degenerate cell (zero volume)")
        if vol / s.n_atoms > MAX_VOLUME_PER_ATOM:
            raise _fail(name, f"cell of {vol / s.n_atoms:.3g} Å³ per atom (at most "
                              f"{MAX_VOLUME_PER_ATOM:.0f} expected): mostly vacuum; give an "
                              "isolated molecule as a molecule (xyz, sdf) instead")
        clash = overlapping_sites(s.positions, s.cell)
        if clash is not None:
            i, j, d = clash
            if i == j:
                raise _fail(name, f"atom {i + 1} is {d:.3f} Å from its own periodic image "
                                  f"(cell too thin: at least {MIN_SITE_DISTANCE} Å expected)")
            raise _fail(name, f"atoms {i + 1} and {j + 1} are {d:.3f} Å apart under periodic "
                              f"boundaries (one site written twice: at least "
                              f"{MIN_SITE_DISTANCE} Å expected)")
    else:
        clash = overlapping_atoms(s.positions)
        if clash is not None:
            i, j, d = clash
            raise _fail(name, f"atoms {i + 1} and {j + 1} are {d:.2f} Å apart (overlapping "
                              f"atoms: at least {MIN_CONTACT} Å expected)")


def structure_from_arrays(numbers: Any, positions: Any, cell: Any = None,
                          name: str = "input") -> Structure:
    """Build a :class:`Structure` (with bonds) from atomic numbers/symbols, Å positions, cell."""
    nums = np.array([symbol_to_z(z) if isinstance(z, str) else int(z) for z in numbers],
                    dtype=np.int64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(nums) != len(pos):
        raise _fail(name, "numbers and positions differ in length")
    c = None if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    s = Structure(name=name, numbers=nums, positions=pos, cell=c)
    _check_atoms(s, name)
    if c is None:
        s.bonds, s.bond_orders, s.bond_lengths = molecular_bonds(nums, pos)
    else:
        s.bonds, s.bond_orders, s.bond_lengths = periodic_bonds(nums, pos, c)
    return s
