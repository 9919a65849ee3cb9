"""Engine fixes of session 17: overflowing residual norms, non-finite gradients through the
implicit backward, a compact residual trace, deep copies of a DEQ, option validation and
per-sample ``args`` (``row_args``)."""

from __future__ import annotations

import copy
import io
import math
import sys

import pytest
import torch
from torch import nn

from andersonn.deq import DEQ
from andersonn.errors import ConfigError, InputError, SolverDivergence
from andersonn.solvers import SOLVERS, graphs, solve
from andersonn.solvers.anderson import _Anderson

from helpers import TanhCell, linear_problem

F64 = torch.float64
ALL = sorted(SOLVERS)


def _x(batch: int = 3, dim: int = 4, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(1), dtype=dtype)


# --- 1. residual norms past the float range ------------------------------------------------

@pytest.mark.parametrize("stop_mode", ["rel", "abs"])
def test_a_diverging_float32_solve_is_divergence_not_convergence(stop_mode):
    # ‖f(z)‖ overflowed the float32 sum of squares first (z ≈ 2e18): finite / inf = 0 read as
    # "converged" in rel mode; now the solve goes on until f itself overflows
    def f(z):
        return 3 * z + 1

    with pytest.raises(SolverDivergence, match=r"NaN/Inf.*float32 range"):
        solve(f, torch.zeros(1, 100), "forward", max_iter=400, stop_mode=stop_mode)
    z, stats = solve(f, torch.zeros(1, 100), "forward", max_iter=400, stop_mode=stop_mode,
                     on_divergence="mark")
    assert not bool(stats.converged[0]) and bool(stats.diverged[0])
    assert float(stats.lowest_residual[0]) > 0.5 and bool(torch.isfinite(z).all())
    assert int(stats.nfev[0]) > 60  # not stopped where the plain float32 norm overflowed (~40)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("stop_mode", ["rel", "abs"])
def test_finite_iterates_with_huge_norms_keep_their_exact_residual(name, stop_mode):
    # z0 = 1e19 in 100 entries: ‖z0‖ = 1e20, whose square overflows float32; f is a contraction
    z0 = torch.full((2, 100), 1e19)
    z, stats = solve(lambda z: 0.5 * z + 1, z0, name, tol=1e-5, max_iter=200,
                     stop_mode=stop_mode)
    assert bool(stats.converged.all()) and not bool(stats.diverged.any())
    torch.testing.assert_close(z, torch.full_like(z0, 2.0), rtol=1e-5, atol=0)
    fz0 = 0.5 * 1e19 + 1
    first = (fz0 - 1e19) * 10 if stop_mode == "abs" else (1e19 - fz0) / fz0
    torch.testing.assert_close(stats.trace[:, 0].double(), torch.full((2,), abs(first), dtype=F64),
                               rtol=1e-6, atol=0)


def test_float64_norms_are_scaled_too():
    z0 = torch.full((1, 100), 1e160, dtype=F64)  # ‖z0‖² = 1e324 overflows float64
    _, stats = solve(lambda z: 0.5 * z, z0, "forward", tol=1e-3, max_iter=2000, stop_mode="abs")
    assert bool(stats.converged[0])
    assert float(stats.trace[0, 0]) == pytest.approx(0.5e161, rel=1e-12)


def test_nan_from_f_is_still_divergence_and_names_the_rows():
    def f(z):
        out = 0.5 * z + 1
        out[1] = float("nan")
        return out

    with pytest.raises(SolverDivergence, match=r"NaN/Inf for 1 of 3 samples \(rows \[1\]\)"):
        solve(f, torch.zeros(3, 4), "anderson")


# --- 2. non-finite incoming gradients through the implicit backward -------------------------

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


# --- 3. the residual trace --------------------------------------------------------------------

def test_trace_is_a_compact_copy_not_a_view_on_a_max_iter_buffer():
    _, stats = solve(lambda z: 0.5 * z + 1, torch.zeros(64, 10), "anderson",
                     max_iter=2_000_000)
    assert stats.trace.shape == (64, stats.iterations)
    assert stats.trace.is_contiguous()
    assert stats.trace.untyped_storage().nbytes() == 64 * stats.iterations * 4  # was 512 MB


def _staggered_linear(batch: int = 5, n: int = 6):
    """z = 0.97 z + b_i: forward iteration converges in ~300-800 evaluations, staggered by the
    scale of b_i; its residuals are known in closed form."""
    b = torch.randn(batch, n, generator=torch.Generator().manual_seed(3), dtype=F64)
    b = b * torch.logspace(0, 4, batch, dtype=F64)[:, None]
    return (lambda z, b: 0.97 * z + b), b


