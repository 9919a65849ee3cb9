"""``bench speedup --seeds N``: the speed-up benchmark repeated over seeds, with the spread.

One run of :func:`andersonn.bench.speedup.run_speedup` measures every ratio on one training
trajectory; "time to a common validation accuracy" in particular depends on the epoch at which
each variant first crosses it, which a different seed (training subset, validation subset,
initial weights, batch order) moves. This runs the whole benchmark once per seed — each run in
``OUT/seed-K/`` with its own tables and plots — and writes ``seeds.json`` / ``seeds.md`` with
every headline ratio per seed and its median, minimum and maximum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from andersonn.bench.report import results_dir, write_results
from andersonn.bench.speedup import RUN_FILES, SpeedupSettings, run_speedup
from andersonn.errors import ConfigError

Metric = Callable[[dict[str, Any]], float | None]


def _inference(tol: float) -> Metric:
    def read(res: dict[str, Any]) -> float | None:
        return next((r["speedup_vs_forward"] for r in res["inference"]
                     if r["solver"] == "anderson" and r["tol"] == tol), None)
    return read


def metrics(settings: SpeedupSettings) -> list[tuple[str, Metric]]:
    """(name, reader) of every ratio summarised over seeds, in table order."""
    rows: list[tuple[str, Metric]] = [
        (f"{n} vs forward, time to common val. acc.",
         lambda r, n=n: r["ratios"]["common"][n]["speedup"])
        for n in ("anderson", "broyden", "explicit")]
    rows += [
        ("anderson vs forward, time per epoch", lambda r: r["epoch_time_speedup"]["anderson"]),
        ("anderson: f-evaluations saved per batch (fwd + bwd)",
         lambda r: r["per_batch_compute_saved"]["anderson"]),
        ("anderson: training time saved to common val. acc.",
         lambda r: r["ratios"]["common"]["anderson"]["compute_saved"]),
    ]
    rows += [(f"anderson vs forward, inference at {tol:.0e}", _inference(tol))
             for tol in settings.inference_tols]
    rows += [("anderson iteration / forward iteration",
              lambda r: r["anderson_cost_per_iteration_vs_forward"]),
             ("common validation accuracy", lambda r: r["targets"]["common"])]
    rows += [(f"test accuracy, {n}", lambda r, n=n: r["variants"][n]["test_acc"])
             for n in ("forward", "anderson", "broyden", "explicit")]
    return rows


def summarize(results: Sequence[dict[str, Any]], settings: SpeedupSettings,
              seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Per metric: the value of every seed (None where not reached), median / min / max over
    the seeds that have one, ``n`` of ``n_total`` seeds counted and the ``missing`` seeds
    (``seeds`` names them; default: each result's settings' seed, else its position)."""
    if seeds is None:
        seeds = [int((r.get("settings") or {}).get("seed", i)) for i, r in enumerate(results)]
    table = []
    for name, read in metrics(settings):
        values = []
        for res in results:
            try:
                value = read(res)
            except (KeyError, TypeError):
                value = None
            values.append(None if value is None else float(value))
        known = [v for v in values if v is not None]
        table.append({"metric": name, "values": values, "n": len(known),
                      "n_total": len(values),
                      "missing": [s for s, v in zip(seeds, values, strict=True) if v is None],
                      "median": statistics.median(known) if known else None,
                      "min": min(known) if known else None,
                      "max": max(known) if known else None})
    return table


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _count(row: dict[str, Any], seeds: Sequence[int]) -> str:
    """``n/N`` seeds behind a row's median and range, naming the seeds without a value."""
    values = row["values"]
    n = sum(v is not None for v in values)
    text = f"{n}/{len(values)}"
    missing = row.get("missing")
    if missing is None:
        missing = [s for s, v in zip(seeds, values, strict=True) if v is None]
    if missing:
        text += " (not reached: seed" + ("s " if len(missing) > 1 else " ") + ", ".join(
            str(s) for s in missing) + ")"
    return text


def seeds_markdown(task: str, seeds: Sequence[int], table: list[dict[str, Any]]) -> str:
    """The per-seed table as markdown: every seed's value, then the median and range over the
    seeds that have one and how many those are (n/N, naming the others)."""
    head = ("| metric | " + " | ".join(f"seed {s}" for s in seeds)
            + " | median | min – max | seeds |")
    lines = [f"## bench speedup over seeds: {task}\n",
             "Each seed re-draws the training and validation subsets, the initial weights and "
             "the batch order; per-seed tables and plots are in `seed-K/`. Ratios > 1 favour "
             "the named solver; \"–\" = not reached. Median and range are over the seeds "
             "that reached a value (\"seeds\": n of N; the median of two is their mean).\n",
             head, "|" + "---|" * (len(seeds) + 4)]
    for row in table:
        lines.append(f"| {row['metric']} | " + " | ".join(_fmt(v) for v in row["values"])
                     + f" | {_fmt(row['median'])} | {_fmt(row['min'])} – {_fmt(row['max'])} "
                     f"| {_count(row, seeds)} |")
    return "\n".join(lines) + "\n"


def _remove_files(folder: Path, names: Sequence[str]) -> list[str]:
    """Delete the files ``names`` in ``folder`` that exist; return those deleted."""
    gone = []
    for name in names:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            gone.append(name)
    return gone


def remove_stale_results(out_dir: Path, seeds: Sequence[int]) -> list[str]:
    """After a ``--seeds`` run wrote its summary into ``out_dir``: delete what earlier runs
    left there that is not part of it, so the folder shows one result — a single run's files
    at the top (:data:`~andersonn.bench.speedup.RUN_FILES`) and the ``seed-K/`` folders of
    other seeds. Only the benchmark's own file names are deleted (a folder is removed only
    when that empties it); returns what was deleted, relative to ``out_dir``."""
    removed = _remove_files(out_dir, RUN_FILES)
    for sub in sorted(out_dir.iterdir()):
        match = re.fullmatch(r"seed-(\d+)", sub.name)
        if not match or int(match.group(1)) in seeds or not sub.is_dir() or sub.is_symlink():
            continue
        removed += [f"{sub.name}/{name}" for name in _remove_files(sub, RUN_FILES)]
        with contextlib.suppress(OSError):  # not empty: something of the user's is in it
            sub.rmdir()
    return removed


def run_speedup_seeds(task: str, settings: SpeedupSettings, seeds: Sequence[int], *,
                      dataset: Any = None, out: str | Path | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Run the speed-up benchmark once per seed; write ``seeds.json`` and ``seeds.md``, then
    delete what earlier runs left in the folder (:func:`remove_stale_results`: a single run's
    files, other seeds' folders), naming it on stderr."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one (got {seeds})")
    out_dir = results_dir("speedup", task, out)
    results = []
    for seed in seeds:
        run = run_speedup(task, dataclasses.replace(settings, seed=seed), dataset=dataset,
                          out=out_dir / f"seed-{seed}", progress=progress)
        results.append(run)
    table = summarize(results, settings, seeds)
    summary = {"bench": "speedup-seeds", "task": task, "seeds": seeds,
               "settings": results[0]["settings"], "machine": results[0]["machine"],
               "metrics": table, "runs": [r["out_dir"] for r in results]}
    markdown = seeds_markdown(task, seeds, table)
    write_results(out_dir, "seeds", summary, markdown)
    removed = remove_stale_results(out_dir, seeds)
    if removed:
        print(f"andersonn: removed what earlier runs left in {out_dir}: {', '.join(removed)}",
              file=sys.stderr)
    summary["out_dir"] = str(out_dir)
    summary["markdown"] = markdown
    return summary
