"""The implicit (deep-equilibrium) layer: z* = cell(z*, x), with implicit or approximate gradients.

Forward: the fixed point is found under ``torch.no_grad`` by one of :mod:`andersonn.solvers`
(the solver evaluates the cell only on unconverged rows and passes it the matching rows of x, so
the cell must be batch-independent — GroupNorm, not BatchNorm — and ``x`` must be a tensor whose
first dimension is the batch, or anything the cell accepts unchanged). Then one evaluation of the
cell is re-attached to the graph, ``z = cell(z*, x)``, and gradients flow through it:

* ``backward="implicit"`` (default): an autograd node on z replaces the incoming gradient v by
  the solution g of the adjoint fixed point g = gᵀ J_f(z*) + v, solved with any solver (Anderson)
  using vector–Jacobian products through the same re-attached cell evaluation (z* enters it as
  a detached leaf). This is the exact gradient of the equilibrium; memory is that of one cell
  evaluation, whatever the number of solver iterations. Per-sample convergence holds here too:
  once the adjoint solve drops its converged rows, the cell is evaluated once more at z* on the
  active rows only (under the forward pass's autocast) and the products use that smaller graph,
  so a converged sample costs no more work (a trained polarity cell: 7-10 % faster training
  steps with Anderson). The cell must therefore be deterministic (no dropout inside it).
* ``backward="jfb"``: Jacobian-free backprop — the gradient of the last cell evaluation only.
* ``backward="unroll"``: backprop through ``unroll_steps`` cell evaluations from z*.

Jacobian regularisation (``jacobian_samples`` > 0, training only; Bai et al., "Stabilizing
Equilibrium Models by Jacobian Regularization", 2021): each training forward also estimates
‖∂f/∂z‖²_F / d at z* with Hutchinson's estimator — E_v‖vᵀJ‖² = ‖J‖²_F for v ~ N(0, I) — from
``jacobian_samples`` random vectors, kept with its graph as ``deq.jacobian_loss`` (mean over the
batch). Adding a multiple of it to the training loss keeps the cell contractive, so the
solvers need fewer iterations. It reuses the implicit mode's re-attached evaluation (one
double-backward product per sample vector); the other modes evaluate the cell once more.

Statistics of the last forward and backward solves are in ``deq.stats``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.solvers import SolverStats, check_solver_options, get_solver
from andersonn.solvers.base import autocast_state, integer_option

BACKWARD_MODES = ("implicit", "jfb", "unroll")

_DEFAULT_FORWARD = {"tol": 1e-4, "max_iter": 50}
_DEFAULT_BACKWARD = {"tol": 1e-6, "max_iter": 50}
# solver arguments the layer sets itself: not options of its solves
_OWN_ARGUMENTS = ("f", "z0", "args", "row_args")


class DEQ(nn.Module):
    """Deep equilibrium layer around ``cell(z, x) -> tensor shaped like z``.

    ``solver_options`` apply in training mode; ``eval_options`` (if given) replace them in
    eval mode. ``backward_solver``/``backward_options`` default to the forward solver and
    ``{"tol": 1e-6, "max_iter": 50}`` merged with nothing else.
    """

    def __init__(
        self,
        cell: nn.Module | Callable[..., Tensor],
        solver: str = "anderson",
        solver_options: dict[str, Any] | None = None,
        backward: str = "implicit",
        backward_solver: str | None = None,
        backward_options: dict[str, Any] | None = None,
        unroll_steps: int = 1,
        eval_options: dict[str, Any] | None = None,
        jacobian_samples: int = 0,
    ) -> None:
        super().__init__()
        if backward not in BACKWARD_MODES:
            raise ConfigError(
                f"option backward={backward!r} is not valid; choose one of: "
                + ", ".join(BACKWARD_MODES)
            )
        unroll_steps = integer_option("unroll_steps", unroll_steps, 1)
        jacobian_samples = integer_option("jacobian_samples", jacobian_samples, 0)
        for option, values in (("solver_options", solver_options),
                               ("eval_options", eval_options),
                               ("backward_options", backward_options)):
            if values is not None and not isinstance(values, Mapping):
                raise ConfigError(f"option {option} must be a dict of solver options "
                                  f"(name: value), got {type(values).__name__}")
            own = sorted(set(values or {}) & set(_OWN_ARGUMENTS))
            if own:
                raise ConfigError(f"option {option} sets {own[0]!r}, which the DEQ sets itself "
                                  "(it gives its solvers the cell, z0 and x); remove it")
        self.cell = cell
        self.solver = solver
        self.backward_mode = backward
        self.backward_solver = backward_solver or solver
        self.solver_options = {**_DEFAULT_FORWARD, **(solver_options or {})}
        self.eval_options = (
            {**_DEFAULT_FORWARD, **eval_options} if eval_options is not None else None
        )
        self.backward_options = {**_DEFAULT_BACKWARD, **(backward_options or {})}
        # option names now, not at the first validation pass or backward
        check_solver_options(self.solver, self.solver_options)
        check_solver_options(self.solver, self.eval_options or {})
        check_solver_options(self.backward_solver, self.backward_options)
        self.unroll_steps = unroll_steps
        self.jacobian_samples = jacobian_samples
        self.jacobian_loss: Tensor | None = None
        self.stats: dict[str, SolverStats | None] = {"forward": None, "backward": None}

    def __getstate__(self) -> dict[str, Any]:
        """For copy.deepcopy and pickling: the last training forward's ``jacobian_loss`` is a
        transient (non-leaf) tensor with its graph, so it is left out (None in the copy)."""
        state = super().__getstate__()
        state["jacobian_loss"] = None
        return state

    def _forward_options(self) -> dict[str, Any]:
        if not self.training and self.eval_options is not None:
            return self.eval_options
        return self.solver_options

    def forward(self, x: Any, z0: Tensor | None = None) -> Tensor:
        """Return the equilibrium z* (with gradients per ``backward``); ``z0`` warm-starts."""
        cell = self.cell
        f = cell
        if z0 is None:
            if not isinstance(x, Tensor):
                raise ConfigError("DEQ needs z0 when x is not a tensor shaped like z")
            if x.dim() < 1:
                raise InputError("DEQ: x must have a leading batch dimension (B, ...), got a "
                                 "scalar tensor")
            z0 = torch.zeros_like(x, dtype=x.dtype if x.is_floating_point()
                                  else torch.get_default_dtype())
        elif not isinstance(z0, Tensor) or z0.dim() < 1:
            raise InputError(f"DEQ: z0 must be a tensor (B, ...) shaped like the state z, got "
                             f"{type(z0).__name__ if not isinstance(z0, Tensor) else 'a scalar'}")
        elif not isinstance(x, Tensor) or z0.shape != x.shape or z0.dtype != x.dtype:
            f = _names_z0_on_failure(cell, z0, x)  # z's shape is not x's: only the cell knows it
        x_solve = x.detach() if isinstance(x, Tensor) else x
        batch = z0.shape[0]
        x_rows = x_solve if isinstance(x_solve, Tensor) and x_solve.dim() > 0 \
            and x_solve.shape[0] == batch else None
        with torch.no_grad():
            z_star, fstats = get_solver(self.solver)(
                f, z0.detach(), args=(x_solve,), row_args=(0,) if x_rows is not None else (),
                **self._forward_options()
            )
        self.stats = {"forward": fstats, "backward": None}
        self.jacobian_loss = None
        if not torch.is_grad_enabled():
            return z_star
        wants_jacobian = self.training and self.jacobian_samples > 0

        if wants_jacobian and self.backward_mode != "implicit":
            z_probe = z_star.detach().requires_grad_()
            self.jacobian_loss = self._jacobian_penalty(cell(z_probe, x), z_probe)
        if self.backward_mode == "unroll":
            z = z_star
            for _ in range(self.unroll_steps):
                z = cell(z, x)
            return z
        if self.backward_mode == "jfb":
            return cell(z_star, x)

        # implicit differentiation: the re-attached evaluation z = f(z*, x) also serves the
        # vector–Jacobian products y ↦ yᵀ ∂f/∂z at z* (its graph is retained while the adjoint
        # solve runs)
        z_leaf = z_star.detach().requires_grad_()
        f_leaf = cell(z_leaf, x)
        if not f_leaf.requires_grad:
            return f_leaf
        if wants_jacobian:
            self.jacobian_loss = self._jacobian_penalty(f_leaf, z_leaf)
        solver = get_solver(self.backward_solver)
        options = self.backward_options
        stats = self.stats
        # the forward's autocast, re-entered when the backward evaluates the cell again
        autocast_on, autocast_dtype = autocast_state(z_star.device.type) or (False, None)

        def active_rows_graph(idx: Tensor) -> tuple[Tensor, Tensor]:
            """The cell re-evaluated at z* on the still-active rows only (under the forward's
            autocast), so that once the adjoint solve has compacted, a vector–Jacobian
            product costs what those rows cost instead of the whole batch's."""
            z_sub = z_star.index_select(0, idx).requires_grad_()
            with torch.enable_grad(), torch.autocast(z_star.device.type, enabled=autocast_on,
                                                     dtype=autocast_dtype):
                return cell(z_sub, x_rows.index_select(0, idx)), z_sub

        def implicit_gradient(grad: Tensor) -> Tensor:
            rows = torch.arange(batch, device=grad.device)
            full_rows = grad.new_zeros(grad.shape)
            graph = {"f": f_leaf, "z": z_leaf}  # the evaluation the products go through

            def adjoint(g: Tensor, v: Tensor, idx: Tensor) -> Tensor:
                n = g.shape[0]
                if n != graph["z"].shape[0] and x_rows is not None:  # compacted: a smaller graph
                    graph["f"] = graph["z"] = None  # free the previous one first
                    graph["f"], graph["z"] = active_rows_graph(idx)
                rows_match = n == graph["z"].shape[0]
                if rows_match:
                    gin = g.to(graph["f"].dtype)
                else:  # x is not row-aligned: zero rows of the full batch give zero vjp
                    gin = full_rows.to(f_leaf.dtype).index_copy(0, idx, g.to(f_leaf.dtype))
                with torch.enable_grad():
                    (vjp,) = torch.autograd.grad(graph["f"], graph["z"], gin, retain_graph=True)
                del gin
                if not rows_match:
                    vjp = vjp.index_select(0, idx)
                return vjp.to(g.dtype) + v

            v = grad.detach()
            # a non-finite incoming gradient (an fp16 GradScaler overflow, say) is passed through
            # on its rows, unsolved: the adjoint solve would only diverge, and the non-finite
            # values must reach the parameters' gradients for the scaler to skip the step
            solved = None  # rows whose adjoint is solved, as a mask (None: all)
            finite = torch.isfinite(v.reshape(batch, -1)).all(dim=1) if batch else None
            if finite is not None and not bool(finite.all()):  # (an empty batch: none to check)
                solved = finite.view(batch, *[1] * (v.dim() - 1))
                v = torch.where(solved, v, 0)  # zero rows converge at once
            g, bstats = solver(adjoint, v, args=(v, rows), row_args=(0, 1), **options)
            stats["backward"] = bstats
            g = g.to(grad.dtype)
            return g if solved is None else torch.where(solved, g, grad)

        return _ImplicitGradient.apply(f_leaf, implicit_gradient)

    def _jacobian_penalty(self, fz: Tensor, z: Tensor) -> Tensor:
        """Hutchinson estimate of ‖∂f/∂z‖²_F / d per sample, averaged over the batch, with its
        graph (so its gradient reaches the cell's parameters)."""
        dtype = torch.promote_types(fz.dtype, torch.float32)  # bf16 products summed in fp32
        total = fz.new_zeros((), dtype=dtype)
        for _ in range(self.jacobian_samples):
            v = torch.randn_like(fz)
            (vjp,) = torch.autograd.grad(fz, z, v, create_graph=True, retain_graph=True)
            total = total + vjp.to(dtype).pow(2).sum()
        return total / (self.jacobian_samples * fz.numel())

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, backward={self.backward_mode!r}, "
            f"options={self.solver_options}"
        )


