"""Label columns of labels files: a named column of values with a stray non-number (skipped by
its line, in training and in evaluate), bins asked of a column of class names, a column naming
only one class, and the summary of skipped rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from andersonn.data.labelled import LabelTable, describe_skipped, label_rows, read_label_table
from andersonn.errors import ConfigError, InputError
from andersonn.evaluate import read_labelled


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


def test_a_labels_file_of_one_class_is_named():
    table = LabelTable(Path("one.csv"), [("one.csv line 2", "CCO", "polar"),
                                         ("one.csv line 3", "CC", "Polar")], "class", "class")
    with pytest.raises(InputError, match=r"^one.csv: column 'class' names only one class "
                                         r"\('polar'\); a classifier needs two or more$"):
        label_rows(table)
    with pytest.raises(ConfigError, match="two or more distinct names"):  # --classes a,A
        label_rows(table, ["a", "A"])


def test_the_skip_summary_counts_the_reasons_it_leaves_out():
    skipped = [{"where": f"b.csv line {i}", "reason": "empty input or label"} for i in range(8)]
    line = describe_skipped(skipped)
    assert line.startswith("8 row(s) skipped (b.csv line 0: empty input or label; ")
    assert line.endswith("b.csv line 2: empty input or label; and 5 more)")
    assert describe_skipped(skipped[:3]).endswith("line 2: empty input or label)")
    assert describe_skipped(skipped, limit=1).endswith("label; and 7 more)")
