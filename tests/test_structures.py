"""Structure readers and atom-bond networks: known structures, formats and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from andersonn.errors import InputError
from andersonn.structures import (
    Structure,
    format_from_path,
    parse_structure,
    read_conformers,
    read_structure,
    sniff_format,
    structure_from_arrays,
)

FIX = Path(__file__).parent / "fixtures" / "structures"


def _bond_types(s: Structure) -> dict[tuple[str, str, float], int]:
    out: dict[tuple[str, str, float], int] = {}
    sym = s.symbols
    for (i, j), order in zip(s.bonds, s.bond_orders, strict=True):
        key = (*sorted((sym[i], sym[j])), float(order))
        out[key] = out.get(key, 0) + 1
    return out


def test_benzene_sdf_bonds():
    s = read_structure(FIX / "benzene.sdf")
    assert s.kind == "molecule" and s.formula == "C6H6" and s.n_atoms == 12
    assert _bond_types(s) == {("C", "C", 1.5): 6, ("C", "H", 1.0): 6}
    cc = s.bond_lengths[s.bond_orders == 1.5]
    assert np.allclose(cc, 1.39, atol=0.03)


def test_benzene_smiles_deterministic_conformer():
    a = read_structure("c1ccccc1")
    b = parse_structure("c1ccccc1", "smiles", "benzene")
    assert _bond_types(a) == {("C", "C", 1.5): 6, ("C", "H", 1.0): 6}
    assert np.array_equal(a.positions, b.positions)  # fixed seed
    centred = a.positions - a.positions.mean(0)
    assert np.linalg.svd(centred, compute_uv=False)[-1] < 0.05  # planar after MMFF


def test_water_xyz_bond_length():
    s = read_structure(FIX / "water.xyz")
    assert s.formula == "H2O"
    assert len(s.bonds) == 2
    assert np.allclose(s.bond_lengths, 0.9572, atol=1e-4)
    assert np.allclose(s.bond_orders, 1.0, atol=0.15)


def test_xyz_bond_perception_and_orders():
    s = read_structure(FIX / "acetonitrile.xyz")
    types = _bond_types(s)
    assert sum(types.values()) == 5  # C-C, C#N, 3 C-H
    cn = [o for (i, j), o in zip(s.bonds, s.bond_orders, strict=True)
          if {s.symbols[i], s.symbols[j]} == {"C", "N"}]
    assert len(cn) == 1 and cn[0] > 2.3  # triple bond from Pauling's relation


def test_mol_and_sdf_formats():
    s = read_structure(FIX / "ethanol.mol")
    assert s.formula == "C2H6O" and s.fmt == "mol" and len(s.bonds) == 8


def test_nacl_six_cl_neighbours_at_half_a():
    for name in ("NaCl.cif", "NaCl_primitive.vasp", "NaCl_221.cif"):
        s = read_structure(FIX / name)
        assert s.kind == "crystal"
        na = next(k for k, z in enumerate(s.numbers) if z == 11)
        nb = s.neighbours(na)
        assert len(nb) == 6, name
        assert all(s.symbols[j] == "Cl" for j, _, _ in nb)
        assert np.allclose([d for _, _, d in nb], 5.64 / 2, atol=1e-3)


def test_silicon_poscar_and_cif():
    p = read_structure(FIX / "POSCAR_Si")
    c = read_structure(FIX / "Si_conventional.cif")
    assert p.n_atoms == 2 and c.n_atoms == 8
    assert np.isclose(p.density, c.density) and np.isclose(c.density, 2.33, atol=0.02)
    # every Si has 4 bonds at sqrt(3)/4 a
    deg = np.bincount(c.bonds.ravel(), minlength=8)
    assert (deg == 4).all()
    assert np.allclose(c.bond_lengths, np.sqrt(3) / 4 * 5.431, atol=1e-3)


def test_mof_p1_fast_path_matches_pymatgen():
    from pymatgen.io.cif import CifParser

    path = FIX / "mof_ABAVIJ_clean.cif"
    s = read_structure(path)
    ref = CifParser(str(path)).parse_structures(primitive=False)[0]
    assert s.n_atoms == len(ref) == 108
    assert np.allclose(np.linalg.norm(s.cell, axis=1), ref.lattice.abc, atol=1e-6)
    assert np.isclose(s.volume, ref.volume)
    assert sorted(s.numbers.tolist()) == sorted(site.specie.Z for site in ref)
    # same structure whichever reader: identical image (orientation-independent encoding)
    from andersonn.images import encode

    via_pmg = parse_structure(ref.as_dict(), "pymatgen-dict", "abavij")
    assert np.allclose(encode(s, "mof-pore"), encode(via_pmg, "mof-pore"), atol=2e-3)


def test_in_memory_formats():
    text = (FIX / "Si_conventional.cif").read_text()
    a = parse_structure(text, "cif", "si")
    b = parse_structure((FIX / "POSCAR_Si").read_text(), "poscar", "si-p")
    from pymatgen.core import Structure as Pmg

    d = Pmg.from_str(text, fmt="cif").as_dict()
    c = parse_structure(d, "pymatgen-dict", "si-d")
    e = parse_structure(str(d), "pymatgen-dict", "si-s")  # dict literal text
    assert a.n_atoms == c.n_atoms == e.n_atoms == 8 and b.n_atoms == 2
    x = parse_structure((FIX / "water.xyz").read_text(), "xyz", "w")
    assert x.n_atoms == 3
    arr = structure_from_arrays(["O", "H", "H"], x.positions)
    assert len(arr.bonds) == 2


def test_format_detection_and_override(tmp_path):
    assert format_from_path("x/CONTCAR") == "poscar"
    assert format_from_path("a.vasp") == "poscar"
    assert sniff_format((FIX / "NaCl.cif").read_text()) == "cif"
    assert sniff_format((FIX / "POSCAR_Si").read_text()) == "poscar"
    assert sniff_format((FIX / "water.xyz").read_text()) == "xyz"
    odd = tmp_path / "water.dat"
    odd.write_text((FIX / "water.xyz").read_text())
    assert read_structure(odd).formula == "H2O"  # from content
    assert read_structure(odd, fmt="xyz").formula == "H2O"
    with pytest.raises(InputError, match=r"water\.dat: not a CIF"):
        read_structure(odd, fmt="cif")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.cif", "empty file"),
        ("truncated.cif", "bad CIF"),
        ("no_atoms.cif", "no atom"),
        ("junk.bin", "binary"),
        ("junk.cif", "binary"),
        ("bad.smi", "unparsable SMILES"),
        ("truncated.xyz", "truncated xyz"),
        ("structure.txt", "unknown structure format"),
    ],
)
def test_bad_files_raise_input_error(name, reason):
    with pytest.raises(InputError) as info:
        read_structure(FIX / name)
    msg = str(info.value)
    assert msg.startswith(name + ":") and reason in msg and "\n" not in msg


def test_bad_in_memory_inputs():
    cases = [("C1CC((", "smiles", "unparsable SMILES"), ("", "xyz", "empty"),
             ("{'sites': []}", "pymatgen-dict", "no atoms"), ("3\n\nO 0 0 0\n", "xyz", "truncated"),
             ("data_x\n_cell_length_a 3\n", "cif", "no atoms"), ("hello", "cube", "unsupported"),
             ("Xx 0 0 0", "poscar", "POSCAR")]
    for content, fmt, reason in cases:
        with pytest.raises(InputError) as info:
            parse_structure(content, fmt, "item-7")
        msg = str(info.value)
        assert msg.startswith("item-7:") and reason.lower() in msg.lower(), msg
        assert "\n" not in msg


def test_missing_file_and_smiles_with_path_chars():
    with pytest.raises(InputError, match="no such file"):
        read_structure("does/not/exist.cif")
    assert read_structure("C(=O)O").formula == "CH2O2"


def test_rdkit_logging_is_silenced(capfd):
    with pytest.raises(InputError):
        read_structure("C1CC((N")
    assert capfd.readouterr().err == ""


def test_large_periodic_bond_search_is_fast():
    import time

    rng = np.random.default_rng(0)
    cell = np.eye(3) * 27.0  # ~2,000 atoms at MOF-like density
    n = 2000
    # a jittered 13^3 grid (2.1 Å apart), not random points: those overlap (refused)
    grid = np.stack(np.meshgrid(*[np.arange(13)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = (grid[:n] + rng.uniform(-0.15, 0.15, (n, 3))) / 13
    numbers = rng.choice([1, 6, 8, 30], size=n)
    t0 = time.perf_counter()
    s = structure_from_arrays(numbers, frac @ cell, cell)
    assert time.perf_counter() - t0 < 1.0
    assert s.n_atoms == n


def test_read_conformers_of_a_smiles_are_distinct_sorted_and_repeatable() -> None:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    smiles = "CC(O)CC(O)C#C"  # two hydroxyls and a chain: several conformers
    confs = read_conformers(smiles, 6)
    assert 2 <= len(confs) <= 6
    assert all(c.fmt == "smiles" and c.name == smiles for c in confs)
    assert all((c.numbers == confs[0].numbers).all() for c in confs)
    assert not np.allclose(confs[0].positions, confs[1].positions)
    again = read_conformers(smiles, 6)
    assert all(np.allclose(a.positions, b.positions) for a, b in zip(confs, again, strict=True))
    # lowest MMFF94 energy first: recompute the energies from the returned geometries
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    energies = []
    for c in confs:
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, xyz in enumerate(c.positions):
            conf.SetAtomPosition(i, xyz.tolist())
        mol.RemoveAllConformers()
        mol.AddConformer(conf, assignId=True)
        props = AllChem.MMFFGetMoleculeProperties(mol)
        energies.append(AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy())
    assert energies == sorted(energies)


def test_read_conformers_keeps_a_given_geometry_and_reports_bad_input() -> None:
    xyz = FIX / "acetonitrile.xyz"
    (only,) = read_conformers(xyz, 5)
    assert np.allclose(only.positions, read_structure(xyz).positions)
    assert np.allclose(read_conformers("CCO", 1)[0].positions, read_structure("CCO").positions)
    assert len(read_conformers("C#C", 5)) == 1  # rigid: near-duplicate embeddings are pruned
    with pytest.raises(InputError, match="unparsable SMILES"):
        read_conformers("((", 3)


def test_strained_cage_smiles_embeds_through_the_heavy_atom_fallback(monkeypatch) -> None:
    """QM9's C1OC2CC3CC12C3 (a fused cage) defeats every embedding with hydrogens; embedding
    its heavy atoms and then placing the hydrogens gives a sane MMFF geometry."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from andersonn.structures import molecules

    smiles = "C1OC2CC3CC12C3"
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert all(AllChem.EmbedMolecule(mol, p) != 0 for p in molecules._embedding_attempts())
    calls = []
    real = molecules._embed_heavy_atoms
    monkeypatch.setattr(molecules, "_embed_heavy_atoms", lambda m: calls.append(1) or real(m))
    s = read_structure(smiles)
    assert calls and s.numbers.tolist().count(1) == 10 and len(s.numbers) == 18  # C7H10O
    d = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1)[np.triu_indices(18, 1)]
    assert d.min() > 0.9  # no atoms on top of each other
    heavy = [np.linalg.norm(s.positions[i] - s.positions[j]) for i, j in s.bonds
             if s.numbers[i] > 1 and s.numbers[j] > 1]
    assert len(heavy) == 10 and min(heavy) > 1.3 and max(heavy) < 1.75  # C-C / C-O lengths
    again = read_conformers(smiles, 5)  # several conformers fall back to the one
    assert len(again) == 1 and np.allclose(again[0].positions, s.positions)


