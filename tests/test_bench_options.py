"""Benchmark settings refused in one line before any work: a build without a test split, a
negative seed, a memory budget that is not a finite positive number."""

from __future__ import annotations

import types

import numpy as np
import pytest

from andersonn.bench.memory import MemorySettings, run_memory
from andersonn.bench.speedup import SpeedupSettings, run_speedup
from andersonn.errors import ConfigError

from helpers import assert_refused_when_parsed


def test_speedup_refuses_a_build_without_a_test_split(tmp_path):
    # it scored on the validation split instead, silently
    n = 40
    splits = np.zeros(n, dtype=np.int8)
    splits[30:] = 1  # no test entry
    tiny = types.SimpleNamespace(images=np.zeros((n, 4, 8, 6), dtype=np.float32),
                                 labels=np.arange(n) % 2, splits=splits, classes=["a", "b"],
                                 meta={"task": "tiny"})
    with pytest.raises(ConfigError, match=r"bench speedup tiny: the test split\(s\) of the build "
                                          r"are empty \(40 entries\)"):
        run_speedup("tiny", SpeedupSettings.quick(limit=None), dataset=tiny, out=tmp_path,
                    progress=False)
    assert not any(tmp_path.iterdir())


def test_speedup_seed_must_not_be_negative(capsys):
    with pytest.raises(ConfigError, match=r"seed must be >= 0 \(got -1\)"):
        SpeedupSettings.quick(seed=-1).validate()
    assert_refused_when_parsed(["bench", "speedup", "crystal-gap", "--quick", "--seed", "-1"],
                               capsys, "argument --seed: must be at least 0, got -1")


@pytest.mark.parametrize(("budget", "why"), [
    ("nan", "a positive number, got nan"), ("inf", "a finite number, got inf"),
    ("0", "a positive number, got 0")])
def test_memory_budget_must_be_finite_and_positive(budget, why, capsys):
    # nan and inf crashed after all the measurements (fit_budget)
    with pytest.raises(ConfigError, match="--budget-mb must be positive"):
        MemorySettings(budget_mb=float(budget)).validate()
    assert_refused_when_parsed(["bench", "memory", "--quick", "--budget-mb", budget], capsys,
                               f"argument --budget-mb: must be {why}")


# --------------------------------------------------------------------------------------------
# sizes that cannot fit in memory: refused before any work, in one line naming the options
# --------------------------------------------------------------------------------------------
def _free(monkeypatch, nbytes: int = 16 * 10**9) -> None:
    from andersonn.bench import report

    monkeypatch.setattr(report, "available_memory", lambda device="cpu": nbytes)


