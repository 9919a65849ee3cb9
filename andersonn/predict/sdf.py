"""Predictions as an SD file: every input molecule back, with its prediction as data fields.

``andersonn predict RUN library.sdf --out preds.sdf`` gives one record per input, in input
order, so the file lines up with the input and opens in any chemistry tool:

- an SDF/mol record keeps its own connection table and data fields, and gains the prediction;
- a SMILES gets a 2-D depiction from RDKit (its title: the SMILES, or its name from a ``.smi``
  line);
- any other molecule file (xyz, mol2, pdb, ...) is read again and written with its 3-D atoms
  and bonds: the file's own bond orders where it has them (aromatic as type 4), else those
  RDKit perceives from the geometry, else type 8 (any);
- an input that could not be read keeps what it can (its SDF record where RDKit reads that
  record, else an empty molecule named after it) and carries the reason in ``andersonn_error``.

Fields: ``andersonn_status`` (ok / error), ``andersonn_class``, ``andersonn_p_<class>`` (one
per class: comparison signs spelt out, ``< 2.5`` as ``lt_2_5`` and ``>= 2.5`` as ``ge_2_5``,
other non-alphanumeric characters as ``_``; names that still coincide get the class index as
a suffix, :func:`field_names`), ``andersonn_iterations``, ``andersonn_warnings``,
``andersonn_error``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from andersonn.structures.readers import StructureRecord, format_from_path, is_file, quiet

__all__ = ["field_name", "field_names", "sdf_predictions"]

_BOND_TYPES = {1.0: 1, 2.0: 2, 3.0: 3, 1.5: 4}


_SIGNS = (("<=", " le "), (">=", " ge "), ("!=", " ne "), ("≤", " le "), ("≥", " ge "),
          ("<", " lt "), (">", " gt "), ("=", " eq "), ("–", " to "))
"""Comparison signs (and the en dash of a bin ``1–3``) spelt out in field names."""


def field_name(class_name: str) -> str:
    """``andersonn_p_<class>``: comparison signs spelt out (``< 2.5`` → ``lt_2_5``, ``>= 2.5``
    → ``ge_2_5``, ``1–3`` → ``1_to_3``, a minus sign as ``minus``), then every run of other
    non-alphanumeric characters as one ``_``."""
    text = str(class_name)
    for sign, word in _SIGNS:
        text = text.replace(sign, word)
    text = re.sub(r"(?<![0-9A-Za-z.])-(?=[0-9.])", " minus ", text)
    return "andersonn_p_" + re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


def field_names(classes: Sequence[str]) -> list[str]:
    """:func:`field_name` of each class, made unique: classes whose names still coincide get
    their index in ``classes`` as a suffix (``andersonn_p_a_b_0``, ``andersonn_p_a_b_1``); if
    even that collides, every class is ``andersonn_p_<index>``."""
    names = [field_name(c) for c in classes]
    counts = Counter(names)
    names = [f"{n.rstrip('_')}_{i}" if counts[n] > 1 or n == "andersonn_p_" else n
             for i, n in enumerate(names)]
    if len(set(names)) < len(names):
        names = [f"andersonn_p_{i}" for i in range(len(names))]
    return names


def sdf_predictions(preds: Sequence[Any], classes: Sequence[str]) -> str:
    """The SD file text of ``preds`` (:class:`andersonn.predict.Prediction` with ``source``)."""
    records = []
    columns = dict(zip(classes, field_names(classes), strict=True))
    for p in preds:
        block = _molblock(p.source, p.input, check=not p.ok)
        fields: dict[str, str] = {"andersonn_status": "ok" if p.ok else "error"}
        if p.ok and p.probabilities is not None:
            fields["andersonn_class"] = str(p.label)
            fields.update({columns[c]: f"{p.probabilities[c]:.6f}" for c in classes})
            if p.iterations is not None:  # an explicit network has no solver iterations
                fields["andersonn_iterations"] = f"{p.iterations:.2f}"
        if p.warnings:
            fields["andersonn_warnings"] = "; ".join(p.warnings)
        if p.error:
            fields["andersonn_error"] = p.error
        data = "".join(f">  <{k}>\n{_flat_line(v)}\n\n" for k, v in fields.items())
        records.append(f"{block}{data}$$$$\n")
    return "".join(records)


def _flat_line(text: str) -> str:
    return " ".join(str(text).split()) or "-"  # a blank line would end the field


def _molblock(source: Any, name: str, check: bool = True) -> str:
    """A mol block (through ``M  END`` plus any data fields it had) for one input; an empty
    molecule named ``name`` when there is nothing better. ``check=False``: the input was read
    (and sanitised) by the readers, so its own SDF/mol text is not parsed again."""
    try:
        if isinstance(source, StructureRecord):
            if source.fmt in ("sdf", "mol"):
                return _own_block(source.text, check)
            if source.fmt == "smiles":
                return _smiles_block(source.text, source.name)
            return _structure_block(source, name)
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if is_file(path):
                if format_from_path(path) in ("sdf", "mol"):
                    from andersonn.structures.readers import iter_records

                    # the first record only: read_records would read a whole library
                    return _own_block(next(iter_records(path)).text, check)
                return _structure_block(path, name)
            return _smiles_block(path, path)
    except Exception:  # an unreadable input keeps its name and its error field
        pass
    return _empty_block(name)


def _own_block(text: str, check: bool = True) -> str:
    """An SDF/mol record's own text (its data fields too), when RDKit reads its connection
    table as the readers do (sanitised; ``check=False`` for a record they already read); a
    broken record is not copied: it would make the record unreadable in the output."""
    from rdkit import Chem

    body = text.split("$$$$")[0].rstrip("\n") + "\n"
    if "M  END" not in body:
        raise ValueError("no connection table")
    with quiet():
        if check and Chem.MolFromMolBlock(body, sanitize=True, removeHs=False) is None:
            raise ValueError("unreadable connection table")
    has_fields = ">" in body.split("M  END", 1)[1]
    return body + "\n" if has_fields else body  # a data field ends with a blank line


def _title_line(title: str) -> str:
    """An SDF title line (80 characters at most): a longer name keeps its end, where a
    record's number and title are (``...s/lib.sdf#2 (broken)``)."""
    line = _flat_line(title)
    return line if len(line) <= 80 else "..." + line[-77:]


