"""What a run's config (``config.json``, or a fit's run config) gives prediction: the image
spec and the featuriser-version check, the calibration temperature, the applicability domain
and the feature domain. A malformed record is refused in one line naming the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from andersonn.data.domain import Domain, FeatureDomain
from andersonn.errors import AndersonnError

__all__ = ["check_featurizer_version", "run_image_spec"]


def run_image_spec(run_config: dict[str, Any]) -> Any:
    """The :class:`andersonn.images.ImageSpec` the run's images were made with (a preset's
    name or a full record); refused for a run trained on raw images."""
    from andersonn.images import IMAGE_SPECS, ImageSpec

    raw = run_config.get("image_spec")
    if raw is None:
        raise AndersonnError("this model was trained on raw images (no image spec); "
                             "pass images, not structures")
    return IMAGE_SPECS[raw] if isinstance(raw, str) else ImageSpec.from_dict(raw)


def check_featurizer_version(run_dir: str | Path, version: Any, spec: Any) -> None:
    """Refuse a run whose images were made by featuriser ``version`` when the installed one
    (``spec``'s) differs: its images would mean something else."""
    if str(version) != spec.featurizer_version:
        raise AndersonnError(
            f"{run_dir}: trained on {spec.name} images of featuriser version {version}, "
            f"but this andersonn makes version {spec.featurizer_version}; its images "
            "would differ — retrain the model (or install the matching andersonn)")


def _run_feature_domain(run_dir: str | Path, run_config: dict[str, Any]
                        ) -> FeatureDomain | None:
    """The run's feature domain (None for runs without one)."""
    record = run_config.get("feature_domain")
    if not record:
        return None
    try:
        return FeatureDomain.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise AndersonnError(f"{run_dir}: config.json has a malformed feature domain "
                             f"({exc})") from None


def _run_temperature(run_dir: str | Path, run_config: dict[str, Any]) -> float:
    """The run's fitted probability temperature (1.0 for runs without one)."""
    record = run_config.get("calibration") or {}
    try:
        value = float(record.get("temperature", 1.0))
    except (AttributeError, TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise AndersonnError(f"{run_dir}: config.json has a malformed calibration temperature "
                             f"({record!r:.80})")
    return value


def _run_domain(run_dir: str | Path, run_config: dict[str, Any]) -> Domain | None:
    """The run's recorded domain; for runs that predate it, the kind its task implies."""
    from andersonn.data.tasks import TASKS

    record = run_config.get("domain")
    if record:
        try:
            return Domain.from_dict(record)
        except (TypeError, ValueError) as exc:
            raise AndersonnError(f"{run_dir}: config.json has a malformed domain ({exc})") from None
    task = TASKS.get(str(run_config.get("task")))
    return Domain(task.kind) if task is not None else None
