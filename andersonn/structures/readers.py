"""Structure readers: files, SMILES and in-memory content -> :class:`Structure`.

Formats: ``smiles``, ``xyz``, ``sdf``, ``mol``, ``mol2``, ``pdb`` (RDKit), ``cif`` (fast P1
reader with pymatgen fallback), ``poscar`` (VASP POSCAR/CONTCAR/.vasp, pymatgen), ``vasprun``
(VASP vasprun.xml, its final structure), ``espresso-in`` and ``xsf`` (ASE) and
``pymatgen-dict`` (a ``Structure.as_dict()``/``Molecule.as_dict()`` dict). The format comes from
the extension or the content and can be overridden; a gzip-compressed file (``.gz``) is read
through. A file may hold several structures (SDF records, xyz frames, CIF data blocks, mol2
molecules, PDB models, lines of a SMILES file): :func:`read_records` (:func:`iter_records`)
cuts it into :class:`StructureRecord` s, one per structure, as it reads the file, and
:func:`read_structure` refuses such a file rather than silently reading its first.
Every failure raises :class:`andersonn.errors.InputError` with a one-line message naming the input
and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import itertools
import json
import os
import re
import stat
import warnings
import zlib
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.errors import InputError
from andersonn.fileio import decode_text
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
CONFORMER_SEED = 0xA11CE
MAX_FILE_BYTES = 200 * 1024 * 1024
"""The largest structure read: a file of one (uncompressed), or one record of a file of several
(such a file is read as a stream, record by record, and may be of any size)."""
_HEAD_BYTES = 65536
_CHUNK_CHARS = 1 << 18  # how much of a file of several structures is read at a time


@dataclasses.dataclass(frozen=True)
class StructureRecord:
    """One structure's text cut out of a file that holds several (an SDF record, an xyz frame,
    a CIF data block, a mol2 molecule, a PDB model, a line of a SMILES file). Readers take it
    wherever they take a path; ``name`` is ``FILE#k`` (1-based), with the record's title in
    brackets where it has one. ``error``: why the record cannot be read (a record past
    :data:`MAX_FILE_BYTES`, whose text is then not kept), raised when it is read."""

    name: str
    text: str
    fmt: str
    error: str = ""


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


def is_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an existing file; False, not an error, for strings no file can
    have (a 300-character SMILES is too long a name for the file system)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an existing directory (False for impossible names)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


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


def read_structure(source: str | os.PathLike[str] | StructureRecord, fmt: str | None = None,
                   name: str | None = None, *, bonds: bool = True) -> Structure:
    """Read a structure from a file path, a SMILES string or a :class:`StructureRecord`.

    ``fmt`` overrides the format (else: extension, then content). ``name`` defaults to the
    file name or the SMILES. A file that holds several structures is refused (read it with
    :func:`read_records`). Raises :class:`InputError` on any bad input.
    """
    text, fmt, name = _single_record(source, fmt, name)
    return parse_structure(text, fmt, name, bonds=bonds)


def read_records(source: str | os.PathLike[str] | StructureRecord, fmt: str | None = None,
                 name: str | None = None) -> list[StructureRecord]:
    """The structures a file holds, one :class:`StructureRecord` each: every SDF record, xyz
    frame, CIF data block with atoms, mol2 molecule, PDB model or line of a SMILES file, in file
    order; one for any other file or a SMILES string. Names are ``FILE#k`` (1-based) plus the
    record's title in brackets (SDF title line, CIF block name, mol2 molecule name, the name
    after a SMILES) where there are several, the file name where there is one. The records are
    not parsed here: a bad one fails when read. :func:`iter_records` gives them one at a time.
    """
    return list(iter_records(source, fmt, name))


def iter_records(source: str | os.PathLike[str] | StructureRecord, fmt: str | None = None,
                 name: str | None = None) -> Iterator[StructureRecord]:
    """:func:`read_records` one record at a time. A file of several structures is read as a
    stream, record by record, so its size is not limited: only one structure is, to
    :data:`MAX_FILE_BYTES` (a file of one, or one record, which then fails alone when read)."""
    _, _, records = _records(source, fmt, name)
    yield from records


def _records(source: str | os.PathLike[str] | StructureRecord, fmt: str | None,
             name: str | None) -> tuple[str, Path | None, Iterator[StructureRecord]]:
    """The name of an input, its file (None for a SMILES string, text or record) and (lazily)
    its records."""
    if isinstance(source, StructureRecord):
        return source.name, None, iter([source])
    path, text, fmt, name = _locate(source, fmt, name)
    if path is not None:
        return name, path, _file_records(path, fmt, name)
    assert fmt is not None
    if fmt == "smiles":  # a SMILES string is one structure, whatever it holds
        return name, None, iter([StructureRecord(name, text, fmt)])
    parts = split_records(text, fmt)
    if len(parts) == 1:  # the text; a CIF's one block with atoms
        return name, None, iter([StructureRecord(name, parts[0][1] if fmt == "cif" else text,
                                                 fmt)])
    return name, None, _named_records(name, parts, fmt)


def _named_records(name: str, parts: Iterable[tuple[str, str | None]],
                   fmt: str) -> Iterator[StructureRecord]:
    """The records of a file or text of several structures, ``NAME#k (title)``; a part's text
    None: a record too large to hold, which fails when read."""
    for k, (title, body) in enumerate(parts, 1):
        label = f"{name}#{k}" + (f" ({_unescape(title)})" if title else "")
        if body is None:
            yield StructureRecord(label, "", fmt, f"record too large (over {MAX_FILE_BYTES} bytes)")
        else:
            yield StructureRecord(label, _unescape(body), fmt)


def split_records(text: str, fmt: str) -> list[tuple[str, str]]:
    """``(title, text)`` of each structure in ``text`` of format ``fmt`` (titles may be "").
    Only sdf, xyz, cif, mol2, pdb and smiles (one per line) can hold several; anything
    unparsable is left whole, so that reading it reports the reason."""
    # lines end at "\n", "\r\n" or "\r", kept as they are (str.splitlines would also cut at
    # form feeds and other separators a data field may hold)
    parts = [(title, body or "") for title, body in _cut(io.StringIO(text, newline=""), fmt)]
    if len(parts) > 1 or (parts and fmt == "sdf"):
        return parts
    return [("", _sole_text(text, fmt, parts[0][1] if parts else None))]


def _sole_text(text: str, fmt: str, first: str | None) -> str:
    """The structure of ``text``, which holds at most one, given the text of its first part as
    cut (None: nothing was cut): a SMILES file's SMILES, the one CIF data block with atoms of
    a CIF of several blocks; else ``text`` whole."""
    if first is not None and (fmt == "smiles" or (fmt == "cif" and len(
            re.findall(r"^[ \t]*data_", text, re.M)) > 1)):
        return first
    return text


def sdf_fields(text: str) -> dict[str, str]:
    """The data fields of one SDF record (``> <name>`` then value lines up to a blank line);
    multi-line values are joined with newlines."""
    fields: dict[str, str] = {}
    lines = text.splitlines()
    i = next((k + 1 for k, ln in enumerate(lines) if ln.strip() == "M  END"), len(lines))
    while i < len(lines):
        m = re.match(r"^>.*?<([^>]*)>", lines[i])
        i += 1
        if not m:
            continue
        values = []
        while i < len(lines) and lines[i].strip():
            values.append(lines[i].rstrip())
            i += 1
        fields[m.group(1).strip()] = "\n".join(values)
    return fields


class _Part:
    """The lines of one record (or of a whole file) as they are read; past ``limit``
    characters only counted, but the first line (a record's title) is always kept."""

    __slots__ = ("first", "limit", "lines", "size")

    def __init__(self, limit: float) -> None:
        self.lines: list[str] | None = []
        self.first: str | None = None
        self.size = 0
        self.limit = limit

    def add(self, line: str) -> None:
        if self.first is None:
            self.first = line
        self.size += len(line)
        if self.lines is not None:
            if self.size > self.limit:
                self.lines = None
            else:
                self.lines.append(line)

    def text(self) -> str | None:
        """The record's text; None past the limit."""
        return None if self.lines is None else "".join(self.lines)


def _cut(lines: Iterable[str], fmt: str, limit: float = float("inf")
         ) -> Iterator[tuple[str, str | None]]:
    """``(title, text)`` of each structure in ``lines`` (newlines kept), as they are read; the
    text is None for a record of more than ``limit`` characters. Formats that hold one structure
    give nothing."""
    if fmt == "sdf":
        return _sdf_parts(lines, limit)
    if fmt == "xyz":
        return _xyz_parts(lines, limit)
    if fmt in ("cif", "mol2", "pdb"):
        return _block_parts(lines, fmt, limit)
    if fmt == "smiles":  # cut decoded: a Latin-1 NBSP before a title is whitespace only then
        return ((" ".join(tokens[1:])[:60], tokens[0] if len(line) <= limit else None)
                for line in lines
                if (tokens := _unescape(line).split()) and not tokens[0].startswith("#"))
    return iter(())


def _sdf_parts(lines: Iterable[str], limit: float) -> Iterator[tuple[str, str | None]]:
    """SDF records: the text between ``$$$$`` lines that is not blank, titled by its first
    line."""
    part, blank = _Part(limit), True
    for line in lines:
        if line.startswith("$$$$") and not line[4:].strip(" \t\r\n"):
            if not blank:
                yield (part.first or "").strip()[:60], part.text()
            part, blank = _Part(limit), True
            continue
        if blank:
            blank = not line.strip()
        part.add(line)
    if not blank:
        yield (part.first or "").strip()[:60], part.text()


def _block_parts(lines: Iterable[str], fmt: str, limit: float
                 ) -> Iterator[tuple[str, str | None]]:
    """CIF data blocks with atoms (titled by the block name), mol2 molecules (by the molecule
    name) or PDB models (``MODEL`` to ``ENDMDL``); lines outside them do not count."""
    part: _Part | None = None
    title, atoms = "", False
    for line in lines:
        if fmt == "pdb":
            if part is None and line.startswith("MODEL "):
                part = _Part(limit)
            if part is not None:
                part.add(line)
                if line.startswith("ENDMDL"):
                    yield "", part.text()
                    part = None
            continue
        if fmt == "cif" and re.match(r"[ \t]*data_", line):
            if part is not None and atoms:
                yield title, part.text()
            part, title, atoms = _Part(limit), line.split(None, 1)[0][5:][:60], False
        elif fmt == "mol2" and line.startswith("@<TRIPOS>MOLECULE"):
            if part is not None:
                yield title or "", part.text()
            part, title = _Part(limit), None
        elif fmt == "mol2" and part is not None and title is None:
            title = line.strip()[:60]
        if part is not None:
            part.add(line)
            atoms = atoms or "_atom_site" in line
    if part is not None and (fmt == "mol2" or (fmt == "cif" and atoms)):
        yield title or "", part.text()


def _xyz_count(line: str) -> int | None:
    """The atom count of a line that holds a lone integer, else None."""
    tokens = line.split()
    if len(tokens) != 1:
        return None
    try:
        return int(tokens[0])
    except ValueError:
        return None


def _xyz_parts(lines: Iterable[str], limit: float) -> Iterator[tuple[str, str | None]]:
    """Consecutive xyz frames (atom count, comment, atoms). Lines after the last frame that
    do not start with an atom count are not a frame (QM9's own xyz files end with frequencies,
    SMILES and InChI). A frame cut short ends where the next frame's count line starts (or at
    the end of the file) and then fails alone with the xyz reader's reason."""
    stream = iter(lines)
    held: _Part | None = None  # the last frame, until it is known to be complete
    pending: str | None = None  # a count line that ended a frame cut short
    while (line := pending if pending is not None else next(stream, None)) is not None:
        pending = None
        if not line.strip():
            continue
        n = _xyz_count(line)
        if held is None and n is None:  # the first frame: "3 water" is read as 3 atoms
            with contextlib.suppress(ValueError):
                n = int(line.split()[0])
        if n is None or n < 0:
            if held is None:  # no atom count at all: one frame, which the reader refuses
                held = _Part(limit)
                held.add(line)
                for rest in stream:
                    held.add(rest)
            elif _xyz_atom_line(line):  # more atoms than the count said: the reader refuses
                held.add(line)
                for rest in stream:
                    held.add(rest)
            break  # else: trailing text, not a frame
        if held is not None:
            yield "", held.text()
        held = _Part(limit)
        held.add(line)
        comment = next(stream, None)
        if comment is None:
            break
        held.add(comment)
        for _ in range(n):
            atom = next(stream, None)
            if atom is None:
                break
            if (count := _xyz_count(atom)) is not None and count >= 0:
                pending = atom  # the next frame's count line: this frame is cut short
                break
            held.add(atom)
    if held is not None:
        yield "", held.text()


def _single_record(source: str | os.PathLike[str] | StructureRecord, fmt: str | None,
                   name: str | None) -> tuple[str, str, str]:
    """(content, format, name) of an input that must hold exactly one structure."""
    if isinstance(source, StructureRecord):
        if source.error:
            raise _fail(source.name, source.error)
        return source.text, normalise_format(fmt or source.fmt, source.name), name or source.name
    name, path, records = _records(source, fmt, name)
    record = next(records)
    if next(records, None) is not None:
        if isinstance(records, Generator):
            records.close()  # the file it reads, before it is read again
        # counted, not built: a file of many is cut again with no record's text kept
        held = (_count_records(path, record.fmt, name) if path is not None
                else 2 + sum(1 for _ in records))
        raise _fail(name, f"holds {held} structures ({record.fmt} records); give a file "
                          "with one, or read them all with read_records (as predict does)")
    return record.text, record.fmt, record.name


def _count_records(path: Path, fmt: str, name: str) -> int:
    """How many records a file of format ``fmt`` (one that may hold several) holds, each cut
    out as it is read but none kept."""
    return sum(1 for _ in _cut(_TextFile(path, name).lines(), fmt, 0))


def read_conformers(source: str | os.PathLike[str] | StructureRecord, count: int,
                    fmt: str | None = None, name: str | None = None,
                    max_atoms: int | None = None) -> list[Structure]:
    """Up to ``count`` conformers of a SMILES input, lowest MMFF94 energy first.

    The conformers are ETKDG embeddings, seeded and so repeatable, each MMFF-optimised.
    Embeddings within 0.5 Å RMSD of another are dropped, so a rigid molecule gets fewer.
    Any other input carries its own geometry (xyz, sdf/mol, mol2, pdb, CIF, POSCAR) and is read
    as by :func:`read_structure`: a list of one. ``count=1`` is :func:`read_structure`.
    ``max_atoms`` refuses a SMILES of more atoms (hydrogens included) before any embedding,
    which for a large molecule takes minutes.
    """
    text, fmt, name = _single_record(source, fmt, name)
    if fmt == "smiles" and max_atoms is not None:
        with quiet():
            n_atoms = _smiles_mol(text.strip(), name).GetNumAtoms()
        if n_atoms > max_atoms:
            raise _fail(name, f"{n_atoms} atoms with hydrogens, more than the image holds "
                              f"({max_atoms})")
    if fmt != "smiles" or count <= 1:
        return [parse_structure(text, fmt, name)]
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with quiet():
        try:
            mol, canonical, order = _parse_smiles(text.strip(), name)
            ids: list[int] = []
            for params in _embedding_attempts():
                params.pruneRmsThresh = 0.5
                ids = list(AllChem.EmbedMultipleConfs(canonical, int(count), params))
                if ids:
                    break
            if not ids:  # a strained cage: the one conformer the fallback of _embed finds
                return [parse_structure(text, fmt, name)]
            for conf_id in ids:
                fragments = _lay_fragments_apart(canonical, conf_id)
            energies = [0.0] * len(ids)
            with contextlib.suppress(Exception):  # no MMFF parameters: keep the embeddings
                results = AllChem.MMFFOptimizeMoleculeConfs(canonical, maxIters=500)
                if len(results) == len(ids):
                    energies = [energy for _, energy in results]
            _transfer_conformers(canonical, mol, order)
        except InputError:
            raise
        except Exception as exc:  # library errors become one-line input errors
            raise _fail(name, f"cannot embed conformers: {type(exc).__name__}: {exc}") from None
    out = []
    for _, conf_id in sorted(zip(energies, ids, strict=True)):
        single = Chem.Mol(mol)
        single.RemoveAllConformers()
        single.AddConformer(Chem.Conformer(mol.GetConformer(conf_id)), assignId=True)
        s = _from_rdkit(single, name)
        s.fmt = "smiles"
        s.notes += _fragments_note(fragments)
        _check_atoms(s, name)
        out.append(s)
    return out


def _locate(source: str | os.PathLike[str], fmt: str | None,
            name: str | None) -> tuple[Path | None, str, str | None, str]:
    """``(path, "", fmt, name)`` of an existing file, else ``(None, text, format, name)`` of
    a SMILES string (or text in the format ``fmt``)."""
    src = os.fspath(source)
    if not src.strip():
        raise _fail(repr(src), "empty input (no SMILES string or file name)")
    path = Path(src)
    mode = _file_mode(path) if len(src) < 4096 and "\n" not in src else None
    if mode is not None and stat.S_ISREG(mode):
        return path, "", fmt, name or path.name
    if mode is not None and stat.S_ISDIR(mode):
        raise _fail(src, "a directory, not a structure file" if structure_files(path)
                    else "a directory with no structure files in it")
    if mode is not None:
        raise _fail(src, f"not a regular file ({_special_kind(mode)})")
    looks_like_path = (os.sep in src or format_from_path(src) is not None) and "\n" not in src
    if fmt is None and looks_like_path and not any(c in src for c in "=#()[]@"):
        raise _fail(src, "no such file")
    if fmt is None and _FILE_NAME.match(src) and not _parses_as_smiles(src):
        raise _fail(src, "no such file (and not a SMILES string either)")
    if fmt is None or normalise_format(fmt, src) == "smiles":
        return None, src, "smiles", name or src
    return None, src, normalise_format(fmt, src), name or "input"


def _file_mode(path: Path) -> int | None:
    """The ``st_mode`` of what ``path`` names (links followed), from one ``stat``; None where
    nothing exists or no file can have that name (a 300-character SMILES)."""
    try:
        return path.stat().st_mode
    except (OSError, ValueError):
        return None


def _special_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a directory is (``/dev/null``: a
    character device)."""
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _file_records(path: Path, fmt: str | None, name: str) -> Iterator[StructureRecord]:
    """The records of a file. A format that holds one structure is read whole (refused past
    :data:`MAX_FILE_BYTES`); the others are cut as they are read, each record refused past
    that size, and a file that turns out to hold one structure is that structure."""
    file = _TextFile(path, name)
    if fmt is not None:
        fmt = normalise_format(fmt, name)
    else:
        fmt = format_from_path(path) or file.sniff()
        if fmt is None:
            raise _fail(name, f"unknown structure format (extension {path.suffix or 'none'!r}; "
                              "use --format)")
    if fmt not in MULTI_RECORD_FORMATS:
        yield StructureRecord(name, file.read(), fmt)
        return
    whole = _Part(MAX_FILE_BYTES)  # the text while the file may hold one structure

    def kept(lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            whole.add(line)
            yield line
            if whole.lines is None:  # more than one structure, or too large for one
                break
        yield from lines

    lines = kept(file.lines())
    parts = _cut(lines, fmt, MAX_FILE_BYTES)
    first, second = next(parts, None), next(parts, None)
    if second is None:  # one structure (or none): the file is that structure
        for _ in lines:  # with what follows it (text after an xyz frame)
            if whole.lines is None:
                break
        text = whole.text()
        if text is None:
            raise file.too_large()
        # the one CIF block with atoms; the SMILES (the first part, not cut again)
        body = None if first is None else _unescape(first[1] or "")
        yield StructureRecord(name, _sole_text(_unescape(text), fmt, body), fmt)
        return
    whole.lines = None  # several structures: no longer kept
    yield from _named_records(name, itertools.chain((first, second), parts), fmt)


class _TextFile:
    """A structure file read as text: gzip read through (by its magic bytes), universal
    newlines, UTF-8 (bytes that are not UTF-8 kept as escapes, for :func:`_unescape`). Its first
    64 KiB are checked on opening (empty file, binary data)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name, self.packed = path, name, False
        with self._reading(), open(path, "rb") as raw:
            self.head = raw.read(_HEAD_BYTES)
        if self.head[:2] == b"\x1f\x8b":
            self.packed = True
            with self._reading(), self._open() as raw:
                self.head = raw.read(_HEAD_BYTES)
        if not self.head.strip() and len(self.head) < _HEAD_BYTES:
            raise _fail(name, "empty file")
        _check_binary(self.head, name)

    def _open(self) -> io.BufferedIOBase:
        return gzip.open(self.path, "rb") if self.packed else open(self.path, "rb")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, zlib.error) as exc:
            if self.packed:
                raise _fail(self.name, f"corrupt gzip file ({exc})") from None
            raise _fail(self.name, f"cannot read file ({exc.strerror or exc})") from None

    def _text(self, raw: io.BufferedIOBase) -> io.TextIOWrapper:
        return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=None)

    def sniff(self) -> str | None:
        """:func:`sniff_format` of the first 64 KiB; a mol block there is an SDF when more
        follows (its ``$$$$`` may lie further on)."""
        text = self.head.decode("utf-8-sig", errors="replace")
        fmt = sniff_format(text.replace("\r\n", "\n").replace("\r", "\n"))
        return "sdf" if fmt == "mol" and len(self.head) == _HEAD_BYTES else fmt

    def too_large(self) -> InputError:
        if self.packed:
            return _fail(self.name, f"file too large uncompressed (over {MAX_FILE_BYTES} bytes)")
        with self._reading():
            return _fail(self.name, f"file too large ({self.path.stat().st_size} bytes)")

    def read(self) -> str:
        """The whole text, refused past :data:`MAX_FILE_BYTES`."""
        with self._reading():
            if not self.packed and self.path.stat().st_size > MAX_FILE_BYTES:
                raise self.too_large()
            with self._open() as raw:
                text = self._text(raw).read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise self.too_large()
        return _unescape(text)

    def lines(self) -> Iterator[str]:
        """The lines (newline kept; lines end at "\n" only, "\r\n" and "\r" read as it); a
        line longer than :data:`MAX_FILE_BYTES` is given only in part (enough to refuse its
        record), the rest of it skipped."""
        with self._reading(), self._open() as raw:
            handle = self._text(raw)
            while line := handle.readline(MAX_FILE_BYTES + 1):
                yield line
                if len(line) > MAX_FILE_BYTES and not line.endswith("\n"):
                    while (rest := handle.readline(_CHUNK_CHARS)) and not rest.endswith("\n"):
                        pass


