"""The record every source module produces: one labelled structure before featurisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "SourceResult"]


@dataclass
class Entry:
    """One structure: its id, the labelled property value, and its content once materialised.

    ``fmt`` is one of the featuriser's formats (smiles, xyz, cif, poscar, pymatgen-dict);
    ``content`` may stay ``None`` until :func:`materialize` of the source module fills it in,
    so ``--limit`` subsets never pay for reading structures they do not use.
    """

    id: str
    value: float
    fmt: str
    content: Any = None
    raw: Any = None
    origin: str = ""


@dataclass
class SourceResult:
    """What a source module read: entries, entries it dropped (id, reason), and statistics."""

    entries: list[Entry]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
