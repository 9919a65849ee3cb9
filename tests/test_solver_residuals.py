"""The solvers' residuals: norms past the float range (a diverging float32 solve is divergence,
not convergence; finite iterates with huge norms keep their exact residual), and the residual
trace (a compact copy that grows past its first chunk with exact values, the same in emulated
graph solves and on a CUDA device)."""

from __future__ import annotations

import pytest
import torch

from andersonn.errors import SolverDivergence
from andersonn.solvers import SOLVERS, graphs, solve
from andersonn.solvers.anderson import _Anderson

from helpers import linear_problem

F64 = torch.float64
ALL = sorted(SOLVERS)


# --- residual norms past the float range ---------------------------------------------------

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


# --- the residual trace -----------------------------------------------------------------------

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
