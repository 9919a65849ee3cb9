"""Readers (s18 cleanups): a file of several structures refused by read_structure is counted,
not built; a file of one is cut once; an input names a file after one stat."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from andersonn.errors import InputError
from andersonn.structures import read_records, read_structure, readers

FIX = Path(__file__).parent / "fixtures" / "structures"


def _library(path: Path, count: int) -> None:
    """An SDF of ``count`` benzene records titled mol1, mol2, ..."""
    block = (FIX / "benzene.sdf").read_text().split("$$$$")[0].split("\n", 1)[1]
    path.write_text("".join(f"mol{k}\n{block}$$$$\n" for k in range(1, count + 1)))


def test_a_many_record_file_is_counted_not_built(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sdf = tmp_path / "lib.sdf"
    _library(sdf, 300)
    built: list[str] = []
    texts = 0

    class Counting(readers.StructureRecord):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.name)

    real_text = readers._Part.text

    def counting_text(self: Any) -> str | None:
        nonlocal texts
        text = real_text(self)
        texts += text is not None
        return text

    monkeypatch.setattr(readers, "StructureRecord", Counting)
    monkeypatch.setattr(readers._Part, "text", counting_text)
    with pytest.raises(InputError, match=r"^lib\.sdf: holds 300 structures \(sdf records\); "
                                         r"give a file with one, or read them all"):
        read_structure(sdf)
    assert built == ["lib.sdf#1 (mol1)", "lib.sdf#2 (mol2)"]  # the two that show it is several
    assert texts == 2
    # a SMILES file of many lines too
    smi = tmp_path / "lib.smi"
    smi.write_text("# a library\n" + "".join(f"{'C' * (k % 4 + 1)} m{k}\n" for k in range(500)))
    built.clear()
    with pytest.raises(InputError, match=r"^lib\.smi: holds 500 structures \(smiles records\)"):
        readers.read_conformers(smi, 3)
    assert len(built) == 2


def test_a_file_of_one_structure_is_cut_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_cut = readers._cut

    def counting_cut(lines: Any, fmt: str, limit: float = float("inf")) -> Any:
        calls.append(fmt)
        return real_cut(lines, fmt, limit)

    monkeypatch.setattr(readers, "_cut", counting_cut)
    one = tmp_path / "one.smi"
    one.write_text("# ethanol\nCCO ethanol\n")
    assert [(r.name, r.text) for r in read_records(one)] == [("one.smi", "CCO")]
    assert calls == ["smiles"]
    calls.clear()
    # a CIF of several blocks, one with atoms: that block alone, from the one cut
    si = (FIX / "Si_conventional.cif").read_text()
    cif = tmp_path / "si.cif"
    cif.write_text("data_global\n_journal_year 2024\n\n" + si)
    (record,) = read_records(cif)
    assert calls == ["cif"]
    assert record.text.startswith("data_") and "_journal_year" not in record.text
    assert record.text.rstrip() == si[si.index("data_"):].rstrip()
    assert read_structure(cif).formula == "Si8"
    # a CIF of one block is read whole (comments before the block included)
    calls.clear()
    lone = tmp_path / "lone.cif"
    lone.write_text("# from a test\n" + si)
    assert read_records(lone)[0].text == "# from a test\n" + si
    assert calls == ["cif"]


def test_an_input_is_told_from_a_file_with_one_stat(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_stat = Path.stat

    def counting_stat(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        seen.append(str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", counting_stat)
    assert readers._locate("CCO", None, None) == (None, "CCO", "smiles", "CCO")
    assert seen == ["CCO"]
    seen.clear()
    path = tmp_path / "water.xyz"
    path.write_text((FIX / "water.xyz").read_text())
    assert readers._locate(str(path), None, None)[0] == path
    assert seen == [str(path)]
    if Path("/dev/null").exists():
        seen.clear()
        with pytest.raises(InputError, match=r"^/dev/null: not a regular file "
                                             r"\(a character device\)$"):
            readers._locate("/dev/null", None, None)
        assert seen == ["/dev/null"]


def test_label_rows_names_the_row_of_each_input(tmp_path: Path) -> None:
    import copy
    import pickle

    from andersonn.data.labelled import LabelledRows, label_rows, read_label_table

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


def test_a_one_smiles_file_with_a_latin1_title_separator_is_read(tmp_path):
    # 0xA0 (NBSP in Latin-1) separates the SMILES from its title; it is whitespace only once
    # the undecodable byte has been decoded, so the line is cut after decoding
    from andersonn.structures.readers import read_records, read_structure

    path = tmp_path / "one.smi"
    path.write_bytes(b"CCO\xa0ethanol\n")
    assert [r.text for r in read_records(path)] == ["CCO"]
    assert read_structure(path).formula == "C2H6O"


def test_a_many_smiles_file_with_latin1_title_separators_is_cut_there(tmp_path):
    import gzip

    from andersonn.structures.readers import read_records

    path = tmp_path / "many.smi.gz"
    path.write_bytes(gzip.compress(b"CCO\xa0ethanol\nCCN\xa0amine\n"))
    assert [r.text for r in read_records(path)] == ["CCO", "CCN"]


def test_a_smiles_with_a_non_ascii_character_is_refused():
    # RDKit reads "CCOé" as ethanol, dropping the stray character without a word
    from andersonn.errors import InputError
    from andersonn.structures.readers import read_structure

    with pytest.raises(InputError, match="not ASCII"):
        read_structure("CCO\xe9")
