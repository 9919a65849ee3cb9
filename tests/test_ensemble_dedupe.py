"""An ensemble refuses a run given twice from Python too (``Ensemble.from_runs``), and
``evaluate`` counts unconverged solves from the ensemble's own member inference: its counts
equal what the ensemble and each member report when they predict."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from andersonn.ensemble import Ensemble
from andersonn.errors import InputError
from andersonn.evaluate import evaluate_labelled, evaluate_split
from andersonn.predict import Classifier, ConvergenceWarning
from andersonn.training.inputs import split_tensors

from helpers import tiny_polarity_dataset

TIGHT = {"tol": 1e-9, "max_iter": 2}  # every solve stops short
LOOSE = {"tol": 0.5, "max_iter": 60}  # every solve converges
TWICE = "; an ensemble needs distinct runs: give each once"


def test_from_runs_refuses_a_run_given_twice(polarity_run: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run = str(polarity_run)
    with pytest.raises(InputError) as refused:
        Ensemble.from_runs([run, run])
    assert str(refused.value) == f"run {run} is given twice{TWICE}"
    with pytest.raises(InputError) as refused:
        Ensemble.from_runs([polarity_run, run + "/"])
    assert str(refused.value) == f"run {run} is given twice (as {run} and {run}/){TWICE}"
    monkeypatch.chdir(polarity_run.parent)
    with pytest.raises(InputError) as refused:
        Ensemble.from_runs([polarity_run, polarity_run.name])
    assert str(refused.value) == (f"run {run} is given twice (as {run} and "
                                  f"{polarity_run.name}){TWICE}")
    missing = tmp_path / "none"  # refused before any run is read
    with pytest.raises(InputError, match=r"^run .*none is given twice;"):
        Ensemble.from_runs([missing, missing])
    copy = tmp_path / "copy"
    shutil.copytree(polarity_run, copy)
    assert len(Ensemble.from_runs([polarity_run, copy])) == 2


def _stopped(predictions: list) -> int:
    return sum(any("stopped short of its tolerance" in w for w in p.warnings)
               for p in predictions)


def test_split_unconverged_equals_the_ensembles_warning(polarity_run: Path,
                                                        tmp_path: Path) -> None:
    dataset = tiny_polarity_dataset(tmp_path)
    images, _ = split_tensors(dataset, "test")
    result = evaluate_split([polarity_run], dataset=dataset, solver_options=TIGHT)
    assert result.unconverged == [4]
    ens = Ensemble.from_runs([polarity_run], solver_options=TIGHT)
    with pytest.warns(ConvergenceWarning) as caught:
        ens.predict_proba(images.numpy())
    assert str(caught[0].message).startswith("4 of 4 input(s) (rows 0, 1, 2, 3): ")


def _with_eval(polarity_run: Path, out: Path, options: dict[str, float]) -> Path:
    """A copy of the run whose config solves with ``options`` at inference."""
    shutil.copytree(polarity_run, out)
    config = json.loads((out / "config.json").read_text())
    config["solver"]["eval"] = {**config["solver"]["eval"], **options}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_labelled_unconverged_per_member_equals_what_they_predict(
        polarity_run: Path, tmp_path: Path) -> None:
    tight = _with_eval(polarity_run, tmp_path / "tight", TIGHT)
    loose = _with_eval(polarity_run, tmp_path / "loose", LOOSE)
    table = tmp_path / "mine.csv"
    table.write_text("smiles,class\nCCO,strongly polar\nCCCC,weakly polar\n"
                     "CCN,strongly polar\n")
    inputs = ["CCO", "CCCC", "CCN"]
    result = evaluate_labelled([tight, loose], table, conformers=2)
    assert result.unconverged == [3, 0]
    for run, count in ((tight, 3), (loose, 0)):
        member = Classifier.load(run)
        member.conformers = 2
        assert _stopped(member.predict_inputs(inputs)) == count
    ens = Ensemble.from_runs([tight, loose])
    ens.conformers = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        predictions = ens.predict_inputs(inputs)
    assert _stopped(predictions) == max(result.unconverged) == 3
    assert [row["probabilities"] for row in result.rows] == [p.probabilities
                                                             for p in predictions]
    assert result.convergence_note() == (
        f"the fixed-point solve of 3 of 3 inputs ({tight}: 3) stopped short of its "
        "tolerance: their scores are those of unconverged solves")
