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
def test_memory_smoke(tmp_path: Path, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn import runtime

    monkeypatch.delenv("ANDERSONN_MALLOC_TUNING", raising=False)
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
    # the workers measure under the allocator the andersonn command uses, and say so
    glibc = runtime._libc() is not None
    assert all(r["cpu_allocator_tuned"] is glibc for r in res["rows"])
    assert res["machine"]["cpu_allocator_tuned"] is glibc


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
    # nor become the first LATEST: a later `train` would quietly train on the bench's subset
    (root / "tiny" / "LATEST").unlink()
    assert speedup._build_keeping_latest("tiny", 100, fake_build) == "tiny:100"
    assert not (root / "tiny" / "LATEST").exists()
    assert speedup._build_keeping_latest("tiny", None, fake_build) == "tiny:None"  # the full set
    assert (root / "tiny" / "LATEST").read_text() == "limitNone\n"


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
    # the median and range say how many seeds they cover and which did not reach a value
    assert (anderson["n"], anderson["n_total"], anderson["missing"]) == (2, 3, [1])
    line = next(x for x in md.splitlines() if x.startswith("| anderson vs forward, time to"))
    assert line.endswith("| 2/3 (not reached: seed 1) |")
    line = next(x for x in md.splitlines() if x.startswith("| explicit vs forward"))
    assert line.endswith("| 0/3 (not reached: seeds 0, 1, 2) |")
    assert "| 3/3 |" in md


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


# --------------------------------------------------------------------------------------------
# audit fixes: the traced problem, data subsets, bounds, option validation, output folders
# --------------------------------------------------------------------------------------------
def _normalised_deq(max_iter: int = 6):
    """A tiny DEQ whose input normalisation is far from the identity (mean 3, std 0.25)."""
    import torch

    from andersonn.models import build_model

    torch.manual_seed(0)
    model = build_model("deq", in_channels=4, height=8, width=6, num_classes=2, hidden=8,
                        groups=4, solver="forward",
                        solver_options={"tol": 0.0, "max_iter": max_iter})
    model.set_normalization(torch.full((4,), 3.0), torch.full((4,), 0.25))
    return model.eval(), torch.randn(5, 4, 8, 6) + 3.0


def test_probes_trace_the_fixed_point_problem_the_model_solves() -> None:
    import torch

    from andersonn.bench.speedup_probes import fixed_point_problem, residual_traces
    from andersonn.solvers import get_solver

    model, x = _normalised_deq()
    seen = []
    body = model.body
    model.body = lambda inj, z0=None: seen.append(inj) or body(inj, z0)  # the model's injection
    with torch.no_grad():
        model(x)
        cell, inj = fixed_point_problem(model, x)
    assert cell is model.cell and torch.equal(inj, seen[0])
    # forward iteration's residual trace in the probe = the one of the model's own solve
    own = torch.nanmean(model.solver_stats()["forward"].trace.double(), dim=0)
    traces = residual_traces(model, x, SpeedupSettings(trace_iters=6, repeats=2),
                             torch.device("cpu"))
    assert np.allclose(traces["forward"]["residual"], own.numpy(), rtol=1e-5)
    # ... and not that of the un-normalised injection (the audited defect)
    with torch.no_grad():
        raw = model.embed(x)
        _, st = get_solver("forward")(model.cell, torch.zeros_like(raw), args=(raw,), tol=0.0,
                                      max_iter=6)
    assert not np.allclose(torch.nanmean(st.trace.double(), 0).numpy(), own.numpy(), rtol=1e-3)


class _CountingImages:
    """Array stand-in that records how many rows each read takes."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        self.reads.append(len(index))
        return self.array[index]


def test_split_tensors_subsets_before_reading_images() -> None:
    from andersonn.bench.speedup import split_tensors

    ds = _tiny_dataset(200)
    full = split_tensors(ds, None, 0)
    images = _CountingImages(ds.images)
    ds.images = images
    data = split_tensors(ds, None, 0, train_limit=10, val_limit=7)
    assert data["train"][0].shape[0] == 10 and data["val"][0].shape[0] == 7
    assert data["test"][0].shape[0] == full["test"][0].shape[0]
    assert images.reads == [10, 7, full["test"][0].shape[0]]  # never the whole train split
    # the same seeded subset as drawing from the materialised split (results comparable)
    keep = np.sort(np.random.default_rng(2).choice(full["train"][0].shape[0], 10, replace=False))
    assert np.array_equal(data["train"][0].numpy(), full["train"][0][keep].numpy())
    assert SpeedupSettings.quick().limit == 1000  # quick: a 1000-structure subset of any build
    assert SpeedupSettings.quick(limit=5000).limit == 5000


@pytest.mark.parametrize("field, value", [("train_limit", 0), ("train_limit", -5),
                                          ("val_limit", 0), ("threads", 0), ("threads", -1),
                                          ("inference_limit", 0), ("build_limit", 0)])
def test_speedup_settings_refuse_non_positive_counts(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        SpeedupSettings(**{field: value}).validate()


def test_memory_default_image_shape_is_the_tasks() -> None:
    from andersonn.bench.memory import task_shape

    shape, classes = task_shape("crystal-gap")
    assert MemorySettings().image_shape == shape and MemorySettings().num_classes == classes
    assert MemorySettings.quick().image_shape == shape
    with pytest.raises(ConfigError):
        MemorySettings(repeats=0).validate()


@pytest.mark.parametrize("argv", [
    ["bench", "speedup", "polarity", "--threads", "0"],
    ["bench", "speedup", "polarity", "--train-limit", "-5"],
    ["bench", "speedup", "polarity", "--train-limit", "0"],
    ["bench", "speedup", "polarity", "--batch-size", "0"],
    ["bench", "spectrum", "--threads", "-1"],
    ["bench", "memory", "--repeats", "0"],
    ["bench", "memory", "--hidden", "x"],
])
def test_cli_refuses_non_positive_counts_in_one_line(argv: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: argument" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
    (["--batch", "0"], "--batch"), (["--batch", "-1"], "--batch"), (["--size", "0"], "--size"),
    (["--channels", "0"], "--channels"), (["--channels", "-3"], "--channels"),
    (["--hidden", "0"], "--hidden"),
])
def test_cli_bench_solvers_refuses_bad_sizes_before_work(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.bench import solvers
    from andersonn.cli import main

    def no_work(**_: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(solvers, "_run", no_work)
    with pytest.raises(SystemExit) as exc:  # refused when the command line is parsed
        main(["bench", "solvers", "--quick", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "at least 1" in err[-1] and "Traceback" not in "\n".join(err)


def test_solvers_and_spectrum_check_the_results_folder_before_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.bench import solvers, spectrum
    from andersonn.bench.report import results_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")

    def no_work(**_: object) -> None:
        raise AssertionError("the benchmark ran before its output folder was checked")

    monkeypatch.setattr(solvers, "run_benchmark", no_work)
    monkeypatch.setattr(spectrum, "_run", no_work)
    with pytest.raises(ConfigError, match="in the way"):
        solvers.main(out=blocker / "sub", quick=True)
    with pytest.raises(ConfigError, match="in the way"):
        spectrum.run_benchmark(quick=True, out=blocker)
    with pytest.raises(ConfigError, match="--threads"):
        spectrum.run_benchmark(quick=True, threads=0, out=tmp_path / "ok")
    assert results_dir("x", None, tmp_path / "a" / "b").is_dir()


def _solver_row(cell: str, solver: str, tol: float, nfev: float, wall: float | None,
                converged: float) -> dict:
    return {"cell": cell, "solver": solver, "tol": tol, "nfev_mean": nfev, "nfev_max": nfev,
            "wall_time": wall, "f_time": wall, "overhead_fraction": 0.1 if wall else None,
            "overhead_vs_f": 0.1 if wall else None,
            "overhead_ms_per_call": 1.0 if wall else None,
            "converged_fraction": converged, "residual_max": tol}


def test_solvers_targets_mark_capped_points_as_bounds(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.bench import solvers

    rows = [
        # both converged: a ratio at equal tolerance (2.0x)
        _solver_row("weak", "anderson", 1e-3, 10, 1.0, 1.0),
        _solver_row("weak", "torchdeq_anderson", 1e-3, 12, 2.0, 1.0),
        _solver_row("weak", "forward_iteration", 1e-3, 40, None, 1.0),
        # torchdeq capped: time to its cap, a lower bound (0.5x must not set the verdict)
        _solver_row("weak", "anderson", 1e-4, 20, 4.0, 1.0),
        _solver_row("weak", "torchdeq_anderson", 1e-4, 200, 2.0, 0.68),
        _solver_row("weak", "forward_iteration", 1e-4, 60, None, 1.0),
        # Anderson capped: the f-evaluation ratio is an upper bound
        _solver_row("weak", "anderson", 1e-5, 200, 8.0, 0.5),
        _solver_row("weak", "torchdeq_anderson", 1e-5, 200, 9.0, 0.0),
        _solver_row("weak", "forward_iteration", 1e-5, 500, None, 0.9),
    ]
    t = solvers.targets(rows)
    by = {s["tol"]: s for s in t["speedup_vs_torchdeq"]}
    assert (by[1e-3]["bound"], by[1e-4]["bound"], by[1e-5]["bound"]) == (
        None, "lower", "undetermined")
    assert t["speedup_min"] == 2.0 and t["speedup_met"] is True
    assert [p["tol"] for p in t["speedup_points_excluded"]] == [1e-4, 1e-5]
    ratios = {q["tol"]: q for q in t["nfev_ratio_forward_over_anderson_weak"]}
    assert ratios[1e-4]["bound"] is None and ratios[1e-5]["bound"] == "undetermined"
    capped = solvers.targets([_solver_row("weak", "anderson", 1e-4, 200, 1.0, 0.9),
                              _solver_row("weak", "forward_iteration", 1e-4, 300, None, 1.0)])
    assert capped["nfev_ratio_bound"] == "upper" and not capped["nfev_ratio_met"]
    only_capped = solvers.targets(rows[3:5])
    assert only_capped["speedup_min"] is None and only_capped["speedup_met"] is None
    # the printed table and the markdown file carry the marks; written next to the JSON
    result = {"device": "cpu", "torch": "x", "threads": 1, "quick": True, "dims": {
        "batch": 2, "channels": 2, "hidden": 2, "size": 2}, "cells": {}, "results": rows,
        "memory": [], "targets": t, "setup_seconds": 0.0, "total_seconds": 0.0, "skipped": []}
    monkeypatch.setattr(solvers, "run_benchmark", lambda **_: result)
    solvers.main(out=tmp_path, quick=True)
    md = (tmp_path / "solvers_quick.md").read_text()
    assert json.loads((tmp_path / "solvers_quick.json").read_text())["targets"] == t
    assert "weak@1e-04: >=0.50x" in md and "weak@1e-05: ~1.12x" in md
    assert "min 2.00x over points where both converged (met)" in md


def test_memory_worker_tunes_the_allocator_like_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.bench.memory import _run_worker

    cfg = {"model": "deq", "depth": 2, "batch_size": 2, "hidden": 8, "image_shape": [4, 8, 6],
           "num_classes": 2, "device": "cpu"}
    monkeypatch.setenv("ANDERSONN_MALLOC_TUNING", "0")
    assert _run_worker(cfg, 120)["cpu_allocator_tuned"] is False


def _fake_qm9_wheel(path: Path, rows_per_part: int) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        k = 0
        for part in (1, 2, 3):
            lines = ["XYZ_file,Elements,XYZ_Ang"]
            for _ in range(rows_per_part):
                k += 1
                lines.append(f'm{k:03d},"[\'H\', \'H\']","[[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]"')
            zf.writestr(f"qm9pack/data/qm9_part{part}.csv", "\n".join(lines) + "\n")


def test_featurize_samples_all_qm9_parts_and_counts_parallel_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.bench import featurize

    _fake_qm9_wheel(tmp_path / featurize.QM9_WHEEL, 30)
    sample = featurize.qm9_xyz_sample(tmp_path / featurize.QM9_WHEEL, 9, total=90)
    ids = [s[2] for s in sample]
    assert ids == [f"m{k:03d}" for k in range(1, 90, 10)]  # 3 from each part
    assert sample[0][0].splitlines()[0] == "2"
    (tmp_path / featurize.MOF_WHEEL).write_bytes(b"")
    monkeypatch.setattr(featurize, "qm9_xyz_sample", lambda *_: [("", "xyz", "a")] * 4)
    monkeypatch.setattr(featurize, "mof_cif_sample", lambda *_: [("", "cif", "b")] * 4)
    monkeypatch.setattr(featurize, "_time", lambda inputs, spec, workers: {
        "n": 4, "ok": 4, "failed": 0, "seconds": 1.0, "per_second": 4.0,
        "cpu_ms_per_structure": 100.0, "failures": []})
    monkeypatch.setattr(featurize.os, "cpu_count", lambda: 2)
    res = featurize.run_featurize_bench(workers=8, archives=tmp_path, out=tmp_path / "o")
    # 8 processes on 2 cores: the idle estimate divides CPU time by 2, not by 8
    assert res["parallel_workers"] == 2
    assert math.isclose(res["qm9_polarity"]["full_set_idle_s"], featurize.QM9_FULL * 0.1 / 2)
    assert (tmp_path / "o" / "featurize.md").is_file()
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="--workers"):
            featurize.run_featurize_bench(workers=bad, archives=tmp_path)


def test_bench_solvers_repeats_report_the_median_solve_and_every_wall_time() -> None:
    from andersonn.bench.solvers import run_benchmark

    result = run_benchmark(quick=True, progress=False, tolerances=(1e-2,), repeats=3, threads=1,
                           solvers=("forward_iteration", "anderson"))
    assert result["repeats"] == 3
    measured = [r for r in result["results"] if r["measured"]]
    assert {(r["cell"], r["solver"]) for r in measured} == {
        (c, s) for c in ("init", "weak") for s in ("forward_iteration", "anderson")}
    for r in measured:
        assert r["repeats"] == 3 and len(r["wall_times"]) == 3
        assert r["wall_times"] == sorted(r["wall_times"])
        assert r["wall_time"] == r["wall_times"][1]  # the median solve's record
    from andersonn.bench.solvers import format_table

    assert "wall times: median of 3 solves" in format_table(result)


def test_median_solve_takes_the_lower_median_of_an_even_count() -> None:
    from andersonn.bench.solvers import median_solve

    solves = [({"wall_time": t, "id": i}, i) for i, t in enumerate([3.0, 1.0, 4.0, 2.0])]
    record, stats = median_solve(solves)
    assert (record["id"], stats, record["wall_time"]) == (3, 3, 2.0)
    assert record["wall_times"] == [1.0, 2.0, 3.0, 4.0] and record["repeats"] == 4


@pytest.mark.parametrize("argv", [["solvers", "--quick", "--cuda-graph"],
                                  ["speedup", "crystal-gap", "--quick", "--cuda-graph"]])
def test_cuda_graph_on_the_cpu_is_refused_before_work(argv, capsys) -> None:
    from andersonn.cli import main

    assert main(["bench", *argv, "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        "andersonn: error: --cuda-graph needs --device cuda (CUDA graphs do not apply on the "
        "CPU)")