# ---------------------------------------------------------------- files of several structures
def _three_molecule_sdf(path: Path) -> list[str]:
    """An SDF of ethanol, benzene and acetonitrile (fixture geometries); their formulas."""
    blocks = ["\n" + (FIX / "ethanol.mol").read_text().split("\n", 1)[1],  # no title
              (FIX / "benzene.sdf").read_text().split("$$$$")[0],
              ]
    from rdkit import Chem

    xyz = read_structure(FIX / "acetonitrile.xyz")
    mol = Chem.RWMol()
    for z in xyz.numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(xyz.n_atoms)
    for i, p in enumerate(xyz.positions):
        conf.SetAtomPosition(i, p.tolist())
    for (i, j), order in zip(xyz.bonds, xyz.bond_orders, strict=True):
        mol.AddBond(int(i), int(j), {1.0: Chem.BondType.SINGLE,
                                     3.0: Chem.BondType.TRIPLE}[round(float(order))])
    mol.AddConformer(conf)
    blocks.append("acetonitrile\n" + Chem.MolToMolBlock(mol.GetMol()).split("\n", 1)[1])
    path.write_text("".join(b.rstrip("\n") + "\n$$$$\n" for b in blocks))
    return ["C2H6O", "C6H6", "C2H3N"]


def test_an_sdf_of_several_molecules_is_cut_into_records(tmp_path: Path) -> None:
    from andersonn.structures import StructureRecord, read_records

    path = tmp_path / "three.sdf"
    formulas = _three_molecule_sdf(path)
    records = read_records(path)
    assert [r.fmt for r in records] == ["sdf"] * 3
    assert [r.name for r in records] == ["three.sdf#1", "three.sdf#2 (benzene)",
                                         "three.sdf#3 (acetonitrile)"]
    assert [read_structure(r).formula for r in records] == formulas
    # each record reads exactly as the same molecule in a file of its own
    alone = read_structure(FIX / "benzene.sdf")
    assert np.allclose(read_structure(records[1]).positions, alone.positions)
    assert read_structure(records[1]).name == "three.sdf#2 (benzene)"
    with pytest.raises(InputError, match=r"^three\.sdf: holds 3 structures \(sdf records\)"):
        read_structure(path)
    with pytest.raises(InputError, match="holds 3 structures"):
        read_conformers(path, 4)
    # a file of one structure stays one record named as the file, its text untouched
    (one,) = read_records(FIX / "benzene.sdf")
    assert one == StructureRecord("benzene.sdf", (FIX / "benzene.sdf").read_text(), "sdf")
    assert read_records("CCO") == [StructureRecord("CCO", "CCO", "smiles")]


