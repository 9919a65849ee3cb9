"""Training defects fixed: a run's own build, --config with labels settings and on --resume,
refused optimizer changes, tasks against labels files, cross-validation resumes, interrupted
resumes, single-class data, class-name spellings, ambiguous columns, config types, run
directories, early resume checks, shared builds and unreadable labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from andersonn.cli import main
from andersonn.data.cache import open_cache, write_cache
from andersonn.data.labelled import build_labelled_dataset, label_rows, read_label_table
from andersonn.errors import AndersonnError, ConfigError, InputError, ResumeConflict
from andersonn.training import TrainConfig, train

DIPOLES = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"
FAST = ["--threads", "1", "--workers", "1", "--no-progress", "--hidden", "8"]


def _toy(directory: Path, n: int = 80, labels: np.ndarray | None = None) -> object:
    """A tiny separable two-class dataset cache, opened."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n) if labels is None else labels
    images = rng.normal(size=(n, 3, 5, 4)).astype(np.float32)
    images[:, 0, :2, :] += 3.0 * (y[:, None, None] - 0.5)
    splits = np.zeros(n, np.int8)
    splits[int(0.7 * n):int(0.85 * n)] = 1
    splits[int(0.85 * n):] = 2
    return open_cache(write_cache(directory, images=images, labels=y,
                                  ids=[f"m{i}" for i in range(n)], splits=splits,
                                  classes=["a", "b"],
                                  meta={"task": "polarity", "featurizer_version": None,
                                        "image_spec": None, "label_rule": "toy rule"}))


def _cfg(**kw: object) -> TrainConfig:
    base = {"task": "polarity", "epochs": 1, "hidden": 8, "batch_size": 16, "threads": 1,
            "plots": False, "evaluate_test": False}
    return TrainConfig(**{**base, **kw})


@pytest.fixture()
def toy_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The CLI's `train polarity` trains on a toy dataset."""
    import andersonn.training.trainer as trainer

    ds = _toy(tmp_path / "cache")
    monkeypatch.setattr(trainer, "load_task_dataset",
                        lambda c, info=None, progress=True, key=None: ds)
    return ds


