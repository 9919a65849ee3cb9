"""Training stage: config, trainer loop, metrics, checkpoints, distributed helpers, plots.

See docs/training.md. ``train(TrainConfig(...), out_dir)`` runs a whole training (one process or
under ``torchrun``); ``evaluate`` runs inference with any solver/tolerance; ``load_run`` returns
the best-validation model of a finished run, ``load_run_injection`` also the cell injection of its
data (for probes of the trained cell).
"""

from __future__ import annotations

from andersonn.training.config import TrainConfig
from andersonn.training.trainer import TrainResult, evaluate, load_run, load_run_injection, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "load_run", "load_run_injection", "train"]
