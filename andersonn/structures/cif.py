"""A minimal, fast CIF reader for P1 files (CoRE MOF style), with pymatgen as the fallback.

The fast path handles one data block with ``_cell_length_*``/``_cell_angle_*`` and an
``_atom_site_`` loop with fractional coordinates, when the file states P1 (CoRE MOF CIFs
all do) and nothing contradicts it. Anything else (other or unstated symmetry, Cartesian
sites, partial occupancy, odd layouts) returns ``None`` so the caller falls back to pymatgen's
CifParser, which applies the symmetry; :func:`pymatgen_ready` rewrites what CifParser would
misread as P1 (DDLm dotted data names, a Hall symbol as the only symmetry).
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


_LENGTH_TAG = re.compile(r"^[ \t]*_cell[._]length_([abc])(?:[ \t]+(\S+))?[ \t]*$", re.M | re.I)


def check_cell_lengths(text: str) -> None:
    """Raise :class:`CifError` for a cell length that is zero or negative (pymatgen builds a
    cell from ``_cell_length_a -5.64`` without a word); values it cannot parse are left to
    the readers."""
    lines = text.splitlines()
    for m in _LENGTH_TAG.finditer(text):
        value = m.group(2)
        if value is None:  # the value on the next non-blank line
            k = text.count("\n", 0, m.start()) + 1
            value = next((ln.split()[0] for ln in lines[k:] if ln.strip()), "?")
        try:
            length = cif_number(_unquote(value))
        except CifError:
            continue
        if length <= 0:
            raise CifError(f"cell length {m.group(1).lower()} = {_unquote(value)}")


_ISOTOPES = {"D": 1, "T": 1}  # deuterium and tritium, read as hydrogen


# elements after Lr: their symbols must not fall back to a first letter (Og read as O)
_BEYOND_TABLE = frozenset(("Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl",
                           "Mc", "Lv", "Ts", "Og"))


def _element(symbol: str, label: str) -> int:
    """The atomic number of a site: from its type symbol (``Fe``, ``Fe2+``, ``O2-``, ``D``)
    where it has one, else from its label (``Na1``). A type symbol that names no element is an
    error even where the label starts with one."""
    token = symbol if symbol not in ("", ".", "?") else label
    m = re.match(r"[A-Za-z]{1,2}", token)
    z = 0
    if m:
        head = m.group(0)
        z = symbol_to_z(head) or _ISOTOPES.get(head.upper(), 0)
        if z == 0 and token == symbol and head.capitalize() in _BEYOND_TABLE:
            raise CifError(f"element {token!r} is beyond the supported table (Z <= 103)")
        if z == 0 and len(head) == 2:  # a label such as "CA1" or "OW" (water oxygen)
            z = symbol_to_z(head[0]) or _ISOTOPES.get(head[0].upper(), 0)
    if not z:
        raise CifError(f"unknown element {token!r}" if token == symbol
                       else f"unknown element in site {token!r}")
    return z


_LOOP_END = ("_", "loop_", "data_", "save_", "global_", "stop_")
_HM_TAGS = ("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt",
            "_space_group_name_h-m_full", "_space_group_name_h-m")
_HALL_TAGS = ("_symmetry_space_group_name_hall", "_space_group_name_hall")
_NUMBER_TAGS = ("_symmetry_int_tables_number", "_space_group_it_number")
_OPS_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
_SYMMETRY_HARMLESS = ("_symmetry_cell_setting", "_space_group_crystal_system",
                      "_symmetry_equiv_pos_site_id", "_space_group_symop_id")
_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")


def cif_tag(token: str) -> str:
    """A data name in one spelling: lower case, DDLm's dots as DDL1's underscores
    (``_space_group.IT_number`` -> ``_space_group_it_number``)."""
    return token.lower().replace(".", "_")


def _tokens(line: str) -> list[str]:
    return _TOKEN.findall(line) if ("'" in line or '"' in line) else line.split()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value.strip()


def _is_p1(tag: str, value: str) -> bool | None:
    """Whether a symmetry item states P1 (True), another group (False) or nothing (None)."""
    v = _unquote(value).replace(" ", "").replace("_", "").upper()
    if v in ("", "?", "."):
        return None
    if tag in _NUMBER_TAGS:
        return v == "1"
    return v in ("P1", "P111")


def _symmetry_tag(tag: str) -> bool:
    """A data name about symmetry whose meaning the fast reader does not take into account."""
    return tag.startswith(("_symmetry", "_space_group")) and tag not in _SYMMETRY_HARMLESS


def _identity_op(op: str) -> bool:
    return _unquote(op).replace(" ", "").replace("+", "").lower() == "x,y,z"


def read_p1_cif(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Parse a P1 CIF into (numbers, cartesian positions, cell); ``None`` if not handled here.

    The fast path is taken where every symmetry data name, in DDL1 or DDLm spelling, states
    P1 (space-group number 1, H-M or Hall symbol P 1, symmetry operations that are all
    ``x,y,z``), or where there is none (P1 by convention; pymatgen assumes it too). Any other
    group, or a symmetry data name it does not know, returns ``None`` (pymatgen applies it).
    Blank and comment lines inside a loop are skipped; a loop ends at the next data name,
    ``loop_``, ``data_`` or the end.
    """
    lines = text.splitlines()
    cell_vals: dict[str, float] = {}
    n = len(lines)
    k = 0
    site_cols: list[str] | None = None
    site_rows: list[list[str]] = []
    blocks = 0
    p1_votes: list[bool] = []
    while k < n:
        line = lines[k].strip()
        low = line.lower()
        if not line or line.startswith("#"):
            k += 1
            continue
        if line.startswith(";"):  # a text field: skip to its closing ';' line
            k += 1
            while k < n and not lines[k].startswith(";"):
                k += 1
            k += 1
            continue
        if low.startswith("data_"):
            blocks += 1
            if blocks > 1:
                break
            k += 1
            continue
        if low.startswith("loop_"):
            cols: list[str] = []
            k += 1
            while k < n and lines[k].strip().startswith("_"):
                cols.append(cif_tag(lines[k].split()[0]))
                k += 1
            rows: list[list[str]] = []
            text_field = False
            while k < n:
                s = lines[k].strip()
                if not s or s.startswith("#"):
                    k += 1
                    continue
                if s.lower().startswith(_LOOP_END):
                    break
                if s.startswith(";"):  # a multi-line value: leave such loops to pymatgen
                    text_field = True
                    break
                rows.append(_tokens(s))
                k += 1
            ops_col = next((cols.index(c) for c in _OPS_TAGS if c in cols), None)
            if ops_col is not None:
                ops = [(r[ops_col] if len(r) == len(cols) else " ".join(r)) for r in rows]
                if len(cols) > 1 and any(len(r) != len(cols) for r in rows):
                    ops = [re.sub(r"^\s*\d+\s+", "", o) for o in ops]
                p1_votes.append(bool(ops) and all(_identity_op(o) for o in ops))
            elif any(_symmetry_tag(c) for c in cols):
                p1_votes.append(False)
            elif "_atom_site_fract_x" in cols and site_cols is None:
                if text_field:
                    return None
                site_cols, site_rows = cols, rows
            elif any(c.startswith("_atom_site_cartn") for c in cols) and site_cols is None:
                return None
            continue
        if line.startswith("_"):
            parts = line.split(None, 1)
            tag = cif_tag(parts[0])
            if len(parts) > 1:
                value = parts[1]
                k += 1
            else:  # the value on the next line
                k += 1
                while k < n and (not lines[k].strip() or lines[k].lstrip().startswith("#")):
                    k += 1
                nxt = lines[k].strip() if k < n else ""
                value = "?"
                if nxt and not nxt.startswith(";") and not nxt.lower().startswith(_LOOP_END):
                    value = nxt
                    k += 1
            if tag in _CELL_KEYS:
                cell_vals[tag] = cif_number(_unquote(value.split()[0]))
            elif tag in _HM_TAGS or tag in _HALL_TAGS or tag in _NUMBER_TAGS:
                vote = _is_p1(tag, value)
                if vote is not None:
                    p1_votes.append(vote)
            elif _symmetry_tag(tag):
                p1_votes.append(False)
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
    if not all(p1_votes):
        return None  # another group, or symmetry stated in a way not read here: pymatgen
    return numbers, frac @ cell, cell


