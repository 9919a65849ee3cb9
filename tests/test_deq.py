"""Tests of the implicit layer andersonn.deq.DEQ: gradients, modes, warm start, stats."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from andersonn.deq import DEQ
from andersonn.errors import ConfigError, InputError
from andersonn.solvers import SolverStats

from helpers import TanhCell

F64 = torch.float64

TIGHT = {"tol": 1e-13, "max_iter": 300, "stop_mode": "abs"}


def _x(batch: int = 3, dim: int = 4, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("solver", ["anderson", "broyden", "forward_iteration"])
def test_gradcheck_wrt_input(solver):
    deq = DEQ(TanhCell(), solver=solver, solver_options=TIGHT, backward_options=TIGHT)
    x = _x().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: deq(x), (x,), atol=1e-6)


def test_gradcheck_wrt_cell_parameters():
    cell = TanhCell()
    deq = DEQ(cell, solver_options=TIGHT, backward_options=TIGHT)
    x = _x()
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())

    def fn(*ps):
        return torch.func.functional_call(deq, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, params, atol=1e-6)


def test_implicit_gradient_matches_long_unroll_and_stats_exposed():
    cell = TanhCell()
    x = _x()
    deq = DEQ(cell, solver_options=TIGHT, backward_options=TIGHT)
    deq(x).square().sum().backward()
    implicit = cell.weight.grad.clone()
    assert isinstance(deq.stats["forward"], SolverStats)
    assert isinstance(deq.stats["backward"], SolverStats)
    assert bool(deq.stats["backward"].converged.all())
    cell.zero_grad()
    DEQ(cell, solver_options=TIGHT, backward="unroll", unroll_steps=80)(x).square().sum().backward()
    torch.testing.assert_close(implicit, cell.weight.grad, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("mode, steps", [("jfb", 1), ("unroll", 3)])
def test_jfb_and_unroll_give_gradients(mode, steps):
    cell = TanhCell()
    x = _x().requires_grad_()
    deq = DEQ(cell, solver_options=TIGHT, backward=mode, unroll_steps=steps)
    deq(x).square().sum().backward()
    approx = cell.weight.grad.clone()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(approx.abs().sum()) > 0 and deq.stats["backward"] is None
    cell.zero_grad()
    DEQ(cell, solver_options=TIGHT, backward_options=TIGHT)(x).square().sum().backward()
    assert not torch.allclose(approx, cell.weight.grad, atol=1e-6)  # an approximation


def test_warm_start_and_train_eval_options():
    cell = TanhCell()
    x = _x()
    deq = DEQ(cell, solver_options={"tol": 1e-10}, eval_options={"tol": 1e-3})
    with torch.no_grad():
        z = deq(x)
        cold = deq.stats["forward"].nfev
        deq(x, z0=z)
        warm = deq.stats["forward"].nfev
        assert int(warm.max()) <= 2 < int(cold.min())
        deq.eval()
        deq(x)
        assert float(deq.stats["forward"].tol) == 1e-3
        deq.train()
        deq(x)
        assert float(deq.stats["forward"].tol) == 1e-10


def test_per_sample_compaction_passes_matching_rows_of_x():
    cell = TanhCell(scale=0.95)
    x = _x(5)
    x[1] = x[1] * 50  # saturated tanh: converges in a few steps
    deq = DEQ(cell, solver_options=TIGHT)
    with torch.no_grad():
        z = deq(x)
        nfev = deq.stats["forward"].nfev
        assert int(nfev[1]) < int(nfev[0])
        for i in range(5):
            torch.testing.assert_close(deq(x[i:i + 1]), z[i:i + 1], atol=1e-12, rtol=0)


def test_memory_does_not_grow_with_iterations():
    cell = TanhCell()
    x = _x().requires_grad_()
    sizes = []
    for iters in (5, 40):
        saved: list[int] = []

        def pack(t, saved=saved):
            saved.append(t.numel())
            return t

        deq = DEQ(cell, solver_options={"tol": 0.0, "max_iter": iters})
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = deq(x)
        out.sum().backward()
        sizes.append(sum(saved))
    assert sizes[0] == sizes[1]


class LinTanhCell(nn.Module):
    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(z) + x)


def test_autocast_bf16_on_cpu():
    torch.manual_seed(0)
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.mul_(0.5)
    deq = DEQ(LinTanhCell(lin), solver_options={"tol": 1e-2}, backward_options={"tol": 1e-2})
    x = torch.randn(4, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = deq(x)
    z.float().sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and lin.weight.grad is not None
    assert deq.stats["forward"].history_dtype == "float32"
    assert bool(deq.stats["forward"].converged.all())


def test_bad_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="backward"):
        DEQ(TanhCell(), backward="implict")
    with pytest.raises(ConfigError, match="did you mean 'anderson'"):
        DEQ(TanhCell(), solver="andersen")
    # option names are checked when the layer is built, not at its first (eval / backward) solve
    for where in ("solver_options", "eval_options", "backward_options"):
        with pytest.raises(ConfigError, match="tolerance"):
            DEQ(TanhCell(), **{where: {"tolerance": 1e-3}})
    deq = DEQ(TanhCell(), solver_options={"m": 0})  # values: when the solver runs
    with pytest.raises(ConfigError, match="m=0"):
        deq(_x())


def test_implicit_graph_is_freed_without_garbage_collector():
    import gc
    import weakref

    class Marker:
        pass

    deq = DEQ(TanhCell(), solver_options={"tol": 1e-8})
    gc.disable()
    try:
        out = deq(_x())
        marker = Marker()
        out.grad_fn.register_hook(lambda *_, m=marker: None)  # the graph keeps marker alive
        ref = weakref.ref(marker)
        del marker
        out.sum().backward()
        del out
        assert ref() is None  # no reference cycle through the backward hook
    finally:
        gc.enable()


class CountingCell(nn.Module):
    """Wraps a cell and records the batch size of every evaluation made with gradients on."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell
        self.grad_batches: list[int] = []

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.grad_batches.append(z.shape[0])
        return self.cell(z, x)


