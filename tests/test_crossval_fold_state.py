"""The state of a cross-validation's fold folders: a fold is finished by its final record (test
metrics, calibration, the ``finished`` entry of config.json), not by its weights; a fold killed
during its final stage or part-way through an ``--epochs`` extension is resumed into it, and
predict, calibrate and summarize ask only the finished folds (naming the others). Which folders
are folds, and loading a cross-validation as one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from andersonn import crossval
from andersonn.cli import main
from andersonn.training import trainer as trainer_module
from andersonn.training.trainer import TrainingInterrupted

from helpers import logged_epochs, toy_config, toy_dataset

# --- a fold killed during its final stage --------------------------------------------------------

@pytest.fixture
def one_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Fold 1 of a 2-fold cross-validation of the toy set, trained (1 epoch)."""
    from andersonn.training import inputs

    toy = toy_dataset()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    out = tmp_path / "cv"
    crossval.cross_validate(toy_config(), out, folds=2, only=1, progress=False)
    return out, out / "fold-1"


def _resume_fold(out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    crossval.cross_validate(toy_config(), out, folds=2, only=1, resume=True, progress=True)
    return capsys.readouterr().err


def test_a_fold_missing_its_test_metrics_is_resumed_into_its_final_stage(one_fold, capsys):
    out, run = one_fold
    assert crossval._finished(run, 1)
    test = json.loads((run / "test_metrics.json").read_text())
    (run / "test_metrics.json").unlink()
    assert not crossval._finished(run, 1)
    err = _resume_fold(out, capsys)
    assert "already finished" not in err and "fold 1/2 →" in err
    assert json.loads((run / "test_metrics.json").read_text())["accuracy"] == test["accuracy"]
    assert logged_epochs(run) == [1]  # only the final stage ran again: no new epoch
    assert crossval._finished(run, 1)
    assert "fold 1/2 already finished" in _resume_fold(out, capsys)
    done = json.loads((run / "config.json").read_text())["finished"]
    assert done == {"epoch": 1, "epochs": 1, "stopped": None, "test": True}


def test_a_fold_missing_its_calibration_or_its_finished_record_is_repaired(one_fold, capsys):
    out, run = one_fold
    config = json.loads((run / "config.json").read_text())
    for key in ("calibration", "finished"):
        broken = {**config, "finished": None} if key == "finished" else \
            {k: v for k, v in config.items() if k != key}
        (run / "config.json").write_text(json.dumps(broken))
        assert not crossval._finished(run), key
        assert "already finished" not in _resume_fold(out, capsys), key
        repaired = json.loads((run / "config.json").read_text())
        assert repaired["calibration"] == config["calibration"], key
        assert repaired["finished"] == config["finished"], key
        assert logged_epochs(run) == [1], key


def test_a_kill_during_the_final_stage_leaves_the_run_unfinished(tmp_path, monkeypatch, capsys):
    """The weights and config.json (the finished record) are the final stage's last writes: a
    process killed while it plots (after the test metrics) is resumed into the final stage."""
    from andersonn.training import inputs

    toy = toy_dataset()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    out, run = tmp_path / "cv", tmp_path / "cv" / "fold-1"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_plots", killed)
    with pytest.raises(TrainingInterrupted):
        crossval.cross_validate(toy_config(plots=True), out, folds=2, only=1, progress=False)
    # the weights are written back to back with the config that describes them (calibration)
    assert not (run / "model.safetensors").is_file() and (run / "test_metrics.json").is_file()
    assert json.loads((run / "config.json").read_text())["finished"] is None
    assert not crossval._finished(run, 1)
    monkeypatch.undo()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    capsys.readouterr()
    crossval.cross_validate(toy_config(plots=True), out, folds=2, only=1, resume=True,
                            progress=True)
    assert "already finished" not in capsys.readouterr().err
    assert (run / "plots" / "learning_curves.png").is_file() and crossval._finished(run, 1)
    assert logged_epochs(run) == [1]


def test_a_fold_being_extended_is_not_finished(one_fold):
    """A resume with more epochs rewrites config.json (train.epochs 2) at its start but keeps
    the 1-epoch run's final record until its own final stage: killed in between, the fold is
    not finished (it used to count as finished with the 1-epoch weights)."""
    _, run = one_fold
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    assert not crossval._finished(run, 2) and not crossval._finished(run)
    old = {k: v for k, v in config.items() if k != "finished"}  # a run from before the record
    old["train"]["epochs"] = 1
    (run / "config.json").write_text(json.dumps(old))
    assert crossval._finished(run, 1)
    (run / "test_metrics.json").unlink()
    assert not crossval._finished(run, 1)


# --- finished folds, as predict, calibrate and summarize see them ------------------------------

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


# --- which folders are folds ------------------------------------------------------------------

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
