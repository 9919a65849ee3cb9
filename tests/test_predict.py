"""Prediction: Classifier.load / predict on structure files and SMILES, bad inputs, CLI,
featuriser-version refusal, fit on arrays."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.data.cache import open_cache
from andersonn.data.domain import Domain
from andersonn.errors import AndersonnError, InputError
from andersonn.images import IMAGE_SPECS, encode
from andersonn.predict import Classifier, DomainWarning, Scientist, expand_inputs
from andersonn.structures import StructureRecord, read_records, read_structure

from helpers import SMILES

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"



def test_predict_files_and_smiles(polarity_run: Path) -> None:
    clf = Classifier.load(polarity_run)
    assert Scientist is Classifier
    inputs = ["CCO", str(FIXTURES / "acetonitrile.xyz"), str(FIXTURES / "benzene.sdf"),
              str(FIXTURES / "ethanol.mol")]
    labels = clf.predict(inputs)
    assert len(labels) == 4 and set(labels) <= set(clf.classes_)
    proba = clf.predict_proba(inputs)
    assert proba.shape == (4, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    preds = clf.predict_inputs(inputs)
    assert all(p.ok and p.iterations and p.iterations >= 1 for p in preds)


def test_bad_inputs_listed_rest_predicted(polarity_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# a list\nCCO\n\n{FIXTURES / 'water.xyz'}\nnot_a_smiles((\n")
    out = tmp_path / "pred.json"
    rc = main(["predict", str(polarity_run), str(listing), str(FIXTURES / "truncated.xyz"),
               str(FIXTURES / "bad.smi"), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err.strip().splitlines()
    bad = [line for line in err if "cannot predict" in line]
    assert len(bad) == 3, err
    assert any("truncated.xyz" in line for line in bad)
    assert any("not_a_smiles((" in line for line in bad)
    data = json.loads(out.read_text())
    rows = data["predictions"]
    assert [r["ok"] for r in rows] == [True, True, False, False, False]
    assert rows[0]["class"] in data["classes"] and rows[2]["error"]
    csv_out = tmp_path / "pred.csv"
    assert main(["predict", str(polarity_run), "CCO", "CC", "--out", str(csv_out)]) == 0
    table = list(csv.DictReader(csv_out.open()))
    assert [r["status"] for r in table] == ["ok", "ok"]
    assert float(table[0]["iterations"]) >= 1


def test_all_bad_exits_nonzero_and_table(polarity_run: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    assert main(["predict", str(polarity_run), "((", str(FIXTURES / "junk.bin")]) == 2
    assert main(["predict", str(polarity_run), "CCO", "--solver", "forward", "--tol", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "CCO" in out and "iterations" in out


def test_inputs_checked_against_the_training_domain(
        polarity_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clf = Classifier.load(polarity_run)
    assert clf.domain_ is not None and clf.domain_.kind == "molecule"
    assert set(clf.domain_.elements or {}) == {"H", "C", "N", "O"}
    long_chain = "C" * 40  # 122 atoms; the training molecules have 6 (CO) to 18 (C1CCCCC1)
    preds = clf.predict_inputs(["CCO", "ClCCCl", long_chain, str(FIXTURES / "NaCl.cif")])
    assert [p.ok for p in preds] == [True, True, True, False]
    assert preds[0].warnings == []
    assert preds[1].warnings == ["element Cl not in any of the 12 training structures"]
    assert preds[2].warnings == [
        "122 atoms (40 heavy); the training molecules had 6–18 (2–6 heavy)"]
    assert "a crystal, but this model was trained on molecules only" in str(preds[3].error)
    with pytest.warns(DomainWarning, match="ClCCCl: element Cl"):
        assert clf.predict(["CCO", "ClCCCl"]).shape == (2,)
    with pytest.raises(AndersonnError, match=r"NaCl\.cif: a crystal"):
        clf.predict_proba([str(FIXTURES / "NaCl.cif")])

    out = tmp_path / "pred.csv"
    assert main(["predict", str(polarity_run), "CCO", "ClCCCl", "--out", str(out)]) == 0
    assert [r["warnings"] for r in csv.DictReader(out.open())] == [
        "", "element Cl not in any of the 12 training structures"]
    assert "warning: ClCCCl: element Cl" in capsys.readouterr().err
    assert main(["predict", str(polarity_run), "ClCCCl", "CCO"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[-4:-3] == ["*"] and "*" not in table[2]
    assert table[-1].startswith("* see the warnings above: outside the training domain")
    saved = tmp_path / "pred.json"
    assert main(["predict", str(polarity_run), "ClCCCl", "--out", str(saved)]) == 0
    assert json.loads(saved.read_text())["predictions"][0]["warnings"][0].startswith("element Cl")


def test_inputs_unlike_the_training_images_are_flagged(polarity_run: Path, tmp_path: Path) -> None:
    import shutil

    from andersonn.data.domain import FeatureDomain

    # 12 training images are too few for a covariance: the fixture run has no feature domain
    assert json.loads((polarity_run / "config.json").read_text())["feature_domain"] is None
    copy = tmp_path / "with-features"
    shutil.copytree(polarity_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    # a training set of saturated chains with O / N: enough images to estimate a covariance
    chains = sorted({"C" * k + a + "C" * (n - k) + b for n in range(1, 9) for k in range(n + 1)
                     for a in ("O", "N", "") for b in ("O", "N", "", "C=O")})
    many = np.stack([encode(read_structure(s), IMAGE_SPECS["polarity"]) for s in chains])
    cfg["feature_domain"] = FeatureDomain.fit(many).to_dict()
    (copy / "config.json").write_text(json.dumps(cfg))
    clf = Classifier.load(copy)
    near, aromatic, fluorinated = clf.predict_inputs(["CCNCC", "c1ccccc1", "FC(F)(F)C#N"])
    assert not any("unlike the training structures" in w for w in near.warnings)
    for other in (aromatic, fluorinated):
        assert any("unlike the training structures" in w for w in other.warnings)


def test_runs_without_a_recorded_domain_still_check_the_kind(polarity_run: Path, tmp_path: Path
                                                               ) -> None:
    import shutil

    copy = tmp_path / "older-run"
    shutil.copytree(polarity_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    del cfg["domain"]
    (copy / "config.json").write_text(json.dumps(cfg))
    clf = Classifier.load(copy)
    assert clf.domain_ == Domain("molecule")  # from the task: polarity is molecules
    preds = clf.predict_inputs(["ClCCCl", str(FIXTURES / "POSCAR_Si")])
    assert preds[0].ok and preds[0].warnings == [] and not preds[1].ok
    cfg["domain"] = {"kind": "gas"}
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AndersonnError, match="malformed domain"):
        Classifier.load(copy)


def test_featurizer_mismatch_refused(polarity_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "old-run"
    shutil.copytree(polarity_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["featurizer_version"] = "0.0.1"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AndersonnError, match=r"featuriser version 0\.0\.1"):
        Classifier.load(copy)
    assert main(["predict", str(copy), "CCO"]) == 2


def test_a_directory_is_its_structure_files(polarity_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mols"
    folder.mkdir()
    for name in ("water.xyz", "ethanol.mol"):
        (folder / name).write_text((FIXTURES / name).read_text())
    (folder / "notes.md").write_text("not a structure")
    (folder / "more.smi").write_text("CCN amine\nCCCl\n")  # a list, as when given by name
    (folder / "sub").mkdir()
    assert expand_inputs([str(folder), "CC"]) == [
        str(folder / "ethanol.mol"), StructureRecord("CCN (amine)", "CCN", "smiles"), "CCCl",
        str(folder / "water.xyz"), "CC"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(polarity_run), str(folder), str(empty)]) == 0
    captured = capsys.readouterr()
    assert "ethanol.mol" in captured.out and "water.xyz" in captured.out
    assert "CCN (amine)" in captured.out  # a .smi line's name reaches the output
    assert f"cannot predict {empty}: a directory with no structure files in it" in captured.err
    with pytest.raises(InputError, match="a directory, not a structure file"):
        read_structure(folder)


def test_parallel_featurisation_gives_the_same_predictions(polarity_run: Path) -> None:
    clf = Classifier.load(polarity_run)
    inputs = [*SMILES, "ClCCCl", "((", str(FIXTURES / "water.xyz"), str(FIXTURES / "NaCl.cif"),
              str(FIXTURES / "truncated.xyz")] * 3
    serial = clf.predict_inputs(inputs, workers=1)
    parallel = clf.predict_inputs(inputs, workers=2, progress=True)
    assert [p.to_dict() for p in parallel] == [p.to_dict() for p in serial]
    # per round: 3 unreadable; Cl (C(Cl)Cl, ClCCCl) and sizes outside 6-18 atoms (CCCCCC, O=CO,
    # water) warned about (the tiny run's solver also stops short on some: not counted here)
    domain = [[w for w in p.warnings if "stopped short" not in w] for p in serial]
    assert sum(not p.ok for p in serial) == 9 and sum(bool(w) for w in domain) == 15


def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "mol.xyz").write_text((FIXTURES / "water.xyz").read_text())
    (tmp_path / "two.xyz").write_text((FIXTURES / "water.xyz").read_text() * 2)
    listing = tmp_path / "list.txt"
    listing.write_text("mol.xyz\nCCO\n# comment\ntwo.xyz\n")
    two = str(tmp_path / "two.xyz")
    assert expand_inputs([str(listing), "CC"]) == [
        str(tmp_path / "mol.xyz"), "CCO", *read_records(two, name=two), "CC"]
    assert [r.name for r in read_records(tmp_path / "two.xyz")] == ["two.xyz#1", "two.xyz#2"]


def test_fit_predict_on_arrays() -> None:
    rng = np.random.default_rng(0)
    y = np.array(["neg", "pos"] * 60)
    x = rng.normal(size=(120, 3, 4, 4)).astype(np.float32)
    x[:, 0] += np.where(y == "pos", 3.0, -3.0)[:, None, None]
    clf = Classifier(model="explicit", epochs=4, hidden=8, depth=2, batch_size=16, lr=1e-2,
                     threads=1)
    clf.fit(x, y)
    assert list(clf.classes_) == ["neg", "pos"]
    assert (clf.predict(x) == y).mean() > 0.9
    assert clf.score(x, y) == (clf.predict(x) == y).mean()
    assert clf.score(x, (y == "pos").astype(int)) == clf.score(x, y)  # indices or names
    with pytest.raises(InputError, match="3 labels"):
        clf.score(x[:5], y[:3])
    assert clf.predict_proba(x[:5]).shape == (5, 2)
    with pytest.raises(AndersonnError):
        clf.predict(["CCO"])  # trained on raw images: no image spec to featurise with


def test_load_run_injection_embeds_the_split(polarity_run: Path) -> None:
    import torch

    from andersonn.training import load_run, load_run_injection

    ds = open_cache(polarity_run.parent / "cache")
    model, x, got = load_run_injection(polarity_run, "test", 3, dataset=ds)
    assert got is ds and x.shape[0] == 3
    reference, _ = load_run(polarity_run)
    images = torch.as_tensor(np.asarray(ds.images[ds.split_indices("test")[:3]]))
    with torch.no_grad():
        torch.testing.assert_close(x, reference.embed(reference.normalize(images)))
    z = model.cell(torch.zeros_like(x), x)  # the probe solves this cell at this injection
    assert z.shape == x.shape


def test_merge_conformers_means_probabilities_and_sums_iterations() -> None:
    from andersonn.predict import merge_conformers

    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    iters = np.array([4.0, 6.0, 5.0, 7.0, 1.0])
    merged, cost = merge_conformers(probs, iters, [2, 1, 2])
    assert np.allclose(merged, [[0.4, 0.6], [0.9, 0.1], [0.4, 0.6]])
    assert np.allclose(cost, [10.0, 5.0, 8.0])
    same = merge_conformers(probs, iters, None)
    assert same[0] is probs and same[1] is iters


def test_conformers_average_a_smiles_and_leave_files_alone(polarity_run: Path) -> None:
    from andersonn.structures import read_conformers

    clf = Classifier.load(polarity_run)
    smiles, xyz = "CC(O)CCO", str(FIXTURES / "acetonitrile.xyz")
    single = clf.predict_proba([smiles, xyz])
    clf.conformers = 4
    averaged = clf.predict_proba([smiles, xyz])
    images = np.stack([encode(s, IMAGE_SPECS["polarity"]) for s in read_conformers(smiles, 4)])
    assert len(images) > 1
    assert averaged[0] == pytest.approx(clf._infer(images)[0].mean(axis=0), abs=1e-6)
    assert averaged[1] == pytest.approx(single[1], abs=1e-6)  # a file keeps its geometry
    (pred, _) = clf.predict_inputs([smiles, "(("])
    assert pred.iterations == pytest.approx(clf._infer(images)[1].sum())
    images1, ok, errors = clf.featurize([smiles, "(("])  # one image per input, always
    assert images1.shape[0] == 1 and ok == [0] and errors[1]


def test_predict_command_refuses_zero_conformers(polarity_run: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:  # refused when the arguments are parsed
        main(["predict", str(polarity_run), "CCO", "--conformers", "0"])
    assert exit_.value.code == 2
    assert "--conformers: must be at least 1, got 0" in capsys.readouterr().err


def test_a_file_of_several_molecules_gives_one_prediction_each(
        polarity_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    blocks = [(FIXTURES / name).read_text().split("$$$$")[0].rstrip("\n") + "\n$$$$\n"
              for name in ("ethanol.mol", "benzene.sdf")]
    multi = tmp_path / "two.sdf.gz"
    multi.write_bytes(gzip.compress("".join(blocks).encode()))
    frames = tmp_path / "frames.xyz"
    frames.write_text((FIXTURES / "water.xyz").read_text() + "4\ncut\nO 0 0 0\n")
    items = expand_inputs([str(multi), str(frames), "CC"])
    # records are named by the file's path as given, so two folders' files of one name differ
    assert [getattr(i, "name", i) for i in items] == [
        f"{multi}#1 (ethanol)", f"{multi}#2 (benzene)", f"{frames}#1", f"{frames}#2", "CC"]
    assert all(isinstance(i, StructureRecord) for i in items[:4])
    clf = Classifier.load(polarity_run)
    preds = clf.predict_inputs([str(multi), str(frames)], workers=2)
    assert [p.input for p in preds] == [getattr(i, "name", i) for i in items[:4]]
    assert [p.ok for p in preds] == [True, True, True, False]
    assert preds[3].error == f"{frames}#2: truncated xyz: 1 of 4 atom lines"
    # each record is predicted exactly as the same molecule given in a file of its own
    alone = clf.predict_inputs([str(FIXTURES / "ethanol.mol"), str(FIXTURES / "benzene.sdf"),
                                str(FIXTURES / "water.xyz")])
    for got, want in zip(preds[:3], alone, strict=True):
        assert got.label == want.label and got.probabilities == pytest.approx(want.probabilities)
    out = tmp_path / "p.csv"
    assert main(["predict", str(polarity_run), str(multi), "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["input"] for r in rows] == [f"{multi}#1 (ethanol)", f"{multi}#2 (benzene)"]
    capsys.readouterr()
    # the image command wants one structure: it names the count and the option that picks one
    assert main(["image", str(multi), "--out", str(tmp_path / "img")]) == 2
    assert "it holds 2 structures; choose one with --record K" in capsys.readouterr().err
    assert main(["image", str(multi), "--record", "2", "--out", str(tmp_path / "img")]) == 0
    assert np.load(tmp_path / "img.npy").shape == tuple(clf.config_["image_shape"])


def test_a_smiles_too_long_for_a_file_name_is_still_an_input(polarity_run: Path) -> None:
    # 300 characters: no file system takes it as a name, so asking whether it is a file
    # raised OSError (ENAMETOOLONG) before; it is a SMILES like any other
    long_chain = "C" * 300
    assert expand_inputs([long_chain]) == [long_chain]
    (pred,) = Classifier.load(polarity_run).predict_inputs([long_chain])
    assert not pred.ok and len(pred.error) <= 300
    # refused from its atom count before embedding (which takes minutes for 902 atoms)
    assert pred.error.endswith(": 902 atoms with hydrogens, more than the image holds (400)")
    assert pred.error.startswith("C" * 60 + "...")


def test_image_refuses_a_smiles_too_big_for_its_image_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "C" * 300, "--out", str(tmp_path / "x")]) == 2
    assert "902 atoms with hydrogens, more than the image holds (400)" in capsys.readouterr().err
    assert main(["image", "CCO", "--out", str(tmp_path / "x")]) == 0


def test_predictions_as_sdf_give_every_input_back_with_its_fields(
        polarity_run: Path, tmp_path: Path) -> None:
    from rdkit import Chem

    library = tmp_path / "lib.sdf"
    benzene = (FIXTURES / "benzene.sdf").read_text().split("$$$$")[0].rstrip("\n")
    library.write_text(f"{benzene}\n> <dipole>\n0.0\n\n$$$$\n"
                       + (FIXTURES / "ethanol.mol").read_text().rstrip("\n") + "\n$$$$\n")
    listing = tmp_path / "mols.smi"
    listing.write_text("CC#N acetonitrile\n((( broken\n")
    out = tmp_path / "preds.sdf"
    assert main(["predict", str(polarity_run), str(library), str(listing),
                 str(FIXTURES / "ethanol.mol2"), "CO", "--out", str(out)]) == 0
    mols = list(Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False))
    assert all(m is not None for m in mols) and len(mols) == 6  # one record per input, in order
    names = [m.GetProp("_Name") for m in mols]
    assert names[0] == "benzene" and names[2:4] == ["CC#N (acetonitrile)", "((( (broken)"]
    assert [m.GetNumAtoms() for m in mols] == [12, 9, 3, 0, 9, 2]  # SMILES: heavy atoms, 2-D
    assert mols[0].GetProp("dipole") == "0.0"  # the record's own fields are kept
    assert mols[4].GetConformer().Is3D()  # mol2: its own 3-D atoms and bonds
    assert mols[4].GetNumBonds() == 8
    for m in mols[:3] + mols[4:]:
        assert m.GetProp("andersonn_status") == "ok"
        probs = [float(m.GetProp(f"andersonn_p_{c.replace(' ', '_')}")) for c in
                 Classifier.load(polarity_run).classes_]
        assert abs(sum(probs) - 1) < 1e-4 and m.GetProp("andersonn_class")
    assert mols[3].GetProp("andersonn_status") == "error"
    assert "unparsable SMILES" in mols[3].GetProp("andersonn_error")
    assert Chem.MolToSmiles(Chem.RemoveHs(mols[1])) == "CCO"


def test_sdf_output_is_refused_for_a_crystal_run(polarity_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import shutil

    copy = tmp_path / "crystal-run"
    shutil.copytree(polarity_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["domain"] = {"kind": "crystal", "n": 0, "elements": None, "atoms": None}
    (copy / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(copy), str(FIXTURES / "NaCl.cif"), "--out",
                 str(tmp_path / "p.sdf")]) == 2
    assert "an SD file holds molecules" in capsys.readouterr().err
    assert not (tmp_path / "p.sdf").exists()


def test_a_read_caveat_is_not_a_domain_warning(polarity_run: Path) -> None:
    from andersonn.predict import ReadCaveatWarning

    clf = Classifier.load(polarity_run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.predict_proba(["CCO.O"])  # two fragments, laid apart: a caveat of the reading
    caveats = [w for w in caught if issubclass(w.category, ReadCaveatWarning)]
    assert len(caveats) == 1 and "1 input(s) read with a caveat: CCO.O: " in str(caveats[0].message)
    assert "fragment" in str(caveats[0].message)
    assert not [w for w in caught if issubclass(w.category, DomainWarning)]
