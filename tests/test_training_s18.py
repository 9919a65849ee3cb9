"""Session 18 fixes in training and cross-validation: why training stopped in train's last line,
``--max-time``, positive ``--tol`` and ``--conformers`` when parsed, singular wording, folds
judged finished by their final record, and null solver iterations of explicit networks."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest

from andersonn import crossval
from andersonn.cli import main
from andersonn.training import TrainConfig, train
from andersonn.training import trainer as trainer_module
from andersonn.training.trainer import epochs_held, plural

from helpers import assert_refused_when_parsed


def _toy(n: int = 48) -> types.SimpleNamespace:
    """A small separable in-memory dataset (two classes, images (3, 4, 3))."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 3, 4, 3)).astype(np.float32)
    images[:, 0] += 2.0 * labels[:, None, None]
    splits = np.zeros(n, np.int8)
    splits[int(0.7 * n):int(0.85 * n)], splits[int(0.85 * n):] = 1, 2
    return types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["a", "b"], ids=[f"m{i}" for i in range(n)],
                                 meta={"task": "toy"})


def _cfg(**kw: object) -> TrainConfig:
    base = {"task": "toy", "model": "explicit", "depth": 1, "hidden": 8, "epochs": 1,
            "batch_size": 16, "threads": 1, "plots": False, "lr": 1e-2}
    return TrainConfig(**{**base, **kw})


# -- 1, 2: --max-time, and the final line says why training ended early --------------------------

def test_max_time_reaches_the_config_and_the_last_line_says_why_training_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(trainer_module, "load_task_dataset", lambda *a, **k: _toy())
    config = tmp_path / "quiet.json"
    config.write_text(json.dumps({"plots": False}))
    run = tmp_path / "run"
    argv = ["train", "polarity", "--model", "explicit", "--depth", "1", "--hidden", "8",
            "--epochs", "3", "--batch-size", "16", "--threads", "1", "--no-progress",
            "--config", str(config), "--out", str(run), "--max-time", "1e-9"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1]
    assert last.endswith(f", stopped after epoch 1 of 3 (max_time_s) → {run}"), last
    assert json.loads((run / "config.json").read_text())["train"]["max_time_s"] == 1e-9
    assert "time limit reached" in captured.err


