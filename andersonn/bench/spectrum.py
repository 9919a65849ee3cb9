"""Jacobian spectra and Krylov limits of Anderson acceleration (``andersonn bench spectrum``).

Near a fixed point z* the map is f(z*) + J (z − z*), J = ∂f/∂z at z*, so every fixed-point
solver is, asymptotically, a method for the linear problem (I − J) e = 0. Forward iteration
contracts the error by ρ(J) per f evaluation. Anderson with a full window is GMRES on I − J
(Walker & Ni 2011), and a finite window m can only be slower; GMRES's k-th residual is
min ‖p(J) r0‖ over polynomials of degree k with p(1) = 1. If the spectrum fills a disk of centre
c (real) and radius r with 1 outside it, the best asymptotic rate of any such polynomial is
q = r / |1 − c| (attained by p(λ) = ((λ − c)/(1 − c))^k). At a relative tolerance tol forward
iteration needs ≈ log tol / log ρ evaluations and the best Krylov method ≈ log tol / log q, so

    forward / Anderson f evaluations ≲ log q / log ρ          (asymptotically, spectrum = disk)

For a disk centred at 0 (q = ρ) no polynomial method beats forward iteration; the ≥ 10× gains
reported for Anderson come from spectra with a few slow modes (which a Krylov method removes in
about one evaluation each) or a real spectrum (whose Chebyshev rate (√κ − 1)/(√κ + 1),
κ = (1 − λ_min)/(1 − λ_max), is far below ρ).

Sections of the benchmark:

1. **Jacobian spectrum of the paper cell** (the ``init`` and ``weak`` cells of ``andersonn bench
   solvers``, same construction: :class:`~andersonn.bench.cells.ConvDEQCell`,
   :func:`~andersonn.bench.cells.make_weakly_contractive` on its first 16 samples and
   :func:`~andersonn.bench.cells.settle_scale` on all 128, same seed and inputs). For the
   first few samples z* is found with Anderson (float32, rel. tol 1e-5) and polished in float64
   (rel. tol 1e-9, as tight as reachable); then ``steps`` Arnoldi steps on
   v ↦ J v with exact Jacobian–vector products (``torch.func.jvp``) give a Hessenberg matrix H
   whose eigenvalues (Ritz values) approximate the outer spectrum of J. The Arnoldi basis, the
   orthogonalisation (modified Gram–Schmidt, applied twice) and H are float64; the JVPs are
   evaluated in float32 (a float64 JVP of the full cell costs ≈ 0.5 s against ≈ 0.03 s in float32
   on one core, and their ~1e-7 relative error is far below what the disk fit resolves).
   **Disk rule:** J has exact zero eigenvalues (GroupNorm's output does not change when a
   group's input is shifted or scaled, so J is rank-deficient); they show up as Ritz values
   |λ| < 1e-5 and are removed by a single evaluation (a Krylov polynomial takes the factor λ at
   no cost), so Ritz values with |λ| < 0.05 ρ̂ (ρ̂ = largest |Ritz value|) are left out. Among
   the disks centred on the real axis that contain all other Ritz values, the rule takes the
   one with the smallest q = r/|1 − c| (never above ρ̂, since c = 0, r = ρ̂ is a candidate);
   the implied ratio log q / log ρ̂ estimates the largest asymptotic forward/Anderson
   f-evaluation ratio, reached only if the spectrum fills that disk. The inner Ritz values stay
   in: they lie in the field of values, which contains the spectrum, and the polynomial must be
   small on all of it. For k ≪ n, Arnoldi's Ritz values of a spectrum filling a disk line up
   on (close to) its boundary circle; section 3 checks the fit on maps whose eigenvalues are
   known. Also reported: the smallest such disk ("smallest"; its q can exceed ρ̂) and the rule
   with the zero Ritz values kept ("with zeros"). Power iteration's ρ
   (:func:`~andersonn.bench.cells.contraction_rates`) is a cross-check of ρ̂.
2. **Window sweep** on the weak cell (the issue's target) and the init cell: forward iteration
   and Anderson with m ∈ {5, 10, 20} at rel. tol 1e-4 on a batch of 16 (max_iter 500 forward,
   200 Anderson; an unconverged sample counts max_iter).
3. **Linear control maps** z = W z + b in float64 (n = 2000, batch 4, fixed seed, z0 = 0): a
   Gaussian W scaled to spectral radius ρ (circular law: a filled disk), a symmetric W with
   eigenvalues evenly spaced in [−ρ, ρ], a symmetric W with a bulk in [0, 0.6] plus five slow
   modes, and the slow-mode map with ρ = 0.99. Forward vs Anderson m = 5 and m = 20 at rel. tol
   1e-4, with the disk-rule prediction from the exact eigenvalues and from the Ritz values of
   the same Arnoldi run as in section 1 (from the first right-hand side b) and, for real
   spectra, the Chebyshev (interval) prediction.

Writes ``spectrum.json``, ``spectrum.md`` (the printed tables), ``ritz_values.png`` and
``linear_spectra.png`` into the results folder (default ``results/spectrum``), atomically.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from andersonn.bench.cells import (
    ConvDEQCell,
    contraction_rates,
    make_weakly_contractive,
    quiet_jvp,
    settle_scale,
)
from andersonn.bench.report import (
    check_threads,
    machine_info,
    markdown_table,
    new_figure,
    results_dir,
    save_figure,
    write_results,
)
from andersonn.bench.solvers import FULL as SOLVERS_FULL
from andersonn.bench.solvers import PROBE
from andersonn.bench.solvers import QUICK as SOLVERS_QUICK
from andersonn.solvers import get_solver

TOL = 1e-4
# Ritz values below this fraction of ρ̂ are J's exact zero eigenvalues (module docstring)
ZERO_FRACTION = 0.05
WINDOWS = (5, 10, 20)

FULL: dict[str, Any] = {
    "cell": dict(SOLVERS_FULL), "ritz_samples": 4, "arnoldi_steps": 80, "sweep_batch": 16,
    "bisection_steps": 6, "hi_scale": 4.0, "sweep_max_iter": {"forward": 500, "anderson": 200},
    "linear_n": 2000, "linear_batch": 4,
    "linear_max_iter": {"forward": 4000, "anderson": 1000},
}
QUICK: dict[str, Any] = {
    "cell": dict(SOLVERS_QUICK), "ritz_samples": 2, "arnoldi_steps": 24, "sweep_batch": 8,
    "bisection_steps": 5, "hi_scale": 8.0, "sweep_max_iter": {"forward": 300, "anderson": 150},
    "linear_n": 150, "linear_batch": 2,
    "linear_max_iter": {"forward": 2000, "anderson": 600},
}

# (name, kind, spectral radius, slow modes) of the linear control maps
LINEAR_MAPS: tuple[tuple[str, str, float, tuple[float, ...]], ...] = (
    ("disk", "gaussian", 0.98, ()),
    ("symmetric", "interval", 0.98, ()),
    ("bulk+5 slow", "slow", 0.98, (0.98, 0.97, 0.96, 0.95, 0.9)),
    ("bulk+5 slow, rho 0.99", "slow", 0.99, (0.99, 0.98, 0.97, 0.96, 0.9)),
)
BULK = (0.0, 0.6)


# --------------------------------------------------------------------------- Arnoldi, disk fit

def arnoldi(matvec: Callable[[Tensor], Tensor], v0: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Batched Arnoldi: ``steps`` steps on v ↦ ``matvec(v)`` from ``v0`` (B, n).

    Orthogonalisation is modified Gram–Schmidt run twice (the second pass removes what rounding
    left of the earlier directions), per sample, in ``v0``'s dtype. Returns (Q, H): Q (B, k+1, n)
    orthonormal rows, H (B, k+1, k) upper Hessenberg with matvec(Q[:, :k]) = H-combination of Q.
    On breakdown (an invariant subspace, h_{j+1,j} ≈ 0) the sample continues from a random
    vector orthogonal to its basis with h_{j+1,j} = 0, so eig(H[:k, :k]) stays a subset of the
    spectrum.
    """
    b, n = v0.shape
    k = int(steps)
    dt = v0.dtype
    Q = torch.zeros(b, k + 1, n, dtype=dt, device=v0.device)
    H = torch.zeros(b, k + 1, k, dtype=dt, device=v0.device)
    Q[:, 0] = v0 / v0.norm(dim=1, keepdim=True)
    gen = torch.Generator(device=v0.device).manual_seed(12345)
    for j in range(k):
        w = matvec(Q[:, j]).to(dt)
        scale = w.norm(dim=1)
        for _ in range(2):
            for i in range(j + 1):
                h = (Q[:, i] * w).sum(1)
                H[:, i, j] += h
                w = w - h[:, None] * Q[:, i]
        h_next = w.norm(dim=1)
        broke = h_next <= 1e-12 * scale.clamp_min(1e-300)
        if bool(broke.any()):
            rnd = torch.randn(b, n, dtype=dt, device=v0.device, generator=gen)
            for _ in range(2):
                for i in range(j + 1):
                    rnd = rnd - (Q[:, i] * rnd).sum(1, keepdim=True) * Q[:, i]
            w = torch.where(broke[:, None], rnd, w)
            h_next = torch.where(broke, torch.zeros_like(h_next), h_next)
        H[:, j + 1, j] = h_next
        Q[:, j + 1] = w / w.norm(dim=1, keepdim=True)
    return Q, H


