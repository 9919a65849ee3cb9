"""Training: learning a separable toy set, checkpoints, resume after kill -9, metrics, config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.data.cache import open_cache, write_cache
from andersonn.errors import AndersonnError, ConfigError
from andersonn.training import TrainConfig, evaluate, load_run, train
from andersonn.training.checkpoint import latest_checkpoint, load_checkpoint
from andersonn.training.metrics import classification_report, confusion_matrix

torch.set_num_threads(1)


def make_cache(directory: Path, n: int = 400, k: int = 2, seed: int = 0, signal: float = 3.0
               ) -> Path:
    """A tiny separable dataset (class shifts channel 0 of a few atoms) written as a cache."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    images = rng.normal(size=(n, 3, 5, 4)).astype(np.float32)
    images[:, 0, :2, :] += signal * (labels[:, None, None] - (k - 1) / 2)
    splits = np.zeros(n, np.int8)
    splits[int(0.7 * n):int(0.85 * n)] = 1
    splits[int(0.85 * n):] = 2
    return write_cache(directory, images=images, labels=labels, ids=[f"m{i}" for i in range(n)],
                       splits=splits, classes=[f"class{i}" for i in range(k)],
                       meta={"task": "toy", "featurizer_version": None, "image_spec": None,
                             "label_rule": "toy rule"})


def cfg(**kw: object) -> TrainConfig:
    base = {"task": "toy", "epochs": 3, "hidden": 8, "batch_size": 16, "lr": 1e-2, "threads": 1,
            "seed": 1, "plots": False}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> object:
    return open_cache(make_cache(tmp_path_factory.mktemp("toy") / "cache"))


@pytest.mark.parametrize("model", ["deq", "explicit"])
def test_learns_separable_toy_set(toy: object, tmp_path: Path, model: str) -> None:
    result = train(cfg(model=model, depth=3, plots=True), tmp_path / "run", dataset=toy,
                   progress=False)
    assert max(h["val_acc"] for h in result.history) >= 0.9
    assert result.test_metrics["accuracy"] >= 0.85
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "test_metrics.json",
                 "plots/learning_curves.png", "plots/confusion_matrix.png"):
        assert (run / name).is_file(), name
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "lr",
                "epoch_time_s", "wall_time_s", "fwd_nfev", "bwd_nfev", "fwd_residual"):
        assert key in lines[0]
    tm = json.loads((run / "test_metrics.json").read_text())
    assert set(tm["per_class"]) == {"class0", "class1"}
    assert np.array(tm["confusion_matrix"]).sum() == tm["n"]
    if model == "deq":
        assert lines[0]["fwd_nfev"] > 1 and lines[0]["bwd_nfev"] > 0
        assert tm["solver"]["fwd_nfev"] > 1
        assert (run / "plots/residuals.png").is_file()
    loaded, rc = load_run(run)
    assert rc["classes"] == ["class0", "class1"] and rc["label_rule"] == "toy rule"
    x = torch.from_numpy(np.array(toy.images[:8]))
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-4)


def test_evaluate_other_solver_restores(toy: object, tmp_path: Path) -> None:
    result = train(cfg(epochs=1), tmp_path / "run", dataset=toy, progress=False,)
    model = result.model
    before = (model.solver_name, dict(model.solver_options))
    test = np.flatnonzero(toy.splits == 2)
    m = evaluate(model, toy.images[test], toy.labels[test], solver="forward",
                 solver_options={"tol": 1e-4, "max_iter": 80})
    assert 0.0 <= m["accuracy"] <= 1.0 and m["fwd_nfev"] > 1 and m["samples_per_s"] > 0
    assert (model.solver_name, model.solver_options) == before


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


_KILL_SCRIPT = """
import os, signal, sys
from andersonn.data.cache import open_cache
from andersonn.training import TrainConfig, train
cfg = TrainConfig(**{cfg!r})
def stop(record):
    if record["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
train(cfg, {run!r}, dataset=open_cache({cache!r}), progress=False, on_epoch=stop)
"""


