"""How many CUDA-graph captures a solve of the weak conv cell needs, by compaction threshold.

Runs on the CPU with the capture emulation of ``andersonn.solvers.graphs`` (same shape keys,
compactions and reuse rules as on a GPU), so it counts captures and replays without a GPU:

    python scripts/graph_probe.py [--fractions 2,4,8] [--tol 1e-4]

Cell: ``andersonn bench solvers``' conv cell at its full size, conv2 scaled by 2.83 (the weak
cell of the README), batch 128, check_every 5. Prints, per threshold 1/k, Anderson's mean f
evaluations, graph blocks, captures, and the f rows evaluated (retired rows still in the batch
included) against the useful ones. About a minute per threshold on 2 cores.
"""

from __future__ import annotations

import argparse

import torch

import andersonn.solvers.base as base
import andersonn.solvers.graphs as graphs
from andersonn.bench.cells import ConvDEQCell
from andersonn.solvers import solve
from andersonn.solvers.anderson import _Anderson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", default="2,4,8", help="compaction thresholds 1/k")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    graphs.EMULATE_ON_CPU = True
    _Anderson.capturable = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cell = ConvDEQCell(48, 64, 8)
    x = torch.randn((128, 48, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cell.conv2.weight.mul_(2.83)
    rows: list[int] = []

    def counted(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rows.append(z.shape[0])
        return cell(z, x)

    for k in (int(v) for v in args.fractions.split(",")):
        base.COMPACT_GRAPH = k
        rows.clear()
        _, st = solve(counted, torch.zeros_like(x), "anderson", tol=args.tol, max_iter=200,
                      args=(x,), check_every=5, cuda_graph=True)
        print(f"compact at 1/{k}: nfev mean {float(st.nfev.double().mean()):.1f}, blocks "
              f"{st.graph_blocks}, captures {st.graph_captures}, f rows {sum(rows)} "
              f"(useful {int(st.nfev.sum())}, +{100 * (sum(rows) / int(st.nfev.sum()) - 1):.1f} %)")


if __name__ == "__main__":
    main()
