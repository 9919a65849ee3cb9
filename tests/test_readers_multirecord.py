"""Files of several structures cut into records: read record by record as a stream (past the
file-size cap, which then holds for each record alone), counted rather than built when
read_structure refuses them, a file of one cut once; xyz frames after a truncated one, SMILES
files of several lines (Latin-1 title separators, gzip), and records cut at line ends only."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from andersonn.errors import InputError
from andersonn.structures import (
    iter_records,
    read_conformers,
    read_records,
    read_structure,
    split_records,
)
from andersonn.structures import records as records_module

FIX = Path(__file__).parent / "fixtures" / "structures"
CAP = 10_000


def _library(path: Path, count: int) -> str:
    """An SDF of ``count`` benzene records titled mol1, mol2, ... (about 1 kB each)."""
    block = (FIX / "benzene.sdf").read_text().split("$$$$")[0].split("\n", 1)[1]
    text = "".join(f"mol{k}\n{block}$$$$\n" for k in range(1, count + 1))
    path.write_text(text)
    return text


def test_a_multi_record_file_past_the_cap_is_read_record_by_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "MAX_FILE_BYTES", CAP)
    sdf = tmp_path / "huge.sdf"
    _library(sdf, 40)
    assert sdf.stat().st_size > 3 * CAP
    records = read_records(sdf)
    assert [r.name for r in records] == [f"huge.sdf#{k} (mol{k})" for k in range(1, 41)]
    assert read_structure(records[0]).formula == read_structure(records[-1]).formula == "C6H6"
    # gzip read through: the cap applies to each record uncompressed, not to the file
    packed = tmp_path / "huge.sdf.gz"
    packed.write_bytes(gzip.compress(sdf.read_bytes()))
    assert [r.text for r in read_records(packed)] == [r.text for r in records]
    # xyz frames too
    frames = tmp_path / "traj.xyz"
    frames.write_text((FIX / "water.xyz").read_text() * 200)
    assert frames.stat().st_size > CAP
    assert len(read_records(frames)) == 200
    # a file of several is still not one structure
    with pytest.raises(InputError, match=r"^huge\.sdf: holds 40 structures \(sdf records\)"):
        read_structure(sdf)


def test_one_structure_past_the_cap_is_still_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "MAX_FILE_BYTES", CAP)
    one = tmp_path / "one.xyz"
    one.write_text("3\n" + "x" * CAP + "\nO 0 0 0\nH 0 0 0.96\nH 0.93 0 -0.24\n")
    size = one.stat().st_size
    for read in (read_structure, read_records):
        with pytest.raises(InputError) as info:
            read(one)
        assert str(info.value) == f"one.xyz: file too large ({size} bytes)"
    packed = tmp_path / "one.xyz.gz"
    packed.write_bytes(gzip.compress(one.read_bytes()))
    with pytest.raises(InputError, match=rf"^one\.xyz\.gz: file too large uncompressed "
                                         rf"\(over {CAP} bytes\)$"):
        read_records(packed)
    # one record past the cap in a file of several fails alone, when read
    water = (FIX / "water.xyz").read_text()
    mixed = tmp_path / "mixed.xyz"
    mixed.write_text(water + one.read_text() + water)
    records = read_records(mixed)
    assert len(records) == 3 and records[1].text == ""
    assert read_structure(records[0]).formula == read_structure(records[2]).formula == "H2O"
    with pytest.raises(InputError) as info:
        read_structure(records[1])
    assert str(info.value) == f"mixed.xyz#2: record too large (over {CAP} bytes)"


def test_records_are_streamed_not_read_whole(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "MAX_FILE_BYTES", CAP)
    monkeypatch.setattr(records_module, "_CHUNK_CHARS", 8192)  # the file is read 8 kB at a time
    sdf = tmp_path / "lib.sdf"
    _library(sdf, 1500)
    size = sdf.stat().st_size
    assert size > 1_500_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(sdf))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 1500
    assert peak < size / 4  # a record and a chunk at a time (and a 64 kB head), not the file


def test_a_many_record_file_is_counted_not_built(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sdf = tmp_path / "lib.sdf"
    _library(sdf, 300)
    built: list[str] = []
    texts = 0

    class Counting(records_module.StructureRecord):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.name)

    real_text = records_module._Part.text

    def counting_text(self: Any) -> str | None:
        nonlocal texts
        text = real_text(self)
        texts += text is not None
        return text

    monkeypatch.setattr(records_module, "StructureRecord", Counting)
    monkeypatch.setattr(records_module._Part, "text", counting_text)
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
        read_conformers(smi, 3)
    assert len(built) == 2


def test_a_file_of_one_structure_is_cut_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_cut = records_module._cut

    def counting_cut(lines: Any, fmt: str, limit: float = float("inf")) -> Any:
        calls.append(fmt)
        return real_cut(lines, fmt, limit)

    monkeypatch.setattr(records_module, "_cut", counting_cut)
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


def test_a_truncated_xyz_frame_does_not_swallow_the_next(tmp_path: Path) -> None:
    water = (FIX / "water.xyz").read_text()
    multi = tmp_path / "multi.xyz"
    multi.write_text(water + (FIX / "acetonitrile.xyz").read_text()
                     + (FIX / "truncated.xyz").read_text() + water)
    records = read_records(multi)
    assert [r.name for r in records] == [f"multi.xyz#{k}" for k in (1, 2, 3, 4)]
    assert read_structure(records[1]).formula == "C2H3N"
    with pytest.raises(InputError) as info:
        read_structure(records[2])
    assert str(info.value) == "multi.xyz#3: truncated xyz: 2 of 5 atom lines"
    assert records[3].text == water and read_structure(records[3]).formula == "H2O"
    assert [body for _, body in split_records(multi.read_text(), "xyz")] == \
        [r.text for r in records]


def test_a_smi_file_of_several_lines_is_several_records(tmp_path: Path) -> None:
    smi = tmp_path / "my.smi"
    smi.write_text("# a library\nCCO ethanol\n\nc1ccccc1 benzene ring\nC1CC(( bad one\nCCN\n")
    records = read_records(smi)
    assert [(r.name, r.text, r.fmt) for r in records] == [
        ("my.smi#1 (ethanol)", "CCO", "smiles"), ("my.smi#2 (benzene ring)", "c1ccccc1", "smiles"),
        ("my.smi#3 (bad one)", "C1CC((", "smiles"), ("my.smi#4", "CCN", "smiles")]
    assert read_structure(records[1]).formula == "C6H6"
    with pytest.raises(InputError, match=r"^my\.smi: holds 4 structures \(smiles records\)"):
        read_structure(smi)
    packed = tmp_path / "my.smi.gz"
    packed.write_bytes(gzip.compress(smi.read_bytes()))
    assert [r.text for r in read_records(packed)] == ["CCO", "c1ccccc1", "C1CC((", "CCN"]
    # one line (with a name, after a comment) stays one structure named as the file
    one = tmp_path / "one.smi"
    one.write_text("# ethanol\nCCO ethanol\n")
    assert [(r.name, r.text) for r in read_records(one)] == [("one.smi", "CCO")]
    assert read_structure(one).formula == "C2H6O"


def test_a_one_smiles_file_with_a_latin1_title_separator_is_read(tmp_path):
    # 0xA0 (NBSP in Latin-1) separates the SMILES from its title; it is whitespace only once
    # the undecodable byte has been decoded, so the line is cut after decoding
    path = tmp_path / "one.smi"
    path.write_bytes(b"CCO\xa0ethanol\n")
    assert [r.text for r in read_records(path)] == ["CCO"]
    assert read_structure(path).formula == "C2H6O"


def test_a_many_smiles_file_with_latin1_title_separators_is_cut_there(tmp_path):
    path = tmp_path / "many.smi.gz"
    path.write_bytes(gzip.compress(b"CCO\xa0ethanol\nCCN\xa0amine\n"))
    assert [r.text for r in read_records(path)] == ["CCO", "CCN"]


def test_predict_expands_a_compressed_smi_file(tmp_path: Path) -> None:
    from andersonn.predict import expand_inputs

    packed = tmp_path / "lib.smi.gz"
    packed.write_bytes(gzip.compress(b"CCO ethanol\nCCN\n"))
    assert [(r.name, r.text) for r in expand_inputs([packed])] == \
        [(f"{packed}#1 (ethanol)", "CCO"), (f"{packed}#2", "CCN")]


def test_records_split_at_line_ends_only(tmp_path):
    # a form feed inside a data field is not a line end: "$$$$" after it ends nothing
    text = "a\n> <note>\nfoo\x0c$$$$\n\n$$$$\nb\r\n$$$$\n"
    assert split_records(text, "sdf") == [("a", "a\n> <note>\nfoo\x0c$$$$\n\n"), ("b", "b\r\n")]
    path = tmp_path / "ff.sdf"
    path.write_bytes(text.encode())
    assert [r.text for r in read_records(path)] == ["a\n> <note>\nfoo\x0c$$$$\n\n", "b\n"]
