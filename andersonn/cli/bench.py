"""Command-line commands of the headline benchmarks: ``bench speedup``, ``bench memory``,
``bench spectrum`` and ``bench charges``.

Each writes ``<bench>.json``, ``<bench>.md`` and PNG plots into a results folder (``--out DIR``,
default ``results/<bench>-<task>``, ``results/spectrum`` for ``bench spectrum``) and print the
markdown tables. See docs/benchmarks.md (speedup, memory) and docs/engine.md (spectrum).
Counts, sizes and thread numbers are parsed with :func:`positive_int`, so ``--threads 0`` or
``--train-limit -5`` fail in one line (exit 2) before any work; so do tolerances that are not
relative residuals in (0, 1) and list options with an empty item (``--inference-tols 1e-2,,1e-3``,
``--depths 4,,8``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from andersonn.bench.checks import tolerance_problem
from andersonn.cli.options import non_negative_int, output_dir, positive_float, positive_int
from andersonn.errors import ConfigError

_TASKS = ("polarity", "mof-pore", "crystal-gap")


def _items(text: str) -> list[str]:
    """The comma-separated items of a list option; an empty one (``1e-2,,1e-3``, a trailing
    comma) is refused rather than skipped."""
    items = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in items):
        raise argparse.ArgumentTypeError(f"an empty item in {text!r}; give a comma-separated "
                                         "list without blanks")
    return items


def _depths(text: str) -> tuple[int, ...]:
    """``--depths``: comma-separated whole numbers >= 1, returned sorted and without repeats."""
    values = []
    for item in _items(text):
        try:
            values.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r} is not a whole number"
                                             ) from None
        if values[-1] < 1:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r} is not at least 1")
    return tuple(sorted(set(values)))


def _tolerance(text: str) -> float:
    """A relative residual tolerance: a finite number in (0, 1)."""
    problem = tolerance_problem(text.strip())
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return float(text)


def _tolerances(text: str) -> tuple[float, ...]:
    """Comma-separated relative tolerances in (0, 1), returned loosest first without repeats."""
    values = []
    for item in _items(text):
        problem = tolerance_problem(item)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{problem} (in {text!r})")
        values.append(float(item))
    return tuple(sorted(set(values), reverse=True))


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench speedup``, ``bench memory``, ``bench spectrum`` and ``bench charges``."""
    sp = bench.add_parser(
        "speedup", help="forward vs Anderson vs Broyden DEQ training/inference, explicit net",
        description="Train the DEQ with forward iteration, Anderson and Broyden and the "
        "parameter-matched explicit network in lockstep on the same data, seed, cell and "
        "tolerance; report time per epoch, f-evaluations per batch, time to a common "
        "validation accuracy, test accuracy, inference time at matched residual and the "
        "residual-vs-time crossover.")
    sp.add_argument("task", choices=_TASKS)
    sp.add_argument("--quick", action="store_true",
                    help="smoke-sized run (a few minutes on 2 CPU cores)")
    sp.add_argument("--epochs", type=positive_int, default=None, help="(5; quick 3)")
    sp.add_argument("--limit", type=positive_int, default=None,
                    help="seeded random subset of N structures of the cached dataset (each "
                    "keeps its split; quick: 1000, also of a full build); if no current build "
                    "exists, the task is built with this limit")
    sp.add_argument("--train-limit", type=positive_int, default=None,
                    help="at most N training structures (seeded subset; quick: 512)")
    sp.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    sp.add_argument("--seed", type=non_negative_int, default=None, help="(0)")
    # --seeds: type int, checked in _speedup (tests/test_runtime.py relies on a command that
    # parses and then fails at once with exit 2)
    sp.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="repeat the whole benchmark for seeds SEED .. SEED+N-1 (each in "
                    "OUT/seed-K/) and write seeds.md with every ratio's median and range")
    sp.add_argument("--out", metavar="DIR", default=None, type=output_dir,
                    help="(results/speedup-TASK)")
    sp.add_argument("--batch-size", type=positive_int, default=None, help="(64)")
    sp.add_argument("--hidden", type=positive_int, default=None,
                    help="cell channels (48; quick 32)")
    sp.add_argument("--tol", type=_tolerance, default=None,
                    help="training solver tolerance (1e-3)")
    sp.add_argument("--max-iter", type=positive_int, default=None,
                    help="training iteration cap (30)")
    sp.add_argument("--evals-per-epoch", type=positive_int, default=None,
                    help="validation passes per epoch (4; quick 3)")
    sp.add_argument("--inference-tols", type=_tolerances, default=None,
                    help="relative residuals for the inference comparison (1e-2,1e-3,1e-4)")
    sp.add_argument("--inference-batch", type=positive_int, default=None,
                    help="batch size of the inference comparison (128)")
    sp.add_argument("--inference-limit", type=positive_int, default=None,
                    help="test structures in the inference comparison (512; quick 64)")
    sp.add_argument("--threads", type=positive_int, default=None, help="torch threads (1)")
    sp.add_argument("--cuda-graph", action="store_true", default=None,
                    help="CUDA: run the DEQs' forward solves as CUDA-graph blocks")
    sp.add_argument("--warm-start", action="store_true", default=None,
                    help="DEQs: each training sample's solve starts at its fixed point of the "
                    "last epoch (as `train --warm-start`)")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=_speedup)

    mem = bench.add_parser(
        "memory", help="peak training memory of the DEQ vs the explicit network in depth",
        description="Peak memory of one forward+backward step of the DEQ (solver forced to "
        "`depth` iterations, implicit backward) and of an explicit network of `depth` cells, "
        "each in a fresh subprocess; largest depth within --budget-mb.")
    mem.add_argument("--depths", type=_depths, default=None, help="(4,8,16,32,64)")
    mem.add_argument("--budget-mb", type=positive_float, default=None,
                     help="memory budget (1024 MB)")
    mem.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    mem.add_argument("--quick", action="store_true", help="batch 32 instead of 64")
    mem.add_argument("--task", choices=_TASKS, default="crystal-gap",
                     help="image shape of this task's graph images (crystal-gap)")
    mem.add_argument("--batch-size", type=positive_int, default=None, help="(64; quick 32)")
    mem.add_argument("--hidden", type=positive_int, default=None, help="cell channels (48)")
    mem.add_argument("--repeats", type=positive_int, default=None,
                     help="fresh processes per point (1)")
    mem.add_argument("--out", metavar="DIR", default=None, type=output_dir,
                     help="(results/memory-TASK)")
    mem.add_argument("--no-progress", action="store_true")
    mem.set_defaults(func=_memory)

    spec = bench.add_parser(
        "spectrum", help="Jacobian spectrum of the conv DEQ cell and Krylov limits of Anderson",
        description="Arnoldi Ritz values of df/dz at z* of the init and weak conv cells with a "
        "disk fit and the best Krylov rate it implies; an Anderson window sweep on the weak "
        "cell; forward vs Anderson on linear maps with known spectra. Writes spectrum.json, "
        "spectrum.md and PNG plots. See docs/engine.md.")
    spec.add_argument("--quick", action="store_true", help="tiny sizes (a few seconds)")
    spec.add_argument("--out", metavar="DIR", default=None, type=output_dir,
                      help="(results/spectrum)")
    spec.add_argument("--threads", type=positive_int, default=None, help="torch threads (1)")
    spec.add_argument("--seed", type=non_negative_int, default=None, help="(0)")
    spec.add_argument("--no-progress", action="store_true")
    spec.set_defaults(func=_spectrum)

    ch = bench.add_parser(
        "charges", help="how well each partial-charge model predicts QM9 dipoles",
        description="Charge dipole |sum q (r - r_com)| of MMFF94, the images' charges, "
        "electronegativity equalisation and Gasteiger against the DFT dipole on a seeded QM9 "
        "sample: Pearson r, MAE and the held-out accuracy of one threshold for the polarity "
        "label. Writes charges.json and charges.md. See docs/graph-images.md.")
    ch.add_argument("--molecules", type=positive_int, default=3000, help="sample size (3000)")
    ch.add_argument("--seed", type=non_negative_int, default=0, help="(0)")
    ch.add_argument("--cache-dir", metavar="DIR", default=None, help="cache root (archives)")
    ch.add_argument("--out", metavar="DIR", default=None, type=output_dir, help="(results/charges)")
    ch.set_defaults(func=_charges)


