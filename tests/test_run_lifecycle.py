"""A training run's life cycle from the command line and the API: a new run never overwrites
a finished one, resumes refuse what they cannot continue (fewer epochs than trained, a fold as
a single run) and say which values differ, a cross-validation's ``--epochs`` extension spread
over ``--fold I`` calls, ``calibrate`` on an unfinished run, ``--folds 0``, settings of the
other model, errors under ``torchrun``, the recorded learning rate and the learning curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from andersonn import crossval
from andersonn.cli import main
from andersonn.errors import AndersonnError, ConfigError, ResumeConflict, UnfinishedRunWarning
from andersonn.training import train

from helpers import logged_epochs, toy_config, toy_dataset


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The toy dataset, which `andersonn train polarity` (a run or a cross-validation) then
    trains on, and a cross-validation's summary scores."""
    from andersonn.training import inputs, runs, trainer

    data = toy_dataset()
    monkeypatch.setattr(trainer, "load_task_dataset", lambda *a, **k: data)
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: data)
    monkeypatch.setattr(runs, "run_build", lambda run_config: data)
    return data


def _config_file(tmp_path: Path) -> str:
    """A --config file that keeps CLI runs small (no plots)."""
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"plots": False, "lr": 1e-2}))
    return str(path)


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    """``train polarity`` as a depth-1, hidden-8 explicit network on the toy set, ``extra``
    appended."""
    return ["train", "polarity", "--model", "explicit", "--depth", "1", "--hidden", "8",
            "--batch-size", "16", "--threads", "1", "--no-progress", "--config",
            _config_file(tmp_path), *extra]


def _stop_after(epoch: int) -> Any:
    def stop(record: dict[str, Any]) -> None:
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return stop


# -- 1: a finished run without checkpoints (a shipped run) is never overwritten -------------------

def test_a_finished_run_without_checkpoints_is_refused_not_overwritten(tmp_path, toy):
    import shutil

    run = tmp_path / "shipped"
    train(toy_config(), run, dataset=toy, progress=False)
    (run / "checkpoint.json").unlink()
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").unlink()
    kept = {name: (run / name).read_bytes()
            for name in ("config.json", "model.safetensors", "test_metrics.json")}
    with pytest.raises(AndersonnError, match=rf"^{run} already holds a run \(model.safetensors, "
                                             r"config.json\) with no checkpoint to resume from "
                                             r"\(checkpoint.json\); choose another --out"):
        train(toy_config(), run, dataset=toy, progress=False)
    with pytest.raises(AndersonnError, match=rf"^{run} already holds a run \(model.safetensors, "
                                             r"config.json\) with no checkpoint to continue "
                                             r"from \(checkpoint.json\); choose another --out"):
        train(toy_config(epochs=2), run, resume=True, dataset=toy, progress=False)
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert sorted(p.name for p in run.iterdir()) == sorted(kept)
    # the weights alone are a run too
    (run / "config.json").unlink()
    with pytest.raises(AndersonnError, match=r"already holds a run \(model.safetensors\) with"):
        train(toy_config(), run, dataset=toy, progress=False)


