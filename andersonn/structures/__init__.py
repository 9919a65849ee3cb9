"""Structures stage: readers (SMILES, xyz, sdf/mol, mol2, PDB, CIF, POSCAR, pymatgen dicts;
gzip read through; multi-structure files cut into records) -> Structure with its atom-bond
network."""

from andersonn.structures.readers import (
    FORMATS,
    StructureRecord,
    format_from_path,
    iter_records,
    parse_structure,
    read_conformers,
    read_records,
    read_structure,
    sdf_fields,
    sniff_format,
    split_records,
    structure_from_arrays,
)
from andersonn.structures.structure import Structure, StructureSummary

__all__ = ["FORMATS", "Structure", "StructureRecord", "StructureSummary", "format_from_path",
           "iter_records", "parse_structure", "read_conformers", "read_records", "read_structure",
           "sdf_fields", "sniff_format", "split_records", "structure_from_arrays"]
