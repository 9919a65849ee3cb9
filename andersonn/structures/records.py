"""A structure file (or text) cut into :class:`StructureRecord` s, one per structure: SDF
records, xyz frames, CIF data blocks, mol2 molecules, PDB models, lines of a SMILES file. A file
is read as a stream (gzip read through, by its magic bytes), checked for binary data, and cut as
it is read, so only one record at a time is held."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import itertools
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from andersonn.errors import InputError
from andersonn.fileio import decode_text, is_wide_unicode
from andersonn.structures.checks import _fail
from andersonn.structures.formats import (
    MULTI_RECORD_FORMATS,
    format_from_path,
    normalise_format,
    sniff_format,
)
from andersonn.structures.xyz import _xyz_atom_line

MAX_FILE_BYTES = 200 * 1024 * 1024
"""The largest structure read: a file of one (uncompressed), or one record of a file of several
(such a file is read as a stream, record by record, and may be of any size)."""
_HEAD_BYTES = 65536
_CHUNK_CHARS = 1 << 18  # how much of a file of several structures is read at a time


@dataclasses.dataclass(frozen=True)
class StructureRecord:
    """One structure's text cut out of a file that holds several (an SDF record, an xyz frame,
    a CIF data block, a mol2 molecule, a PDB model, a line of a SMILES file). Readers take it
    wherever they take a path; ``name`` is ``FILE#k`` (1-based), with the record's title in
    brackets where it has one. ``error``: why the record cannot be read (a record past
    :data:`MAX_FILE_BYTES`, whose text is then not kept), raised when it is read."""

    name: str
    text: str
    fmt: str
    error: str = ""


def _named_records(name: str, parts: Iterable[tuple[str, str | None]],
                   fmt: str) -> Iterator[StructureRecord]:
    """The records of a file or text of several structures, ``NAME#k (title)``; a part's text
    None: a record too large to hold, which fails when read."""
    for k, (title, body) in enumerate(parts, 1):
        label = f"{name}#{k}" + (f" ({_unescape(title)})" if title else "")
        if body is None:
            yield StructureRecord(label, "", fmt, f"record too large (over {MAX_FILE_BYTES} bytes)")
        else:
            yield StructureRecord(label, _unescape(body), fmt)


def split_records(text: str, fmt: str) -> list[tuple[str, str]]:
    """``(title, text)`` of each structure in ``text`` of format ``fmt`` (titles may be "").
    Only sdf, xyz, cif, mol2, pdb and smiles (one per line) can hold several; anything
    unparsable is left whole, so that reading it reports the reason."""
    # lines end at "\n", "\r\n" or "\r", kept as they are (str.splitlines would also cut at
    # form feeds and other separators a data field may hold)
    parts = [(title, body or "") for title, body in _cut(io.StringIO(text, newline=""), fmt)]
    if len(parts) > 1 or (parts and fmt == "sdf"):
        return parts
    return [("", _sole_text(text, fmt, parts[0][1] if parts else None))]


def _sole_text(text: str, fmt: str, first: str | None) -> str:
    """The structure of ``text``, which holds at most one, given the text of its first part as
    cut (None: nothing was cut): a SMILES file's SMILES, the one CIF data block with atoms of
    a CIF of several blocks; else ``text`` whole."""
    if first is not None and (fmt == "smiles" or (fmt == "cif" and len(
            re.findall(r"^[ \t]*data_", text, re.M)) > 1)):
        return first
    return text


def sdf_fields(text: str) -> dict[str, str]:
    """The data fields of one SDF record (``> <name>`` then value lines up to a blank line);
    multi-line values are joined with newlines."""
    fields: dict[str, str] = {}
    lines = text.splitlines()
    i = next((k + 1 for k, ln in enumerate(lines) if ln.strip() == "M  END"), len(lines))
    while i < len(lines):
        m = re.match(r"^>.*?<([^>]*)>", lines[i])
        i += 1
        if not m:
            continue
        values = []
        while i < len(lines) and lines[i].strip():
            values.append(lines[i].rstrip())
            i += 1
        fields[m.group(1).strip()] = "\n".join(values)
    return fields


class _Part:
    """The lines of one record (or of a whole file) as they are read; past ``limit``
    characters only counted, but the first line (a record's title) is always kept."""

    __slots__ = ("first", "limit", "lines", "size")

    def __init__(self, limit: float) -> None:
        self.lines: list[str] | None = []
        self.first: str | None = None
        self.size = 0
        self.limit = limit

    def add(self, line: str) -> None:
        if self.first is None:
            self.first = line
        self.size += len(line)
        if self.lines is not None:
            if self.size > self.limit:
                self.lines = None
            else:
                self.lines.append(line)

    def text(self) -> str | None:
        """The record's text; None past the limit."""
        return None if self.lines is None else "".join(self.lines)


def _cut(lines: Iterable[str], fmt: str, limit: float = float("inf")
         ) -> Iterator[tuple[str, str | None]]:
    """``(title, text)`` of each structure in ``lines`` (newlines kept), as they are read; the
    text is None for a record of more than ``limit`` characters. Formats that hold one structure
    give nothing."""
    if fmt == "sdf":
        return _sdf_parts(lines, limit)
    if fmt == "xyz":
        return _xyz_parts(lines, limit)
    if fmt in ("cif", "mol2", "pdb"):
        return _block_parts(lines, fmt, limit)
    if fmt == "smiles":  # cut decoded: a Latin-1 NBSP before a title is whitespace only then
        return ((" ".join(tokens[1:])[:60], tokens[0] if len(line) <= limit else None)
                for line in lines
                if (tokens := _unescape(line).split()) and not tokens[0].startswith("#"))
    return iter(())


def _sdf_parts(lines: Iterable[str], limit: float) -> Iterator[tuple[str, str | None]]:
    """SDF records: the text between ``$$$$`` lines that is not blank, titled by its first
    line."""
    part, blank = _Part(limit), True
    for line in lines:
        if line.startswith("$$$$") and not line[4:].strip(" \t\r\n"):
            if not blank:
                yield (part.first or "").strip()[:60], part.text()
            part, blank = _Part(limit), True
            continue
        if blank:
            blank = not line.strip()
        part.add(line)
    if not blank:
        yield (part.first or "").strip()[:60], part.text()


def _block_parts(lines: Iterable[str], fmt: str, limit: float
                 ) -> Iterator[tuple[str, str | None]]:
    """CIF data blocks with atoms (titled by the block name), mol2 molecules (by the molecule
    name) or PDB models (``MODEL`` to ``ENDMDL``); lines outside them do not count."""
    part: _Part | None = None
    title, atoms = "", False
    for line in lines:
        if fmt == "pdb":
            if part is None and line.startswith("MODEL "):
                part = _Part(limit)
            if part is not None:
                part.add(line)
                if line.startswith("ENDMDL"):
                    yield "", part.text()
                    part = None
            continue
        if fmt == "cif" and re.match(r"[ \t]*data_", line):
            if part is not None and atoms:
                yield title, part.text()
            part, title, atoms = _Part(limit), line.split(None, 1)[0][5:][:60], False
        elif fmt == "mol2" and line.startswith("@<TRIPOS>MOLECULE"):
            if part is not None:
                yield title or "", part.text()
            part, title = _Part(limit), None
        elif fmt == "mol2" and part is not None and title is None:
            title = line.strip()[:60]
        if part is not None:
            part.add(line)
            atoms = atoms or "_atom_site" in line
    if part is not None and (fmt == "mol2" or (fmt == "cif" and atoms)):
        yield title or "", part.text()


def _xyz_count(line: str) -> int | None:
    """The atom count of a line that holds a lone integer, else None."""
    tokens = line.split()
    if len(tokens) != 1:
        return None
    try:
        return int(tokens[0])
    except ValueError:
        return None


def _xyz_parts(lines: Iterable[str], limit: float) -> Iterator[tuple[str, str | None]]:
    """Consecutive xyz frames (atom count, comment, atoms). Lines after the last frame that
    do not start with an atom count are not a frame (QM9's own xyz files end with frequencies,
    SMILES and InChI). A frame cut short ends where the next frame's count line starts (or at
    the end of the file) and then fails alone with the xyz reader's reason."""
    stream = iter(lines)
    held: _Part | None = None  # the last frame, until it is known to be complete
    pending: str | None = None  # a count line that ended a frame cut short
    while (line := pending if pending is not None else next(stream, None)) is not None:
        pending = None
        if not line.strip():
            continue
        n = _xyz_count(line)
        if held is None and n is None:  # the first frame: "3 water" is read as 3 atoms
            with contextlib.suppress(ValueError):
                n = int(line.split()[0])
        if n is None or n < 0:
            if held is None:  # no atom count at all: one frame, which the reader refuses
                held = _Part(limit)
                held.add(line)
                for rest in stream:
                    held.add(rest)
            elif _xyz_atom_line(line):  # more atoms than the count said: the reader refuses
                held.add(line)
                for rest in stream:
                    held.add(rest)
            break  # else: trailing text, not a frame
        if held is not None:
            yield "", held.text()
        held = _Part(limit)
        held.add(line)
        comment = next(stream, None)
        if comment is None:
            break
        held.add(comment)
        for _ in range(n):
            atom = next(stream, None)
            if atom is None:
                break
            if (count := _xyz_count(atom)) is not None and count >= 0:
                pending = atom  # the next frame's count line: this frame is cut short
                break
            held.add(atom)
    if held is not None:
        yield "", held.text()


def _count_records(path: Path, fmt: str, name: str) -> int:
    """How many records a file of format ``fmt`` (one that may hold several) holds, each cut
    out as it is read but none kept."""
    return sum(1 for _ in _cut(_TextFile(path, name).lines(), fmt, 0))


def _file_records(path: Path, fmt: str | None, name: str) -> Iterator[StructureRecord]:
    """The records of a file. A format that holds one structure is read whole (refused past
    :data:`MAX_FILE_BYTES`); the others are cut as they are read, each record refused past
    that size, and a file that turns out to hold one structure is that structure."""
    file = _TextFile(path, name)
    if fmt is not None:
        fmt = normalise_format(fmt, name)
    else:
        fmt = format_from_path(path) or file.sniff()
        if fmt is None:
            raise _fail(name, f"unknown structure format (extension {path.suffix or 'none'!r}; "
                              "give the file its format's extension, e.g. .cif, .xyz, .sdf, or "
                              "name the format: fmt= in Python, --format in andersonn image)")
    if fmt not in MULTI_RECORD_FORMATS:
        yield StructureRecord(name, file.read(), fmt)
        return
    whole = _Part(MAX_FILE_BYTES)  # the text while the file may hold one structure

    def kept(lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            whole.add(line)
            yield line
            if whole.lines is None:  # more than one structure, or too large for one
                break
        yield from lines

    lines = kept(file.lines())
    parts = _cut(lines, fmt, MAX_FILE_BYTES)
    first, second = next(parts, None), next(parts, None)
    if second is None:  # one structure (or none): the file is that structure
        for _ in lines:  # with what follows it (text after an xyz frame)
            if whole.lines is None:
                break
        text = whole.text()
        if text is None:
            raise file.too_large()
        # the one CIF block with atoms; the SMILES (the first part, not cut again)
        body = None if first is None else _unescape(first[1] or "")
        yield StructureRecord(name, _sole_text(_unescape(text), fmt, body), fmt)
        return
    whole.lines = None  # several structures: no longer kept
    yield from _named_records(name, itertools.chain((first, second), parts), fmt)


class _TextFile:
    """A structure file read as text: gzip read through (by its magic bytes), universal
    newlines, UTF-8 (bytes that are not UTF-8 kept as escapes, for :func:`_unescape`). Its first
    64 KiB are checked on opening (empty file, binary data)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name, self.packed = path, name, False
        with self._reading(), open(path, "rb") as raw:
            self.head = raw.read(_HEAD_BYTES)
        if self.head[:2] == b"\x1f\x8b":
            self.packed = True
            with self._reading(), self._open() as raw:
                self.head = raw.read(_HEAD_BYTES)
        elif path.suffix.lower() == ".gz":
            raise _fail(name, "not gzip data (a .gz file that is not gzip-compressed)")
        if not self.head.strip() and len(self.head) < _HEAD_BYTES:
            raise _fail(name, "empty file")
        _check_binary(self.head, name)

    def _open(self) -> io.BufferedIOBase:
        return gzip.open(self.path, "rb") if self.packed else open(self.path, "rb")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, zlib.error) as exc:
            if self.packed:
                raise _fail(self.name, f"corrupt gzip file ({exc})") from None
            raise _fail(self.name, f"cannot read file ({exc.strerror or exc})") from None

    def _text(self, raw: io.BufferedIOBase) -> io.TextIOWrapper:
        return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=None)

    def sniff(self) -> str | None:
        """:func:`sniff_format` of the first 64 KiB; a mol block there is an SDF when more
        follows (its ``$$$$`` may lie further on)."""
        text = self.head.decode("utf-8-sig", errors="replace")
        fmt = sniff_format(text.replace("\r\n", "\n").replace("\r", "\n"))
        return "sdf" if fmt == "mol" and len(self.head) == _HEAD_BYTES else fmt

    def too_large(self) -> InputError:
        if self.packed:
            return _fail(self.name, f"file too large uncompressed (over {MAX_FILE_BYTES} bytes)")
        with self._reading():
            return _fail(self.name, f"file too large ({self.path.stat().st_size} bytes)")

    def read(self) -> str:
        """The whole text, refused past :data:`MAX_FILE_BYTES`."""
        with self._reading():
            if not self.packed and self.path.stat().st_size > MAX_FILE_BYTES:
                raise self.too_large()
            with self._open() as raw, self._text(raw) as handle:
                text = handle.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise self.too_large()
        return _unescape(text)

    def lines(self) -> Iterator[str]:
        """The lines (newline kept; lines end at "\n" only, "\r\n" and "\r" read as it); a
        line longer than :data:`MAX_FILE_BYTES` is given only in part (enough to refuse its
        record), the rest of it skipped."""
        with self._reading(), self._open() as raw, self._text(raw) as handle:
            while line := handle.readline(MAX_FILE_BYTES + 1):
                yield line
                if len(line) > MAX_FILE_BYTES and not line.endswith("\n"):
                    while (rest := handle.readline(_CHUNK_CHARS)) and not rest.endswith("\n"):
                        pass


def _unescape(text: str) -> str:
    """Text read with escaped non-UTF-8 bytes as the old whole-file decoding had it: UTF-8,
    else Latin-1 (where any byte is not UTF-8)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")
    return text


_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\r\n\t\f")


def _check_binary(head: bytes, name: str) -> None:
    """Refuse binary data: a NUL byte, or more than 1 % control characters, in ``head``; and
    UTF-16/32 text (structure files are read as UTF-8), saying so."""
    if is_wide_unicode(head[:len(head) // 4 * 4]):  # whole code units of a cut head
        raise _fail(name, "UTF-16 or UTF-32 text; save the file as UTF-8 (or ASCII)")
    bad = len(head) - len(head.translate(None, _CONTROL_BYTES))
    if b"\x00" in head or bad > 0.01 * len(head) + 2:
        raise _fail(name, "binary data, not a structure file")


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise _fail(name, "empty file")
    _check_binary(data[:_HEAD_BYTES], name)
    text = decode_text(data)
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