# -- 1: evaluate / calibrate use the run's own build -----------------------------------------
def test_a_runs_build_is_its_own_not_the_labels_file_as_it_is_now(tmp_path, monkeypatch):
    from andersonn.training.runs import run_build

    monkeypatch.setenv("ANDERSONN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "d.csv"
    path.write_text(DIPOLES.read_text())
    built = build_labelled_dataset(path, bins=[2.5], progress=False, workers=1)
    key = built.meta["cache_key"]
    run_config = {"train": {"labels": str(path), "bins": [2.5]},
                  "dataset": {"cache_key": key}}
    path.write_text(DIPOLES.read_text() + "CCCC,0.0\n")  # edited after training
    assert run_build(run_config).directory == built.directory
    path.unlink()  # gone: the cached build still serves
    assert len(run_build(run_config)) == 48
    path.write_text(DIPOLES.read_text() + "CCCC,0.0\n")
    with pytest.raises(InputError, match=r"d.csv: the labels file .*changed since the run"):
        run_build({**run_config, "dataset": {"cache_key": "0123456789abcdef"}})


# -- 2, 5, 14: labels settings in a config file; tasks against labels files ------------------
def test_config_file_labels_settings_and_a_task_against_a_labels_file(tmp_path, capsys):
    first = tmp_path / "a" / "first.csv"  # an identical copy built first: the build is shared
    first.parent.mkdir()
    first.write_text(DIPOLES.read_text())
    build_labelled_dataset(first, bins=[2.5], classes=["weak", "strong"], progress=False,
                           workers=1)
    mine = tmp_path / "mine.csv"
    mine.write_text(DIPOLES.read_text())
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"bins": [2.5], "classes": ["weak", "strong"], "epochs": 1}))
    run = tmp_path / "run"
    assert main(["train", str(mine), "--config", str(config), "--out", str(run), *FAST]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["classes"] == ["weak", "strong"] and record["thresholds"] == [2.5]
    assert record["dataset"]["sources"]["labels"]["file"] == str(mine.resolve())
    assert record["label_rule"].startswith("mine.csv column")
    # its test split from the shared build, whose own rule names first.csv
    assert main(["evaluate", str(run)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["train", "polarity", "--resume", "--out", str(run), *FAST]) == 2
    assert "cannot resume" in capsys.readouterr().err
    # a relative labels path in a config file is taken from the config file's folder
    (tmp_path / "sub").mkdir()
    relative = tmp_path / "sub" / "rel.json"
    relative.write_text(json.dumps({"labels": "../mine.csv", "bins": [2.5]}))
    assert TrainConfig.from_json(relative).labels == str(mine.resolve())
    assert main(["train", "polarity", "--config", str(relative), "--out",
                 str(tmp_path / "x"), *FAST]) == 2
    assert "names a labels file" in capsys.readouterr().err


# -- 3, 4, 11: --config on --resume, refused optimizer changes, the explicit model's solver --
def test_config_file_on_resume_and_refused_changes(tmp_path, toy_cli, capsys):
    run = tmp_path / "run"
    assert main(["train", "polarity", "--model", "explicit", "--solver", "broyden",
                 "--epochs", "1", "--out", str(run), *FAST]) == 0
    assert "solver broyden is ignored" in capsys.readouterr().err
    longer = tmp_path / "longer.json"
    longer.write_text(json.dumps({"epochs": 2}))
    assert main(["train", "polarity", "--resume", "--config", str(longer), "--out", str(run),
                 *FAST]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps({"epochs": 3, "hidden": 16}))
    capsys.readouterr()
    assert main(["train", "polarity", "--resume", "--config", str(wider), "--out", str(run),
                 "--no-progress"]) == 2
    assert "different hidden" in capsys.readouterr().err
    for flag, value in (("--lr", "0.5"),):
        assert main(["train", "polarity", "--resume", "--epochs", "3", flag, value, "--out",
                     str(run), "--no-progress"]) == 2
        assert "different lr" in capsys.readouterr().err
    decay = tmp_path / "decay.json"
    decay.write_text(json.dumps({"epochs": 3, "weight_decay": 0.1}))
    assert main(["train", "polarity", "--resume", "--config", str(decay), "--out", str(run),
                 "--no-progress"]) == 2
    assert "different weight_decay" in capsys.readouterr().err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


# -- 6: a cross-validation resumed with another fold count ----------------------------------
def test_cross_validation_resume_refuses_folds_of_other_settings(tmp_path, monkeypatch):
    import andersonn.training.inputs as inputs
    from andersonn.crossval import cross_validate

    ds = _toy(tmp_path / "cache", n=60)
    monkeypatch.setattr(inputs, "load_task_dataset",
                        lambda c, info=None, progress=True, key=None: ds)
    out = tmp_path / "cv"
    cross_validate(_cfg(), out, folds=3, only=1, progress=False)
    with pytest.raises(ResumeConflict, match="fold-1: it was trained with different folds"):
        cross_validate(_cfg(), out, folds=4, resume=True, progress=False)
    with pytest.raises(ResumeConflict, match="different hidden"):
        cross_validate(_cfg(hidden=16), out, folds=3, resume=True, progress=False)
    assert not (out / "fold-2").exists()
    # 12: a cross-validation is not a single run's folder, nor the other way round
    with pytest.raises(ConfigError, match="holds a cross-validation"):
        train(_cfg(), out, dataset=ds, progress=False)
    with pytest.raises(ConfigError, match="holds a single run"):
        cross_validate(_cfg(), out / "fold-1", folds=3, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        train(_cfg(), tmp_path / "file", dataset=ds, progress=False)


# -- 7: an interrupted resume keeps the finished run's final fields -------------------------
def test_an_interrupted_resume_keeps_the_finished_runs_calibration(tmp_path):
    ds = _toy(tmp_path / "cache")
    run = tmp_path / "run"
    train(_cfg(epochs=1), run, dataset=ds, progress=False)
    before = json.loads((run / "config.json").read_text())
    assert "calibration" in before and before["best_epoch"] == 1

    def interrupt(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(epochs=3), run, resume=True, dataset=ds, progress=False,
              on_epoch=interrupt)
    after = json.loads((run / "config.json").read_text())
    assert after["calibration"] == before["calibration"]
    assert after["best_epoch"] == 1 and after["best_val_acc"] == before["best_val_acc"]


# -- 8: a single-class dataset ---------------------------------------------------------------
def test_a_dataset_without_a_class_in_its_train_split_is_refused(tmp_path):
    ds = _toy(tmp_path / "cache", n=40, labels=np.zeros(40, dtype=np.int64))
    with pytest.raises(AndersonnError, match=r"too few structures to train on.*class b \(0\)"):
        train(_cfg(), tmp_path / "run", dataset=ds, progress=False)
    assert not (tmp_path / "run").exists()


# -- 9, 10, 15: class names, ambiguous columns, unknown labels, latin-1 ---------------------
def test_class_names_differing_in_case_or_number_spelling_are_one_class(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("smiles,class\nC,Polar\nCC,polar\nCCC,apolar\nCCCC,POLAR\nCO,1\n")
    _, labels, names, _, _ = label_rows(read_label_table(path))
    assert names == ["1", "apolar", "Polar"]  # sorted, each as first spelt
    assert [names[i] for i in labels] == ["Polar", "Polar", "apolar", "Polar", "1"]
    numbers = tmp_path / "n.csv"
    numbers.write_text("smiles,label\nC,1\nCC,1.0\nCCC,0\nCCCC,2\n")
    _, labels, names, _, _ = label_rows(read_label_table(numbers))
    assert names == ["0", "1", "2"] and labels == [1, 1, 0, 2]
    with pytest.raises(ConfigError, match="distinct names"):
        label_rows(read_label_table(path), classes=["polar", "Polar"])
    with pytest.raises(InputError, match=r"labels '1', '0', '2' are not among the classes "
                                         r"low, high"):
        label_rows(read_label_table(numbers), classes=["low", "high"])


def test_ambiguous_label_columns_are_refused_and_latin1_is_read(tmp_path):
    for header, message in (("smiles,gap,dipole", r"2 value columns \(dipole, gap\)"),
                            ("smiles,label,class", r"2 class columns \(class, label\)"),
                            ("smiles,input,class", r"2 input columns \(input, smiles\)")):
        path = tmp_path / "a.csv"
        path.write_text(f"{header}\nC,1,2\n")
        with pytest.raises(InputError, match=message):
            read_label_table(path)
    latin = tmp_path / "l.csv"
    latin.write_bytes("smiles,class\nC,caf\xe9\nCC,th\xe9\n".encode("cp1252"))
    table = read_label_table(latin)
    assert [raw for _, _, raw in table.rows] == ["café", "thé"]


# -- 11: config types and ranges -------------------------------------------------------------
@pytest.mark.parametrize(("fields", "message"), [
    ({"epochs": "1"}, "epochs must be an integer"),
    ({"epochs": 1.7}, "epochs must be an integer"),
    ({"epochs": True}, "epochs must be an integer"),
    ({"lr": "0.1"}, "lr must be a finite number"),
    ({"label_smoothing": 2}, r"label_smoothing must be in \[0, 1\)"),
    ({"threads": -1}, "threads must be >= 1"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ({"grad_clip": -1}, "grad_clip must be >= 0"),
    ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
    ({"bf16": "yes"}, "bf16 must be true or false"),
    ({"backward": "magic"}, "unknown backward"),
])
def test_config_types_and_ranges_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(fields)


def test_cli_refuses_negative_threads(tmp_path, capsys):
    assert main(["train", "polarity", "--threads", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "threads must be >= 1" in capsys.readouterr().err


# -- 13: a resume of another task is refused before its dataset is loaded -------------------
def test_resume_of_another_task_is_refused_before_loading(tmp_path, monkeypatch):
    import andersonn.training.trainer as trainer

    ds = _toy(tmp_path / "cache")
    run = tmp_path / "run"
    train(_cfg(), run, dataset=ds, progress=False)

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(trainer, "load_task_dataset", no_load)
    with pytest.raises(ResumeConflict, match="different task"):
        train(_cfg(task="crystal-gap", epochs=2), run, resume=True, progress=False)


def test_no_progress_reaches_the_dataset_build(monkeypatch):
    import andersonn.data as data
    from andersonn.training.inputs import load_task_dataset

    seen = {}

    def missing(*args: object, **kwargs: object) -> None:
        raise AndersonnError("not built")

    def build(*args: object, **kwargs: object) -> str:
        seen.update(kwargs)
        return "built"

    monkeypatch.setattr(data, "load_dataset", missing)
    monkeypatch.setattr(data, "build_dataset", build)
    assert load_task_dataset(_cfg(limit=10), progress=False) == "built"
    assert seen["progress"] is False
