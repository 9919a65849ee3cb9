"""Crystal readers: CIF (the fast P1 reader of :mod:`andersonn.structures.cif`, else pymatgen),
VASP POSCAR (VASP 4 files included) and vasprun.xml, ASE's Quantum ESPRESSO input and xsf, and
pymatgen ``Structure``/``Molecule`` dicts."""

from __future__ import annotations

import io
import itertools
import json
import re
import warnings
from typing import Any

import numpy as np

from andersonn.structures.checks import _fail, structure_from_arrays
from andersonn.structures.elements import symbol_to_z
from andersonn.structures.network import molecular_bonds
from andersonn.structures.structure import Structure


def _from_pymatgen(struct: Any, name: str) -> Structure:
    from pymatgen.core.periodic_table import DummySpecies

    notes = []
    # pymatgen reads a symbol that is no element (CIF type symbol, POSCAR or dict species
    # 'Xx') as a placeholder species with a made-up atomic number
    dummy = next((sp for site in struct for sp in site.species if isinstance(sp, DummySpecies)),
                 None)
    if dummy is not None:
        raise _fail(name, f"unknown element {dummy.symbol!r}")
    if not struct.is_ordered:
        # disordered sites: take the majority species of each site (deterministic)
        numbers = np.array([max(site.species.items(), key=lambda kv: (kv[1], -kv[0].Z))[0].Z
                            for site in struct], dtype=np.int64)
        disordered = sum(1 for site in struct if not site.is_ordered)
        notes.append(f"{disordered} of {len(struct)} sites partly occupied or mixed: each read "
                     "as its majority element, fully occupied")
    else:
        numbers = np.array([site.specie.Z for site in struct], dtype=np.int64)
    lattice = getattr(struct, "lattice", None)
    cell = None if lattice is None else np.array(lattice.matrix, dtype=np.float64)
    s = Structure(name=name, numbers=numbers, positions=np.array(struct.cart_coords, dtype=float),
                  cell=cell, notes=notes)
    if cell is None:
        s.bonds, s.bond_orders, s.bond_lengths = molecular_bonds(s.numbers, s.positions)
    return s


def _from_cif(text: str, name: str) -> Structure:
    """A CIF through the fast P1 reader where it applies, else pymatgen's CifParser; where the
    fast reader finds the file malformed, CifParser gets a try too (it reads layouts the fast
    reader does not, such as a site row wrapped over two lines), and the fast reader's reason
    is given only if CifParser fails as well."""
    from andersonn.structures.cif import (
        CifError,
        check_cell_lengths,
        pymatgen_ready,
        read_p1_cif,
    )

    if "_atom_site" not in text and "_cell_length" not in text:
        raise _fail(name, "not a CIF (no _cell_length/_atom_site data)")
    try:
        check_cell_lengths(text)
    except CifError as exc:
        raise _fail(name, f"bad CIF: {exc}") from None
    reason = None
    try:
        fast = read_p1_cif(text)
    except CifError as exc:
        fast, reason = None, str(exc)
    if fast is not None:
        numbers, pos, cell = fast
        return Structure(name=name, numbers=numbers, positions=pos, cell=cell)
    if "_atom_site" not in text:
        raise _fail(name, "CIF has no atoms")
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parser = CifParser(io.StringIO(pymatgen_ready(text)))
            structs = parser.parse_structures(primitive=False)
        except CifError as exc:
            raise _fail(name, f"bad CIF: {exc}") from None
        except Exception as exc:  # CifParser fails in many ways (ZeroDivisionError too)
            raise _fail(name, f"bad CIF: {reason or f'{type(exc).__name__}: {exc}'}") from None
    if not structs:
        raise _fail(name, f"bad CIF: {reason}" if reason else "CIF has no atoms")
    return _from_pymatgen(structs[0], name)


def _from_poscar(text: str, name: str) -> Structure:
    from pymatgen.io.vasp import Poscar

    lines = text.splitlines()
    if len(lines) < 7:
        raise _fail(name, "truncated POSCAR")
    counts = lines[5].split()
    if counts and all(c.isdigit() for c in counts):
        lines = [*lines[:5], _vasp4_symbols(lines[0], len(counts), name), *lines[5:]]
        text = "\n".join(lines)
    _check_poscar(lines, name)
    try:
        poscar = Poscar.from_str(text)
    except Exception as exc:
        raise _fail(name, f"bad POSCAR: {type(exc).__name__}: {exc}") from None
    return _from_pymatgen(poscar.structure, name)


