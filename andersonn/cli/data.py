"""Command-line commands of the data stage: ``andersonn data build|info|fetch|clean``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from andersonn.cli.options import finite_float, non_negative_int, output_dir, positive_int

_TASKS = ("polarity", "mof-pore", "crystal-gap")
_THRESHOLDS = (  # (flag, dest, task key, help)
    ("--dipole-threshold", "dipole", "polarity", "polarity: strongly polar if dipole >= D (2.5)"),
    ("--small-lcd", "small", "mof-pore", "mof-pore: small if LCD < this many Å (6)"),
    ("--large-lcd", "large", "mof-pore", "mof-pore: large if LCD >= this many Å (12)"),
    ("--metal-gap", "metal", "crystal-gap", "crystal-gap: metal if gap <= this eV (0)"),
    ("--insulator-gap", "insulator", "crystal-gap", "crystal-gap: insulator if gap > eV (3)"),
)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add this stage's sub-commands to the top-level and bench parsers."""
    data = commands.add_parser("data", help="build and inspect the cached DFT datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="fetch, verify, label, featurise, split and cache a task")
    build.add_argument("task", choices=_TASKS)
    build.add_argument("--limit", type=positive_int, default=None,
                       help="stratified, seeded subset of N entries taken before featurising")
    build.add_argument("--source", metavar="DIR", default=None, type=_existing_folder,
                       help="use the source archives already in DIR (no network)")
    _common(build)
    build.add_argument("--workers", type=positive_int, default=None,
                       help="featuriser processes (all cores)")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    info = sub.add_parser("info", help="counts per class and split, label rule, sources, skipped")
    info.add_argument("task", choices=_TASKS)
    info.add_argument("--limit", type=positive_int, default=None,
                      help="the build made with this --limit")
    _common(info)
    info.add_argument("--json", action="store_true", help="print the full summary as JSON")
    info.set_defaults(func=_info)

    fetch = sub.add_parser(
        "fetch", help="download and verify the source archives of tasks (for an offline machine)",
        description="Download (if missing) and verify the source archives of the tasks into DIR. "
        "Copy DIR to an offline machine and run `andersonn data build TASK --source DIR`.")
    fetch.add_argument("tasks", nargs="+", choices=(*_TASKS, "all"), metavar="TASK",
                       help=f"{', '.join(_TASKS)} or all")
    fetch.add_argument("--dest", metavar="DIR", default=None, type=output_dir,
                       help="folder to put the archives in (default: the cache's archives folder)")
    fetch.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="cache root whose archives folder is the default --dest")
    fetch.set_defaults(func=_fetch)

    clean = sub.add_parser(
        "clean", help="remove stale or incomplete dataset builds (--all: every build)",
        description="Remove the builds that `andersonn data info` / training would refuse: stale "
        "(featuriser version, image spec or sources changed; for your own labels files: the "
        "file is gone or changed) or incomplete, plus temporary "
        "directories of interrupted builds older than 1 h. Complete, current builds, archives, "
        "symlinks and builds memory-mapped by a running process are kept.")
    # no choices=: argparse (3.11) rejects the empty default of nargs="*" against them;
    # clean_datasets checks the names (unknown task: one-line error, exit 2)
    clean.add_argument("tasks", nargs="*", metavar="TASK",
                       help=f"{', '.join(_TASKS)}, custom (builds of your own labels "
                       "files) or all (default: all of them)")
    clean.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="cache root (default $ANDERSONN_CACHE, $XDG_CACHE_HOME/andersonn "
                       "or ~/.cache/andersonn)")
    clean.add_argument("--all", dest="all_builds", action="store_true",
                       help="remove every build of the tasks, current ones too")
    clean.add_argument("--dry-run", action="store_true",
                       help="print what would be removed, delete nothing")
    clean.set_defaults(func=_clean)


def _existing_folder(value: str) -> str:
    """An argparse type for ``--source``: a folder that exists (the archives are read from it)."""
    path = Path(value).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file, not a folder")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="cache root (default $ANDERSONN_CACHE, $XDG_CACHE_HOME/andersonn "
                        "or ~/.cache/andersonn)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of subset and splits (0)")
    for flag, dest, _task, text in _THRESHOLDS:
        parser.add_argument(flag, dest=dest, type=finite_float, default=None, help=text)
    parser.add_argument("--include-fsr", action="store_true", default=None,
                        help="mof-pore: add FSR CIFs whose refcode is not in ASR")


def _settings(args: argparse.Namespace) -> tuple[dict[str, float | None], dict[str, Any]]:
    from andersonn.errors import ConfigError

    thresholds: dict[str, float | None] = {}
    for flag, dest, task, _text in _THRESHOLDS:
        value = getattr(args, dest)
        if value is not None:
            if task != args.task:
                raise ConfigError(f"{flag} applies to task {task}, not {args.task}")
            thresholds[dest] = value
    options: dict[str, Any] = {}
    if args.include_fsr:
        if args.task != "mof-pore":
            raise ConfigError(f"--include-fsr applies to task mof-pore, not {args.task}")
        options["include_fsr"] = True
    return thresholds, options


