"""Training stage: config, trainer loop, metrics, checkpoints, distributed helpers, plots.

See docs/training.md. ``train(TrainConfig(...), out_dir)`` runs a whole training (one process or
under ``torchrun``); ``evaluate`` runs inference with any solver/tolerance; ``load_run`` returns
the best-validation model of a finished run, ``load_run_injection`` also the cell injection of its
data (for probes of the trained cell); ``calibrate_run`` fits the probability temperature of a
run trained before calibration existed (``calibration``: temperature scaling, ECE).
"""

from __future__ import annotations

from andersonn.training.config import TrainConfig
from andersonn.training.trainer import (
    TrainResult,
    calibrate_run,
    evaluate,
    load_run,
    load_run_injection,
    train,
)

__all__ = ["TrainConfig", "TrainResult", "calibrate_run", "evaluate", "load_run",
           "load_run_injection", "train"]