def test_xyz_frames_cif_blocks_and_pdb_models_are_records(tmp_path: Path) -> None:
    from andersonn.structures import read_records, split_records

    water = (FIX / "water.xyz").read_text()
    nitrile = (FIX / "acetonitrile.xyz").read_text()
    frames = tmp_path / "traj.xyz"
    frames.write_text(water + "\n" + nitrile + water)
    assert [read_structure(r).formula for r in read_records(frames)] == ["H2O", "C2H3N", "H2O"]
    assert [r.name for r in read_records(frames)] == [f"traj.xyz#{k}" for k in (1, 2, 3)]
    # a broken last frame is a record of its own that fails with the xyz reader's reason
    broken = tmp_path / "broken.xyz"
    broken.write_text(water + "5\ncut short\nO 0 0 0\n")
    records = read_records(broken)
    assert read_structure(records[0]).formula == "H2O"
    with pytest.raises(InputError, match=r"broken\.xyz#2: truncated xyz: 1 of 5"):
        read_structure(records[1])
    # CIF: every data block with atoms; a block without atoms (a global block) does not count
    nacl = (FIX / "NaCl_221.cif").read_text()
    si = (FIX / "Si_conventional.cif").read_text()
    blocks = tmp_path / "two.cif"
    blocks.write_text("data_global\n_journal_year 2024\n\n" + nacl + "\n" + si)
    records = read_records(blocks)
    assert len(records) == 2 and [read_structure(r).formula for r in records] == \
        [read_structure(FIX / "NaCl_221.cif").formula, "Si8"]
    assert records[1].name.startswith("two.cif#2 (")
    assert len(split_records("data_global\n_journal_year 2024\n" + si, "cif")) == 1
    # PDB: one record per MODEL
    pdb = _benzene_pdb()
    models = "".join(f"MODEL     {k}\n" + "".join(
        ln + "\n" for ln in pdb.splitlines() if ln.startswith(("ATOM", "HETATM"))) + "ENDMDL\n"
        for k in (1, 2))
    assert [r.name for r in read_records(models, fmt="pdb", name="m")] == ["m#1", "m#2"]
    assert all(read_structure(r).formula == "C6H6" for r in read_records(models, fmt="pdb",
                                                                          name="m"))


