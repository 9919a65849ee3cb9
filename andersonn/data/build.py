"""Build, find and describe cached datasets.

``build_dataset`` runs: verified archives → source rows → labels → optional ``--limit`` subset
(stratified, seeded) → structures read for the chosen entries → ``featurize_many`` on all cores →
stratified train/val/test split of the entries that featurised → atomic cache write. Failed
entries are skipped and listed with their reasons in ``report.json``.

Cache layout: ``<cache>/datasets/<task>/<key>/`` where ``key`` is a hash of everything that
decides the content (source archive sha256s, ``FEATURIZER_VERSION``, image spec dict, label
rule + thresholds, task options, limit, seed); ``<cache>/datasets/<task>/LATEST`` names the key
of the last build.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.data.archives import ARCHIVES, check_source_dir, default_cache_dir, ensure_archive
from andersonn.data.cache import (
    CachedDataset,
    ensure_writable,
    is_complete,
    open_cache,
    os_reason,
    write_cache,
)
from andersonn.data.splits import (
    DEFAULT_FRACTIONS,
    SPLIT_NAMES,
    stratified_split,
    stratified_subset,
)
from andersonn.data.tasks import THRESHOLD_FLAGS, TaskDefinition, get_task
from andersonn.errors import AndersonnError, AndersonnWarning, ConfigError, warn_user
from andersonn.fileio import atomic_write_text, folder_lock

__all__ = [
    "DatasetUnavailable",
    "FullSetWarning",
    "OneClassWarning",
    "SubsetBuildWarning",
    "build_command",
    "build_dataset",
    "cache_key",
    "cached_build",
    "dataset_info",
    "datasets_root",
    "load_dataset",
    "subset_limit",
]

_UNSET: Any = object()
CACHE_FORMAT = 1


def _images_api() -> tuple[Mapping[str, Any], str, Any]:
    """``(IMAGE_SPECS, FEATURIZER_VERSION, featurize_many)`` of the featuriser stage (a spec's
    own ``featurizer_version``, where it has one, overrides the global version)."""
    try:
        images = importlib.import_module("andersonn.images")
        return images.IMAGE_SPECS, str(images.FEATURIZER_VERSION), images.featurize_many
    except (ImportError, AttributeError) as exc:
        raise AndersonnError(f"the featuriser andersonn.images is not available ({exc})") from None


def _spec_dict(spec: Any) -> dict[str, Any]:
    return dict(spec.to_dict()) if hasattr(spec, "to_dict") else dict(spec)


def datasets_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/datasets``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "datasets"


def cached_build(folder: str, key: str, cache_dir: str | os.PathLike[str] | None = None
                 ) -> CachedDataset | None:
    """The complete build ``key`` in ``<cache>/datasets/<folder>`` (a task's name, or
    ``custom`` for labels files), opened; None where it is missing or incomplete."""
    directory = datasets_root(cache_dir) / folder / key
    return open_cache(directory) if is_complete(directory) else None


def _task_options(task: TaskDefinition, options: Mapping[str, Any] | None) -> dict[str, Any]:
    values = dict(task.options)
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key not in values:
            raise AndersonnError(f"task {task.name} has no option {key!r}")
        values[key] = value
    return values


def cache_key(
    task: TaskDefinition,
    *,
    thresholds: Mapping[str, float],
    options: Mapping[str, Any],
    limit: int | None,
    seed: int,
    featurizer_version: str,
    image_spec: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """``(key, fields)``: the 16-hex-digit hash of every input that decides a dataset's content."""
    fields = {
        "format": CACHE_FORMAT,
        "task": task.name,
        "sources": {k: ARCHIVES[k].sha256 for k in task.archives},
        "featurizer_version": featurizer_version,
        "image_spec": dict(image_spec),
        "label_rule": task.rule,
        "thresholds": dict(sorted(thresholds.items())),
        "options": dict(sorted(options.items())),
        "limit": limit,
        "seed": seed,
        "fractions": list(DEFAULT_FRACTIONS),
    }
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], fields