def ritz_values(H: Tensor) -> Tensor:
    """Eigenvalues of the square part H[..., :k, :k] of an Arnoldi Hessenberg matrix (complex)."""
    k = H.shape[-1]
    return torch.linalg.eigvals(H[..., :k, :k])


def best_disk(points: Tensor, fraction: float = ZERO_FRACTION, objective: str = "rate"
              ) -> dict[str, Any]:
    """A disk centred on the real axis (centre c < 1, radius r) containing the points.

    Only points with |λ| ≥ ``fraction`` · max|λ| are used. ``objective="rate"`` (this
    benchmark's rule): the disk minimising the Krylov rate q = r / (1 − c), i.e. the best rate
    bound any such disk gives (never above ρ, since c = 0, r = ρ is a candidate);
    ``"radius"``: the smallest such disk (its q can exceed ρ). Both objectives are quasi-convex
    in c, so a grid search refined by golden-section search finds the minimum. Returns c, r,
    q = r/(1 − c), ρ = max|λ| and the number of points used.
    """
    if objective not in ("radius", "rate"):
        raise ValueError(f"objective must be 'radius' or 'rate', got {objective!r}")
    pts = points.to(torch.complex128).flatten()
    rho = float(pts.abs().max())
    used = pts[pts.abs() >= fraction * rho]

    def value(c: Tensor) -> Tensor:
        dist = (used[None, :] - c[:, None].to(torch.complex128)).abs().max(1).values
        return dist / (1.0 - c) if objective == "rate" else dist

    grid = torch.linspace(-1.0, 1.0, 2002, dtype=torch.float64)[:-1]
    i = int(value(grid).argmin())
    a, d = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.numel() - 1)])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        b_, c_ = d - g * (d - a), a + g * (d - a)
        vb, vc = value(torch.tensor([b_, c_], dtype=torch.float64))
        if vb <= vc:
            d = c_
        else:
            a = b_
    c = 0.5 * (a + d)
    r = float((used - c).abs().max())
    return {"center": c, "radius": r, "rate": r / (1.0 - c), "rho": rho, "fraction": fraction,
            "objective": objective, "points_used": int(used.numel())}