def _unescape(text: str) -> str:
    """Text read with escaped non-UTF-8 bytes as the old whole-file decoding had it: UTF-8,
    else Latin-1 (where any byte is not UTF-8)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")
    return text


_FILE_NAME = re.compile(r"^[\w-]+(\.[A-Za-z][\w-]*)+$")
"""A name with an extension (``mystructure.res``): taken for a mistyped file name when it
is no SMILES either."""


def _parses_as_smiles(text: str) -> bool:
    from rdkit import Chem

    with quiet():
        return Chem.MolFromSmiles(text) is not None


_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\r\n\t\f")


def _check_binary(head: bytes, name: str) -> None:
    """Refuse binary data: a NUL byte, or more than 1 % control characters, in ``head``."""
    bad = len(head) - len(head.translate(None, _CONTROL_BYTES))
    if b"\x00" in head or bad > 0.01 * len(head) + 2:
        raise _fail(name, "binary data, not a structure file")


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise _fail(name, "empty file")
    _check_binary(data[:_HEAD_BYTES], name)
    text = decode_text(data)
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def parse_structure(content: Any, fmt: str, name: str = "input", *,
                    bonds: bool = True, optimize: bool = True) -> Structure:
    """Parse in-memory content of format ``fmt`` into a :class:`Structure`.

    ``content`` is text for smiles/xyz/sdf/mol/cif/poscar and a dict (or its JSON text) for
    pymatgen-dict. ``bonds=False`` skips the crystal bond search (the image encoder derives
    bonds from its own neighbour list). ``optimize`` runs MMFF (if parameters exist) after the
    deterministic ETKDG embedding of SMILES / 2-D mol blocks (seed ``CONFORMER_SEED``).
    """
    name = str(name)
    fmt = normalise_format(fmt, name)
    if isinstance(content, bytes):
        content = _decode(content, name)
    if fmt != "pymatgen-dict":
        if not isinstance(content, str):
            raise _fail(name, f"expected text for format {fmt}, got {type(content).__name__}")
        if not content.strip():
            raise _fail(name, "empty input")
        if "\r" in content:  # Windows (CRLF) and old Mac (CR only) line ends
            content = content.replace("\r\n", "\n").replace("\r", "\n")
    try:
        with quiet() if fmt not in ("xyz", "cif") else contextlib.nullcontext():
            if fmt == "smiles":
                s = _from_smiles(content.strip(), name, optimize)
            elif fmt == "xyz":
                s = _from_xyz(content, name)
            elif fmt in ("sdf", "mol"):
                s = _from_molblock(content, fmt, name, optimize)
            elif fmt == "mol2":
                s = _from_mol2(content, name)
            elif fmt == "pdb":
                s = _from_pdb(content, name)
            elif fmt == "vasprun":
                s = _from_vasprun(content, name)
            elif fmt in ("espresso-in", "xsf"):
                s = _from_ase(content, fmt, name)
            elif fmt == "cif":
                s = _from_cif(content, name)
            elif fmt == "poscar":
                s = _from_poscar(content, name)
            else:
                s = _from_pymatgen_dict(content, name)
        s.fmt = fmt
        _check_atoms(s, name)
        if s.periodic and bonds and len(s.bonds) == 0:
            s.bonds, s.bond_orders, s.bond_lengths = periodic_bonds(s.numbers, s.positions,
                                                                    s.cell)
    except InputError:
        raise
    except Exception as exc:  # library errors become one-line input errors
        raise _fail(name, f"cannot parse as {fmt}: {type(exc).__name__}: {exc}") from None
    return s


MAX_VOLUME_PER_ATOM = 1000.0
"""Å³ per atom: a crystal above this is refused as a vacuum-padded box (or a wrong cell). Real
frameworks stay far below it: the loosest of CoRE MOF 2019's 12,020 ASR CIFs has 285 Å³ per
atom, of the 7,116 crystal-gap structures 123 Å³ per atom."""


def _check_atoms(s: Structure, name: str) -> None:
    """Refuse what no reader should pass on: no atoms, unknown elements, non-finite
    coordinates, a degenerate or vacuum-padded cell, atoms on top of each other (a molecule's
    within :data:`MIN_CONTACT` Å; a crystal's within :data:`MIN_SITE_DISTANCE` Å under
    periodic boundaries)."""
    if s.n_atoms == 0:
        raise _fail(name, "no atoms")
    bad = (s.numbers <= 0) | (s.numbers > MAX_Z)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _fail(name, f"unknown element (atomic number {int(s.numbers[k])}) at atom {k + 1}")
    if not np.isfinite(s.positions).all():
        raise _fail(name, "non-finite coordinates")
    if s.cell is not None:
        if not np.isfinite(s.cell).all():
            raise _fail(name, "non-finite cell")
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


# ---------------------------------------------------------------- molecules (RDKit)
def _from_rdkit(mol: Any, name: str) -> Structure:
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    pairs, orders = [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        pairs.append((min(i, j), max(i, j)))
        orders.append(b.GetBondTypeAsDouble())
    bonds = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lengths = (np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1) if len(bonds)
               else np.zeros(0))
    charge = int(sum(a.GetFormalCharge() for a in mol.GetAtoms()))
    return Structure(name=name, numbers=numbers, positions=pos, bonds=bonds,
                     bond_orders=np.asarray(orders, dtype=np.float64), bond_lengths=lengths,
                     charge=charge)


def _embedding_attempts() -> Iterator[Any]:
    """RDKit embedding parameters to try in turn, all seeded: ETKDGv3; the same from random
    starting coordinates; plain distance geometry without the torsion and ring preferences,
    which embeds some strained cages (QM9 has them) that ETKDG cannot."""
    from rdkit.Chem import AllChem

    for stage in range(3):
        params = AllChem.ETKDGv3()
        params.randomSeed = CONFORMER_SEED
        params.useRandomCoords = stage > 0
        if stage == 2:
            params.useExpTorsionAnglePrefs = False
            params.useBasicKnowledge = False
        yield params


HEAVY_ATOM_SEEDS = 10


def _embed_heavy_atoms(mol: Any) -> Any | None:
    """The last resort for small strained cages on which every embedding with hydrogens fails
    (about 1 % of QM9's SMILES): embed the heavy atoms alone, from random coordinates, under up
    to :data:`HEAVY_ATOM_SEEDS` seeds, then place the hydrogens on them. None if that fails too."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    heavy = Chem.RemoveHs(mol)
    for k in range(HEAVY_ATOM_SEEDS):
        params = AllChem.ETKDGv3()
        params.randomSeed = CONFORMER_SEED + k
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(heavy, params) == 0:
            return Chem.AddHs(heavy, addCoords=True)
    return None


FRAGMENT_GAP = 2.5
"""Å between the fragments of a multi-fragment SMILES (a salt, a hydrate) as they are laid out
before the force-field relaxation; RDKit embeds each fragment at the origin, on top of the
others."""


def _lay_fragments_apart(mol: Any, conf_id: int = -1) -> int:
    """Move the disconnected fragments of an embedded molecule apart along x, each
    :data:`FRAGMENT_GAP` Å beyond the previous one's extent; returns the number of fragments."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    frags = Chem.GetMolFrags(mol)
    if len(frags) < 2:
        return len(frags)
    conf = mol.GetConformer(conf_id)
    pos = np.asarray(conf.GetPositions())
    edge = 0.0
    for k, atoms in enumerate(frags):
        idx = list(atoms)
        centre = pos[idx].mean(axis=0)
        radius = float(np.linalg.norm(pos[idx] - centre, axis=1).max())
        target = np.array([edge + radius if k else 0.0, 0.0, 0.0])
        for i in idx:
            x, y, z = pos[i] - centre + target
            conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
        edge = target[0] + radius + FRAGMENT_GAP
    return len(frags)


def _fragments_note(count: int) -> list[str]:
    return ([f"{count} disconnected fragments (a salt or a mixture): laid {FRAGMENT_GAP} Å "
             "apart before the force-field relaxation, so the answer depends on that arrangement"]
            if count > 1 else [])


def _embed(mol: Any, name: str, optimize: bool) -> tuple[Any, list[str]]:
    """The molecule with a 3-D conformer (fragments laid apart, MMFF-relaxed when
    ``optimize``) and the notes the laying apart calls for."""
    from rdkit.Chem import AllChem

    if not any(AllChem.EmbedMolecule(mol, params) == 0 for params in _embedding_attempts()):
        mol = _embed_heavy_atoms(mol)
        if mol is None:
            raise _fail(name, "cannot generate a 3-D conformer")
    notes = _fragments_note(_lay_fragments_apart(mol))
    if optimize:
        with contextlib.suppress(Exception):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    return mol, notes


def _smiles_mol(smiles: str, name: str) -> Any:
    """The RDKit molecule of a SMILES string, with explicit hydrogens."""
    return _parse_smiles(smiles, name)[0]


def _parse_smiles(smiles: str, name: str) -> tuple[Any, Any, list[int]]:
    """The molecule of a SMILES string with explicit hydrogens, in the string's atom order;
    the same molecule in canonical atom order (from its canonical SMILES), which is what gets
    embedded so that one molecule written two ways gets one geometry; and ``order``: the
    input atom each canonical heavy atom is (``order[k]``)."""
    from rdkit import Chem

    if not smiles or len(smiles.split()) != 1:
        raise _fail(name, "not a SMILES string")
    if not smiles.isascii():  # SMILES are ASCII; RDKit would drop a stray trailing "é"
        raise _fail(name, "unparsable SMILES (a character that is not ASCII)")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "unparsable SMILES")
    canonical = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
    order = [int(i) for i in re.findall(r"\d+", mol.GetProp("_smilesAtomOutputOrder"))]
    if canonical is None or [a.GetAtomicNum() for a in canonical.GetAtoms()] != [
            mol.GetAtomWithIdx(i).GetAtomicNum() for i in order]:
        # the canonical SMILES does not read back as the same atoms: renumber instead
        canonical = Chem.RenumberAtoms(mol, order)
    return Chem.AddHs(mol), Chem.AddHs(canonical), order


def _hydrogens(mol: Any, atom: int) -> list[int]:
    return sorted(n.GetIdx() for n in mol.GetAtomWithIdx(atom).GetNeighbors()
                  if n.GetAtomicNum() == 1 and n.GetDegree() == 1 and n.GetIdx() > atom)


def _transfer_conformers(canonical: Any, mol: Any, order: list[int]) -> None:
    """Give ``mol`` (input atom order) the conformers of ``canonical`` (canonical order): heavy
    atoms through ``order``, each one's added hydrogens in turn."""
    from rdkit import Chem

    index = np.full(mol.GetNumAtoms(), -1)
    for k, i in enumerate(order):
        index[i] = k
    for k, i in enumerate(order):
        for h_mol, h_can in zip(_hydrogens(mol, i), _hydrogens(canonical, k), strict=True):
            index[h_mol] = h_can
    if (index < 0).any() or canonical.GetNumAtoms() != mol.GetNumAtoms():
        raise ValueError("canonical and input molecules differ")
    mol.RemoveAllConformers()
    for conf in canonical.GetConformers():
        pos = np.asarray(conf.GetPositions())[index]
        copy = Chem.Conformer(mol.GetNumAtoms())
        for i, (x, y, z) in enumerate(pos.tolist()):
            copy.SetAtomPosition(i, (x, y, z))
        copy.SetId(conf.GetId())
        copy.Set3D(True)
        mol.AddConformer(copy, assignId=False)


def _from_smiles(smiles: str, name: str, optimize: bool) -> Structure:
    mol, canonical, order = _parse_smiles(smiles, name)
    canonical, notes = _embed(canonical, name, optimize)
    _transfer_conformers(canonical, mol, order)
    s = _from_rdkit(mol, name)
    s.notes += notes
    return s


def _from_molblock(text: str, fmt: str, name: str, optimize: bool) -> Structure:
    from rdkit import Chem

    block = text.split("$$$$")[0] if fmt == "sdf" else text
    mol = Chem.MolFromMolBlock(block, removeHs=False, sanitize=True)
    if mol is None:
        raise _fail(name, f"unparsable {fmt} block")
    if mol.GetNumAtoms() == 0:
        raise _fail(name, "no atoms")
    notes: list[str] = []
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        mol = Chem.AddHs(mol)
        mol.RemoveAllConformers()
        mol, notes = _embed(mol, name, optimize)
    else:
        mol = Chem.AddHs(mol, addCoords=True)
    s = _from_rdkit(mol, name)
    s.notes += notes
    return s


def _from_mol2(text: str, name: str) -> Structure:
    """A Tripos mol2 molecule, with its bond orders; sanitised where RDKit can (mol2 atom
    typing often defeats sanitisation, then the file's own bonds are kept as written)."""
    from rdkit import Chem

    mol = Chem.MolFromMol2Block(text, removeHs=False, sanitize=True)
    if mol is None:
        mol = Chem.MolFromMol2Block(text, removeHs=False, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "unparsable mol2 block")
    if mol.GetNumConformers() == 0:
        raise _fail(name, "mol2 block has no coordinates")
    return _from_rdkit(mol, name)


def _from_pdb(text: str, name: str) -> Structure:
    """The atoms of a PDB file (ATOM and HETATM records of its first model) as a molecule;
    bonds and their orders come from the geometry, as for xyz, since PDB files rarely carry
    bond orders. Hydrogens are only those written in the file."""
    from rdkit import Chem

    mol = Chem.MolFromPDBBlock(text, removeHs=False, sanitize=False, proximityBonding=False)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "pdb: no ATOM or HETATM records")
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if (numbers <= 0).any():
        raise _fail(name, "pdb: an atom has no element (columns 77-78)")
    return structure_from_arrays(numbers, mol.GetConformer().GetPositions(), name=name)


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


# ---------------------------------------------------------------- crystals
def _from_pymatgen(struct: Any, name: str) -> Structure:
    notes = []
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
    from andersonn.structures.cif import CifError, pymatgen_ready, read_p1_cif

    if "_atom_site" not in text and "_cell_length" not in text:
        raise _fail(name, "not a CIF (no _cell_length/_atom_site data)")
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
        text = "\n".join([*lines[:5], _vasp4_symbols(lines[0], len(counts), name), *lines[5:]])
    try:
        poscar = Poscar.from_str(text)
    except Exception as exc:
        raise _fail(name, f"bad POSCAR: {type(exc).__name__}: {exc}") from None
    return _from_pymatgen(poscar.structure, name)


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
