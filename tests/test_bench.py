"""Smoke and unit tests of the headline benchmarks (``bench speedup``, ``bench memory``,
``bench spectrum``, ``bench charges``)."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from andersonn.bench.memory import MemorySettings, fit_budget, run_memory
from andersonn.bench.report import fmt, markdown_table, ratio
from andersonn.bench.spectrum import (
    arnoldi,
    best_disk,
    interval_rate,
    predicted_ratio,
    ritz_values,
)
from andersonn.bench.spectrum import run_benchmark as run_spectrum
from andersonn.bench.speedup import SpeedupSettings, run_speedup, time_to_target
from andersonn.bench.speedup_probes import crossover
from andersonn.cli import build_parser
from andersonn.errors import ConfigError


def _tiny_dataset(n: int = 96, seed: int = 0) -> types.SimpleNamespace:
    """Separable 2-class graph-image-shaped data: class shifts channel 0."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 4, 8, 6)).astype(np.float32)
    images[:, 0] += 1.5 * labels[:, None, None]
    splits = np.zeros(n, dtype=np.int8)
    splits[int(0.7 * n):int(0.85 * n)] = 1
    splits[int(0.85 * n):] = 2
    return types.SimpleNamespace(images=images, labels=labels.astype(np.int64), splits=splits,
                                 classes=["a", "b"], meta={"task": "tiny"})


def test_speedup_warm_start_cuts_the_deqs_forward_evaluations(tmp_path: Path) -> None:
    s = {"hidden": 8, "groups": 4, "epochs": 3, "batch_size": 16, "limit": None, "repeats": 1,
         "trace_iters": 5, "inference_limit": 8, "trace_batch": 4, "inference_tols": (1e-2,),
         "tol": 1e-4, "max_iter": 60}
    out = {}
    for warm in (False, True):
        run_speedup("tiny", SpeedupSettings.quick(warm_start=warm, **s), dataset=_tiny_dataset(),
                    out=tmp_path / str(warm), progress=False)
        out[warm] = json.loads((tmp_path / str(warm) / "speedup.json").read_text())
    assert out[True]["settings"]["warm_start"] is True
    for name in ("forward", "anderson", "broyden"):  # epoch 1 is cold in both, then warm
        assert out[True]["variants"][name]["fwd_nfev"] < out[False]["variants"][name]["fwd_nfev"]


