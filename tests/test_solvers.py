"""Tests of the batched fixed-point solvers (andersonn.solvers) and the solver benchmark."""

from __future__ import annotations

import json

import pytest
import torch

from andersonn.errors import ConfigError, SolverDivergence
from andersonn.solvers import SOLVERS, SolverStats, get_solver, solve

from helpers import linear_problem, relu_norm_cells

ALL = sorted(SOLVERS)

F64 = torch.float64


@pytest.mark.parametrize("name", ALL)
def test_linear_contraction_matches_linalg_solve(name):
    f, args, exact = linear_problem(3, 20, 0.8)
    z, stats = solve(f, torch.zeros(3, 20, dtype=F64), name, tol=1e-14, max_iter=400, args=args)
    assert isinstance(stats, SolverStats)
    assert bool(stats.converged.all())
    torch.testing.assert_close(z, exact, atol=1e-8, rtol=0)


def test_anderson_needs_ten_times_fewer_evaluations_on_slow_map():
    f, args, exact = linear_problem(2, 64, 0.99)
    z0 = torch.zeros(2, 64, dtype=F64)
    _, fwd = solve(f, z0, "forward_iteration", tol=1e-8, max_iter=5000, args=args)
    za, and_ = solve(f, z0, "anderson", tol=1e-8, max_iter=5000, args=args)
    assert bool(fwd.converged.all()) and bool(and_.converged.all())
    assert float(fwd.nfev.min()) >= 10 * float(and_.nfev.max())
    torch.testing.assert_close(za, exact, atol=1e-4, rtol=1e-6)


def _sinh_map():
    # contractive near its fixed point but explosive far away: the nearly flat start sends the
    # first secant / Anderson extrapolation far out, where sinh(2z) overflows; from there the
    # unsafeguarded solvers never come back (Anderson's least squares gives such a slot no
    # weight when the rest of its window is sound, hence the steep sinh(2z))
    b = 1 + 0.1 * torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)

    def f(z, b):
        return 0.999 * z + b - 1e-8 * torch.sinh(2 * z)

    return f, (b,)


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_safeguard_rescues_a_diverging_extrapolation(name):
    f, args = _sinh_map()
    z0 = torch.zeros(3, 4, dtype=F64)
    with pytest.raises(SolverDivergence, match="NaN/Inf"):
        solve(f, z0, name, tol=1e-12, max_iter=200, args=args, safeguard=False)
    _, off = solve(f, z0, name, tol=1e-12, max_iter=200, args=args, safeguard=False,
                   on_divergence="mark")
    assert bool(off.diverged.all()) and not bool(off.converged.any())
    z, on = solve(f, z0, name, tol=1e-12, max_iter=200, args=args, safeguard=True)
    assert bool(on.converged.all()) and int(on.rejected.sum()) > 0
    assert float((f(z, *args) - z).abs().max()) < 1e-9


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("check_every", [1, 3])
def test_easy_samples_stop_early_and_match_solo_solves(name, check_every):
    f, (a, b), _ = linear_problem(4, 16, 0.9, seed=1)
    a = a * torch.tensor([0.05, 1.0, 0.1, 1.0], dtype=F64).view(4, 1, 1)  # rows 0, 2 easy
    opts = dict(tol=1e-12, max_iter=600, check_every=check_every)
    z, stats = solve(f, torch.zeros(4, 16, dtype=F64), name, args=(a, b), **opts)
    assert int(stats.nfev[0]) < int(stats.nfev[1]) and int(stats.nfev[2]) < int(stats.nfev[3])
    if check_every > 1:
        assert all(int(n) % check_every == 0 for n in stats.nfev)
    for i in range(4):
        zi, si = solve(f, torch.zeros(1, 16, dtype=F64), name, args=(a[i:i + 1], b[i:i + 1]),
                       **opts)
        assert int(si.nfev[0]) == int(stats.nfev[i])
        torch.testing.assert_close(z[i:i + 1], zi, atol=1e-12, rtol=0)
    assert stats.trace.shape == (4, stats.iterations)
    assert bool(torch.isnan(stats.trace[0, -1]))  # retired early: trace padded with NaN


@pytest.mark.parametrize("name", ALL)
def test_few_retired_rows_are_kept_until_compaction_without_changing_results(name):
    # 1 easy sample in 10 (< 1/8 of the batch): recorded at once, compacted later
    f, (a, b), _ = linear_problem(10, 12, 0.9, seed=2)
    a = a * torch.tensor([0.01] + [1.0] * 9, dtype=F64).view(10, 1, 1)
    opts = dict(tol=1e-12, max_iter=600)
    z, stats = solve(f, torch.zeros(10, 12, dtype=F64), name, args=(a, b), **opts)
    assert int(stats.nfev[0]) < int(stats.nfev[1:].min())
    assert bool(torch.isnan(stats.trace[0, int(stats.nfev[0]):]).all())
    for i in (0, 5):
        zi, si = solve(f, torch.zeros(1, 12, dtype=F64), name, args=(a[i:i + 1], b[i:i + 1]),
                       **opts)
        assert int(si.nfev[0]) == int(stats.nfev[i])
        torch.testing.assert_close(z[i:i + 1], zi, atol=1e-12, rtol=0)


