"""Task definitions: classes, image spec, label rule and its default thresholds.

Each task maps one scalar DFT property to a class index:

- ``polarity`` (QM9 dipole, debye): 0 weakly polar ``< dipole``, 1 strongly polar ``>= dipole``.
- ``mof-pore`` (CoRE MOF 2019 Zeo++ LCD, Å): 0 small ``< small``, 1 medium, 2 large ``>= large``.
- ``crystal-gap`` (Materials Project PBE band gap, eV): 0 metal ``gap <= metal``,
  1 semiconductor ``metal < gap <= insulator``, 2 insulator ``gap > insulator``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from andersonn.errors import ConfigError

__all__ = ["TASKS", "THRESHOLD_FLAGS", "TaskDefinition", "get_task"]

THRESHOLD_FLAGS: dict[str, str] = {  # threshold name -> its `andersonn data build` option
    "dipole": "--dipole-threshold", "small": "--small-lcd", "large": "--large-lcd",
    "metal": "--metal-gap", "insulator": "--insulator-gap",
}


@dataclass(frozen=True)
class TaskDefinition:
    """One classification task."""

    name: str
    classes: tuple[str, ...]
    image_spec: str  # key of andersonn.images.IMAGE_SPECS
    source: str  # module in andersonn.data that reads the raw entries
    archives: tuple[str, ...]  # keys of andersonn.data.archives.ARCHIVES
    quantity: str  # the labelled property, with unit
    rule: str  # the label rule, with {placeholders} for the thresholds
    kind: str  # "molecule" or "crystal": what its structures are (andersonn.data.domain)
    defaults: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # non-threshold build options

    def thresholds(self, overrides: Mapping[str, float | None] | None = None) -> dict[str, float]:
        """Default thresholds updated with ``overrides`` (``None`` values ignored), validated."""
        values = {k: float(v) for k, v in self.defaults.items()}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in values:
                known = ", ".join(sorted(values)) or "none"
                raise ConfigError(f"task {self.name} has no threshold {key!r} (known: {known})")
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"{self.name} threshold {key} ({THRESHOLD_FLAGS.get(key, key)}) "
                                  f"must be a finite number, got {value!r}")
            values[key] = number
        if self.name == "mof-pore" and not values["small"] < values["large"]:
            raise ConfigError(f"mof-pore needs --small-lcd below --large-lcd, got small "
                              f"{values['small']:g} Å, large {values['large']:g} Å")
        if self.name == "crystal-gap" and not 0 <= values["metal"] < values["insulator"]:
            raise ConfigError(f"crystal-gap needs 0 <= --metal-gap < --insulator-gap, got "
                              f"metal {values['metal']:g} eV, insulator {values['insulator']:g} eV")
        return values

    def describe(self, thresholds: Mapping[str, float]) -> str:
        """The label rule in words with the thresholds filled in."""
        return self.rule.format(**thresholds)

    def label(self, value: float, thresholds: Mapping[str, float]) -> int:
        """Class index of one property value under ``thresholds``."""
        if self.name == "polarity":
            return int(value >= thresholds["dipole"])
        if self.name == "mof-pore":
            if value < thresholds["small"]:
                return 0
            return 1 if value < thresholds["large"] else 2
        if self.name == "crystal-gap":
            if value <= thresholds["metal"]:
                return 0
            return 1 if value <= thresholds["insulator"] else 2
        raise ConfigError(f"no label rule for task {self.name}")  # pragma: no cover


TASKS: dict[str, TaskDefinition] = {
    "polarity": TaskDefinition(
        name="polarity",
        classes=("weakly polar", "strongly polar"),
        image_spec="polarity",
        source="qm9",
        archives=("qm9pack",),
        quantity="QM9 B3LYP/6-31G(2df,p) dipole moment (debye)",
        rule="strongly polar if dipole >= {dipole:g} D, else weakly polar",
        kind="molecule",
        defaults={"dipole": 2.5},
    ),
    "mof-pore": TaskDefinition(
        name="mof-pore",
        classes=("small", "medium", "large"),
        image_spec="mof-pore",
        source="core_mof",
        archives=("core_mof",),
        quantity="CoRE MOF 2019 ASR Zeo++ largest cavity diameter LCD (angstrom)",
        rule="small if LCD < {small:g} A, medium if {small:g} <= LCD < {large:g} A, "
        "large if LCD >= {large:g} A",
        kind="crystal",
        defaults={"small": 6.0, "large": 12.0},
        options={"include_fsr": False},
    ),
    "crystal-gap": TaskDefinition(
        name="crystal-gap",
        classes=("metal", "semiconductor", "insulator"),
        image_spec="crystal-gap",
        source="materials_project",
        archives=("matminer", "jarvis_leaderboard"),
        quantity="Materials Project 2018.6.1 PBE band gap (eV)",
        rule="metal if gap <= {metal:g} eV, semiconductor if {metal:g} < gap <= {insulator:g} eV, "
        "insulator if gap > {insulator:g} eV",
        kind="crystal",
        defaults={"metal": 0.0, "insulator": 3.0},
    ),
}


def get_task(name: str) -> TaskDefinition:
    """The task called ``name``; an unknown name is a :class:`ConfigError`."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None
