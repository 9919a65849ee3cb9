"""Training workflow: the build a run used, resume refusals, run folders, stale temporary files,
Ctrl-C, and calibrating a cross-validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from andersonn.cli import main
from andersonn.data.cache import open_cache, write_cache
from andersonn.errors import AndersonnError, ConfigError, ResumeConflict
from andersonn.training import TrainConfig, train

DIPOLES = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"
FAST = ["--threads", "1", "--workers", "1", "--no-progress", "--hidden", "8"]


def _cfg(**kw: object) -> TrainConfig:
    base = {"task": "polarity", "epochs": 1, "hidden": 8, "batch_size": 16, "threads": 1,
            "plots": False, "evaluate_test": False, "max_iter": 8}
    return TrainConfig(**{**base, **kw})


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = rng.normal(size=(n, 3, 5, 4)).astype(np.float32)
    images[:, 0, :2, :] += 3.0 * (y[:, None, None] - 0.5)
    splits = np.zeros(n, np.int8)
    splits[int(0.7 * n):int(0.85 * n)] = 1
    splits[int(0.85 * n):] = 2
    return images, y, splits


def _build(limit: int | None, n: int, seed: int, latest: bool = True) -> Path:
    """A polarity build in the cache, keyed and described as `andersonn data build polarity
    [--limit N]` keys and describes it (toy images)."""
    from andersonn.data.archives import ARCHIVES
    from andersonn.data.build import _resolve, _spec_dict, cache_key, datasets_root

    task, values, opts, spec, version, _ = _resolve("polarity", None, None)
    key, _ = cache_key(task, thresholds=values, options=opts, limit=limit, seed=0,
                       featurizer_version=version, image_spec=_spec_dict(spec))
    images, y, splits = _images(n, seed)
    directory = datasets_root() / "polarity" / key
    write_cache(directory, images=images, labels=y, ids=[f"q{i}" for i in range(n)],
                splits=splits, classes=list(task.classes),
                meta={"task": "polarity", "key": key, "limit": limit, "seed": 0,
                      "thresholds": values, "options": opts, "featurizer_version": version,
                      "image_spec": _spec_dict(spec), "label_rule": "toy rule",
                      "sources": {k: {"sha256": ARCHIVES[k].sha256} for k in task.archives}})
    if latest:
        (directory.parent / "LATEST").write_text(key + "\n")
    return directory


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANDERSONN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- 1: a run records the build it took, and evaluate / calibrate reopen exactly that one ----
def test_a_run_on_the_latest_build_records_it_and_is_scored_on_it(tmp_path, cache):
    from andersonn.training.runs import calibrate_run, run_build

    _build(None, 100, seed=1, latest=False)  # the full default build: not the run's
    limited = _build(40, 60, seed=2)  # `data build polarity --limit 40`, then `train polarity`
    run = tmp_path / "run"
    train(_cfg(), run, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["cache_key"] == limited.name and config["dataset"]["limit"] == 40
    assert config["train"]["limit"] is None
    assert run_build(config).directory == limited  # (was: the full default build)
    assert calibrate_run(run)["method"] in ("temperature", "none")

    # resumed: on its own build while cached, though another has become the latest
    other = _build(50, 70, seed=3)
    train(_cfg(epochs=2), run, resume=True, progress=False)
    assert json.loads((run / "config.json").read_text())["dataset"]["cache_key"] == limited.name
    # ... and refused on another build once its own is gone
    shutil.rmtree(limited)
    with pytest.raises(ResumeConflict, match="dataset cache_key"):
        train(_cfg(epochs=3), run, resume=True, progress=False)
    with pytest.raises(AndersonnError, match=f"build this run was trained on \\({limited.name}\\)"
                       " is no longer cached; .*data build polarity --limit 40"):
        run_build(config)
    # rebuilt with the same settings: the same key, the same build
    rebuilt = _build(40, 60, seed=2)
    assert run_build(config).directory == rebuilt
    # a build of the recorded settings that is not the recorded build: refused, one line
    config["dataset"]["cache_key"] = "0123456789abcdef"
    with pytest.raises(AndersonnError, match="differs from it"):
        run_build(config)
    assert other.is_dir()


# -- 3: a resume may not change how the epochs were trained ----------------------------------
def test_resume_refuses_other_solver_settings_and_records_eval_changes(tmp_path, cache):
    images, y, splits = _images(80, 0)
    ds = open_cache(write_cache(tmp_path / "toy", images=images, labels=y,
                                ids=[str(i) for i in range(80)], splits=splits,
                                classes=["a", "b"], meta={"task": "polarity"}))
    run = tmp_path / "run"
    train(_cfg(), run, dataset=ds, progress=False)
    for changed, names in (({"solver": "forward", "tol": 1e-4}, "solver, tol"),
                           ({"max_iter": 9, "solver_options": {"m": 3}},
                            "max_iter, solver_options"),
                           ({"backward_tol": 1e-5, "jac_reg": 0.5}, "backward_tol, jac_reg")):
        with pytest.raises(ResumeConflict, match=rf"different {names} \("):
            train(_cfg(epochs=2, **changed), run, resume=True, dataset=ds, progress=False)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    # the evaluation solve may change: config.json says which epochs used which
    train(_cfg(epochs=2, eval_tol=1e-5), run, resume=True, dataset=ds, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["solver"]["eval"]["tol"] == 1e-5 and config["solver"]["train"]["tol"] == 1e-3
    assert config["resumes"] == [{"after_epoch": 1,
                                  "changed": {"epochs": [1, 2], "eval_tol": [None, 1e-5]}}]


# -- 7a, 7b, 7c: what --resume takes for a run ------------------------------------------------
def test_resume_refuses_a_labels_file_for_a_task_run_and_folders_holding_no_run(
        tmp_path, cache, capsys):
    _build(40, 60, seed=2)
    runs = tmp_path / "runs"
    run = runs / "u4"
    assert main(["train", "polarity", "--epochs", "1", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", str(DIPOLES), "--bins", "2.5", "--out", str(run), "--resume",
                 *FAST]) == 2
    assert f"cannot resume {run}: it was trained on task polarity" in capsys.readouterr().err

    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "learning_curves.png").write_bytes(b"png")
    for folder in (runs, run / "plots"):  # trained a new run inside it
        assert main(["train", "polarity", "--out", str(folder), "--resume", *FAST]) == 2
        err = capsys.readouterr().err
        assert f"cannot resume {folder}: it holds no run" in err and len(err.splitlines()) == 1
    assert not (runs / "config.json").exists() and not (run / "plots" / "config.json").exists()
    # an empty folder: --resume starts the run
    (tmp_path / "empty").mkdir()
    assert main(["train", "polarity", "--epochs", "1", "--out", str(tmp_path / "empty"),
                 "--resume", *FAST]) == 0

    # 7c: temporary files of writes killed midway are removed when the run is resumed
    stale = [run / ".model.safetensors.ab12cd34.tmp",
             next((run / "checkpoints").glob("epoch-*")) / ".optimizer.pt.x_y9z8w7.tmp"]
    kept = [run / ".notes.tmp", run / "model.safetensors.tmp", run / "plots" / ".a.b.tmp"]
    for path in stale + kept:
        path.write_bytes(b"\0" * 64)
    assert main(["train", "polarity", "--epochs", "2", "--out", str(run), "--resume",
                 *FAST]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


# -- 7d: Ctrl-C closes the progress bar and says how to go on ---------------------------------
def test_ctrl_c_closes_the_bar_and_names_the_epoch_to_resume_from(tmp_path, cache, capsys,
                                                                  monkeypatch):
    import andersonn.training.trainer as trainer

    _build(40, 60, seed=2)
    calls = {"n": 0}
    real = trainer.stat_values

    def interrupt_in_epoch_2(stats):
        calls["n"] += 1  # twice per step; an epoch is 3 steps of 16 of 42 structures
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return real(stats)

    monkeypatch.setattr(trainer, "stat_values", interrupt_in_epoch_2)
    run = tmp_path / "run"
    assert main(["train", "polarity", "--epochs", "3", "--out", str(run), "--threads", "1",
                 "--hidden", "8", "--batch-size", "16"]) == 130
    err = capsys.readouterr().err
    line = next(part for part in re.split(r"[\r\n]", err) if "interrupted" in part)
    assert line == (f"andersonn: interrupted: {run} holds epoch 1 of 3; `andersonn train "
                    f"polarity --out {run} --resume` continues from epoch 2")
    monkeypatch.setattr(trainer, "stat_values", real)
    assert main(["train", "polarity", "--out", str(run), "--resume", *FAST]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


# -- 7e: calibrate a cross-validation: every fold ---------------------------------------------
def test_calibrate_a_cross_validation_calibrates_every_fold(tmp_path, cache, capsys):
    _build(40, 60, seed=2)
    out = tmp_path / "cv"
    assert main(["train", "polarity", "--folds", "2", "--epochs", "1", "--out", str(out),
                 *FAST]) == 0
    for fold in (1, 2):  # as a run trained before calibration existed
        path = out / f"fold-{fold}" / "config.json"
        config = json.loads(path.read_text())
        config.pop("calibration")
        path.write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["calibrate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'fold-1'}:" in printed and f"{out / 'fold-2'}:" in printed
    assert "summary rewritten" in printed
    for fold in (1, 2):
        assert "calibration" in json.loads((out / f"fold-{fold}" / "config.json").read_text())
    with pytest.raises(ConfigError):  # a fold's folder is still a run of its own
        train(_cfg(), out, progress=False)
