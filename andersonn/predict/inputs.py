"""Expanding what is given to predict into inputs, and naming inputs in one-line messages.

:func:`expand_inputs` turns list files, directories and multi-structure files into one input
each (a path, a SMILES, a :class:`~andersonn.structures.StructureRecord`); an input already
found unusable on the way is an :class:`UnusableInput`. :func:`without_name` and
:func:`_one_line` keep the messages about an input to one line that names it once.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from andersonn.errors import InputError
from andersonn.fileio import decode_text
from andersonn.structures.readers import (
    MULTI_RECORD_FORMATS,
    StructureRecord,
    format_from_path,
    is_dir,
    is_file,
    read_records,
    sniff_file,
    structure_files,
)

__all__ = ["LIST_SUFFIXES", "UnusableInput", "expand_inputs", "without_name"]

LIST_SUFFIXES = {".txt", ".lst", ".list", ".smi", ".smiles"}


def expand_inputs(inputs: Iterable[Any]) -> list[Any]:
    """Expand text files that list inputs (one per line; ``#`` comments, blank lines skipped),
    directories (their structure files, by name: xyz, sdf, mol, cif, POSCAR, ...; sorted,
    not recursive; a ``.smi`` file in them is a list, as when named directly) and files that
    hold several structures (an SDF of many molecules, a multi-frame xyz, a CIF of several
    data blocks, mol2 molecules, PDB models: one :class:`~andersonn.structures.StructureRecord`
    each, named ``FILE#k (title)``).

    A ``.txt``/``.lst``/``.list``/``.smi`` file is a list; its relative paths are resolved
    against the list's folder when such a file exists there, and the folders and lists it
    names are expanded in turn (a list that includes itself, directly or through others, is
    one input that fails with that reason). A directory without structure files stays one
    input, which then fails with that reason; so does an unreadable file.

    A single string or path is one input (``"CCO"`` is ethanol, not three atoms).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return _expand(inputs, frozenset())


@dataclasses.dataclass(frozen=True)
class UnusableInput:
    """An input that expanding the inputs already found unusable: it fails with ``reason``
    (a one-line message that names it) wherever it is read."""

    name: str
    reason: str


def _expand(inputs: Iterable[Any], lists: frozenset[Path]) -> list[Any]:
    """:func:`expand_inputs`, inside the list files ``lists`` (resolved paths)."""
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, str) and not item.strip():
            out.append(item)  # fails alone as an empty input (Path("") would be the cwd)
            continue
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if is_dir(path):
                files = [os.fspath(f) for f in structure_files(path)]
                out.extend(_expand(files, lists) if files else [os.fspath(item)])  # .smi lists
                continue
            if (path.suffix.lower() in LIST_SUFFIXES and is_file(path)
                    and not _holds_a_structure(path)):
                out.extend(_listed_inputs(path, lists))
                continue
            out.extend(_file_records(os.fspath(item)))
        else:
            out.append(item)
    return out


def _listed_inputs(listing: Path, lists: frozenset[Path] = frozenset()) -> list[Any]:
    """The inputs a list file names, one per line, expanded as :func:`expand_inputs` expands
    its inputs (``lists``: the list files it is named in). A ``.smi`` line is ``SMILES
    [name]``: a named SMILES becomes a record called ``SMILES (name)``, so the name reaches
    the output."""
    key = listing.resolve()
    if key in lists:
        return [UnusableInput(os.fspath(listing), f"{os.fspath(listing)}: a list file that "
                              "includes itself (directly or through other lists)")]
    lists = lists | {key}
    smiles_file = listing.suffix.lower() in {".smi", ".smiles"}
    out: list[Any] = []
    for line in decode_text(listing.read_bytes()).splitlines():  # as structure files are
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, title = line, ""
        if smiles_file:
            token, *rest = line.split()
            title = " ".join(rest)
        for candidate in (listing.parent / token, Path(token)):
            if is_file(candidate) or is_dir(candidate):
                out.extend(_expand([str(candidate)], lists))
                break
        else:
            out.append(StructureRecord(f"{token} ({title})", token, "smiles") if title
                       else token)
    if not out:  # reported as one bad input, not dropped without a word
        return [UnusableInput(os.fspath(listing), f"{os.fspath(listing)}: empty file: it "
                              "lists no inputs")]
    return out


def _holds_a_structure(path: Path) -> bool:
    """True when a list-named file (``.txt`` & co.) holds a structure file's content instead
    (an xyz, POSCAR, CIF, SDF, mol2, vasprun.xml, ... saved as text): it is then read as that
    structure."""
    return sniff_file(path) in {"xyz", "poscar", "cif", "sdf", "mol", "mol2", "vasprun",
                                "espresso-in", "xsf", "pymatgen-dict"}


def _file_records(item: str) -> list[Any]:
    """``[item]``, or the records of a file that holds several structures."""
    if format_from_path(item) not in MULTI_RECORD_FORMATS or not is_file(item):
        return [item]
    try:
        # named a/traj.xyz#1, not traj.xyz#1: two folders' files of one name stay apart
        records = read_records(item, name=item)
    except InputError:
        return [item]  # read again when featurised, which reports the reason
    return [item] if len(records) == 1 else list(records)


def _input_name(item: Any) -> str:
    """How an input is named in tables and messages (a path or SMILES as given, a record's or
    structure's name, else its type)."""
    if isinstance(item, (str, os.PathLike)):
        name = os.fspath(item)
        return name if name.strip() else repr(name)  # '' or ' ', visibly
    return str(getattr(item, "name", None) or type(item).__name__)


def _one_line(exc: BaseException) -> str:
    """The first line of an error, at most 300 characters; a very long word in it (a long
    SMILES as the input's name) is shortened so that the reason after it still shows."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return _shorten_words(line)[:300]


def _shorten_words(text: str) -> str:
    """``text`` with every word of over 100 characters as its start, ``...`` and its end."""
    return re.sub(r"\S{101,}", lambda m: f"{m.group(0)[:60]}...{m.group(0)[-20:]}", text)


def without_name(error: str, name: str) -> str:
    """``error`` without the input's ``name`` in front: a reader's message names its input
    (``C1CC: unparsable SMILES``, ``mol.xyz: empty file`` for ``data/mol.xyz``), so a line
    that names the input itself names it once."""
    # a file's reader names it by its base name
    base = os.path.basename(name) if os.sep in name and os.path.isfile(name) else ""
    for shown in dict.fromkeys((name, _shorten_words(name), base)):
        if shown and error.startswith(f"{shown}: "):
            return error[len(shown) + 2:]
    # a long name shortened with the colon after it (the colon belongs to its word)
    shortened = _shorten_words(f"{name}:")
    if error.startswith(f"{shortened} "):
        return error[len(shortened) + 1:]
    return error