def predicted_ratio(rho: float, rate: float) -> float:
    """Forward / Krylov f evaluations at a small tolerance: log rate / log ρ (asymptotic)."""
    if not 0.0 < rho < 1.0:
        return float("nan")
    if rate <= 0.0:
        return float("inf")
    return math.log(rate) / math.log(rho)


def interval_rate(lo: float, hi: float) -> float:
    """Chebyshev rate (√κ − 1)/(√κ + 1) for a real spectrum in [lo, hi], hi < 1."""
    kappa = (1.0 - lo) / (1.0 - hi)
    s = math.sqrt(kappa)
    return (s - 1.0) / (s + 1.0)


# --------------------------------------------------------------------------- section 1

def _rel_residual(cell: nn.Module, z: Tensor, x: Tensor) -> Tensor:
    fz = cell(z, x)
    return (fz - z).flatten(1).norm(dim=1) / (fz.flatten(1).norm(dim=1) + 1e-30)


def jacobian_spectrum(cell: nn.Module, x: Tensor, steps: int) -> dict[str, Any]:
    """Ritz values of ∂f/∂z at z* for each sample of ``x`` (see module docstring)."""
    with quiet_jvp():
        return _jacobian_spectrum(cell, x, steps)


def _jacobian_spectrum(cell: nn.Module, x: Tensor, steps: int) -> dict[str, Any]:
    from torch.func import jvp

    anderson = get_solver("anderson")
    with torch.no_grad():
        z32, st32 = anderson(cell, torch.zeros_like(x), tol=1e-5, max_iter=300, args=(x,),
                             on_divergence="mark")
        cell64 = copy.deepcopy(cell).double()
        x64 = x.double()
        z64, st64 = anderson(cell64, z32.double(), tol=1e-9, max_iter=150, args=(x64,),
                             on_divergence="mark")
        res64 = _rel_residual(cell64, z64, x64)
        zs = z64.to(x.dtype)
        res32 = _rel_residual(cell, zs, x)
    shape = x.shape

    def matvec(v: Tensor) -> Tensor:
        with torch.no_grad():
            _, jv = jvp(lambda q: cell(q, x), (zs,), (v.to(x.dtype).view(shape),))
        return jv.flatten(1).double()

    gen = torch.Generator().manual_seed(7)
    v0 = torch.randn(shape[0], x[0].numel(), generator=gen, dtype=torch.float64)
    t = time.perf_counter()
    _, H = arnoldi(matvec, v0, steps)
    arnoldi_s = time.perf_counter() - t
    ritz = ritz_values(H)
    power, _ = contraction_rates(cell, x)
    samples = []
    for i in range(shape[0]):
        lam = ritz[i]
        disk = best_disk(lam)
        smallest = best_disk(lam, objective="radius")
        with_zeros = best_disk(lam, fraction=0.0)
        zero = lam.abs() < ZERO_FRACTION * lam.abs().max()
        samples.append({
            "ritz_real": [float(v) for v in lam.real],
            "ritz_imag": [float(v) for v in lam.imag],
            "rho_ritz": disk["rho"],
            "rho_power": float(power[i]),
            "disk": disk,
            "predicted_ratio": predicted_ratio(disk["rho"], disk["rate"]),
            "disk_smallest": smallest,
            "predicted_ratio_smallest": predicted_ratio(smallest["rho"], smallest["rate"]),
            "disk_with_zeros": with_zeros,
            "predicted_ratio_with_zeros": predicted_ratio(with_zeros["rho"], with_zeros["rate"]),
            "zero_ritz": int(zero.sum()),
            "zero_ritz_max_abs": float(lam.abs()[zero].max()) if bool(zero.any()) else None,
            "rel_residual_float32_solve": float(st32.lowest_residual[i]),
            "rel_residual_zstar_float64": float(res64[i]),
            "rel_residual_zstar_float32": float(res32[i]),
            "ritz_real_fraction": float((lam.imag.abs() < 1e-8).double().mean()),
        })
    union = torch.cat([ritz[i] for i in range(shape[0])])
    disk_union = best_disk(union)
    return {"steps": int(steps), "samples": samples, "arnoldi_seconds": arnoldi_s,
            "union_disk": disk_union,
            "union_predicted_ratio": predicted_ratio(disk_union["rho"], disk_union["rate"]),
            "float64_polish_nfev_mean": float(st64.nfev.double().mean())}