def _names_z0_on_failure(cell: Callable[..., Tensor], z0: Tensor, x: Any
                         ) -> Callable[..., Tensor]:
    """``cell`` for the forward solve from a caller's ``z0`` not shaped (or typed) like x: its
    first call (at z0) failing is reported as an :class:`InputError` naming z0's shape and
    dtype."""
    first = [True]

    def f(z: Tensor, *args: Any) -> Tensor:
        if not first[0]:
            return cell(z, *args)
        try:
            out = cell(z, *args)
        except (AndersonnError, torch.cuda.OutOfMemoryError):
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            got = f"{tuple(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            reason = (str(exc).splitlines() or [""])[0]
            raise InputError(
                f"DEQ: the cell failed on z0 of shape {tuple(z0.shape)}, {z0.dtype} (x: {got}), "
                f"so z0 is probably not shaped or typed like the state z: "
                f"{type(exc).__name__}: {reason}"
            ) from exc
        first[0] = False
        return out

    return f


class _ImplicitGradient(torch.autograd.Function):
    """Identity in the forward pass (a copy of the re-attached f(z*, x)); in the backward pass
    the incoming gradient v becomes the adjoint solution g, which then flows on through
    f(z*, x) to x and the cell's parameters.

    A node of its own rather than a hook on the output: an in-place operation on the output
    (``z += skip``, ``relu_``) rewrites a view's history and silently dropped such a hook, leaving
    the Jacobian-free gradient. The output is a copy (not a view), so in-place use is safe."""

    @staticmethod
    def forward(ctx: Any, f_leaf: Tensor, adjoint: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.adjoint = adjoint
        return f_leaf.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        if torch.is_grad_enabled():  # create_graph=True: the adjoint solve is not differentiable
            raise RuntimeError(
                "DEQ: higher-order gradients (create_graph=True) through the implicit backward "
                "are not supported; use backward='unroll' or 'jfb' for them")
        return ctx.adjoint(grad), None
