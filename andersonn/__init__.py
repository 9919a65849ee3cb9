"""andersonn: Deep AndersoNN — Anderson-accelerated deep equilibrium classifiers for chemistry.

Data flows one way: structure file → atom-bond network → graph image → dataset → model (the DEQ
engine) → training / prediction → benchmarks and reports. Each stage is one sub-package.
Heavy names (``DEQ``, ``solve``) are imported lazily so the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DEQ": "andersonn.deq",
    "solve": "andersonn.solvers",
    "SolverStats": "andersonn.solvers",
}

__all__ = ["DEQ", "SolverStats", "__version__", "solve"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'andersonn' has no attribute {name!r}")