def _check_poscar(lines: list[str], name: str) -> None:
    """Refuse what pymatgen's Poscar reads wrongly or fails on with a bare library error: a
    zero scale factor, an element line and a counts line of different lengths, an element
    that does not exist, fewer coordinate lines than atoms. ``lines`` has its element line."""
    if len(lines) < 8:
        raise _fail(name, "truncated POSCAR")
    for token in lines[1].split()[:3]:
        try:
            scale = float(token)
        except ValueError:
            break  # a comment after the scale factor; a bad one is left to pymatgen
        if scale == 0:
            raise _fail(name, "bad POSCAR: scale factor 0")
    names = lines[5].split()
    counts = [int(c) for c in itertools.takewhile(str.isdigit, lines[6].split())]
    if not counts:
        raise _fail(name, f"bad POSCAR: no atom counts on line 7 (got {lines[6].strip()!r})")
    if len(names) != len(counts):
        raise _fail(name, f"bad POSCAR: {len(names)} species names ({' '.join(names)}) but "
                          f"{len(counts)} counts ({' '.join(map(str, counts))})")
    for species in names:  # VASP 5.4 writes POTCAR names: Fe_pv, or Fe_pv/<hash>
        if not symbol_to_z(species.split("/")[0].split("_")[0]):
            raise _fail(name, f"unknown element {species!r} in the POSCAR element line")
    k = 8 if lines[7].strip()[:1] in ("s", "S") else 7  # "Selective dynamics", then the mode
    coordinates = sum(1 for _ in itertools.takewhile(_coordinate_line, lines[k + 1:]))
    if coordinates < sum(counts):
        raise _fail(name, f"bad POSCAR: {sum(counts)} atoms declared, {coordinates} coordinate "
                          "lines")


def _coordinate_line(line: str) -> bool:
    """Whether a POSCAR line starts with three numbers (an atom's coordinates)."""
    try:
        [float(v) for v in line.split()[:3]]
    except ValueError:
        return False
    return len(line.split()) >= 3


def _vasp4_symbols(comment: str, species: int, name: str) -> str:
    """The element line a VASP 4 POSCAR lacks, from its comment line where that holds exactly
    ``species`` element symbols and nothing else (as ASE reads such files); else refused,
    since pymatgen would name the species H, He, Li, ..."""
    words = comment.split()
    if len(words) == species and all(symbol_to_z(w) and w == w.capitalize() for w in words):
        return " ".join(words)
    raise _fail(name, "POSCAR has no element line: add the element symbols line (e.g. 'Na Cl') "
                      "above the atom counts")


def _from_vasprun(text: str, name: str) -> Structure:
    """The final structure of a VASP ``vasprun.xml`` (``finalpos``; for a run cut short, the
    last ionic step written), with the elements of its ``atominfo``."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        # a run still going (or killed) leaves the XML unclosed: read up to its last structure
        end = text.rfind("</structure>")
        if end < 0:
            raise _fail(name, "vasprun: no structure written yet") from None
        head = text[:end + len("</structure>")]
        try:
            root = ET.fromstring(head + _closing_tags(head))
        except ET.ParseError as exc:
            raise _fail(name, f"vasprun: malformed XML ({exc})") from None
    symbols = [rc.find("c").text.strip() for rc in root.findall(
        "atominfo/array[@name='atoms']/set/rc") if rc.find("c") is not None]
    structures = root.findall("structure[@name='finalpos']") or root.findall(".//structure")
    if not symbols or not structures:
        raise _fail(name, "vasprun: no atominfo or structure")
    final = structures[-1]

    def rows(path: str) -> np.ndarray:
        return np.array([[float(v) for v in e.text.split()] for e in final.findall(path)])

    cell, frac = rows("crystal/varray[@name='basis']/v"), rows("varray[@name='positions']/v")
    if cell.shape != (3, 3) or frac.shape != (len(symbols), 3):
        raise _fail(name, f"vasprun: {len(frac)} positions for {len(symbols)} atoms or no cell")
    return Structure(name=name, numbers=np.array([symbol_to_z(x) for x in symbols]),
                     positions=frac @ cell, cell=cell)


def _closing_tags(text: str) -> str:
    """Closing tags for the elements still open at the end of ``text`` (a truncated XML)."""
    stack: list[str] = []
    for m in re.finditer(r"<(/?)([A-Za-z_][\w.-]*)[^>]*?(/?)>", text):
        closing, tag, empty = m.groups()
        if closing:
            if stack and stack[-1] == tag:
                stack.pop()
        elif not empty and not m.group(0).startswith("<?"):
            stack.append(tag)
    return "".join(f"</{t}>" for t in reversed(stack))


def _from_ase(text: str, fmt: str, name: str) -> Structure:
    """A Quantum ESPRESSO pw.x input or an XCrySDen xsf file, through ASE's reader (the last
    image of an animated xsf)."""
    from ase.io import read

    atoms = read(io.StringIO(text), format=fmt, index=-1)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if atoms.pbc.any() and atoms.cell.volume > 1e-3:
        return Structure(name=name, numbers=numbers, positions=pos,
                         cell=np.asarray(atoms.cell.array, dtype=np.float64))
    return structure_from_arrays(numbers, pos, name=name)


def _from_pymatgen_dict(content: Any, name: str) -> Structure:
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except json.JSONDecodeError:
            import ast

            try:
                content = ast.literal_eval(content)
            except (ValueError, SyntaxError):
                raise _fail(name, "pymatgen-dict: not a dict literal") from None
    if not isinstance(content, dict):
        raise _fail(name, f"pymatgen-dict: expected a dict, got {type(content).__name__}")
    if not content.get("sites"):
        raise _fail(name, "no atoms")
    if "lattice" in content:
        from pymatgen.core import Structure as PmgStructure

        struct = PmgStructure.from_dict(content)
    else:
        from pymatgen.core import Molecule

        struct = Molecule.from_dict(content)
    return _from_pymatgen(struct, name)
