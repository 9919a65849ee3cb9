"""What users throw at ``predict``: salts and overlapping atoms (which crashed RDKit's bond
perception), a worker process that dies, byte-order marks, empty arguments, output paths that
cannot be written, unknown devices, unconverged solves, and SD output of xyz inputs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import andersonn.predict.featurize as featurize_module
from andersonn.cli import main
from andersonn.errors import InputError
from andersonn.images.physics import perceive_molecule
from andersonn.predict import Classifier
from andersonn.structures import read_structure
from andersonn.structures.network import overlapping_atoms
from andersonn.structures.readers import split_records

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"



@pytest.mark.parametrize("smiles", ["C.C", "[Na+].[Cl-]", "CC(=O)[O-].[Na+]", "CCO.O"])
def test_the_fragments_of_a_smiles_are_laid_apart_and_noted(smiles: str) -> None:
    s = read_structure(smiles)
    assert overlapping_atoms(s.positions, 0.9) is None  # RDKit put them on top of each other
    assert len(s.notes) == 1 and "disconnected fragments" in s.notes[0]
    assert read_structure("CCO").notes == []


def test_overlapping_atoms_are_refused_not_crashed_on(tmp_path: Path) -> None:
    path = tmp_path / "dup.xyz"
    path.write_text("3\n\nC 0 0 0\nC 0 0 0\nO 1.4 0 0\n")
    with pytest.raises(InputError, match=r"atoms 1 and 2 are 0\.00 Å apart"):
        read_structure(path)
    # a Structure built by hand never reaches RDKit's connectivity search either
    numbers, positions = np.array([6, 6, 8]), np.array([[0, 0, 0], [0, 0, 0], [1.4, 0, 0.0]])
    assert perceive_molecule(numbers, positions) is None
    assert overlapping_atoms(np.array([[0, 0, 0], [0.74, 0, 0.0]])) is None  # H2 is fine


def test_salts_are_predicted_with_a_warning(polarity_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "salt.json"
    assert main(["predict", str(polarity_run), "CC(=O)[O-].[Na+]", "CCO", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["predictions"]
    assert [r["ok"] for r in rows] == [True, True]
    assert any("disconnected fragments" in w for w in rows[0]["warnings"])


def _crash_on(marker: str):
    original = featurize_module._featurize_with

    def featurize(setup, item):
        if item == marker:
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dying as in a crash of RDKit
        return original(setup, item)

    return featurize


def test_a_worker_that_crashes_fails_its_input_alone(polarity_run: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(featurize_module, "_featurize_with", _crash_on("CRASH"))
    items = ["CCO", "CRASH", "CC#N", "O", "CRASH", "CCN"]
    preds = Classifier.load(polarity_run).predict_inputs(items, workers=2)  # used to hang forever
    assert [p.ok for p in preds] == [True, False, True, True, False, True]
    assert "crashed" in preds[1].error
    monkeypatch.undo()
    alone = Classifier.load(polarity_run).predict_inputs(["CCO", "CC#N", "O", "CCN"])
    got = [p.probabilities for p in preds if p.ok]
    assert all(a["weakly polar"] == pytest.approx(b.probabilities["weakly polar"], abs=1e-6)
               for a, b in zip(got, alone, strict=True))


def test_byte_order_marks_are_not_part_of_the_first_line(polarity_run: Path,
                                                         tmp_path: Path) -> None:
    xyz = tmp_path / "bom.xyz"
    xyz.write_bytes(b"\xef\xbb\xbf" + (FIXTURES / "acetonitrile.xyz").read_bytes())
    assert read_structure(xyz).n_atoms == read_structure(FIXTURES / "acetonitrile.xyz").n_atoms
    listing = tmp_path / "bom.smi"
    listing.write_bytes(b"\xef\xbb\xbf# molecules\r\nCCO ethanol\r\nCC#N\r\n")
    preds = Classifier.load(polarity_run).predict_inputs([str(listing)])
    assert [(p.input, p.ok) for p in preds] == [("CCO (ethanol)", True), ("CC#N", True)]


def test_an_empty_argument_is_an_input_that_fails_not_the_working_directory(
        polarity_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "water.xyz").write_text((FIXTURES / "water.xyz").read_text())
    preds = Classifier.load(polarity_run).predict_inputs(["", "CCO"])
    assert [p.ok for p in preds] == [False, True]
    assert "empty input" in preds[0].error


def test_a_txt_file_holding_a_cif_is_read_as_the_structure(tmp_path: Path) -> None:
    from andersonn.predict import expand_inputs

    as_text = tmp_path / "NaCl.txt"
    as_text.write_text((FIXTURES / "NaCl.cif").read_text())
    (tmp_path / "meta.json").write_text('{"epochs": 3}')  # results, not a structure
    (tmp_path / "NaCl.cif").write_text((FIXTURES / "NaCl.cif").read_text())
    assert expand_inputs([str(as_text)]) == [str(as_text)]
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "NaCl.cif")]


def test_a_cif_whose_first_block_has_no_atoms_is_its_second_block(tmp_path: Path) -> None:
    cif = (FIXTURES / "NaCl.cif").read_text()
    header = "data_global\n_cell_length_a 5.0\n_cell_length_b 5.0\n_cell_length_c 5.0\n"
    path = tmp_path / "two.cif"
    path.write_text(header + cif)
    assert len(split_records(path.read_text(), "cif")) == 1
    assert read_structure(path).n_atoms == read_structure(FIXTURES / "NaCl.cif").n_atoms


@pytest.mark.parametrize("out", ["folder.json", "afile/x.csv", "preds.txt"])
def test_unwritable_outputs_fail_before_any_work(polarity_run: Path, tmp_path: Path, out: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(polarity_run), "CCO", "--out", str(tmp_path / out)])
    assert stop.value.code == 2
    assert "argument --out" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["foo", "cuda:99"])
def test_an_unusable_device_is_one_line(polarity_run: Path, device: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(polarity_run), "CCO", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("andersonn: error:") and "Traceback" not in err


def test_a_solve_stopped_short_of_its_tolerance_is_flagged(polarity_run: Path) -> None:
    clf = Classifier.load(polarity_run, solver_options={"max_iter": 2, "tol": 1e-6})
    [pred] = clf.predict_inputs(["CCO"])
    assert pred.ok and any("stopped short of its tolerance" in w for w in pred.warnings)
    [fine] = Classifier.load(polarity_run).predict_inputs(["CCO"])
    assert not any("stopped short" in w for w in fine.warnings)


def test_sd_output_of_an_xyz_file_has_chemical_bond_orders(polarity_run: Path,
                                                           tmp_path: Path) -> None:
    from rdkit import Chem

    out = tmp_path / "back.sdf"
    assert main(["predict", str(polarity_run), str(FIXTURES / "acetonitrile.xyz"),
                 "--out", str(out)]) == 0
    [mol] = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "CC#N"


def test_predict_proba_warns_where_a_solve_stopped_short(polarity_run: Path) -> None:
    from andersonn.predict import ConvergenceWarning

    clf = Classifier.load(polarity_run, solver_options={"max_iter": 2, "tol": 1e-6})
    with pytest.warns(ConvergenceWarning, match="stopped short of its tolerance"):
        clf.predict_proba(["CCO", "CC#N"])


def test_a_2d_mol_block_of_a_salt_is_laid_apart_with_the_same_note(tmp_path: Path) -> None:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    salt = Chem.MolFromSmiles("CC(=O)[O-].[Na+]")
    AllChem.Compute2DCoords(salt)
    path = tmp_path / "salt.mol"
    path.write_text(Chem.MolToMolBlock(salt))
    s = read_structure(path)
    assert overlapping_atoms(s.positions, 0.9) is None
    assert s.notes == read_structure("CC(=O)[O-].[Na+]").notes != []


def test_a_smiles_is_refused_by_a_crystal_model_before_it_is_embedded(monkeypatch) -> None:
    import andersonn.structures as structures
    from andersonn.data.domain import Domain
    from andersonn.predict import read_in_domain
    from andersonn.structures.readers import is_smiles

    def no_embedding(*args, **kwargs):
        raise AssertionError("the SMILES was read")

    monkeypatch.setattr(structures, "read_conformers", no_embedding)
    crystals = Domain("crystal", {"Na": 3, "Cl": 3}, (2, 8), 3)
    with pytest.raises(InputError, match=r"^a molecule, but this model was trained on crystals "
                                         r"only"):
        read_in_domain("C" * 400, crystals, 5000)
    assert is_smiles("CCO") and is_smiles("C" * 400) and not is_smiles(str(FIXTURES / "water.xyz"))
    assert not is_smiles("missing.cif") and not is_smiles("")
