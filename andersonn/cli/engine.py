"""Command-line commands of the engine stage: ``andersonn bench solvers``."""

from __future__ import annotations

import argparse

from andersonn.cli.options import output_dir, positive_int


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add this stage's sub-commands to the top-level and bench parsers."""
    p = bench.add_parser(
        "solvers",
        help="fixed-point solvers on a convolutional DEQ cell (f evals, wall time, overhead)",
        description="Solve the same conv-DEQ fixed points with forward iteration, Anderson, "
        "Broyden and (if installed) torchdeq's Anderson at tolerances 1e-2..1e-5; print a "
        "table and write solvers.json and solvers.md (solvers_quick.* with --quick); ratios "
        "where a solver stopped at its iteration cap are marked as bounds.",
    )
    p.add_argument("--out", default=None, type=output_dir,
                   help="directory for the JSON result (default: none)")
    p.add_argument("--quick", action="store_true", help="tiny sizes; finishes in seconds")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--channels", type=positive_int, default=None, help="override channels (48)")
    p.add_argument("--hidden", type=positive_int, default=None,
                   help="override the cell's hidden width (64; 4/3 x --channels when that is set)")
    p.add_argument("--size", type=positive_int, default=None, help="override image side (32)")
    p.add_argument("--batch", type=positive_int, default=None, help="override batch size (128)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads for the run (1 avoids oversubscription on shared CPUs)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 convolutions on CUDA (off: TF32 floors the reachable residual)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="CUDA: also time our solvers with cuda_graph=True (reported wall time)")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="solve every point N times and report the median wall time (1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_bench_solvers)


def _bench_solvers(args: argparse.Namespace) -> int:
    from andersonn.bench.solvers import main

    main(
        out=args.out,
        quick=args.quick,
        device=args.device,
        progress=not args.no_progress,
        channels=args.channels,
        hidden=args.hidden,
        size=args.size,
        batch=args.batch,
        threads=args.threads,
        tf32=args.tf32,
        cuda_graph=args.cuda_graph,
        repeats=args.repeat,
    )
    return 0