def test_speedup_smoke(tmp_path: Path) -> None:
    s = SpeedupSettings.quick(hidden=8, groups=4, epochs=2, batch_size=16, limit=None,
                              repeats=1, trace_iters=15, inference_limit=16, trace_batch=8,
                              inference_max_iter=200)
    run_speedup("tiny", s, dataset=_tiny_dataset(), out=tmp_path, progress=False)
    for name in ("speedup.json", "speedup.md", "val_acc_vs_time.png", "residual_vs_time.png",
                 "inference_time.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "speedup.json").read_text())
    v = data["variants"]
    assert set(v) == {"forward", "anderson", "broyden", "explicit"}
    # same cell, same tolerance: Anderson needs fewer f evaluations than forward iteration
    assert v["anderson"]["fwd_nfev"] < v["forward"]["fwd_nfev"]
    assert v["anderson"]["bwd_nfev"] < v["forward"]["bwd_nfev"]
    assert v["explicit"]["fwd_nfev"] == 0.0
    for n in v:
        assert v[n]["time_per_epoch_s"] > 0
        assert 0.0 <= v[n]["test_acc"] <= 1.0
    # parameter-matched explicit network (within one width step)
    assert abs(v["explicit"]["params"] - v["anderson"]["params"]) < 0.5 * v["anderson"]["params"]
    # the common accuracy is reached by every DEQ variant by definition
    for n in ("forward", "anderson", "broyden"):
        assert data["time_to_target"]["common"][n]["reached"]
    # inference at matched residual: achieved residuals really are at the tolerance
    assert len(data["inference"]) == 9
    for row in data["inference"]:
        assert row["matched"], row
        assert row["residual_max"] <= row["tol"] * (1 + 1e-6)
    at = {(r["tol"], r["solver"]): r for r in data["inference"]}
    assert at[(1e-4, "anderson")]["nfev_mean"] < at[(1e-4, "forward")]["nfev_mean"]
    tr = data["residual_traces"]
    assert len(tr["anderson"]["time_s"]) == len(tr["anderson"]["residual"]) == 15
    times = tr["forward"]["time_s"]
    assert times == sorted(times)
    spec = data["trained_cell_spectrum"]
    assert spec["n"] == 4 and len(spec["rho_power"]) == 4
    for rho, rate, pred in zip(spec["rho_power"], spec["krylov_rate"], spec["predicted_ratio"],
                               strict=True):
        assert 0.0 < rho < 1.0 and 0.0 < rate <= 1.0 and pred >= 1.0
    md = (tmp_path / "speedup.md").read_text()
    assert "common" in md and "matched" in md and "Targets" in md and "Spectrum" in md


@pytest.mark.parametrize("device", ["cpu"])
def test_memory_smoke(tmp_path: Path, device: str) -> None:
    s = MemorySettings(depths=(4, 64), batch_size=16, hidden=16, image_shape=(4, 16, 8),
                       num_classes=2, device=device, budget_mb=64)
    res = run_memory(s, out=tmp_path, progress=False)
    for name in ("memory.json", "memory.md", "memory_vs_depth.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = {(r["model"], r["depth"]): r for r in res["rows"]}
    assert rows[("deq", 64)]["step_peak_mb"] < rows[("explicit", 64)]["step_peak_mb"]
    # autograd keeps the same bytes for the DEQ at any depth; the explicit net grows
    assert math.isclose(rows[("deq", 4)]["autograd_saved_mb"],
                        rows[("deq", 64)]["autograd_saved_mb"], rel_tol=1e-6)
    assert rows[("explicit", 64)]["autograd_saved_mb"] > 8 * rows[("explicit", 4)][
        "autograd_saved_mb"]
    assert rows[("deq", 64)]["fwd_iterations"] == 64
    assert res["fits"]["explicit"]["slope_mb_per_layer"] > 0


def test_fit_budget() -> None:
    lin = fit_budget([4, 8, 16], [40.0, 80.0, 160.0], 400.0)
    assert lin["extrapolated"] and lin["max_depth"] == 40
    inside = fit_budget([4, 8, 16], [40.0, 80.0, 160.0], 120.0)
    assert not inside["extrapolated"] and inside["max_depth"] == 12
    flat = fit_budget([4, 8, 16, 64], [100.0, 101.0, 99.0, 100.5], 400.0)
    assert flat["unbounded"] and flat["max_depth"] is None
    over = fit_budget([4, 8], [500.0, 900.0], 400.0)
    assert over["max_depth"] == 0


def test_time_to_target_and_crossover() -> None:
    curve = [{"val_acc": 0.5, "train_time_s": 0.0}, {"val_acc": 0.7, "train_time_s": 2.0},
             {"val_acc": 0.8, "train_time_s": 3.0}]
    assert time_to_target(curve, 0.7)["train_time_s"] == 2.0
    assert time_to_target(curve, 0.9) is None
    fwd = {"time_s": [1.0, 2.0, 3.0, 4.0], "best_residual": [1.0, 0.5, 0.25, 0.125]}
    anderson = {"time_s": [1.5, 3.0, 4.5], "best_residual": [1.0, 0.1, 0.001]}
    cross = crossover(anderson, fwd)
    assert cross is not None and cross["time_s"] == 3.0 and cross["anderson_iteration"] == 2
    slow = {"time_s": [10.0], "best_residual": [0.5]}
    assert crossover(slow, fwd) is None


def test_report_helpers() -> None:
    assert ratio(4.0, 2.0) == 2.0 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert fmt(None) == "–" and fmt(0.5) == "0.5" and fmt(3) == "3"
    table = markdown_table(["a", "b"], [[1, 0.25], ["x|y", None]])
    assert table.splitlines()[1] == "|---|---|" and "x\\|y" in table


def test_settings_validation() -> None:
    with pytest.raises(ConfigError):
        SpeedupSettings(epochs=0).validate()
    with pytest.raises(ConfigError):
        MemorySettings(depths=(0,)).validate()
    with pytest.raises(ConfigError):
        MemorySettings(budget_mb=-1).validate()


def test_cli_registration() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "speedup", "crystal-gap", "--quick", "--epochs", "2"])
    assert args.quick and args.epochs == 2 and callable(args.func)
    args = parser.parse_args(["bench", "memory", "--depths", "8,4", "--budget-mb", "256"])
    assert args.depths == (4, 8) and args.budget_mb == 256.0
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "memory", "--depths", "a,b"])
    args = parser.parse_args(["bench", "spectrum", "--quick", "--threads", "1"])
    assert args.quick and args.threads == 1 and callable(args.func)
    args = parser.parse_args(["bench", "charges", "--molecules", "50", "--seed", "3"])
    assert args.molecules == 50 and args.seed == 3 and callable(args.func)


