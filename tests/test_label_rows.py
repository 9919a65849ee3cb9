"""label_rows on a labels file: the inputs, labels and skipped rows it returns (still a
five-tuple), and the rows it kept, named by their line in the file, through copies and pickles."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

from andersonn.data.labelled import LabelledRows, label_rows, read_label_table


def test_label_rows_names_the_row_of_each_input(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text("smiles,Value\nC,0.5\nCN,\nCC,x\nCCC,2.99\nCO,3\n")
    table = read_label_table(path)  # the row without a value is skipped on reading
    result = label_rows(table, bins=[1, 3])
    inputs, labels, names, _, skipped = result  # still the five-tuple it was
    assert isinstance(result, tuple) and len(result) == 5
    assert inputs == ["C", "CCC", "CO"] and labels == [0, 1, 2]
    assert names == ["< 1", "1–3", ">= 3"]
    assert [s["reason"] for s in skipped] == ["empty input or label",
                                              "value 'x' is not a number"]
    assert result.kept == [0, 2, 3]
    assert [table.rows[k][0] for k in result.kept] == ["v.csv line 2", "v.csv line 5",
                                                       "v.csv line 6"]
    for twin in (copy.copy(result), pickle.loads(pickle.dumps(result))):
        assert isinstance(twin, LabelledRows) and twin == result and twin.kept == result.kept
    classes = tmp_path / "c.csv"
    classes.write_text("smiles,class\nC,a\nCC,b\nCO,c\n")
    assert label_rows(read_label_table(classes), classes=["b", "a"]).kept == [0, 1]
