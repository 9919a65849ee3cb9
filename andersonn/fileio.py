"""Atomic file writes (a crash never leaves a half-written file where a good one was), text
decoding of users' files, and a lock that keeps two writers out of one folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # not on Windows: folders are then not locked
    fcntl = None  # type: ignore[assignment]

from andersonn.errors import AndersonnError

LOCK_NAME = ".lock"


class FolderBusy(AndersonnError):
    """Another process holds the folder's lock (:func:`folder_lock`)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    fd, tmp_name = _temp_beside(target)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_files(contents: Mapping[str | os.PathLike[str], bytes]) -> None:
    """Write several files as one: every target is checked and every temporary file written
    (and fsynced) before the first is renamed over its target, so a target that cannot be
    written (a folder of that name, no permission) leaves all of them untouched."""
    targets = [Path(p) for p in contents]
    for target in targets:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(target))
    temps: list[str] = []
    try:
        for target, data in zip(targets, contents.values(), strict=True):
            fd, tmp_name = _temp_beside(target)
            temps.append(tmp_name)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for target, tmp_name in zip(targets, list(temps), strict=True):
            _replace(tmp_name, target)
            temps.remove(tmp_name)
    finally:
        for tmp_name in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)


# the temporary files _temp_beside makes: "." + the target's name + "." + mkstemp's 8 random
# characters + ".tmp"
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_temp_files(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Delete the temporary files that atomic writes into ``folder`` (and, ``recursive``, its
    subfolders) left when their process was killed mid-write; only files named as
    :func:`atomic_open` names them. Returns the paths removed (a missing folder: none).
    Call it only where no other process is writing into ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in (root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")):
        if TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _temp_beside(target: Path) -> tuple[int, str]:
    """A new temporary file (fd, name) in ``target``'s folder (created if missing), with the
    permissions a plain open() would give; an error names ``target``, not the temporary."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target) from None
    # mkstemp creates the file 0600; give it the permissions a plain open() would.
    os.fchmod(fd, 0o666 & ~_current_umask())
    return fd, tmp_name


def _replace(tmp_name: str, target: Path) -> None:
    try:
        os.replace(tmp_name, target)
    except OSError as exc:
        raise _naming(exc, target) from None


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error, about ``target`` (what the user asked for) rather than a temporary."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(target))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def decode_text(data: bytes) -> str:
    """Text of a user's file: UTF-16 or UTF-32 when it opens with their byte-order mark (what
    Windows tools call "Unicode"), else UTF-8 (a byte-order mark dropped, so it is not part of
    line 1), else Latin-1, in which any byte is a character (a spreadsheet's or old tool's
    export). Undecodable UTF-16/32 falls through to the same rules."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def is_wide_unicode(data: bytes) -> bool:
    """Whether ``data`` is UTF-16/32 text with a byte-order mark, whose NUL bytes are text, not
    a sign of a binary file."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                data[len(bom):].decode(codec)
            except UnicodeDecodeError:
                return False
            return True
    return False


# UTF-32 first: its little-endian mark begins with UTF-16's
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
              (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "another process") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block, or raise
    :class:`FolderBusy` at once if another process holds it; ``what`` names the other writer
    in the message. The lock is the kernel's (``flock`` on ``folder/.lock``, which holds the
    holder's process id and is removed on release), so a killed holder never leaves the folder
    locked. A folder this call created that is empty at the end is removed again. Yields the
    lock file's path."""
    root = Path(folder)
    created = not root.exists()
    path = root / LOCK_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = _locked_file(path, root, what)
    except OSError as exc:
        raise _naming(exc, root) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        # unlinked before the lock is released: a waiter that opened it checks, once it holds
        # the lock, that the name still leads to its file (_locked_file)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                root.rmdir()  # only if empty


def _locked_file(path: Path, root: Path, what: str) -> int:
    """An open descriptor of ``path`` whose flock this process holds (see folder_lock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (process {holder})" if holder.isdigit() else ""
            raise FolderBusy(f"{root}: {what} is writing into it{pid}; wait for it to end, "
                             "or choose another folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed it meanwhile: lock the new one


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, allow_nan: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (``allow_nan=False``: strict JSON,
    a NaN/Inf raises instead of being written as a non-standard literal)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=allow_nan,
                                       default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that ``json`` does not know."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