def build_command(
    task: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    thresholds: Mapping[str, float] | None = None,
    options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The ``andersonn data build`` command line that builds a dataset with these options."""
    parts = ["andersonn", "data", "build", task]
    if limit is not None:
        parts += ["--limit", str(limit)]
    if seed:
        parts += ["--seed", str(seed)]
    defaults = get_task(task).defaults
    for key, value in (thresholds or {}).items():
        if value is not None and float(value) != float(defaults.get(key, float("nan"))):
            parts += [THRESHOLD_FLAGS.get(key, f"--{key}"), f"{value:g}"]
    if (options or {}).get("include_fsr"):
        parts.append("--include-fsr")
    if cache_dir is not None:
        parts += ["--cache-dir", os.fspath(cache_dir)]
    return " ".join(parts)


def _resolve(
    task_name: str,
    thresholds: Mapping[str, float | None] | None,
    options: Mapping[str, Any] | None,
) -> tuple[TaskDefinition, dict[str, float], dict[str, Any], Any, str, dict[str, Any]]:
    task = get_task(task_name)
    values = task.thresholds(thresholds)
    opts = _task_options(task, options)
    specs, version, featurize = _images_api()
    try:
        spec = specs[task.image_spec]
    except KeyError:
        raise AndersonnError(f"the featuriser has no image spec for {task.image_spec!r}") from None
    # a preset spec carries the version at which its own images last changed
    version = str(getattr(spec, "featurizer_version", version))
    return task, values, opts, spec, version, featurize


class DatasetUnavailable(AndersonnError):
    """No usable build of a task with the asked settings: ``state`` says why — ``"missing"``
    (never built), ``"stale"`` (built for another featuriser, image spec or sources; ``detail``
    says which) or ``"incomplete"`` (an interrupted build or damaged files in ``directory``)."""

    def __init__(self, message: str, *, state: str, directory: Path,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.directory = directory
        self.detail = detail


class FullSetWarning(AndersonnWarning):
    """A ``--limit`` of at least a task's number of entries: the full set is built or opened."""


def full_set_message(limit: int, n: int, task: str) -> str:
    """The note for a ``limit`` that covers all ``n`` entries of ``task``."""
    how = "is more than" if limit > n else "covers all"
    return f"--limit {limit} {how} the {n:,} {task} entries: the full set is used"


def _check_seed(seed: Any) -> int:
    """``seed`` as an int; a negative or non-integer seed is a :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number of at least 0, got {seed!r}")
    return int(seed)


def _full_build_for(task: TaskDefinition, limit: int | None, cache_dir: Any, *,
                    values: Mapping[str, float], options: Mapping[str, Any], seed: int,
                    version: str, spec: Mapping[str, Any]) -> CachedDataset | None:
    """The complete build of the full set with these settings when ``limit`` covers all of its
    entries (they are recorded as ``candidates``), else None."""
    if limit is None:
        return None
    key, _ = cache_key(task, thresholds=values, options=options, limit=None, seed=seed,
                       featurizer_version=version, image_spec=spec)
    full = cached_build(task.name, key, cache_dir)
    candidates = full.meta.get("candidates") if full is not None else None
    if not isinstance(candidates, int) or limit < candidates:
        return None
    warn_user(full_set_message(limit, candidates, task.name), FullSetWarning)
    return full


def _point_latest(task_root: Path, key: str) -> None:
    """Make ``LATEST`` name ``key``; a cache that cannot be written (a shared, read-only one)
    keeps its pointer, with a warning."""
    latest = task_root / "LATEST"
    try:
        if latest.is_file() and latest.read_text().strip() == key:
            return
        atomic_write_text(latest, key + "\n")
    except OSError as exc:
        warn_user(f"cannot update {latest} ({os_reason(exc)}): `andersonn train` without "
                  "--limit takes the build it names", AndersonnWarning)


class SubsetBuildWarning(AndersonnWarning):
    """``load_dataset(task)`` without settings opened the latest build, and that one is a
    ``--limit`` subset (made by a benchmark, the demo or ``data build --limit``)."""


def subset_limit(meta: Mapping[str, Any]) -> int | None:
    """The ``limit`` of a build that is a proper subset of its task's entries, else None."""
    limit, candidates = meta.get("limit"), meta.get("candidates")
    if not isinstance(limit, int) or (isinstance(candidates, int) and limit >= candidates):
        return None
    return limit


def _reopen_args(meta: Mapping[str, Any], task: TaskDefinition) -> str:
    """The ``load_dataset`` keyword arguments that open the build of ``meta`` by its settings
    (``limit=200, thresholds={'dipole': 1000.0}``): those that differ from the defaults."""
    parts = [f"limit={meta.get('limit')}"]
    if int(meta.get("seed") or 0):
        parts.append(f"seed={int(meta['seed'])}")
    changed = {k: v for k, v in (meta.get("thresholds") or {}).items()
               if task.defaults.get(k) is None or float(v) != float(task.defaults[k])}
    if changed:
        parts.append(f"thresholds={changed!r}")
    options = {k: v for k, v in (meta.get("options") or {}).items() if task.options.get(k) != v}
    if options:
        parts.append(f"options={options!r}")
    return ", ".join(parts)


class EmptySplitWarning(AndersonnWarning):
    """A dataset build whose train, val or test split holds no entry (too small a limit)."""


def empty_split_message(empty: Sequence[str], n: int) -> str:
    """The one-line warning for a build of ``n`` entries whose ``empty`` splits hold none."""
    return (f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} of this build "
            f"{'are' if len(empty) > 1 else 'is'} empty ({n} entries in all): validation and "
            "test scores will be missing; build with a larger --limit")


