"""CUDA-graph blocks of solver iterations (``cuda_graph=True``), checked on the CPU.

The CPU cannot capture, so these tests switch on the emulation of :mod:`andersonn.solvers.graphs`:
every block goes through the real snapshot / copy-back / identity checks, "replay" runs the block
eagerly and checks that the method's ``graph_advance`` predicts the counters the Python code
produced. Real capture and replay are checked in ``tests/test_cuda.py`` on a GPU.
"""

from __future__ import annotations

import pytest
import torch

import andersonn.solvers.graphs as graphs
from andersonn.errors import ConfigError
from andersonn.solvers import SOLVERS, solve
from andersonn.solvers.anderson import _Anderson, solve_spd
from andersonn.solvers.graphs import BlockGraphs, Uncapturable, _break_aliases, _copy_back

from helpers import linear_problem, relu_norm_cells

ALL = sorted(SOLVERS)
F64 = torch.float64


@pytest.fixture
def emulate(monkeypatch):
    monkeypatch.setattr(graphs, "EMULATE_ON_CPU", True)
    # graph solves take Anderson's LAPACK-free small solve; eager ones here too, so that the
    # comparisons below can be bit for bit (test_solve_spd checks that solve against LAPACK)
    monkeypatch.setattr(_Anderson, "capturable", True)


def _same(a, b):
    return torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))


def _staggered_problem():
    """Linear maps with spread-out convergence: rows retire at many different checks."""
    f, (a, b), _ = linear_problem(16, 12, 0.95, seed=4)
    a = a * torch.linspace(0.2, 1.0, 16, dtype=F64).view(16, 1, 1)
    return f, (a, b), torch.zeros(16, 12, dtype=F64)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("check_every", [1, 3, 5])
def test_graph_blocks_give_the_eager_result_bit_for_bit(emulate, name, check_every):
    f, args, z0 = _staggered_problem()
    opts = dict(tol=1e-11, max_iter=400, check_every=check_every, args=args)
    z, st = solve(f, z0, name, **opts)
    zg, sg = solve(f, z0, name, cuda_graph=True, **opts)
    assert sg.graph_blocks > 0 and st.graph_blocks == 0 and not sg.messages
    assert len(set(st.nfev.tolist())) > 3  # several retirements and compactions happened
    assert torch.equal(z, zg) and torch.equal(st.nfev, sg.nfev)
    assert _same(st.trace, sg.trace) and torch.equal(st.lowest_residual, sg.lowest_residual)
    assert sg.summary()["cuda_graph_blocks"] == sg.graph_blocks
    assert 1 <= sg.graph_captures <= sg.graph_blocks
    if name != "broyden":  # Broyden's ring of 8 needs a graph per position: few replays here
        assert sg.graph_captures < sg.graph_blocks


@pytest.mark.parametrize("check_every", [2, 5])
def test_graph_blocks_keep_safeguard_and_stall_fallback_state(emulate, check_every):
    f, args = relu_norm_cells(64, 4, seed=2)
    z0 = torch.zeros(64, 4, dtype=F64)
    opts = dict(tol=1e-10, max_iter=300, check_every=check_every, args=args, stall_patience=4)
    z, st = solve(f, z0, "anderson", **opts)
    zg, sg = solve(f, z0, "anderson", cuda_graph=True, **opts)
    assert int(st.stalled.sum()) > 0 and int(st.rejected.sum()) > 0  # both paths exercised
    assert sg.graph_blocks > 0
    assert torch.equal(z, zg) and torch.equal(st.nfev, sg.nfev)
    assert torch.equal(st.stalled, sg.stalled) and torch.equal(st.rejected, sg.rejected)
    assert _same(st.trace, sg.trace)


def test_failed_capture_restores_the_state_and_finishes_eagerly(emulate, monkeypatch):
    def failing_capture(self, objs, saved, block):
        # what a failed capture leaves behind: attributes rebound, counters advanced
        loop, method = objs[0], objs[1]
        loop.best_z = loop.best_z * 2
        method.pos += 3
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(BlockGraphs, "_capture", failing_capture)
    f, args, z0 = _staggered_problem()
    opts = dict(tol=1e-11, max_iter=400, check_every=3, args=args)
    z, st = solve(f, z0, "anderson", **opts)
    zg, sg = solve(f, z0, "anderson", cuda_graph=True, **opts)
    assert sg.graph_blocks == 0
    assert len(sg.messages) == 1 and "capture failed" in sg.messages[0]
    assert "not permitted" in sg.messages[0]
    assert torch.equal(z, zg) and torch.equal(st.nfev, sg.nfev)