@pytest.mark.parametrize("warm_start", [False, True])
def test_resume_after_kill9_equals_uninterrupted(toy: object, tmp_path: Path,
                                                 warm_start: bool) -> None:
    c = cfg(epochs=4, warm_start=warm_start)
    full = train(c, tmp_path / "full", dataset=toy, progress=False)
    run = tmp_path / "killed"
    script = _KILL_SCRIPT.format(cfg=c.to_dict(), run=str(run), cache=str(toy.directory))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert latest_checkpoint(run).name == "epoch-0002"
    assert not (run / "model.safetensors").exists()
    saved = load_checkpoint(latest_checkpoint(run))
    assert saved["state"]["epoch"] == 2 and len(saved["state"]["history"]) == 2
    # the warm-start table travels with the checkpoint: every training sample has a state
    assert (saved["warm_states"] is not None) == warm_start
    if warm_start:
        assert bool((saved["warm_states"].flatten(1).abs().sum(1) > 0).all())
    with pytest.raises(AndersonnError, match="--resume"):
        train(c, run, dataset=toy, progress=False)
    resumed = train(c, run, resume=True, dataset=toy, progress=False)
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = ("train_time_s", "val_time_s", "epoch_time_s", "wall_time_s", "samples_per_s")
    assert ([{k: v for k, v in r.items() if k not in strip} for r in full.history]
            == [{k: v for k, v in r.items() if k not in strip} for r in resumed.history])
    assert full.test_metrics["accuracy"] == resumed.test_metrics["accuracy"]


def test_resume_refuses_a_run_on_other_data(toy: object, tmp_path: Path) -> None:
    c = cfg(epochs=2)
    train(c, tmp_path / "run", dataset=toy, progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["featurizer_version"], config["dataset"]["n"] = "0.9.0", 123
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="featurizer_version, dataset n"):
        train(c, tmp_path / "run", resume=True, dataset=toy, progress=False)
    with pytest.raises(ConfigError, match="different hidden"):
        train(cfg(epochs=2, hidden=4), tmp_path / "run", resume=True, dataset=toy,
              progress=False)


def test_same_seed_repeatable(toy: object, tmp_path: Path) -> None:
    r1 = train(cfg(epochs=1, model="explicit"), tmp_path / "a", dataset=toy, progress=False)
    r2 = train(cfg(epochs=1, model="explicit"), tmp_path / "b", dataset=toy, progress=False)
    assert r1.history[0]["train_loss"] == r2.history[0]["train_loss"]


def test_config_unknown_key_and_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochs": 2, "learning_rate": 0.1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_json(bad)
    assert main(["train", "polarity", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"epochs": 2, "solver": "broyden"}))
    c = TrainConfig.from_json(good, epochs=5)
    assert (c.epochs, c.solver) == (5, "broyden")
    with pytest.raises(ConfigError):
        TrainConfig(solver="newton")
    with pytest.raises(ConfigError):
        TrainConfig(model="transformer")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError):
        TrainConfig.from_json(broken)


