"""Session 17 fixes in training, cross-validation and labels files: a fold killed during its
final stage is resumed into it, time-limit stops are said and stay stopped, one-epoch and
empty-split messages, named value columns with a stray non-number, and message wording."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from andersonn import crossval
from andersonn.data.folds import FoldView, fold_split
from andersonn.data.labelled import (
    LabelTable,
    describe_skipped,
    label_rows,
    labelled_dataset,
    read_label_table,
)
from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.evaluate import read_labelled
from andersonn.training import TrainConfig, train
from andersonn.training import trainer as trainer_module
from andersonn.training.trainer import TrainingInterrupted


def _toy(n: int = 48, splits: np.ndarray | None = None, meta: dict | None = None) -> object:
    """A small separable in-memory dataset (two classes, images (3, 4, 3))."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 3, 4, 3)).astype(np.float32)
    images[:, 0] += 2.0 * labels[:, None, None]
    if splits is None:
        splits = np.zeros(n, np.int8)
        splits[int(0.7 * n):int(0.85 * n)], splits[int(0.85 * n):] = 1, 2
    return types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["a", "b"], ids=[f"m{i}" for i in range(n)],
                                 meta=meta or {"task": "toy"})


def _cfg(**kw: object) -> TrainConfig:
    base = {"task": "toy", "model": "explicit", "depth": 1, "hidden": 8, "epochs": 1,
            "batch_size": 16, "threads": 1, "plots": False, "lr": 1e-2}
    return TrainConfig(**{**base, **kw})


