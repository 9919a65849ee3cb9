"""Molecule readers through RDKit: SMILES (embedded in 3-D, with conformers), mol blocks and
SDF records, mol2 and PDB; the seeded embedding attempts, the heavy-atom fallback for strained
cages, and the laying apart of a salt's fragments."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from andersonn.errors import InputError
from andersonn.structures.checks import _check_atoms, _fail, quiet, structure_from_arrays
from andersonn.structures.structure import Structure

CONFORMER_SEED = 0xA11CE


def _from_rdkit(mol: Any, name: str) -> Structure:
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    pairs, orders = [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        pairs.append((min(i, j), max(i, j)))
        orders.append(b.GetBondTypeAsDouble())
    bonds = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lengths = (np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1) if len(bonds)
               else np.zeros(0))
    charge = int(sum(a.GetFormalCharge() for a in mol.GetAtoms()))
    return Structure(name=name, numbers=numbers, positions=pos, bonds=bonds,
                     bond_orders=np.asarray(orders, dtype=np.float64), bond_lengths=lengths,
                     charge=charge)


def _embedding_attempts() -> Iterator[Any]:
    """RDKit embedding parameters to try in turn, all seeded: ETKDGv3; the same from random
    starting coordinates; plain distance geometry without the torsion and ring preferences,
    which embeds some strained cages (QM9 has them) that ETKDG cannot."""
    from rdkit.Chem import AllChem

    for stage in range(3):
        params = AllChem.ETKDGv3()
        params.randomSeed = CONFORMER_SEED
        params.useRandomCoords = stage > 0
        if stage == 2:
            params.useExpTorsionAnglePrefs = False
            params.useBasicKnowledge = False
        yield params


HEAVY_ATOM_SEEDS = 10


def _embed_heavy_atoms(mol: Any) -> Any | None:
    """The last resort for small strained cages on which every embedding with hydrogens fails
    (about 1 % of QM9's SMILES): embed the heavy atoms alone, from random coordinates, under up
    to :data:`HEAVY_ATOM_SEEDS` seeds, then place the hydrogens on them. None if that fails too."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    heavy = Chem.RemoveHs(mol)
    for k in range(HEAVY_ATOM_SEEDS):
        params = AllChem.ETKDGv3()
        params.randomSeed = CONFORMER_SEED + k
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(heavy, params) == 0:
            return Chem.AddHs(heavy, addCoords=True)
    return None


FRAGMENT_GAP = 2.5
"""Å between the fragments of a multi-fragment SMILES (a salt, a hydrate) as they are laid out
before the force-field relaxation; RDKit embeds each fragment at the origin, on top of the
others."""


def _lay_fragments_apart(mol: Any, conf_id: int = -1) -> int:
    """Move the disconnected fragments of an embedded molecule apart along x, each
    :data:`FRAGMENT_GAP` Å beyond the previous one's extent; returns the number of fragments."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    frags = Chem.GetMolFrags(mol)
    if len(frags) < 2:
        return len(frags)
    conf = mol.GetConformer(conf_id)
    pos = np.asarray(conf.GetPositions())
    edge = 0.0
    for k, atoms in enumerate(frags):
        idx = list(atoms)
        centre = pos[idx].mean(axis=0)
        radius = float(np.linalg.norm(pos[idx] - centre, axis=1).max())
        target = np.array([edge + radius if k else 0.0, 0.0, 0.0])
        for i in idx:
            x, y, z = pos[i] - centre + target
            conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
        edge = target[0] + radius + FRAGMENT_GAP
    return len(frags)


def _fragments_note(count: int) -> list[str]:
    return ([f"{count} disconnected fragments (a salt or a mixture): laid {FRAGMENT_GAP} Å "
             "apart before the force-field relaxation, so the answer depends on that arrangement"]
            if count > 1 else [])


def _embed(mol: Any, name: str, optimize: bool) -> tuple[Any, list[str]]:
    """The molecule with a 3-D conformer (fragments laid apart, MMFF-relaxed when
    ``optimize``) and the notes the laying apart calls for."""
    from rdkit.Chem import AllChem

    if not any(AllChem.EmbedMolecule(mol, params) == 0 for params in _embedding_attempts()):
        mol = _embed_heavy_atoms(mol)
        if mol is None:
            raise _fail(name, "cannot generate a 3-D conformer")
    notes = _fragments_note(_lay_fragments_apart(mol))
    if optimize:
        with contextlib.suppress(Exception):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    return mol, notes


def _smiles_mol(smiles: str, name: str) -> Any:
    """The RDKit molecule of a SMILES string, with explicit hydrogens."""
    return _parse_smiles(smiles, name)[0]


def _parse_smiles(smiles: str, name: str) -> tuple[Any, Any, list[int]]:
    """The molecule of a SMILES string with explicit hydrogens, in the string's atom order;
    the same molecule in canonical atom order (from its canonical SMILES), which is what gets
    embedded so that one molecule written two ways gets one geometry; and ``order``: the
    input atom each canonical heavy atom is (``order[k]``)."""
    from rdkit import Chem

    if not smiles or len(smiles.split()) != 1:
        raise _fail(name, "not a SMILES string")
    if not smiles.isascii():  # SMILES are ASCII; RDKit would drop a stray trailing "é"
        raise _fail(name, "unparsable SMILES (a character that is not ASCII)")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "unparsable SMILES")
    canonical = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
    order = [int(i) for i in re.findall(r"\d+", mol.GetProp("_smilesAtomOutputOrder"))]
    if canonical is None or [a.GetAtomicNum() for a in canonical.GetAtoms()] != [
            mol.GetAtomWithIdx(i).GetAtomicNum() for i in order]:
        # the canonical SMILES does not read back as the same atoms: renumber instead
        canonical = Chem.RenumberAtoms(mol, order)
    return Chem.AddHs(mol), Chem.AddHs(canonical), order


def _hydrogens(mol: Any, atom: int, first_added: int) -> list[int]:
    # only the hydrogens AddHs appended (indices from first_added on): an explicit [2H] of the
    # SMILES may stand before or after its heavy atom, in the input and in the canonical order
    return sorted(n.GetIdx() for n in mol.GetAtomWithIdx(atom).GetNeighbors()
                  if n.GetAtomicNum() == 1 and n.GetIdx() >= first_added)


def _transfer_conformers(canonical: Any, mol: Any, order: list[int]) -> None:
    """Give ``mol`` (input atom order) the conformers of ``canonical`` (canonical order): heavy
    atoms through ``order``, each one's added hydrogens in turn."""
    from rdkit import Chem

    index = np.full(mol.GetNumAtoms(), -1)
    for k, i in enumerate(order):
        index[i] = k
    for k, i in enumerate(order):
        for h_mol, h_can in zip(_hydrogens(mol, i, len(order)),
                                _hydrogens(canonical, k, len(order)), strict=True):
            index[h_mol] = h_can
    if (index < 0).any() or canonical.GetNumAtoms() != mol.GetNumAtoms():
        raise ValueError("canonical and input molecules differ")
    mol.RemoveAllConformers()
    for conf in canonical.GetConformers():
        pos = np.asarray(conf.GetPositions())[index]
        copy = Chem.Conformer(mol.GetNumAtoms())
        for i, (x, y, z) in enumerate(pos.tolist()):
            copy.SetAtomPosition(i, (x, y, z))
        copy.SetId(conf.GetId())
        copy.Set3D(True)
        mol.AddConformer(copy, assignId=False)


def _from_smiles(smiles: str, name: str, optimize: bool) -> Structure:
    mol, canonical, order = _parse_smiles(smiles, name)
    canonical, notes = _embed(canonical, name, optimize)
    _transfer_conformers(canonical, mol, order)
    s = _from_rdkit(mol, name)
    s.notes += notes
    return s


def _from_molblock(text: str, fmt: str, name: str, optimize: bool) -> Structure:
    from rdkit import Chem

    block = text.split("$$$$")[0] if fmt == "sdf" else text
    mol = Chem.MolFromMolBlock(block, removeHs=False, sanitize=True)
    if mol is None:
        raise _fail(name, f"unparsable {fmt} block")
    if mol.GetNumAtoms() == 0:
        raise _fail(name, "no atoms")
    notes: list[str] = []
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        mol = Chem.AddHs(mol)
        mol.RemoveAllConformers()
        mol, notes = _embed(mol, name, optimize)
    else:
        mol = Chem.AddHs(mol, addCoords=True)
    s = _from_rdkit(mol, name)
    s.notes += notes
    return s


def _from_mol2(text: str, name: str) -> Structure:
    """A Tripos mol2 molecule, with its bond orders; sanitised where RDKit can (mol2 atom
    typing often defeats sanitisation, then the file's own bonds are kept as written)."""
    from rdkit import Chem

    mol = Chem.MolFromMol2Block(text, removeHs=False, sanitize=True)
    if mol is None:
        mol = Chem.MolFromMol2Block(text, removeHs=False, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "unparsable mol2 block")
    if mol.GetNumConformers() == 0:
        raise _fail(name, "mol2 block has no coordinates")
    return _from_rdkit(mol, name)


def _from_pdb(text: str, name: str) -> Structure:
    """The atoms of a PDB file (ATOM and HETATM records of its first model) as a molecule;
    bonds and their orders come from the geometry, as for xyz, since PDB files rarely carry
    bond orders. Hydrogens are only those written in the file."""
    from rdkit import Chem

    mol = Chem.MolFromPDBBlock(text, removeHs=False, sanitize=False, proximityBonding=False)
    if mol is None or mol.GetNumAtoms() == 0:
        raise _fail(name, "pdb: no ATOM or HETATM records")
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if (numbers <= 0).any():
        raise _fail(name, "pdb: an atom has no element (columns 77-78)")
    return structure_from_arrays(numbers, mol.GetConformer().GetPositions(), name=name)


def _smiles_conformers(smiles: str, count: int, name: str) -> list[Structure] | None:
    """Up to ``count`` conformers of a SMILES string, lowest MMFF94 energy first: seeded ETKDG
    embeddings of its canonical form, those within 0.5 Å RMSD of another dropped, each
    MMFF-optimised, in the string's atom order. None where no attempt embeds any (a strained
    cage: the one conformer the fallback of :func:`_embed` finds is the answer)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with quiet():
        try:
            mol, canonical, order = _parse_smiles(smiles.strip(), name)
            ids: list[int] = []
            for params in _embedding_attempts():
                params.pruneRmsThresh = 0.5
                ids = list(AllChem.EmbedMultipleConfs(canonical, int(count), params))
                if ids:
                    break
            if not ids:
                return None
            for conf_id in ids:
                fragments = _lay_fragments_apart(canonical, conf_id)
            energies = [0.0] * len(ids)
            with contextlib.suppress(Exception):  # no MMFF parameters: keep the embeddings
                results = AllChem.MMFFOptimizeMoleculeConfs(canonical, maxIters=500)
                if len(results) == len(ids):
                    energies = [energy for _, energy in results]
            _transfer_conformers(canonical, mol, order)
        except InputError:
            raise
        except Exception as exc:  # library errors become one-line input errors
            raise _fail(name, f"cannot embed conformers: {type(exc).__name__}: {exc}") from None
    out = []
    for _, conf_id in sorted(zip(energies, ids, strict=True)):
        single = Chem.Mol(mol)
        single.RemoveAllConformers()
        single.AddConformer(Chem.Conformer(mol.GetConformer(conf_id)), assignId=True)
        s = _from_rdkit(single, name)
        s.fmt = "smiles"
        s.notes += _fragments_note(fragments)
        _check_atoms(s, name)
        out.append(s)
    return out