def test_metrics_from_confusion_matrix() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0]), 3)
    rep = classification_report(cm, ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert rep["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert rep["per_class"]["b"]["f1"] == pytest.approx(0.8)
    lo, hi = rep["accuracy_ci95"]
    assert lo < 4 / 6 < hi


def test_wilson_interval_matches_the_closed_form_and_its_limits() -> None:
    from andersonn.training.metrics import wilson_interval

    # 8 of 10: centre (0.8 + z²/20) / (1 + z²/10), half-width z·sqrt(0.016 + z²/400) / (1 + z²/10)
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert wilson_interval(0, 20)[0] == 0.0 and 0.15 < wilson_interval(0, 20)[1] < 0.17
    assert wilson_interval(20, 20)[1] == 1.0
    # a polarity test split of 800 at 0.946: about ±1.6 points, not symmetric
    assert wilson_interval(757, 800) == pytest.approx((0.92838, 0.95985), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_cli_train_writes_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = make_cache(tmp_path / "cache", n=120)
    import andersonn.training.trainer as trainer

    monkeypatch.setattr(trainer, "load_task_dataset",
                        lambda c, info=None, progress=True, key=None: open_cache(cache))
    out = tmp_path / "run"
    rc = main(["train", "polarity", "--model", "explicit", "--epochs", "1", "--out", str(out),
               "--batch-size", "16", "--hidden", "8", "--threads", "1", "--no-progress"])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 16
    rc = main(["train", "polarity", "--epochs", "2", "--out", str(out), "--resume",
               "--no-progress"])
    assert rc == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert os.path.exists(out / "test_metrics.json")


def test_metal_vs_nonmetal_balanced_accuracy_from_three_classes() -> None:
    from andersonn.training.metrics import classification_report

    cm = [[191, 37, 5], [65, 203, 25], [2, 12, 87]]  # metal, semiconductor, insulator
    report = classification_report(cm, ["metal", "semiconductor", "insulator"])
    metal_recall = 191 / 233
    nonmetal_recall = (203 + 25 + 12 + 87) / (293 + 101)
    expected = (metal_recall + nonmetal_recall) / 2
    assert abs(report["metal_vs_nonmetal_balanced_accuracy"] - expected) < 1e-12
    assert "metal_vs_nonmetal_balanced_accuracy" not in classification_report(cm, ["a", "b", "c"])


def test_constant_channel_is_not_blown_up_by_normalisation() -> None:
    import torch

    from andersonn.training.inputs import channel_stats

    x = torch.randn(16, 3, 4, 5)
    x[:, 1] = 0.25  # constant over the training split
    mean, std = channel_stats(x)
    assert torch.allclose(mean[1], torch.tensor(0.25)) and std[1] == 1.0
    assert torch.allclose(std[0], x[:, 0].double().std().float(), rtol=1e-5)


def test_mean_residual_trace_keeps_stopped_samples_at_their_last_value() -> None:
    from types import SimpleNamespace

    from andersonn.training.evaluation import mean_trace

    nan = float("nan")
    trace = torch.tensor([[1.0, 0.1, nan, nan], [1.0, 0.5, 0.2, 0.05]])
    got = mean_trace(SimpleNamespace(trace=trace))
    assert np.allclose(got, [1.0, 0.3, 0.15, 0.075])
    assert bool((np.diff(got) <= 0).all())  # never rises when a sample stops


def test_evaluate_reports_metal_vs_nonmetal_for_named_crystal_classes() -> None:
    from andersonn.models import build_model

    torch.manual_seed(0)
    model = build_model("explicit", in_channels=3, height=4, width=5, num_classes=3, hidden=8,
                        depth=1)
    x, y = torch.randn(12, 3, 4, 5), torch.arange(12) % 3
    named = evaluate(model, x, y, classes=["metal", "semiconductor", "insulator"])
    assert set(named["per_class"]) == {"metal", "semiconductor", "insulator"}
    assert 0.0 <= named["metal_vs_nonmetal_balanced_accuracy"] <= 1.0
    plain = evaluate(model, x, y, classes=["a", "b", "c"])
    assert "metal_vs_nonmetal_balanced_accuracy" not in plain
    assert plain["accuracy"] == named["accuracy"]


def test_demo_trains_both_solvers_and_writes_the_report(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's main job, on a tiny stand-in dataset (the real one needs the QM9 archive)."""
    import types

    from andersonn import demo

    rng = np.random.default_rng(0)
    n = 64
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 4, 6, 5)).astype(np.float32)
    images[:, 0] += 1.5 * labels[:, None, None]
    splits = np.zeros(n, dtype=np.int8)
    splits[44:54], splits[54:] = 1, 2
    tiny = types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["weakly polar", "strongly polar"],
                                 meta={"task": "polarity"})
    monkeypatch.setattr(demo, "_load_or_build", lambda limit, progress: tiny)
    report = demo.run_demo(tmp_path / "demo", epochs=2, progress=False, hidden=8,
                           batch_size=16, threads=1)
    assert set(report["runs"]) == {"anderson", "forward"}
    for run in report["runs"].values():
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["epochs"] == 2
    assert report["speedup"]["total_nfev"] > 1.0  # Anderson needs fewer f evaluations
    text = (tmp_path / "demo" / "report.md").read_text()
    assert "Anderson speed-up" in text
    assert "test expected calibration error from" in text and "andersonn predict" in text
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["settings"]["threads"] == 1
    # a later demo on other data (here: another featuriser version) does not resume the old
    # runs: it sets them aside and trains afresh
    tiny.meta = {"task": "polarity", "featurizer_version": "9.9.9"}
    again = demo.run_demo(tmp_path / "demo", epochs=2, progress=False, hidden=8,
                          batch_size=16, threads=1)
    assert (tmp_path / "demo" / "deq-anderson.old-1" / "config.json").exists()
    fresh = json.loads((tmp_path / "demo" / "deq-anderson" / "config.json").read_text())
    assert fresh["featurizer_version"] == "9.9.9" and again["runs"]["anderson"]["epochs"] == 2
    # a demo killed before the forward run's first checkpoint left its config.json alone, and
    # the Anderson run lost its checkpoints: the next demo trains both again, nothing refused
    import shutil

    forward, anderson = tmp_path / "demo" / "deq-forward", tmp_path / "demo" / "deq-anderson"
    for path in [*forward.iterdir(), anderson / "checkpoints", anderson / "checkpoint.json"]:
        if path.name != "config.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    third = demo.run_demo(tmp_path / "demo", epochs=2, progress=False, hidden=8,
                          batch_size=16, threads=1)
    assert all(run["epochs"] == 2 for run in third["runs"].values())
    assert (tmp_path / "demo" / "deq-anderson.old-2" / "model.safetensors").exists()


