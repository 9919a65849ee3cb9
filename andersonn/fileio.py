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
except ImportError:  # Windows: folders are not locked there
    fcntl = None  # type: ignore[assignment]

from andersonn.errors import AndersonnWarning, FolderBusy, warn_user

LOCK_NAME = ".lock"



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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.filename is None:
            raise with_filename(exc, target) from exc  # a full disk names no file
        raise


def with_filename(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` as an OSError naming ``path`` (a failed write, ENOSPC say, or numpy's short
    write, names no file), so the command line can say it in one line."""
    reason = exc.strerror or f"{exc} (is the disk full?)"
    return OSError(exc.errno or errno.EIO, reason, os.fspath(path))


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
    wide = _wide_text(data)
    if wide is not None:
        return wide
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def is_wide_unicode(data: bytes) -> bool:
    """Whether ``data`` is UTF-16/32 text with a byte-order mark, whose NUL bytes are text, not
    a sign of a binary file."""
    return _wide_text(data) is not None


def _wide_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-16/32 by its byte-order mark; None without one, or when the
    bytes after it are not that encoding."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec)
            except UnicodeDecodeError:
                return None
    return None


# UTF-32 first: its little-endian mark begins with UTF-16's
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
              (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "another process") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block, or raise
    :class:`~andersonn.errors.FolderBusy` at once if another process holds it; ``what`` names
    the other writer in the message. The lock is the kernel's (``flock`` on ``folder/.lock``,
    which holds the holder's process id and is removed on release), so a killed holder never
    leaves the folder locked (a ``kill -9`` leaves the file, which locks nothing). Folders this
    call created that are empty at the end are removed again. On a file system that cannot
    lock (some network mounts) the block runs unlocked, with a warning. Yields the lock file's
    path."""
    root = Path(folder)
    created = _missing_folders(root)
    path = root / LOCK_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = _locked_file(path, root, what)
    except OSError as exc:
        _remove_empty(created)
        raise _naming(exc, root) from None
    except BaseException:
        _remove_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        # unlinked before the lock is released: a waiter that opened it checks, once it holds
        # the lock, that the name still leads to its file (_locked_file)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        _remove_empty(created)


def lock_holder(folder: str | os.PathLike[str]) -> int | None:
    """The process id of another live process that holds ``folder``'s lock, as its lock file
    says (None: no lock file, its process is gone, or it is this process, e.g. ``calibrate``
    reading the run it locked); reads only, takes nothing."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="ascii", errors="replace")
        pid = int(text.strip())
        if pid == os.getpid():
            return None
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


# flock errors of a file system that cannot lock (Lustre without -o flock, some FUSE/CIFS)
_NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def _locked_file(path: Path, root: Path, what: str) -> int:
    """An open descriptor of ``path`` whose flock this process holds (see folder_lock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (process {holder})" if holder.isdigit() else ""
            raise FolderBusy(f"{root}: {what} is writing into it{pid}; wait for it to end, "
                             "or choose another folder") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            warn_user(f"{root}: this file system cannot lock files ({exc.strerror}); make sure "
                      "no other process writes into this folder meanwhile", AndersonnWarning)
            return fd
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


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


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