def test_backward_after_compaction_evaluates_only_active_rows_and_keeps_gradients_exact():
    torch.manual_seed(3)
    cell = CountingCell(TanhCell(dim=6, scale=0.95))
    x = torch.randn(8, 6, dtype=F64)
    x[::2] *= 40  # saturated rows: their adjoint converges in a few steps
    opts = {"tol": 1e-12, "max_iter": 300, "stop_mode": "abs"}
    deq = DEQ(cell, solver_options=opts, backward_options=opts)
    xb = x.clone().requires_grad_()
    deq(xb).sin().sum().backward()
    bstats = deq.stats["backward"]
    assert int(bstats.nfev.min()) < int(bstats.nfev.max())  # rows retired at different times
    assert min(cell.grad_batches) < 8  # the adjoint re-evaluated the cell on the active rows
    batch_grads = [p.grad.clone() for p in cell.parameters()]
    # the batch gradient is the sum of the samples' own gradients, each solved alone
    cell.zero_grad()
    solo_x = []
    for i in range(8):
        xi = x[i:i + 1].clone().requires_grad_()
        deq(xi).sin().sum().backward()
        solo_x.append(xi.grad)
    torch.testing.assert_close(xb.grad, torch.cat(solo_x), atol=1e-10, rtol=1e-8)
    for got, want in zip(batch_grads, (p.grad for p in cell.parameters()), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_backward_rows_graph_keeps_the_forward_autocast():
    torch.manual_seed(0)
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.mul_(0.5)
    dtypes: list[torch.dtype] = []

    class Cell(LinTanhCell):
        def forward(self, z, x):
            h = self.lin(z)
            if torch.is_grad_enabled():
                dtypes.append(h.dtype)  # bf16 under the forward's autocast
            return torch.tanh(h + x)

    deq = DEQ(Cell(lin), solver_options={"tol": 1e-2}, backward_options={"tol": 1e-4})
    x = torch.randn(16, 16)
    x[::2] *= 30
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = deq(x)
    z.float().sum().backward()
    assert len(dtypes) > 1 and set(dtypes) == {torch.bfloat16}
    assert bool(torch.isfinite(x.grad).all())


class _LinearCell(nn.Module):
    """f(z, x) = z Aᵀ + x: ∂f/∂z = A for every sample."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T + x


def test_jacobian_penalty_is_hutchinsons_estimate_of_the_frobenius_norm():
    gen = torch.Generator().manual_seed(3)
    a = 0.3 * torch.randn(5, 5, generator=gen, dtype=F64)
    x = torch.randn(4, 5, generator=gen, dtype=F64)
    deq = DEQ(_LinearCell(a), solver_options=TIGHT, jacobian_samples=3)
    torch.manual_seed(11)
    deq(x)
    # the same random vectors, drawn in the same order: vᵀJ = v A for each sample row
    torch.manual_seed(11)
    vs = [torch.randn(4, 5, dtype=F64) for _ in range(3)]
    expected = sum(float((v @ a).pow(2).sum()) for v in vs) / (3 * x.numel())
    assert float(deq.jacobian_loss.detach()) == pytest.approx(expected, rel=1e-12)
    # and its expectation is ‖A‖²_F / d
    many = DEQ(_LinearCell(a), solver_options=TIGHT, jacobian_samples=3000)
    many(x)
    assert float(many.jacobian_loss.detach()) == pytest.approx(float(a.pow(2).sum()) / 5, rel=0.03)


def test_jacobian_penalty_gradient_matches_finite_differences():
    """gradcheck of θ ↦ penalty(cell_θ(z, x), z) at a fixed z, with the same random vectors
    each call: checks the double-backward product the regulariser trains through."""
    cell = TanhCell()
    deq = DEQ(cell, jacobian_samples=2)
    z = _x().requires_grad_()
    x = _x(dim=4) * 0.5

    def penalty(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)
        fz = torch.tanh(z @ weight.T + x + bias)
        return deq._jacobian_penalty(fz, z)

    w = cell.weight.detach().clone().requires_grad_()
    b = cell.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(penalty, (w, b), atol=1e-7)


@pytest.mark.parametrize("mode", ["implicit", "jfb", "unroll"])
def test_jacobian_regularisation_trains_the_cell_towards_contraction(mode):
    torch.manual_seed(0)
    cell = TanhCell(scale=0.9)
    deq = DEQ(cell, backward=mode, solver_options={"tol": 1e-10, "max_iter": 200},
              jacobian_samples=4)
    x = _x(batch=8)
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        deq(x)
        loss = deq.jacobian_loss
        assert loss is not None and loss.requires_grad
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    # off in eval mode and when not asked for; then the random generator is not touched
    deq.eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        deq(x)
    assert deq.jacobian_loss is None
    plain = DEQ(cell)
    plain(x).sum().backward()
    assert plain.jacobian_loss is None and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ConfigError, match="jacobian_samples"):
        DEQ(cell, jacobian_samples=-1)


def test_an_in_place_operation_on_the_output_keeps_the_implicit_gradient():
    # a hook on a view of the output was silently dropped by `z += s` (Jacobian-free gradient)
    cell = TanhCell(dim=5, scale=0.5)
    deq = DEQ(cell, solver_options=TIGHT, backward_options=TIGHT)
    x = _x(4, 5)
    shift = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=F64)
    (deq(x) + shift).square().sum().backward()
    reference = cell.weight.grad.clone()
    cell.weight.grad = None
    z = deq(x)
    z += shift
    z.square().sum().backward()
    assert deq.stats["backward"] is not None
    torch.testing.assert_close(cell.weight.grad, reference, atol=1e-10, rtol=0)


def test_higher_order_gradients_through_the_implicit_backward_are_refused():
    deq = DEQ(TanhCell(), solver_options=TIGHT, backward_options=TIGHT)
    x = _x().requires_grad_()
    with pytest.raises(RuntimeError, match="higher-order"):
        torch.autograd.grad(deq(x).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(deq(x).sum(), x)  # first order as before
    assert torch.isfinite(g).all()


def test_inference_mode_validation_then_training():
    deq = DEQ(TanhCell())
    x = _x().requires_grad_()
    with torch.inference_mode():
        deq(x)
    deq(x).sum().backward()  # raised "Inplace update to inference tensor outside InferenceMode"
    assert x.grad is not None and deq.stats["backward"] is not None


# --- non-finite incoming gradients through the implicit backward ----------------------------

def test_implicit_backward_passes_an_infinite_gradient_through():
    cell = TanhCell(4)
    deq = DEQ(cell)
    x = _x().requires_grad_()
    z = deq(x)
    (z * float("inf")).sum().backward()  # raised SolverDivergence before
    assert not bool(torch.isfinite(x.grad).all())
    assert not bool(torch.isfinite(cell.weight.grad).all())


def test_only_the_rows_with_a_non_finite_gradient_skip_the_adjoint_solve():
    cell = TanhCell(4)
    deq = DEQ(cell, backward_options={"tol": 1e-13, "max_iter": 300, "stop_mode": "abs"})
    x = _x(4).requires_grad_()
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    deq(x).mul(w).sum().backward()
    reference = x.grad.clone()
    x.grad = None
    w[2, 1] = float("nan")
    deq(x).mul(w).sum().backward()
    assert bool(torch.isnan(x.grad[2]).any())
    torch.testing.assert_close(x.grad[[0, 1, 3]], reference[[0, 1, 3]], rtol=0, atol=1e-12)
    assert deq.stats["backward"].batch_size == 4


def test_grad_scaler_skips_the_step_of_an_overflowing_deq_loss():
    cell = TanhCell(4, dtype=torch.float32)
    deq = DEQ(cell)
    opt = torch.optim.SGD(cell.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = [p.detach().clone() for p in cell.parameters()]
    loss = deq(_x(dtype=torch.float32)).pow(2).sum() * 1e36  # × the scale: inf in float32
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(cell.parameters(), before, strict=True))
    assert scaler.get_scale() == 2.0**15


# --- copies of a trained DEQ ------------------------------------------------------------------

class _Cell(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4, dtype=F64)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.3 * self.lin(z)) + x


@pytest.mark.parametrize("mode", ["implicit", "jfb"])
def test_a_deq_with_jacobian_loss_can_be_deep_copied_and_pickled(mode):
    deq = DEQ(_Cell(), backward=mode, jacobian_samples=1).train()
    x = _x()
    (deq(x).sum() + deq.jacobian_loss).backward()
    assert deq.jacobian_loss is not None and deq.jacobian_loss.grad_fn is not None
    twin = copy.deepcopy(deq)  # raised "Only Tensors created explicitly by the user ..."
    assert twin.jacobian_loss is None and deq.jacobian_loss is not None  # original untouched
    assert twin.stats["forward"] is not None
    averaged = torch.optim.swa_utils.AveragedModel(deq)
    buffer = io.BytesIO()
    torch.save(deq, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.jacobian_loss is None
    for other in (twin, averaged.module, loaded):
        torch.testing.assert_close(other(x), deq(x), rtol=0, atol=0)
        assert other.jacobian_loss is not None  # the attribute works as before in the copy


# --- option dicts and option values ----------------------------------------------------------

@pytest.mark.parametrize("where", ["solver_options", "eval_options", "backward_options"])
@pytest.mark.parametrize("key", ["args", "z0", "f", "row_args"])
def test_deq_refuses_the_solver_arguments_it_sets_itself(where, key):
    with pytest.raises(ConfigError, match=rf"{where} sets '{key}'"):
        DEQ(TanhCell(4), **{where: {key: ()}})


@pytest.mark.parametrize(("option", "value"), [
    ("unroll_steps", 1.5), ("unroll_steps", "3"), ("unroll_steps", True), ("unroll_steps", 0),
    ("jacobian_samples", 0.5), ("jacobian_samples", "1"), ("jacobian_samples", -1),
])
def test_deq_integer_options_are_checked(option, value):
    with pytest.raises(ConfigError, match=rf"{option}=.*must be an integer"):
        DEQ(TanhCell(4), **{option: value})


# --- the state z0 ----------------------------------------------------------------------------

def test_a_z0_the_cell_cannot_take_is_reported_as_z0():
    weight = torch.eye(3, dtype=F64)
    deq = DEQ(lambda z, x: 0.1 * z @ weight + x)
    with pytest.raises(InputError, match=r"z0 of shape \(2, 5\), torch\.float64 \(x: \(2, 3\), "
                                         r"torch\.float64\).*RuntimeError"):
        deq(_x(2, 3), z0=torch.zeros(2, 5, dtype=F64))
    with pytest.raises(InputError, match="z0 must be a tensor"):
        deq(_x(2, 3), z0=[[0.0] * 3] * 2)


def test_a_state_shaped_unlike_x_still_works():
    # z (B, 5), x (B, 3): z0 must be given; the first-call check changes nothing else
    gen = torch.Generator().manual_seed(4)
    a = 0.3 * torch.randn(5, 5, generator=gen, dtype=F64) / math.sqrt(5)
    p = nn.Parameter(torch.randn(3, 5, generator=gen, dtype=F64))

    def cell(z, x):
        return torch.tanh(z @ a + x @ p)

    deq = DEQ(cell, solver_options={"tol": 1e-12, "max_iter": 100})
    x = _x(2, 3)
    z = deq(x, z0=torch.zeros(2, 5, dtype=F64))
    assert z.shape == (2, 5) and bool(deq.stats["forward"].converged.all())
    z.sum().backward()
    assert p.grad is not None and bool(torch.isfinite(p.grad).all())


@pytest.mark.parametrize("backward", ["implicit", "jfb", "unroll"])
def test_an_empty_batch_trains_through_every_backward(backward):
    deq = DEQ(TanhCell(4), backward=backward)
    x = torch.zeros(0, 4, dtype=F64, requires_grad=True)
    deq(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 4)
    assert all(p.grad is not None and not bool(p.grad.any()) for p in deq.parameters())
    if backward == "implicit":
        assert deq.stats["backward"].nfev.shape == (0,)


def test_solver_options_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"option solver_options must be a dict of solver "
                                          r"options \(name: value\), got list"):
        DEQ(TanhCell(4), solver_options=[("tol", 1e-3)])


def test_a_scalar_x_and_a_z0_of_another_dtype_are_named():
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, z, x):
            return 0.5 * torch.tanh(self.lin(z)) + x

    with pytest.raises(InputError, match="x must have a leading batch dimension"):
        DEQ(TanhCell(4))(torch.tensor(1.0, dtype=F64))
    x = torch.zeros(3, 4)
    with pytest.raises(InputError, match=r"the cell failed on z0 of shape \(3, 4\), "
                                         r"torch\.float64 \(x: \(3, 4\), torch\.float32\)"):
        DEQ(Linear())(x, z0=torch.zeros(3, 4, dtype=F64))