def test_bench_build_keeps_latest_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """A benchmark's small build must not replace the cache's LATEST build."""
    import andersonn.data.build as build_mod
    from andersonn.bench import speedup

    root = tmp_path / "datasets"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "LATEST").write_text("fullbuild\n")
    monkeypatch.setattr(build_mod, "datasets_root", lambda cache_dir=None: root)

    def fake_build(task: str, limit: int | None = None) -> str:
        (root / task / "LATEST").write_text(f"limit{limit}\n")
        return f"{task}:{limit}"

    assert speedup._build_keeping_latest("tiny", 100, fake_build) == "tiny:100"
    assert (root / "tiny" / "LATEST").read_text() == "fullbuild\n"


@pytest.mark.parametrize("kind", ["diagonal", "random"])
def test_arnoldi_full_steps_recovers_eigenvalues(kind: str) -> None:
    import torch

    gen = torch.Generator().manual_seed(3)
    n = 20
    if kind == "diagonal":
        A = torch.diag(torch.linspace(-0.9, 0.95, n, dtype=torch.float64))
    else:
        A = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    v0 = torch.randn(2, n, generator=gen, dtype=torch.float64)
    Q, H = arnoldi(lambda v: v @ A.T, v0, n)
    # the Arnoldi relation A Q_k = Q_{k+1} H and orthonormality
    k = H.shape[-1]
    assert torch.allclose(Q[:, :k] @ A.T, H.transpose(1, 2) @ Q, atol=1e-10)
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(Q[:, :k] @ Q[:, :k].transpose(1, 2), eye.expand(2, k, k), atol=1e-12)
    exact = torch.linalg.eigvals(A)
    for ritz in ritz_values(H):
        dist = (ritz[:, None] - exact[None, :]).abs()
        assert float(dist.min(1).values.max()) < 1e-8
        assert float(dist.min(0).values.max()) < 1e-8


def test_arnoldi_breakdown_keeps_ritz_values_in_spectrum() -> None:
    import torch

    A = torch.diag(torch.tensor([0.5, 0.2, -0.3, 0.9], dtype=torch.float64))
    v0 = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # invariant 2-d subspace
    _, H = arnoldi(lambda v: v @ A.T, v0, 4)
    ritz = ritz_values(H)[0]
    assert torch.isfinite(ritz).all()
    exact = torch.diagonal(A).to(torch.complex128)
    assert float((ritz[:, None] - exact[None, :]).abs().min(1).values.max()) < 1e-8


