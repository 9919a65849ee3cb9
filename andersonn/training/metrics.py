"""Classification metrics from a confusion matrix (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_report", "confusion_matrix", "one_vs_rest_balanced_accuracy",
           "wilson_interval"]

Z95 = 1.959963984540054  # the two-sided 95 % quantile of the standard normal


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1 and per-class precision/recall/F1 from ``cm``."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    total = cm.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    present = support > 0
    extra = {}
    metal = names.index("metal") if "metal" in names and k > 2 else -1
    if metal >= 0 and 0 < support[metal] < total:  # undefined without metals or non-metals
        # crystal-gap: the standard metal vs non-metal benchmark
        extra["metal_vs_nonmetal_balanced_accuracy"] = one_vs_rest_balanced_accuracy(
            cm, metal)
    return {
        **extra,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "accuracy_ci95": list(wilson_interval(int(tp.sum()), int(total))),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {names[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                 "f1": float(f1[i]), "support": int(support[i])}
                      for i in range(k)},
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "n": int(total),
    }


def one_vs_rest_balanced_accuracy(cm: np.ndarray, index: int) -> float:
    """Balanced accuracy of class ``index`` against all other classes merged into one."""
    cm = np.asarray(cm, dtype=np.float64)
    rest = [i for i in range(cm.shape[0]) if i != index]
    pos_total, neg_total = cm[index].sum(), cm[rest].sum()
    if pos_total == 0 or neg_total == 0:
        return 0.0
    pos_recall = cm[index, index] / pos_total
    neg_recall = cm[np.ix_(rest, rest)].sum() / neg_total
    return float((pos_recall + neg_recall) / 2)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default): how far an accuracy
    measured on ``n`` test structures may lie from the accuracy on unseen ones. Unlike the
    normal approximation it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