# --------------------------------------------------------------------------- sections 2 and 3

def _count(stats: Any) -> dict[str, Any]:
    n = stats.nfev.double()
    return {"nfev_mean": float(n.mean()), "nfev_median": float(n.median()),
            "nfev_max": float(n.max()),
            "converged_fraction": float(stats.converged.double().mean())}


def window_sweep(cell: nn.Module, x: Tensor, windows: Sequence[int], tol: float,
                 max_iter: dict[str, int]) -> list[dict[str, Any]]:
    """Forward iteration and Anderson with each window m on the batch ``x`` at ``tol``."""
    rows = []
    with torch.no_grad():
        _, st = get_solver("forward")(cell, torch.zeros_like(x), tol=tol,
                                      max_iter=max_iter["forward"], args=(x,),
                                      on_divergence="mark")
        fwd = {"solver": "forward", "m": None, "max_iter": max_iter["forward"], **_count(st)}
        rows.append(fwd)
        for m in windows:
            _, st = get_solver("anderson")(cell, torch.zeros_like(x), tol=tol, m=int(m),
                                           max_iter=max_iter["anderson"], args=(x,),
                                           on_divergence="mark")
            row = {"solver": "anderson", "m": int(m), "max_iter": max_iter["anderson"],
                   **_count(st)}
            row["ratio_forward_over"] = fwd["nfev_mean"] / row["nfev_mean"]
            rows.append(row)
    return rows


