"""Training configuration: one flat dataclass, loadable from JSON (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from andersonn.deq import BACKWARD_MODES
from andersonn.errors import ConfigError

__all__ = ["SOLVER_NAMES", "TrainConfig"]

SOLVER_NAMES = ("anderson", "forward", "broyden")


LABELS_FILE_FIELDS = ("image", "bins", "classes", "input_column", "label_column")
"""Fields that apply only to training on a labels file."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; every field is plain JSON."""

    task: str = "polarity"
    # your own labelled structures (a CSV / TSV / SDF; andersonn.data.labelled) instead of a
    # built-in task: the task is then "custom"; image preset (None: chosen from the structures),
    # bins that turn a value column into classes, and the class names / their order
    labels: str | None = None
    image: str | None = None
    bins: list | None = None
    classes: list | None = None
    # the labels file's input and label columns, where not one of the recognised names
    input_column: str | None = None
    label_column: str | None = None
    # k-fold cross-validation (andersonn.data.folds): train on fold `fold` (1-based) of `folds`,
    # whose structures are the test split; None: the dataset's own 80/10/10 split
    folds: int | None = None
    fold: int | None = None
    model: str = "deq"
    # DEQ solver (training); eval_* default to the training values when None
    solver: str = "anderson"
    tol: float = 1e-3
    max_iter: int = 30
    solver_options: dict = dataclasses.field(default_factory=dict)
    backward: str = "implicit"
    backward_tol: float | None = None
    backward_max_iter: int | None = None
    eval_tol: float | None = None
    eval_max_iter: int | None = None
    # Jacobian regularisation (DEQ): loss += jac_reg * Hutchinson estimate of ||df/dz||_F^2 / d
    # at z*, from jac_samples random vectors per step; 0 = off
    jac_reg: float = 0.0
    jac_samples: int = 1
    # DEQ: start each training sample's solve at its fixed point from the previous epoch
    warm_start: bool = False
    # architecture
    hidden: int = 48
    kernel: int = 3
    groups: int = 8
    depth: int = 6
    match_params: bool = False
    # learned-charge vector readout (|Σ q r|) where the image has frame coordinates; 0 = off
    vector_heads: int = 0
    # optimisation
    epochs: int = 8
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    class_weights: str = "auto"
    grad_clip: float | None = 1.0
    seed: int = 0
    bf16: bool = False
    device: str = "auto"
    limit: int | None = None
    threads: int | None = None
    workers: int | None = None  # processes featurising a dataset built for this run (None: all)
    evaluate_test: bool = True
    plots: bool = True
    max_time_s: float | None = None  # stop after the epoch that passes this cumulative time
    # early stopping: stop once the validation accuracy has not improved for this many epochs
    # (the best epoch's weights are kept either way); None: train every epoch
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.task = "custom"
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an inconsistent option, or one of the wrong type or
        out of range."""
        self._check_types()
        if self.labels is None:
            given = [n for n in LABELS_FILE_FIELDS if getattr(self, n) is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} applies to training on a labels file of "
                                  "your own structures (labels)")
        elif self.limit is not None:
            raise ConfigError("limit applies to the built-in tasks, not to a labels file")
        if (self.folds is None) != (self.fold is None):
            raise ConfigError("folds and fold go together: fold I of a K-fold cross-validation")
        if self.folds is not None:
            if int(self.folds) < 2:
                raise ConfigError(f"folds must be >= 2 (got {self.folds})")
            if not 1 <= int(self.fold) <= int(self.folds):
                raise ConfigError(f"fold must be between 1 and folds={self.folds} "
                                  f"(got {self.fold})")
        if self.model not in ("deq", "explicit"):
            raise ConfigError(f"unknown model {self.model!r}; choose deq or explicit")
        if self.solver not in SOLVER_NAMES:
            raise ConfigError(f"unknown solver {self.solver!r}; choose one of "
                              f"{', '.join(SOLVER_NAMES)}")
        if self.class_weights not in ("auto", "none"):
            raise ConfigError("class_weights must be 'auto' or 'none'")
        for name in ("epochs", "batch_size", "eval_batch_size", "hidden", "kernel", "groups",
                     "depth", "max_iter"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.patience is not None and int(self.patience) < 1:
            raise ConfigError(f"patience must be >= 1 epoch (got {self.patience})")
        if self.workers is not None and int(self.workers) < 1:
            raise ConfigError(f"workers must be >= 1 (got {self.workers})")
        if self.jac_reg < 0 or int(self.jac_samples) < 1:
            raise ConfigError(f"jac_reg must be >= 0 and jac_samples >= 1 (got {self.jac_reg}, "
                              f"{self.jac_samples})")
        if self.jac_reg > 0 and self.model != "deq":
            raise ConfigError("jac_reg regularises a DEQ's fixed point; the explicit model has "
                              "none")
        if int(self.vector_heads) < 0:
            raise ConfigError(f"vector_heads must be >= 0 (got {self.vector_heads})")
        for name in ("lr", "tol"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        for name in ("eval_tol", "backward_tol", "max_time_s"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        for name in ("eval_max_iter", "backward_max_iter", "limit", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 or null: off; got {self.grad_clip})")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.backward not in BACKWARD_MODES:
            raise ConfigError(f"unknown backward {self.backward!r}; choose one of "
                              f"{', '.join(BACKWARD_MODES)}")

    def _check_types(self) -> None:
        """Raise :class:`ConfigError` on a field of the wrong JSON type (an integer given as
        1.5, "1" or true, a number as a string, ...)."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _KINDS.get(f.name)
            if kind is None or (value is None and f.name in _OPTIONAL):
                continue
            if kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                      and math.isfinite(value))
            else:
                ok = isinstance(value, kind)
            if not ok:
                what = {int: "an integer", float: "a finite number", bool: "true or false",
                        str: "a string", list: "a list", dict: "a JSON object"}[kind]
                raise ConfigError(f"{f.name} must be {what}"
                                  f"{' or null' if f.name in _OPTIONAL else ''} (got {value!r})")
        for name, item_kinds in (("bins", (int, float)), ("classes", (str, int))):
            items = getattr(self, name)
            if isinstance(items, list) and any(isinstance(v, bool) or not isinstance(
                    v, item_kinds) for v in items):
                raise ConfigError(f"{name} must be a list of "
                                  f"{'numbers' if name == 'bins' else 'names'} (got {items!r})")

    # -- derived ---------------------------------------------------------------------------
    def forward_options(self, *, evaluation: bool = False) -> dict[str, Any]:
        """Options passed to the forward solver (training or evaluation)."""
        opts = dict(self.solver_options)
        opts["tol"] = self.eval_tol if (evaluation and self.eval_tol is not None) else self.tol
        opts["max_iter"] = (self.eval_max_iter if (evaluation and self.eval_max_iter is not None)
                            else self.max_iter)
        return opts

    def backward_options(self) -> dict[str, Any]:
        """Options of the implicit backward solve."""
        return {"tol": self.backward_tol if self.backward_tol is not None else self.tol,
                "max_iter": (self.backward_max_iter if self.backward_max_iter is not None
                             else self.max_iter)}

    def torch_device(self, info: Any = None) -> Any:
        """The ``torch.device`` of :attr:`device` (``auto``: CUDA where available, this rank's
        GPU given ``info``); one that cannot be used is a :class:`ConfigError` naming it as
        ``TrainConfig(device='cuda')`` (the command line checks its ``--device`` first)."""
        from andersonn.training.distributed import resolve_device

        return resolve_device(self.device, info, what=f"TrainConfig(device={self.device!r})")

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError`; ``overrides`` win
        (``None`` values in overrides are ignored)."""
        if not isinstance(data, dict):
            raise ConfigError("a training config must be a JSON object")
        known = set(cls.field_names())
        unknown = sorted(set(data) - known) + sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(_unknown_keys(unknown, known))
        merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        try:
            return cls(**merged)
        except TypeError as exc:
            raise ConfigError(f"bad training config: {exc}") from None

    @classmethod
    def read_json(cls, path: str | Path) -> dict[str, Any]:
        """The fields a JSON config file (``--config FILE``) sets, unvalidated but for unknown
        keys: to be merged with other settings before :meth:`from_dict` checks them together.
        A relative ``labels`` path is taken from the config file's folder (and made
        absolute)."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config must be a JSON object")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{path}: {_unknown_keys(unknown, set(cls.field_names()))}")
        if isinstance(data.get("labels"), str):
            data["labels"] = str((Path(path).parent / data["labels"]).resolve())
        return data

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a JSON config file (``--config FILE``; see :meth:`read_json`)."""
        data = cls.read_json(path)
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _unknown_keys(unknown: list[str], known: set[str]) -> str:
    """The one-line refusal of misspelt or unknown keys, with the nearest known one."""
    import difflib

    hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
        k, sorted(known), n=1)) else repr(k) for k in unknown]
    return (f"unknown config key(s): {', '.join(hints)}; the keys are "
            f"{', '.join(sorted(known))}")


_OPTIONAL = {f.name for f in dataclasses.fields(TrainConfig) if "None" in str(f.type)}
"""Fields that may be null."""
_KINDS: dict[str, type] = {
    **{f.name: kind for f in dataclasses.fields(TrainConfig)
       for kind in (int, float, bool, str, list, dict)
       if f.type in (kind.__name__, f"{kind.__name__} | None")},
    "solver_options": dict,
}
"""The JSON type of each field (ints where an integer is meant, floats for any number)."""
