"""The ``deq`` and ``explicit`` graph-image classifiers.

Both share: per-channel input normalisation (buffers, saved with the weights) → stem
(``1×k`` conv + GroupNorm) → body → GroupNorm → mean+max pooling over atoms (kept per neighbour
slot) → linear head, optionally with a *vector readout* (below). The ``deq`` body is one
:class:`~andersonn.models.cells.ResidualCell` solved to its fixed point by
:class:`andersonn.deq.DEQ`; the ``explicit`` body stacks ``depth`` such cells, each with its
own weights (the conventional network the paper compares against).

Vector readout (``vector_channels``, ``vector_heads``): where the image carries each atom's
coordinates in a structure-defined orthonormal frame (three atom channels, e.g. polarity's
``atom_dipole_proj, atom_frame_y, atom_frame_z``), the network predicts ``vector_heads`` learned
per-atom charges q from each atom's features and feeds the norms |Σ_atoms q r| to the head. This
is how a dipole moment is made (charges at positions); the norm does not depend on the choice
of frame, and the sum over atoms does not depend on atom order, so the output stays invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from andersonn.models.cells import ResidualCell, fit_groups

__all__ = ["DEQClassifier", "ExplicitClassifier", "GraphImageClassifier"]


class GraphImageClassifier(nn.Module):
    """Shared stem, normalisation, pooling and head; subclasses provide :meth:`body`."""

    model_name = "base"

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 hidden: int = 48, kernel: int = 3, groups: int = 8,
                 product_pool: bool = True, vector_channels: Sequence[int] | None = None,
                 vector_heads: int = 0) -> None:
        super().__init__()
        self.product_pool = bool(product_pool)
        self.in_channels, self.height, self.width = int(in_channels), int(height), int(width)
        self.num_classes, self.hidden, self.kernel = int(num_classes), int(hidden), int(kernel)
        self.groups = fit_groups(self.hidden, int(groups))
        self.register_buffer("in_mean", torch.zeros(self.in_channels))
        self.register_buffer("in_std", torch.ones(self.in_channels))
        self.stem = nn.Conv2d(self.in_channels, self.hidden, (1, self.kernel),
                              padding=(0, self.kernel // 2), bias=False)
        # one group: a per-sample constant channel (a global descriptor) survives the norm
        self.stem_norm = nn.GroupNorm(1, self.hidden)
        self.out_norm = nn.GroupNorm(self.groups, self.hidden)
        extra = 0
        if self.product_pool:
            # second-order pooling: mean over atoms and slots of (A z) ⊙ (B z), so sums of
            # products of per-atom quantities (e.g. charge × position, i.e. dipoles) are linear
            # in the pooled features
            self.pool_a = nn.Conv2d(self.hidden, self.hidden, 1, bias=False)
            self.pool_b = nn.Conv2d(self.hidden, self.hidden, 1, bias=False)
            extra = self.hidden
        self.vector_channels = [int(i) for i in (vector_channels or [])]
        self.vector_heads = int(vector_heads) if self.vector_channels else 0
        if self.vector_heads:
            if len(self.vector_channels) != 3 or not all(
                    0 <= i < self.in_channels for i in self.vector_channels):
                raise ValueError(f"vector_channels must be 3 channel indices below "
                                 f"{self.in_channels}, got {self.vector_channels}")
            self.charge_head = nn.Linear(self.hidden + self.in_channels, self.vector_heads)
            extra += self.vector_heads
        self.head = nn.Linear(2 * self.hidden * self.width + 2 * self.in_channels + extra,
                              self.num_classes)

    # -- hooks for subclasses ---------------------------------------------------------------
    def body(self, x: torch.Tensor, z0: torch.Tensor | None = None
             ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def solver_stats(self) -> dict[str, Any]:
        """Solver statistics of the last pass: ``{"forward": ..., "backward": ...}``."""
        return {"forward": None, "backward": None}

    def set_solver(self, solver: str | None = None, solver_options: dict | None = None,
                   backward_options: dict | None = None) -> None:
        """Swap the fixed-point solver, update its options or the adjoint solve's (DEQ only;
        a no-op for explicit networks)."""

    @property
    def hparams(self) -> dict[str, Any]:
        """Plain-JSON hyper-parameters: ``build_model(**hparams)`` rebuilds this model."""
        return {"name": self.model_name, "in_channels": self.in_channels, "height": self.height,
                "width": self.width, "num_classes": self.num_classes, "hidden": self.hidden,
                "kernel": self.kernel, "groups": self.groups, "product_pool": self.product_pool,
                "vector_channels": list(self.vector_channels), "vector_heads": self.vector_heads}

    # -- shared ------------------------------------------------------------------------------
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-channel input mean/std (computed on the train split)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1).clamp_min(1e-6)
        self.in_mean.copy_(mean)
        self.in_std.copy_(std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel standardisation with the train-split statistics."""
        return (x - self.in_mean.view(1, -1, 1, 1)) / self.in_std.view(1, -1, 1, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input → stem embedding (the DEQ's injection)."""
        return self.stem_norm(self.stem(x))

    def classify(self, z: torch.Tensor, x: torch.Tensor,
                 raw: torch.Tensor | None = None) -> torch.Tensor:
        """Body output → logits: permutation-robust mean+max pooling over atoms (kept per
        neighbour slot), plus the input's per-channel mean and max (a global-descriptor skip),
        plus the vector readout when configured (``raw``: the unnormalised image)."""
        z = self.out_norm(z)
        pooled = torch.cat([z.mean(dim=2), z.amax(dim=2)], dim=1).flatten(1)  # (B, 2d·W)
        glob = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        parts = [pooled, glob]
        if self.product_pool:
            parts.append((self.pool_a(z) * self.pool_b(z)).mean(dim=(2, 3)))
        if self.vector_heads:
            parts.append(self.vector_norms(z, x, raw if raw is not None else self.denormalize(x)))
        return self.head(torch.cat(parts, dim=1))

    def vector_norms(self, z: torch.Tensor, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """(B, vector_heads): |Σ_atoms q_k(atom) r(atom)| with learned per-atom charges q_k.

        Padding rows have zero coordinates, so they add nothing whatever their q."""
        atoms = torch.cat([z.mean(dim=3), x.mean(dim=3)], dim=1).transpose(1, 2)  # (B, H, d+C)
        q = self.charge_head(atoms)  # (B, H, K)
        r = raw[:, self.vector_channels, :, 0].to(q.dtype)  # (B, 3, H): atom channels
        mu = torch.einsum("bhk,bvh->bkv", q, r)
        return torch.sqrt(mu.pow(2).sum(-1) + 1e-6)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return x * self.in_std.view(1, -1, 1, 1) + self.in_mean.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """Raw images (B, C, H, W) → logits; ``z0`` (B, hidden, H, W) warm-starts a DEQ's
        solve (ignored by the explicit network). In training mode the body's output, detached,
        is kept in :attr:`last_state` (what the trainer's warm start stores); in eval mode it is
        None, so inference holds no batch-sized state after the call."""
        raw = x
        x = self.normalize(x)
        z = self.body(self.embed(x), z0)
        self.__dict__["last_state"] = z.detach() if self.training else None
        return self.classify(z, x, raw)


class DEQClassifier(GraphImageClassifier):
    """Deep equilibrium classifier: one residual cell solved to its fixed point."""

    model_name = "deq"

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 hidden: int = 48, kernel: int = 3, groups: int = 8, solver: str = "anderson",
                 solver_options: dict | None = None, backward: str = "implicit",
                 backward_options: dict | None = None, product_pool: bool = True,
                 vector_channels: Sequence[int] | None = None, vector_heads: int = 0,
                 **_: Any) -> None:
        super().__init__(in_channels, height, width, num_classes, hidden, kernel, groups,
                         product_pool, vector_channels, vector_heads)
        self.cell = ResidualCell(self.hidden, self.kernel, self.groups)
        self.backward_mode = backward
        self.backward_options = dict(backward_options or {})
        self.solver_name = solver
        self.solver_options = dict(solver_options or {"tol": 1e-3, "max_iter": 30})
        self.jacobian_samples = 0  # a training option, not part of the architecture (hparams)
        self._make_deq()

    def _make_deq(self) -> None:
        from andersonn.deq import DEQ

        deq = DEQ(self.cell, solver=self.solver_name, solver_options=dict(self.solver_options),
                  backward=self.backward_mode,
                  backward_options=dict(self.backward_options) or None,
                  jacobian_samples=self.jacobian_samples)
        if isinstance(deq, nn.Module):
            deq.train(self.training)
        # Kept out of the module registry so the cell's weights are registered only once.
        self.__dict__["_deq"] = deq

    def set_solver(self, solver: str | None = None, solver_options: dict | None = None,
                   backward_options: dict | None = None) -> None:
        if solver is not None:
            self.solver_name = solver
        if solver_options is not None:
            self.solver_options = {**self.solver_options, **solver_options}
        if backward_options is not None:
            self.backward_options = {**self.backward_options, **backward_options}
        self._make_deq()

    def train(self, mode: bool = True) -> DEQClassifier:
        super().train(mode)
        deq = self.__dict__.get("_deq")
        if isinstance(deq, nn.Module):
            deq.train(mode)
        return self

    def body(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        return self.__dict__["_deq"](x, z0)

    def set_jacobian_regularization(self, samples: int) -> None:
        """Estimate ‖∂f/∂z‖²_F at z* from ``samples`` random vectors in each training forward
        (0 = off); read it with :meth:`jacobian_loss`."""
        self.jacobian_samples = int(samples)
        self._make_deq()

    def jacobian_loss(self) -> torch.Tensor | None:
        """The last training forward's Jacobian penalty (with its graph), or None."""
        return getattr(self.__dict__["_deq"], "jacobian_loss", None)

    def solver_stats(self) -> dict[str, Any]:
        stats = getattr(self.__dict__["_deq"], "stats", None) or {}
        return {"forward": stats.get("forward"), "backward": stats.get("backward")}

    @property
    def hparams(self) -> dict[str, Any]:
        return {**super().hparams, "solver": self.solver_name,
                "solver_options": dict(self.solver_options), "backward": self.backward_mode,
                "backward_options": dict(self.backward_options)}


class ExplicitClassifier(GraphImageClassifier):
    """Conventional network: ``depth`` residual cells with separate weights, ``z₀ = 0``."""

    model_name = "explicit"

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 hidden: int = 48, kernel: int = 3, groups: int = 8, depth: int = 6,
                 product_pool: bool = True, vector_channels: Sequence[int] | None = None,
                 vector_heads: int = 0, **_: Any) -> None:
        super().__init__(in_channels, height, width, num_classes, hidden, kernel, groups,
                         product_pool, vector_channels, vector_heads)
        self.depth = int(depth)
        self.cells = nn.ModuleList(
            ResidualCell(self.hidden, self.kernel, self.groups, init_std=0.05)
            for _ in range(self.depth))

    def body(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        z = torch.zeros_like(x)  # a stack of layers starts from zero: z0 is ignored
        for cell in self.cells:
            z = cell(z, x)
        return z

    @property
    def hparams(self) -> dict[str, Any]:
        return {**super().hparams, "depth": self.depth}
