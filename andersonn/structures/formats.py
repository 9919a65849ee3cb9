"""Structure format names: the supported formats and their aliases, the format a file name
implies, and the format guessed from content (sniffing)."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from pathlib import Path

from andersonn.structures.checks import _fail

FORMATS = ("smiles", "xyz", "sdf", "mol", "mol2", "pdb", "cif", "poscar", "vasprun", "espresso-in",
           "xsf", "pymatgen-dict")
_ALIASES = {"smi": "smiles", "vasp": "poscar", "contcar": "poscar", "mdl": "mol", "sd": "sdf",
            "ent": "pdb", "pwi": "espresso-in", "vasp-xml": "vasprun",
            "json": "pymatgen-dict", "pymatgen": "pymatgen-dict",
            "dict": "pymatgen-dict"}
_EXTENSIONS = {".smi": "smiles", ".smiles": "smiles", ".xyz": "xyz", ".sdf": "sdf", ".sd": "sdf",
               ".mol": "mol", ".mol2": "mol2", ".pdb": "pdb", ".ent": "pdb", ".cif": "cif",
               ".vasp": "poscar", ".poscar": "poscar", ".contcar": "poscar", ".pwi": "espresso-in",
               ".xsf": "xsf", ".json": "pymatgen-dict"}
MULTI_RECORD_FORMATS = ("sdf", "xyz", "cif", "mol2", "pdb", "smiles")


def normalise_format(fmt: str, name: str = "input") -> str:
    """Canonical format name; raises InputError for an unsupported one."""
    f = fmt.strip().lower().lstrip(".")
    f = _ALIASES.get(f, f)
    if f not in FORMATS:
        raise _fail(name, f"unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
    return f


def format_from_path(path: str | os.PathLike[str]) -> str | None:
    """Format implied by a file name (extension, or POSCAR/CONTCAR names; ``.gz`` looks at the
    name inside); None if unknown."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".gz":
        return format_from_path(p.with_suffix("")) if p.stem else None
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    stem = p.name.upper()
    if stem.startswith(("POSCAR", "CONTCAR")):
        return "poscar"
    if stem.startswith("VASPRUN") and ext == ".xml":
        return "vasprun"
    return None


def structure_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files in ``directory`` whose names imply a structure format, sorted (not
    recursive). A ``.json`` file counts only when it holds a pymatgen structure dict: folders
    of results hold other JSON (``meta.json``, predictions) that is no structure."""
    return sorted(f for f in Path(directory).iterdir()
                  if f.is_file() and (fmt := format_from_path(f)) is not None
                  and (fmt != "pymatgen-dict" or sniff_file(f) == "pymatgen-dict"))


def sniff_file(path: str | os.PathLike[str]) -> str | None:
    """:func:`sniff_format` of the first 4,000 characters of a file (gzip read through); None
    when it matches nothing or cannot be read."""
    opener = gzip.open if Path(path).suffix.lower() == ".gz" else open
    with (contextlib.suppress(OSError, EOFError, zlib.error, UnicodeDecodeError),
          opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle):
        return sniff_format(handle.read(4000))
    return None


def sniff_format(text: str) -> str | None:
    """Guess the format from content; None if nothing matches."""
    head = text.lstrip()[:4000]
    if not head:
        return None
    if head.startswith("{") and ("'@class'" in head or '"@class"' in head or "'sites'" in head
                                 or '"sites"' in head):
        return "pymatgen-dict"
    if re.search(r"^\s*data_", head, re.M) or "_cell_length_a" in head or "_atom_site_" in head:
        return "cif"
    if "V2000" in head or "V3000" in head:
        return "sdf" if "$$$$" in text else "mol"
    if "@<TRIPOS>MOLECULE" in head:
        return "mol2"
    if "<modeling>" in head:
        return "vasprun"
    if re.search(r"^\s*&control", head, re.M | re.I) and "ATOMIC_POSITIONS" in text.upper():
        return "espresso-in"
    if re.search(r"^\s*(CRYSTAL|PRIMVEC|PRIMCOORD)\s*$", head, re.M):
        return "xsf"
    if re.search(r"^(HETATM|ATOM  |CRYST1|HEADER|COMPND|MODEL )", head, re.M):
        return "pdb"
    lines = head.splitlines()
    if lines and lines[0].strip().isdigit():
        return "xyz"
    if len(lines) >= 7:
        try:
            float(lines[1].split()[0])
            for ln in lines[2:5]:
                vals = [float(v) for v in ln.split()[:3]]
                if len(vals) != 3:
                    raise ValueError
            return "poscar"
        except (ValueError, IndexError):
            pass
    if len(lines) == 1 and " " not in head.strip():
        return "smiles"
    return None