def _speedup(args: argparse.Namespace) -> int:
    from andersonn.bench.speedup import SpeedupSettings, run_speedup

    overrides: dict[str, Any] = {
        "epochs": args.epochs, "limit": args.limit, "train_limit": args.train_limit,
        "device": args.device, "seed": args.seed,
        "batch_size": args.batch_size, "hidden": args.hidden, "tol": args.tol,
        "max_iter": args.max_iter, "evals_per_epoch": args.evals_per_epoch,
        "threads": args.threads, "inference_tols": args.inference_tols,
        "inference_batch": args.inference_batch, "inference_limit": args.inference_limit,
        "cuda_graph": args.cuda_graph, "warm_start": args.warm_start}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = (SpeedupSettings.quick(**overrides) if args.quick
                else SpeedupSettings(**overrides))
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1 (got {args.seeds})")
        from andersonn.bench.speedup_seeds import run_speedup_seeds

        first = settings.seed
        summary = run_speedup_seeds(args.task, settings, range(first, first + args.seeds),
                                    out=args.out, progress=not args.no_progress)
        sys.stdout.write(summary["markdown"])
        print(f"\nresults: {summary['out_dir']}")
        return 0
    result = run_speedup(args.task, settings, out=args.out, progress=not args.no_progress)
    from andersonn.bench.speedup_report import speedup_markdown

    sys.stdout.write(speedup_markdown(result))
    print(f"\nresults: {result['out_dir']}")
    return 0


def _memory(args: argparse.Namespace) -> int:
    from andersonn.bench.memory import MemorySettings, run_memory, task_shape

    shape, classes = task_shape(args.task)
    overrides: dict[str, Any] = {
        "depths": args.depths, "budget_mb": args.budget_mb, "device": args.device,
        "batch_size": args.batch_size, "hidden": args.hidden, "repeats": args.repeats,
        "image_shape": shape, "num_classes": classes}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = (MemorySettings.quick(**overrides) if args.quick
                else MemorySettings(**overrides))
    result = run_memory(settings, out=args.out, progress=not args.no_progress, task=args.task)
    from andersonn.bench.memory import memory_markdown

    sys.stdout.write(memory_markdown(result))
    print(f"\nresults: {result['out_dir']}")
    return 0


def _charges(args: argparse.Namespace) -> int:
    from andersonn.bench.charges import main

    main(out=args.out, n=args.molecules, seed=args.seed, cache_dir=args.cache_dir)
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    from andersonn.bench.spectrum import main

    main(out=args.out, quick=args.quick, threads=args.threads,
         seed=0 if args.seed is None else args.seed, progress=not args.no_progress)
    return 0