def _benzene_pdb() -> str:
    from rdkit import Chem

    mol = Chem.MolFromMolFile(str(FIX / "benzene.sdf"), removeHs=False)
    return Chem.MolToPDBBlock(mol)


def test_pdb_and_mol2_molecules(tmp_path: Path) -> None:
    sdf = read_structure(FIX / "benzene.sdf")
    path = tmp_path / "benzene.pdb"
    path.write_text(_benzene_pdb())
    assert format_from_path(path) == "pdb" and sniff_format(path.read_text()) == "pdb"
    pdb = read_structure(path)
    # the same atoms (PDB keeps 3 decimals) and, from the geometry, the same bond graph
    assert pdb.formula == "C6H6" and np.allclose(pdb.positions, sdf.positions, atol=1e-3)
    assert sorted(map(tuple, pdb.bonds.tolist())) == sorted(map(tuple, sdf.bonds.tolist()))
    mol2 = read_structure(FIX / "ethanol.mol2")
    assert format_from_path(FIX / "ethanol.mol2") == "mol2"
    assert sniff_format((FIX / "ethanol.mol2").read_text()) == "mol2"
    assert mol2.formula == "C2H6O" and len(mol2.bonds) == 8 and set(mol2.bond_orders) == {1.0}
    with pytest.raises(InputError, match=r"^x\.pdb: pdb: no ATOM or HETATM records"):
        parse_structure("REMARK nothing here\nEND\n", "pdb", "x.pdb")
    with pytest.raises(InputError, match=r"^y: unparsable mol2 block"):
        parse_structure("@<TRIPOS>MOLECULE\nbroken\n", "mol2", "y")


