"""QM9 molecules and dipole moments from the ``qm9pack`` wheel (``qm9pack/data/qm9_part*.csv``).

Each CSV row gives the QM9 id (``XYZ_file``), ``Elements`` (a Python list literal, parsed with
:func:`ast.literal_eval`), ``XYZ_Ang`` (a list of Cartesian coordinates in Å, also a literal:
some rows have ``0.`` floats that JSON rejects) and
``Dipole_debye``. The featuriser gets an xyz text built from the elements and coordinates, so the
DFT geometry (which decides the dipole) is kept; the entry name is the QM9 id.
"""

from __future__ import annotations

import ast
import csv
import io
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from andersonn.data.entry import Entry, SourceResult

__all__ = ["MEMBERS", "materialize", "read", "xyz_text"]

MEMBERS: tuple[str, ...] = tuple(f"qm9pack/data/qm9_part{i}.csv" for i in (1, 2, 3))


def read(paths: Mapping[str, Path], options: Mapping[str, Any] | None = None) -> SourceResult:
    """Read every molecule's id and dipole (structures are built later, for the chosen ones)."""
    csv.field_size_limit(sys.maxsize)
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    with zipfile.ZipFile(paths["qm9pack"]) as zf:
        for member in MEMBERS:
            with zf.open(member) as handle:
                for row in csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")):
                    name = (row.get("XYZ_file") or row.get("Index") or "").strip()
                    name = name[:-4] if name.endswith(".xyz") else name
                    try:
                        dipole = float(row["Dipole_debye"])
                    except (KeyError, TypeError, ValueError):
                        skipped.append((name, "no numeric Dipole_debye"))
                        continue
                    raw = (row.get("Elements", ""), row.get("XYZ_Ang", ""))
                    entries.append(Entry(name, dipole, "xyz", raw=raw, origin=member))
    return SourceResult(entries, skipped, {"rows": len(entries) + len(skipped)})


def xyz_text(elements: list[str], coords: list[list[float]], comment: str = "") -> str:
    """An xyz file text from element symbols and Cartesian coordinates (Å)."""
    if len(elements) != len(coords) or not elements:
        raise ValueError(f"{len(elements)} elements but {len(coords)} coordinates")
    lines = [str(len(elements)), comment.replace("\n", " ")]
    for symbol, xyz in zip(elements, coords, strict=True):
        x, y, z = (float(c) for c in xyz)
        lines.append(f"{symbol} {x:.10f} {y:.10f} {z:.10f}")
    return "\n".join(lines) + "\n"


def materialize(
    paths: Mapping[str, Path], entries: list[Entry]
) -> list[tuple[str, str]]:
    """Fill in each entry's xyz text; return (id, reason) of the entries that could not be."""
    bad: list[tuple[str, str]] = []
    for entry in entries:
        elements_text, xyz_json = entry.raw
        try:
            elements = ast.literal_eval(elements_text)
            coords = ast.literal_eval(xyz_json)  # JSON-like, but with '0.' floats
            if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
                raise ValueError("Elements is not a list of symbols")
            if not isinstance(coords, list):
                raise ValueError("XYZ_Ang is not a list")
            entry.content = xyz_text(elements, coords, entry.id)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            bad.append((entry.id, f"bad geometry in QM9 row: {type(exc).__name__}: {exc}"[:200]))
        entry.raw = None
    return bad
