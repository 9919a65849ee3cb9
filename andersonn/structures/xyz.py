"""The xyz reader: a plain xyz frame (a molecule, bonds from the geometry) or an extended-xyz
frame whose comment line gives a ``Lattice`` (a crystal)."""

from __future__ import annotations

import re

import numpy as np

from andersonn.structures.checks import _fail, structure_from_arrays
from andersonn.structures.elements import MAX_Z, symbol_to_z
from andersonn.structures.structure import Structure


def _from_xyz(text: str, name: str) -> Structure:
    """A plain or extended xyz frame: a molecule, or a crystal where the comment line holds a
    ``Lattice="..."`` (any case) and ``pbc`` is not all false."""
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    head = lines[0].split() if lines else []
    try:
        n = int(head[0])
    except (ValueError, IndexError):
        raise _fail(name, "xyz: first line must be the number of atoms") from None
    if n <= 0:
        raise _fail(name, "no atoms")
    comment = lines[1] if len(lines) > 1 else ""
    body = lines[2:2 + n]
    if len(body) < n:
        if len(head) > 1:  # "3 water": the comment written on the count line
            raise _fail(name, f"xyz: the first line must hold the number of atoms alone "
                              f"(got {lines[0].strip()!r}); the comment goes on line 2")
        raise _fail(name, f"truncated xyz: {len(body)} of {n} atom lines")
    numbers = np.empty(n, dtype=np.int64)
    pos = np.empty((n, 3))
    for k, line in enumerate(body):
        parts = line.split()
        if len(parts) < 4:
            raise _fail(name, f"xyz atom line {k + 1} is malformed")
        z = _xyz_element(parts[0])
        if z <= 0:
            raise _fail(name, f"unknown element {parts[0]!r} on xyz atom line {k + 1}")
        numbers[k] = z
        try:
            pos[k] = [float(v.replace("*^", "e")) for v in parts[1:4]]
        except ValueError:
            raise _fail(name, f"xyz atom line {k + 1} has bad coordinates") from None
    extra = next((ln for ln in lines[2 + n:] if ln.strip()), None)
    if extra is not None and _xyz_atom_line(extra):
        raise _fail(name, f"xyz: {n} atoms declared, but more atom lines follow")
    cell = _extxyz_cell(comment, name)
    if cell is not None:
        return Structure(name=name, numbers=numbers, positions=pos, cell=cell)
    return structure_from_arrays(numbers, pos, name=name)


def _xyz_element(token: str) -> int:
    """Atomic number of an xyz element column (a symbol or a number); 0 if unknown."""
    z = int(token) if token.isdigit() else symbol_to_z(token)
    return z if 0 < z <= MAX_Z else 0


def _xyz_atom_line(line: str) -> bool:
    """Whether a line reads as ``symbol x y z`` (QM9's frequency, SMILES and InChI lines
    after a frame do not)."""
    parts = line.split()
    if len(parts) < 4 or _xyz_element(parts[0]) == 0:
        return False
    try:
        [float(v.replace("*^", "e")) for v in parts[1:4]]
    except ValueError:
        return False
    return True


_EXTXYZ_KEY = re.compile(r'(\w+)\s*=\s*("[^"]*"|\S+)')


def _extxyz_cell(comment: str, name: str) -> np.ndarray | None:
    """The cell of an extended-xyz comment line (``Lattice="..."``, keys in any case), or None
    for a molecule: no Lattice, or ``pbc="F F F"``. Partly periodic (slab, wire) is refused:
    only 3-D periodic crystals are supported."""
    keys = {m.group(1).lower(): m.group(2).strip('"') for m in _EXTXYZ_KEY.finditer(comment)}
    pbc = None
    if "pbc" in keys:
        flags = [v.upper() for v in keys["pbc"].split()]
        if not flags or not set(flags) <= {"T", "F", "TRUE", "FALSE", "1", "0"}:
            raise _fail(name, f"xyz: pbc must be T or F for each axis (got {keys['pbc']!r})")
        pbc = [f in ("T", "TRUE", "1") for f in flags]
        if len(pbc) == 1:
            pbc *= 3
        if len(pbc) != 3:
            raise _fail(name, f"xyz: pbc must be T or F for each axis (got {keys['pbc']!r})")
        if any(pbc) and not all(pbc):
            raise _fail(name, f"xyz: pbc=\"{keys['pbc']}\" is periodic along some axes only; "
                              "only 3-D periodic crystals (or molecules) are supported")
    if "lattice" not in keys:
        if pbc is not None and all(pbc):
            raise _fail(name, "xyz: pbc is true but no Lattice is given")
        return None
    if pbc is not None and not any(pbc):
        return None
    try:
        return np.array([float(v) for v in keys["lattice"].split()]).reshape(3, 3)
    except ValueError:
        raise _fail(name, f"xyz: Lattice must be 9 numbers (got {keys['lattice']!r})") from None