def test_trace_grows_past_its_first_chunk_with_exact_values():
    f, b = _staggered_linear()
    z, stats = solve(f, torch.zeros_like(b), "forward", tol=1e-10, max_iter=2000, args=(b,),
                     stop_mode="abs")
    assert bool(stats.converged.all()) and stats.iterations > 256  # several doublings
    nfev = stats.nfev.tolist()
    assert len(set(nfev)) == len(nfev)  # rows retired at different checks (compactions)
    for i, count in enumerate(nfev):  # the same iteration, one row at a time
        z, residuals = torch.zeros_like(b[i:i + 1]), []
        for _ in range(count):
            fz = f(z, b[i:i + 1])
            residuals.append(torch.linalg.vector_norm(fz - z, dim=1))
            z = fz
        torch.testing.assert_close(stats.trace[i, :count], torch.cat(residuals), rtol=1e-12,
                                   atol=0)
        assert bool(torch.isnan(stats.trace[i, count:]).all())


@pytest.mark.parametrize("name", ALL)
def test_a_growing_trace_is_the_same_in_emulated_graph_solves(name, monkeypatch):
    monkeypatch.setattr(graphs, "EMULATE_ON_CPU", True)
    monkeypatch.setattr(_Anderson, "capturable", True)  # the same small solve in both (as in
    if name == "forward_iteration":                      # tests/test_graphs.py)
        f, b = _staggered_linear()
        args, z0 = (b,), torch.zeros_like(b)
    else:  # slow linear maps: 190-350 evaluations
        f, args, _ = linear_problem(5, 64, 0.99)
        z0 = torch.zeros(5, 64, dtype=F64)
    opts = {"tol": 1e-10, "max_iter": 1000, "args": args, "stop_mode": "abs", "check_every": 5}
    z, eager = solve(f, z0, name, **opts)
    zg, graph = solve(f, z0, name, cuda_graph=True, **opts)
    assert graph.graph_blocks > 0 and eager.iterations > 128
    assert torch.equal(z, zg) and torch.equal(eager.nfev, graph.nfev)
    assert torch.equal(eager.trace.nan_to_num(-1), graph.trace.nan_to_num(-1))


# --- 4. copies of a trained DEQ ---------------------------------------------------------------

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


# --- 5. safeguard ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["anderson", "broyden"])
@pytest.mark.parametrize("value", ["False", 0, None, 1.0])
def test_safeguard_must_be_a_bool(name, value):
    with pytest.raises(ConfigError, match=r"safeguard=.*True or False"):
        solve(lambda z: 0.5 * z, torch.zeros(2, 3), name, safeguard=value)


# --- 6. DEQ option dicts ----------------------------------------------------------------------

@pytest.mark.parametrize("where", ["solver_options", "eval_options", "backward_options"])
@pytest.mark.parametrize("key", ["args", "z0", "f", "row_args"])
def test_deq_refuses_the_solver_arguments_it_sets_itself(where, key):
    with pytest.raises(ConfigError, match=rf"{where} sets '{key}'"):
        DEQ(TanhCell(4), **{where: {key: ()}})


# --- 7. per-sample args -------------------------------------------------------------------

def _shared_weight_problem():
    # a shared (4, 4) weight with B = 4: row 0 starts at its fixed point and retires first
    w = 0.5 * torch.eye(4, dtype=F64)
    z0 = torch.zeros(4, 4, dtype=F64)
    z0[0] = 2.0
    return (lambda z, w: z @ w + 1), w, z0