def test_a_new_run_refuses_a_folder_holding_a_runs_config(tmp_path, toy):
    """A run killed before its first epoch ends holds config.json alone: a new run is refused
    (--resume starts it again)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(AndersonnError, match=rf"^{run} already holds a run; pass --resume"):
        train(toy_config(), run, dataset=toy, progress=False)
    assert (run / "config.json").read_text() == "{}"
    train(toy_config(), run, resume=True, dataset=toy, progress=False)
    assert logged_epochs(run) == [1] and (run / "model.safetensors").is_file()


def test_the_cli_refuses_a_shipped_run_in_one_line(tmp_path, toy, capsys):
    run = tmp_path / "shipped"
    assert main(_cli(tmp_path, "--epochs", "1", "--out", str(run))) == 0
    (run / "checkpoint.json").unlink()
    weights = (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(_cli(tmp_path, "--epochs", "2", "--out", str(run), "--resume")) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"andersonn: error: {run} already holds a run (model.safetensors, "
                                "config.json) with no checkpoint to continue from "
                                "(checkpoint.json); choose another --out for a new run"]
    assert (run / "model.safetensors").read_bytes() == weights


# -- 2: an --epochs extension of a cross-validation, one --fold at a time ------------------------

def test_an_epochs_extension_spread_over_fold_calls(tmp_path, toy, capsys):
    out = tmp_path / "cv"
    assert main(_cli(tmp_path, "--epochs", "1", "--out", str(out), "--folds", "3")) == 0
    summary = ("cv.json", "cv.md", "predictions.csv", "plots/confusion.png")
    assert all((out / name).is_file() for name in summary)
    capsys.readouterr()
    longer = _cli(tmp_path, "--epochs", "2", "--out", str(out), "--folds", "3", "--resume")
    assert main([*longer, "--fold", "1"]) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "andersonn: 1 of 3 folds finished; the summary is written when fold-2, fold-3 are")
    assert logged_epochs(out / "fold-1") == [1, 2]
    assert not any((out / name).exists() for name in summary)  # it described the old fold-1
    assert main([*longer, "--fold", "2"]) == 0
    assert "2 of 3 folds finished; the summary is written when fold-3 are" in \
        capsys.readouterr().err
    assert main([*longer, "--fold", "3"]) == 0
    assert "3-fold cross-validation on 48 structures" in capsys.readouterr().out
    assert json.loads((out / "cv.json").read_text())["settings"]["epochs"] == 2
    assert all((out / name).is_file() for name in summary)


def test_a_refused_fold_keeps_the_summary(tmp_path, toy):
    out = tmp_path / "cv"
    crossval.cross_validate(toy_config(), out, folds=2, progress=False)
    with pytest.raises(ResumeConflict):
        crossval.cross_validate(toy_config(epochs=2, hidden=16), out, folds=2, only=1,
                                resume=True, progress=False)
    assert (out / "cv.json").is_file()  # no fold changed


# -- 3: fewer epochs than the run holds ----------------------------------------------------------

def test_resume_refuses_fewer_epochs_than_trained(tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(epochs=3), run, dataset=toy, progress=False)
    config = (run / "config.json").read_text()
    with pytest.raises(ConfigError, match=rf"^{run} already holds 3 epochs; --epochs must be at "
                                          r"least 3$"):
        train(toy_config(epochs=1), run, resume=True, dataset=toy, progress=False)
    assert (run / "config.json").read_text() == config
    train(toy_config(epochs=3), run, resume=True, dataset=toy, progress=False)  # as many: fine
    assert logged_epochs(run) == [1, 2, 3]

    mid = tmp_path / "mid"  # stopped part-way
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(epochs=3), mid, dataset=toy, progress=False, on_epoch=_stop_after(2))
    with pytest.raises(ConfigError, match=r"already holds 2 epochs; --epochs must be at least 2"):
        train(toy_config(epochs=1), mid, resume=True, dataset=toy, progress=False)
    train(toy_config(epochs=2), mid, resume=True, dataset=toy, progress=False)
    done = json.loads((mid / "config.json").read_text())
    assert done["train"]["epochs"] == 2 and done["finished"]["epoch"] == 2


# -- 4: calibrate on an unfinished run does not name itself as the trainer ------------------------

def test_calibrating_an_unfinished_run_does_not_call_itself_its_trainer(tmp_path, toy):
    import os

    from andersonn.fileio import folder_lock, lock_holder
    from andersonn.training import calibrate_run

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(epochs=2), run, dataset=toy, progress=False, on_epoch=_stop_after(1))
    with pytest.warns(UnfinishedRunWarning) as recorded:
        calibrate_run(run, dataset=toy)
    note = str(recorded[0].message)
    assert "still training" not in note and str(os.getpid()) not in note
    assert note.endswith("(finish it with `andersonn train ... --resume`)")
    with folder_lock(run):
        assert lock_holder(run) is None  # this process's own lock


# -- 5: --folds below 2 ---------------------------------------------------------------------------

@pytest.mark.parametrize("folds", ["0", "1", "-2"])
def test_fewer_than_two_folds_are_refused(tmp_path, toy, capsys, folds):
    out = tmp_path / "x"
    for extra in ([], ["--fold", "1"]):
        assert main(_cli(tmp_path, "--out", str(out), "--folds", folds, *extra)) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"andersonn: error: cross-validation needs at least 2 folds (got {folds})"]
    assert not out.exists()


# -- 6, 7: what a refused resume says ------------------------------------------------------------

def test_a_refused_resume_gives_the_old_and_new_values(tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(), run, dataset=toy, progress=False)
    with pytest.raises(ResumeConflict, match=rf"^cannot resume {run}: it was trained with "
                                             r"different lr \(0.01 there, 0.02 now\)$"):
        train(toy_config(epochs=2, lr=2e-2), run, resume=True, dataset=toy, progress=False)
    with pytest.raises(ResumeConflict, match=r"it was trained with different seed, lr \(seed 0 "
                                             r"there, 1 now; lr 0.01 there, 0.02 now\)$"):
        train(toy_config(epochs=2, lr=2e-2, seed=1), run, resume=True, dataset=toy,
              progress=False)
    assert logged_epochs(run) == [1]


def test_a_fold_resumed_as_a_single_run_is_told_how_to_resume_it(tmp_path, toy, capsys):
    out = tmp_path / "cv"
    crossval.cross_validate(toy_config(), out, folds=3, only=1, progress=False)
    fold = out / "fold-1"
    with pytest.raises(ResumeConflict, match=rf"^{fold} is fold 1 of a 3-fold cross-validation: "
                                             rf"resume it with --out {out} --folds 3 --fold 1 "
                                             r"--resume$"):
        train(toy_config(epochs=2), fold, resume=True, dataset=toy, progress=False)
    capsys.readouterr()
    assert main(_cli(tmp_path, "--epochs", "2", "--out", str(fold), "--resume")) == 2
    assert capsys.readouterr().err.strip() == (
        f"andersonn: error: {fold} is fold 1 of a 3-fold cross-validation: resume it with "
        f"--out {out} --folds 3 --fold 1 --resume")
    assert logged_epochs(fold) == [1]


# -- 8: the explicit network's settings on a DEQ -----------------------------------------------

def test_a_deq_resume_ignores_the_explicit_models_settings(tmp_path, toy):
    run = tmp_path / "deq"
    train(toy_config(model="deq"), run, dataset=toy, progress=False)
    train(toy_config(model="deq", epochs=2, depth=3, match_params=True), run, resume=True,
          dataset=toy, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert logged_epochs(run) == [1, 2]
    assert config["resumes"] == [{"after_epoch": 1, "changed": {"epochs": [1, 2]}}]
    explicit = tmp_path / "explicit"  # where they apply, they are refused as before
    train(toy_config(), explicit, dataset=toy, progress=False)
    with pytest.raises(ResumeConflict, match=r"different depth \(1 there, 3 now\)$"):
        train(toy_config(epochs=2, depth=3), explicit, resume=True, dataset=toy, progress=False)


def test_a_deq_run_given_the_explicit_models_settings_warns(tmp_path, toy, capsys):
    run = tmp_path / "deq"
    argv = ["train", "polarity", "--model", "deq", "--hidden", "8", "--batch-size", "16",
            "--threads", "1", "--no-progress", "--config", _config_file(tmp_path), "--epochs",
            "1", "--out", str(run)]
    assert main([*argv, "--depth", "3", "--match-params"]) == 0
    assert ("andersonn: warning: depth 3, match_params are ignored: they apply to the explicit "
            "model, not to a DEQ") in capsys.readouterr().err.splitlines()
    assert main([*argv[:-3], "2", "--out", str(run), "--resume"]) == 0  # stored: no warning
    assert "ignored" not in capsys.readouterr().err


def test_folds_of_a_deq_may_differ_in_the_explicit_models_settings(tmp_path):
    def fold(i: int, model: str, depth: int) -> Path:
        run = tmp_path / model / f"fold-{i}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(
            {"train": {"model": model, "depth": depth, "folds": 2, "fold": i}}))
        return run

    crossval._check_same([fold(1, "deq", 6), fold(2, "deq", 3)])
    with pytest.raises(AndersonnError, match=r"differs in depth"):
        crossval._check_same([fold(1, "explicit", 6), fold(2, "explicit", 3)])


# -- 9: errors under torchrun --------------------------------------------------------------------

def test_only_rank_0_prints_an_error_and_every_rank_exits_with_it(monkeypatch, capsys):
    argv = ["train", "polarity", "--fold", "1"]
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 2
    assert capsys.readouterr().err == "andersonn: error: --fold I needs --folds K\n"


# -- 10: the learning rate in metrics.jsonl (docs/training.md) ------------------------------------

def test_the_recorded_lr_is_the_rate_after_the_epochs_last_step(tmp_path, toy):
    run = tmp_path / "run"
    result = train(toy_config(epochs=2, lr=1e-2), run, dataset=toy, progress=False)
    # cosine over 2 epochs of equal steps: halfway after epoch 1, zero after the last
    assert [h["lr"] for h in result.history] == pytest.approx(
        [1e-2 * 0.5 * (1 + math.cos(math.pi / 2)), 0.0], abs=1e-12)
    docs = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert "learning rate after the epoch's last scheduler step" in " ".join(docs.split())


# -- 11: the learning curves --------------------------------------------------------------------

def test_the_learning_curves_have_whole_epochs_and_a_title_clear_of_the_panels(tmp_path,
                                                                               monkeypatch):
    from andersonn.training import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.5 + e / 10,
                "val_acc": 0.5 + e / 12, "val_balanced_acc": 0.5 + e / 13,
                "wall_time_s": 1.5 * e} for e in (1, 2, 3)]
    plots.plot_learning_curves(history, tmp_path / "lc.png", title="polarity · deq · anderson")
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not top.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()
    for ax in fig.axes[:2]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    import matplotlib.pyplot as plt

    plt.close(fig)