def test_gzip_files_are_read_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from andersonn.structures import read_records, records

    packed = tmp_path / "NaCl.cif.gz"
    packed.write_bytes(gzip.compress((FIX / "NaCl.cif").read_bytes()))
    assert format_from_path(packed) == "cif" and format_from_path("POSCAR.gz") == "poscar"
    assert format_from_path("notes.gz") is None
    s = read_structure(packed)
    assert s.name == "NaCl.cif.gz" and s.formula == read_structure(FIX / "NaCl.cif").formula
    many = tmp_path / "three.sdf.gz"
    plain = tmp_path / "three.sdf"
    _three_molecule_sdf(plain)
    many.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.name.replace(".gz", "") for r in read_records(many)] == \
        [r.name for r in read_records(plain)]
    corrupt = tmp_path / "bad.xyz.gz"
    corrupt.write_bytes(gzip.compress(b"3\n\nO 0 0 0\n")[:15])
    with pytest.raises(InputError, match=r"^bad\.xyz\.gz: corrupt gzip file"):
        read_structure(corrupt)
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 1000)
    bomb = tmp_path / "bomb.xyz.gz"
    bomb.write_bytes(gzip.compress(b"3\n" + b" " * 5000 + b"\nO 0 0 0\n"))
    assert bomb.stat().st_size < 1000
    with pytest.raises(InputError, match=r"^bomb\.xyz\.gz: file too large uncompressed"):
        read_structure(bomb)


def test_dft_code_files_vasprun_espresso_xsf(tmp_path: Path) -> None:
    # silicon, primitive fcc cell: a/2 = 2.715 Å (ASE-written), 2.73 Å in vasprun's final step
    for name, half in (("vasprun_Si.xml", 2.73), ("Si.pwi", 2.715), ("Si.xsf", 2.715)):
        s = read_structure(FIX / name)
        assert s.formula == "Si2" and s.kind == "crystal", name
        assert np.allclose(s.cell, half * (1 - np.eye(3)), atol=1e-6), name
        assert np.allclose(s.positions[1], 0.5 * half * np.ones(3), atol=1e-6), name
        # tetrahedral: each Si has 4 Si neighbours at sqrt(3)/4 a
        assert len(s.bonds) == 4 and np.allclose(s.bond_lengths, np.sqrt(3) / 2 * half), name
        text = (FIX / name).read_text()
        assert sniff_format(text) == format_from_path(FIX / name), name
    # a run cut short (no finalpos, XML unclosed): the last ionic step written
    text = (FIX / "vasprun_Si.xml").read_text()
    cut = text[:text.index('<structure name="finalpos"') + 40]
    assert np.allclose(parse_structure(cut, "vasprun", "run").cell, 2.73 * (1 - np.eye(3)))
    for bad, reason in (("<modeling></modeling>", "no atominfo or structure"),
                        ("<modeling><atominfo>", "no structure written yet")):
        with pytest.raises(InputError, match=rf"^v\.xml: vasprun: {reason}"):
            parse_structure(bad, "vasprun", "v.xml")


def test_lines_after_an_xyz_frame_are_not_another_structure() -> None:
    from andersonn.structures import read_records

    # a file as QM9 distributes it: atoms with Mathematica exponents, then frequencies,
    # SMILES and InChI lines after the frame
    qm9_style = ("3\ngdb 42\tO 0 0 0\nO 0.0 0.0 0.1173*^-0\t-0.4\nH 0.0 0.7572 -0.4692\t0.2\n"
                 "H 0.0 -0.7572 -0.4692\t0.2\n1594.7\t3656.3\t3755.9\nO\tO\n"
                 "InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2\n")
    (record,) = read_records(qm9_style, fmt="xyz", name="dsgdb9nsd_000042.xyz")
    assert read_structure(record).formula == "H2O"
    assert parse_structure(qm9_style, "xyz", "w").formula == "H2O"
    # a count line holds the count alone: "100 3656.3" after a frame is trailing text too
    (record,) = read_records(qm9_style.replace("1594.7", "100 "), fmt="xyz", name="x.xyz")