class OneClassWarning(AndersonnWarning):
    """A dataset build whose training split holds entries of one class only: a classifier
    cannot be trained on it (too small a ``--limit``, or thresholds that put every entry in
    one class)."""


def one_class_message(task: str, classes: Sequence[str], train: Sequence[int],
                      total: Sequence[int]) -> str | None:
    """The one-line warning for a build of ``task`` whose training split (class counts
    ``train``; ``total``: over all splits) has a single class, else None (an empty training
    split is :func:`empty_split_message`'s)."""
    if sum(train) == 0 or sum(n > 0 for n in train) >= 2:
        return None

    def counts(row: Sequence[int]) -> str:
        return ", ".join(f"{c} {n}" for c, n in zip(classes, row, strict=True))

    which = ("every entry" if sum(n > 0 for n in total) < 2 else "every training entry")
    return (f"{which} of this {task} build is in one class ({counts(train)} in the train "
            f"split; {counts(total)} in all): training on it is meaningless (`andersonn train` "
            "refuses it); build with other label thresholds or a larger --limit")


def build_dataset(
    task: str,
    limit: int | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    *,
    seed: int = 0,
    thresholds: Mapping[str, float | None] | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    force: bool = False,
    fetch: bool = True,
) -> CachedDataset:
    """Build (or reuse, when an identical complete build exists) the dataset of ``task``.

    A ``limit`` of at least the task's number of entries builds (or reuses) the full set, the
    build without a limit, with a :class:`FullSetWarning`. Before the archives are read, the
    cache is checked to be writable (an :class:`AndersonnError` otherwise)."""
    started = time.time()
    seed = _check_seed(seed)
    if source_dir is not None:  # a mistyped --source: said now, even when a build is reused
        check_source_dir(source_dir)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit <= 0):
        raise ConfigError(f"--limit must be a positive number of entries, got {limit!r}")
    task_def, values, opts, spec, version, featurize = _resolve(task, thresholds, options)
    spec_dict = _spec_dict(spec)
    key, key_fields = cache_key(
        task_def, thresholds=values, options=opts, limit=limit, seed=seed,
        featurizer_version=version, image_spec=spec_dict,
    )
    task_root = datasets_root(cache_dir) / task_def.name
    built = None if force else (
        cached_build(task_def.name, key, cache_dir)
        or _full_build_for(task_def, limit, cache_dir, values=values, options=opts, seed=seed,
                           version=version, spec=spec_dict))
    if built is not None:
        _point_latest(task_root, built.directory.name)
        return built

    # refused now, not after featurising, when the build could not be stored
    ensure_writable(task_root, chosen=cache_dir is not None)
    # one build of a task at a time: a second would redo the same work and race the first's
    # final swap into the cache (the loser failed with "directory not empty")
    with folder_lock(task_root, "another build of this task"):
        paths = {
            k: ensure_archive(k, source_dir=source_dir, cache_dir=cache_dir, fetch=fetch)
            for k in task_def.archives
        }
        source = importlib.import_module(f"andersonn.data.{task_def.source}")
        result = source.read(paths, opts)
        entries, result.entries = result.entries, []
        if limit is not None and limit >= len(entries) and entries:
            warn_user(full_set_message(limit, len(entries), task_def.name), FullSetWarning)
            limit = None
            key, key_fields = cache_key(
                task_def, thresholds=values, options=opts, limit=None, seed=seed,
                featurizer_version=version, image_spec=spec_dict,
            )
            built = None if force else cached_build(task_def.name, key, cache_dir)
            if built is not None:
                _point_latest(task_root, key)
                return built
        directory = task_root / key
        _remove_stale_temps(task_root, key)
        skipped: list[dict[str, str]] = [
            {"id": i, "stage": "read", "reason": r} for i, r in result.skipped
        ]
        labels_all = np.array([task_def.label(e.value, values) for e in entries], dtype=np.int64)
        counts_all = np.bincount(labels_all, minlength=len(task_def.classes)).tolist()
        if limit is not None and limit < len(entries):
            chosen = stratified_subset(labels_all, limit, seed)
            entries = [entries[i] for i in chosen]
        bad = dict(source.materialize(paths, entries))
        skipped += [{"id": i, "stage": "read", "reason": r} for i, r in bad.items()]
        entries = [e for e in entries if e.id not in bad]
        if not entries:
            raise AndersonnError(f"no usable entries for {task_def.name}; see the skipped list")

        inputs = [(e.content, e.fmt, e.id) for e in entries]
        feat_start = time.time()
        res = featurize(inputs, spec, workers=workers, progress=progress, desc=task_def.name)
        feat_seconds = time.time() - feat_start
        for _index, name, reason in res.failures:
            skipped.append({"id": str(name), "stage": "featurize", "reason": str(reason)[:300]})
        ok = [int(i) for i in res.ok_indices]
        if not ok:
            raise AndersonnError(f"every {task_def.name} structure failed to featurise; see report")
        kept = [entries[i] for i in ok]
        for e in entries:  # free structure text early
            e.content = None
        labels = np.array([task_def.label(e.value, values) for e in kept], dtype=np.int64)
        splits = stratified_split(labels, seed=seed)
        images = np.asarray(res.images, dtype=np.float32)
        from andersonn.data.domain import Domain

        domain = None
        summaries = getattr(res, "summaries", None) or []  # a featuriser may not summarise
        if len(summaries) == len(kept) and (splits == 0).any():
            domain = Domain.from_summaries(summaries[j] for j in np.flatnonzero(splits == 0))

        counts = {
            name: np.bincount(labels[splits == code], minlength=len(task_def.classes)).tolist()
            for code, name in enumerate(SPLIT_NAMES)
        }
        empty = [name for name in SPLIT_NAMES if sum(counts[name]) == 0]
        if empty:
            warnings.warn(empty_split_message(empty, len(labels)), EmptySplitWarning, stacklevel=2)
        single = one_class_message(task_def.name, task_def.classes, counts[SPLIT_NAMES[0]],
                                   np.bincount(labels, minlength=len(task_def.classes)).tolist())
        if single is not None:
            warnings.warn(single, OneClassWarning, stacklevel=2)
        meta = {
            "task": task_def.name,
            "key": key,
            "key_fields": key_fields,
            "quantity": task_def.quantity,
            "label_rule": task_def.describe(values),
            "thresholds": values,
            "options": opts,
            "limit": limit,
            "seed": seed,
            "split_fractions": list(DEFAULT_FRACTIONS),
            "featurizer_version": version,
            "image_spec": spec_dict,
            "sources": {
                k: {"file": ARCHIVES[k].filename, "requirement": ARCHIVES[k].requirement,
                    "sha256": ARCHIVES[k].sha256}
                for k in task_def.archives
            },
            "source_stats": {k: v for k, v in result.stats.items() if not k.endswith("_ids")},
            "candidates": len(labels_all),
            "candidate_class_counts": counts_all,
            "selected": len(entries) + len(bad),
            "class_counts": np.bincount(labels, minlength=len(task_def.classes)).tolist(),
            "split_class_counts": counts,
            "values": {"min": min(e.value for e in kept), "max": max(e.value for e in kept)},
            "domain": domain.to_dict() if domain is not None else None,
            "skipped_count": len(skipped),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 1),
            "featurize_seconds": round(feat_seconds, 1),
            "workers": workers,
            "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
        report = {
            "task": task_def.name,
            "skipped": skipped,
            "extra": {k: v for k, v in result.stats.items() if k.endswith("_ids")},
        }
        write_cache(directory, images=images, labels=labels, ids=[e.id for e in kept],
                    splits=splits, classes=task_def.classes, meta=meta, report=report)
        atomic_write_text(task_root / "LATEST", key + "\n")
        return open_cache(directory)


