"""Seed spread and deep-ensemble gain of several runs on their test split.

    python scripts/ensemble_eval.py RUN [RUN ...] [--out FILE.json] [--threads N]

The runs must be of one task on one dataset build (typically ``andersonn train TASK --seed S``
for several S). For every run alone it scores the test split (accuracy, balanced accuracy,
macro-F1, metal vs non-metal balanced accuracy where the task has it, expected calibration
error, negative log-likelihood); then the mean and standard deviation over the runs; then the
ensemble of the first k runs (mean of their calibrated probabilities, ``andersonn.ensemble``)
for k = 2 … N. Prints a markdown table and writes the numbers as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from andersonn.ensemble import Ensemble
from andersonn.errors import AndersonnError
from andersonn.fileio import atomic_write_json
from andersonn.training.calibration import expected_calibration_error
from andersonn.training.inputs import split_tensors
from andersonn.training.metrics import classification_report, confusion_matrix
from andersonn.training.runs import run_dataset

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "metal_vs_nonmetal_balanced_accuracy",
            "ece", "nll")


def scores(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Headline metrics of probabilities (N, K) against integer labels (N,)."""
    cm = confusion_matrix(labels, probs.argmax(axis=1), len(classes))
    report = classification_report(cm, classes)
    p = torch.as_tensor(probs, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    report["ece"] = expected_calibration_error(p, y)
    report["nll"] = float(-torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean())
    return {k: float(report[k]) for k in HEADLINE if k in report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--out", metavar="FILE.json", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ens = Ensemble.from_runs(args.runs)
    except AndersonnError as exc:
        print(f"ensemble_eval: {exc}", file=sys.stderr)
        return 2
    builds = {json.dumps(m.config_.get("dataset"), sort_keys=True) for m in ens.members}
    limits = {m.config_.get("train", {}).get("limit") for m in ens.members}
    if len(builds) > 1 or len(limits) > 1:
        print("ensemble_eval: the runs were trained on different dataset builds; their test "
              "splits differ", file=sys.stderr)
        return 2
    ds = run_dataset(ens.config_)
    images, labels = split_tensors(ds, "test")
    y = labels.numpy()
    per_member = ens.member_probabilities(images.numpy())
    classes = ens.classes_
    singles = [scores(p, y, classes) for p in per_member]
    summary = {k: {"mean": float(np.mean([s[k] for s in singles])),
                   "std": float(np.std([s[k] for s in singles], ddof=1)) if len(singles) > 1
                   else 0.0}
               for k in singles[0]}
    ensembles = {k: scores(per_member[:k].mean(axis=0), y, classes)
                 for k in range(2, len(per_member) + 1)}
    record = {"task": ens.config_.get("task"), "n_test": len(y), "runs": list(args.runs),
              "single": singles, "single_mean_std": summary,
              "ensemble_first_k": {str(k): v for k, v in ensembles.items()}}
    keys = list(singles[0])
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for run, s in zip(args.runs, singles, strict=True):
        print(f"| {run} | " + " | ".join(f"{s[k]:.3f}" for k in keys) + " |")
    print(f"| mean ± sd of {len(singles)} | " +
          " | ".join(f"{summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}" for k in keys) + " |")
    for k, s in ensembles.items():
        print(f"| ensemble of first {k} | " + " | ".join(f"{s[key]:.3f}" for key in keys) + " |")
    if args.out:
        atomic_write_json(args.out, record)
        print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
