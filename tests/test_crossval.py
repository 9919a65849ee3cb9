"""k-fold cross-validation: the folds, a dataset seen through one, and ``train --folds``
(fold by fold, resumed, summarised on the out-of-fold predictions)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from andersonn.cli import main
from andersonn.crossval import CrossValidation, compare, mcnemar_p_value, summarize
from andersonn.data.folds import FoldView, fold_split, stratified_folds
from andersonn.errors import AndersonnError, ConfigError
from andersonn.training import TrainConfig

DIPOLES = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"
LABELS = np.repeat([0, 1, 2], [23, 11, 6])[np.random.default_rng(7).permutation(40)]


def test_folds_deal_every_class_evenly_and_repeatably():
    folds = stratified_folds(LABELS, 5)
    assert folds.shape == LABELS.shape and set(folds) == set(range(5))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for cls in range(3):
        per_fold = np.bincount(folds[np.equal(LABELS, cls)], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, cls
    assert np.array_equal(folds, stratified_folds(LABELS, 5))
    assert not np.array_equal(folds, stratified_folds(LABELS, 5, seed=1))


def test_each_structure_is_tested_once_and_a_tenth_validates():
    tested = np.zeros(len(LABELS), dtype=int)
    for fold in range(1, 6):
        split = fold_split(LABELS, 5, fold)
        tested += split == 2
        for cls, n in enumerate((23, 11, 6)):
            of_class = split[np.equal(LABELS, cls)]
            assert (of_class == 1).sum() == max(1, round(0.1 * n))
            assert (of_class == 0).sum() >= 1
    assert np.all(tested == 1)
    for bad, message in (((LABELS, 1, 1), "at least 2 folds"),
                         ((LABELS, 7, 1), "at least 7 structures of every class; class 2 has 6"),
                         ((LABELS, 5, 6), "between 1 and 5")):
        with pytest.raises(ConfigError, match=message):
            fold_split(*bad)
    with pytest.raises(ConfigError, match="folds and fold go together"):
        TrainConfig(folds=5)
    with pytest.raises(ConfigError, match="between 1 and folds=3"):
        TrainConfig(folds=3, fold=0)


def test_a_fold_view_changes_the_splits_only():
    class Data:
        images = np.arange(40 * 2, dtype=np.float32).reshape(40, 2, 1, 1)
        labels = LABELS
        splits = np.zeros(40, dtype=np.int8)
        meta: ClassVar[dict] = {"task": "x"}
        classes: ClassVar[list] = ["a", "b", "c"]

        def __len__(self) -> int:
            return 40

    view = FoldView(Data(), 4, 2)
    assert view.images is Data.images and view.classes == ["a", "b", "c"] and len(view) == 40
    assert np.array_equal(view.splits, fold_split(LABELS, 4, 2))
    assert np.array_equal(view.split_indices("test"), np.flatnonzero(view.splits == 2))
    assert view.meta["cross_validation"] == {"folds": 4, "fold": 2, "seed": 0}
    assert Data.meta == {"task": "x"}  # the dataset's own meta is untouched
    assert len(view.torch_split("val")) == int((view.splits == 1).sum())


def test_train_folds_one_at_a_time_then_resume_and_summarise(tmp_path, capsys):
    out = tmp_path / "cv"
    common = [str(DIPOLES), "--bins", "2.5", "--folds", "3", "--out", str(out), "--epochs", "1",
              "--threads", "1", "--workers", "1", "--no-progress", "--hidden", "8"]
    assert main(["train", *common, "--fold", "2"]) == 0
    assert (out / "fold-2" / "model.safetensors").is_file()
    assert not (out / "fold-1").exists() and not (out / "cv.json").exists()
    assert "1 of 3 folds finished" in capsys.readouterr().err
    assert main(["evaluate", str(out)]) == 2  # a cross-validation, not finished yet
    assert "fold-1, fold-3 not finished" in capsys.readouterr().err
    assert main(["train", *common]) == 2  # fold 2 holds a run: only --resume goes on
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", *common, "--resume"]) == 0
    assert "3-fold cross-validation on 48 structures: pooled accuracy" in capsys.readouterr().out

    record = json.loads((out / "cv.json").read_text())
    assert record["n"] == 48 and record["folds"] == 3 and record["task"] == "custom"
    assert sum(map(sum, record["pooled"]["confusion_matrix"])) == 48
    per_fold = record["per_fold"]
    assert sum(s["n"] for s in per_fold) == 48
    correct = sum(s["accuracy"] * s["n"] for s in per_fold)
    assert record["pooled"]["accuracy"] == pytest.approx(correct / 48)
    for s in per_fold:  # the same model, the same test split as the fold's own run
        test = json.loads((out / f"fold-{s['fold']}" / "test_metrics.json").read_text())
        assert test["accuracy"] == pytest.approx(s["accuracy"])
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["index"]) for r in rows) == list(range(48))
    assert {r["fold"] for r in rows} == {"1", "2", "3"}
    assert all(abs(float(r["p_< 2.5"]) + float(r["p_>= 2.5"]) - 1) < 1e-4 for r in rows)
    assert (out / "cv.md").is_file() and (out / "plots" / "confusion.png").is_file()

    scores = tmp_path / "f2.json"  # evaluate scores a fold's run on that fold's test split
    assert main(["evaluate", str(out / "fold-2"), "--out", str(scores)]) == 0
    assert json.loads(scores.read_text())["single"][0]["accuracy"] == pytest.approx(
        per_fold[1]["accuracy"])
    assert main(["evaluate", str(out / "fold-1"), str(out / "fold-2")]) == 2
    assert "cross-validation folds" in capsys.readouterr().err

    assert main(["evaluate", str(out), str(out), "--out", str(tmp_path / "cv.json")]) == 0
    printed = capsys.readouterr().out
    assert "pooled" in printed and "difference +0.00 points" in printed  # itself: no difference
    assert json.loads((tmp_path / "cv.json").read_text())["comparisons"][0]["mcnemar_p"] == 1.0
    assert main(["evaluate", str(out), str(out / "fold-1")]) == 2
    assert "not both" in capsys.readouterr().err

    longer = [v if (i == 0 or common[i - 1] != "--epochs") else "2" for i, v in enumerate(common)]
    assert main(["train", *longer, "--resume"]) == 0  # more epochs: every fold continues
    for fold in (1, 2, 3):
        assert len((out / f"fold-{fold}" / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "cv.json").read_text())["settings"]["epochs"] == 2

    scored = tmp_path / "l.json"  # the fold models on labelled structures
    assert main(["evaluate", str(out), "--labels", str(DIPOLES), "--out", str(scored)]) == 0
    assert len(json.loads(scored.read_text())["runs"]) == 3
    preds = tmp_path / "p.json"  # the folds answer together
    assert main(["predict", str(out), "CC(=O)N", "--out", str(preds)]) == 0
    record = json.loads(preds.read_text())
    assert record["ensemble"] == [str(out / f"fold-{i}") for i in (1, 2, 3)]
    assert record["predictions"][0]["ok"]

    config_path = out / "fold-3" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["epochs"] = 5
    config_path.write_text(json.dumps(config))
    with pytest.raises(AndersonnError, match=r"not fold 3 of the same cross-validation .*epochs"):
        summarize(out)


def test_cross_validation_command_errors(tmp_path, capsys):
    for extra, message in ((["--fold", "2"], "--fold I needs --folds K"),
                           (["--folds", "3", "--fold", "4"], "between 1 and 3"),
                           (["--folds", "1"], "at least 2 folds"),
                           (["--folds", "30"], "30 folds need at least 30 structures")):
        argv = ["train", str(DIPOLES), "--bins", "2.5", "--out", str(tmp_path / "x"),
                "--threads", "1", "--workers", "1", "--no-progress", *extra]
        assert main(argv) == 2, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(AndersonnError, match="not a cross-validation \\(no fold-I"):
        summarize(tmp_path)


def _cv(name: str, truth: list[str], predicted: list[str]) -> CrossValidation:
    rows = [{"index": i, "id": f"m{i}", "fold": 1, "class": t, "predicted": p,
             "probabilities": [], "iterations": 0.0}
            for i, (t, p) in enumerate(zip(truth, predicted, strict=True))]
    return CrossValidation(directory=name, task="x", source="x", folds=2, classes=["a", "b"],
                           n=len(rows), runs=[], pooled={}, per_fold=[], spread={}, settings={},
                           predictions=rows)


def test_paired_comparison_counts_discordant_structures_and_tests_them_exactly():
    assert mcnemar_p_value(0, 6) == pytest.approx(2 / 64)
    exact = 2 * sum(math.comb(30, i) for i in range(11)) / 2 ** 30
    assert mcnemar_p_value(10, 20) == pytest.approx(exact, rel=1e-12)
    assert mcnemar_p_value(20, 10) == pytest.approx(exact, rel=1e-12)
    assert mcnemar_p_value(7, 7) == 1.0 and mcnemar_p_value(0, 0) == 1.0
    truth = ["a"] * 6 + ["b"] * 6
    first = _cv("A", truth, ["a"] * 6 + ["b"] * 4 + ["a"] * 2)   # 10 of 12 right
    second = _cv("B", truth, ["b"] * 3 + ["a"] * 3 + ["b"] * 6)  # 9 of 12 right
    result = compare(first, second)
    assert result["accuracy"] == pytest.approx([10 / 12, 9 / 12])
    assert (result["only_first_right"], result["only_second_right"]) == (3, 2)
    assert result["difference"] == pytest.approx(1 / 12)
    se = math.sqrt(3 + 2 - 1 / 12) / 12
    assert result["difference_ci95"] == pytest.approx([1 / 12 - 1.959964 * se,
                                                       1 / 12 + 1.959964 * se], rel=1e-5)
    assert result["mcnemar_p"] == pytest.approx(1.0)
    with pytest.raises(AndersonnError, match="not of the same structures"):
        compare(first, _cv("C", ["b", *truth[1:]], truth))