TEMP_MAX_AGE_S = 3600.0  # a temp build dir younger than this may belong to a running build


def _is_old_temp(path: Path, age_s: float = TEMP_MAX_AGE_S) -> bool:
    """Whether ``path`` is a real (not symlinked) directory last modified over ``age_s`` ago."""
    try:
        return path.is_dir() and not path.is_symlink() and (
            time.time() - path.lstat().st_mtime > age_s)
    except OSError:
        return False


def _remove_stale_temps(task_root: Path, key: str, age_s: float = TEMP_MAX_AGE_S) -> None:
    """Delete temp dirs that interrupted builds of ``key`` left (older than ``age_s``)."""
    if not task_root.is_dir():
        return
    for tmp in task_root.glob(f".{key}.*"):
        if _is_old_temp(tmp, age_s):
            shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(
    task: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = _UNSET,
    seed: int = _UNSET,
    thresholds: Mapping[str, float | None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> CachedDataset:
    """Open a built dataset of ``task``.

    With any of ``limit``, ``seed``, ``thresholds``, ``options`` given, the build with exactly
    those settings (others default) is opened: ``limit=None`` is the full set, ``limit=N`` the
    ``--limit N`` subset. With none given, the latest build of the task is opened, or, when
    that one is stale, the current build with default settings if there is one. The latest
    build may be a subset that a benchmark, the demo or ``data build --limit`` made; opening
    one that way gives a :class:`SubsetBuildWarning` naming its size (pass ``limit=None`` for
    the full set, or ``limit=N`` to take the subset without the warning).
    Either way the build must match the current featuriser version, image spec and pinned
    sources; otherwise (or when nothing is built) an :class:`AndersonnError` says which
    ``andersonn data build`` command to run.
    """
    if seed is not _UNSET:
        seed = _check_seed(seed)
    task_def, values, opts, spec, version, _ = _resolve(task, thresholds, options)
    task_root = datasets_root(cache_dir) / task_def.name
    explicit = (limit is not _UNSET or seed is not _UNSET or any(
        v is not None for v in (thresholds or {}).values()) or any(
        v is not None for v in (options or {}).values()))
    limit_v = None if limit is _UNSET else limit
    seed_v = 0 if seed is _UNSET else int(seed)
    key, _ = cache_key(task_def, thresholds=values, options=opts, limit=limit_v, seed=seed_v,
                       featurizer_version=version, image_spec=_spec_dict(spec))
    command = build_command(task_def.name, limit=limit_v, seed=seed_v, thresholds=values,
                            options=opts, cache_dir=cache_dir)
    if not explicit:
        latest = task_root / "LATEST"
        if latest.is_file():
            candidate = task_root / latest.read_text().strip()
            if is_complete(candidate):
                ds = open_cache(candidate)
                stale = _staleness(ds.meta, task_def, version, _spec_dict(spec))
                if stale is None:
                    subset = subset_limit(ds.meta)
                    if subset is not None:
                        of = ds.meta.get("candidates")
                        warn_user(
                            f"load_dataset({task_def.name!r}) opened the latest build, a "
                            f"--limit {subset} subset ({len(ds):,} entries"
                            + (f" of {of:,}" if isinstance(of, int) else "")
                            + "); pass limit=None for the full set, or "
                            f"{_reopen_args(ds.meta, task_def)} to take this subset without "
                            "this warning", SubsetBuildWarning)
                    return ds
                current = cached_build(task_def.name, key, cache_dir)
                if current is not None:  # a current default build is there: use it
                    return current
                command = build_command(
                    task_def.name, limit=ds.meta.get("limit"), seed=int(ds.meta.get("seed", 0)),
                    thresholds=ds.meta.get("thresholds"), options=ds.meta.get("options"),
                    cache_dir=cache_dir)
                raise DatasetUnavailable(
                    f"the {task_def.name} dataset in {candidate} is stale ({stale}); "
                    f"rebuild it with `{command}`", state="stale", directory=candidate,
                    detail=stale)
    built = cached_build(task_def.name, key, cache_dir) or _full_build_for(
        task_def, limit_v, cache_dir, values=values, options=opts, seed=seed_v,
        version=version, spec=_spec_dict(spec))
    if built is not None:
        return built
    directory = task_root / key
    if directory.exists():
        raise DatasetUnavailable(
            f"the {task_def.name} dataset in {directory} is incomplete (interrupted build?); "
            f"rebuild it with `{command}`", state="incomplete", directory=directory)
    others = [p for p in task_root.glob("*") if p.is_dir() and is_complete(p)]
    what = ("no build with these settings (featurizer version, image spec, thresholds, limit or "
            "seed differ from the existing builds)" if others else "it has not been built")
    raise DatasetUnavailable(
        f"no {task_def.name} dataset in {task_root}: {what}; run `{command}`", state="missing",
        directory=directory)


def _staleness(meta: Mapping[str, Any], task: TaskDefinition, version: str,
               spec: Mapping[str, Any]) -> str | None:
    if meta.get("featurizer_version") != version:
        return f"featurizer version {meta.get('featurizer_version')} != current {version}"
    if meta.get("image_spec") != dict(spec):
        return "image spec changed"
    built = {k: v.get("sha256") for k, v in meta.get("sources", {}).items()}
    if built != {k: ARCHIVES[k].sha256 for k in task.archives}:
        return "source archives changed"
    return None


def dataset_info(
    task: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = _UNSET,
    seed: int = _UNSET,
    thresholds: Mapping[str, float | None] | None = None,
    options: Mapping[str, Any] | None = None,
    max_skipped: int = 10,
) -> dict[str, Any]:
    """Summary of a built dataset: counts per class and split, rule, sources, skipped entries
    (its ``limit`` among them: a subset opened as the latest build is said there, not warned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubsetBuildWarning)
        ds = load_dataset(task, cache_dir, limit=limit, seed=seed, thresholds=thresholds,
                          options=options)
    meta = ds.meta
    skipped: Sequence[Mapping[str, Any]] = ds.report.get("skipped", [])
    table = {
        name: dict(zip(ds.classes, np.bincount(ds.labels[ds.splits == code],
                                               minlength=len(ds.classes)).tolist(), strict=True))
        for code, name in enumerate(SPLIT_NAMES)
    }
    return {
        "task": meta.get("task"),
        "directory": os.fspath(ds.directory),
        "key": meta.get("key"),
        "n": len(ds),
        "image_shape": list(ds.images.shape[1:]),
        "classes": ds.classes,
        "label_rule": meta.get("label_rule"),
        "thresholds": meta.get("thresholds"),
        "options": meta.get("options"),
        "limit": meta.get("limit"),
        "seed": meta.get("seed"),
        "counts": table,
        "totals": dict(zip(ds.classes, np.bincount(ds.labels, minlength=len(ds.classes)).tolist(),
                           strict=True)),
        "candidates": meta.get("candidates"),
        "candidate_class_counts": meta.get("candidate_class_counts"),
        "sources": meta.get("sources"),
        "source_stats": meta.get("source_stats"),
        "featurizer_version": meta.get("featurizer_version"),
        "domain": meta.get("domain"),
        "built_at": meta.get("built_at"),
        "build_seconds": meta.get("build_seconds"),
        "skipped_count": len(skipped),
        "skipped_first": list(skipped[:max_skipped]),
        "report": os.fspath(ds.directory / "report.json"),
    }