def test_jacobian_regularisation_in_training(toy: object, tmp_path: Path) -> None:
    plain = train(cfg(epochs=2), tmp_path / "plain", dataset=toy, progress=False)
    reg = train(cfg(epochs=2, jac_reg=2.0, jac_samples=2), tmp_path / "reg", dataset=toy,
                progress=False)
    assert all(h["jac_loss"] == 0.0 for h in plain.history)
    assert all(h["jac_loss"] > 0.0 for h in reg.history)
    # the penalty keeps the cell more contractive: fewer forward evaluations per sample
    assert reg.history[-1]["fwd_nfev"] < plain.history[-1]["fwd_nfev"]
    assert reg.test_metrics["accuracy"] >= 0.85
    with torch.no_grad():
        reg.model(torch.from_numpy(np.array(toy.images[:4])))
    assert reg.model.jacobian_loss() is None  # inference never pays for the penalty
    with pytest.raises(ConfigError, match="jac_reg"):
        cfg(model="explicit", jac_reg=1.0)
    with pytest.raises(ConfigError, match="jac_samples"):
        cfg(jac_reg=1.0, jac_samples=0)


def test_patience_stops_early_and_a_resume_stays_stopped(toy: object, tmp_path: Path) -> None:
    # a learning rate too small to move the validation accuracy after epoch 1
    c = cfg(epochs=10, patience=2, lr=1e-12, model="explicit", depth=2)
    result = train(c, tmp_path / "run", dataset=toy, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.test_metrics["epochs"] == 3 and result.test_metrics["best_epoch"] == 1
    again = train(c, tmp_path / "run", resume=True, dataset=toy, progress=False)
    assert len(again.history) == 3
    longer = train(cfg(epochs=10, patience=4, lr=1e-12, model="explicit", depth=2),
                   tmp_path / "run", resume=True, dataset=toy, progress=False)
    assert len(longer.history) == 5  # more patience: it goes on from where it stopped
    with pytest.raises(ConfigError, match="patience must be >= 1"):
        cfg(patience=0)


def test_demo_refuses_a_subset_without_a_test_split(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo --limit 10` split 8/2/0 and crashed formatting a missing test accuracy."""
    import types

    from andersonn import demo
    from andersonn.errors import AndersonnError

    tiny = types.SimpleNamespace(images=np.zeros((10, 4, 6, 5), np.float32),
                                 labels=np.arange(10) % 2,
                                 splits=np.array([0] * 8 + [1] * 2, dtype=np.int8),
                                 classes=["weakly polar", "strongly polar"],
                                 meta={"task": "polarity"})
    monkeypatch.setattr(demo, "_load_or_build", lambda limit, progress: tiny)
    with pytest.raises(AndersonnError, match=r"^demo --limit 10: .*empty test split"):
        demo.run_demo(tmp_path / "demo", limit=10, epochs=1, progress=False)
    assert not (tmp_path / "demo").exists()  # refused before any training