def test_shapes_any_rank_and_abs_stop_mode():
    z0 = torch.zeros(2, 3, 4, 5, dtype=F64)
    target = torch.arange(120, dtype=F64).view(2, 3, 4, 5) / 100

    def f(z, t):
        return 0.5 * z + 0.5 * t

    for mode in ("abs", "rel"):
        z, stats = solve(f, z0, tol=1e-10, stop_mode=mode, max_iter=200, args=(target,))
        assert z.shape == z0.shape
        torch.testing.assert_close(z, target, atol=1e-9, rtol=0)
        assert bool((stats.lowest_residual <= 1e-10).all())


def test_unknown_options_and_names_raise_config_error():
    f = lambda z: 0.5 * z  # noqa: E731
    z0 = torch.ones(2, 3)
    with pytest.raises(ConfigError, match=r"'max_iters'.*did you mean 'max_iter'.*valid options"):
        solve(f, z0, "anderson", max_iters=3)
    with pytest.raises(ConfigError, match="did you mean 'lam'"):
        solve(f, z0, "anderson", lamb=1e-3)
    with pytest.raises(ConfigError, match="did you mean 'broyden'"):
        get_solver("broyden_")
    with pytest.raises(ConfigError, match="stop_mode"):
        solve(f, z0, "forward_iteration", stop_mode="relative")
    with pytest.raises(ConfigError, match="damping"):
        solve(f, z0, "forward_iteration", dampening=0.5)


@pytest.mark.parametrize("name", ALL)
def test_nan_in_f_is_reported_as_divergence(name):
    def f(z, poisoned):  # sample 1 always returns NaN
        return torch.where(poisoned[:, None], float("nan"), 0.5 * z + 1)

    z0 = torch.zeros(3, 4)
    args = (torch.tensor([False, True, False]),)
    with pytest.raises(SolverDivergence, match=r"NaN/Inf.*rows \[1\]"):
        solve(f, z0, name, tol=1e-6, max_iter=50, args=args)
    z, stats = solve(f, z0, name, tol=1e-6, max_iter=50, on_divergence="mark", args=args)
    assert stats.diverged.tolist() == [False, True, False]
    assert stats.converged.tolist() == [True, False, True]
    assert bool(torch.isfinite(z).all())
    assert stats.messages and "NaN/Inf" in stats.messages[0]


@pytest.mark.parametrize("lam", [0.0, 1e-4])
def test_singular_history_does_not_crash(lam):
    const = torch.randn(2, 6, dtype=F64)
    z, stats = solve(lambda z: const.clone(), torch.zeros(2, 6, dtype=F64), "anderson",
                     tol=1e-12, lam=lam, max_iter=20)
    assert bool(stats.converged.all())
    torch.testing.assert_close(z, const)
    # repeated iterates: f(z) = z exactly on the first coordinates, contraction on the rest
    z, stats = solve(lambda z: torch.cat([z[:, :3], 0.5 * z[:, 3:]], 1),
                     torch.ones(2, 6, dtype=F64), "anderson", tol=1e-12, lam=lam, max_iter=200)
    assert bool(torch.isfinite(z).all()) and bool(stats.converged.all())
    z, stats = solve(lambda z: torch.cat([z[:, :3], 0.5 * z[:, 3:]], 1),
                     torch.ones(2, 6, dtype=F64), "broyden", tol=1e-12, max_iter=200)
    assert bool(torch.isfinite(z).all()) and bool(stats.converged.all())


@pytest.mark.parametrize("name", ALL)
def test_bf16_f_keeps_float32_history(name):
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * 0.1

    def f(z):
        assert z.dtype == torch.bfloat16 or z.dtype == torch.float32
        return torch.tanh(z.bfloat16() @ w.bfloat16().T + 1)

    z, stats = solve(f, torch.zeros(4, 8), name, tol=1e-2, max_iter=50)
    assert z.dtype == torch.float32 and stats.history_dtype == "float32"
    assert bool(stats.converged.all())
    zb, stats = solve(f, torch.zeros(4, 8, dtype=torch.bfloat16), name, tol=1e-2, max_iter=50)
    assert zb.dtype == torch.bfloat16 and stats.history_dtype == "float32"


