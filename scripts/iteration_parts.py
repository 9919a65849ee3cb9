"""Where an Anderson iteration's time goes on a trained DEQ cell: f, propose, accept, the rest.

    python scripts/iteration_parts.py RUN_DIR [--batch 1] [--n 64] [--tol 1e-4]

Solves the cell's fixed point for the first N test structures in batches of ``--batch`` (one
warm-up pass, then a timed one), with wall-clock timers wrapped around the cell, the Anderson
method's ``propose`` and ``accept``, and the stall watch's update; prints milliseconds per
iteration for each and for the whole solve. At small batches f is cheap and the solver's own
operations set the pace (``docs/engine.md``, "Small batches"). Compare code versions with
``PYTHONPATH=<checkout> python scripts/iteration_parts.py ...`` in the same session.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from andersonn.runtime import tune_cpu_allocator
from andersonn.solvers import solve
from andersonn.solvers.base import _StallWatch
from andersonn.training import load_run_injection

SECONDS: Counter[str] = Counter()


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - start
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(1)

    method = importlib.import_module("andersonn.solvers.anderson")._Anderson
    for name in ("propose", "accept"):
        setattr(method, name, timed(name, getattr(method, name)))
    for name in ("update", "update_synced"):  # the CPU path calls update_synced, if present
        if hasattr(_StallWatch, name):
            setattr(_StallWatch, name, timed("stall watch", getattr(_StallWatch, name)))
    model, x, _ = load_run_injection(args.run_dir, "test", args.n)
    cell = timed("f", model.cell)
    evaluations = 0
    for _ in range(2):  # a warm-up pass, then the timed one
        SECONDS.clear()
        evaluations = 0
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, x.shape[0], args.batch):
                xb = x[first:first + args.batch]
                _, stats = solve(cell, torch.zeros_like(xb), "anderson", tol=args.tol,
                                 max_iter=500, args=(xb,))
                evaluations += stats.iterations
        total = time.perf_counter() - start
    print(f"{x.shape[0]} structures, batch {args.batch}, tol {args.tol:g}: {evaluations} "
          f"iterations, {total / evaluations * 1e3:.3f} ms per iteration")
    for name, seconds in SECONDS.most_common():
        print(f"  {name:28s} {seconds / evaluations * 1e3:.3f} ms per iteration")
    rest = total - sum(SECONDS.values())
    print(f"  {'driver and the rest':28s} {rest / evaluations * 1e3:.3f} ms per iteration")


if __name__ == "__main__":
    main()
