"""Inputs that name files: a file told from a SMILES string with one stat, and what exists
but is no regular file (a device, a pipe), an empty file and a missing one refused by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from andersonn.errors import InputError
from andersonn.structures import read_records, read_structure, readers

FIX = Path(__file__).parent / "fixtures" / "structures"


def test_existing_non_regular_files_are_not_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_structure("/dev/null")
    assert str(info.value) == "/dev/null: not a regular file (a character device)"
    fifo = tmp_path / "pipe.xyz"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as info:
        read_records(fifo)
    assert str(info.value) == f"{fifo}: not a regular file (a pipe)"
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(InputError, match=r"^empty\.xyz: empty file$"):
        read_structure(empty)
    with pytest.raises(InputError, match=r"^nothing/here\.xyz: no such file$"):
        read_structure("nothing/here.xyz")


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


def test_a_word_read_in_a_given_format_is_named_by_itself() -> None:
    from andersonn.errors import InputError
    from andersonn.structures import read_structure

    with pytest.raises(InputError, match=r"^CCO: not a CIF"):
        read_structure("CCO", fmt="cif")
    with pytest.raises(InputError, match=r"^input: "):  # text of several lines: "input"
        read_structure("data_x\n_cell_length_a 1\n", fmt="cif")
