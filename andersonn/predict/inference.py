"""Running a fitted model over graph images, and merging the images of one input.

:func:`infer_images` gives, in batches, each image's calibrated class probabilities, its
solver evaluations and how far short of the tolerance its fixed-point solve stopped;
:func:`merge_conformers` and :func:`merge_images` turn rows per image (a SMILES's
conformers) into rows per input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["infer_images", "merge_conformers", "merge_images"]


@torch.no_grad()
def infer_images(model: torch.nn.Module, images: np.ndarray, batch_size: int,
                 device: torch.device, temperature: float, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities (N, K) float64, solver iterations per sample (N,), shortfall (N,)) of
    ``model`` on ``images``, ``batch_size`` at a time on ``device``, the logits divided by
    ``temperature`` before the softmax: the shortfall is a sample's lowest relative residual
    over the tolerance where the solver stopped short of it, else 0. A model without a solver
    has NaN iterations."""
    model.eval()
    probs, iters, short = [], [], []
    for start in range(0, len(images), batch_size):
        # a copy of each batch: images may be a read-only memmap (a cached dataset's),
        # which torch would not take without a warning, and which need not fit in memory
        # (contiguous: torch takes no negative strides, as of a reversed view)
        xb = torch.tensor(np.ascontiguousarray(images[start:start + batch_size],
                                               dtype=np.float32), device=device)
        probs.append(torch.softmax(model(xb).double() / temperature, dim=1).cpu())
        stats = model.solver_stats()["forward"]
        nfev = getattr(stats, "nfev", None) if stats is not None else None
        if nfev is None:  # an explicit network: no solver, no iterations
            iters.append(torch.full((xb.shape[0],), float("nan"), dtype=torch.float64))
            short.append(torch.zeros(xb.shape[0], dtype=torch.float64))
        else:
            iters.append(torch.as_tensor(nfev).double().cpu().reshape(-1))
            short.append(_shortfall(stats))
    if not probs:
        return np.zeros((0, n_classes)), np.zeros(0), np.zeros(0)
    return torch.cat(probs).numpy(), torch.cat(iters).numpy(), torch.cat(short).numpy()


def _shortfall(stats: Any) -> torch.Tensor:
    """Per sample: lowest relative residual / tolerance where the solve did not converge."""
    low = torch.as_tensor(stats.lowest_residual).double().cpu().reshape(-1)
    done = torch.as_tensor(stats.converged).cpu().reshape(-1)
    return torch.where(done, 0.0, low / max(float(stats.tol), 1e-30)).nan_to_num(float("inf"))


CLI_SOLVER_ADVICE = "try --max-iter or another --solver"
"""What to try where a solve stopped short, in the command line's terms."""


def _shortfall_note(shortfall: float, advice: str = CLI_SOLVER_ADVICE) -> list[str]:
    """The warning of an input whose solve stopped ``shortfall`` times its tolerance away
    (none at 1 or below), ending with ``advice``."""
    if shortfall <= 1.0:
        return []
    return [f"the solver stopped short of its tolerance (best residual {shortfall:.3g}× the "
            f"tolerance): the answer may be unreliable; {advice}"]


def merge_conformers(probs: np.ndarray, iters: np.ndarray, counts: Sequence[int] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per input: the mean of its images' probabilities and the sum of their solver
    evaluations (``counts``: consecutive images per input; ``None``: one each). A row per
    image: (N, K) and (N,), or with more axes after the first (an ensemble's members)."""
    if counts is None or len(counts) == len(probs):
        return probs, iters
    starts = _first_rows(counts)
    sizes = np.asarray(counts, dtype=np.float64).reshape(-1, *[1] * (np.ndim(probs) - 1))
    return np.add.reduceat(probs, starts, axis=0) / sizes, np.add.reduceat(iters, starts, axis=0)


def merge_images(probs: np.ndarray, iters: np.ndarray, short: np.ndarray,
                  counts: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image outputs of :meth:`Classifier._infer` as per-input ones: the images of one
    input (its conformers, ``counts``) merged by :func:`merge_conformers`, with the largest
    shortfall. Rows may have more axes after the first (an ensemble's members)."""
    merged, iters = merge_conformers(probs, iters, counts)
    if len(merged) != len(probs):
        short = np.maximum.reduceat(short, _first_rows(counts))
    return merged, iters, short


def _first_rows(counts: Sequence[int]) -> np.ndarray:
    """Index of each input's first image, given the images per input (its conformers)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
