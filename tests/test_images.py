"""Node-neighbour images: shapes, invariances, the reduction rule, batch featurisation, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from andersonn.errors import InputError
from andersonn.images import (
    FEATURIZER_VERSION,
    IMAGE_SPECS,
    ImageSpec,
    encode,
    encode_labelled,
    featurize_many,
)
from andersonn.structures import Structure, parse_structure, read_structure, structure_from_arrays

FIX = Path(__file__).parent / "fixtures" / "structures"
ATOL = 2e-3  # images are quantised to 1e-4; canonical keys round to 1e-3


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _moved(s: Structure, seed: int) -> Structure:
    """The same structure with atoms permuted, rigidly rotated and translated."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(s.n_atoms)
    rot = _rotation(seed)
    pos = s.positions[perm] @ rot.T + rng.normal(size=3) * 5
    cell = None if s.cell is None else s.cell @ rot.T
    if cell is not None:
        return structure_from_arrays(s.numbers[perm], pos, cell, name=s.name)
    inv = np.argsort(perm)  # keep the original (e.g. RDKit) bond orders, renumbered
    return Structure(name=s.name, numbers=s.numbers[perm], positions=pos,
                     bonds=np.sort(inv[s.bonds], axis=1), bond_orders=s.bond_orders.copy(),
                     bond_lengths=s.bond_lengths.copy())


def _supercell(s: Structure, reps: tuple[int, int, int]) -> Structure:
    shifts = np.array([(a, b, c) for a in range(reps[0]) for b in range(reps[1])
                       for c in range(reps[2])], dtype=float)
    pos = (s.positions[None, :, :] + (shifts @ s.cell)[:, None, :]).reshape(-1, 3)
    cell = s.cell * np.array(reps)[:, None]
    return structure_from_arrays(np.tile(s.numbers, len(shifts)), pos, cell, name=s.name)


def test_spec_presets_shapes_and_roundtrip():
    assert FEATURIZER_VERSION
    for name, spec in IMAGE_SPECS.items():
        c, h, w = spec.shape
        assert spec.name == name and len(spec.channel_names) == c
        assert 200 <= h * w <= 4000  # affordable on CPUs
        assert ImageSpec.from_dict(spec.to_dict()) == spec
    assert IMAGE_SPECS["polarity"].rows == 29


@pytest.mark.parametrize("source",
                         ["benzene.sdf", "ethanol.mol", "water.xyz", "CC(=O)NC1=CC=CC=C1"])
def test_molecule_image_invariant_to_order_rotation_translation(source):
    s = read_structure(FIX / source if source[0].islower() else source)
    img = encode(s, "polarity")
    assert img.dtype == np.float32 and img.shape == IMAGE_SPECS["polarity"].shape
    for seed in range(3):
        assert np.allclose(encode(_moved(s, seed), "polarity"), img, atol=ATOL)


def test_polarity_physics_channels():
    spec = IMAGE_SPECS["polarity"]
    ch = spec.channels.index
    water, labels = encode_labelled(read_structure(FIX / "water.xyz"), spec)
    benzene = encode(read_structure(FIX / "benzene.sdf"), spec)
    assert labels[:3] == ["O", "H", "H"] and labels[3] == ""
    q = water[ch("atom_charge"), :3, 0]
    assert q[0] < 0 < q[1] and abs(q.sum()) < 1e-3
    assert water[ch("g_dipole"), 0, 0] * 5 > 1.0  # Debye
    assert benzene[ch("g_dipole"), 0, 0] * 5 < 0.1
    assert np.all(water[:, 3:, :] == 0) or np.all(water[ch("atom_en"), 3:, :] == 0)


@pytest.mark.parametrize("spec", ["crystal-gap", "mof-pore"])
def test_crystal_image_invariant_to_unit_cell(spec):
    conv = read_structure(FIX / "NaCl.cif")
    images = [encode(s, spec) for s in (conv, read_structure(FIX / "NaCl_primitive.vasp"),
                                        read_structure(FIX / "NaCl_221.cif"),
                                        _supercell(conv, (2, 2, 1)), _moved(conv, 3))]
    for img in images[1:]:
        assert np.allclose(img, images[0], atol=ATOL)
    si = [encode(read_structure(FIX / f), spec) for f in ("POSCAR_Si", "Si_conventional.cif")]
    assert np.allclose(si[0], si[1], atol=ATOL)
    assert not np.allclose(si[0], images[0], atol=ATOL)


