"""What the solvers accept: per-sample ``args`` named by ``row_args`` (a shared tensor with B
rows needs it), and the refusal of a non-bool ``safeguard``, ``args`` that are not a tuple or
list, bad ``row_args`` and an ``f`` returning integers."""

from __future__ import annotations

import sys

import pytest
import torch

from andersonn.errors import ConfigError, InputError, SolverDivergence
from andersonn.solvers import SOLVERS, solve

F64 = torch.float64
ALL = sorted(SOLVERS)


# --- per-sample args --------------------------------------------------------------------------

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


# --- option and input validation ------------------------------------------------------------

@pytest.mark.parametrize("name", ["anderson", "broyden"])
@pytest.mark.parametrize("value", ["False", 0, None, 1.0])
def test_safeguard_must_be_a_bool(name, value):
    with pytest.raises(ConfigError, match=r"safeguard=.*True or False"):
        solve(lambda z: 0.5 * z, torch.zeros(2, 3), name, safeguard=value)


@pytest.mark.parametrize("args", [5, torch.zeros(2, 3), "x"])
def test_args_must_be_a_tuple_or_list(args):
    with pytest.raises(ConfigError, match="option args must be a tuple or list"):
        solve(lambda z, *a: z, torch.zeros(2, 3), "anderson", args=args)


def test_f_returning_integers_is_refused():
    with pytest.raises(InputError,
                       match=r"f must return real floating-point values, got torch\.int32"):
        solve(lambda z: (0.5 * z).int(), torch.full((2, 3), 4.0), "anderson")


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_complex_values_are_refused_not_truncated(name):
    # the history is real: a complex z0 or f(z) would lose its imaginary part and "converge"
    with pytest.raises(InputError, match=r"z0 must be a real tensor, got torch\.complex128"):
        solve(lambda z: 0.5 * z + 1j, torch.zeros(2, 3, dtype=torch.complex128), name)
    with pytest.raises(InputError, match=r"f must return real floating-point values, got "
                                         r"torch\.complex64"):
        solve(lambda z: (0.5 * z).to(torch.complex64), torch.ones(2, 3), name)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_eps_must_be_positive(name):
    # eps = 0 made the exact fixed point z = f(z) = 0 a 0/0: "NaN divergence"
    with pytest.raises(ConfigError, match=r"option eps=0\.0 must be a number above 0"):
        solve(lambda z: 0.5 * z, torch.zeros(3, 4, dtype=torch.float64), name, eps=0.0)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_a_warm_start_at_the_fixed_point_costs_one_evaluation_whatever_check_every(name):
    z_star = torch.full((2, 3), 0.7390851332151607, dtype=torch.float64)  # cos(z) = z
    for every in (1, 3, 5):
        z, stats = solve(torch.cos, z_star, name, tol=1e-8, check_every=every)
        assert stats.nfev.tolist() == [1, 1] and bool(stats.converged.all())
        torch.testing.assert_close(z, torch.cos(z_star), rtol=0, atol=0)


def test_divergence_advice_fits_the_solver_and_the_moment():
    def nan_at_z0(z):
        return z * float("nan")

    for name in sorted(SOLVERS):
        with pytest.raises(SolverDivergence, match=r"at z0: f\(z0\) is not finite; check the "
                                                   r"cell and its input") as caught:
            solve(nan_at_z0, torch.ones(2, 3), name)
        assert "beta" not in str(caught.value) and "damping" not in str(caught.value)

    def blows_up(z):  # finite at z0, then NaN
        return torch.where(z.abs() > 0, z * float("nan"), z + 1)

    advice = {"anderson": "lower the mixing beta, check", "broyden": "; check the cell",
              "forward_iteration": "add damping, check"}
    for name, words in advice.items():
        unguarded = {} if name == "forward_iteration" else {"safeguard": False}
        with pytest.raises(SolverDivergence, match=r"by iteration \d+") as caught:
            solve(blows_up, torch.zeros(2, 3), name, **unguarded)
        assert words in str(caught.value), str(caught.value)


def test_a_window_beyond_max_iter_allocates_only_what_a_solve_can_fill():
    # m = 10**9 once allocated (B, m, n) buffers: 48 GB here
    b = torch.linspace(-1, 1, 24, dtype=torch.float64).view(4, 6)

    def f(z):
        return torch.tanh(0.9 * z.roll(1, dims=1) + b)

    z_huge, huge = solve(f, torch.zeros(4, 6, dtype=torch.float64), "anderson", m=10**9,
                         max_iter=40, tol=1e-12)
    z_cap, cap = solve(f, torch.zeros(4, 6, dtype=torch.float64), "anderson", m=40,
                       max_iter=40, tol=1e-12)
    assert torch.equal(z_huge, z_cap) and torch.equal(huge.nfev, cap.nfev)
