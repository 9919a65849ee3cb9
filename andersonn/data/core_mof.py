"""CoRE MOF 2019 CIFs and Zeo++ largest cavity diameters from the ``core_mof`` wheel.

Labels come from ``CoRE_MOF/data/2019-ASR.csv`` (column ``LCD``, key ``filename`` = CIF name
without ``.cif``); structures from the CIFs in ``CoRE_MOF/data/2019-ASR.tar.xz``, read in memory.

ASR ("all solvent removed") is the default and only source. FSR ("free solvent removed") keeps
bound solvent on the same frameworks: 6,977 of its 7,061 CIFs share a CSD refcode with an ASR
entry, so adding them would put near-duplicates of one framework into different splits. With
``include_fsr`` the 84 FSR entries whose refcode has no ASR entry are added (ids ``FSR/...``).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from andersonn.data.archives import iter_tar_members
from andersonn.data.entry import Entry, SourceResult

__all__ = ["materialize", "read", "refcode"]

_DATA = "CoRE_MOF/data"


def refcode(filename: str) -> str:
    """The CSD refcode (or deposition id) part of a CoRE MOF file name."""
    return filename.split("_", 1)[0]


def _rows(zf: zipfile.ZipFile, member: str) -> list[dict[str, str]]:
    data = zf.read(member)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return list(csv.DictReader(io.StringIO(text)))


def _read_set(zf: zipfile.ZipFile, name: str, result: SourceResult, exclude: set[str]) -> None:
    prefix = "" if name == "2019-ASR" else "FSR/"
    for row in _rows(zf, f"{_DATA}/{name}.csv"):
        filename = (row.get("filename") or "").strip()
        if not filename or refcode(filename) in exclude:
            continue
        try:
            lcd = float(row["LCD"])
        except (KeyError, TypeError, ValueError):
            result.skipped.append((prefix + filename, f"no numeric LCD in {name}.csv"))
            continue
        result.entries.append(
            Entry(prefix + filename, lcd, "cif", raw=(name, filename + ".cif"), origin=name)
        )


def read(paths: Mapping[str, Path], options: Mapping[str, Any] | None = None) -> SourceResult:
    """Read every MOF's id and LCD (the CIFs are read later, for the chosen entries only)."""
    result = SourceResult([])
    with zipfile.ZipFile(paths["core_mof"]) as zf:
        _read_set(zf, "2019-ASR", result, exclude=set())
        result.stats["asr_rows"] = len(result.entries) + len(result.skipped)
        if (options or {}).get("include_fsr"):
            asr = {refcode(e.id) for e in result.entries}
            before = len(result.entries)
            _read_set(zf, "2019-FSR", result, exclude=asr)
            result.stats["fsr_added"] = len(result.entries) - before
    return result


def _base(member: str) -> str:
    return member.rsplit("/", 1)[-1]


def materialize(paths: Mapping[str, Path], entries: list[Entry]) -> list[tuple[str, str]]:
    """Fill in each entry's CIF text from the tar.xz archives; return the ones without a CIF."""
    wanted: dict[str, dict[str, Entry]] = {}
    for entry in entries:
        tar_name, cif_name = entry.raw
        wanted.setdefault(tar_name, {})[cif_name] = entry
    with zipfile.ZipFile(paths["core_mof"]) as zf:
        for tar_name, by_name in wanted.items():
            data = zf.read(f"{_DATA}/{tar_name}.tar.xz")
            names = set(by_name)
            for member, payload in iter_tar_members(
                data, "r:xz", want=lambda n, names=names: _base(n) in names
            ):
                entry = by_name.get(_base(member))
                if entry is not None and entry.content is None:
                    entry.content = payload.decode("utf-8", errors="replace")
    bad = []
    for entry in entries:
        if entry.content is None:
            bad.append((entry.id, f"no CIF {entry.raw[1]} in {entry.raw[0]}.tar.xz"))
        entry.raw = None
    return bad
