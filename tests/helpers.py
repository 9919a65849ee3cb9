"""Problems shared by the solver, DEQ and CUDA tests (exact references, small cells), a tiny
polarity run for the prediction tests, and a toy in-memory dataset for the training tests."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

F64 = torch.float64


def linear_problem(batch: int, n: int, radius: float, seed: int = 0, spread: bool = True):
    """z = A z + b with symmetric A (eigenvalues in [0, radius]); returns f, args, solution."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=gen, dtype=F64))
    ev = torch.linspace(0, radius, n, dtype=F64) if spread else torch.full((n,), radius, dtype=F64)
    a = q @ torch.diag_embed(ev.expand(batch, n)) @ q.transpose(1, 2)
    b = torch.randn(batch, n, generator=gen, dtype=F64)
    exact = torch.linalg.solve(torch.eye(n, dtype=F64) - a, b)

    def f(z, a, b):
        # a row-wise product and sum, not bmm: BLAS picks its kernel by batch size on some CPUs,
        # which changes the last bits of a row between a batch and a solo solve
        return (a * z.unsqueeze(1)).sum(2) + b

    return f, (a, b), exact


def relu_norm_cells(batch: int, n: int, seed: int):
    """Per-sample toy versions of the model's cell, f(z) = norm(relu(z + Wᵀ relu(W z) + b)).

    Nonsmooth (ReLU kinks) with a skip connection: on a few samples type-II Anderson stalls for
    good while plain forward iteration converges, as on the trained polarity cell.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(batch, n, n, generator=gen, dtype=F64)
    scale = 0.6 + 0.39 * torch.rand(batch, 1, 1, generator=gen, dtype=F64)
    w = w / torch.linalg.matrix_norm(w, 2)[:, None, None] * scale
    b = torch.randn(batch, n, generator=gen, dtype=F64)

    def f(z, w, b):
        # row-wise products and sums, not bmm (whose last bits depend on the batch size on
        # some CPUs): a row's values do not depend on the rows beside it
        h = torch.relu((w * z.unsqueeze(1)).sum(2))
        y = torch.relu(z + (w * h.unsqueeze(2)).sum(1) + b)
        y = y - y.mean(1, keepdim=True)
        return y / ((y * y).sum(1, keepdim=True).div(y.shape[1] - 1).sqrt() + 1e-5)  # (std)

    return f, (w, b)


class TanhCell(nn.Module):
    """f(z, x) = tanh(W z + x + b), contractive (‖W‖ ≈ 0.5)."""

    def __init__(self, dim: int = 4, dtype: torch.dtype = F64, scale: float = 0.5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(dim, dim, generator=gen, dtype=dtype)
        self.weight = nn.Parameter(scale * w / torch.linalg.matrix_norm(w, 2))
        self.bias = nn.Parameter(0.1 * torch.randn(dim, generator=gen, dtype=dtype))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.weight.T + x + self.bias)


SMILES = ["CCO", "CC", "CCC", "CO", "CCN", "CCCC", "OCCO", "C=C", "CC(=O)O", "CCCCC", "NCCN",
          "C1CCCCC1", "CC#N", "CCOC", "C(Cl)Cl", "CCCO", "CN", "CC(C)C", "O=CO", "CCCCCC"]


def tiny_polarity_dataset(root: Path):
    """A 20-molecule polarity cache (label: has N or O; 12 / 4 / 4 split; no Cl in the
    training split's domain), opened."""
    from andersonn.data.cache import open_cache, write_cache
    from andersonn.data.domain import Domain
    from andersonn.images import IMAGE_SPECS, encode
    from andersonn.structures import read_structure

    spec = IMAGE_SPECS["polarity"]
    structures = [read_structure(s) for s in SMILES]
    images = np.stack([encode(s, spec) for s in structures])
    labels = np.array([int(any(a in s for a in "NO")) for s in SMILES])
    splits = np.array([0] * 12 + [1] * 4 + [2] * 4, np.int8)
    domain = Domain.from_summaries(s.summary() for s in structures[:12])  # no Cl in training
    cache = write_cache(root / "cache", images=images, labels=labels, ids=SMILES, splits=splits,
                        classes=["weakly polar", "strongly polar"],
                        meta={"task": "polarity", "featurizer_version": spec.featurizer_version,
                              "image_spec": spec.to_dict(), "label_rule": "has N or O",
                              "domain": domain.to_dict()})
    return open_cache(cache)


def tiny_polarity_run(dataset, out: Path, seed: int = 0) -> Path:
    """One epoch of a hidden-8 DEQ on :func:`tiny_polarity_dataset`; returns the run dir."""
    from andersonn.training import TrainConfig, train

    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False,
                      seed=seed)
    train(cfg, out, dataset=dataset, progress=False)
    return out


def assert_refused_when_parsed(argv: list[str], capsys, message: str) -> None:
    """``andersonn ARGV`` exits with status 2 while its arguments are parsed, its last stderr
    line ending with ``message`` (then the pointer to --help) and no traceback."""
    import pytest

    from andersonn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    hint = " lists the options)"  # the one line ends with where to look: (`andersonn X --help` ...)
    assert line.endswith(hint) and line[:line.rindex(" (`")].endswith(message), line


def count_featurize_chunks(monkeypatch, chunk: int) -> list[int]:
    """Patch the prediction chunk size to ``chunk``; the sizes of the featuriser's calls land
    in the returned list."""
    import andersonn.predict as predict
    from andersonn.predict import Classifier

    sizes: list[int] = []
    featurize = Classifier._featurize

    def spy(self, items, *args, **kwargs):
        sizes.append(len(items))
        return featurize(self, items, *args, **kwargs)

    monkeypatch.setattr(Classifier, "_featurize", spy)
    monkeypatch.setattr(predict, "PREDICT_CHUNK", chunk)
    return sizes


def toy_dataset(n: int = 48, splits: np.ndarray | None = None,
                meta: dict | None = None) -> types.SimpleNamespace:
    """A small separable in-memory dataset (two classes, images (3, 4, 3)); by default split
    70 / 15 / 15 % and described as task ``toy``."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 3, 4, 3)).astype(np.float32)
    images[:, 0] += 2.0 * labels[:, None, None]
    if splits is None:
        splits = np.zeros(n, np.int8)
        splits[int(0.7 * n):int(0.85 * n)], splits[int(0.85 * n):] = 1, 2
    return types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["a", "b"], ids=[f"m{i}" for i in range(n)],
                                 meta=meta or {"task": "toy"})


def toy_config(**kw: object):
    """A one-epoch TrainConfig of a depth-1, hidden-8 explicit network on :func:`toy_dataset`;
    ``kw`` overrides its fields."""
    from andersonn.training import TrainConfig

    base = {"task": "toy", "model": "explicit", "depth": 1, "hidden": 8, "epochs": 1,
            "batch_size": 16, "threads": 1, "plots": False, "lr": 1e-2}
    return TrainConfig(**{**base, **kw})


def logged_epochs(run: Path) -> list[int]:
    """The epoch numbers in a run's metrics.jsonl, in order."""
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def separable_images(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` separable (3, 4, 4) float32 images and their 0/1 labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 3, 4, 4)).astype(np.float32)
    x[:, 0] += np.where(y == 1, 3.0, -3.0)[:, None, None]
    return x, y
