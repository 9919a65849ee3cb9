"""Training on a labels file of your own structures: reading it, labelling, the dataset and its
cache, the train / predict / evaluate commands on it, and Classifier.fit on structures."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from andersonn.cli import main
from andersonn.data.labelled import (
    bin_class_names,
    build_labelled_dataset,
    choose_image,
    label_rows,
    labelled_dataset,
    read_label_table,
)
from andersonn.errors import ConfigError, InputError
from andersonn.training import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
DIPOLES = FIXTURES / "labelled" / "qm9_dipoles.csv"
STRUCTURES = FIXTURES / "structures"


def _dipoles() -> list[tuple[str, float]]:
    lines = DIPOLES.read_text().splitlines()[1:]
    return [(s, float(d)) for s, d in (line.split(",") for line in lines)]


def test_bins_label_values_with_the_edge_in_the_upper_class(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("smiles,Value\nC,0.5\nCC,1\nCCC,2.99\nCCCC,3\nCCO,nan\nCN,\nCO,x\n")
    table = read_label_table(path)
    assert table.kind == "value" and table.column == "Value"
    inputs, labels, names, rule, skipped = label_rows(table, bins=[1, 3])
    assert inputs == ["C", "CC", "CCC", "CCCC"]
    assert labels == [0, 1, 1, 2]
    assert names == bin_class_names([1, 3]) == ["< 1", "1–3", ">= 3"]
    assert "binned at 1, 3" in rule
    reasons = sorted(s["reason"] for s in skipped)
    assert reasons == ["empty input or label", "value 'nan' is not a number",
                       "value 'x' is not a number"]
    with pytest.raises(ConfigError, match="give bins"):
        label_rows(table)
    with pytest.raises(ConfigError, match="strictly ascending"):
        label_rows(table, bins=[3, 1])
    with pytest.raises(ConfigError, match=r"2 bin edge.*3 classes.*2 class names"):
        label_rows(table, classes=["a", "b"], bins=[1, 3])


def test_class_column_names_order_and_unknown_classes(tmp_path):
    (tmp_path / "w.xyz").write_text((STRUCTURES / "water.xyz").read_text())
    path = tmp_path / "c.tsv"
    path.write_text("input\tlabel\nC\t10\nCC\t9\nw.xyz\t10\nCO\t2\n")
    table = read_label_table(path)
    inputs, labels, names, _, skipped = label_rows(table)
    assert names == ["2", "9", "10"]  # numbers sort as numbers
    assert labels == [2, 1, 2, 0] and skipped == []
    assert inputs[2] == str(tmp_path / "w.xyz")  # relative to the labels file
    inputs, labels, names, _, skipped = label_rows(table, classes=["10", "9"])
    assert labels == [0, 1, 0] and [s["reason"] for s in skipped] == [
        "class '2' is not one of 10, 9"]
    with pytest.raises(ConfigError, match="labels are class names"):
        label_rows(table, bins=[1])
    for text, reason in (("smiles,gap,class\nC,1,a\n", "both a class and a value column"),
                         ("smiles,foo\nC,1\n", "no class or value column"),
                         ("name,class\nC,a\n", "no input column")):
        path.with_suffix(".csv").write_text(text)
        with pytest.raises(InputError, match=reason):
            read_label_table(path.with_suffix(".csv"))
    with pytest.raises(InputError, match="no such labels file"):
        read_label_table(tmp_path / "missing.csv")
    semicolons = tmp_path / "excel.csv"  # a spreadsheet saved with a decimal-comma locale
    semicolons.write_text("SMILES;Class\nC;a\nCC;b\n")
    assert [row[1:] for row in read_label_table(semicolons).rows] == [("C", "a"), ("CC", "b")]
    semicolons.write_text("smiles;dipole\nC;2,5\nCC;0,25\nCO;1,2,3\n")
    inputs, labels, _, _, skipped = label_rows(read_label_table(semicolons), bins=[1])
    assert labels == [1, 0] and skipped[0]["reason"] == "value '1,2,3' is not a number"


def test_labelled_dataset_skips_bad_and_other_kind_and_splits_by_class():
    rows = _dipoles()
    inputs = [s for s, _ in rows] + ["((", str(STRUCTURES / "NaCl.cif"), rows[0][0]]
    labels = [int(d >= 2.5) for _, d in rows] + [0, 1, 1 - int(rows[0][1] >= 2.5)]
    ds = labelled_dataset(inputs, labels, ["weak", "strong"], progress=False, workers=1)
    assert ds.meta["image"] == "polarity" and ds.meta["domain"]["kind"] == "molecule"
    assert len(ds) == 48 and ds.images.shape[1:] == (14, 29, 10)
    assert ds.report["skipped"][-1] == {  # a repeat would leak between the splits
        "where": rows[0][0], "reason": f"the same image as {rows[0][0]} with another label; "
        "the first is kept"}
    reasons = {s["where"]: s["reason"] for s in ds.report["skipped"][:-1]}
    assert set(reasons) == {"((", str(STRUCTURES / "NaCl.cif")}
    assert reasons[str(STRUCTURES / "NaCl.cif")] == \
        "a crystal, but the polarity image is for molecules"
    assert not reasons["(("].startswith("((:")  # the name is not repeated in the reason
    for code in (0, 1, 2):  # every split holds both classes
        assert set(ds.labels[ds.splits == code].tolist()) == {0, 1}
    assert ds.meta["split_class_counts"]["train"] == [21, 18]
    # each image is the one predict makes of the same input
    from andersonn.images import IMAGE_SPECS, encode
    from andersonn.structures import read_conformers

    first = read_conformers(inputs[0], 1)[0]
    np.testing.assert_array_equal(ds.images[0], encode(first, IMAGE_SPECS["polarity"]))
    with pytest.raises(InputError, match=r"too few usable structures.*class strong \(2\)"):
        labelled_dataset(inputs[:12], [0] * 10 + [1, 1], ["weak", "strong"], progress=False,
                         workers=1)


def test_labelled_build_is_cached_until_the_file_changes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(DIPOLES.read_text())
    first = build_labelled_dataset(path, bins=[2.5], progress=False, workers=1,
                                   cache_dir=tmp_path / "cache")
    again = build_labelled_dataset(path, bins=[2.5], progress=False, workers=1,
                                   cache_dir=tmp_path / "cache")
    assert again.directory == first.directory
    assert again.meta["built_at"] == first.meta["built_at"]
    assert first.meta["thresholds"] == [2.5] and first.classes == ["< 2.5", ">= 2.5"]
    other = build_labelled_dataset(path, bins=[2.0], progress=False, workers=1,
                                   cache_dir=tmp_path / "cache")
    assert other.directory != first.directory
    path.write_text(DIPOLES.read_text() + "CCCC,0.0\n")
    changed = build_labelled_dataset(path, bins=[2.5], progress=False, workers=1,
                                     cache_dir=tmp_path / "cache")
    assert changed.directory != first.directory and len(changed) == 49


def test_train_predict_evaluate_resume_on_a_labels_file(tmp_path, capsys):
    run = tmp_path / "run"
    common = [str(DIPOLES), "--bins", "2.5", "--classes", "weak,strong", "--out", str(run),
              "--threads", "1", "--workers", "1", "--no-progress", "--hidden", "16"]
    assert main(["train", *common, "--epochs", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "custom" and config["classes"] == ["weak", "strong"]
    assert config["thresholds"] == [2.5] and config["domain"]["kind"] == "molecule"
    assert config["train"]["labels"] == str(DIPOLES.resolve())
    assert json.loads((run / "test_metrics.json").read_text())["confusion_matrix"]
    capsys.readouterr()
    out = tmp_path / "p.json"
    assert main(["predict", str(run), "CC(=O)N", str(STRUCTURES / "NaCl.cif"), "--out",
                 str(out)]) == 0  # the crystal fails alone
    rows = json.loads(out.read_text())["predictions"]
    assert rows[0]["class"] in ("weak", "strong") and not rows[1]["ok"]
    assert "trained on molecules only" in rows[1]["error"]
    scores = tmp_path / "s.json"
    assert main(["evaluate", str(run), "--labels", str(DIPOLES), "--out", str(scores)]) == 0
    assert json.loads(scores.read_text())["n"] == 48
    assert main(["evaluate", str(run)]) == 0  # its own test split, from the cache
    assert "inputs of the test split" in capsys.readouterr().out
    assert main(["train", *common, "--epochs", "2", "--resume"]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    other_bins = [v if v != "2.5" else "3" for v in common]
    assert main(["train", *other_bins, "--epochs", "3", "--resume"]) == 2  # other labels
    assert "cannot resume" in capsys.readouterr().err


def test_train_command_errors(tmp_path, capsys):
    values = tmp_path / "v.csv"
    values.write_text("smiles,gap\nC,1\n")
    for argv, message in (
            (["train", "nonsense"], "neither a task"),
            (["train", str(tmp_path / "gone.csv")], "no such labels file"),
            (["train", "polarity", "--bins", "2"], "--bins applies to a labels file"),
            (["train", str(values)], "give bins"),
            (["train", str(values), "--bins", "1,x"], "numbers separated by commas"),
            (["train", str(DIPOLES), "--limit", "10", "--bins", "2.5"], "limit applies")):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(ConfigError, match="bins applies to training on a labels file"):
        TrainConfig(bins=[1.0])
    with pytest.raises(ConfigError, match="image applies"):  # not silently ignored
        TrainConfig.from_dict({"task": "polarity", "image": "crystal-gap"})
    assert TrainConfig(labels="x.csv").task == "custom"


def test_classifier_fit_on_structures_predicts_structures():
    from andersonn.predict import Classifier

    rows = _dipoles()
    inputs = [s for s, _ in rows] + ["not-a-smiles"]
    names = ["strong" if d >= 2.5 else "weak" for _, d in rows] + ["weak"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = Classifier(epochs=1, hidden=16, threads=1, image="polarity").fit(inputs, names)
    assert any("1 row(s) skipped (not-a-smiles:" in str(w.message) for w in caught)
    assert list(clf.classes_) == ["strong", "weak"]
    assert clf.config_["image_spec"]["name"] == "polarity"
    probs = clf.predict_proba(inputs[:3])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1)
    assert set(clf.predict(inputs[:3])) <= {"strong", "weak"}
    with pytest.raises(InputError, match="val is for images"):
        clf.fit(inputs, names, val=(inputs, names))
    with pytest.raises(InputError, match=r"shape \(N, C, H, W\) or a list of structures"):
        clf.fit(np.zeros((3, 4, 5)), [0, 1, 0])


def test_a_file_source_encodes_as_the_task_builds_encode_its_text():
    """Images from files named in a labels file equal those a task build makes from the same
    text (scripts/qm9_holdout.py --split all: training on the xyz files reproduces a build)."""
    from andersonn.images import featurize_many
    from andersonn.images.batch import SOURCE

    files = [STRUCTURES / "acetonitrile.xyz", STRUCTURES / "qm9_strained.xyz",
             STRUCTURES / "water.xyz"]
    as_text = featurize_many([(f.read_text(), "xyz", f.name) for f in files], "polarity",
                             workers=1, progress=False)
    as_source = featurize_many([(str(f), SOURCE, f.name) for f in files], "polarity",
                               workers=1, progress=False)
    assert as_text.ok_indices == as_source.ok_indices == [0, 1, 2]
    np.testing.assert_array_equal(as_text.images, as_source.images)
    assert as_text.summaries == as_source.summaries


def test_data_clean_removes_builds_of_changed_or_deleted_labels_files(tmp_path, capsys):
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    path = tmp_path / "d.csv"
    path.write_text(DIPOLES.read_text())
    kwargs = {"bins": [2.5], "progress": False, "workers": 1, "cache_dir": cache}
    # (the builds are closed at once: clean keeps a build a process has memory-mapped)
    first = build_labelled_dataset(path, **kwargs).directory
    assert clean_datasets(cache_dir=cache, dry_run=True) == []  # current: kept, not listed
    path.write_text(DIPOLES.read_text() + "CCCC,0.0\n")
    second = build_labelled_dataset(path, **kwargs).directory
    gc.collect()
    (record,) = clean_datasets("custom", cache_dir=cache, dry_run=True)
    assert record["path"] == str(first) and record["action"] == "would remove"
    assert record["reason"] == f"its labels file {path} has changed since"
    assert first.is_dir()  # a dry run deletes nothing
    path.unlink()
    assert main(["data", "clean", "custom", "--cache-dir", str(cache)]) == 0
    assert "is gone" in capsys.readouterr().out
    assert not first.exists() and not second.exists()


def test_the_image_is_chosen_by_the_first_readable_structure():
    for name, image in (("ethanol.mol", "polarity"), ("NaCl.cif", "crystal-gap"),
                        ("mof_ABAVIJ_clean.cif", "mof-pore"),
                        ("mof_KECRAL10_clean.cif", "crystal-gap")):  # Cd3(CN)6: no hydrogen
        assert choose_image([str(STRUCTURES / name)], None) == image, name
    assert choose_image([str(STRUCTURES / "junk.cif"), str(STRUCTURES / "mof_ABAVIJ_clean.cif")],
                        None) == "mof-pore"
    assert choose_image(["CCO"], "crystal-gap") == "crystal-gap"
    with pytest.raises(InputError, match="cannot tell molecules from crystals"):
        choose_image([str(STRUCTURES / "junk.cif")], None)


def test_named_input_and_label_columns(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("ID,SMILES code,Kind,mu\n1,C,a,0.5\n2,CC,b,3\n3,CO,a,x\n")
    with pytest.raises(InputError, match="name it with --input-column"):
        read_label_table(path)
    table = read_label_table(path, input_column="smiles CODE", label_column="kind")
    assert (table.kind, table.column) == ("class", "Kind")
    assert [(item, raw) for _, item, raw in table.rows] == [("C", "a"), ("CC", "b"), ("CO", "a")]
    # a named column of numbers holds values only where the caller bins values
    values = read_label_table(path, input_column="SMILES code", label_column="mu", values=True)
    assert (values.kind, values.column) == ("value", "mu")  # the 'x' row is skipped
    path.write_text("ID,SMILES code,Kind,mu\n1,C,a,0.5\n2,CC,b,3\n")
    values = read_label_table(path, input_column="SMILES code", label_column="mu", values=True)
    assert values.kind == "value"
    assert read_label_table(path, input_column="SMILES code", label_column="mu").kind == "class"
    with pytest.raises(InputError, match=r"no column 'nope' \(label column\); it has ID, "):
        read_label_table(path, input_column="SMILES code", label_column="nope")
    many = tmp_path / "many.csv"
    many.write_text("smiles,label\n" + "".join(f"C,{0.1 * i:.1f}\n" for i in range(25)))
    with pytest.raises(ConfigError, match="25 different numbers: values, not class names"):
        label_rows(read_label_table(many))


def test_train_and_evaluate_with_named_columns(tmp_path, capsys):
    renamed = tmp_path / "renamed.csv"
    lines = DIPOLES.read_text().splitlines()
    renamed.write_text("\n".join(["Molecule,mu (D)", *lines[1:]]) + "\n")
    run = tmp_path / "run"
    assert main(["train", str(renamed), "--input-column", "molecule", "--label-column",
                 "MU (D)", "--bins", "2.5", "--out", str(run), "--epochs", "1", "--threads", "1",
                 "--workers", "1", "--no-progress", "--hidden", "16"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["label_column"] == "MU (D)" and config["thresholds"] == [2.5]
    assert "column 'mu (D)' binned at 2.5" in config["label_rule"]
    scores = tmp_path / "s.json"  # evaluate reads the columns the run was trained with
    assert main(["evaluate", str(run), "--labels", str(renamed), "--out", str(scores)]) == 0
    assert json.loads(scores.read_text())["n"] == 48
    assert main(["evaluate", str(run), "--labels", str(DIPOLES), "--input-column", "smiles",
                 "--label-column", "dipole"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--label-column", "mu"]) == 2
    assert "apply to --labels" in capsys.readouterr().err
    assert main(["train", "polarity", "--input-column", "x"]) == 2
    assert "--input-column applies to a labels file" in capsys.readouterr().err


def test_a_spreadsheets_unicode_text_export_is_read(tmp_path):
    # Excel's "Unicode text": UTF-16 with a byte-order mark, tab-separated
    path = tmp_path / "export.txt"
    path.write_bytes("smiles\tclass\nCCO\tpolar\nCC\tapolar\n".encode("utf-16"))
    table = read_label_table(path)
    assert [(item, raw) for _, item, raw in table.rows] == [("CCO", "polar"), ("CC", "apolar")]
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"smiles,class\nCC\x00O,polar\n")
    with pytest.raises(InputError, match="binary data, not a CSV / TSV text file"):
        read_label_table(binary)