def test_a_run_of_all_its_epochs_names_no_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(trainer_module, "load_task_dataset", lambda *a, **k: _toy())
    config = tmp_path / "quiet.json"
    config.write_text(json.dumps({"plots": False}))
    run = tmp_path / "run"
    assert main(["train", "polarity", "--model", "explicit", "--depth", "1", "--hidden", "8",
                 "--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
                 "--config", str(config), "--out", str(run)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "stopped" not in last and last.endswith(f" s → {run}")


# -- 2, 4: positive numbers refused when parsed ----------------------------------------------------

@pytest.mark.parametrize(("argv", "option"), [
    (["train", "polarity", "--max-time", "0"], "--max-time"),
    (["train", "polarity", "--max-time", "-5"], "--max-time"),
    (["train", "polarity", "--max-time", "nan"], "--max-time"),
    (["train", "polarity", "--tol", "0"], "--tol"),
    (["train", "polarity", "--tol", "-0.001"], "--tol"),
    (["predict", "RUN", "CCO", "--tol", "0"], "--tol"),
    (["evaluate", "RUN", "--tol", "-1"], "--tol"),
    (["bench", "speedup", "polarity", "--tol", "0"], "--tol"),
])
def test_non_positive_numbers_fail_in_one_line_when_parsed(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_when_parsed(
        argv, capsys, f"error: argument {option}: must be a positive number, got {argv[-1]}")


def test_a_tolerance_that_is_not_a_number_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "RUN", "CCO", "--tol", "tight"])
    assert capsys.readouterr().err.strip().endswith("argument --tol: 'tight' is not a number")


@pytest.mark.parametrize("command", [["predict", "RUN", "CCO"], ["evaluate", "RUN"]])
def test_conformers_below_one_fail_when_parsed(command: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # before any run is opened
        main([*command, "--conformers", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: argument --conformers: must be at least 1, got 0")


# -- 3, 9: wording ---------------------------------------------------------------------------------

def test_counts_and_held_epochs_in_words() -> None:
    assert (plural(1, "epoch"), plural(0, "epoch"), plural(3, "step")) == \
        ("1 epoch", "0 epochs", "3 steps")
    assert (epochs_held(1), epochs_held(4)) == ("epoch 1", "epochs 1–4")


def test_a_patience_stop_after_one_epoch_says_one_epoch(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    result = train(_cfg(epochs=6, patience=1, lr=1e-12), tmp_path / "run", dataset=_toy(),
                   progress=False)
    err = capsys.readouterr().err
    assert "andersonn: no validation improvement for 1 epoch (best: epoch 1); stopped after " \
           "epoch 2 of 6 (patience)" in err
    assert "1 epochs" not in err and result.stopped == "stopped after epoch 2 of 6 (patience)"


def test_bench_speedup_says_one_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.bench.speedup import SpeedupSettings, run_speedup

    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    images = rng.normal(size=(64, 4, 8, 6)).astype(np.float32)
    images[:, 0] += 1.5 * labels[:, None, None]
    splits = np.repeat(np.array([0, 1, 2], np.int8), [44, 10, 10])
    data = types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["a", "b"], meta={"task": "tiny"})
    s = SpeedupSettings.quick(hidden=8, groups=4, epochs=1, batch_size=16, limit=None,
                              repeats=1, trace_iters=5, inference_limit=8, trace_batch=4,
                              inference_tols=(1e-2,), threads=1)
    run_speedup("tiny", s, dataset=data, out=tmp_path, progress=True)
    text = capsys.readouterr().err + (tmp_path / "speedup.md").read_text()
    assert "1 epoch × 3 steps" in text and ", 1 epoch, batch 16" in text
    assert "1 epochs" not in text


# -- 5: a fold is finished by its final record, not by its weights ---------------------------------

def _fake_fold(run: Path, fold: int, planned: int, finished_epochs: int) -> None:
    """The files a fold run leaves, its final record for ``finished_epochs`` of ``planned``."""
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"weights of an earlier end")
    (run / "test_metrics.json").write_text("{}")
    (run / "checkpoint.json").write_text(json.dumps(
        {"epoch": finished_epochs, "path": f"checkpoints/epoch-{finished_epochs:04d}"}))
    (run / "config.json").write_text(json.dumps({
        "train": {"epochs": planned, "folds": 2, "fold": fold}, "calibration": {},
        "finished": {"epoch": finished_epochs, "epochs": finished_epochs, "stopped": None,
                     "test": True}}))


@pytest.fixture
def half_finished_cv(tmp_path: Path) -> Path:
    """fold-1 finished; fold-2 being extended to 2 epochs (its 1-epoch weights still there)."""
    cv = tmp_path / "cv"
    _fake_fold(cv / "fold-1", 1, planned=1, finished_epochs=1)
    _fake_fold(cv / "fold-2", 2, planned=2, finished_epochs=1)
    return cv


def test_predict_asks_only_the_finished_folds(half_finished_cv: Path) -> None:
    from andersonn.cli.train import _run_dirs
    from andersonn.errors import AndersonnError

    assert crossval.finished_folds(half_finished_cv) == [half_finished_cv / "fold-1"]
    # fold-2 is part-way through an --epochs extension: its settings differ from fold-1's,
    # so predict / evaluate refuse the mix and say how to finish it
    with pytest.raises(AndersonnError, match="an --epochs extension"):
        _run_dirs([str(half_finished_cv)])
    # once the settings agree (here: fold-2 planned for 1 epoch and interrupted in it: no
    # final record, no final weights), only the finished fold is asked
    conf = half_finished_cv / "fold-2" / "config.json"
    data = json.loads(conf.read_text())
    data["train"]["epochs"] = 1
    del data["finished"]
    conf.write_text(json.dumps(data))
    (half_finished_cv / "fold-2" / "model.safetensors").unlink()
    assert _run_dirs([str(half_finished_cv)]) == [str(half_finished_cv / "fold-1")]


def test_calibrate_skips_a_fold_whose_training_did_not_finish(
        half_finished_cv: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.training as training

    calibrated: list[Path] = []

    def fake(run: Path, device: str = "cpu") -> dict:
        calibrated.append(Path(run))
        return {"method": "none", "reason": "test"}

    monkeypatch.setattr(training, "calibrate_run", fake)
    assert main(["calibrate", str(half_finished_cv)]) == 0
    assert calibrated == [half_finished_cv / "fold-1"]
    out = capsys.readouterr().out
    assert f"{half_finished_cv / 'fold-2'}: not finished" in out and "(1 of 2)" in out


# -- 7: an explicit network's cross-validation has no solver iterations ----------------------------

def test_an_explicit_cross_validation_reports_null_iterations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.training import inputs, runs

    toy = _toy()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    monkeypatch.setattr(runs, "run_build", lambda *a, **k: toy)
    out = tmp_path / "cv"
    summary = crossval.cross_validate(_cfg(), out, folds=2, progress=False)
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


def test_fold_runs_ignore_a_copied_fold_folder(tmp_path: Path) -> None:
    from andersonn.crossval import fold_runs, is_cross_validation

    for name in ("fold-1", "fold-2", "fold-10", "fold-1.bak", "fold-x", "fold-01"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert [p.name for p in fold_runs(tmp_path)] == ["fold-1", "fold-2", "fold-10"]
    assert is_cross_validation(tmp_path)
    only_backup = tmp_path / "other"
    (only_backup / "fold-1.bak").mkdir(parents=True)
    (only_backup / "fold-1.bak" / "config.json").write_text("{}")
    assert not is_cross_validation(only_backup)


def test_positive_float_says_why_a_number_is_refused() -> None:
    import argparse

    from andersonn.cli.options import positive_float

    for text, why in (("inf", "a finite number"), ("1e-400", "rounds to 0"),
                      ("-1", "a positive number"), ("0", "a positive number, got 0")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            positive_float(text)
    assert positive_float("1e-3") == 1e-3


def test_a_config_names_the_setting_that_is_not_positive() -> None:
    from andersonn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^tol must be positive \(got 0"):
        TrainConfig(task="polarity", tol=0.0).validate()


def test_calibrate_names_a_fold_that_never_started(
        half_finished_cv: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.training as training

    for conf in half_finished_cv.glob("fold-*/config.json"):  # planned: 3 folds
        data = json.loads(conf.read_text())
        data["train"]["folds"] = 3
        conf.write_text(json.dumps(data))
    monkeypatch.setattr(training, "calibrate_run",
                        lambda run, device="cpu": {"method": "none", "reason": "test"})
    assert main(["calibrate", str(half_finished_cv)]) == 0
    out = capsys.readouterr().out
    assert f"{half_finished_cv / 'fold-3'}: not started" in out and "(1 of 3)" in out


def test_a_part_way_epochs_extension_is_named_as_such(half_finished_cv: Path) -> None:
    from andersonn.errors import AndersonnError

    with pytest.raises(AndersonnError, match=r"differs in epochs\); an --epochs extension"):
        crossval.summarize(half_finished_cv)


def test_loading_a_cross_validation_as_one_run_points_to_its_folds(
        half_finished_cv: Path) -> None:
    from andersonn.errors import AndersonnError
    from andersonn.training.runs import load_run

    with pytest.raises(AndersonnError, match=r"a cross-validation.*Ensemble\.from_runs"):
        load_run(half_finished_cv)
