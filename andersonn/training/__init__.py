"""Training stage: config, inputs, trainer loop, evaluation, finished runs, metrics, checkpoints,
distributed helpers, plots.

See docs/training.md. ``train(TrainConfig(...), out_dir)`` runs a whole training (one process or
under ``torchrun``); ``evaluate`` runs inference with any solver/tolerance; ``load_run`` returns
the best-validation model of a finished run, ``load_run_injection`` also the cell injection of its
data (for probes of the trained cell); ``calibrate_run`` fits the probability temperature of a
run trained before calibration existed (``calibration``: temperature scaling, ECE).
"""

from __future__ import annotations

from andersonn.training.config import TrainConfig
from andersonn.training.evaluation import evaluate
from andersonn.training.runs import calibrate_run, load_run, load_run_injection
from andersonn.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "calibrate_run", "evaluate", "load_run",
           "load_run_injection", "train"]