def test_disk_fit_and_rates() -> None:
    import torch

    circle = 0.9 * torch.exp(1j * torch.linspace(0, 2 * math.pi, 401, dtype=torch.float64))
    d = best_disk(circle)
    assert abs(d["center"]) < 1e-3 and abs(d["rate"] - 0.9) < 1e-3
    assert math.isclose(predicted_ratio(0.9, d["rate"]), 1.0, rel_tol=1e-2)
    # a disk of centre 0.5, radius 0.4: q = 0.8 against rho = 0.9
    shifted = 0.5 + 0.4 * torch.exp(1j * torch.linspace(0, 2 * math.pi, 401,
                                                         dtype=torch.float64))
    d = best_disk(shifted)
    assert abs(d["center"] - 0.5) < 1e-3 and abs(d["rate"] - 0.8) < 1e-3
    assert math.isclose(predicted_ratio(0.9, 0.8), math.log(0.8) / math.log(0.9))
    small = best_disk(shifted, objective="radius")
    assert abs(small["radius"] - 0.4) < 1e-3
    assert math.isclose(interval_rate(-0.98, 0.98), (math.sqrt(99) - 1) / (math.sqrt(99) + 1))


def test_spectrum_quick_smoke(tmp_path: Path) -> None:
    res = run_spectrum(quick=True, out=tmp_path, progress=False, threads=1)
    for name in ("spectrum.json", "spectrum.md", "ritz_values.png", "linear_spectra.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "spectrum.json").read_text())
    assert set(data["jacobian"]) == {"init", "weak"}
    steps = data["settings"]["arnoldi_steps"]
    for sp in data["jacobian"].values():
        assert len(sp["samples"]) == data["settings"]["ritz_samples"]
        for smp in sp["samples"]:
            assert len(smp["ritz_real"]) == len(smp["ritz_imag"]) == steps
            assert 0.0 < smp["rho_ritz"] < 1.0 and 0.0 < smp["rho_power"] < 1.0
            assert 0.0 < smp["disk"]["rate"] <= smp["rho_ritz"] + 1e-9
            assert math.isfinite(smp["predicted_ratio"]) and smp["predicted_ratio"] >= 1 - 1e-6
            assert smp["rel_residual_zstar_float64"] < 1e-4
        assert sp["union_predicted_ratio"] > 0
    sweep = data["window_sweep"]
    assert [(r["cell"], r["m"]) for r in sweep] == [
        (c, m) for c in ("weak", "init") for m in (None, 5, 10, 20)]
    for r in sweep:
        assert 0.0 <= r["converged_fraction"] <= 1.0 and r["nfev_mean"] > 0
        if r["m"]:
            assert r["ratio_forward_over"] > 0
    assert len(data["linear"]) == 4
    for r in data["linear"]:
        for key in ("ratio_m5", "ratio_m20", "predicted_ratio_disk"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["forward"]["converged_fraction"] == 1.0
    # bulk + slow modes: Anderson clearly beats forward iteration
    assert data["linear"][2]["ratio_m20"] > 3
    assert math.isfinite(data["total_seconds"]) and res["total_seconds"] < 60
    assert "Window sweep" in (tmp_path / "spectrum.md").read_text()


def test_charge_probe_scores_models_on_given_molecules(tmp_path: Path) -> None:
    from andersonn.bench.charges import charge_dipole, charges_markdown, run_probe
    from andersonn.errors import ConfigError
    from andersonn.structures import read_structure

    mols = []
    for smiles in ("O", "C", "CC(=O)N", "c1ccncc1", "CO", "C#N", "CCO", "FC(F)F"):
        s = read_structure(smiles, fmt="smiles")
        mols.append((s.numbers, s.positions, charge_dipole(s.numbers, s.positions, "mmff")))
    # the "DFT" dipole is the MMFF one here, so MMFF must correlate perfectly
    result = run_probe(mols)
    by = {r["model"]: r for r in result["results"]}
    assert set(by) == {"mmff", "images", "eem", "gasteiger"}
    assert by["mmff"]["n"] == len(mols) and by["mmff"]["failed"] == 0
    assert by["mmff"]["pearson_r"] > 0.999 and by["mmff"]["mae_debye"] < 1e-9
    assert abs(charge_dipole(mols[1][0], mols[1][1], "eem")) < 1e-6  # methane: no dipole
    assert "Pearson" in charges_markdown(result)
    with pytest.raises(ConfigError, match="unknown charge model"):
        charge_dipole(mols[0][0], mols[0][1], "magic")


def _fake_result(speedup: float | None, inference: float) -> dict:
    common = {"anderson": {"speedup": speedup, "compute_saved": 0.4},
              "broyden": {"speedup": 1.0, "compute_saved": 0.0},
              "explicit": {"speedup": None, "compute_saved": None}}
    return {"ratios": {"common": common},
            "epoch_time_speedup": {"anderson": 1.5},
            "per_batch_compute_saved": {"anderson": 0.5},
            "inference": [{"solver": "anderson", "tol": 1e-4, "speedup_vs_forward": inference},
                          {"solver": "forward", "tol": 1e-4, "speedup_vs_forward": 1.0}],
            "anderson_cost_per_iteration_vs_forward": 1.3, "targets": {"common": 0.9},
            "variants": {n: {"test_acc": 0.9} for n in
                         ("forward", "anderson", "broyden", "explicit")}}


def test_speedup_seeds_summary_takes_median_and_range_and_skips_unreached() -> None:
    from andersonn.bench.speedup_seeds import seeds_markdown, summarize

    settings = SpeedupSettings(inference_tols=(1e-4,))
    table = summarize([_fake_result(1.5, 1.2), _fake_result(None, 1.4),
                       _fake_result(2.5, 1.3)], settings)
    rows = {row["metric"]: row for row in table}
    anderson = rows["anderson vs forward, time to common val. acc."]
    assert anderson["values"] == [1.5, None, 2.5]
    assert (anderson["median"], anderson["min"], anderson["max"]) == (2.0, 1.5, 2.5)
    inference = rows["anderson vs forward, inference at 1e-04"]
    assert (inference["median"], inference["min"], inference["max"]) == (1.3, 1.2, 1.4)
    explicit = rows["explicit vs forward, time to common val. acc."]
    assert explicit["values"] == [None] * 3 and explicit["median"] is None
    md = seeds_markdown("tiny", [0, 1, 2], table)
    assert "| seed 0 | seed 1 | seed 2 | median |" in md and "1.5 – 2.5" in md


def test_speedup_seeds_runs_each_seed_in_its_own_folder(tmp_path: Path) -> None:
    from andersonn.bench.speedup_seeds import run_speedup_seeds

    s = SpeedupSettings.quick(hidden=8, groups=4, epochs=1, batch_size=16, limit=None,
                              repeats=1, trace_iters=8, inference_limit=8, trace_batch=4,
                              inference_max_iter=100, inference_tols=(1e-2,), spectrum_steps=8)
    summary = run_speedup_seeds("tiny", s, [3, 4], dataset=_tiny_dataset(), out=tmp_path,
                                progress=False)
    runs = [json.loads((tmp_path / f"seed-{k}" / "speedup.json").read_text()) for k in (3, 4)]
    assert [r["settings"]["seed"] for r in runs] == [3, 4]
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [3, 4] and saved["metrics"] == summary["metrics"]
    per_epoch = next(m for m in saved["metrics"] if m["metric"].endswith("time per epoch"))
    assert per_epoch["values"] == [r["epoch_time_speedup"]["anderson"] for r in runs]
    assert (tmp_path / "seeds.md").read_text().startswith("## bench speedup over seeds: tiny")
    with pytest.raises(ConfigError, match="distinct"):
        run_speedup_seeds("tiny", s, [1, 1], dataset=_tiny_dataset(), out=tmp_path)


def test_cli_speedup_seeds_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.cli import main

    assert main(["bench", "speedup", "polarity", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
