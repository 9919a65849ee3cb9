"""Remove dataset builds that ``load_dataset`` would refuse (``andersonn data clean``).

Every featuriser version bump leaves the old builds behind (a full ``polarity`` build is about
2 GB). :func:`clean_datasets` looks at ``<cache>/datasets/<task>/`` of each task and removes:

- builds that are **stale** (featuriser version, image spec or pinned sources differ from the
  current ones: the same test as :func:`andersonn.data.build.load_dataset`),
- builds that are **incomplete or damaged** (no ``COMPLETE`` marker, files missing/truncated),
- temporary directories of interrupted builds (``.<key>.*.tmp`` / ``.old``) older than one hour;
  younger ones are left alone, a build may be writing them,
- builds of your own labels files (``<cache>/datasets/custom/``) whose labels file is gone or
  has changed since, or that another featuriser version made,

and keeps every complete, current build. With ``all_builds`` every build is removed. Whatever
the mode, it never follows a symlink (a symlinked build or task directory is left alone), never
touches the archives or anything outside ``<cache>/datasets/<task>/``, and keeps a build that a
running process has memory-mapped (Linux: ``/proc/*/maps``; DataLoader workers re-open the
images by file name). ``LATEST`` is removed when it names a removed build.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from andersonn.data.build import (
    TEMP_MAX_AGE_S,
    _is_old_temp,
    _resolve,
    _spec_dict,
    _staleness,
    datasets_root,
)
from andersonn.data.cache import COMPLETE, file_sha256, is_complete
from andersonn.data.labelled import CUSTOM_TASK
from andersonn.data.tasks import TASKS, TaskDefinition, get_task
from andersonn.errors import AndersonnError, ConfigError

__all__ = ["clean_datasets", "tree_size"]

_TEMP_SUFFIXES = (".tmp", ".old")


def clean_datasets(
    tasks: str | Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    all_builds: bool = False,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Remove the stale / incomplete builds of ``tasks`` (default: every task); see the module.

    ``tasks`` is a task name, ``"all"``, a sequence of them, or ``None`` (every task). With
    ``all_builds`` every build of those tasks is removed; with ``dry_run`` nothing is deleted.
    Returns one dict per directory (or ``LATEST`` file) considered for removal, with keys
    ``task``, ``name``, ``path``, ``reason``, ``bytes`` and ``action``: ``"removed"``,
    ``"would remove"`` (dry run) or ``"kept"`` (young temp dir, symlink, in use). Complete,
    current builds are kept and not listed.
    """
    every = [*TASKS, CUSTOM_TASK]
    names = every if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
    if "all" in names:
        names = every
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in every]
    if unknown:  # get_task's message would leave out what only clean takes
        raise ConfigError(f"unknown task {unknown[0]!r}; choose one of "
                          f"{', '.join(every)} or all")
    task_defs = [get_task(name) for name in names if name != CUSTOM_TASK]
    root = datasets_root(cache_dir)
    mapped = _mapped_files()
    records: list[dict[str, Any]] = []
    for task in task_defs:
        current: tuple[str, dict[str, Any]] | None = None
        if not all_builds:
            _, _, _, spec, version, _ = _resolve(task.name, None, None)
            current = (version, _spec_dict(spec))
        records += _clean_task(task.name, root / task.name,
                               lambda entry, t=task, c=current: _refusal(entry, t, *c),
                               all_builds, dry_run, mapped)
    if CUSTOM_TASK in names:
        records += _clean_task(CUSTOM_TASK, root / CUSTOM_TASK, _labelled_refusal, all_builds,
                               dry_run, mapped)
    return records


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the files under ``path`` (symlinks counted as links, never followed)."""
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def _clean_task(
    name: str,
    task_root: Path,
    refusal: Callable[[Path], str | None],
    all_builds: bool,
    dry_run: bool,
    mapped: Mapping[str, set[int]],
) -> list[dict[str, Any]]:
    def record(path: Path, action: str, reason: str, size: int = 0) -> dict[str, Any]:
        return {"task": name, "name": path.name, "path": os.fspath(path),
                "reason": reason, "bytes": size, "action": action}

    if task_root.is_symlink():
        return [record(task_root, "kept", "symlink: never followed")]
    if not task_root.is_dir():
        return []

    records: list[dict[str, Any]] = []
    removed: set[str] = set()
    for entry in sorted(task_root.iterdir(), key=lambda p: p.name):
        if entry.name == "LATEST":
            continue  # handled below
        if entry.is_symlink():
            records.append(record(entry, "kept", "symlink: never followed"))
            continue
        if not entry.is_dir():
            continue  # LATEST and any stray file
        if entry.name.startswith("."):
            if not entry.name.endswith(_TEMP_SUFFIXES):
                continue
            if not _is_old_temp(entry):
                records.append(record(
                    entry, "kept", f"temporary build directory younger than "
                    f"{TEMP_MAX_AGE_S / 3600:g} h: a build may be running"))
                continue
            reason: str | None = "temporary directory of an interrupted build"
        elif all_builds:
            reason = "--all"
        else:
            reason = refusal(entry)
            if reason is None:
                continue  # complete and current: kept
        pids = _users(entry, mapped)
        if pids:
            records.append(record(
                entry, "kept", f"{reason}, but memory-mapped by running process "
                f"{', '.join(map(str, pids))}"))
            continue
        size = tree_size(entry)
        if not dry_run:
            _remove_tree(entry, task_root)
        removed.add(entry.name)
        records.append(record(entry, "would remove" if dry_run else "removed", reason, size))

    latest = task_root / "LATEST"
    if removed and latest.is_file() and not latest.is_symlink():
        try:
            named = latest.read_text().strip()
        except OSError:
            named = ""
        if named in removed:
            size = latest.lstat().st_size
            if not dry_run:
                latest.unlink()
            records.append(record(latest, "would remove" if dry_run else "removed",
                                  f"names removed build {named}", size))
    return records


def _incomplete(directory: Path) -> str | None:
    """Why the build in ``directory`` is not a complete one, or None."""
    if not (directory / COMPLETE).is_file():
        return f"incomplete (no {COMPLETE} marker: interrupted build?)"
    if not is_complete(directory):
        return "damaged (files missing or truncated)"
    return None


def _refusal(
    directory: Path, task: TaskDefinition, version: str, spec: Mapping[str, Any]
) -> str | None:
    """Why ``load_dataset`` would refuse the build in ``directory``; ``None`` if it is usable."""
    broken = _incomplete(directory)
    if broken is not None:
        return broken
    try:
        meta = json.loads((directory / "meta.json").read_text())
        stale = _staleness(meta, task, version, spec)
    except (OSError, ValueError, AttributeError, TypeError):
        return "damaged (unreadable meta.json)"
    return None if stale is None else f"stale: {stale}"


def _labelled_refusal(directory: Path) -> str | None:
    """Why the build of a labels file in ``directory`` will not be used again; ``None`` if it
    may be: incomplete or damaged, made by another featuriser version, or its labels file is
    gone or has changed since (a new build is made for the new content). Changes to the files
    a labels file names are not looked at here."""
    from andersonn.images import IMAGE_SPECS

    broken = _incomplete(directory)
    if broken is not None:
        return broken
    try:
        meta = json.loads((directory / "meta.json").read_text())
        spec = IMAGE_SPECS.get(str(meta.get("image")))
        labels = Path(meta["labels_file"])
        recorded = meta["sources"]["labels"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "damaged (unreadable meta.json)"
    if spec is None or meta.get("image_spec") != spec.to_dict():
        return "stale: image spec changed"
    if meta.get("featurizer_version") != spec.featurizer_version:
        return (f"stale: featurizer version {meta.get('featurizer_version')} != current "
                f"{spec.featurizer_version}")
    if not labels.is_file():
        return f"its labels file {labels} is gone"
    if file_sha256(labels) != recorded:
        return f"its labels file {labels} has changed since"
    return None


def _remove_tree(entry: Path, task_root: Path) -> None:
    """Delete the build directory ``entry`` (a real directory directly in ``task_root``)."""
    if entry.is_symlink() or entry.parent != task_root or not entry.is_dir():
        raise AndersonnError(f"refusing to remove {entry}: not a build directory of {task_root}")
    try:
        (entry / COMPLETE).unlink(missing_ok=True)  # an interrupted removal leaves no usable build
        shutil.rmtree(entry)  # never follows symlinks inside
    except OSError as exc:
        raise AndersonnError(f"could not remove {entry} ({exc})") from None


def _mapped_files() -> dict[str, set[int]]:
    """Files memory-mapped by the processes we can see: real path -> pids (Linux; else empty)."""
    mapped: dict[str, set[int]] = {}
    try:
        pids = [int(d.name) for d in os.scandir("/proc") if d.name.isdigit()]
    except OSError:
        return mapped
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    parts = line.rstrip("\n").split(None, 5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        path = parts[5].removesuffix(" (deleted)")
                        mapped.setdefault(path, set()).add(pid)
        except OSError:
            continue
    return mapped


def _users(directory: Path, mapped: Mapping[str, set[int]]) -> list[int]:
    """Ids of the processes that memory-map a file under ``directory``."""
    prefix = os.path.realpath(directory) + os.sep
    return sorted({pid for path, pids in mapped.items() if path.startswith(prefix)
                   for pid in pids})
