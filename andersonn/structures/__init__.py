"""Structures stage: readers (SMILES, xyz, sdf/mol, CIF, POSCAR, pymatgen dicts) -> Structure
with its atom-bond network."""

from andersonn.structures.readers import (
    FORMATS,
    format_from_path,
    parse_structure,
    read_conformers,
    read_structure,
    sniff_format,
    structure_from_arrays,
)
from andersonn.structures.structure import Structure, StructureSummary

__all__ = ["FORMATS", "Structure", "StructureSummary", "format_from_path", "parse_structure",
           "read_conformers", "read_structure", "sniff_format", "structure_from_arrays"]
