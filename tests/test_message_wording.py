"""Counts in words in what users read: one epoch (not "1 epochs") in the interrupt message, the
demo, the speedup benchmark and the plural helper; the epochs a run holds; and a one-number
atom-count range of a domain said once."""

from __future__ import annotations

import argparse
import types
from pathlib import Path

import numpy as np
import pytest

from andersonn.data.domain import Domain
from andersonn.training.trainer import TrainingInterrupted, epochs_held, plural

# --- epochs -------------------------------------------------------------------------------------

def test_counts_and_held_epochs_in_words() -> None:
    assert (plural(1, "epoch"), plural(0, "epoch"), plural(3, "step")) == \
        ("1 epoch", "0 epochs", "3 steps")
    assert (epochs_held(1), epochs_held(4)) == ("epoch 1", "epochs 1–4")


def test_the_interrupt_names_one_epoch_as_one():
    assert str(TrainingInterrupted(Path("r"), 1, 3)) == "interrupted: r holds epoch 1 of 3"
    assert str(TrainingInterrupted(Path("r"), 2, 3)) == "interrupted: r holds epochs 1–2 of 3"
    assert str(TrainingInterrupted(Path("r"), 0, 3)) == \
        "interrupted: r holds no finished epoch of 3"


@pytest.mark.parametrize(("epoch", "epochs", "held"), [
    (1, 3, "holds epoch 1 of 3; `andersonn train polarity --out R --resume` continues from "
     "epoch 2"),
    (2, 3, "holds epochs 1–2 of 3; `andersonn train polarity --out R --resume` continues "
     "from epoch 3"),
    (1, 1, "holds its only epoch; `andersonn train polarity --out R --resume` finishes it "
     "(calibration, test)"),
])
def test_interrupt_message_counts_epochs_in_words(epoch: int, epochs: int, held: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.cli.train import _interrupted

    args = argparse.Namespace(task="polarity", folds=None, fold=None, config=None)
    stop = types.SimpleNamespace(epoch=epoch, epochs=epochs, run_dir="R")
    assert _interrupted(stop, args, Path("R")) == 130
    assert capsys.readouterr().err == f"andersonn: interrupted: R {held}\n"


def test_demo_says_one_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.training as training
    from andersonn import demo

    tiny = types.SimpleNamespace(images=np.zeros((48, 4, 6, 5), np.float32),
                                 labels=np.arange(48) % 2, splits=np.arange(48) % 3)
    monkeypatch.setattr(demo, "_load_or_build", lambda limit, progress: tiny)
    history = [{"wall_time_s": 2.0, "train_time_s": 2.0, "fwd_nfev": 10.0, "bwd_nfev": 5.0,
                "fwd_nfev_max": 12.0, "val_acc": 0.5}]
    scores = {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5, "best_epoch": 1}
    # the wording is under test, not the training (tests/test_training.py trains the demo)
    monkeypatch.setattr(training, "train", lambda cfg, run_dir, **_: types.SimpleNamespace(
        history=history, test_metrics=scores))
    monkeypatch.setattr(demo, "_plot", lambda out, runs, comparison: [])
    demo.run_demo(tmp_path / "demo", epochs=1, progress=False, hidden=8, batch_size=16,
                  threads=1)
    captured = capsys.readouterr()
    text = captured.out + captured.err + (tmp_path / "demo" / "report.md").read_text()
    assert "1 epochs" not in text
    assert "(48 QM9 molecules, 1 epoch, same seed" in captured.out
    assert "[demo] training the DEQ with anderson (1 epoch, tol" in captured.err
    assert "Model: DEQ (hidden 8), 1 epoch, batch 16" in text


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


# --- a domain's ranges ---------------------------------------------------------------------------

def test_domain_names_a_one_number_range_once() -> None:
    single = Domain("molecule", {"C": 3, "H": 3}, (7, 7), 3, (7, 7))
    assert single.describe() == "molecules, 3 training structures, 2 elements (H C), 7 atoms, " \
        "7 heavy atoms"
    error, warnings = single.check(((1, 6), 30, False, 12))
    assert error is None and warnings == ["30 atoms (12 heavy); the training molecules had 7 "
                                          "(7 heavy)"]
    atoms_only = Domain("molecule", {"C": 3}, (7, 7), 3)
    assert atoms_only.check(((6,), 9, False)) == (None, ["9 atoms; the training molecules had 7"])
    ranged = Domain("molecule", {"C": 3}, (5, 9), 3, (7, 7))
    assert ranged.check(((6,), 30, False, 7))[1] == ["30 atoms (7 heavy); the training "
                                                     "molecules had 5–9 (7 heavy)"]