def _history(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- 1: a fold killed during its final stage ----------------------------------------------------

@pytest.fixture
def one_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Fold 1 of a 2-fold cross-validation of the toy set, trained (1 epoch)."""
    from andersonn.training import inputs

    toy = _toy()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    out = tmp_path / "cv"
    crossval.cross_validate(_cfg(), out, folds=2, only=1, progress=False)
    return out, out / "fold-1"


def _resume_fold(out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    crossval.cross_validate(_cfg(), out, folds=2, only=1, resume=True, progress=True)
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
    assert _history(run) == [1]  # only the final stage ran again: no new epoch
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
        assert _history(run) == [1], key


def test_a_kill_during_the_final_stage_leaves_the_run_unfinished(tmp_path, monkeypatch, capsys):
    """The weights and config.json (the finished record) are the final stage's last writes: a
    process killed while it plots (after the test metrics) is resumed into the final stage."""
    from andersonn.training import inputs

    toy = _toy()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    out, run = tmp_path / "cv", tmp_path / "cv" / "fold-1"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_plots", killed)
    with pytest.raises(TrainingInterrupted):
        crossval.cross_validate(_cfg(plots=True), out, folds=2, only=1, progress=False)
    # the weights are written back to back with the config that describes them (calibration)
    assert not (run / "model.safetensors").is_file() and (run / "test_metrics.json").is_file()
    assert json.loads((run / "config.json").read_text())["finished"] is None
    assert not crossval._finished(run, 1)
    monkeypatch.undo()
    monkeypatch.setattr(inputs, "load_task_dataset", lambda *a, **k: toy)
    capsys.readouterr()
    crossval.cross_validate(_cfg(plots=True), out, folds=2, only=1, resume=True, progress=True)
    assert "already finished" not in capsys.readouterr().err
    assert (run / "plots" / "learning_curves.png").is_file() and crossval._finished(run, 1)
    assert _history(run) == [1]


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


# -- 3, 4: time-limit stops and the interrupt message ------------------------------------------

def test_a_time_limit_stop_is_said_without_progress_and_a_resume_stays_stopped(tmp_path, capsys):
    toy, run = _toy(), tmp_path / "run"
    result = train(_cfg(epochs=3, max_time_s=1e-9), run, dataset=toy, progress=False)
    err = capsys.readouterr().err
    assert "stopped after epoch 1 of 3 (max_time_s)" in err and "time limit reached" in err
    assert result.stopped == "stopped after epoch 1 of 3 (max_time_s)"
    assert json.loads((run / "config.json").read_text())["finished"]["stopped"] == "max_time_s"
    again = train(_cfg(epochs=3, max_time_s=1e-9), run, resume=True, dataset=toy,
                  progress=False)
    assert len(again.history) == 1 and _history(run) == [1]  # no extra epoch per resume
    assert "stopped after epoch 1 of 3 (max_time_s)" in capsys.readouterr().err
    longer = train(_cfg(epochs=3), run, resume=True, dataset=toy, progress=False)
    assert _history(run) == [1, 2, 3] and longer.stopped is None  # the limit lifted: it goes on
    assert json.loads((run / "config.json").read_text())["finished"]["stopped"] is None


def test_a_patience_stop_is_said_without_progress(tmp_path, capsys):
    result = train(_cfg(epochs=6, patience=1, lr=1e-12), tmp_path / "run", dataset=_toy(),
                   progress=False)
    assert result.stopped == "stopped after epoch 2 of 6 (patience)"
    assert "stopped after epoch 2 of 6 (patience)" in capsys.readouterr().err


def test_the_interrupt_names_one_epoch_as_one():
    assert str(TrainingInterrupted(Path("r"), 1, 3)) == "interrupted: r holds epoch 1 of 3"
    assert str(TrainingInterrupted(Path("r"), 2, 3)) == "interrupted: r holds epochs 1–2 of 3"
    assert str(TrainingInterrupted(Path("r"), 0, 3)) == \
        "interrupted: r holds no finished epoch of 3"


# -- 5: an empty split ----------------------------------------------------------------------------

def test_an_empty_val_split_names_the_split_the_build_and_the_remedy(tmp_path):
    splits = np.array([0] * 8 + [2] * 2, np.int8)
    built = _toy(10, splits, {"task": "polarity", "cache_key": "abc123", "limit": 10})
    with pytest.raises(AndersonnError) as caught:
        train(_cfg(task="polarity"), tmp_path / "a", dataset=built, progress=False)
    assert str(caught.value) == (
        "too few structures to train on in dataset 'polarity' (build abc123, --limit 10): its "
        "val split is empty (8 train, 0 val, 2 test); train on a larger build (raise --limit)")
    with pytest.raises(AndersonnError, match=r"\(as given\): its train and val splits are "
                                             r"empty \(0 train, 0 val, 10 test\)"):
        train(_cfg(), tmp_path / "b", dataset=_toy(10, np.full(10, 2, np.int8)), progress=False)


# -- 2: a named label column of values with a stray non-number ---------------------------------

def _named_values(tmp_path: Path) -> Path:
    rows = ["smiles,mu (D)"] + [f"C{'C' * i}O,{0.5 + i}" for i in range(6)] + ["CCN,n/a"]
    path = tmp_path / "mu.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_named_value_column_skips_a_non_number_by_its_line(tmp_path):
    path = _named_values(tmp_path)
    table = read_label_table(path, label_column="mu (D)", values=True)
    assert table.kind == "value"
    inputs, labels, names, _, skipped = label_rows(table, bins=[2.5])
    assert names == ["< 2.5", ">= 2.5"] and labels == [0, 0, 1, 1, 1, 1] and len(inputs) == 6
    assert skipped == [{"where": "mu.csv line 8", "reason": "value 'n/a' is not a number"}]
    # without bins it is read as class names, as before
    assert read_label_table(path, label_column="mu (D)").kind == "class"


def test_evaluate_reads_a_named_value_column_for_a_binned_run(tmp_path):
    path = _named_values(tmp_path)
    inputs, labels, skipped = read_labelled(path, "custom", ["< 2.5", ">= 2.5"], [2.5],
                                            label_column="mu (D)")
    assert labels == [0, 0, 1, 1, 1, 1] and len(inputs) == 6
    assert [s["where"] for s in skipped] == ["mu.csv line 8"]
    # a named column of class names still takes the run's classes
    names = tmp_path / "names.csv"
    names.write_text("smiles,verdict\nCCO,>= 2.5\nCC,< 2.5\nCCC,9\n")
    _, labels, skipped = read_labelled(names, "custom", ["< 2.5", ">= 2.5"], [2.5],
                                       label_column="verdict")
    assert labels == [1, 0] and "class '9' is not one of" in skipped[0]["reason"]


def test_bins_on_a_class_column_name_a_row_that_is_not_a_number(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("smiles,kind\nCCO,polar\nCC,apolar\nCCC,1.5\n")
    table = read_label_table(path, label_column="kind", values=True)
    with pytest.raises(ConfigError, match=r"labels are class names \('kind': c\.csv line 2 has "
                                          r"'polar'\)"):
        label_rows(table, bins=[2.5])


# -- 6, 7: small-data, skip-summary, fold and one-class messages --------------------------------

def test_fit_s_small_data_message_speaks_of_validation_not_test():
    inputs = ["CCO", "CC", "CCC", "CO"]
    with pytest.raises(InputError, match=r"^too few usable structures to train and validate on: "
                                         r"class weak \(2\), strong \(2\); each class needs at "
                                         r"least 10"):
        labelled_dataset(inputs, [0, 0, 1, 1], ["weak", "strong"], image="polarity",
                         progress=False, workers=1, split=lambda y: np.zeros(len(y), np.int8))
    with pytest.raises(InputError, match=r"^too few usable structures to train and test on: "):
        labelled_dataset(inputs, [0, 0, 1, 1], ["weak", "strong"], image="polarity",
                         progress=False, workers=1)


def test_the_skip_summary_counts_the_reasons_it_leaves_out():
    skipped = [{"where": f"b.csv line {i}", "reason": "empty input or label"} for i in range(8)]
    line = describe_skipped(skipped)
    assert line.startswith("8 row(s) skipped (b.csv line 0: empty input or label; ")
    assert line.endswith("b.csv line 2: empty input or label; and 5 more)")
    assert describe_skipped(skipped[:3]).endswith("line 2: empty input or label)")
    assert describe_skipped(skipped, limit=1).endswith("label; and 7 more)")


def test_the_fold_refusal_names_the_class():
    labels = np.repeat([0, 1], [22, 6])
    with pytest.raises(ConfigError, match=r"^7 folds need at least 7 structures of every "
                                          r"class; class 'strong' has 6$"):
        fold_split(labels, 7, 1, classes=["weak", "strong"])
    data = types.SimpleNamespace(labels=labels, classes=["weak", "strong"], meta={})
    with pytest.raises(ConfigError, match="class 'strong' has 6"):
        FoldView(data, 7, 1)
    with pytest.raises(ConfigError, match="class 1 has 6"):  # no names: the index
        fold_split(labels, 7, 1)


def test_a_labels_file_of_one_class_is_named():
    table = LabelTable(Path("one.csv"), [("one.csv line 2", "CCO", "polar"),
                                         ("one.csv line 3", "CC", "Polar")], "class", "class")
    with pytest.raises(InputError, match=r"^one.csv: column 'class' names only one class "
                                         r"\('polar'\); a classifier needs two or more$"):
        label_rows(table)
    with pytest.raises(ConfigError, match="two or more distinct names"):  # --classes a,A
        label_rows(table, ["a", "A"])
