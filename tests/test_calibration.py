"""Temperature scaling and the expected calibration error: exact small cases, recovery of a
known temperature, decomposition over shards, and calibration as training and predict use it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.training.calibration import (
    calibration_bins,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
)


def _sample(n: int, k: int, true_t: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from softmax(logits / true_t): T = true_t calibrates them."""
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits / true_t, dim=1), 1, generator=g).squeeze(1)
    return logits, labels


def test_ece_of_a_hand_computed_case() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    # confidences 0.9 (right), 0.6 (wrong), 0.8 (right), 0.7 (right), each alone in its bin
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)
    # one bin: |mean confidence - accuracy| = |0.75 - 0.75|
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.0, abs=1e-12)


def test_ece_sums_decompose_over_shards() -> None:
    logits, labels = _sample(3001, 4, 1.7, seed=1)
    probs = torch.softmax(logits, dim=1)
    whole = expected_calibration_error(probs, labels)
    parts = calibration_bins(probs[::2], labels[::2]) + calibration_bins(probs[1::2], labels[1::2])
    assert ece_from_bins(parts) == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_recovers_a_known_temperature(true_t: float) -> None:
    logits, labels = _sample(40_000, 3, true_t, seed=0)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    before = expected_calibration_error(torch.softmax(logits, dim=1), labels)
    after = expected_calibration_error(torch.softmax(logits / t, dim=1), labels)
    assert after < 0.02 < before


def test_fit_matches_a_brute_force_minimum() -> None:
    logits, labels = _sample(500, 5, 1.3, seed=2)
    grid = np.exp(np.linspace(math.log(0.2), math.log(5.0), 20001))
    nll = [float(torch.nn.functional.cross_entropy(logits / t, labels)) for t in grid]
    best = grid[int(np.argmin(nll))]
    assert fit_temperature(logits, labels) == pytest.approx(best, rel=1e-3)


def test_fit_reduces_its_sums() -> None:
    """Under torchrun ``reduce`` sums over ranks: here two identical shards, the same T."""
    logits, labels = _sample(1000, 3, 1.5, seed=3)
    calls: list[torch.Tensor] = []

    def two_shards(local: torch.Tensor) -> torch.Tensor:
        calls.append(local.clone())
        return 2.0 * local

    assert fit_temperature(logits, labels, reduce=two_shards) == fit_temperature(logits, labels)
    assert calls and all(c.shape == (2,) and c[1] == 1000 for c in calls)  # (NLL sum, count)


def test_training_stores_and_predict_applies_the_temperature(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.data.cache import open_cache, write_cache
    from andersonn.predict import Classifier
    from andersonn.training import TrainConfig, calibrate_run, load_run, train

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40)
    x = rng.normal(size=(80, 3, 4, 4)).astype(np.float32)
    x[:, 0] += np.where(y == 1, 1.0, -1.0)[:, None, None]
    splits = np.array([0] * 40 + [1] * 24 + [2] * 16, np.int8)
    domain = {"kind": "crystal", "elements": {"Na": 48, "Cl": 48}, "atoms": [2, 8], "n": 48}
    cache = write_cache(tmp_path / "cache", images=x, labels=y, ids=[str(i) for i in range(80)],
                        splits=splits, classes=["a", "b"], meta={"task": "custom",
                                                                 "domain": domain})
    cfg = TrainConfig(task="custom", model="explicit", epochs=2, hidden=8, depth=2,
                      batch_size=16, threads=1, plots=False)
    result = train(cfg, tmp_path / "run", dataset=open_cache(cache), progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())["calibration"]
    t = record["temperature"]
    assert 0.2 < t < 5.0 and record["split"] == "val" and record["method"] == "temperature"
    assert record["val_ece_calibrated"] <= record["val_ece"] + 1e-9
    test_cal = result.test_metrics["calibration"]
    assert test_cal["temperature"] == t and 0.0 <= test_cal["ece"] <= 1.0

    clf = Classifier.load(tmp_path / "run")
    model, _ = load_run(tmp_path / "run")
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(x[:5])) / t, dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(x[:5]), expected, rtol=1e-5, atol=1e-6)

    # the same fit, from the stored run: what `andersonn calibrate` does for older runs
    copy = tmp_path / "older"
    shutil.copytree(tmp_path / "run", copy)
    cfg_path = copy / "config.json"
    stored = json.loads(cfg_path.read_text())
    assert stored["domain"] == domain  # training copied the dataset's
    del stored["calibration"], stored["domain"]
    cfg_path.write_text(json.dumps(stored))
    assert Classifier.load(copy).temperature_ == 1.0
    again = calibrate_run(copy, dataset=open_cache(cache))
    assert again["temperature"] == t and again["domain_added"] == domain
    assert json.loads(cfg_path.read_text())["domain"] == domain
    assert again["test_ece"] == pytest.approx(test_cal["ece"], abs=1e-12)
    assert Classifier.load(copy).temperature_ == t

    from andersonn.cli import main

    assert main(["calibrate", str(copy)]) == 2  # a custom dataset: not in the task cache
    assert "unknown task 'custom'" in capsys.readouterr().err

    stored["calibration"] = {"temperature": -1}
    cfg_path.write_text(json.dumps(stored))
    from andersonn.errors import AndersonnError

    with pytest.raises(AndersonnError, match="malformed calibration temperature"):
        Classifier.load(copy)


def test_too_small_a_validation_split_is_not_fitted(tmp_path: Path) -> None:
    from andersonn.data.cache import open_cache, write_cache
    from andersonn.training import TrainConfig, train

    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 20)
    x = rng.normal(size=(40, 3, 4, 4)).astype(np.float32)
    splits = np.array([0] * 24 + [1] * 8 + [2] * 8, np.int8)
    cache = write_cache(tmp_path / "cache", images=x, labels=y, ids=[str(i) for i in range(40)],
                        splits=splits, classes=["a", "b"], meta={"task": "custom"})
    cfg = TrainConfig(task="custom", model="explicit", epochs=1, hidden=8, depth=1,
                      batch_size=8, threads=1, plots=False)
    result = train(cfg, tmp_path / "run", dataset=open_cache(cache), progress=False)
    record = result.run_config["calibration"]
    assert record["method"] == "none" and record["temperature"] == 1.0
    assert "8 validation samples" in record["reason"]
    assert result.test_metrics["calibration"]["ece"] == \
        result.test_metrics["calibration"]["ece_calibrated"]
