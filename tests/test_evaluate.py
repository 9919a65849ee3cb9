"""Scoring finished runs (``andersonn.evaluate``, ``andersonn evaluate``): the scores against
hand-computed ones and against the classifier itself, the ensembles, labelled CSVs (classes,
values through the label rule, skipped rows, the domain split) and their error paths."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from andersonn.cli import build_parser, main
from andersonn.ensemble import Ensemble
from andersonn.errors import AndersonnError, InputError
from andersonn.evaluate import (
    evaluate_labelled,
    evaluate_split,
    read_labelled,
    score_probabilities,
)
from andersonn.predict import Classifier, DomainWarning
from andersonn.training.inputs import split_tensors

from helpers import tiny_polarity_dataset, tiny_polarity_run

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"
POLAR = ["weakly polar", "strongly polar"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[Path]]:
    root = tmp_path_factory.mktemp("evaluate")
    dataset = tiny_polarity_dataset(root)
    return dataset, [tiny_polarity_run(dataset, root / f"seed{s}", seed=s) for s in (0, 1, 2)]


def test_scores_match_hand_computation() -> None:
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1])
    s = score_probabilities(probs, labels, POLAR)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["balanced_accuracy"] == pytest.approx(0.5)
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.2)) / 4
    assert s["nll"] == pytest.approx(nll)
    assert "metal_vs_nonmetal_balanced_accuracy" not in s
    gap = score_probabilities(np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 2]),
                              ["metal", "semiconductor", "insulator"])
    assert gap["accuracy"] == pytest.approx(0.75)
    assert gap["metal_vs_nonmetal_balanced_accuracy"] == pytest.approx(1.0)


def test_split_scores_equal_the_classifier_and_the_ensemble(setup) -> None:
    dataset, runs = setup
    images, labels = split_tensors(dataset, "test")
    result = evaluate_split(runs, dataset=dataset)
    assert result.n == len(labels) == 4 and result.runs == [str(r) for r in runs]
    for run, single in zip(runs, result.single, strict=True):
        assert single["accuracy"] == pytest.approx(
            Classifier.load(run).score(images.numpy(), labels.numpy()))
        assert single["iterations"] > 0
    accs = [s["accuracy"] for s in result.single]
    assert result.spread["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert result.spread["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert sorted(result.ensembles) == [2, 3]
    ens = Ensemble.from_runs(runs[:2])
    assert result.ensembles[2]["accuracy"] == pytest.approx(
        ens.score(images.numpy(), labels.numpy()))
    assert np.array(result.report["confusion_matrix"]).sum() == 4
    assert "mean ± sd of 3" in result.to_markdown()
    json.dumps(result.to_dict())  # plain JSON


def test_split_refuses_a_bad_split_and_another_label_rule(setup) -> None:
    dataset, runs = setup
    with pytest.raises(InputError, match="unknown split"):
        evaluate_split(runs[:1], split="holdout", dataset=dataset)
    dataset.meta = {**dataset.meta, "label_rule": "something else"}
    try:
        with pytest.raises(AndersonnError, match="labels by 'something else'"):
            evaluate_split(runs[:1], dataset=dataset)
    finally:
        dataset.meta = {**dataset.meta, "label_rule": "has N or O"}


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_labelled_classes_values_and_skips(tmp_path: Path) -> None:
    (tmp_path / "mols").mkdir()
    (tmp_path / "mols" / "ethanol.mol").write_text((FIXTURES / "ethanol.mol").read_text())
    table = _csv(tmp_path / "by_class.csv",
                 "SMILES,Class\nCCO,Strongly Polar\nCC,0\nCCC,\nCO,polarr\nmols/ethanol.mol,1\n")
    inputs, labels, skipped = read_labelled(table, "polarity", POLAR)
    assert inputs == ["CCO", "CC", str(tmp_path / "mols" / "ethanol.mol")]
    assert labels == [1, 0, 1]
    assert [s["where"] for s in skipped] == ["by_class.csv line 4", "by_class.csv line 5"]
    assert "'polarr' is not one of" in skipped[1]["reason"]
    # values go through the label rule: dipole >= threshold is strongly polar
    table = _csv(tmp_path / "by_value.tsv", "input\tdipole\nCCO\t2.5\nCC\t2.49\nCO\tabc\nCN\tnan\n")
    inputs, labels, skipped = read_labelled(table, "polarity", POLAR)
    assert labels == [1, 0] and len(skipped) == 2
    _, labels, _ = read_labelled(table, "polarity", POLAR, {"dipole": 3.0})
    assert labels == [0, 0]
    gap = _csv(tmp_path / "gap.csv", "file,gap\na.cif,0\nb.cif,1.5\nc.cif,3.2\n")
    assert read_labelled(gap, "crystal-gap", ["metal", "semiconductor", "insulator"])[1] == \
        [0, 1, 2]


@pytest.mark.parametrize(("text", "message"), [
    ("name,class\nCCO,1\n", "no input column"),
    ("input,class,value\nCCO,1,3.0\n", "both a class and a value column"),
    ("input,energy\nCCO,1\n", "no class or value column"),
    ("input,class\nCCO,7\n", "no usable rows"),
    ("", "the file is empty"),
    ("input,class\n", r"no rows below its header row \(input, class\)"),
])
def test_read_labelled_refuses_unusable_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_labelled(_csv(tmp_path / "t.csv", text), "polarity", POLAR)
    with pytest.raises(InputError, match="no such labels file"):
        read_labelled(tmp_path / "missing.csv", "polarity", POLAR)


def test_labelled_scores_skips_and_domain(setup, tmp_path: Path) -> None:
    _, runs = setup
    molecules = ["CCO", "CCCN", "CCCC", "C(Cl)Cl", "((", "CO.CO"]
    truth = [1, 1, 0, 0, 1, 1]
    table = _csv(tmp_path / "mine.csv", "input,class\n" + "".join(
        f"{m},{POLAR[t]}\n" for m, t in zip(molecules, truth, strict=True)))
    result = evaluate_labelled(runs[:1], table)
    assert result.n == 5
    assert [s["where"] for s in result.skipped] == ["(("]
    readable = molecules[:4] + molecules[5:]
    with pytest.warns(DomainWarning, match="C\\(Cl\\)Cl"):
        predicted = Classifier.load(runs[0]).predict(readable)
    expected = np.mean([p == POLAR[t] for p, t in
                        zip(predicted, truth[:4] + truth[5:], strict=True)])
    assert result.single[0]["accuracy"] == pytest.approx(expected)
    assert [r["predicted"] for r in result.rows] == list(predicted)
    # chlorine is not in the fixture run's training domain; the two methanols laid apart carry
    # a reader's note, but are inside it
    assert result.domain["outside"]["n"] == 1 and result.domain["inside"]["n"] == 4
    assert result.rows[3]["warnings"]
    assert any("fragments" in w for w in result.rows[4]["warnings"])
    assert "training domain: inside 4" in result.to_markdown()


def test_labelled_refuses_when_nothing_can_be_read(setup, tmp_path: Path) -> None:
    table = _csv(tmp_path / "bad.csv", "input,class\n((,1\nno-such-file.xyz,0\n")
    with pytest.raises(InputError, match="none of its 2 inputs could be read"):
        evaluate_labelled(setup[1][:1], table)


def test_evaluate_command(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    dataset, runs = setup
    table = _csv(tmp_path / "mine.csv", "smiles,value\nCCO,1.7\nCCCC,0.0\n((,2.0\n")
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(runs[0]), str(runs[1]), "--labels", str(table),
                 "--out", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["n"] == 2 and len(record["single"]) == 2 and "2" in record["ensembles"]
    assert record["rows"][0]["class"] == "weakly polar"  # 1.7 D < 2.5 D
    assert "skipped 1" in capsys.readouterr().out
    # split mode reads the run's cached build: hand it the fixture's
    monkeypatch.setattr("andersonn.training.runs.run_dataset", lambda config: dataset)
    assert main(["evaluate", str(runs[0]), "--split", "val", "--max-iter", "5"]) == 0
    assert "4 inputs of the val split" in capsys.readouterr().out
    assert main(["evaluate", str(runs[0]), "--split", "val", "--plots", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "reliability.png").is_file()
    assert main(["evaluate", str(runs[0]), "--labels", str(tmp_path / "none.csv")]) == 2
    assert "no such labels file" in capsys.readouterr().err


def test_labelled_with_conformers_equals_predict_with_conformers(setup, tmp_path: Path) -> None:
    _, runs = setup
    table = _csv(tmp_path / "c.csv", "smiles,class\nCC(O)CCO,1\nCCCC,0\n")
    result = evaluate_labelled(runs[:1], table, conformers=3)
    clf = Classifier.load(runs[0])
    clf.conformers = 3
    probs = clf.predict_proba(["CC(O)CCO", "CCCC"])
    assert [r["probabilities"]["strongly polar"] for r in result.rows] == pytest.approx(
        list(probs[:, 1]), abs=1e-6)


def test_split_refuses_runs_of_different_builds(setup, tmp_path: Path) -> None:
    import shutil

    dataset, runs = setup
    other = tmp_path / "other-limit"
    shutil.copytree(runs[1], other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["limit"] = 500
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(AndersonnError, match="different dataset builds"):
        evaluate_split([runs[0], other], dataset=dataset)


def test_reliability_bins_and_plots(setup, tmp_path: Path) -> None:
    dataset, runs = setup
    result = evaluate_split(runs[:2], dataset=dataset)
    assert list(result.reliability) == [str(runs[0]), str(runs[1]), "ensemble of 2"]
    for name, single in zip(result.runs, result.single, strict=True):
        curve = result.reliability[name]
        assert sum(curve["count"]) == result.n
        correct = sum(a * c for a, c in zip(curve["accuracy"], curve["count"], strict=True))
        assert correct == pytest.approx(single["accuracy"] * result.n)
        assert all(0.5 - 1e-9 <= c <= 1 for c in curve["confidence"])  # two classes
    paths = result.write_plots(tmp_path / "plots")
    assert [p.name for p in paths] == ["confusion.png", "reliability.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_an_sdf_with_the_label_as_a_data_field(setup, tmp_path: Path) -> None:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from andersonn.structures import read_records, sdf_fields

    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    dipoles = {"CCO": "1.7", "CCCN": "2.9", "CCCC": "0.0", "CC(=O)N": "", "CO": "n/a"}
    for smiles, dipole in dipoles.items():
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=3)
        mol.SetProp("_Name", smiles)
        mol.SetProp("Dipole", dipole)
        mol.SetProp("note", "two\nlines")
        writer.write(mol)
    writer.close()
    assert sdf_fields(read_records(path)[0].text) == {"Dipole": "1.7", "note": "two\nlines"}
    inputs, labels, skipped = read_labelled(path, "polarity", POLAR)
    assert [i.name for i in inputs] == ["mols.sdf#1 (CCO)", "mols.sdf#2 (CCCN)",
                                        "mols.sdf#3 (CCCC)"]
    assert labels == [0, 1, 0]
    assert skipped == [{"where": "mols.sdf#4 (CC(=O)N)", "reason": "empty input or label"},
                       {"where": "mols.sdf#5 (CO)", "reason": "value 'n/a' is not a number"}]
    result = evaluate_labelled(setup[1][:1], path)
    assert result.n == 3 and [r["input"] for r in result.rows] == [i.name for i in inputs]
    # each record scores as the same molecule does in a file of its own
    alone = Classifier.load(setup[1][0]).predict_inputs(inputs)
    assert [r["predicted"] for r in result.rows] == [p.label for p in alone]
    with pytest.raises(InputError, match="no class or value field"):
        read_labelled(path, "crystal-gap", ["metal", "semiconductor", "insulator"])


def test_conflicting_labels_of_one_input_are_warned_about(tmp_path: Path) -> None:
    table = tmp_path / "mine.csv"
    table.write_text("input,class\nCCO,strongly polar\nCC,weakly polar\nCCO,weakly polar\n"
                     "CC,weakly polar\nCCO,Strongly Polar\n")
    with pytest.warns(UserWarning) as caught:
        inputs, labels, _ = read_labelled(table, "polarity", POLAR)
    messages = [str(w.message) for w in caught]
    assert messages == ["mine.csv: CCO is given with conflicting labels: line 2 (strongly "
                        "polar), line 4 (weakly polar), line 6 (strongly polar); each row is "
                        "scored as given"]
    assert inputs == ["CCO", "CC", "CCO", "CC", "CCO"] and labels == [1, 0, 0, 0, 1]
    table.write_text("input,class\nCCO,strongly polar\nCCO,1\nCC,0\n")  # agreeing: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_labelled(table, "polarity", POLAR)


# --- evaluate CV_DIR --plots: the confusion matrix and a reliability diagram --------------------

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