# ---------------------------------------------------------------- tester's report (readers)
_HDR = ("data_x\n_symmetry_space_group_name_H-M   'P 1'\n_cell_length_a 5.64\n"
        "_cell_length_b 5.64\n_cell_length_c 5.64\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n")
_SITES = ("loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n"
          "_atom_site_fract_y\n_atom_site_fract_z\n")
_NACL_ASYM = "Na1 Na 0 0 0\nCl1 Cl 0.5 0.5 0.5\n"


def test_blank_and_comment_lines_inside_a_cif_loop_do_not_end_it() -> None:
    rows = ["Na1 Na 0 0 0", "Na2 Na 0 0.5 0.5", "", "# a comment", "Na3 Na 0.5 0 0.5",
            "Na4 Na 0.5 0.5 0", "Cl1 Cl 0.5 0.5 0.5", "Cl2 Cl 0.5 0 0", "Cl3 Cl 0 0.5 0",
            "Cl4 Cl 0 0 0.5"]
    s = parse_structure(_HDR + _SITES + "\n".join(rows) + "\n", "cif", "x.cif")
    assert s.formula == "Cl4Na4"


@pytest.mark.parametrize("symmetry", [
    "_space_group_IT_number 225\n",
    "_symmetry_space_group_name_H-M\n\"F m -3 m\"\n",
    "_symmetry_space_group_name_Hall \"-F 4 2 3\"\n",
    "_space_group.name_H-M_alt \"F m -3 m\"\n",
    "_space_group.IT_number 225\n",
    "loop_\n_space_group_symop.id\n_space_group_symop.operation_xyz\n1 x,y,z\n"
    "2 x,y+1/2,z+1/2\n3 x+1/2,y,z+1/2\n4 x+1/2,y+1/2,z\n",
])
def test_cif_symmetry_in_any_spelling_is_applied(symmetry: str) -> None:
    """Only a positively stated P1 takes the fast P1 path; the rock-salt asymmetric unit
    with its symmetry, however written, gives the 8-atom conventional cell."""
    text = ("data_NaCl\n" + symmetry + "".join(_HDR.splitlines(True)[2:]) + _SITES
            + _NACL_ASYM)
    s = parse_structure(text, "cif", "x.cif")
    assert s.formula == "Cl4Na4" and s.n_atoms == 8


def test_cif_fast_path_only_for_stated_or_absent_p1() -> None:
    from andersonn.structures.cif import read_p1_cif

    assert read_p1_cif(_HDR + _SITES + _NACL_ASYM) is not None
    assert read_p1_cif(_HDR.replace("'P 1'", "'F m -3 m'") + _SITES + _NACL_ASYM) is None
    assert read_p1_cif(_HDR + "_space_group_IT_number 225\n" + _SITES + _NACL_ASYM) is None
    # a symmetry data name the fast reader does not interpret: pymatgen decides
    assert read_p1_cif(_HDR + "_space_group_name_H-M_ref 'F m -3 m'\n" + _SITES
                       + _NACL_ASYM) is None
    for name in ("mof_KECRAL10_clean.cif", "mof_ABAVIJ_clean.cif"):
        assert read_p1_cif((FIX / name).read_text()) is not None, name


def test_valid_cifs_the_fast_reader_refuses_fall_back_to_pymatgen() -> None:
    deuterated = (_HDR + _SITES.replace("fract_z\n", "fract_z\n_atom_site_U_iso_or_equiv\n")
                  + "O1 O 0 0 0 0.01\nD1 D 0.17 0.1 0 0.02\nD2 D 0 0.17 0.1 0.02\n")
    assert parse_structure(deuterated, "cif", "d.cif").formula == "H2O"
    from andersonn.structures.cif import read_p1_cif

    assert read_p1_cif(deuterated) is not None  # D (and T) read as H by the fast reader too
    wrapped = (_HDR + _SITES.replace("fract_z\n", "fract_z\n_atom_site_U_iso_or_equiv\n")
               + "Na1 Na 0.0 0.0\n0.0 0.01\nCl1 Cl 0.5 0.5 0.5 0.01\n")
    assert parse_structure(wrapped, "cif", "w.cif").formula == "ClNa"
    # where pymatgen fails too, the fast reader's reason is given
    with pytest.raises(InputError, match=r"^t\.cif: bad CIF: atom site line 1 has 6 fields"):
        read_structure(FIX / "truncated.cif", name="t.cif")