def test_autocast_does_not_lower_history_precision():
    lin = torch.nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight.mul_(0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, stats = solve(lambda z: torch.tanh(lin(z)), torch.zeros(4, 8), tol=1e-2)
    assert stats.history_dtype == "float32" and bool(stats.converged.all())


def test_stats_summary_is_plain_json():
    f, args, _ = linear_problem(3, 10, 0.5)
    _, stats = solve(f, torch.zeros(3, 10, dtype=F64), "anderson", tol=1e-10, args=args)
    summary = json.loads(json.dumps(stats.summary()))
    assert summary["solver"] == "anderson" and summary["batch_size"] == 3
    assert summary["converged_fraction"] == 1.0 and summary["nfev_max"] >= 2
    assert stats.wall_time > 0


def test_max_iter_returns_best_iterate_unconverged():
    f, args, _ = linear_problem(2, 30, 0.99, spread=False)
    _, stats = solve(f, torch.zeros(2, 30, dtype=F64), "forward_iteration", tol=1e-12,
                     max_iter=10, args=args)
    assert not bool(stats.converged.any()) and stats.nfev.tolist() == [10, 10]
    assert torch.equal(stats.lowest_residual, stats.trace.min(dim=1).values)


def test_bench_quick_smoke(tmp_path):
    from andersonn.bench.solvers import main

    result = main(out=tmp_path, quick=True, progress=False, channels=4, size=4, batch=4, threads=1,
                  tolerances=(1e-2, 1e-3), solvers=("forward_iteration", "anderson"))
    data = json.loads((tmp_path / "solvers_quick.json").read_text())
    assert len(data["results"]) == 2 * 2 * 2 and data["results"] == json.loads(
        json.dumps(result["results"]))
    assert all(r["converged_fraction"] == 1.0 for r in data["results"])
    mem = data["memory"]
    assert mem[0]["implicit_saved_bytes"] == mem[-1]["implicit_saved_bytes"]
    assert mem[-1]["unroll_saved_bytes"] > mem[0]["unroll_saved_bytes"]
    ops = {name: d["ops"] for name, d in data["dispatch_per_iteration"].items()}
    # per iteration each solver runs f once plus its own bookkeeping; Anderson does the most
    assert ops["anderson"] > ops["forward_iteration"] > ops["f"] > 0
    assert data["tf32"] is False


def test_tf32_mode_sets_and_restores_both_flags():
    from andersonn.bench.report import tf32_mode

    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for enabled in (True, False):
        with tf32_mode(enabled):
            assert torch.backends.cudnn.allow_tf32 is enabled
            assert torch.backends.cuda.matmul.allow_tf32 is enabled
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == flags


def test_cli_registers_bench_solvers():
    from andersonn.cli import build_parser

    args = build_parser().parse_args(["bench", "solvers", "--quick", "--out", "x"])
    assert args.quick and args.out == "x" and callable(args.func)


def _naive_anderson(f, z0, m, lam, max_iter):
    """Textbook type-II Anderson on one sample (no ring buffer, Gram recomputed): reference."""
    xs, fs = [z0], [f(z0)]
    trace = [float((fs[0] - xs[0]).norm() / (fs[0].norm() + 1e-9))]
    for _ in range(max_iter - 1):
        xh, fh = torch.stack(xs[-m:]), torch.stack(fs[-m:])
        g = fh - xh
        gg = g @ g.T
        # λ relative to the harmonic mean of the window's squared residual norms
        reg = lam * float(len(xh) / (1 / torch.diagonal(gg)).sum()) + torch.finfo(F64).tiny ** 0.5
        w = torch.linalg.solve(gg + reg * torch.eye(len(xh), dtype=F64),
                               torch.ones(len(xh), dtype=F64))
        z = (w / w.sum()) @ fh
        xs.append(z)
        fs.append(f(z))
        trace.append(float((fs[-1] - z).norm() / (fs[-1].norm() + 1e-9)))
    return torch.tensor(trace, dtype=F64)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_anderson_ring_buffer_matches_textbook_anderson_after_wraparound(m):
    # 25 iterations: the ring of m slots wraps around several times
    f, (a, b), _ = linear_problem(2, 30, 0.95, seed=4)
    _, stats = solve(f, torch.zeros(2, 30, dtype=F64), "anderson", m=m, tol=0.0, max_iter=25,
                     args=(a, b), safeguard=False)
    for i in range(2):
        ref = _naive_anderson(lambda z, i=i: a[i] @ z + b[i], torch.zeros(30, dtype=F64), m,
                              1e-4, 25)
        # residuals fall by many orders: compare where they are well above rounding
        keep = ref > 1e-9
        torch.testing.assert_close(stats.trace[i][keep], ref[keep], rtol=1e-5, atol=0)


@pytest.mark.parametrize("m", [1, 3, 5])
def test_anderson_after_wraparound_and_compaction_matches_solve_and_solo(m):
    f, (a, b), exact = linear_problem(9, 24, 0.97, seed=5)
    a = a * torch.linspace(0.3, 1.0, 9, dtype=F64).view(9, 1, 1)  # staggered retirement
    opts = dict(m=m, tol=1e-13, max_iter=3000)
    z, stats = solve(f, torch.zeros(9, 24, dtype=F64), "anderson", args=(a, b), **opts)
    exact = torch.linalg.solve(torch.eye(24, dtype=F64) - a, b)
    assert bool(stats.converged.all()) and int(stats.nfev.max()) > 3 * m
    assert len(set(stats.nfev.tolist())) > 2  # rows retired at different times
    torch.testing.assert_close(z, exact, atol=1e-8, rtol=0)
    for i in (0, 4, 8):
        zi, si = solve(f, torch.zeros(1, 24, dtype=F64), "anderson", args=(a[i:i + 1],
                       b[i:i + 1]), **opts)
        assert int(si.nfev[0]) == int(stats.nfev[i])
        torch.testing.assert_close(z[i:i + 1], zi, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_anderson_recycled_buffers_do_not_change_results(monkeypatch, dtype):
    # safeguard restarts and non-monotone residuals: the best iterate is often an old one,
    # so a recycled iterate buffer that was still referenced would corrupt the result
    from andersonn.solvers.anderson import _Anderson

    f, args = _sinh_map()
    args = tuple(t.to(dtype) for t in args)
    z0 = torch.zeros(3, 4, dtype=dtype)
    opts = dict(tol=1e-12 if dtype == F64 else 1e-6, max_iter=200, args=args)
    z1, s1 = solve(f, z0, "anderson", **opts)
    assert int(s1.rejected.sum()) > 0
    monkeypatch.setattr(_Anderson, "POOL", 0)
    z2, s2 = solve(f, z0, "anderson", **opts)
    assert torch.equal(z1, z2) and torch.equal(s1.nfev, s2.nfev)
    assert torch.equal(torch.nan_to_num(s1.trace), torch.nan_to_num(s2.trace))


def test_bench_forward_counts_from_one_trace_equal_separate_runs():
    from andersonn.bench.solvers import forward_by_tolerance

    f, (a, b), _ = linear_problem(6, 16, 0.9, seed=6)
    a = a * torch.linspace(0.2, 1.0, 6, dtype=F64).view(6, 1, 1)
    z0 = torch.zeros(6, 16, dtype=F64)
    tols, max_iter = (1e-2, 1e-5, 1e-9, 1e-13), 120
    _, once = solve(f, z0, "forward_iteration", tol=min(tols), max_iter=max_iter, args=(a, b))
    assert not bool(once.converged.all())  # includes a sample stopped by max_iter
    for rec in forward_by_tolerance(once, tols, max_iter):
        _, sep = solve(f, z0, "forward_iteration", tol=rec["tol"], max_iter=max_iter,
                       args=(a, b))
        assert rec["nfev_mean"] == float(sep.nfev.double().mean())
        assert rec["nfev_max"] == float(sep.nfev.max())
        assert rec["converged_fraction"] == float(sep.converged.double().mean())


def test_bench_spectral_radius_of_a_linear_cell():
    from andersonn.bench.cells import contraction_rates

    _, (a, _), _ = linear_problem(1, 12, 0.9, seed=7)
    for scale in (0.5, 1.0):
        mat = scale * a[0]

        def cell(z, x, mat=mat):
            return z @ mat.T + x

        x = torch.randn(2, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
        rates, converged = contraction_rates(cell, x, iterations=200)
        assert bool(converged.all())
        torch.testing.assert_close(rates, torch.full((2,), 0.9 * scale, dtype=F64), atol=5e-3,
                                   rtol=0)


def test_anderson_workspace_is_reused_and_never_leaks_between_solves():
    from andersonn.solvers import release_workspace
    from andersonn.solvers.anderson import _WORKSPACE

    f, (a, b), _ = linear_problem(6, 40, 0.97, seed=8)
    f2, (a2, b2), exact2 = linear_problem(6, 40, 0.9, seed=9)
    opts = dict(tol=1e-12, max_iter=500)
    release_workspace()
    fresh, fresh_stats = solve(f2, torch.zeros(6, 40, dtype=F64), "anderson", args=(a2, b2),
                               **opts)
    solve(f, torch.zeros(6, 40, dtype=F64), "anderson", args=(a, b), **opts)  # dirties it
    storage = _WORKSPACE.storage
    assert storage is not None and not _WORKSPACE.busy
    again, again_stats = solve(f2, torch.zeros(6, 40, dtype=F64), "anderson", args=(a2, b2),
                               **opts)
    assert _WORKSPACE.storage.data_ptr() == storage.data_ptr()  # reused, not reallocated
    assert torch.equal(again, fresh) and torch.equal(again_stats.nfev, fresh_stats.nfev)
    torch.testing.assert_close(again, exact2, atol=1e-9, rtol=0)
    release_workspace()
    assert _WORKSPACE.storage is None


def test_anderson_nested_in_f_does_not_share_the_workspace():
    # f itself runs an Anderson solve (a DEQ inside a DEQ): the inner solve must not overwrite
    # the outer solve's history
    f_in, (a_in, b_in), _ = linear_problem(4, 12, 0.8, seed=10)
    f_out, (a_out, b_out), exact = linear_problem(4, 12, 0.9, seed=11)

    def outer(z, a, b):
        inner, _ = solve(f_in, torch.zeros(4, 12, dtype=F64), "anderson", args=(a_in, b_in),
                         tol=1e-12,
                         max_iter=300)
        return f_out(z, a, b) + 0.0 * inner.sum()

    z, stats = solve(outer, torch.zeros(4, 12, dtype=F64), "anderson", args=(a_out, b_out),
                     tol=1e-12, max_iter=300)
    ref, ref_stats = solve(f_out, torch.zeros(4, 12, dtype=F64), "anderson",
                           args=(a_out, b_out), tol=1e-12, max_iter=300)
    assert torch.equal(stats.nfev, ref_stats.nfev)
    torch.testing.assert_close(z, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(z, ref, atol=0, rtol=0)


@pytest.mark.parametrize("safeguard", [True, False])
def test_anderson_stall_fallback_rescues_samples_where_anderson_stagnates(safeguard):
    f, args = relu_norm_cells(256, 4, seed=2)
    z0 = torch.zeros(256, 4, dtype=F64)
    opts = dict(tol=1e-10, max_iter=300, args=args, safeguard=safeguard)
    _, fwd = solve(f, z0, "forward_iteration", tol=1e-10, max_iter=300, args=args)
    z_off, off = solve(f, z0, "anderson", stall_patience=None, **opts)
    z_on, on = solve(f, z0, "anderson", **opts)
    # without the fallback Anderson gets stuck far above tol where forward iteration converges
    stuck = fwd.converged & ~off.converged
    assert int(stuck.sum()) >= 1
    assert bool((off.lowest_residual[stuck] > 1e-3).all())
    assert int(off.stalled.sum()) == 0
    # with it, every sample that forward iteration solves is solved, in fewer evaluations
    assert bool(on.converged[fwd.converged].all()) and bool((on.stalled[stuck] > 0).all())
    assert float(on.nfev.double().mean()) < float(off.nfev.double().mean())
    summary = json.loads(json.dumps(on.summary()))
    assert summary["stall_fallbacks"] == int(on.stalled.sum()) > 0
    # samples that never stall are untouched
    calm = on.stalled == 0
    assert int(calm.sum()) > 200
    assert torch.equal(z_on[calm], z_off[calm]) and torch.equal(on.nfev[calm], off.nfev[calm])
    assert torch.equal(on.trace[calm].nan_to_num(), off.trace[calm, :on.iterations].nan_to_num())
    # per-sample state survives compaction: a stalling sample solved alone gives the same result
    i = int(stuck.nonzero()[0])
    zi, si = solve(f, z0[i:i + 1], "anderson", **{**opts, "args": (args[0][i:i + 1],
                                                                    args[1][i:i + 1])})
    assert int(si.nfev[0]) == int(on.nfev[i]) and int(si.stalled[0]) == int(on.stalled[i])
    torch.testing.assert_close(zi, z_on[i:i + 1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("check_every", [1, 3])
@pytest.mark.parametrize("m", [1, 5])
def test_anderson_stall_fallback_changes_nothing_without_stagnation(check_every, m):
    # staggered retirement, so the state (stall counters included) is compacted several times
    f, (a, b), _ = linear_problem(9, 24, 0.97, seed=5)
    a = a * torch.linspace(0.3, 1.0, 9, dtype=F64).view(9, 1, 1)
    z0 = torch.zeros(9, 24, dtype=F64)
    opts = dict(m=m, tol=1e-12, max_iter=1000, check_every=check_every, args=(a, b))
    z_on, on = solve(f, z0, "anderson", **opts)
    z_off, off = solve(f, z0, "anderson", stall_patience=None, **opts)
    assert bool(on.converged.all()) and len(set(on.nfev.tolist())) > 2
    assert int(on.stalled.sum()) == 0
    assert torch.equal(z_on, z_off) and torch.equal(on.nfev, off.nfev)
    assert torch.equal(on.trace.nan_to_num(), off.trace.nan_to_num())


def test_anderson_stall_patience_option_is_validated():
    f = lambda z: 0.5 * z + 1  # noqa: E731
    z0 = torch.ones(2, 3)
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ConfigError, match="stall_patience"):
            solve(f, z0, "anderson", stall_patience=bad)
    with pytest.raises(ConfigError, match="did you mean 'stall_patience'"):
        solve(f, z0, "anderson", stall_patiance=5)
    with pytest.raises(ConfigError, match="'stall_patience'"):
        solve(f, z0, "forward_iteration", stall_patience=5)
    for off in (None, 0, 3):
        _, stats = solve(f, z0, "anderson", stall_patience=off, tol=1e-6)
        assert bool(stats.converged.all()) and stats.stalled.tolist() == [0, 0]
        assert stats.summary()["stall_fallbacks"] == 0


def test_the_safe_step_after_a_safeguard_restart_is_never_rejected():
    # f(z) = −0.95 z + b: from z0 = 0 the first (Picard) step has 19× the residual of z0, so
    # the safeguard rejects it and restarts from z0. The Picard step after a restart is the safe
    # step: were it rejected too, the solver would restart into the same step forever (as
    # before session 20, when only the stall fallback broke the loop). Accepted, Anderson
    # extrapolates from it and solves the linear map at once.
    b = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, 1.0]], dtype=F64)

    def f(z, b):
        return -0.95 * z + b

    z0 = torch.zeros(2, 3, dtype=F64)
    opts = dict(tol=1e-10, max_iter=200, args=(b,))
    for solver, extra in (("anderson", {"stall_patience": None}), ("anderson", {}),
                          ("broyden", {})):
        z, st = solve(f, z0, solver, **opts, **extra)
        assert bool(st.converged.all()) and st.rejected.tolist() == [1, 1], (solver, extra)
        assert int(st.nfev.max()) <= 8 and int(st.stalled.sum()) == 0
        torch.testing.assert_close(z, b / 1.95, atol=1e-9, rtol=0)


def test_stall_watch_falls_back_resumes_and_gives_up_per_sample():
    from andersonn.solvers.base import _StallWatch

    watch = _StallWatch(torch.ones(2, dtype=F64), patience=3, min_steps=2)
    stalls, plain = [], []
    for k in range(1, 21):
        # row 0: flat, one fall to 0.5 at iteration 4, flat again; row 1: halves every time
        best = torch.tensor([1.0 if k < 4 else 0.5, 0.5 ** k], dtype=F64)
        stalls.append(watch.update(best).tolist())
        plain.append(watch.plain.tolist())
    # row 0 stalls after 3 flat iterations, resumes once the best fell and 2 plain steps were
    # taken (iteration 5, not 4), stalls again 3 iterations after its last fall (7), gives the
    # plain steps up after 3 × 3 of them without a fall (16) and never stalls again
    assert [k for k, s in enumerate(stalls, 1) if s[0]] == [3, 7]
    assert [k for k, p in enumerate(plain, 1) if p[0]] == [3, 4, *range(7, 16)]
    assert not any(s[1] or p[1] for s, p in zip(stalls, plain, strict=True))
    assert watch.stalls.tolist() == [2, 0] and watch.enabled.tolist() == [False, True]


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("fraction", [0.2, 0.8])
def test_merge_rows_equals_where_and_leaves_inputs_alone(in_place, fraction):
    from andersonn.solvers.base import merge_rows

    gen = torch.Generator().manual_seed(5)
    best, new = torch.randn(10, 7, generator=gen), torch.randn(10, 7, generator=gen)
    take = (torch.arange(10) < round(10 * fraction))[torch.randperm(10, generator=gen)]
    expected = torch.where(take[:, None], new, best)
    best_before, new_before = best.clone(), new.clone()
    out = merge_rows(best, new, take, in_place)
    assert torch.equal(out, expected)
    assert torch.equal(new, new_before)  # the iterate is never written
    if in_place:
        assert out is best
    else:  # a reference the method may hold is never written either
        assert torch.equal(best, best_before)
        assert out.data_ptr() not in (best.data_ptr(), new.data_ptr())


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_best_iterate_merge_matches_the_where_path(name, monkeypatch):
    # On a nonsmooth map residuals go up and down, so eager CPU solves merge improved rows into
    # the driver's own best buffers many times; the device path (torch.where, forced here with
    # the CPU emulation of CUDA graphs) must give bit-identical results.
    from andersonn.solvers import graphs
    from andersonn.solvers.anderson import _Anderson

    # graph solves use the LAPACK-free small solve: take it in both runs, to compare bit for bit
    monkeypatch.setattr(_Anderson, "capturable", True)
    f, args = relu_norm_cells(24, 32, seed=7)
    z0 = torch.zeros(24, 32, dtype=torch.float64)
    opts = {"tol": 1e-14, "max_iter": 60, "args": args}
    z, stats = solve(f, z0, name, **opts)
    assert bool((stats.trace.double().diff(dim=1) > 0).any())  # residuals rose: merges ran
    monkeypatch.setattr(graphs, "EMULATE_ON_CPU", True)
    z_where, stats_where = solve(f, z0, name, cuda_graph=True, **opts)
    assert stats_where.graph_blocks > 0
    assert torch.equal(z, z_where)
    assert torch.equal(stats.lowest_residual, stats_where.lowest_residual)


def test_stall_watch_synced_update_equals_the_full_update():
    # the CPU shortcut skips the transitions only where they would change nothing
    from andersonn.solvers.base import _StallWatch

    gen = torch.Generator().manual_seed(3)
    start = torch.ones(6, dtype=F64)
    full, synced = (_StallWatch(start, patience=3, min_steps=2) for _ in range(2))
    best = start.clone()
    skipped = 0
    for _ in range(60):
        # rows fall, stay flat or fall a little, at random: stalls, resumes and give-ups happen
        step = torch.rand(6, generator=gen, dtype=F64)
        best = torch.minimum(best, best * torch.where(step < 0.4, 0.5, 0.97))
        expected = full.update(best, 2)
        got = synced.update_synced(best, 2)
        if got is None:
            skipped += 1
            assert not bool(expected.any())
        else:
            assert torch.equal(got, expected)
        for name in ("anchor", "wait", "steps", "stalls", "plain", "enabled"):
            assert torch.equal(getattr(synced, name), getattr(full, name)), name
    assert 0 < skipped < 60 and int(full.stalls.sum()) > 0


def test_anderson_full_ring_shortcut_equals_the_general_path(monkeypatch):
    # eager CPU solves skip the masks of the small system while every slot is valid; the
    # weights must be the general path's bit for bit, with restarts and stalls in the batch
    from andersonn.solvers.anderson import _Anderson

    f, args = relu_norm_cells(64, 16, seed=4)  # a batch with stalls and safeguard rejections
    z0 = torch.zeros(64, 16, dtype=F64)
    opts = dict(tol=1e-12, max_iter=200, args=args)
    used = []
    shortcut = _Anderson._weights_all_valid

    def counted(self):
        alpha = shortcut(self)
        used.append(alpha is not None)
        return alpha

    monkeypatch.setattr(_Anderson, "_weights_all_valid", counted)
    z, stats = solve(f, z0, "anderson", **opts)
    assert sum(used) > 20 and int(stats.stalled.sum()) > 0 and int(stats.rejected.sum()) > 0
    monkeypatch.setattr(_Anderson, "_weights_all_valid", lambda self: None)
    z_general, general = solve(f, z0, "anderson", **opts)
    assert torch.equal(z, z_general) and torch.equal(stats.nfev, general.nfev)
    assert torch.equal(stats.trace.nan_to_num(), general.trace.nan_to_num())


@pytest.mark.parametrize("seed", range(4))
def test_anderson_in_place_compaction_equals_a_gather(seed):
    # kept rows move down in chunks no longer than their shift; every pattern of runs and gaps
    # must give what an index_select gives, for the slots in use
    from andersonn.solvers.anderson import _Anderson

    gen = torch.Generator().manual_seed(seed)
    b, m, n = 23, 5, 7
    method = _Anderson(m, 1e-4, 1.0)
    z = torch.randn(b, n, generator=gen, dtype=F64)
    method.init(z, z + 1.0)
    for _ in range(3):  # three slots in use: the unused ones must not matter
        method.accept(z, z, torch.randn(b, n, generator=gen, dtype=F64), None)
    method.F.copy_(torch.randn(b, m, n, generator=gen, dtype=F64))
    method.G.copy_(torch.randn(b, m, n, generator=gen, dtype=F64))
    keep = torch.rand(b, generator=gen) < (0.3, 0.6, 0.9, 0.97)[seed]
    keep[0] = seed % 2 == 0  # with and without a kept first row
    rows = keep.nonzero().squeeze(1)
    u = method.used
    expected_f, expected_g = (t[:, :u].index_select(0, rows) for t in (method.F, method.G))
    storage = method.F.untyped_storage().data_ptr()
    method.select(keep)
    assert method.F.shape[0] == int(keep.sum())
    assert method.F.untyped_storage().data_ptr() == storage  # no new buffer
    assert torch.equal(method.F[:, :u], expected_f) and torch.equal(method.G[:, :u], expected_g)
    method.close()


def test_anderson_cpu_shortcuts_give_the_accelerator_path_results(monkeypatch):
    # in-place compaction and the full-ring system (CPU) against the gather and the general
    # system (what accelerators run), bit for bit, through many compactions
    import importlib

    from andersonn.solvers.anderson import _Anderson

    anderson_module = importlib.import_module("andersonn.solvers.anderson")

    f, (a, b), _ = linear_problem(40, 24, 0.97, seed=5)
    a = a * torch.linspace(0.2, 1.0, 40, dtype=F64).view(40, 1, 1)  # staggered retirement
    opts = dict(tol=1e-12, max_iter=600, args=(a, b))
    z, stats = solve(f, torch.zeros(40, 24, dtype=F64), "anderson", **opts)
    assert len(set(stats.nfev.tolist())) > 10  # many compactions
    monkeypatch.setattr(anderson_module, "compact_rows_in_place",
                        lambda *a: pytest.fail("in-place compaction used"))

    def init(self, z, fz, _init=_Anderson.init):
        _init(self, z, fz)
        self.synced = False  # as on an accelerator

    monkeypatch.setattr(_Anderson, "init", init)
    z_gather, gathered = solve(f, torch.zeros(40, 24, dtype=F64), "anderson", **opts)
    assert torch.equal(z, z_gather) and torch.equal(stats.nfev, gathered.nfev)


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_in_place_compaction_equals_a_gathering_compaction(name, monkeypatch):
    import importlib

    module = importlib.import_module(f"andersonn.solvers.{name}")
    f, (a, b), _ = linear_problem(40, 24, 0.97, seed=6)
    a = a * torch.linspace(0.2, 1.0, 40, dtype=F64).view(40, 1, 1)  # staggered retirement
    opts = dict(tol=1e-12, max_iter=600, args=(a, b))
    calls = []
    in_place = module.compact_rows_in_place

    def counted(buffers, kept, slots):
        calls.append(len(kept))
        return in_place(buffers, kept, slots)

    monkeypatch.setattr(module, "compact_rows_in_place", counted)
    z, stats = solve(f, torch.zeros(40, 24, dtype=F64), name, **opts)
    assert len(calls) >= 5

    def gather(buffers, kept, slots):
        rows = torch.tensor(kept, dtype=torch.long)
        return [buf.index_select(0, rows) for buf in buffers]

    monkeypatch.setattr(module, "compact_rows_in_place", gather)
    z_gather, gathered = solve(f, torch.zeros(40, 24, dtype=F64), name, **opts)
    assert torch.equal(z, z_gather) and torch.equal(stats.nfev, gathered.nfev)


def test_a_solve_under_inference_mode_does_not_break_the_next_one():
    # the CPU workspace allocated under inference mode could not be written outside it
    f, args, exact = linear_problem(4, 20, 0.8)
    with torch.inference_mode():
        solve(f, torch.zeros(4, 20, dtype=F64), "anderson", tol=1e-10, args=args)
    z, stats = solve(f, torch.zeros(4, 20, dtype=F64), "anderson", tol=1e-12, max_iter=200,
                     args=args)
    assert bool(stats.converged.all())
    torch.testing.assert_close(z, exact, atol=1e-8, rtol=0)


def test_a_long_window_is_not_swamped_by_its_regularisation():
    # λ relative to the mean ‖g‖² of a long window grew with its oldest residuals: m = 20 took
    # 48 evaluations and m = 100 did not converge, where λ = 0 takes 19
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 50, generator=gen, dtype=F64)
    a *= 0.95 / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(2, 50, generator=gen, dtype=F64)

    def f(z, b):
        return torch.tanh(z @ a.T + b)

    for m in (20, 100):
        _, plain = solve(f, torch.zeros_like(b), "anderson", m=m, lam=0.0, tol=1e-10,
                         max_iter=150, args=(b,))
        _, reg = solve(f, torch.zeros_like(b), "anderson", m=m, tol=1e-10, max_iter=150,
                       args=(b,))
        assert bool(reg.converged.all())
        assert int(reg.nfev.max()) <= int(plain.nfev.max()) + 2


@pytest.mark.parametrize("name", ALL)
def test_an_empty_batch_and_an_integer_start(name):
    z, stats = solve(lambda z: 0.5 * z + 1, torch.zeros(0, 5), name)
    assert z.shape == (0, 5) and stats.batch_size == 0 and stats.summary()["nfev_total"] == 0
    from andersonn.errors import InputError

    with pytest.raises(InputError, match="floating-point"):  # iterates would be truncated
        solve(lambda z: 0.5 * z + 1.5, torch.zeros(2, 3, dtype=torch.long), name)


@pytest.mark.parametrize("name, options", [
    ("anderson", {"beta": 0.0}), ("anderson", {"m": 2.5}), ("anderson", {"eps": -1.0}),
    ("anderson", {"safeguard_factor": 0.0}), ("anderson", {"max_iter": 2.7}),
    ("anderson", {"lam": float("nan")}), ("forward_iteration", {"damping": 1.0}),
    ("forward_iteration", {"damping": -0.1}), ("broyden", {"m": True}),
    ("broyden", {"tol": "1e-3"}),
])
def test_option_values_that_cannot_work_are_refused(name, options):
    f, args, _ = linear_problem(2, 6, 0.5)
    with pytest.raises(ConfigError, match=next(iter(options))):
        solve(f, torch.zeros(2, 6, dtype=F64), name, args=args, **options)
