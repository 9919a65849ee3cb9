"""Residual convolution cells for node-neighbour graph images.

Images are ``(C, H, W)`` with one row per atom (``H``) and one column per neighbour slot (``W``).
Convolutions run over the neighbour axis only (kernel ``1×k``); information flows between atoms
through a permutation-equivariant mixing term (mean over atoms, 1×1 convolution, broadcast back).
All normalisations are GroupNorm, so a sample's output never depends on the other rows in the
batch — required by the DEQ solver, which evaluates only the unconverged rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AtomMixConv", "ResidualCell", "fit_groups"]


def fit_groups(channels: int, groups: int) -> int:
    """Largest number of GroupNorm groups ``<= groups`` that divides ``channels``."""
    for g in range(max(1, min(groups, channels)), 0, -1):
        if channels % g == 0:
            return g
    return 1


class AtomMixConv(nn.Module):
    """``1×k`` convolution over neighbour slots plus a mean-over-atoms mixing term."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, bias: bool = False,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, (1, kernel), padding=(0, kernel // 2), bias=bias)
        self.mix = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        if init_std is not None:
            nn.init.normal_(self.conv.weight, 0.0, init_std)
            nn.init.normal_(self.mix.weight, 0.0, init_std)
        else:
            nn.init.normal_(self.mix.weight, 0.0, 1.0 / math.sqrt(in_ch) / 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z) + self.mix(z.mean(dim=2, keepdim=True))


class ResidualCell(nn.Module):
    """``f(z, x) = GN(ReLU(z + GN(x + W2 · GN(ReLU(W1 · z)))))`` (the paper's residual cell).

    ``x`` is the injected input (already embedded to ``channels``); ``z`` has the same shape.
    """

    def __init__(self, channels: int, kernel: int = 3, groups: int = 8,
                 init_std: float = 0.01) -> None:
        super().__init__()
        g = fit_groups(channels, groups)
        self.conv1 = AtomMixConv(channels, channels, kernel, init_std=init_std)
        self.conv2 = AtomMixConv(channels, channels, kernel, init_std=init_std)
        self.norm1 = nn.GroupNorm(g, channels)
        self.norm2 = nn.GroupNorm(g, channels)
        self.norm3 = nn.GroupNorm(g, channels)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(F.relu(self.conv1(z)))
        return self.norm3(F.relu(z + self.norm2(x + self.conv2(y))))