def test_bench_solvers_refuses_a_size_that_cannot_fit(tmp_path, capsys, monkeypatch):
    # it died in the CPU allocator with a RuntimeError traceback (245 TB)
    from andersonn.bench import solvers
    from andersonn.cli import main

    def no_work(**_: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(solvers, "_run", no_work)
    _free(monkeypatch)
    assert main(["bench", "solvers", "--size", "100000", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "andersonn: error: bench solvers with batch 128 × 48 channels × 100000×100000 feature "
        "maps (--batch, --channels, --size) needs about 6.14 PB of memory, more than the 16 GB "
        "available; lower --size, --batch or --channels\n")
    _free(monkeypatch, 10**6)  # the Python API says the same
    with pytest.raises(ConfigError, match=r"^bench solvers with batch 4096 × 8 channels × 8×8 "
                                          r"feature maps .* needs about 168 MB of memory, more "
                                          r"than the 1 MB available"):
        solvers.run_benchmark(quick=True, batch=4096, size=8, progress=False)


def test_a_failed_allocation_becomes_one_line_naming_the_options():
    import torch

    from andersonn.bench.report import allocation_failures

    what, advice = "bench x with batch 9 (--batch)", "lower --batch"
    with pytest.raises(ConfigError) as err, allocation_failures(what, advice):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 245760000000000 bytes. "
                           "Error code 12 (Cannot allocate memory)")
    assert str(err.value) == ("bench x with batch 9 (--batch) ran out of memory (an allocation "
                              "of 246 TB failed); lower --batch")
    with pytest.raises(ConfigError, match=r"ran out of memory \(an allocation of 21.5 GB failed"
                       ), allocation_failures(what, advice):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(RuntimeError, match=r"^shape mismatch$"), allocation_failures(what,
                                                                        advice):
        raise RuntimeError("shape mismatch")  # not about memory: passes through


def test_bench_speedup_refuses_sizes_that_cannot_fit_before_work(tmp_path, capsys,
                                                                 monkeypatch):
    from andersonn.bench import speedup
    from andersonn.cli import main

    monkeypatch.setattr(speedup, "load_task", lambda *a, **k: pytest.fail("data was loaded"))
    _free(monkeypatch)
    out = tmp_path / "out"
    assert main(["bench", "speedup", "polarity", "--quick", "--hidden", "100000",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("andersonn: error: bench speedup with hidden 100000, batch 64 and "
                          "inference batch 128 on ") and err.count("\n") == 1
    assert err.endswith(" images (--hidden, --batch-size, --inference-batch) needs about "
                        "7.11 TB of memory, more than the 16 GB available; lower --hidden, "
                        "--batch-size or --inference-batch\n")
    assert not out.exists()
    tiny = types.SimpleNamespace(images=np.zeros((40, 4, 8, 6), dtype=np.float32),
                                 labels=np.arange(40) % 2, splits=np.zeros(40, np.int8),
                                 classes=["a", "b"], meta={"task": "tiny"})
    with pytest.raises(ConfigError, match=r"batch 10000000 and inference batch 128 on 4×8×6 "
                                          r"images .* needs about"):
        run_speedup("tiny", SpeedupSettings(batch_size=10**7), dataset=tiny, out=out,
                    progress=False)
    assert not out.exists()


def test_bench_memory_refuses_sizes_that_cannot_fit_and_names_them_on_a_failed_worker(
        tmp_path, monkeypatch):
    import subprocess

    from andersonn.bench import memory

    _free(monkeypatch)
    with pytest.raises(ConfigError, match=r"^bench memory with batch 64, hidden 100000 and "
                                          r"depths up to 64 on .* needs about .* more than the "
                                          r"16 GB available; lower --batch-size, --hidden or "
                                          r"the largest of --depths$"):
        run_memory(MemorySettings(hidden=100000), out=tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()

    def failed(cmd, **kwargs):  # the worker died in the allocator
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=(
            "Traceback (most recent call last):\nRuntimeError: [enforce fail at alloc_cpu.cpp:"
            "127] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
            "40000000000 bytes. Error code 12 (Cannot allocate memory)\n"))

    monkeypatch.setattr(memory.subprocess, "run", failed)
    cfg = {"model": "deq", "depth": 4, "batch_size": 8, "hidden": 16, "image_shape": [3, 4, 5],
           "num_classes": 2}
    with pytest.raises(ConfigError) as err:
        memory._run_worker(cfg, 10.0)
    assert str(err.value) == (
        "bench memory with batch 8, hidden 16 and depths up to 4 on 3×4×5 images "
        "(--batch-size, --hidden, --depths) ran out of memory on deq depth 4 (an allocation of "
        "40 GB failed); lower --batch-size, --hidden or the largest of --depths")


# --------------------------------------------------------------------------------------------
# tolerances and lists: empty items, non-numbers, non-finite values, outside (0, 1)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "why"), [
    ("1e-2,,1e-3", "an empty item in '1e-2,,1e-3'; give a comma-separated list without blanks"),
    ("1e-2,", "an empty item in '1e-2,'; give a comma-separated list without blanks"),
    ("1e-2,abc", "'abc' is not a number (in '1e-2,abc')"),
    ("nan", "must be a finite number, got nan (in 'nan')"),
    ("1e-2,inf", "must be a finite number, got inf (in '1e-2,inf')"),
    ("1e-2,1", "must be below 1 (a relative tolerance), got 1 (in '1e-2,1')"),
    ("0,1e-3", "must be a positive number, got 0 (in '0,1e-3')"),
    ("-1e-3", "must be a positive number, got -1e-3 (in '-1e-3')"),
])
def test_inference_tols_refuses_bad_items_when_parsed(value, why, capsys):
    # "1e-2,,1e-3" was read as (1e-2, 1e-3); nan, inf and 1 were accepted
    assert_refused_when_parsed(["bench", "speedup", "polarity", "--inference-tols", value],
                               capsys, f"argument --inference-tols: {why}")


@pytest.mark.parametrize(("value", "why"), [
    ("1", "must be below 1 (a relative tolerance), got 1"),
    ("5", "must be below 1 (a relative tolerance), got 5"),
    ("0", "must be a positive number, got 0"),
    ("inf", "must be a finite number, got inf"), ("x", "'x' is not a number")])
def test_speedup_tol_must_be_a_relative_tolerance(value, why, capsys):
    assert_refused_when_parsed(["bench", "speedup", "polarity", "--tol", value], capsys,
                               f"argument --tol: {why}")


def test_tolerance_lists_parse_loosest_first_and_settings_refuse_bad_ones():
    from andersonn.bench.solvers import run_benchmark
    from andersonn.cli import build_parser

    args = build_parser().parse_args(["bench", "speedup", "polarity", "--inference-tols",
                                      "1e-4, 1e-2,1e-4", "--tol", "0.5"])
    assert args.inference_tols == (1e-2, 1e-4) and args.tol == 0.5
    with pytest.raises(ConfigError, match=r"^--inference-tols: must be below 1 \(a relative "
                                          r"tolerance\), got 1.0 \(in \[0.01, 1.0\]\)$"):
        SpeedupSettings(inference_tols=(1e-2, 1.0)).validate()
    with pytest.raises(ConfigError, match=r"^--inference-tols must list at least one"):
        SpeedupSettings(inference_tols=()).validate()
    with pytest.raises(ConfigError, match=r"^--tol: must be below 1 \(a relative tolerance\), "
                                          r"got 1.5$"):
        SpeedupSettings(tol=1.5).validate()
    with pytest.raises(ConfigError, match=r"^--tol: must be a finite number, got nan$"):
        SpeedupSettings(tol=float("nan")).validate()
    SpeedupSettings(tol=0.0).validate()  # 0 in the API: every solve runs max_iter
    with pytest.raises(ConfigError, match=r"^tolerances: must be a finite number, got nan"):
        run_benchmark(quick=True, tolerances=(1e-2, float("nan")), progress=False)
    with pytest.raises(ConfigError, match=r"^tolerances: must be below 1 .* got 2.0 \(in"):
        run_benchmark(quick=True, tolerances=(2.0,), progress=False)


@pytest.mark.parametrize(("value", "why"), [
    ("4,,8", "an empty item in '4,,8'; give a comma-separated list without blanks"),
    (",4", "an empty item in ',4'; give a comma-separated list without blanks"),
    ("4,0", "'0' in '4,0' is not at least 1"), ("4,x", "'x' in '4,x' is not a whole number")])
def test_memory_depths_refuse_empty_items_when_parsed(value, why, capsys):
    assert_refused_when_parsed(["bench", "memory", "--depths", value], capsys,
                               f"argument --depths: {why}")


@pytest.mark.parametrize("bench", [["charges"], ["spectrum", "--quick"]])
def test_charges_and_spectrum_seed_must_not_be_negative(bench, capsys):
    # bench charges --seed -1 died in numpy's default_rng with a traceback
    assert_refused_when_parsed(["bench", *bench, "--seed", "-1"], capsys,
                               "argument --seed: must be at least 0, got -1")


# --------------------------------------------------------------------------------------------
# bench memory: the budget read-out does not depend on the order of --depths; one "flat"
# --------------------------------------------------------------------------------------------
def test_fit_budget_does_not_depend_on_the_order_of_the_depths():
    from andersonn.bench.memory import fit_budget

    ordered = fit_budget([4, 16, 64], [200.0, 700.0, 3000.0], 1024.0)
    # 64 first read "over budget already at depth 64", max depth 0
    assert fit_budget([64, 4, 16], [3000.0, 200.0, 700.0], 1024.0) == ordered
    assert ordered["max_depth"] == 22 and not ordered["extrapolated"]
    assert ordered["flat"] is False and ordered["growth"] > 10
    single = fit_budget([8], [100.0], 1024.0)
    assert single["flat"] is None and single["max_depth"] is None and not single["unbounded"]


def _fake_worker(peaks: dict[str, list[float]], depths: tuple[int, ...]):
    table = {(kind, d): mb for kind in peaks for d, mb in zip(depths, peaks[kind], strict=True)}

    def run(cfg, timeout):
        mb = table[(cfg["model"], cfg["depth"])]
        return {"model": cfg["model"], "depth": cfg["depth"], "params": 10, "method": "fake",
                "step_peak_mb": mb, "autograd_saved_mb": mb / 2, "step_time_s": 0.0,
                "cpu_allocator_tuned": True}

    return run


def test_memory_report_is_the_same_for_any_order_of_depths_and_uses_one_flat_rule(
        tmp_path, monkeypatch):
    from andersonn.bench import memory

    depths = (4, 8, 16, 32, 64)
    # the measured DEQ of docs/benchmarks.md: the old budget fit called it growing (2823
    # "layers", extrapolated) while the target called it flat
    peaks = {"deq": [190.0, 201.0, 213.0, 190.0, 217.0],
             "explicit": [204.0, 353.0, 657.0, 1377.0, 2688.0]}
    monkeypatch.setattr(memory, "_run_worker", _fake_worker(peaks, depths))
    monkeypatch.setattr(memory, "_plot", lambda res, out: None)
    results = []
    for order in (depths, (64, 4, 16, 8, 32)):
        res = run_memory(MemorySettings(depths=order), out=tmp_path / "-".join(map(str, order)),
                         progress=False)
        results.append(res)
    a, b = results
    assert a["fits"] == b["fits"] and b["settings"]["depths"] == list(depths)
    assert memory.memory_markdown(a) == memory.memory_markdown(b)
    deq = a["fits"]["deq"]
    assert deq["flat"] is True and deq["unbounded"] and deq["max_depth"] is None
    assert a["targets_met"]["deq_flat"] == {"value": deq["growth"], "met": True}
    assert a["fits"]["explicit"]["flat"] is False and a["fits"]["explicit"]["max_depth"] == 24
    md = memory.memory_markdown(a)
    assert "| deq |" in md and "unbounded (flat)" in md
    assert (f"DEQ memory flat in depth (fitted growth over the measured depths "
            f"{deq['growth']:.3g} of its memory at depth 4; flat: ≤ 0.25): **met**") in md


# --------------------------------------------------------------------------------------------
# bench speedup --seeds: one result per folder
# --------------------------------------------------------------------------------------------
def test_seeds_run_removes_a_single_runs_files_and_other_seeds_folders(tmp_path, monkeypatch,
                                                                      capsys):
    from andersonn.bench import speedup_seeds
    from andersonn.bench.speedup import RUN_FILES

    for name in RUN_FILES:  # an earlier single run into the same folder
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "seed-7").mkdir()  # an earlier --seeds run's seed 7
    (tmp_path / "seed-7" / "speedup.json").write_text("old")
    (tmp_path / "seed-8").mkdir()
    (tmp_path / "seed-8" / "speedup.md").write_text("old")
    (tmp_path / "seed-8" / "mine.txt").write_text("kept")

    def fake_run(task, settings, *, dataset, out, progress):
        out.mkdir(parents=True, exist_ok=True)
        (out / "speedup.json").write_text("{}")
        return {"settings": {"seed": settings.seed}, "machine": {}, "out_dir": str(out)}

    monkeypatch.setattr(speedup_seeds, "run_speedup", fake_run)
    speedup_seeds.run_speedup_seeds("tiny", SpeedupSettings(), [0, 1], out=tmp_path,
                                    progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "seed-0", "seed-1", "seed-8", "seeds.json", "seeds.md"]
    assert [p.name for p in (tmp_path / "seed-8").iterdir()] == ["mine.txt"]
    gone = ", ".join([*RUN_FILES, "seed-7/speedup.json", "seed-8/speedup.md"])
    assert capsys.readouterr().err == (
        f"andersonn: removed what earlier runs left in {tmp_path}: {gone}\n")


