"""Models: the DEQ classifier and the explicit network it is compared against.

``build_model(name, **hparams)`` builds one by name (``"deq"`` or ``"explicit"``);
``explicit_width_for`` picks the explicit network's width so its parameter count matches a target
(e.g. the DEQ's), for a fair equal-parameter comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from andersonn.errors import ConfigError
from andersonn.models.cells import ResidualCell, fit_groups
from andersonn.models.networks import DEQClassifier, ExplicitClassifier, GraphImageClassifier

__all__ = ["FRAME_CHANNELS", "MODELS", "DEQClassifier", "ExplicitClassifier",
           "GraphImageClassifier", "ResidualCell", "build_model", "count_parameters",
           "explicit_width_for", "fit_groups", "vector_channels_for"]

MODELS: dict[str, type[GraphImageClassifier]] = {"deq": DEQClassifier,
                                                 "explicit": ExplicitClassifier}


#: image channels holding each atom's coordinates in an orthonormal structure-defined frame
FRAME_CHANNELS: tuple[str, str, str] = ("atom_dipole_proj", "atom_frame_y", "atom_frame_z")


def vector_channels_for(channels: Sequence[str] | None) -> list[int]:
    """Indices of :data:`FRAME_CHANNELS` in an image's channel list, or [] if any is missing."""
    names = list(channels or [])
    if not all(c in names for c in FRAME_CHANNELS):
        return []
    return [names.index(c) for c in FRAME_CHANNELS]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def explicit_width_for(target_params: int, *, depth: int = 6, in_channels: int,
                       width: int, num_classes: int, kernel: int = 3, groups: int = 8,
                       height: int = 1, **extra: Any) -> int:
    """Hidden width of an explicit network whose parameter count is closest
    to ``target_params`` (``extra``: further hyper-parameters, e.g. the vector readout)."""
    best, best_err = 2, None
    for hidden in range(2, 513):
        model = ExplicitClassifier(in_channels, height, width, num_classes, hidden=hidden,
                                   kernel=kernel, groups=groups, depth=depth, **extra)
        err = abs(count_parameters(model) - target_params)
        if best_err is None or err < best_err:
            best, best_err = hidden, err
        elif count_parameters(model) > target_params:
            break
    return best


def build_model(name: str, *, match_params: int | None = None, **hparams: Any
                ) -> GraphImageClassifier:
    """Build a model by name.

    ``hparams``: ``in_channels, height, width, num_classes`` (required), ``hidden, kernel,
    groups, product_pool, vector_channels, vector_heads``; DEQ: ``solver, solver_options,
    backward, backward_options``; explicit: ``depth``.
    ``match_params`` (explicit only): choose ``hidden`` so the parameter count is closest to it.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    for key in ("in_channels", "height", "width", "num_classes"):
        if key not in hparams:
            raise ConfigError(f"build_model({name!r}) needs {key}")
    hparams.pop("name", None)
    if name == "explicit" and match_params:
        hparams["hidden"] = explicit_width_for(
            int(match_params), depth=int(hparams.get("depth", 6)),
            in_channels=hparams["in_channels"], width=hparams["width"],
            num_classes=hparams["num_classes"], kernel=int(hparams.get("kernel", 3)),
            groups=int(hparams.get("groups", 8)), height=hparams["height"],
            **{k: hparams[k] for k in ("vector_channels", "vector_heads", "product_pool")
               if k in hparams})
    return MODELS[name](**hparams)
