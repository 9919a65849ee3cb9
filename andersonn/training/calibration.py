"""Calibrated probabilities: temperature scaling fitted on the validation split.

A network trained with cross-entropy (here also with class weights and early stopping on
accuracy) is usually over- or under-confident: its top probability does not match how often it
is right. Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 chosen
to minimise the validation negative log-likelihood; the predicted class never changes, the
probabilities become honest. Measured by the expected calibration error (ECE): the
sample-weighted mean gap between confidence and accuracy over equal-width confidence bins.

Both fits and scores decompose into sums, so under ``torchrun`` each rank works on its own
shard and the sums are all-reduced (``reduce``): every rank finds the same T.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["ECE_BINS", "MIN_SAMPLES", "T_RANGE", "calibration_bins", "ece_from_bins",
           "expected_calibration_error", "fit_temperature"]

ECE_BINS = 15
MIN_SAMPLES = 20  # fewer validation samples than this: no fit (T = 1), it would be noise
T_RANGE = (0.2, 5.0)  # an optimum at a bound means separable data, not a calibration
Reduce = Callable[[torch.Tensor], torch.Tensor]
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, lo: float = T_RANGE[0],
                    hi: float = T_RANGE[1], tol: float = 1e-4, reduce: Reduce | None = None
                    ) -> float:
    """The T in [lo, hi] minimising the mean NLL of ``softmax(logits / T)`` on ``labels``.

    The NLL is convex in 1/T, so a golden-section search over log T finds the minimum (to a
    relative ``tol``) without gradients or learning rates. ``reduce`` sums a tensor over
    ranks (default: this process holds all the samples).
    """
    reduce = reduce or _identity
    z = logits.detach().double()
    y = labels.detach().long()

    def nll(log_t: float) -> float:
        local = F.cross_entropy(z / math.exp(log_t), y, reduction="sum")
        total = reduce(torch.stack([local, torch.tensor(float(y.numel()), dtype=z.dtype)]))
        return float(total[0] / total[1].clamp_min(1.0))

    a, b = math.log(lo), math.log(hi)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2.0)


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
                     ) -> torch.Tensor:
    """(3, bins) sums per confidence bin: samples, top-class confidence, correct predictions."""
    conf, pred = probs.detach().double().max(dim=1)
    correct = (pred == labels.to(pred.device)).double()
    index = (conf * bins).long().clamp_(0, bins - 1)  # [k/bins, (k+1)/bins); 1.0 in the last
    out = torch.zeros(3, bins, dtype=torch.float64)
    out[0].index_add_(0, index.cpu(), torch.ones_like(conf).cpu())
    out[1].index_add_(0, index.cpu(), conf.cpu())
    out[2].index_add_(0, index.cpu(), correct.cpu())
    return out


def ece_from_bins(sums: torch.Tensor) -> float:
    """Expected calibration error from (possibly all-reduced) :func:`calibration_bins` sums."""
    n = float(sums[0].sum())
    return float((sums[1] - sums[2]).abs().sum() / n) if n else 0.0


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               bins: int = ECE_BINS) -> float:
    """ECE of class probabilities ``probs`` (N, K) against ``labels`` (N,)."""
    return ece_from_bins(calibration_bins(probs, labels, bins))