def test_single_run_refuses_the_folder_of_a_seeds_run(tmp_path):
    (tmp_path / "seeds.json").write_text("{}")
    tiny = types.SimpleNamespace(images=np.zeros((40, 4, 8, 6), dtype=np.float32),
                                 labels=np.arange(40) % 2, splits=np.zeros(40, np.int8),
                                 classes=["a", "b"], meta={"task": "tiny"})
    with pytest.raises(ConfigError) as err:
        run_speedup("tiny", SpeedupSettings.quick(limit=None), dataset=tiny, out=tmp_path,
                    progress=False)
    assert str(err.value) == (f"--out {tmp_path} holds the summary of a --seeds run "
                              "(seeds.json); give another --out for a single run, or run with "
                              "--seeds again")
    assert [p.name for p in tmp_path.iterdir()] == ["seeds.json"]


# --------------------------------------------------------------------------------------------
# bench solvers: the profiler's USDT lines do not reach stderr; other output does
# --------------------------------------------------------------------------------------------
def test_profiler_noise_is_held_back_and_other_stderr_kept(capfd):
    import os
    import sys

    from andersonn.bench.solvers import profiler_quiet

    with profiler_quiet():
        os.write(2, b"USDT:2026-11-28 10:28:28 1:1 SyncActivityProfilerHandler.cpp:52] "
                    b"profiler_start\n")
        os.write(2, b"a real warning\n")
        print("from python", file=sys.stderr)
    os.write(2, b"USDT: after the block\n")  # not filtered outside it
    # (under capfd, Python's sys.stderr is captured apart from fd 2: the order may differ)
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "USDT: after the block", "a real warning", "from python"]


def test_dispatch_counts_print_nothing_on_stderr(capfd):
    import torch

    from andersonn.bench.cells import ConvDEQCell
    from andersonn.bench.solvers import dispatch_counts

    torch.manual_seed(0)
    cell = ConvDEQCell(4, 4, 1)
    counts = dispatch_counts(cell, torch.randn(2, 4, 4, 4), ["anderson"], (2, 3))
    assert counts["f"]["ops"] > 0 and counts["anderson"]["ops"] > 0
    assert capfd.readouterr().err == ""
