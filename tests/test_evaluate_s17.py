"""Evaluation fixes (session 17): an explicit network (no solver) scored alone and beside a DEQ
gives strict JSON (iterations None, the ensemble's the DEQ members' sum), and a labelled input
given twice with different classes is warned about."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.ensemble import Ensemble, solver_evaluations
from andersonn.evaluate import evaluate_split, read_labelled

from helpers import tiny_polarity_dataset, tiny_polarity_run

torch.set_num_threads(1)
POLAR = ["weakly polar", "strongly polar"]


def _strict(text: str) -> object:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    """The tiny polarity dataset, an explicit-network run and a DEQ run on it."""
    from andersonn.training import TrainConfig, train

    root = tmp_path_factory.mktemp("explicit")
    dataset = tiny_polarity_dataset(root)
    cfg = TrainConfig(task="polarity", model="explicit", epochs=1, hidden=8, depth=1,
                      batch_size=4, threads=1, plots=False)
    train(cfg, root / "explicit", dataset=dataset, progress=False)
    return dataset, root / "explicit", tiny_polarity_run(dataset, root / "deq")


def test_solver_evaluations_sum_the_members_with_a_solver() -> None:
    nan = np.nan
    got = solver_evaluations(np.array([[nan, nan], [3.0, 4.0], [5.0, nan]]))
    assert got.tolist() == [8.0, 4.0]
    assert np.isnan(solver_evaluations(np.array([[nan], [nan]]))).all()


def test_an_explicit_network_scores_as_strict_json(runs, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dataset, explicit, deq = runs
    alone = evaluate_split([explicit], dataset=dataset)
    assert alone.single[0]["iterations"] is None
    record = _strict(json.dumps(alone.to_dict(), allow_nan=False))
    assert record["single"][0]["iterations"] is None
    both = evaluate_split([explicit, deq], dataset=dataset)
    deq_alone = evaluate_split([deq], dataset=dataset).single[0]["iterations"]
    assert deq_alone is not None and deq_alone >= 1
    assert both.single[1]["iterations"] == deq_alone
    assert both.spread["iterations"] == {"mean": deq_alone, "std": 0.0}
    assert both.ensembles[2]["iterations"] == pytest.approx(deq_alone)  # the DEQ's cost
    json.dumps(both.to_dict(), allow_nan=False)
    table = both.to_markdown()
    assert f"| {explicit} |" in table and table.splitlines()[4].endswith("| - |")
    assert "nan" not in table
    # the spread of iterations is over the one run that has them, and says so
    assert table.splitlines()[6].startswith("| mean ± sd of 2 |")
    assert table.splitlines()[6].endswith(f"| {deq_alone:.1f} (1 with a solver) |")
    # the command writes the same, strict
    monkeypatch.setattr("andersonn.training.runs.run_dataset", lambda config: dataset)
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(explicit), str(deq), "--split", "test", "--out",
                 str(out)]) == 0
    record = _strict(out.read_text())
    assert record["single"][0]["iterations"] is None
    assert record["spread"]["iterations"]["mean"] == pytest.approx(deq_alone)
    capsys.readouterr()


def test_an_ensemble_with_an_explicit_member_counts_the_solver_runs(runs, tmp_path: Path
                                                                   ) -> None:
    _, explicit, deq = runs
    from andersonn.predict import Classifier

    inputs = ["CCO", "CCCN"]
    ens = Ensemble.from_runs([explicit, deq])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ens.predict_inputs(inputs)
        want = Classifier.load(deq).predict_inputs(inputs)
        none = Ensemble.from_runs([explicit]).predict_inputs(inputs)
    assert [p.iterations for p in got] == [p.iterations for p in want]
    assert all(p.iterations is not None and p.iterations >= 1 for p in got)
    assert [p.iterations for p in none] == [None, None]
    out = tmp_path / "p.json"
    assert main(["predict", str(explicit), *inputs, "--out", str(out), "--no-progress"]) == 0
    assert [p["iterations"] for p in _strict(out.read_text())["predictions"]] == [None, None]


def test_conflicting_labels_of_one_input_are_warned_about(tmp_path: Path) -> None:
    table = tmp_path / "mine.csv"
    table.write_text("input,class\nCCO,strongly polar\nCC,weakly polar\nCCO,weakly polar\n"
                     "CC,weakly polar\nCCO,Strongly Polar\n")
    with pytest.warns(UserWarning) as caught:
        inputs, labels, _ = read_labelled(table, "polarity", POLAR)
    messages = [str(w.message) for w in caught]
    assert messages == ["mine.csv: CCO is given with conflicting labels: line 2 (strongly "
                        "polar), line 4 (weakly polar), line 6 (strongly polar); each row is "
                        "scored as given"]
    assert inputs == ["CCO", "CC", "CCO", "CC", "CCO"] and labels == [1, 0, 0, 0, 1]
    table.write_text("input,class\nCCO,strongly polar\nCCO,1\nCC,0\n")  # agreeing: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_labelled(table, "polarity", POLAR)


def test_evaluate_warns_that_an_explicit_network_has_no_solver(runs, capsys,
                                                              monkeypatch) -> None:
    from andersonn.cli import main

    dataset, explicit, _ = runs
    monkeypatch.setattr("andersonn.training.runs.run_dataset", lambda config: dataset)
    assert main(["evaluate", str(explicit), "--tol", "1e-5"]) == 0
    assert "explicit network has no fixed-point solver" in capsys.readouterr().err
