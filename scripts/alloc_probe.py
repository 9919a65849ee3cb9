"""Cell evaluation time with and without the CPU allocator tuning (andersonn.runtime).

    python scripts/alloc_probe.py [--rounds 3] [--batch 128] [--threads 1]

Alternates fresh processes with glibc's default malloc settings and with
:func:`andersonn.runtime.tune_cpu_allocator`, each timing 15 evaluations of the conv cell of
``andersonn bench solvers`` (48 channels, hidden 64, 32×32; iterated, z ← f(z, x)) and printing
the median and minimum of the last 12.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def child(mode: str, batch: int, threads: int) -> None:
    from andersonn.runtime import tune_cpu_allocator

    if mode == "tuned" and not tune_cpu_allocator():
        print("tuned: not available here (not glibc, or ANDERSONN_MALLOC_TUNING=0)")
        return
    import torch

    from andersonn.bench.cells import ConvDEQCell

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cell = ConvDEQCell(48, 64, 8)
    x = torch.randn(batch, 48, 32, 32)
    z = torch.zeros_like(x)
    times = []
    with torch.no_grad():
        for _ in range(15):
            start = time.perf_counter()
            z = cell(z, x)
            times.append(time.perf_counter() - start)
    tail = times[3:]
    print(f"{mode:>6}: median {statistics.median(tail) * 1e3:6.1f} ms, "
          f"min {min(tail) * 1e3:6.1f} ms per evaluation (batch {batch})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", choices=("plain", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.batch, args.threads)
        return
    for _ in range(args.rounds):
        for mode in ("plain", "tuned"):
            subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(args.batch),
                            "--threads", str(args.threads)], check=True)


if __name__ == "__main__":
    main()
