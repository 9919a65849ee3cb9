"""Materials Project crystals with PBE band gaps: matminer 0.4.0 structures joined with
JARVIS-Leaderboard ``megnet_gappbe`` gaps by mp-id.

Structures: ``matminer-0.4.0/matminer/datasets/{flla_2015,elastic_tensor,piezoelectric_tensor,
dielectric_constant}.csv`` inside the sdist (row 0 a ``# ref`` line, row 1 the header). In
``flla_2015`` the ``structure`` column is a Python-literal pymatgen dict, parsed with
:func:`ast.literal_eval` (never ``eval``); the other three carry ``poscar`` (preferred) and CIF
text. In the last two files the data rows carry one more (unnamed, leading index) field than the
header, so fields are aligned from the right end of the header.

Gaps: ``jarvis_leaderboard/benchmarks/AI/SinglePropertyPrediction/megnet_gappbe.json.zip`` →
``megnet_gappbe.json`` = ``{"train"|"val"|"test": {mp-id: gap string}}`` (MP 2018.6.1).

The same mp-id appears in several files: the first row with a usable structure (in the file order
above) is kept and the others are dropped before any split, so each material appears once.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from andersonn.data.archives import iter_tar_members, read_zip_member
from andersonn.data.entry import Entry, SourceResult
from andersonn.errors import AndersonnError

__all__ = ["GAPS_MEMBER", "MATMINER_FILES", "materialize", "parse_structure_dict", "read",
           "read_gaps", "read_structures"]

MATMINER_FILES: tuple[str, ...] = (
    "flla_2015", "elastic_tensor", "piezoelectric_tensor", "dielectric_constant",
)
MATMINER_DIR = "matminer-0.4.0/matminer/datasets"
GAPS_MEMBER = "jarvis_leaderboard/benchmarks/AI/SinglePropertyPrediction/megnet_gappbe.json.zip"
_MP_ID = re.compile(r"^mp-\d+$")
_MAX_LITERAL = 2_000_000  # characters; a pymatgen dict of a 152-site cell is ~100k


def parse_structure_dict(text: str) -> dict[str, Any]:
    """A pymatgen ``Structure.as_dict()`` given as a Python literal, via ``ast.literal_eval``."""
    if len(text) > _MAX_LITERAL:
        raise ValueError("structure literal too long")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"structure is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(value, dict) or "lattice" not in value or "sites" not in value:
        raise ValueError("structure literal is not a pymatgen structure dict")
    return value


def _looks_poscar(text: str) -> bool:
    lines = text.strip("\n").splitlines()
    if len(lines) < 8:
        return False
    try:
        float(lines[1].split()[0])
        for line in lines[2:5]:
            if len([float(v) for v in line.split()[:3]]) != 3:
                return False
    except (ValueError, IndexError):
        return False
    return True


def _structure_of(stem: str, row: dict[str, str]) -> tuple[str, Any]:
    """(fmt, content) of one matminer row; raises ValueError when there is no usable structure."""
    if stem == "flla_2015":
        return "pymatgen-dict", parse_structure_dict(row.get("structure", ""))
    poscar = row.get("poscar", "")
    if _looks_poscar(poscar):
        return "poscar", poscar
    for value in row.values():
        if isinstance(value, str) and "_cell_length_a" in value and "_atom_site" in value:
            return "cif", value
    raise ValueError("no POSCAR or CIF text in row")


def read_structures(
    matminer: Path,
) -> tuple[list[tuple[str, str, str, Any]], list[tuple[str, str]], dict[str, int]]:
    """Rows ``(mp-id, file stem, fmt, content)`` in file order, rejected rows, per-file counts."""
    csv.field_size_limit(sys.maxsize)
    members = {f"{MATMINER_DIR}/{stem}.csv": stem for stem in MATMINER_FILES}
    texts: dict[str, str] = {}
    for name, payload in iter_tar_members(matminer, "r:gz", want=lambda n: n in members):
        texts[members[name]] = payload.decode("utf-8")
    missing = [s for s in MATMINER_FILES if s not in texts]
    if missing:
        raise AndersonnError(f"{matminer.name} lacks {', '.join(missing)}.csv; not matminer 0.4.0?")
    rows: list[tuple[str, str, str, Any]] = []
    rejected: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for stem in MATMINER_FILES:
        reader = csv.reader(io.StringIO(texts[stem]))
        next(reader, None)  # "# ref: ..." line
        header = next(reader, [])
        n = 0
        for fields in reader:
            if not fields:
                continue
            n += 1
            offset = len(fields) - len(header)
            row = dict(zip(header, fields[offset:] if offset > 0 else fields, strict=False))
            mp_id = row.get("material_id", "").strip()
            if not _MP_ID.match(mp_id):
                found = [f.strip() for f in fields if _MP_ID.match(f.strip())]
                mp_id = found[0] if len(found) == 1 else ""
            if not mp_id:
                rejected.append((f"{stem}:row{n}", f"no Materials Project id in {stem}.csv"))
                continue
            try:
                fmt, content = _structure_of(stem, row)
            except ValueError as exc:
                rejected.append((mp_id, f"{stem}.csv: {exc}"))
                continue
            rows.append((mp_id, stem, fmt, content))
        counts[stem] = n
    return rows, rejected, counts


def read_gaps(jarvis: Path) -> dict[str, float]:
    """mp-id → PBE band gap (eV) from the JARVIS-Leaderboard wheel."""
    inner = read_zip_member(jarvis, GAPS_MEMBER)
    with zipfile.ZipFile(io.BytesIO(inner)) as zf:
        data = json.loads(read_zip_member(zf, "megnet_gappbe.json"))
    gaps: dict[str, float] = {}
    for part in ("train", "val", "test"):
        for mp_id, gap in data.get(part, {}).items():
            gaps[str(mp_id)] = float(gap)
    if not gaps:
        raise AndersonnError(f"{jarvis.name}: megnet_gappbe.json holds no gaps")
    return gaps


def read(paths: Mapping[str, Path], options: Mapping[str, Any] | None = None) -> SourceResult:
    """One entry per labelled mp-id (deduplicated across the four files, first usable row wins)."""
    rows, rejected, counts = read_structures(paths["matminer"])
    gaps = read_gaps(paths["jarvis_leaderboard"])
    seen: set[str] = set()
    entries: list[Entry] = []
    unlabelled: list[str] = []
    duplicates = 0
    for mp_id, stem, fmt, content in rows:
        if mp_id in seen:
            duplicates += 1
            continue
        seen.add(mp_id)
        if mp_id not in gaps:
            unlabelled.append(mp_id)
            continue
        entries.append(Entry(mp_id, gaps[mp_id], fmt, content=content, origin=stem))
    all_ids = seen | {i for i, _ in rejected if _MP_ID.match(i)}
    skipped = [(i, r) for i, r in rejected if i not in seen]
    stats = {
        "rows_per_file": counts,
        "rows": sum(counts.values()),
        "unique_mp_ids": len(all_ids),
        "duplicate_rows_dropped": duplicates,
        "gaps_in_jarvis": len(gaps),
        "without_gap": len(unlabelled),
        "without_gap_ids": unlabelled,
    }
    return SourceResult(entries, skipped, stats)


def materialize(paths: Mapping[str, Path], entries: list[Entry]) -> list[tuple[str, str]]:
    """Contents were read with the rows: nothing to do."""
    return []
