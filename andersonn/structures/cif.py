"""A minimal, fast CIF reader for P1 files (CoRE MOF style), with pymatgen as the fallback.

The fast path handles one data block with ``_cell_length_*``/``_cell_angle_*`` and an
``_atom_site_`` loop with fractional coordinates, when the symmetry operations are only
``x,y,z`` (or absent) — CoRE MOF CIFs are all written in P1. Anything else (other symmetry
operations, Cartesian sites, odd layouts) returns ``None`` so the caller falls back to
pymatgen's CifParser, which applies the symmetry.
"""

from __future__ import annotations

import re

import numpy as np

from andersonn.structures.elements import symbol_to_z

_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")


class CifError(ValueError):
    """The CIF text is malformed (not merely unsupported by the fast path)."""


def cif_number(token: str) -> float:
    """Parse a CIF number such as ``0.1234(5)``."""
    m = _NUM.match(token)
    if m is None:
        raise CifError(f"bad number {token!r}")
    return float(m.group(0))


def cell_from_parameters(a: float, b: float, c: float, alpha: float, beta: float,
                         gamma: float) -> np.ndarray:
    """Lattice vectors (rows) from cell lengths (Å) and angles (degrees), a along x."""
    al, be, ga = np.radians([alpha, beta, gamma])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz2 = c * c - cx * cx - cy * cy
    if cz2 <= 0 or a <= 0 or b <= 0 or c <= 0:
        raise CifError("impossible cell parameters")
    return np.array([[a, 0.0, 0.0], [b * np.cos(ga), b * np.sin(ga), 0.0], [cx, cy, np.sqrt(cz2)]])


def _element(symbol: str, label: str) -> int:
    for token in (symbol, label):
        m = re.match(r"[A-Za-z]{1,2}", token or "")
        if m:
            z = symbol_to_z(m.group(0))
            if z == 0 and len(m.group(0)) == 2:
                z = symbol_to_z(m.group(0)[0])
            if z:
                return z
    raise CifError(f"unknown element in site {label or symbol!r}")


def read_p1_cif(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Parse a P1 CIF into (numbers, cartesian positions, cell); ``None`` if not handled here."""
    lines = text.splitlines()
    cell_vals: dict[str, float] = {}
    n = len(lines)
    k = 0
    site_cols: list[str] | None = None
    site_rows: list[list[str]] = []
    blocks = 0
    while k < n:
        line = lines[k].strip()
        low = line.lower()
        if low.startswith("data_"):
            blocks += 1
            if blocks > 1:
                break
            k += 1
            continue
        if low.startswith("_cell_") and low.split()[0] in _CELL_KEYS:
            parts = line.split()
            if len(parts) < 2:
                return None
            cell_vals[parts[0].lower()] = cif_number(parts[1])
            k += 1
            continue
        if low.startswith(("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt")):
            value = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            if value.strip().strip("'\"").replace(" ", "").upper() not in ("P1", "?", ""):
                return None
            k += 1
            continue
        if low == "loop_":
            cols: list[str] = []
            k += 1
            while k < n and lines[k].strip().startswith("_"):
                cols.append(lines[k].strip().split()[0].lower())
                k += 1
            rows: list[list[str]] = []
            while k < n:
                s = lines[k].strip()
                if not s or s.startswith("#"):
                    k += 1
                    if rows:
                        break
                    continue
                if s.startswith(("_", "loop_", "data_")) or s.lower().startswith("loop_"):
                    break
                rows.append(s.split())
                k += 1
            if any(c in ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
                   for c in cols):
                ops = [" ".join(r).strip("'\"").replace(" ", "").lower() for r in rows]
                ops = [re.sub(r"^\d+", "", o).strip("'\"") for o in ops]
                if any(o not in ("x,y,z", "+x,+y,+z") for o in ops):
                    return None
            elif "_atom_site_fract_x" in cols and site_cols is None:
                site_cols, site_rows = cols, rows
            elif any(c.startswith("_atom_site_cartn") for c in cols) and site_cols is None:
                return None
            continue
        k += 1
    if site_cols is None:
        if len(cell_vals) == 6:
            raise CifError("no atom sites")
        return None
    if len(cell_vals) < 6:
        raise CifError("missing cell parameters")
    cell = cell_from_parameters(*(cell_vals[key] for key in _CELL_KEYS))
    ix, iy, iz = (site_cols.index(f"_atom_site_fract_{a}") for a in "xyz")

    def col(key: str) -> int:
        return site_cols.index(key) if key in site_cols else -1

    isym, ilab = col("_atom_site_type_symbol"), col("_atom_site_label")
    iocc = col("_atom_site_occupancy")
    ncol = len(site_cols)
    numbers = np.empty(len(site_rows), dtype=np.int64)
    frac = np.empty((len(site_rows), 3))
    for r, row in enumerate(site_rows):
        if len(row) != ncol:
            raise CifError(f"atom site line {r + 1} has {len(row)} fields, expected {ncol}")
        if iocc >= 0 and row[iocc] not in (".", "?") and cif_number(row[iocc]) < 0.99:
            return None  # partial occupancy: let pymatgen decide
        numbers[r] = _element(row[isym] if isym >= 0 else "", row[ilab] if ilab >= 0 else "")
        frac[r] = (cif_number(row[ix]), cif_number(row[iy]), cif_number(row[iz]))
    if len(numbers) == 0:
        raise CifError("no atom sites")
    return numbers, frac @ cell, cell