def _build(args: argparse.Namespace) -> int:
    from andersonn.data import build_dataset, dataset_info
    from andersonn.data.build import (
        EmptySplitWarning,
        OneClassWarning,
        empty_split_message,
        one_class_message,
    )

    thresholds, options = _settings(args)
    started = time.time()
    with warnings.catch_warnings():  # reported below from the counts, for a reused build too
        warnings.simplefilter("ignore", EmptySplitWarning)
        warnings.simplefilter("ignore", OneClassWarning)
        ds = build_dataset(
            args.task, limit=args.limit, source_dir=args.source, cache_dir=args.cache_dir,
            workers=args.workers, seed=args.seed or 0, thresholds=thresholds, options=options,
            progress=not args.no_progress, force=args.force,
        )
    info = dataset_info(args.task, args.cache_dir, limit=ds.meta.get("limit"),
                        seed=int(ds.meta.get("seed", 0)), thresholds=ds.meta.get("thresholds"),
                        options=ds.meta.get("options"))
    print(_format(info))
    print(f"done in {time.time() - started:.1f} s (build itself: {info['build_seconds']} s)")
    empty = [split for split, row in info["counts"].items() if sum(row.values()) == 0]
    if empty:
        print(f"andersonn: warning: {empty_split_message(empty, info['n'])}", file=sys.stderr)
    classes = info["classes"]
    single = one_class_message(args.task, classes, [info["counts"]["train"][c] for c in classes],
                               [info["totals"][c] for c in classes])
    if single is not None:
        print(f"andersonn: warning: {single}", file=sys.stderr)
    return 0



def _info(args: argparse.Namespace) -> int:
    from andersonn.data import dataset_info

    thresholds, options = _settings(args)
    kwargs: dict[str, Any] = {"thresholds": thresholds, "options": options}
    if args.limit is not None:
        kwargs["limit"] = args.limit
    if args.seed is not None:
        kwargs["seed"] = args.seed
    info = dataset_info(args.task, args.cache_dir, **kwargs)
    if args.json:
        json.dump(info, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(_format(info))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from andersonn.data import fetch_archives
    from andersonn.data.archives import archive_dir

    def show(spec: Any, path: Any, status: str) -> None:
        size = path.stat().st_size
        print(f"{status:8} {path}  {_size(size)} ({size} bytes)  sha256 {spec.sha256}", flush=True)

    paths = fetch_archives(args.tasks, dest=args.dest, cache_dir=args.cache_dir, on_archive=show)
    folder = paths[0].parent if paths else archive_dir(args.cache_dir)
    print(f"{len(paths)} archive(s) verified in {folder}; on an offline machine run "
          f"`andersonn data build TASK --source DIR` with a copy of this folder as DIR")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from andersonn.data import clean_datasets
    from andersonn.data.build import datasets_root

    records = clean_datasets(args.tasks or None, cache_dir=args.cache_dir,
                             all_builds=args.all_builds, dry_run=args.dry_run)
    gone = [r for r in records if r["action"] != "kept"]
    width = max((len(r["action"]) for r in records), default=0)
    for r in records:
        size = "" if r["action"] == "kept" else f"  {_size(r['bytes'])}"
        print(f"{r['action']:{width}}  {r['path']}{size}  ({r['reason']})")
    total = _size(sum(r["bytes"] for r in gone))
    root = datasets_root(args.cache_dir)
    if args.dry_run:
        print(f"would free {total} ({len(gone)} item(s) under {root}; dry run, nothing deleted)")
    else:
        print(f"freed {total} ({len(gone)} item(s) removed under {root})")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _domain_line(record: dict[str, Any] | None) -> str:
    if not record:
        return "not recorded (an older build; `andersonn data build TASK --force` adds it)"
    from andersonn.data.domain import Domain

    try:
        return "training split: " + Domain.from_dict(record).describe()
    except (TypeError, ValueError) as exc:
        return f"malformed record in meta.json ({exc})"


def _format(info: dict[str, Any]) -> str:
    classes = info["classes"]
    width = max(12, *(len(c) + 2 for c in classes))
    lines = [
        f"task        {info['task']}  ({info['n']} entries, image {tuple(info['image_shape'])})",
        f"cache       {info['directory']}",
        f"label rule  {info['label_rule']}",
        f"limit/seed  {info['limit']} / {info['seed']}   built {info['built_at']} "
        f"in {info['build_seconds']} s",
        f"featurizer  {info['featurizer_version']}",
        f"domain      {_domain_line(info.get('domain'))}",
        "",
        "split".ljust(8) + "".join(c.rjust(width) for c in classes) + "total".rjust(8),
    ]
    for split, row in [*info["counts"].items(), ("all", info["totals"])]:
        cells = "".join(str(row[c]).rjust(width) for c in classes)
        lines.append(split.ljust(8) + cells + str(sum(row.values())).rjust(8))
    before = info.get("candidate_class_counts")
    if before:
        lines.append(
            "labelled before subset/featurisation: "
            + ", ".join(f"{c} {n}" for c, n in zip(classes, before, strict=False))
            + f" (total {info.get('candidates')})"
        )
    lines.append("")
    lines.append("sources")
    for src in (info.get("sources") or {}).values():
        lines.append(f"  {src['file']}  sha256 {src['sha256']}")
    lines.append("")
    lines.append(f"skipped     {info['skipped_count']} (full list: {info['report']})")
    for item in info["skipped_first"]:
        lines.append(f"  {item.get('id')}: [{item.get('stage')}] {item.get('reason')}")
    return "\n".join(lines)
