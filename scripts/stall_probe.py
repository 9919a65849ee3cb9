"""Forward iteration vs Anderson with and without the stagnation fallback on a trained DEQ cell.

    python scripts/stall_probe.py RUN_DIR [--n 256] [--tol 1e-4] [--max-iter 100]

Loads a training run (``andersonn train``), takes the first N test structures of the dataset
build the run was trained on, and solves the cell's fixed point z* = f(z*, x) from zeros with
each solver. Prints mean f evaluations, converged fraction and residual percentiles, and how many
samples end above tol with a worse residual than forward iteration reached.
"""

from __future__ import annotations

import argparse

import torch

from andersonn.solvers import solve
from andersonn.training import load_run_injection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, x, ds = load_run_injection(args.run_dir, "test", args.n)
    z0 = torch.zeros_like(x)
    opts = {"tol": args.tol, "max_iter": args.max_iter, "args": (x,)}

    runs = {"forward": solve(model.cell, z0, "forward_iteration", **opts)[1],
            "anderson, no fallback": solve(model.cell, z0, "anderson", stall_patience=None,
                                           **opts)[1],
            "anderson (default)": solve(model.cell, z0, "anderson", **opts)[1]}
    fwd = runs["forward"].lowest_residual
    print(f"{x.shape[0]} test structures of {ds}, tol {args.tol:g}, max_iter {args.max_iter}")
    print(f"{'solver':<24} {'evals':>6} {'conv.':>6} {'p90':>8} {'p99':>8} {'worst':>8} "
          f"{'worse than fwd':>14} {'fallbacks':>9}")
    for name, st in runs.items():
        low = st.lowest_residual.double()
        p90, p99 = torch.quantile(low, torch.tensor([0.9, 0.99], dtype=torch.float64)).tolist()
        worse = int(((low > args.tol) & (low > fwd.double())).sum()) if name != "forward" else 0
        print(f"{name:<24} {st.nfev.double().mean():>6.2f} {st.converged.double().mean():>6.3f} "
              f"{p90:>8.1e} {p99:>8.1e} {low.max():>8.1e} {worse:>14d} {int(st.stalled.sum()):>9d}")


if __name__ == "__main__":
    main()
