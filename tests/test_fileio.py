"""Atomic writes: a failure mid-write leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from andersonn.fileio import atomic_open, atomic_write_json, atomic_write_text


def test_failed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write('{"epoch": 2, "trunc')
        raise RuntimeError("crash in the middle of a write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "b.txt"
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_handles_numpy_values(tmp_path):
    np = pytest.importorskip("numpy")
    atomic_write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5, "b": [0, 1, 2]}


def test_several_files_are_replaced_together_and_errors_name_the_target(tmp_path):
    from andersonn.fileio import atomic_write_files

    (tmp_path / "a.npy").write_bytes(b"old")
    (tmp_path / "a.png").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_files({tmp_path / "a.npy": b"new", tmp_path / "a.png": b"png"})
    assert info.value.filename == str(tmp_path / "a.png")
    assert (tmp_path / "a.npy").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.png"]
    (tmp_path / "a.png").rmdir()
    atomic_write_files({tmp_path / "a.npy": b"new", tmp_path / "a.png": b"png"})
    assert (tmp_path / "a.npy").read_bytes() == b"new"
    assert (tmp_path / "a.png").read_bytes() == b"png"


def test_a_failed_rename_names_the_target_not_the_temporary(tmp_path):
    (tmp_path / "t.json").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(tmp_path / "t.json", "{}")
    assert info.value.filename == str(tmp_path / "t.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig", "utf-8"])
def test_decode_text_reads_unicode_exports_by_their_byte_order_mark(codec):
    from andersonn.fileio import decode_text

    text = "CCO ethanol\u00a0(é)\nc1ccccc1\n"
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    assert decode_text(data) == text


def test_decode_text_falls_back_to_latin1_for_other_bytes():
    from andersonn.fileio import decode_text

    assert decode_text("CCO\xa0ethanol".encode("latin-1")) == "CCO\xa0ethanol"
    assert decode_text(b"\xfe\xff\x00") == "\xfe\xff\x00"  # a lone mark + odd byte: Latin-1
