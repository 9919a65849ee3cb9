"""Warm starts across epochs: each training sample's solve begins at its last fixed point.

The parameters move little between two visits of the same sample, so the equilibrium found one
epoch earlier is a far better first guess than zero (the DEQ's cold start). The table holds one
state per training sample in float16 on the CPU (``hidden × H × W × 2`` bytes each); a sample not
yet seen starts from zero, exactly as without warm starts. Under ``torchrun`` every rank keeps
the whole table and the ranks exchange the states of each step, so a sample that another rank
solved last epoch is warm too. The trainer saves the table with each checkpoint, so a resumed
run continues warm.
"""

from __future__ import annotations

import torch

from andersonn.training.distributed import DistInfo

__all__ = ["WarmStarts"]


class WarmStarts:
    """Per-sample fixed points of the training split, indexed by training-sample number."""

    def __init__(self, n_samples: int, state_shape: tuple[int, ...],
                 info: DistInfo | None = None) -> None:
        self.table = torch.zeros((int(n_samples), *state_shape), dtype=torch.float16)
        self.info = info or DistInfo()

    @property
    def nbytes(self) -> int:
        """Memory the table takes (bytes)."""
        return self.table.numel() * self.table.element_size()

    def lookup(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The stored states of ``index`` (zeros where none yet) as float32 on ``device``."""
        return self.table[index].to(device=device, dtype=torch.float32, non_blocking=True)

    def forward(self, net: torch.nn.Module, model: torch.nn.Module, xb: torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
        """``net(xb, z0)`` from the stored states of ``index``, then keep the new ones
        (``model``: the classifier itself, whose ``last_state`` they are; ``net`` may wrap it
        in DistributedDataParallel)."""
        logits = net(xb, self.lookup(index, xb.device))
        self.store(index, model.last_state)
        return logits

    def store(self, index: torch.Tensor, states: torch.Tensor) -> None:
        """Keep ``states`` (B, ...) for ``index`` (B,); under DDP, every rank's batch."""
        states = states.detach().to(torch.float16)
        if self.info.distributed:
            import torch.distributed as dist

            index = index.to(states.device)
            indices = [torch.empty_like(index) for _ in range(self.info.world_size)]
            gathered = [torch.empty_like(states) for _ in range(self.info.world_size)]
            dist.all_gather(indices, index)
            dist.all_gather(gathered, states)
            index, states = torch.cat(indices), torch.cat(gathered)
        finite = torch.isfinite(states.flatten(1)).all(dim=1).cpu()
        self.table[index.cpu()[finite]] = states.cpu()[finite]
