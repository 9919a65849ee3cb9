"""CLI fixes: positive counts parsed up front, cross-validation reliability plots, the image
spec of `andersonn image`, and singular wording (one epoch, one heavy-atom count)."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from andersonn.cli import build_parser, main
from andersonn.data.domain import Domain

from helpers import assert_refused_when_parsed

FIX = Path(__file__).parent / "fixtures" / "structures"


# -- 1: --threads / --workers / other counts must be >= 1, refused when parsed ------------------
@pytest.mark.parametrize(("argv", "option"), [
    (["calibrate", "RUN", "--threads", "0"], "--threads"),
    (["evaluate", "RUN", "--threads", "-2"], "--threads"),
    (["explain", "RUN", "CCO", "--threads", "0"], "--threads"),
    (["explain", "RUN", "CCO", "--steps", "0"], "--steps"),
    (["predict", "RUN", "CCO", "--workers", "0"], "--workers"),
    (["evaluate", "RUN", "--workers", "-3"], "--workers"),
    (["predict", "RUN", "CCO", "--max-iter", "0"], "--max-iter"),
    (["data", "build", "polarity", "--workers", "0"], "--workers"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["image", "CCO", "--out", "img", "--record", "0"], "--record"),
])
def test_non_positive_counts_fail_in_one_line_before_any_work(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_when_parsed(argv, capsys,
                               f"error: argument {option}: must be at least 1, got {argv[-1]}")


def test_train_counts_are_refused_by_the_config_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train's counts go through TrainConfig (as a --config file's do): one line, exit 2."""
    assert main(["train", "polarity", "--workers", "0", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "andersonn: error: workers must be >= 1 (got 0)"


# -- 2: evaluate CV_DIR --plots writes a reliability diagram as well ----------------------------
def _cross_validation(directory: Path) -> Any:
    """A finished-looking 2-fold cross-validation of 5 structures, classes a and b."""
    from andersonn.crossval import SCORES, CrossValidation
    from andersonn.evaluate import score_probabilities

    classes = ["a", "b"]
    probs = np.array([[0.95, 0.05], [0.03, 0.97], [0.15, 0.85], [0.25, 0.75], [0.65, 0.35]])
    labels = np.array([0, 0, 0, 1, 1])
    pooled: dict[str, Any] = {**score_probabilities(probs, labels, classes), "iterations": 3.0,
                              "confusion_matrix": [[1, 2], [1, 1]]}
    spread = {k: {"mean": float(pooled[k]), "std": 0.0}
              for k in (*SCORES, "iterations") if k in pooled}
    rows = [{"index": j, "id": f"m{j}", "fold": 1 + j % 2, "class": classes[labels[j]],
             "predicted": classes[int(probs[j].argmax())], "probabilities": probs[j].tolist(),
             "iterations": 3.0} for j in range(len(labels))]
    return CrossValidation(directory=str(directory), task="polarity", source="polarity",
                           folds=2, classes=classes, n=len(labels), runs=[], pooled=pooled,
                           per_fold=[], spread=spread, settings={}, predictions=rows)


def test_evaluate_cross_validation_plots_confusion_and_reliability(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.crossval as crossval
    import andersonn.training.plots as plots

    cv = tmp_path / "cv"
    for fold in (1, 2):  # what makes a folder a cross-validation to the CLI
        (cv / f"fold-{fold}").mkdir(parents=True)
        (cv / f"fold-{fold}" / "config.json").write_text("{}")
    monkeypatch.setattr(crossval, "summarize", lambda path, device="cpu": _cross_validation(cv))
    curves: list[dict[str, Any]] = []
    real = plots.plot_reliability

    def record(c: dict[str, Any], path: Any, title: str = "") -> None:
        curves.append(c)
        real(c, path, title=title)

    monkeypatch.setattr(plots, "plot_reliability", record)
    out = tmp_path / "plots"
    assert main(["evaluate", str(cv), "--plots", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cv-1-confusion.png", "cv-1-reliability.png"]
    assert f"→ {out / 'cv-1-reliability.png'}" in capsys.readouterr().out
    # the pooled out-of-fold probabilities in 15 confidence bins: 0.65 | 0.75 | 0.85 | 0.95, 0.97
    (curve,) = curves[0].values()
    assert curve["count"] == [1, 1, 1, 2]
    assert curve["confidence"] == pytest.approx([0.65, 0.75, 0.85, 0.96])
    assert curve["accuracy"] == pytest.approx([0.0, 1.0, 0.0, 0.5])


def test_evaluate_help_names_the_plot_files_of_runs_and_cross_validations(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break the names at their hyphens
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "confusion.png and reliability.png for runs" in text
    assert "cv-I-confusion.png and cv-I-reliability.png for the I-th CV_DIR" in text


# -- 3: `andersonn image` picks the image spec as training on a labels file does ----------------
@pytest.mark.parametrize(("name", "extra", "spec"), [
    ("mof_ABAVIJ_clean.cif", [], "mof-pore"),  # C, H and a metal: a framework
    ("NaCl.cif", [], "crystal-gap"),
    ("mof_ABAVIJ_clean.cif", ["--task", "crystal-gap"], "crystal-gap"),
])
def test_image_chooses_the_spec_as_labels_file_training_does(
        name: str, extra: list[str], spec: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import andersonn.images.render as render
    from andersonn.data.labelled import choose_image

    written: list[tuple[str, tuple[int, ...]]] = []

    def fake_write(stem: Any, img: np.ndarray, spec: Any, labels: Any, title: str) -> tuple:
        written.append((spec.name, img.shape))  # no PNG rendering: slow and beside the point
        return Path(f"{stem}.png"), Path(f"{stem}.npy")

    monkeypatch.setattr(render, "write_image_files", fake_write)
    path = str(FIX / name)
    assert main(["image", path, "--out", str(tmp_path / "img"), *extra]) == 0
    from andersonn.images import IMAGE_SPECS

    assert written == [(spec, IMAGE_SPECS[spec].shape)]
    if not extra:
        assert choose_image([path], None) == spec


# -- 4: wording ----------------------------------------------------------------------------------
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
                                 labels=np.arange(48) % 2)
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
