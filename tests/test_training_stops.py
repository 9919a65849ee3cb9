"""Why training stopped early, and saying so: a time limit (``max_time_s``, ``--max-time``) or
patience stop is named without a progress bar and in train's last line, a resume of a stopped
run stays stopped until the limit is lifted, and a run of all its epochs names no stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from andersonn.cli import main
from andersonn.training import train
from andersonn.training import trainer as trainer_module

from helpers import logged_epochs, toy_config, toy_dataset

# --- the time limit -----------------------------------------------------------------------------

def test_a_time_limit_stop_is_said_without_progress_and_a_resume_stays_stopped(tmp_path, capsys):
    toy, run = toy_dataset(), tmp_path / "run"
    result = train(toy_config(epochs=3, max_time_s=1e-9), run, dataset=toy, progress=False)
    err = capsys.readouterr().err
    assert "stopped after epoch 1 of 3 (max_time_s)" in err and "time limit reached" in err
    assert result.stopped == "stopped after epoch 1 of 3 (max_time_s)"
    assert json.loads((run / "config.json").read_text())["finished"]["stopped"] == "max_time_s"
    again = train(toy_config(epochs=3, max_time_s=1e-9), run, resume=True, dataset=toy,
                  progress=False)
    assert len(again.history) == 1 and logged_epochs(run) == [1]  # no extra epoch per resume
    assert "stopped after epoch 1 of 3 (max_time_s)" in capsys.readouterr().err
    longer = train(toy_config(epochs=3), run, resume=True, dataset=toy, progress=False)
    assert logged_epochs(run) == [1, 2, 3]  # the limit lifted: it goes on
    assert longer.stopped is None
    assert json.loads((run / "config.json").read_text())["finished"]["stopped"] is None


def test_max_time_reaches_the_config_and_the_last_line_says_why_training_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(trainer_module, "load_task_dataset", lambda *a, **k: toy_dataset())
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
    monkeypatch.setattr(trainer_module, "load_task_dataset", lambda *a, **k: toy_dataset())
    config = tmp_path / "quiet.json"
    config.write_text(json.dumps({"plots": False}))
    run = tmp_path / "run"
    assert main(["train", "polarity", "--model", "explicit", "--depth", "1", "--hidden", "8",
                 "--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
                 "--config", str(config), "--out", str(run)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "stopped" not in last and last.endswith(f" s → {run}")


# --- patience --------------------------------------------------------------------------------

def test_a_patience_stop_is_said_without_progress(tmp_path, capsys):
    result = train(toy_config(epochs=6, patience=1, lr=1e-12), tmp_path / "run",
                   dataset=toy_dataset(), progress=False)
    assert result.stopped == "stopped after epoch 2 of 6 (patience)"
    assert "stopped after epoch 2 of 6 (patience)" in capsys.readouterr().err


def test_a_patience_stop_after_one_epoch_says_one_epoch(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    result = train(toy_config(epochs=6, patience=1, lr=1e-12), tmp_path / "run",
                   dataset=toy_dataset(), progress=False)
    err = capsys.readouterr().err
    assert "andersonn: no validation improvement for 1 epoch (best: epoch 1); stopped after " \
           "epoch 2 of 6 (patience)" in err
    assert "1 epochs" not in err and result.stopped == "stopped after epoch 2 of 6 (patience)"
