"""Time training steps (forward + backward) of a trained DEQ run with a given solver.

    python scripts/step_time.py RUN_DIR [--solver anderson|forward] [--batches 24] [--threads 1]

Loads a training run (``andersonn train``), takes consecutive batches of its training split
(the run's batch size), and times ``loss.backward()`` steps in training mode (no optimiser step,
so every solver sees the same weights). Prints the mean and median step time after 4 warm-up
steps, the forward- and backward-solve wall times, and the backward f evaluations (mean per
sample, and the batch maximum averaged over batches) and the forward solve's f evaluations (mean per
sample) and iterations (its slowest row). Compare code versions with
``PYTHONPATH=<checkout> python scripts/step_time.py ...`` in the same session.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from andersonn.data.build import load_dataset
from andersonn.predict import Classifier
from andersonn.runtime import tune_cpu_allocator

WARM_UP = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--solver", choices=("anderson", "forward"), default="anderson")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = json.loads((Path(args.run_dir) / "config.json").read_text())
    train = config["train"]
    model = Classifier.load(args.run_dir).model_
    model.set_solver("anderson" if args.solver == "anderson" else "forward_iteration",
                     {"tol": train["tol"], "max_iter": train["max_iter"]})
    model.train()
    ds = load_dataset(config["task"], limit=train.get("limit"))
    rows = ds.split_indices("train")
    labels = np.asarray(ds.labels)
    bs = int(train["batch_size"])
    steps, fwd, bwd, nfev, nfev_max, fwd_nfev, fwd_iters = [], [], [], [], [], [], []
    for i in range(WARM_UP + args.batches):
        idx = np.sort(rows[i * bs:(i + 1) * bs])
        xb = torch.as_tensor(np.asarray(ds.images[idx], dtype=np.float32))
        yb = torch.as_tensor(labels[idx])
        start = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        model.zero_grad()
        loss.backward()
        elapsed = time.perf_counter() - start
        if i < WARM_UP:
            continue
        stats = model.solver_stats()
        steps.append(elapsed)
        fwd.append(stats["forward"].wall_time)
        bwd.append(stats["backward"].wall_time)
        nfev.append(float(stats["backward"].nfev.double().mean()))
        fwd_nfev.append(float(stats["forward"].nfev.double().mean()))
        fwd_iters.append(stats["forward"].iterations)
        nfev_max.append(float(stats["backward"].nfev.max()))
    print(f"{args.solver}: step {np.mean(steps) * 1e3:.0f} ms (median "
          f"{np.median(steps) * 1e3:.0f}), forward solve {np.mean(fwd) * 1e3:.0f} ms (f-evals "
          f"mean {np.mean(fwd_nfev):.1f}, iterations {np.mean(fwd_iters):.1f}), backward "
          f"solve {np.mean(bwd) * 1e3:.0f} ms, backward f-evals mean {np.mean(nfev):.1f} "
          f"max {np.mean(nfev_max):.1f}")


if __name__ == "__main__":
    main()