def test_nacl_rows_are_distinct_environments():
    spec = IMAGE_SPECS["crystal-gap"]
    img, labels = encode_labelled(read_structure(FIX / "NaCl_221.cif"), spec)
    assert labels[:2] == ["Cl", "Na"] and labels[2] == ""  # 32 atoms -> 2 environments
    mult = img[spec.channels.index("atom_mult"), :2, 0]
    assert np.allclose(mult, 0.5)
    inv_d = img[spec.channels.index("inv_distance"), 1, :]
    assert np.allclose(inv_d[:6], 1 / 2.82, atol=1e-3) and inv_d[6] < inv_d[5]


def test_mof_invariance_and_void_diameter():
    spec = IMAGE_SPECS["mof-pore"]
    s = read_structure(FIX / "mof_ABAVIJ_clean.cif")
    img = encode(s, spec)
    assert np.allclose(encode(_supercell(s, (2, 1, 1)), spec), img, atol=ATOL)
    assert np.allclose(encode(_moved(s, 1), spec), img, atol=ATOL)
    ch = spec.channels.index("g_void_diameter")
    # CoRE MOF 2019 largest cavity diameters (Zeo++): KECRAL10 7.14, ABAVIJ 4.46, BIWSEG 29.7
    for name, lcd in (("mof_KECRAL10_clean.cif", 7.14), ("mof_ABAVIJ_clean.cif", 4.46),
                      ("mof_BIWSEG_ion_b.cif", 29.74)):
        est = encode(read_structure(FIX / name), spec)[ch, 0, 0] * 20
        assert abs(est - lcd) < 0.8, (name, est)


def _chain(n_carbon: int) -> Structure:
    return read_structure("C" * (n_carbon - 1) + "O")


def test_reduction_keeps_every_element_and_weights():
    spec = ImageSpec(name="tiny", channels=("atom_en", "atom_mult", "inv_distance", "bond_order"),
                     rows=6, slots=4)
    s = read_structure("NCCCCCCCCCCO")  # 38 atoms, 4 elements, many environments
    img, labels = encode_labelled(s, spec)
    assert img.shape == (4, 6, 4)
    assert {"N", "O", "C", "H"} <= set(labels)
    mult = img[1, :, 0]
    assert np.isclose(mult.sum(), 1.0, atol=1e-3) and (mult > 0).all()
    assert np.allclose(encode(_moved(s, 5), spec), img, atol=ATOL)  # deterministic
    big = _chain(14)  # 44 atoms > 29 rows for polarity: reduced, not truncated
    _pol, lab = encode_labelled(big, "polarity")
    assert all(lab) and {"C", "H", "O"} <= set(lab)


def test_too_large_raises():
    spec = ImageSpec(name="small", channels=("atom_en", "inv_distance"), rows=2, slots=2,
                     max_atoms=1000)
    with pytest.raises(InputError, match="too large for the chosen image"):
        encode(read_structure("NCO"), spec)  # 3 elements > 2 rows
    spec2 = ImageSpec(name="small2", channels=("atom_en",), rows=8, slots=2, max_atoms=5)
    with pytest.raises(InputError, match=r"^CCO: .*too large for the chosen image"):
        encode(read_structure("CCO"), spec2)


