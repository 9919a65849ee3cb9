"""Inference time per structure of a trained DEQ run: forward iteration vs Anderson, one tol.

    python scripts/infer_time.py RUN_DIR [--n 512] [--tol 1e-4] [--batch 256] [--repeats 3]

Loads a training run (``andersonn train``), embeds its first N test structures, and solves the
cell's fixed point from zeros with each solver in turn (interleaved, ``--repeats`` times; the
median is printed) in batches of ``--batch``. Calls :func:`andersonn.runtime.tune_cpu_allocator`
like the ``andersonn`` command (``ANDERSONN_MALLOC_TUNING=0`` to compare without it); compare
code versions with ``PYTHONPATH=<checkout> python scripts/infer_time.py ...``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from andersonn.runtime import tune_cpu_allocator
from andersonn.solvers import solve
from andersonn.training import load_run_injection

SOLVERS = ("forward_iteration", "anderson")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tuned = tune_cpu_allocator()
    torch.set_num_threads(args.threads)

    model, x, _ = load_run_injection(args.run_dir, "test", args.n)
    seconds: dict[str, list[float]] = {name: [] for name in SOLVERS}
    evals: dict[str, float] = {}
    for _ in range(args.repeats):
        for name in SOLVERS:
            start, nfev = time.perf_counter(), []
            for first in range(0, x.shape[0], args.batch):
                xb = x[first:first + args.batch]
                _, stats = solve(model.cell, torch.zeros_like(xb), name, tol=args.tol,
                                 max_iter=500, args=(xb,))
                nfev.append(stats.nfev.double())
            seconds[name].append(time.perf_counter() - start)
            evals[name] = float(torch.cat(nfev).mean())
    per = {name: statistics.median(seconds[name]) * 1e3 / x.shape[0] for name in SOLVERS}
    print(f"{x.shape[0]} test structures, tol {args.tol:g}, allocator "
          f"{'tuned' if tuned else 'default'}: " + ", ".join(
              f"{name} {per[name]:.2f} ms/structure ({evals[name]:.1f} f-evals)"
              for name in SOLVERS)
          + f"; forward / Anderson {per['forward_iteration'] / per['anderson']:.2f}x")


if __name__ == "__main__":
    main()