_DDLM_TAG = re.compile(r"^([ \t]*_[A-Za-z0-9_]+)\.(?=\S)", re.M)
_HALL_LINE = re.compile(r"^[ \t]*_(?:symmetry_)?space_group[._]name_Hall[ \t]+(.+)$", re.M | re.I)


def pymatgen_ready(text: str) -> str:
    """The CIF text as pymatgen's CifParser should see it: DDLm data names in their DDL1
    spelling (``_space_group_symop.operation_xyz`` -> ``_space_group_symop_operation_xyz``),
    which CifParser does not know; and where the only symmetry given is a Hall symbol, which
    CifParser ignores, its operations (from spglib's tables) written out as a loop.
    Raises :class:`CifError` for a Hall symbol spglib does not know."""
    text = _DDLM_TAG.sub(r"\1_", text)
    m = _HALL_LINE.search(text)
    stated = re.search(r"^[ \t]*_(symmetry_equiv_pos_as_xyz|space_group_symop_operation_xyz|"
                       r"symmetry_space_group_name_H-M|space_group_name_H-M_alt|"
                       r"symmetry_Int_Tables_number|space_group_IT_number)\b", text, re.M | re.I)
    if m is None or stated is not None:
        return text
    ops = hall_operations(_unquote(m.group(1).split("#")[0]))
    loop = "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(f"'{op}'\n" for op in ops)
    return text[:m.start()] + loop + text[m.end() + 1:]


def hall_operations(symbol: str) -> list[str]:
    """The symmetry operations (``x,y,z`` strings) of a Hall symbol such as ``-F 4 2 3``."""
    import spglib

    key = symbol.replace(" ", "").replace("_", "").lower()
    for number in range(1, 531):
        hall = spglib.get_spacegroup_type(number)
        if hall is not None and hall.hall_symbol.replace(" ", "").lower() == key:
            sym = spglib.get_symmetry_from_database(number)
            return [_xyz_string(r, t) for r, t in
                    zip(sym["rotations"], sym["translations"], strict=True)]
    raise CifError(f"unknown Hall symbol {symbol!r}")


def _xyz_string(rotation: np.ndarray, translation: np.ndarray) -> str:
    from fractions import Fraction

    out = []
    for row, shift in zip(rotation, translation, strict=True):
        terms = "".join(f"{'+' if c > 0 else '-'}{'' if abs(c) == 1 else abs(int(c))}{v}"
                        for c, v in zip(row, "xyz", strict=True) if c)
        frac = Fraction(float(shift) % 1.0).limit_denominator(12)
        out.append(terms.lstrip("+") + (f"+{frac}" if frac else ""))
    return ",".join(out)
