"""Training stage: config, trainer loop, metrics, checkpoints, distributed helpers, plots.

See docs/training.md. ``train(TrainConfig(...), out_dir)`` runs a whole training (one process or
under ``torchrun``); ``evaluate`` runs inference with any solver/tolerance; ``load_run`` returns
the best-validation model of a finished run.
"""

from __future__ import annotations

from andersonn.training.config import TrainConfig
from andersonn.training.trainer import TrainResult, evaluate, load_run, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "load_run", "train"]
