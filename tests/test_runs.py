"""Using a run: an unfinished run (stopped after a checkpoint, before model.safetensors) is
still usable, with a one-line warning that says how far it trained and that its probabilities
are not calibrated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from andersonn.cli import main
from andersonn.errors import UnfinishedRunWarning
from andersonn.training import TrainConfig, load_run, train

from helpers import tiny_polarity_dataset


def _interrupted_run(tmp_path):
    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"

    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    cfg = TrainConfig(task="polarity", epochs=2, hidden=8, batch_size=4, threads=1, plots=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, dataset=dataset, progress=False, on_epoch=stop)
    assert not (run / "model.safetensors").exists()
    return run


def test_an_unfinished_run_is_used_with_a_warning(tmp_path, capsys):
    run = _interrupted_run(tmp_path)
    note = (rf"{run}: training has not finished \(checkpoint after epoch 1 of 2\); using its "
            r"best weights so far, from epoch 1, with uncalibrated probabilities \(finish it")
    with pytest.warns(UnfinishedRunWarning, match=note):
        _model, config = load_run(run)
    assert "calibration" not in config
    with pytest.warns(UnfinishedRunWarning):  # the CLI's warnings can be recorded
        assert main(["predict", str(run), "CCO", "--no-progress"]) == 0
    assert "CCO" in capsys.readouterr().out
    # the command line shows it as one line, without the source line that raised it
    done = subprocess.run([sys.executable, "-m", "andersonn", "predict", str(run), "CCO",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warning_lines = [line for line in done.stderr.splitlines() if "has not finished" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("andersonn: warning: ")
    assert "UnfinishedRunWarning" not in done.stderr and "warn_user" not in done.stderr


def test_the_warning_points_at_the_users_line(tmp_path):
    from andersonn.predict import Classifier

    run = _interrupted_run(tmp_path)
    with pytest.warns(UnfinishedRunWarning) as recorded:
        Classifier.load(run)
    assert recorded[0].filename == __file__


def test_a_finished_run_loads_without_the_warning(tmp_path, recwarn):
    dataset = tiny_polarity_dataset(tmp_path)
    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False)
    train(cfg, tmp_path / "run", dataset=dataset, progress=False)
    load_run(tmp_path / "run")
    assert not [w for w in recwarn if issubclass(w.category, UnfinishedRunWarning)]


def test_a_run_killed_in_its_final_stage_and_a_missing_folder_are_named(tmp_path):
    import json

    from andersonn.errors import AndersonnError

    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"
    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False)
    train(cfg, run, dataset=dataset, progress=False)
    # as if killed in the final stage: the epoch is checkpointed, the final files are not there
    (run / "model.safetensors").unlink()
    config = json.loads((run / "config.json").read_text())
    for key in ("calibration", "finished"):
        config.pop(key, None)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(UnfinishedRunWarning, match=r"training has not finished \(1 epoch "
                                                  r"trained; its final stage did not complete\)"):
        load_run(run)
    with pytest.raises(AndersonnError, match="no such run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(AndersonnError, match="a file, not a run folder"):
        load_run(run / "metrics.jsonl")


def test_weights_newer_than_their_config_are_used_with_a_warning(tmp_path):
    """Killed between model.safetensors and the config.json that describes it (its first end):
    the weights are used, flagged as uncalibrated and unfinished."""
    import json

    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"
    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False)
    train(cfg, run, dataset=dataset, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["finished"] = None  # as written before the final stage
    config.pop("calibration")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(UnfinishedRunWarning, match=r"\(1 epoch trained; its final stage did not "
                                                  r"complete\); using its model.safetensors, "
                                                  r"which may not be the one config.json "
                                                  r"describes, with uncalibrated"):
        load_run(run)


def test_a_run_whose_extension_stopped_says_so(tmp_path, recwarn):
    """A --resume to more epochs stopped after a checkpoint: model.safetensors and config.json
    are still the earlier end's, and loading says the run trained on past them."""
    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"
    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False)
    train(cfg, run, dataset=dataset, progress=False)
    load_run(run)
    assert not [w for w in recwarn if issubclass(w.category, UnfinishedRunWarning)]

    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    longer = TrainConfig(task="polarity", epochs=2, hidden=8, batch_size=4, threads=1,
                         plots=False)
    with pytest.raises(KeyboardInterrupt):
        train(longer, run, resume=True, dataset=dataset, progress=False, on_epoch=stop)
    with pytest.warns(UnfinishedRunWarning, match=r"\(2 epochs trained; its final stage did "
                                                  r"not complete\); using its model.safetensors"):
        _model, config = load_run(run)
    assert config["finished"]["epoch"] == 1 and config["calibration"]
    train(longer, run, resume=True, dataset=dataset, progress=False)  # finishing it ends it
    recwarn.clear()
    load_run(run)
    assert not [w for w in recwarn if issubclass(w.category, UnfinishedRunWarning)]