def test_featurize_many_skips_bad_items():
    items = [
        ((FIX / "water.xyz").read_text(), "xyz", "water"),
        ("C1CC((", "smiles", "bad-smiles"),
        ((FIX / "Si_conventional.cif").read_text(), "cif", "si"),
        ("", "cif", "empty"),
        ((FIX / "truncated.cif").read_text(), "cif", "trunc"),
        ("CCO", "smiles", "ethanol"),
        ("x", "nope", "unsupported"),
    ]
    for workers in (1, 2):
        res = featurize_many(items, "polarity", workers=workers, progress=False)
        assert res.ok_indices == [0, 2, 5]
        assert res.images.shape == (3, *IMAGE_SPECS["polarity"].shape)
        assert res.images.dtype == np.float32
        assert [(i, n) for i, n, _ in res.failures] == [(1, "bad-smiles"), (3, "empty"),
                                                        (4, "trunc"), (6, "unsupported")]
        assert all(reason.startswith(name + ":") for _, name, reason in res.failures)
        ref = encode(parse_structure(items[0][0], "xyz", "water"), "polarity")
        assert np.allclose(res.images[0], ref)
    empty = featurize_many([], "mof-pore", progress=False)
    assert empty.images.shape == (0, *IMAGE_SPECS["mof-pore"].shape)


