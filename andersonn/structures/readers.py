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

This module is the entry point: it tells a file from a SMILES string, hands a file to
:mod:`~andersonn.structures.records` to be cut into records, and sends each record's text to the
reader of its format: :mod:`~andersonn.structures.molecules` (RDKit),
:mod:`~andersonn.structures.xyz`, :mod:`~andersonn.structures.crystals` (CIF, VASP, ASE,
pymatgen). Format names and sniffing are in :mod:`~andersonn.structures.formats`, the checks
every structure passes in :mod:`~andersonn.structures.checks`; the names other modules use are
re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from andersonn.errors import InputError
from andersonn.structures.checks import (
    MAX_VOLUME_PER_ATOM,
    _check_atoms,
    _fail,
    quiet,
    structure_from_arrays,
)
from andersonn.structures.crystals import (
    _from_ase,
    _from_cif,
    _from_poscar,
    _from_pymatgen_dict,
    _from_vasprun,
)
from andersonn.structures.formats import (
    FORMATS,
    MULTI_RECORD_FORMATS,
    format_from_path,
    normalise_format,
    sniff_file,
    sniff_format,
    structure_files,
)
from andersonn.structures.molecules import (
    CONFORMER_SEED,
    FRAGMENT_GAP,
    HEAVY_ATOM_SEEDS,
    _from_mol2,
    _from_molblock,
    _from_pdb,
    _from_smiles,
    _smiles_conformers,
    _smiles_mol,
)
from andersonn.structures.network import periodic_bonds
from andersonn.structures.records import (
    MAX_FILE_BYTES,
    StructureRecord,
    _count_records,
    _decode,
    _file_records,
    _named_records,
    sdf_fields,
    split_records,
)
from andersonn.structures.structure import Structure
from andersonn.structures.xyz import _from_xyz

# the names callers import from here; a limit such as MAX_FILE_BYTES is read in the module that
# defines it (records), so a test that patches it patches it there
__all__ = ["CONFORMER_SEED", "FORMATS", "FRAGMENT_GAP", "HEAVY_ATOM_SEEDS", "MAX_FILE_BYTES",
           "MAX_VOLUME_PER_ATOM", "MULTI_RECORD_FORMATS", "StructureRecord", "format_from_path",
           "is_dir", "is_file", "is_smiles", "iter_records", "normalise_format",
           "parse_structure", "parses_as_smiles", "quiet", "read_conformers", "read_records",
           "read_structure", "sdf_fields", "sniff_file", "sniff_format", "split_records",
           "structure_files", "structure_from_arrays"]


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


def is_smiles(source: Any) -> bool:
    """Whether ``source`` would be read as a SMILES string rather than a file (decided as
    :func:`read_structure` decides it, without parsing anything)."""
    if not isinstance(source, str):
        return False
    try:
        path, _, fmt, _ = _locate(source, None, None)
    except InputError:
        return False
    return path is None and fmt == "smiles"


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
    if fmt == "smiles" and count > 1:
        conformers = _smiles_conformers(text, count, name)
        if conformers is not None:
            return conformers
    return [parse_structure(text, fmt, name)]


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
    if fmt is None and _FILE_NAME.match(src) and not parses_as_smiles(src):
        raise _fail(src, "no such file (and not a SMILES string either)")
    if fmt is None or normalise_format(fmt, src) == "smiles":
        return None, src, "smiles", name or src
    short = "\n" not in src.strip() and len(src) <= 80  # a word, named by itself
    return None, src, normalise_format(fmt, src), name or (src.strip() if short else "input")


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


_FILE_NAME = re.compile(r"^[\w-]+(\.[A-Za-z][\w-]*)+$")
"""A name with an extension (``mystructure.res``): taken for a mistyped file name when it
is no SMILES either."""


def parses_as_smiles(text: str) -> bool:
    """Whether RDKit reads ``text`` as a molecule (parsing only, no embedding: milliseconds)."""
    from rdkit import Chem

    with quiet():
        return Chem.MolFromSmiles(text) is not None


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
