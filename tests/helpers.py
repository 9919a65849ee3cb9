"""Problems shared by the solver, DEQ and CUDA tests (exact references, small cells)."""

from __future__ import annotations

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
        return torch.bmm(a, z.unsqueeze(2)).squeeze(2) + b

    return f, (a, b), exact


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