def test_cli_image_writes_png_and_npy(tmp_path, capsys):
    from andersonn.cli import main

    out = tmp_path / "img" / "nacl"
    assert main(["image", str(FIX / "NaCl.cif"), "--out", str(out)]) == 0
    arr = np.load(str(out) + ".npy")
    assert arr.shape == IMAGE_SPECS["crystal-gap"].shape
    assert (tmp_path / "img" / "nacl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["image", "CCO", "--out", str(tmp_path / "e"), "--task", "mof-pore"]) == 0
    assert np.load(tmp_path / "e.npy").shape == IMAGE_SPECS["mof-pore"].shape
    assert main(["image", str(FIX / "water.dat.missing"), "--out", str(tmp_path / "w"),
                 "--format", "xyz"]) == 2
    capsys.readouterr()
    for bad in (str(FIX / "truncated.cif"), "C1CC((", str(FIX / "junk.bin")):
        assert main(["image", bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("andersonn: error: ")
        assert Path(bad).name in err[0] or bad in err[0]
    assert not (tmp_path / "bad.png").exists()


def test_cli_bench_missing_archives(tmp_path, capsys):
    from andersonn.cli import main

    assert main(["bench", "featurize", "--quick", "--archives", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip download" in err and "qm9pack" in err


def _fcc(numbers: list[int], a: float) -> Structure:
    """Primitive fcc cell; a second atom sits at a/2 (1, 1, 1) (rock salt)."""
    cell = a / 2 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pos = np.array([[0.0, 0.0, 0.0], [a / 2, a / 2, a / 2]])[: len(numbers)]
    return structure_from_arrays(np.array(numbers), pos, cell, name="fcc")


_ELECTRONIC = ("atom_s_unfilled", "atom_p_unfilled", "atom_d_unfilled", "atom_f_unfilled",
               "atom_metal")
_IONIC = ("g_ox_imbalance", "g_d_partial", "g_f_partial", "g_unpaired_d", "g_ve_odd")


@pytest.mark.parametrize(("name", "rows", "ionic"), [
    # rows: element -> (s, p, d, f holes scaled, metal); ionic: the five global channels
    ("NaCl", {"Cl": (0, 1 / 6, 0, 0, 0), "Na": (0.5, 0, 0, 0, 1)}, (0, 0, 0, 0, 0)),
    ("Si", {"Si": (0, 4 / 6, 0, 0, 0)}, (1, 0, 0, 0, 0)),          # 3p2; single element
    ("Cu", {"Cu": (0.5, 0, 0, 0, 1)}, (1, 0, 0, 0, 1)),            # 4s1 3d10, 11 e odd
    ("NiO", {"Ni": (0, 0, 0.2, 0, 1), "O": (0, 2 / 6, 0, 0, 0)},   # Ni2+ d8: 2 unpaired
     (0, 0.5, 0, 0.5 * 2 / 5, 0)),
])
def test_crystal_gap_electronic_channels_exact(name, rows, ionic):
    spec = IMAGE_SPECS["crystal-gap"]
    s = {"NaCl": lambda: read_structure(FIX / "NaCl.cif"),
         "Si": lambda: read_structure(FIX / "POSCAR_Si"),
         "Cu": lambda: _fcc([29], 3.615), "NiO": lambda: _fcc([28, 8], 4.17)}[name]()
    img, labels = encode_labelled(s, spec)
    for element, values in rows.items():
        r = labels.index(element)
        got = [img[spec.channels.index(c), r, :] for c in _ELECTRONIC]
        for g, v in zip(got, values, strict=True):
            assert np.allclose(g, v, atol=1e-4), (name, element, g, v)
    for c, v in zip(_IONIC, ionic, strict=True):
        plane = img[spec.channels.index(c)]
        assert np.allclose(plane, v, atol=1e-4), (name, c, plane[0, 0], v)
    # the new channels follow the cell choice, atom order and orientation like the others
    assert np.allclose(encode(_supercell(s, (2, 1, 2)), spec), img, atol=ATOL)
    assert np.allclose(encode(_moved(s, 4), spec), img, atol=ATOL)


def test_oxidation_descriptors_compositions():
    from andersonn.images.physics import oxidation_descriptors

    def ox(counts: dict[int, int]) -> dict[str, float]:
        return oxidation_descriptors(np.repeat(list(counts), list(counts.values())))

    fe2o3 = ox({26: 2, 8: 3})  # Fe3+ d5, high-spin count: 5 unpaired
    assert fe2o3 == {"ve_odd": 0.0, "imbalance": 0.0, "d_partial": 0.4, "f_partial": 0.0,
                     "unpaired_d": 2.0}
    assert ox({26: 4, 8: 6}) == fe2o3  # depends on the composition, not the cell
    assert ox({22: 1, 8: 2})["d_partial"] == 0.0  # Ti4+ d0
    assert ox({58: 1, 8: 2})["f_partial"] == 0.0  # Ce4+ f0
    assert ox({58: 2, 8: 3})["f_partial"] == 0.4  # Ce3+ f1
    assert ox({11: 1, 81: 1})["imbalance"] == 1.0  # NaTl: no cation/anion picture
    assert ox({3: 1, 30: 1, 15: 1})["imbalance"] == 0.0  # LiZnP: Li+ Zn2+ P3-


def test_mmff_charges_known_values_invariance_and_fallback() -> None:
    from andersonn.images.physics import eem_charges, mmff_charges, molecule_charges
    from andersonn.structures import read_structure

    water = read_structure("O", fmt="smiles")
    assert np.allclose(mmff_charges(water.numbers, water.positions), [-0.86, 0.43, 0.43])
    ion = read_structure("C[NH3+]", fmt="smiles")
    q_ion = mmff_charges(ion.numbers, ion.positions, ion.charge)
    assert q_ion is not None and abs(q_ion.sum() - 1.0) < 1e-9
    rng = np.random.default_rng(0)
    for smiles in ("c1ccccc1[N+](=O)[O-]", "CC(=O)N", "OC(=O)c1ccncc1"):
        s = read_structure(smiles, fmt="smiles")
        q = mmff_charges(s.numbers, s.positions)
        assert q is not None and abs(q.sum()) < 1e-9
        perm = rng.permutation(len(q))
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        moved = mmff_charges(s.numbers[perm], s.positions[perm] @ rot.T + 2.0)
        assert np.allclose(moved, q[perm], atol=1e-9), smiles
    # no MMFF type for a noble-gas dimer: charge equilibration takes over
    numbers, positions = np.array([54, 54]), np.array([[0.0, 0, 0], [4.0, 0, 0]])
    assert mmff_charges(numbers, positions) is None
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    assert np.allclose(molecule_charges(numbers, positions, dist), eem_charges(numbers, dist))


def test_strained_molecule_perceived_by_hueckel_retry(capfd) -> None:
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from andersonn.images.physics import DEBYE_PER_EA, centre_of_mass, mmff_charges
    from andersonn.structures import read_structure

    s = read_structure(FIX / "qm9_strained.xyz")
    plain = Chem.RWMol(Chem.MolFromXYZBlock((FIX / "qm9_strained.xyz").read_text()))
    with pytest.raises(ValueError, match="valence"):  # the fixture really needs the retry
        rdDetermineBonds.DetermineBonds(plain, charge=0)
    capfd.readouterr()
    q = mmff_charges(s.numbers, s.positions)
    assert q is not None and abs(q.sum()) < 1e-9
    dipole = np.linalg.norm((q[:, None] * (s.positions - centre_of_mass(s.numbers,
                                                                          s.positions))).sum(0))
    assert abs(dipole * DEBYE_PER_EA - 4.0894) < 0.5  # DFT dipole 4.09 D; MMFF94 gives 4.36 D
    out = capfd.readouterr()
    assert "Warning" not in out.out + out.err  # the Hückel code's chatter is silenced


def test_silent_c_output_restores_streams(capfd) -> None:
    import os

    from andersonn.images.physics import silent_c_output

    with silent_c_output():
        os.write(1, b"hidden-out\n")
        os.write(2, b"hidden-err\n")
    os.write(1, b"shown\n")
    out = capfd.readouterr()
    assert "hidden" not in out.out + out.err and "shown" in out.out


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_per_preset_featurizer_versions() -> None:
    import dataclasses

    from andersonn.images.spec import PRESET_VERSIONS

    assert set(PRESET_VERSIONS) == set(IMAGE_SPECS)
    for name, spec in IMAGE_SPECS.items():
        assert _version_tuple(spec.featurizer_version) <= _version_tuple(FEATURIZER_VERSION)
        assert spec.to_dict()["featurizer_version"] == PRESET_VERSIONS[name]
        assert ImageSpec.from_dict(spec.to_dict()).featurizer_version == PRESET_VERSIONS[name]
        custom = dataclasses.replace(spec, rows=spec.rows + 1)  # not the preset any more
        assert custom.featurizer_version == FEATURIZER_VERSION
    # a change that altered only custom specs' images (1.4.1) moved FEATURIZER_VERSION alone
    assert max(map(_version_tuple, PRESET_VERSIONS.values())) <= _version_tuple(FEATURIZER_VERSION)


@pytest.mark.parametrize("preset", sorted(IMAGE_SPECS))
def test_preset_images_match_their_version(preset: str) -> None:
    """A preset's images change only together with its version (see tests/image_fixtures.py)."""
    from image_fixtures import INPUTS, encode_inputs, fixture_path

    path = fixture_path(preset)
    assert path.exists(), f"no reference images for {preset} at its version: {path}"
    with np.load(path) as stored:
        assert sorted(stored.files) == sorted(INPUTS[preset])
        current = encode_inputs(preset)
        for name in INPUTS[preset]:
            assert np.allclose(current[name], stored[name], atol=ATOL), (
                f"{preset} images of {name} changed: bump PRESET_VERSIONS[{preset!r}] and "
                "FEATURIZER_VERSION, then run `python tests/image_fixtures.py`")


@pytest.mark.parametrize(("a", "b"), [("CCO", "OCC"), ("CC(=O)NC", "CNC(C)=O")])
def test_one_molecule_as_two_smiles_gives_one_image(a: str, b: str) -> None:
    """The conformer of a SMILES does not depend on the order its atoms are written in."""
    spec = IMAGE_SPECS["polarity"]
    assert np.abs(encode(read_structure(a), spec) - encode(read_structure(b), spec)).max() < 1e-5


def test_cli_image_replaces_both_files_or_neither(tmp_path, capsys) -> None:
    from andersonn.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "pair.npy").write_bytes(b"old")
    (out / "pair.png").mkdir()  # the PNG cannot be written
    assert main(["image", str(FIX / "NaCl.cif"), "--out", str(out / "pair")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out / 'pair.png'}: " in err[0] and ".tmp" not in err[0]
    assert (out / "pair.npy").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["pair.npy", "pair.png"]  # no temporaries


def test_cli_image_shows_the_readers_notes(tmp_path, capsys) -> None:
    from andersonn.cli import main

    mixed = ("data_x\n_symmetry_space_group_name_H-M 'P 1'\n_cell_length_a 5.64\n"
             "_cell_length_b 5.64\n_cell_length_c 5.64\n_cell_angle_alpha 90\n"
             "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n"
             "_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
             "_atom_site_fract_z\n_atom_site_occupancy\nNa1 Na 0 0 0 0.6\nK1 K 0 0 0 0.4\n"
             "Cl1 Cl 0.5 0.5 0.5 1\n")
    path = tmp_path / "mixed.cif"
    path.write_text(mixed)
    assert main(["image", str(path), "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "andersonn: warning: mixed.cif: 1 of 2 sites partly occupied or mixed" in err


def test_canonical_order_is_lexsort_order() -> None:
    """The byte-string sort gives np.lexsort's order exactly: element first, then the rounded
    row content column by column, ties in input order, NaN after +inf (the encoder's helper
    must not change a single image)."""
    from andersonn.images.encode import _canonical_order, _row_keys

    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        rows = rng.normal(size=(n, 3, 4)) * 10.0 ** int(rng.integers(-3, 4))
        rows = np.round(rows, int(rng.integers(0, 3)))  # many ties
        for value, share in ((np.nan, 0.05), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.3)):
            rows[rng.random(rows.shape) < share * (trial % 2)] = value
        rows[: n // 2] = rows[n - n // 2:]  # identical rows, kept in input order
        numbers = rng.integers(1, 4, n)
        expected = np.lexsort((*tuple(_row_keys(rows).T[::-1]), -numbers))
        assert _canonical_order(rows, numbers).tolist() == expected.tolist()


def test_sortable_bytes_order_numbers() -> None:
    from andersonn.images.encode import _sortable_bytes

    values = [-np.inf, -1e300, -2.5, -1e-300, 0.0, 5e-324, 1e-3, 1.0, 2.5, 1e300, np.inf, np.nan]
    shuffled = np.random.default_rng(0).permutation(len(values))
    keys = np.array(values)[shuffled][:, None]
    as_bytes = _sortable_bytes(keys)
    order = sorted(range(len(keys)), key=lambda i: as_bytes[i])
    assert shuffled[order].tolist() == list(range(len(values)))
    nans = _sortable_bytes(np.array([[np.nan], [-np.nan], [float("nan")]]))
    assert nans[0] == nans[1] == nans[2]  # every NaN ties, whatever its sign bit


def test_cross_and_length_are_numpys_to_the_bit() -> None:
    from andersonn.images.encode import _cross, _length

    rng = np.random.default_rng(3)
    for a, b in [(rng.normal(size=3) * 10.0 ** rng.integers(-5, 5), rng.normal(size=3))
                 for _ in range(500)] + [(np.zeros(3), np.array([-1.0, 2.0, -3.0]))]:
        assert _cross(a, b).tobytes() == np.cross(a, b).tobytes()
        assert _length(a) == float(np.linalg.norm(a))
    assert _length(np.zeros(3)) == 0.0


def test_bare_molecule_keeps_atoms_and_coordinates_exactly() -> None:
    from andersonn.images.physics import _bare_molecule

    numbers = np.array([8, 1, 1, 6, 8])
    positions = np.random.default_rng(1).normal(size=(5, 3)) * 3
    mol = _bare_molecule(numbers, positions)
    assert [a.GetAtomicNum() for a in mol.GetAtoms()] == numbers.tolist()
    assert mol.GetNumBonds() == 0
    assert mol.GetConformer().Is3D()
    assert mol.GetConformer().GetPositions().tobytes() == positions.tobytes()


def test_charge_frame_channels_get_the_charges_without_a_charge_channel() -> None:
    from andersonn.images import ImageSpec

    base = IMAGE_SPECS["polarity"]
    frame_only = ImageSpec.from_dict({**base.to_dict(), "name": "frame-only",
                                      "channels": ["atom_frame_y", "atom_dipole_contrib"]})
    with_charge = ImageSpec.from_dict({**base.to_dict(), "name": "frame-and-charge",
                                       "channels": ["atom_frame_y", "atom_dipole_contrib",
                                                    "atom_charge"]})
    s = read_structure("OCC(=O)N")
    alone, beside = encode(s, frame_only), encode(s, with_charge)
    assert np.abs(alone).max() > 0.1  # was all zeros
    np.testing.assert_array_equal(alone, beside[:2])