def test_a_wrong_graph_advance_is_caught(emulate, monkeypatch):
    monkeypatch.setattr(_Anderson, "graph_advance", lambda self, iterations: None)
    f, args, z0 = _staggered_problem()
    with pytest.raises(Uncapturable, match="graph_advance"):
        solve(f, z0, "anderson", tol=1e-11, max_iter=400, check_every=5, args=args,
              cuda_graph=True)


class _Holder:
    def __init__(self, **attrs):
        vars(self).update(attrs)


def test_copy_back_handles_swapped_and_aliased_attributes():
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    h = _Holder(x=x, y=y, n=1)
    saved = [dict(vars(h))]
    h.x, h.y, h.n = h.y, h.x + 10, 2  # x takes y's old tensor itself: must not be clobbered
    _copy_back([h], saved)
    assert h.x is x and h.y is y and h.n == 2
    assert x.tolist() == [3.0, 4.0] and y.tolist() == [11.0, 12.0]

    shared = torch.zeros(3)
    a, b = _Holder(p=shared), _Holder(q=shared)
    _break_aliases([a, b])
    assert a.p is shared and b.q is not shared and torch.equal(b.q, shared)


def test_copy_back_refuses_what_a_graph_cannot_replay():
    h = _Holder(x=torch.zeros(3))
    saved = [dict(vars(h))]
    h.x = torch.zeros(4)
    with pytest.raises(Uncapturable, match="changed shape"):
        _copy_back([h], saved)
    h = _Holder(x=torch.zeros(3), y=None)
    saved = [dict(vars(h))]
    h.y = torch.zeros(1)
    with pytest.raises(Uncapturable, match="became a tensor"):
        _copy_back([h], saved)


def test_cuda_graph_option_is_validated_and_ignored_on_the_cpu():
    f, args, z0 = _staggered_problem()
    with pytest.raises(ConfigError, match="cuda_graph"):
        solve(f, z0, "anderson", args=args, cuda_graph="yes")
    z, _ = solve(f, z0, "anderson", tol=1e-10, args=args)
    zg, sg = solve(f, z0, "anderson", tol=1e-10, args=args, cuda_graph=True)
    assert sg.graph_blocks == 0 and torch.equal(z, zg)


def test_solve_spd_matches_linalg_and_flags_what_is_not_positive_definite():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(64, 5, 30, generator=gen, dtype=F64)
    a = g @ g.transpose(1, 2) + 1e-4 * torch.eye(5, dtype=F64)
    rhs = torch.ones(64, 5, dtype=F64)
    x, ok = solve_spd(a, rhs)
    assert bool(ok.all())
    torch.testing.assert_close(x, torch.linalg.solve(a, rhs), atol=1e-10, rtol=1e-10)
    bad = a.clone()
    bad[0] = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0], dtype=F64))  # indefinite
    bad[1] = 0.0  # singular
    bad[2, 3, 3] = float("nan")
    x, ok = solve_spd(bad, rhs)
    assert ok.tolist()[:4] == [False, False, False, True] and bool(ok[3:].all())


class _Graph:
    """Stands in for torch.cuda.CUDAGraph: capture_end fails as for an invalidated capture."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails

    def capture_end(self) -> None:
        if self.fails:
            raise RuntimeError("operation failed due to a previous error during capture")


def test_a_failed_capture_end_stops_the_pool_recording(monkeypatch):
    calls = []
    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool",
                        lambda index, pool: calls.append((index, pool)), raising=False)
    graphs.end_capture(_Graph(fails=False), (0, 7), 2)
    assert calls == []  # a good capture_end does it itself
    with pytest.raises(RuntimeError, match="previous error"):
        graphs.end_capture(_Graph(fails=True), (0, 7), 2)
    assert calls == [(2, (0, 7))]

    def already_done(index, pool):
        raise RuntimeError("endAllocatePool: not currently recording to mempool_id")

    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", already_done)
    with pytest.raises(RuntimeError, match="previous error"):  # the capture's error, not this
        graphs.end_capture(_Graph(fails=True), (0, 7), 2)
