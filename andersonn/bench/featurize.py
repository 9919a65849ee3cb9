"""Featurisation benchmark: structures/second on real QM9 molecules and CoRE MOF CIFs.

Reads the source archives straight from ``$ANDERSONN_CACHE/archives`` (else
``$XDG_CACHE_HOME/andersonn/archives``, else ``~/.cache/andersonn/archives``; ``--archives DIR``
overrides), zip/tar in memory, never installed or imported: ``qm9pack-1.0.3-py3-none-any.whl``
(QM9 xyz coordinates from ``qm9pack/data/qm9_part{1,2,3}.csv``) and
``core_mof-2019.1-py3-none-any.whl`` (CIFs from ``CoRE_MOF/data/2019-ASR.tar.xz``). A strided
sample over the whole of each set (every k-th molecule of the three QM9 parts in order, so the
sample's size distribution is the set's) is featurised with
:func:`andersonn.images.featurize_many` on all cores; full-set times are extrapolated.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import re
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from andersonn.errors import AndersonnError
from andersonn.fileio import atomic_write_json, atomic_write_text

QM9_WHEEL = "qm9pack-1.0.3-py3-none-any.whl"
MOF_WHEEL = "core_mof-2019.1-py3-none-any.whl"
QM9_FULL = 130831
# the wheel's three parts in QM9 order, with their row counts (43,610 + 43,611 + 43,610)
QM9_PARTS = ("qm9pack/data/qm9_part1.csv", "qm9pack/data/qm9_part2.csv",
             "qm9pack/data/qm9_part3.csv")
MOF_FULL = 12020
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
TARGETS = {"qm9_full_s": 120.0, "mof_full_s": 600.0}


def default_archive_dir() -> Path:
    """``$ANDERSONN_CACHE/archives``, else ``$XDG_CACHE_HOME/andersonn/archives``, else
    ``~/.cache/andersonn/archives``."""
    env = os.environ.get("ANDERSONN_CACHE")
    if env:
        return Path(env).expanduser() / "archives"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() / "andersonn" if xdg else Path.home() / ".cache" / "andersonn"
    return base / "archives"


def _need(path: Path, requirement: str) -> Path:
    if not path.is_file():
        raise AndersonnError(
            f"{path}: archive missing; fetch it with `pip download --no-deps {requirement} "
            f"-d {path.parent}` (or `andersonn data fetch`)")
    return path


def qm9_xyz_sample(archive: Path, n: int, total: int = QM9_FULL,
                   parts: tuple[str, ...] = QM9_PARTS) -> list[tuple[str, str, str]]:
    """``n`` QM9 molecules as (xyz text, "xyz", id): every k-th row (k = ``total`` // n) of
    the ``parts`` read in order, so the sample spans the whole set (QM9 is ordered by size:
    part 1 alone over-represents small molecules)."""
    out: list[tuple[str, str, str]] = []
    stride = max(1, total // max(n, 1))
    k = 0
    with zipfile.ZipFile(archive) as zf:
        for part in parts:
            with zf.open(part) as raw:
                for row in csv.DictReader(io.TextIOWrapper(raw, "utf-8")):
                    k += 1
                    if (k - 1) % stride:
                        continue
                    out.append(_xyz_entry(row))
                    if len(out) >= n:
                        return out
    return out


def _xyz_entry(row: dict[str, str]) -> tuple[str, str, str]:
    """One qm9pack CSV row as (xyz text, "xyz", id)."""
    elements = [e.strip(" '\"") for e in row["Elements"].strip("[]").split(",")]
    values = _NUMBER.findall(row["XYZ_Ang"].replace("*^", "e"))  # "0." is not JSON
    xyz = [values[3 * a: 3 * a + 3] for a in range(len(elements))]
    lines = [f"{e} {x} {y} {z}" for e, (x, y, z) in zip(elements, xyz, strict=True)]
    return (f"{len(elements)}\n{row['XYZ_file']}\n" + "\n".join(lines), "xyz",
            row["XYZ_file"])


def mof_cif_sample(archive: Path, n: int) -> list[tuple[str, str, str]]:
    """``n`` CoRE MOF 2019-ASR CIFs (every k-th member) as (cif text, "cif", name)."""
    with zipfile.ZipFile(archive) as zf:
        data = zf.read("CoRE_MOF/data/2019-ASR.tar.xz")
    stride = max(1, MOF_FULL // max(n, 1))
    out: list[tuple[str, str, str]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tf:
        k = 0
        for member in tf:
            if not member.isfile() or not member.name.endswith(".cif"):
                continue
            if k % stride == 0:
                handle = tf.extractfile(member)
                if handle is not None:
                    text = handle.read().decode("utf-8", "replace")
                    out.append((text, "cif", member.name.rsplit("/", 1)[-1][:-4]))
                    if len(out) >= n:
                        break
            k += 1
    return out


def _time(inputs: list[tuple[str, str, str]], spec: str, workers: int | None) -> dict[str, Any]:
    from andersonn.images import featurize_many

    res = featurize_many(inputs, spec, workers=workers, progress=True, desc=f"bench {spec}")
    n = len(inputs)
    return {"n": n, "ok": res.n_ok, "failed": len(res.failures), "seconds": res.seconds,
            "per_second": n / res.seconds if res.seconds > 0 else float("inf"),
            "cpu_ms_per_structure": 1000 * res.cpu_seconds / max(n, 1),
            "failures": [list(f) for f in res.failures[:10]]}


def run_featurize_bench(quick: bool = False, out: str | os.PathLike[str] | None = None,
                        workers: int | None = None,
                        archives: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a summary (and write ``featurize.json``/``.md`` to ``out``).

    ``workers``: featuriser processes (default: all cores; at least 1). The "idle cores"
    estimate divides the summed CPU time by the processes that can run at once,
    min(workers, cores). ``out`` is created and checked before the run."""
    from andersonn.bench.report import check_positive, results_dir

    check_positive("--workers", workers)
    out_dir = results_dir("featurize", None, out) if out is not None else None
    adir = Path(archives) if archives else default_archive_dir()
    qm9 = _need(adir / QM9_WHEEL, "qm9pack==1.0.3")
    mof = _need(adir / MOF_WHEEL, "core_mof==2019.1")
    n_qm9, n_mof = (2000, 40) if quick else (20000, 300)
    cores = os.cpu_count() or 1
    workers_used = workers or cores
    parallel = min(workers_used, cores)  # processes that can run at the same time
    t0 = time.perf_counter()
    qm9_inputs = qm9_xyz_sample(qm9, n_qm9)
    t_read_qm9 = time.perf_counter() - t0
    t0 = time.perf_counter()
    mof_inputs = mof_cif_sample(mof, n_mof)
    t_read_mof = time.perf_counter() - t0
    r_qm9 = _time(qm9_inputs, "polarity", workers)
    r_mof = _time(mof_inputs, "mof-pore", workers)
    for r, full in ((r_qm9, QM9_FULL), (r_mof, MOF_FULL)):
        r["full_set_s"] = full / r["per_second"]
        # what the same work costs on otherwise idle cores (CPU time is load-independent)
        r["full_set_idle_s"] = full * r["cpu_ms_per_structure"] / 1000 / parallel
    r_qm9["read_s"], r_mof["read_s"] = t_read_qm9, t_read_mof
    result = {
        "benchmark": "featurize", "quick": quick, "workers": workers_used,
        "parallel_workers": parallel, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "qm9_polarity": r_qm9, "core_mof_pore": r_mof,
        "extrapolation": f"full-set times extrapolated from the sample: {QM9_FULL} QM9 "
                         f"molecules, {MOF_FULL} CoRE MOF 2019-ASR CIFs (featurisation only; "
                         "archive reading is reported separately)",
        "targets": {"qm9_full_under_s": TARGETS["qm9_full_s"],
                    "qm9_met": r_qm9["full_set_s"] < TARGETS["qm9_full_s"],
                    "qm9_met_idle": r_qm9["full_set_idle_s"] < TARGETS["qm9_full_s"],
                    "mof_full_under_s": TARGETS["mof_full_s"],
                    "mof_met": r_mof["full_set_s"] < TARGETS["mof_full_s"],
                    "mof_met_idle": r_mof["full_set_idle_s"] < TARGETS["mof_full_s"]},
    }
    text = _report(result)
    print(text)
    if out_dir is not None:
        atomic_write_json(out_dir / "featurize.json", result)
        atomic_write_text(out_dir / "featurize.md", text + "\n")
    return result


def _report(r: dict[str, Any]) -> str:
    q, m, t = r["qm9_polarity"], r["core_mof_pore"], r["targets"]
    par = r.get("parallel_workers", r["workers"])  # older results: workers
    return "\n".join([
        f"featurize benchmark ({'quick' if r['quick'] else 'full'} sample, "
        f"{r['workers']} worker(s), {r['cpu_count']} CPU(s))",
        f"  QM9 xyz -> polarity : {q['ok']}/{q['n']} ok, {q['per_second']:.0f} structures/s, "
        f"{1000 * par / q['per_second']:.2f} ms/structure/core wall "
        f"({q['cpu_ms_per_structure']:.2f} ms CPU); full set {q['full_set_s']:.0f} s "
        f"(idle cores: {q['full_set_idle_s']:.0f} s; target < {t['qm9_full_under_s']:.0f} s: "
        f"{'met' if t['qm9_met'] else 'NOT met'})",
        f"  CoRE MOF CIF -> mof-pore: {m['ok']}/{m['n']} ok, {m['per_second']:.1f} structures/s, "
        f"{1000 * par / m['per_second']:.0f} ms/structure/core wall "
        f"({m['cpu_ms_per_structure']:.1f} ms CPU); full set {m['full_set_s']:.0f} s "
        f"(idle cores: {m['full_set_idle_s']:.0f} s; target < {t['mof_full_under_s']:.0f} s: "
        f"{'met' if t['mof_met'] else 'NOT met'})",
        f"  (archive reading: QM9 sample {q['read_s']:.1f} s, MOF sample {m['read_s']:.1f} s; "
        "full-set times are extrapolated from the sample; 'idle cores' = summed worker CPU "
        "time / min(workers, cores), i.e. without other load on the machine)",
    ])