def test_poscar_without_element_line() -> None:
    body = "1.0\n0 2.82 2.82\n2.82 0 2.82\n2.82 2.82 0\n1 1\ndirect\n0 0 0\n0.5 0.5 0.5\n"
    with pytest.raises(InputError, match=r"^P: POSCAR has no element line: add the element"):
        parse_structure("NaCl rock salt\n" + body, "poscar", "P")
    # VASP 4 convention: a comment line of exactly the species' symbols names them
    assert parse_structure("Na Cl\n" + body, "poscar", "P").formula == "ClNa"
    with pytest.raises(InputError, match="no element line"):
        parse_structure("Na Cl Fe\n" + body, "poscar", "P")


def test_one_molecule_written_two_ways_gets_one_geometry() -> None:
    """The seeded conformer no longer depends on the SMILES's atom order; the atoms keep it."""
    for a, b in (("CCO", "OCC"), ("CC(=O)NC", "CNC(C)=O")):
        sa, sb = read_structure(a), read_structure(b)
        assert sorted(sa.symbols) == sorted(sb.symbols)
        assert sa.symbols != sb.symbols  # each in its own input order
        da = np.sort(np.linalg.norm(sa.positions[:, None] - sa.positions[None], axis=-1).ravel())
        db = np.sort(np.linalg.norm(sb.positions[:, None] - sb.positions[None], axis=-1).ravel())
        assert np.allclose(da, db, atol=1e-6)
    assert read_structure("CCO").symbols[:3] == ["C", "C", "O"]
    ca, cb = read_conformers("OCC(O)CO", 3), read_conformers("C(O)C(O)CO", 3)
    assert len(ca) == len(cb)
    for x, y in zip(ca, cb, strict=True):
        assert np.allclose(np.sort(np.linalg.norm(x.positions - x.positions.mean(0), axis=1)),
                           np.sort(np.linalg.norm(y.positions - y.positions.mean(0), axis=1)),
                           atol=1e-6)


@pytest.mark.parametrize(("text", "fmt"), [
    (_HDR + _SITES + "Na1 Na 0 0 0\nNa2 Na 1.0 0 0\nNa3 Na 0 1.0 1.0\nCl1 Cl 0.5 0.5 0.5\n",
     "cif"),
    ('2\nLattice="5 0 0 0 5 0 0 0 5"\nNa 0 0 0\nNa 5 0 0\n', "xyz"),
    ('2\nLattice="5 0 0 0 5 0 0 0 5"\nNa 0.001 0 0\nCl 4.998 0 0\n', "xyz"),
])
def test_crystal_with_a_site_written_twice_is_refused(text: str, fmt: str) -> None:
    with pytest.raises(InputError, match=r"^c: atoms 1 and 2 are 0\.00[03] Å apart under "
                                         r"periodic boundaries \(one site written twice"):
        parse_structure(text, fmt, "c")
    # close but distinct sites (CoRE MOF's disordered hydrogens come to 0.02 Å) are kept
    assert parse_structure('2\nLattice="5 0 0 0 5 0 0 0 5"\nH 0.02 0 0\nH 4.999 0 0\n', "xyz",
                           "c").n_atoms == 2


def test_genuine_crystal_fixtures_pass_the_overlap_and_volume_checks() -> None:
    from andersonn.structures.network import overlapping_sites
    from andersonn.structures.readers import MAX_VOLUME_PER_ATOM

    for name in ("NaCl.cif", "NaCl_221.cif", "Si_conventional.cif", "mof_ABAVIJ_clean.cif",
                 "mof_BIWSEG_ion_b.cif", "mof_KECRAL10_clean.cif", "POSCAR_Si",
                 "NaCl_primitive.vasp", "Si.pwi", "Si.xsf", "vasprun_Si.xml"):
        s = read_structure(FIX / name)
        assert overlapping_sites(s.positions, s.cell) is None, name
        assert s.volume / s.n_atoms < MAX_VOLUME_PER_ATOM / 10, name
    with pytest.raises(InputError, match="own periodic image"):
        parse_structure('1\nLattice="0.005 0 0 0 300 0 0 0 300"\nH 0 0 0\n', "xyz", "thin")


def test_vacuum_padded_cell_is_refused() -> None:
    text = ("data_x\n_symmetry_space_group_name_H-M 'P 1'\n_cell_length_a 1e5\n"
            "_cell_length_b 1e5\n_cell_length_c 1e5\n_cell_angle_alpha 90\n_cell_angle_beta 90\n"
            "_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
            "_atom_site_fract_y\n_atom_site_fract_z\nCu1 0 0 0\nO1 0.00002 0 0\n")
    with pytest.raises(InputError, match=r"^huge: cell of 5e\+14 Å³ per atom \(at most 1000"):
        parse_structure(text, "cif", "huge")