def test_a_shared_tensor_with_b_rows_needs_row_args():
    f, w, z0 = _shared_weight_problem()
    with pytest.raises(RuntimeError) as info:
        solve(f, z0, "anderson", args=(w,), tol=1e-10)
    if sys.version_info >= (3, 11):
        assert any("row_args" in note for note in info.value.__notes__)
    z, stats = solve(f, z0, "anderson", args=(w,), tol=1e-10, row_args=())
    assert bool(stats.converged.all())
    torch.testing.assert_close(z, torch.full_like(z0, 2.0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_row_args_names_the_per_sample_tensors(name):
    _, w, z0 = _shared_weight_problem()
    b = torch.arange(4, dtype=F64)[:, None].expand(4, 4).contiguous()

    def g(z, w, b):
        return z @ w + b

    z, stats = solve(g, z0, name, args=(w, b), tol=1e-12, max_iter=200, row_args=[1])
    assert bool(stats.converged.all())
    torch.testing.assert_close(z, 2 * b, rtol=0, atol=1e-10)
    # the default slices both: only a per-sample tensor may have B rows then
    _, auto = solve(lambda z, b: 0.5 * z + b, z0, name, args=(b,), tol=1e-12, max_iter=200)
    _, named = solve(lambda z, b: 0.5 * z + b, z0, name, args=(b,), tol=1e-12, max_iter=200,
                     row_args=(0,))
    assert torch.equal(auto.nfev, named.nfev)
    assert torch.equal(auto.trace.nan_to_num(-1), named.trace.nan_to_num(-1))


@pytest.mark.parametrize(("row_args", "match"), [
    ((1,), "position 1, but args has 1 item"),
    ((0.5,), "row_args=0.5 must be an integer"),
    ((True,), "row_args=True must be an integer"),
    (0, "must be a tuple or list"),
])
def test_bad_row_args_raise_config_errors(row_args, match):
    with pytest.raises(ConfigError, match=match):
        solve(lambda z, b: z, torch.zeros(2, 3), "forward", args=(torch.zeros(2, 3),),
              row_args=row_args)


def test_row_args_must_name_a_tensor_with_b_rows():
    with pytest.raises(ConfigError, match=r"args\[0\], which is not a tensor with leading "
                                          "dimension B = 2"):
        solve(lambda z, w: z, torch.zeros(2, 3), "anderson", args=(torch.zeros(3, 3),),
              row_args=(0,))


# --- 8. validation gaps -----------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [
    ("unroll_steps", 1.5), ("unroll_steps", "3"), ("unroll_steps", True), ("unroll_steps", 0),
    ("jacobian_samples", 0.5), ("jacobian_samples", "1"), ("jacobian_samples", -1),
])
def test_deq_integer_options_are_checked(option, value):
    with pytest.raises(ConfigError, match=rf"{option}=.*must be an integer"):
        DEQ(TanhCell(4), **{option: value})


@pytest.mark.parametrize("args", [5, torch.zeros(2, 3), "x"])
def test_args_must_be_a_tuple_or_list(args):
    with pytest.raises(ConfigError, match="option args must be a tuple or list"):
        solve(lambda z, *a: z, torch.zeros(2, 3), "anderson", args=args)


def test_f_returning_integers_is_refused():
    with pytest.raises(InputError, match=r"f must return floating-point values, got torch\.int32"):
        solve(lambda z: (0.5 * z).int(), torch.full((2, 3), 4.0), "anderson")


def test_a_z0_the_cell_cannot_take_is_reported_as_z0():
    weight = torch.eye(3, dtype=F64)
    deq = DEQ(lambda z, x: 0.1 * z @ weight + x)
    with pytest.raises(InputError, match=r"z0 of shape \(2, 5\) \(x: \(2, 3\)\).*RuntimeError"):
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


# --- on a CUDA device (marker cuda; skipped elsewhere) -------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_overflowing_norm_is_divergence_and_the_trace_compact(cuda_graph):
    z0 = torch.zeros(1, 100, device="cuda")
    # z² + 1 has no real fixed point (Anderson solves the linear 3z + 1 in two steps)
    _, stats = solve(lambda z: z * z + 1, z0, "anderson", max_iter=400, safeguard=False,
                     on_divergence="mark", cuda_graph=cuda_graph)
    assert not bool(stats.converged[0]) and bool(stats.diverged[0])
    _, stats = solve(lambda z: z * z + 1, z0, "forward", max_iter=400, on_divergence="mark",
                     cuda_graph=cuda_graph)
    assert not bool(stats.converged[0]) and bool(stats.diverged[0])
    # forward iteration: hundreds of evaluations, so the trace grows past its first chunk
    # (Anderson solves this map, a multiple of the identity plus b, in two steps)
    f, b = _staggered_linear()
    b = b.cuda()
    zc, sc = solve(f, torch.zeros_like(b), "forward", tol=1e-10, max_iter=1500, args=(b,),
                   stop_mode="abs", cuda_graph=cuda_graph, check_every=5)
    z, s = solve(f, torch.zeros_like(b).cpu(), "forward", tol=1e-10, max_iter=1500,
                 args=(b.cpu(),), stop_mode="abs", check_every=5)
    assert sc.iterations > 64 and sc.trace.is_contiguous()
    assert sc.trace.untyped_storage().nbytes() == sc.trace.numel() * 8
    assert torch.equal(sc.nfev, s.nfev)
    torch.testing.assert_close(zc.cpu(), z, rtol=0, atol=1e-9)
    torch.testing.assert_close(sc.trace, s.trace, rtol=1e-9, atol=0, equal_nan=True)