def linear_map(kind: str, n: int, rho: float, slow: Sequence[float], gen: torch.Generator
               ) -> tuple[Tensor, Tensor]:
    """(W, eigenvalues) of one control map, float64; see :data:`LINEAR_MAPS`."""
    if kind == "gaussian":
        G = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        eig = torch.linalg.eigvals(G)
        scale = rho / float(eig.abs().max())
        return G * scale, eig * scale
    if kind == "interval":
        lam = torch.linspace(-rho, rho, n, dtype=torch.float64)
    elif kind == "slow":
        lam = torch.cat([torch.linspace(BULK[0], BULK[1], n - len(slow), dtype=torch.float64),
                         torch.tensor(slow, dtype=torch.float64)])
    else:
        raise ValueError(f"unknown linear map kind {kind!r}")
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (Q * lam) @ Q.T, lam.to(torch.complex128)


def linear_section(n: int, batch: int, seed: int, tol: float, windows: Sequence[int],
                   max_iter: dict[str, int], steps: int) -> list[dict[str, Any]]:
    """Forward vs Anderson on the linear control maps, with the predicted ratios."""
    rows = []
    for name, kind, rho, slow in LINEAR_MAPS:
        gen = torch.Generator().manual_seed(seed)
        W, eig = linear_map(kind, n, rho, slow, gen)
        b = torch.randn(batch, n, generator=gen, dtype=torch.float64)
        Wt = W.T.contiguous()

        def f(z: Tensor, bb: Tensor, Wt: Tensor = Wt) -> Tensor:
            return torch.addmm(bb, z, Wt)

        z0 = torch.zeros_like(b)
        row: dict[str, Any] = {"name": name, "kind": kind, "n": n, "batch": batch, "rho": rho,
                               "slow_modes": list(slow)}
        _, st = get_solver("forward")(f, z0, tol=tol, max_iter=max_iter["forward"], args=(b,))
        row["forward"] = _count(st)
        for m in windows:
            _, st = get_solver("anderson")(f, z0, tol=tol, m=int(m), args=(b,),
                                           max_iter=max_iter["anderson"])
            row[f"anderson_m{m}"] = _count(st)
            row[f"ratio_m{m}"] = row["forward"]["nfev_mean"] / row[f"anderson_m{m}"]["nfev_mean"]
        disk = best_disk(eig)
        row["disk"] = disk
        row["predicted_ratio_disk"] = predicted_ratio(rho, disk["rate"])
        # the same Arnoldi + disk fit as for the conv cell, on a spectrum known exactly
        _, H = arnoldi(lambda v, Wt=Wt: v @ Wt, b[:1].clone(), steps)
        ritz = ritz_values(H)[0]
        rdisk = best_disk(ritz)
        row["ritz_disk"] = rdisk
        row["predicted_ratio_ritz_disk"] = predicted_ratio(rdisk["rho"], rdisk["rate"])
        row["ritz_real"] = [float(v) for v in ritz.real]
        row["ritz_imag"] = [float(v) for v in ritz.imag]
        row["predicted_ratio_circular_law"] = 1.0 if kind == "gaussian" else None
        if kind != "gaussian":
            lo, hi = float(eig.real.min()), float(eig.real.max())
            row["interval"] = [lo, hi]
            row["predicted_ratio_interval"] = predicted_ratio(rho, interval_rate(lo, hi))
        else:
            row["predicted_ratio_interval"] = None
        row["eig_sample_real"] = [round(float(v), 5) for v in eig.real[:: max(1, n // 500)]]
        row["eig_sample_imag"] = [round(float(v), 5) for v in eig.imag[:: max(1, n // 500)]]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- driver

def _make_cells(dims: dict[str, int], seed: int, probe_n: int, steps: int, hi_scale: float
                ) -> tuple[nn.Module, nn.Module, Tensor, dict[str, Any]]:
    """The init and weak cells and inputs exactly as ``bench solvers`` builds them."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = ConvDEQCell(dims["channels"], dims["hidden"], dims["groups"])
    x = torch.randn((dims["batch"], dims["channels"], dims["size"], dims["size"]), generator=gen)
    probe = x[: min(probe_n, dims["batch"])]
    weak = copy.deepcopy(cell)
    construction = make_weakly_contractive(weak, probe, 0.98, 0.99, steps=steps,
                                           hi_scale=hi_scale)
    rates, located, factor = settle_scale(weak, x, 0.99)
    construction["scale"] *= factor
    construction["settle_factor"] = factor
    construction["batch_rho_max"] = float(rates.max())
    construction["batch_rho_median"] = float(rates.median())
    construction["batch_located_fraction"] = float(located.double().mean())
    for p in (*cell.parameters(), *weak.parameters()):
        p.requires_grad_(False)
    return cell, weak, x, construction


def run_benchmark(*, quick: bool = False, seed: int = 0, threads: int | None = 1,
                  progress: bool = True, out: str | Path | None = None) -> dict[str, Any]:
    """Run all three sections; write JSON, markdown and plots into ``out`` (or
    ``results/spectrum``); return the JSON-ready result."""
    threads = check_threads(threads)
    out_dir = results_dir("spectrum", None, out)  # before the work: a bad path fails at once
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        result = _run(quick=quick, seed=seed, progress=progress)
    finally:
        torch.set_num_threads(old_threads)
    result["out_dir"] = str(out_dir)
    write_results(out_dir, "spectrum", result, spectrum_markdown(result))
    plot_ritz(result, out_dir / "ritz_values.png")
    plot_linear(result, out_dir / "linear_spectra.png")
    return result


def _log(progress: bool, began: float, text: str) -> None:
    if progress:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", flush=True)


def _run(*, quick: bool, seed: int, progress: bool) -> dict[str, Any]:
    s = QUICK if quick else FULL
    dims = s["cell"]
    began = time.perf_counter()
    timings: dict[str, float] = {}
    _log(progress, began, "building the weak cell (bisection on conv2's scale)")
    cell, weak, x, construction = _make_cells(dims, seed, PROBE, s["bisection_steps"],
                                              s["hi_scale"])
    timings["cells"] = time.perf_counter() - began
    spectra = {}
    xr = x[: s["ritz_samples"]]
    for name, c in (("init", cell), ("weak", weak)):
        t = time.perf_counter()
        _log(progress, began, f"Arnoldi ({s['arnoldi_steps']} steps) on the {name} cell")
        spectra[name] = jacobian_spectrum(c, xr, s["arnoldi_steps"])
        timings[f"ritz_{name}"] = time.perf_counter() - t
    t = time.perf_counter()
    _log(progress, began, "window sweep on the weak and init cells")
    sweep = []
    for name, c in (("weak", weak), ("init", cell)):
        rows = window_sweep(c, x[: s["sweep_batch"]], WINDOWS, TOL, s["sweep_max_iter"])
        sweep += [{"cell": name, **r} for r in rows]
    timings["sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    _log(progress, began, "linear control maps")
    linear = linear_section(s["linear_n"], s["linear_batch"], seed, TOL, (5, 20),
                            s["linear_max_iter"], s["arnoldi_steps"])
    timings["linear"] = time.perf_counter() - t
    return {
        "benchmark": "spectrum",
        "quick": quick,
        "seed": seed,
        "machine": machine_info("cpu"),
        "settings": {k: v for k, v in s.items()},
        "tol": TOL,
        "disk_rule": (f"among disks centred on the real axis containing all Ritz values with "
                      f"|lambda| >= {ZERO_FRACTION} rho (smaller ones are J's exact zero "
                      "eigenvalues), the one minimising q = r/|1-c|; predicted forward/Anderson "
                      "ratio = log q / log rho; also: the smallest such disk ('smallest') and "
                      "the rule with the zero Ritz values kept ('with zeros')"),
        "weak_construction": {**{k: v for k, v in construction.items() if k != "probe"},
                              "probe_rho": {k: v for k, v in construction["probe"].items()
                                            if k != "values"}},
        "jacobian": spectra,
        "window_sweep": sweep,
        "linear": linear,
        "timings": timings,
        "total_seconds": time.perf_counter() - began,
    }


# --------------------------------------------------------------------------- report

def _med(values: Sequence[float]) -> float:
    return float(torch.tensor(list(values), dtype=torch.float64).median())


def spectrum_markdown(result: dict[str, Any]) -> str:
    """The three tables of a :func:`run_benchmark` result as markdown."""
    d = result["settings"]["cell"]
    parts = [f"# Spectrum benchmark{' (quick)' if result['quick'] else ''}\n",
             f"Conv cell: {d['channels']} channels, hidden {d['hidden']}, {d['size']}x{d['size']}; "
             f"weak cell conv2 x {result['weak_construction']['scale']:.4g}. "
             f"Disk rule: {result['disk_rule']}.\n",
             "## 1. Jacobian spectrum at z* (Arnoldi Ritz values)\n"]
    rows = []
    for name, sp in result["jacobian"].items():
        for i, smp in enumerate(sp["samples"]):
            dk = smp["disk"]
            rows.append([name, str(i), smp["rho_ritz"], smp["rho_power"], dk["center"],
                         dk["radius"], dk["rate"], smp["predicted_ratio"],
                         smp["predicted_ratio_smallest"], smp["predicted_ratio_with_zeros"],
                         str(smp["zero_ritz"]), smp["rel_residual_zstar_float64"]])
        u = sp["union_disk"]
        rows.append([name, "all", u["rho"], _med([q["rho_power"] for q in sp["samples"]]),
                     u["center"], u["radius"], u["rate"], sp["union_predicted_ratio"],
                     None, None, None, None])
    parts.append(markdown_table(
        ["cell", "sample", "ρ (Ritz)", "ρ (power it.)", "disk c", "disk r", "q = r/|1−c|",
         "pred. ratio log q/log ρ", "pred. (smallest disk)", "pred. (with zeros)",
         "zero Ritz values", "z* rel. residual"],
        rows))
    parts.append(f"\n{result['jacobian']['weak']['steps']} Arnoldi steps per sample; "
                 "'all' = disk fitted to the Ritz values of all samples together.\n")
    parts.append(f"\n## 2. Window sweep, rel. tol {result['tol']:g}\n")
    rows = [[r["cell"], r["solver"] + (f" m={r['m']}" if r["m"] else ""), r["nfev_mean"],
             r["nfev_median"], r["nfev_max"], r["converged_fraction"],
             r.get("ratio_forward_over")]
            for r in result["window_sweep"]]
    parts.append(markdown_table(["cell", "solver", "mean f evals", "median", "max", "converged",
                                 "forward / this (mean)"], rows))
    parts.append(f"\nbatch {result['settings']['sweep_batch']} (the first samples); max_iter "
                 f"{result['settings']['sweep_max_iter']['forward']} forward, "
                 f"{result['settings']['sweep_max_iter']['anderson']} Anderson.\n")
    parts.append(f"\n## 3. Linear control maps z = Wz + b, rel. tol {result['tol']:g}\n")
    rows = []
    for r in result["linear"]:
        rows.append([r["name"], r["rho"], r["forward"]["nfev_mean"],
                     r["anderson_m5"]["nfev_mean"], r["anderson_m20"]["nfev_mean"],
                     r["ratio_m5"], r["ratio_m20"], r["predicted_ratio_disk"],
                     r["predicted_ratio_ritz_disk"], r["predicted_ratio_interval"],
                     min(r["forward"]["converged_fraction"],
                         r["anderson_m5"]["converged_fraction"],
                         r["anderson_m20"]["converged_fraction"])])
    lin = result["linear"][0]
    parts.append(markdown_table(
        ["map", "ρ", "forward", "Anderson m=5", "Anderson m=20", "ratio m=5", "ratio m=20",
         "pred. (disk, eigenvalues)", "pred. (disk, Ritz)", "pred. (interval)",
         "min converged"],
        rows))
    parts.append(f"\nn = {lin['n']}, batch {lin['batch']}, float64, seed {result['seed']}; "
                 "mean f evaluations per sample. Predictions are asymptotic (small-tol) "
                 "forward/Krylov ratios log q / log ρ: the disk rule applied to the exact "
                 f"eigenvalues and to {lin['ritz_real'].__len__()} Arnoldi Ritz values; "
                 "'interval': Chebyshev rate on [λ_min, λ_max] for real spectra. For the "
                 "Gaussian map the circular-law disk (c = 0, r = ρ) itself predicts 1.0.\n")
    parts.append(f"\nTotal {result['total_seconds']:.0f} s ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in result["timings"].items())
                 + f"), {result['machine']['torch_threads']} thread(s), torch "
                 f"{result['machine']['torch']}.\n")
    return "".join(parts)


def _circle(ax: Any, c: float, r: float, **kw: Any) -> None:
    import numpy as np

    t = np.linspace(0.0, 2.0 * np.pi, 400)
    ax.plot(c + r * np.cos(t), r * np.sin(t), **kw)


def _panels(n: int, width: float) -> tuple[Any, list[Any]]:
    fig, ax = new_figure(width * n, width)
    fig.delaxes(ax)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    return fig, axes


def plot_ritz(result: dict[str, Any], path: Path) -> Path:
    """Ritz values per cell with the unit circle, the circle of radius ρ and the fitted disk."""
    cells = result["jacobian"]
    fig, axes = _panels(len(cells), 4.4)
    for ax, (name, sp) in zip(axes, cells.items(), strict=True):
        for i, smp in enumerate(sp["samples"]):
            ax.scatter(smp["ritz_real"], smp["ritz_imag"], s=9, alpha=0.7,
                       label=f"sample {i}" if i < 4 else None)
        u = sp["union_disk"]
        _circle(ax, 0.0, 1.0, color="k", lw=0.8, label="unit circle")
        _circle(ax, 0.0, u["rho"], color="grey", ls="--", lw=0.8, label=f"|λ| = ρ = {u['rho']:.3f}")
        _circle(ax, u["center"], u["radius"], color="C3", lw=1.2,
                label=f"disk c={u['center']:.2f}, r={u['radius']:.2f}")
        ax.plot([1.0], [0.0], "k+", ms=8)
        ax.set_aspect("equal")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_title(f"{name} cell: q = {u['rate']:.3f}, pred. ratio "
                     f"{sp['union_predicted_ratio']:.2f}×", fontsize=9)
        ax.set_xlabel("Re λ")
        ax.set_ylabel("Im λ")
        ax.legend(fontsize=6, loc="lower left")
    return save_figure(fig, path)


def plot_linear(result: dict[str, Any], path: Path) -> Path:
    """Eigenvalues of the linear control maps (subsampled) with their disk fits."""
    rows = result["linear"]
    fig, axes = _panels(len(rows), 3.4)
    for ax, r in zip(axes, rows, strict=True):
        ax.scatter(r["eig_sample_real"], r["eig_sample_imag"], s=4, alpha=0.5,
                   label="eigenvalues")
        ax.scatter(r["ritz_real"], r["ritz_imag"], s=6, color="C1", alpha=0.8,
                   label="Ritz values")
        _circle(ax, 0.0, 1.0, color="k", lw=0.8)
        _circle(ax, r["disk"]["center"], r["disk"]["radius"], color="C3", lw=1.0)
        ax.plot([1.0], [0.0], "k+", ms=8)
        ax.set_aspect("equal")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_title(f"{r['name']}: {r['ratio_m5']:.1f}× / {r['ratio_m20']:.1f}× (m=5/20)",
                     fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
    return save_figure(fig, path)


def main(out: str | Path | None = None, quick: bool = False, threads: int | None = 1,
         seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark, print the tables and where the files went; return the result."""
    result = run_benchmark(quick=quick, seed=seed, threads=threads, progress=progress, out=out)
    print(spectrum_markdown(result))
    print(f"results: {result['out_dir']}  (total {result['total_seconds']:.1f} s)")
    return result