@pytest.mark.parametrize(("text", "reason"), [
    ("2\nc\n200 0 0 0\nNa 2.5 0 0\n", "unknown element '200' on xyz atom line 1"),
    ('2\nLattice="5 0 0 0 5 0 0 0 5"\n200 0 0 0\nNa 2.5 0 0\n', "unknown element '200'"),
    ('2\nLattice="5 0 0 0 5 0 0 0 5"\n104 0 0 0\nNa 2.5 0 0\n', "unknown element '104'"),
])
def test_atomic_numbers_beyond_the_tables_are_one_line_errors(text: str, reason: str) -> None:
    with pytest.raises(InputError, match=rf"^z: {reason}"):
        parse_structure(text, "xyz", "z")
    with pytest.raises(InputError, match=r"^a: unknown element \(atomic number 104\) at atom 2"):
        structure_from_arrays([11, 104], [[0, 0, 0], [2.5, 0, 0]], np.eye(3) * 5, name="a")


def test_xyz_with_more_atom_lines_than_declared_is_refused() -> None:
    text = "2\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
    with pytest.raises(InputError, match=r"^w: xyz: 2 atoms declared, but more atom lines"):
        parse_structure(text, "xyz", "w")
    from andersonn.structures import read_records

    (record,) = read_records(text, fmt="xyz", name="w.xyz")
    with pytest.raises(InputError, match="more atom lines follow"):
        read_structure(record)
    # a second frame follows: two records, both good
    assert len(read_records("1\na\nO 0 0 0\n1\nb\nN 0 0 0\n", fmt="xyz", name="t")) == 2
    assert read_structure(FIX / "qm9_strained.xyz").n_atoms == 15  # QM9's trailing lines


def test_extended_xyz_header_keys_and_pbc() -> None:
    cell = '"0 2.82 2.82 2.82 0 2.82 2.82 2.82 0"'
    atoms = "Na 0 0 0\nCl 2.82 2.82 2.82\n"
    assert parse_structure(f"2\nlattice={cell} properties=species:S:1:pos:R:3\n" + atoms,
                           "xyz", "x").kind == "crystal"
    assert parse_structure(f'2\nLattice={cell} pbc="T T T"\n' + atoms, "xyz", "x").periodic
    assert parse_structure(f'2\nLattice={cell} pbc="F F F"\n' + atoms, "xyz",
                           "x").kind == "molecule"
    with pytest.raises(InputError, match=r"^x: xyz: pbc=\"T T F\" is periodic along some axes"):
        parse_structure(f'2\nLattice={cell} pbc="T T F"\n' + atoms, "xyz", "x")
    with pytest.raises(InputError, match=r"^x: xyz: Lattice must be 9 numbers"):
        parse_structure('2\nLattice="5.64 5.64 5.64"\n' + atoms, "xyz", "x")


def test_mistyped_file_name_is_not_called_a_bad_smiles() -> None:
    for name in ("mystructure.res", "data.txt"):
        with pytest.raises(InputError, match=rf"^{name}: no such file \(and not a SMILES"):
            read_structure(name)
    assert read_structure("CCO.Cl").formula == "C2H7ClO"  # a SMILES that looks like a name


def test_line_ends_and_count_lines() -> None:
    sdf = (FIX / "benzene.sdf").read_text().replace("\n", "\r")  # old Mac line ends
    assert parse_structure(sdf, "sdf", "b").formula == "C6H6"
    with pytest.raises(InputError, match=r"number of atoms alone \(got '3 water'\)"):
        parse_structure("3 water\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n", "xyz", "w")
    # extra words on a count line are tolerated where the frame is otherwise complete
    assert parse_structure("3 water\nc\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n", "xyz",
                           "w").formula == "H2O"


def test_readers_leave_rdkits_log_settings_as_they_were():
    from rdkit import RDLogger, rdBase

    RDLogger.DisableLog("rdApp.warning")
    try:
        before = rdBase.LogStatus()
        read_structure("CCO")
        with pytest.raises(InputError):
            read_structure("C1CC(")
        assert rdBase.LogStatus() == before  # not every log switched back on
    finally:
        RDLogger.EnableLog("rdApp.warning")


def test_a_smiles_with_a_non_ascii_character_is_refused():
    # RDKit reads "CCOé" as ethanol, dropping the stray character without a word
    with pytest.raises(InputError, match="not ASCII"):
        read_structure("CCO\xe9")
