"""Prediction on files and into files: SD-file field names of bin classes, folders and lists
named in a list, xyz / POSCAR saved as .txt, broken SDF records in --out .sdf, chunked
prediction, read-only image arrays, strict JSON, and messages that name an input once."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.explain import Explanation, picture_name
from andersonn.predict import (
    Classifier,
    ConvergenceWarning,
    Prediction,
    UnusableInput,
    expand_inputs,
    without_name,
    write_predictions,
)
from andersonn.predict.inputs import _holds_a_structure
from andersonn.predict.sdf import field_name, field_names, sdf_predictions

from helpers import count_featurize_chunks

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"


def _names(items: list) -> list[str]:
    return [getattr(i, "name", i) for i in items]


# -- 1: SD-file field names --------------------------------------------------------------------
def test_sdf_field_names_of_bin_classes_are_distinct_and_readable() -> None:
    assert field_names(["< 2.5", ">= 2.5"]) == ["andersonn_p_lt_2_5", "andersonn_p_ge_2_5"]
    assert field_names(["< -1", "-1–3", ">= 3"]) == [
        "andersonn_p_lt_minus_1", "andersonn_p_minus_1_to_3", "andersonn_p_ge_3"]
    assert field_name("weakly polar") == "andersonn_p_weakly_polar"  # plain names as before
    # names that still coincide get their class index; an empty one its index alone
    assert field_names(["a b", "a_b", "c"]) == ["andersonn_p_a_b_0", "andersonn_p_a_b_1",
                                                "andersonn_p_c"]
    assert field_names(["+", "-"]) == ["andersonn_p_0", "andersonn_p_1"]
    names = field_names(["a b", "a_b", "a_b_1"])  # a suffixed name meets another class's own
    assert len(set(names)) == 3


def test_sdf_output_keeps_every_class_probability() -> None:
    from rdkit import Chem

    classes = ["< 2.5", ">= 2.5"]
    preds = [Prediction("CCO", True, ">= 2.5", {"< 2.5": 0.25, ">= 2.5": 0.75}, 9.0,
                        source="CCO"),
             Prediction("CC", True, "< 2.5", {"< 2.5": 0.875, ">= 2.5": 0.125}, 8.0,
                        source="CC")]
    supplier = Chem.SDMolSupplier()
    supplier.SetData(sdf_predictions(preds, classes))
    mols = list(supplier)
    assert [m.GetProp("andersonn_p_lt_2_5") for m in mols] == ["0.250000", "0.875000"]
    assert [m.GetProp("andersonn_p_ge_2_5") for m in mols] == ["0.750000", "0.125000"]
    generic = ["a b", "a_b"]
    supplier.SetData(sdf_predictions(
        [Prediction("CO", True, "a_b", {"a b": 0.5, "a_b": 0.5}, 3.0, source="CO")], generic))
    (mol,) = list(supplier)
    assert mol.GetProp("andersonn_p_a_b_0") == mol.GetProp("andersonn_p_a_b_1") == "0.500000"


# -- 2: folders and lists named in a list ------------------------------------------------------
def test_folders_and_lists_named_in_a_list_are_expanded(polarity_run: Path,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "mols"
    folder.mkdir()
    shutil.copy(FIXTURES / "ethanol.mol", folder)
    shutil.copy(FIXTURES / "water.xyz", folder)
    (tmp_path / "three.smi").write_text("CCO\nCC ethane\n# a comment\nCCC\n")
    (tmp_path / "inputs.txt").write_text("mols\nthree.smi\nCO\n")
    items = expand_inputs([str(tmp_path / "inputs.txt")])
    assert _names(items) == [str(folder / "ethanol.mol"), str(folder / "water.xyz"), "CCO",
                             "CC (ethane)", "CCC", "CO"]
    # as when named on the command line
    assert expand_inputs([str(tmp_path / "inputs.txt")]) == expand_inputs(
        [str(folder), str(tmp_path / "three.smi"), "CO"])
    preds = Classifier.load(polarity_run).predict_inputs([str(tmp_path / "inputs.txt")])
    assert [p.ok for p in preds] == [True] * 6


def test_a_list_that_includes_itself_fails_alone(polarity_run: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("CC\nb.txt\n")
    (tmp_path / "b.txt").write_text("a.txt\nCO\n")
    (tmp_path / "self.smi").write_text("self.smi\nCCO\n")
    items = expand_inputs([str(tmp_path / "a.txt"), str(tmp_path / "self.smi")])
    assert _names(items) == ["CC", str(tmp_path / "a.txt"), "CO", str(tmp_path / "self.smi"),
                             "CCO"]
    assert isinstance(items[1], UnusableInput) and isinstance(items[3], UnusableInput)
    preds = Classifier.load(polarity_run).predict_inputs(
        [str(tmp_path / "a.txt"), str(tmp_path / "self.smi")], workers=2)
    assert [p.ok for p in preds] == [True, False, True, False, True]
    assert preds[1].reason == "a list file that includes itself (directly or through other lists)"


# -- 4: xyz and POSCAR saved as .txt -----------------------------------------------------------
def test_an_xyz_or_poscar_saved_as_txt_is_a_structure(polarity_run: Path,
                                                      tmp_path: Path) -> None:
    water = tmp_path / "water.txt"
    shutil.copy(FIXTURES / "water.xyz", water)
    poscar = tmp_path / "poscar.txt"
    shutil.copy(FIXTURES / "POSCAR_Si", poscar)
    assert _holds_a_structure(water) and _holds_a_structure(poscar)
    assert expand_inputs([str(water), str(poscar)]) == [str(water), str(poscar)]
    got, want = Classifier.load(polarity_run).predict_inputs([str(water),
                                                             str(FIXTURES / "water.xyz")])
    assert got.ok and got.probabilities == want.probabilities and got.label == want.label
    listing = tmp_path / "list.txt"  # a list of SMILES stays a list
    listing.write_text("CCO\nCC\n")
    assert expand_inputs([str(listing)]) == ["CCO", "CC"]


# -- 5: a broken SDF record in --out .sdf ------------------------------------------------------
def test_a_broken_sdf_record_is_written_as_a_readable_placeholder(polarity_run: Path,
                                                                   tmp_path: Path) -> None:
    from rdkit import Chem

    ethanol = (FIXTURES / "ethanol.mol").read_text().rstrip("\n")
    broken = "broken\n  x\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\nM  END"
    library = tmp_path / "lib.sdf"
    library.write_text(f"{ethanol}\n> <id>\nA1\n\n$$$$\n{broken}\n> <id>\nA2\n\n$$$$\n"
                       f"{ethanol}\n> <id>\nA3\n\n$$$$\n")
    out = tmp_path / "preds.sdf"
    assert main(["predict", str(polarity_run), str(library), "--out", str(out),
                 "--no-progress"]) == 0
    mols = list(Chem.SDMolSupplier(str(out)))  # sanitised, as any tool reads it
    assert len(mols) == 3 and all(m is not None for m in mols)
    assert [m.GetProp("andersonn_status") for m in mols] == ["ok", "error", "ok"]
    assert mols[1].GetNumAtoms() == 0 and mols[1].GetProp("_Name").endswith("lib.sdf#2 (broken)")
    assert "unparsable sdf block" in mols[1].GetProp("andersonn_error")
    assert [m.GetProp("id") for m in (mols[0], mols[2])] == ["A1", "A3"]  # kept fields
    assert out.read_text().count("$$$$") == 3


# -- 6: prediction in chunks -------------------------------------------------------------------
def test_chunked_prediction_gives_the_same_answers(polarity_run: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = ["CCO", "((", "CC", "CCN", str(FIXTURES / "water.xyz"), "CO", "xx(", "CCCO",
              "OCCO", "CC#N"]
    clf = Classifier.load(polarity_run)
    clf.conformers, clf.predict_batch_size = 2, 3
    # the reference: every image at once, as before
    images, ok, errors, _notes, counts = clf._featurize(inputs)
    probs, iters, _ = clf._infer_inputs(images, counts)
    whole = clf.predict_inputs(inputs)
    sizes = count_featurize_chunks(monkeypatch, 3)
    chunked = clf.predict_inputs(inputs)
    assert sizes == [3, 3, 3, 1]
    assert [p.to_dict() for p in chunked] == [p.to_dict() for p in whole]
    assert [p.ok for p in chunked] == [not e for e in errors]
    for row, i in enumerate(ok):
        assert [chunked[i].probabilities[c] for c in clf.classes_] == probs[row].tolist()
        assert chunked[i].iterations == iters[row]


# -- 7: read-only image arrays -----------------------------------------------------------------
def test_read_only_images_reach_torch_as_copies(polarity_run: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.data.cache import open_cache

    images = open_cache(polarity_run.parent / "cache").images  # a cached dataset's memmap
    assert not images.flags.writeable
    expected = Classifier.load(polarity_run).predict_proba(np.array(images))
    # torch warns about a read-only array once per process (the suite may have had it already),
    # so every array handed to torch without a copy is checked as well
    shared: list[str] = []

    def checked(name: str):
        real = getattr(torch, name)

        def check(data, *args, **kwargs):
            if isinstance(data, np.ndarray) and not data.flags.writeable:
                shared.append(name)
            return real(data, *args, **kwargs)

        return check

    for name in ("as_tensor", "from_numpy"):
        monkeypatch.setattr(torch, name, checked(name))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The given NumPy array is not writable")
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = Classifier.load(polarity_run).predict_proba(images)
    assert shared == []
    assert np.array_equal(got, expected)


# -- 3: strict JSON ----------------------------------------------------------------------------
def test_prediction_json_is_strict(polarity_run: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clf = Classifier.load(polarity_run)
    infer = Classifier._infer

    def diverged(self, images):  # one input's solve blows up; an explicit net: no iterations
        probs, iters, short = infer(self, images)
        probs[0] = np.nan
        return probs, np.full_like(iters, np.nan), short

    monkeypatch.setattr(Classifier, "_infer", diverged)
    preds = clf.predict_inputs(["CCO", "CC"])
    assert not preds[0].ok and "not finite" in preds[0].error
    assert preds[1].ok and preds[1].iterations is None
    out = tmp_path / "p.json"
    write_predictions(out, preds, clf.classes_, meta={"conformers": np.int64(1)})
    record = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert record["predictions"][1]["iterations"] is None and record["conformers"] == 1


# -- 8: messages -------------------------------------------------------------------------------
def test_an_error_names_its_input_once() -> None:
    assert without_name("C1CC: unparsable SMILES", "C1CC") == "unparsable SMILES"
    assert without_name("a crystal, but ...", "NaCl.cif") == "a crystal, but ..."
    long = "C" * 300
    shortened = f"{'C' * 60}...{'C' * 20}: 902 atoms"
    assert without_name(shortened, long) == "902 atoms"
    assert Prediction("C1CC", False, error="C1CC: unparsable SMILES").reason == \
        "unparsable SMILES"
    assert Explanation(name="C1CC", error="C1CC: unparsable SMILES").to_text() == \
        "C1CC: error: unparsable SMILES"
    # a file's reader names it by its base name; the line names it by the path given
    assert without_name("water.xyz: empty file", str(FIXTURES / "water.xyz")) == "empty file"
    assert without_name("F/C=C/F: unparsable SMILES", "F/C=C/F") == "unparsable SMILES"
    assert without_name("F: x", "F/C=C/F") == "F: x"  # not a file: no base name


def test_a_unicode_list_file_is_read_and_a_unicode_structure_file_refused_once(
        tmp_path: Path, polarity_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "mols.smi"
    listing.write_bytes("CCO ethanol\nCC ethane\n".encode("utf-16"))  # Notepad's "Unicode"
    water = tmp_path / "water16.xyz"
    water.write_bytes((FIXTURES / "water.xyz").read_text().encode("utf-16"))
    assert main(["predict", str(polarity_run), str(listing), str(water), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "CCO (ethanol)" in out and "CC (ethane)" in out
    assert f"cannot predict {water}: UTF-16 or UTF-32 text; save the file as UTF-8" in err
    assert err.count("UTF-16") == 1


def test_picture_names_are_safe_and_distinct() -> None:
    names = [picture_name(1, "C/C=C/C"), picture_name(1, "C\\C=C/C")]
    assert names[0] != names[1] and all("/" not in n and "\\" not in n for n in names)
    assert names[0].startswith("001-C_C=C_C-") and names[0].endswith(".png")
    assert picture_name(2, "CCO") == "002-CCO.png"
    assert picture_name(3, "CC(=O)N") == "003-CC(=O)N.png"
    assert picture_name(4, str(FIXTURES / "ethanol.mol2")) == "004-ethanol.mol2.png"
    long = picture_name(5, "C" * 300)
    assert len(long) < 70 and long != picture_name(5, "C" * 301)
    assert picture_name(6, "..").startswith("006-") and ".." not in picture_name(6, "..")
    record = picture_name(7, "lib.sdf#2 (a/b)")
    assert "/" not in record and record != picture_name(7, "lib.sdf#2 (a_b)")
