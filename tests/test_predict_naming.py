"""How predictions name their inputs: records of files by the path as given, every error once
and without its input's name in the output files, long and blank names visibly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from andersonn.cli import main
from andersonn.errors import InputError
from andersonn.predict import Classifier, expand_inputs, without_name
from andersonn.predict.inputs import _input_name
from andersonn.structures import read_structure

FIXTURES = Path(__file__).parent / "fixtures" / "structures"


def test_records_of_two_files_of_one_name_stay_apart(tmp_path, monkeypatch):
    frames = (FIXTURES / "water.xyz").read_text() * 2
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "traj.xyz").write_text(frames)
    monkeypatch.chdir(tmp_path)
    names = [r.name for r in expand_inputs(["a/traj.xyz", "b/traj.xyz"])]
    assert names == ["a/traj.xyz#1", "a/traj.xyz#2", "b/traj.xyz#1", "b/traj.xyz#2"]


def test_a_long_input_is_not_named_twice():
    smiles = "C" * 150 + "("
    with pytest.raises(InputError) as caught:
        read_structure(smiles)
    assert without_name(str(caught.value), smiles) == "unparsable SMILES"


def test_a_blank_input_is_named_visibly():
    assert _input_name(" ") == "' '" and _input_name("") == "''"


def test_output_files_give_the_reason_without_the_name(polarity_run, tmp_path):
    inputs = ["C1CC", str(FIXTURES / "NaCl.cif"), "CCO"]
    for suffix in ("csv", "json"):
        out = tmp_path / f"p.{suffix}"
        assert main(["predict", str(polarity_run), *inputs, "--out", str(out),
                     "--no-progress"]) == 0
        if suffix == "csv":
            errors = [row["error"] for row in csv.DictReader(out.open())]
        else:
            errors = [row["error"] for row in json.loads(out.read_text())["predictions"]]
        assert errors[0] == "unparsable SMILES"
        assert errors[1].startswith("a crystal, but this model")
        assert not errors[2]
    preds = Classifier.load(polarity_run).predict_inputs(["C1CC"])
    assert preds[0].error == "C1CC: unparsable SMILES"  # the Python record keeps it whole


@pytest.mark.parametrize(("item", "reason"), [
    ("CCO", "a molecule, but this model was trained on crystals only"),
    ("C1CC", "unparsable SMILES"), ("my_cifs", "unparsable SMILES"),
    ("Fe2O3", "unparsable SMILES")])
def test_a_word_that_is_no_smiles_is_not_called_a_molecule(item, reason):
    # a crystal model refuses a SMILES before embedding it; a mistyped folder or a formula is
    # no SMILES, and the reader says so
    from andersonn.data.domain import Domain
    from andersonn.predict.featurize import read_in_domain

    with pytest.raises(InputError) as caught:
        read_in_domain(item, Domain("crystal"), None)
    assert reason in without_name(str(caught.value), item)
