"""An explicit network (no fixed-point solver) scored, predicted with and cross-validated: its
solver iterations are None (null in strict JSON, "-" / "n/a" in tables, empty in CSV), an
ensemble's iterations are the sum over its DEQ members, and ``evaluate --tol`` warns that the
explicit network has no solver."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn import crossval
from andersonn.cli import main
from andersonn.ensemble import Ensemble, solver_evaluations
from andersonn.evaluate import evaluate_split

from helpers import tiny_polarity_dataset, tiny_polarity_run, toy_config, toy_dataset

torch.set_num_threads(1)


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


def test_evaluate_warns_that_an_explicit_network_has_no_solver(runs, capsys,
                                                              monkeypatch) -> None:
    dataset, explicit, _ = runs
    monkeypatch.setattr("andersonn.training.runs.run_dataset", lambda config: dataset)
    assert main(["evaluate", str(explicit), "--tol", "1e-5"]) == 0
    assert "explicit network has no fixed-point solver" in capsys.readouterr().err


def test_an_explicit_cross_validation_reports_null_iterations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.training import inputs, runs

    toy = toy_dataset()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    monkeypatch.setattr(runs, "run_build", lambda *a, **k: toy)
    out = tmp_path / "cv"
    summary = crossval.cross_validate(toy_config(), out, folds=2, progress=False)
    assert summary is not None and summary.pooled["iterations"] is None
    assert [s["iterations"] for s in summary.per_fold] == [None, None]
    assert summary.spread["iterations"] == {"mean": None, "std": None}
    record = json.loads((out / "cv.json").read_text())
    assert record["pooled"]["iterations"] is None
    assert [s["iterations"] for s in record["per_fold"]] == [None, None]
    table = (out / "cv.md").read_text()
    assert "nan" not in table.lower() and table.count("| n/a |") == 4  # 2 folds, mean, pooled
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and {r["iterations"] for r in rows} == {""}