def _smiles_block(smiles: str, title: str) -> str:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with quiet():
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        raise ValueError("unparsable SMILES")
    AllChem.Compute2DCoords(mol)
    mol.SetProp("_Name", _title_line(title))
    return Chem.MolToMolBlock(mol)


def _structure_block(source: Any, title: str) -> str:
    """A V2000 block of a molecule file's 3-D atoms and bonds (as the image was made from).

    Bond orders the file spelt out (mol2, or RDKit's reading) are written as they are; where
    they are geometric estimates (xyz, pdb without orders) RDKit perceives them from the
    geometry, and where that fails the bonds are written as type 8 ("any"), not guessed."""
    from andersonn.images.physics import perceive_molecule
    from andersonn.structures import read_structure
    from andersonn.structures.elements import SYMBOLS

    s = read_structure(source)
    if s.kind != "molecule" or len(s.numbers) > 999:
        raise ValueError("not a molecule an SD file can hold")
    orders = [float(o) for o in s.bond_orders] if len(s.bond_orders) == len(s.bonds) else []
    if len(orders) != len(s.bonds) or any(o not in _BOND_TYPES for o in orders):
        mol = perceive_molecule(s.numbers, s.positions, s.charge)
        if mol is not None:
            from rdkit import Chem

            mol.SetProp("_Name", _title_line(title))
            return Chem.MolToMolBlock(mol, kekulize=False)
        orders = []
    header = f"{'':2}{'anderson':8}{'':10}3D"  # initials, program, date, dimension code
    lines = [_title_line(title), header, "",
             f"{len(s.numbers):3d}{len(s.bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]
    lines += [f"{x:10.4f}{y:10.4f}{z:10.4f} {SYMBOLS[int(n)]:<3} 0  0  0  0  0  0  0  0  0  0"
              f"  0  0" for n, (x, y, z) in zip(s.numbers, s.positions, strict=True)]
    for k, (i, j) in enumerate(s.bonds):
        kind = _BOND_TYPES[orders[k]] if orders else 8
        lines.append(f"{int(i) + 1:3d}{int(j) + 1:3d}{kind:3d}  0")
    return "\n".join([*lines, "M  END"]) + "\n"


def _empty_block(title: str) -> str:
    return "\n".join([_title_line(title), "  andersonn", "",
                      "  0  0  0  0  0  0  0  0  0  0999 V2000", "M  END"]) + "\n"
