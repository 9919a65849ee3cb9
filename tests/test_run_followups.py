"""Session-22 follow-ups on runs: solver statistics gathered over ``torchrun`` ranks (the
residual trace over all samples, each step's nfev maximum over all ranks), a resume on another
number of processes, the note of an evaluation whose solves did not converge, ``explain --out``
reused, an output kept when no input succeeded, runs given twice or of different builds, the
device named as the Python API takes it, explain's small options, and workers that lose their
peers or their launcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from andersonn import crossval
from andersonn.cli import main
from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.training import distributed as dist_helpers
from andersonn.training import train
from andersonn.training.distributed import DistInfo
from andersonn.training.evaluation import eval_pass, pooled_trace

from helpers import assert_refused_when_parsed, toy_config, toy_dataset

# -- 1 and 2: the residual trace and nfev maxima over all ranks -------------------------------

N_SAMPLES, BATCH = 13, 3
COUNTS = [(i * 7) % 9 + 1 for i in range(N_SAMPLES)]  # each sample's solver iterations: 1..9


class _Counted(nn.Module):
    """Logits from a one-number input whose value is the sample's solver iterations k; its
    residual trace halves k times, then stops (NaN)."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.stats: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = x[:, 0].round().long()
        trace = torch.full((len(x), int(counts.max())), float("nan"), dtype=torch.float64)
        for row, k in enumerate(counts.tolist()):
            trace[row, :k] = 0.5 ** torch.arange(1, k + 1, dtype=torch.float64)
        self.stats = types.SimpleNamespace(nfev=counts.double(), residual=0.5 ** counts.double(),
                                           trace=trace)
        return torch.stack([x[:, 0], -x[:, 0]], dim=1)

    def solver_stats(self) -> dict[str, Any]:
        return {"forward": self.stats}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(COUNTS, dtype=torch.float32)[:, None]
    return x, torch.arange(N_SAMPLES) % 2


def _expected_trace() -> list[float]:
    """Every sample's trace, a stopped one kept at its last residual, averaged."""
    width = max(COUNTS)
    return [float(np.mean([0.5 ** min(i + 1, k) for k in COUNTS])) for i in range(width)]


def _expected_max(world: int) -> float:
    """The mean over steps of the largest count of all ranks' batches of the step."""
    shards = [COUNTS[r::world] for r in range(world)]
    steps = -(-len(shards[0]) // BATCH)
    return float(np.mean([max(c for s in shards for c in s[j * BATCH:(j + 1) * BATCH])
                          for j in range(steps)]))


def test_the_trace_pools_all_samples_and_a_stopped_batch_keeps_its_last_residual() -> None:
    short, long = np.array([1.0, 0.5]), np.array([1.0, 0.5, 0.25, 0.125])
    assert pooled_trace([(short, 1), (long, 3)], DistInfo()) == pytest.approx(
        [1.0, 0.5, (0.5 + 3 * 0.25) / 4, (0.5 + 3 * 0.125) / 4])
    assert pooled_trace([], DistInfo()) is None
    x, y = _data()
    got = eval_pass(_Counted(), x, y, 2, BATCH, torch.device("cpu"), DistInfo(), traces=True)
    assert got["residual_trace"] == pytest.approx(_expected_trace())
    # one process: the mean over batches of each batch's maximum, as before
    assert got["fwd_nfev_max"] == _expected_max(1)
    assert got["fwd_nfev"] == pytest.approx(np.mean(COUNTS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _eval_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    info = dist_helpers.setup(torch.device("cpu"))
    try:
        x, y = _data()
        got = eval_pass(_Counted(), x, y, 2, BATCH, torch.device("cpu"), info, traces=True)
        reduced = dist_helpers.all_reduce_max(torch.tensor([float(rank), -float(rank)]), info)
        record = {"trace": got["residual_trace"], "max": got["fwd_nfev_max"],
                  "nfev": got["fwd_nfev"], "reduced": reduced.tolist()}
    finally:
        dist_helpers.cleanup(info)
    (Path(out) / f"eval{rank}.json").write_text(json.dumps(record))


def test_two_ranks_report_the_trace_of_all_samples_and_each_steps_maximum(tmp_path: Path
                                                                          ) -> None:
    mp.spawn(_eval_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    records = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in (0, 1)]
    assert records[0] == records[1]
    got = records[0]
    assert got["reduced"] == [1.0, 0.0]
    # the trace of all 13 samples (rank 0's 7 alone would differ), as one process has it
    assert got["trace"] == pytest.approx(_expected_trace())
    assert got["max"] == _expected_max(2)
    # the per-rank maxima averaged (the old reduction) would have been lower
    shards = [COUNTS[r::2] for r in (0, 1)]
    per_rank = [max(s[j * BATCH:(j + 1) * BATCH]) for s in shards
                for j in range(-(-len(s) // BATCH))]
    assert got["max"] > float(np.mean(per_rank))
    assert got["nfev"] == pytest.approx(np.mean(COUNTS))


# -- 3: a resume on another number of processes ----------------------------------------------

def test_a_resume_on_another_world_size_is_noted_and_recorded(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    data = toy_dataset()
    run = tmp_path / "run"
    train(toy_config(), run, dataset=data, progress=False)
    assert [json.loads(line)["world_size"]
            for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    # as if epoch 1 had run under torchrun --nproc_per_node 2
    state_file = run / "checkpoints" / "epoch-0001" / "state.json"
    state = json.loads(state_file.read_text())
    state["history"][-1]["world_size"] = 2
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    train(toy_config(epochs=2), run, dataset=data, progress=False, resume=True)
    assert capsys.readouterr().err == (
        f"andersonn: note: {run}: epoch 1 ran on 2 processes, this resume on 1: the global "
        "batch stays 16 (16 per process) and the data order too, but sums run in another "
        "order: the run will not repeat an uninterrupted one bit for bit\n")
    config = json.loads((run / "config.json").read_text())
    assert config["resumes"] == [{"after_epoch": 1, "changed": {"epochs": [1, 2],
                                                                "world_size": [2, 1]}}]
    assert [json.loads(line)["world_size"]
            for line in (run / "metrics.jsonl").read_text().splitlines()] == [2, 1]
    # the same number of processes again: no note, no record
    train(toy_config(epochs=3), run, dataset=data, progress=False, resume=True)
    assert capsys.readouterr().err == ""
    assert json.loads((run / "config.json").read_text())["resumes"][1:] == [
        {"after_epoch": 2, "changed": {"epochs": [2, 3]}}]


# -- 4: an evaluation whose solves stopped short --------------------------------------------

def _labels_csv(folder: Path) -> Path:
    path = folder / "mine.csv"
    path.write_text("smiles,class\nCCO,strongly polar\nCCCC,weakly polar\n")
    return path


def test_unconverged_solves_in_an_evaluation_are_counted_and_noted(
        polarity_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table, out = _labels_csv(tmp_path), tmp_path / "scores.json"
    argv = ["evaluate", str(polarity_run), "--labels", str(table), "--no-progress",
            "--out", str(out)]
    assert main([*argv, "--max-iter", "1", "--tol", "1e-9"]) == 0
    err = capsys.readouterr().err
    assert ("andersonn: warning: the fixed-point solve of 2 of 2 inputs stopped short of its "
            "tolerance: their scores are those of unconverged solves; raise --max-iter (now 1) "
            "or try another --solver\n") in err
    assert json.loads(out.read_text())["unconverged"] == [2]
    assert main([*argv, "--max-iter", "60", "--tol", "0.5"]) == 0
    assert "stopped short" not in capsys.readouterr().err
    assert json.loads(out.read_text())["unconverged"] == [0]


# -- 5, 6 and 10: explain --out reused, outputs kept, small options --------------------------

def test_explain_out_reused_removes_only_its_own_earlier_pictures(
        polarity_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "why"
    explain = ["explain", str(polarity_run), "--steps", "2", "--out", str(folder)]
    assert main([*explain, "CCO"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["001-CCO.png", "explanations.json"]
    record = json.loads((folder / "explanations.json").read_text())
    assert record["atom_index_base"] == 0
    # files of the user's, one of them named like a drawing but not listed as one
    for name in ("notes.png", "002-other.png", "keep.txt"):
        (folder / name).write_text("mine")
    capsys.readouterr()
    assert main([*explain, "CC", "CCN"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"→ {folder / 'explanations.json'} and 2 picture(s); removed 1 picture(s) of an "
        "earlier explain there")
    assert sorted(p.name for p in folder.iterdir()) == [
        "001-CC.png", "002-CCN.png", "002-other.png", "explanations.json", "keep.txt",
        "notes.png"]
    # a record naming other files (edited by hand) never removes them
    (tmp_path / "outside.png").write_text("mine")
    (folder / "explanations.json").write_text(json.dumps({"explanations": [
        {"picture": "keep.txt"}, {"picture": "../outside.png"}, {"picture": "notes.png"}]}))
    assert main([*explain, "CC"]) == 0
    assert "removed" not in capsys.readouterr().out
    assert (folder / "keep.txt").is_file() and (folder / "notes.png").is_file()
    assert (tmp_path / "outside.png").is_file()


def test_an_existing_output_is_kept_when_no_input_succeeds(
        polarity_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "preds.csv"
    preds.write_text("earlier\n")
    assert main(["predict", str(polarity_run), "((", "--out", str(preds), "--no-progress"]) == 2
    assert preds.read_text() == "earlier\n"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"andersonn: error: no input could be predicted (1 given); the existing {preds} is "
        "kept as it was")
    fresh = tmp_path / "new.csv"  # nothing to keep: the record of errors is written
    assert main(["predict", str(polarity_run), "((", "--out", str(fresh), "--no-progress"]) == 2
    assert "error" in fresh.read_text()
    folder = tmp_path / "why"
    folder.mkdir()
    (folder / "explanations.json").write_text("earlier")
    (folder / "001-CCO.png").write_text("earlier")
    capsys.readouterr()
    assert main(["explain", str(polarity_run), "((", "--out", str(folder)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"andersonn: error: no input could be explained (1 given); the existing "
        f"{folder / 'explanations.json'} is kept as it was")
    assert (folder / "explanations.json").read_text() == "earlier"
    assert (folder / "001-CCO.png").read_text() == "earlier"


def test_explain_target_case_steps_and_top(polarity_run: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.explain import _target_class, explain
    from andersonn.predict import Classifier

    assert main(["explain", str(polarity_run), "CCO", "--steps", "2",
                 "--target", "STRONGLY Polar"]) == 0
    assert "log p(strongly polar)" in capsys.readouterr().out
    assert _target_class("b", ["A", "B"]) == "B"
    assert _target_class("ab", ["ab", "AB"]) == "ab"  # exact first
    with pytest.raises(InputError, match=r"^class 'ab' matches 'Ab', 'aB' but for case; give "
                                         r"one of them exactly$"):
        _target_class("ab", ["Ab", "aB"])
    with pytest.raises(InputError, match=r"^unknown class 'polar'; this run's classes are "
                                         r"a, b$"):
        _target_class("polar", ["a", "b"])
    with pytest.raises(InputError, match=r"^steps must be at least 1, got 0$"):
        explain(Classifier.load(polarity_run), ["CCO"], steps=0)
    assert_refused_when_parsed(["explain", str(polarity_run), "CCO", "--top", "-1"], capsys,
                               "argument --top: must be at least 0, got -1")


# -- 7 and 8: runs given twice, runs of different builds ----------------------------------

def test_a_run_given_twice_is_refused(polarity_run: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = str(polarity_run)
    assert main(["evaluate", run, run]) == 2
    assert capsys.readouterr().err == (f"andersonn: error: run {run} is given twice; an "
                                       "ensemble needs distinct runs: give each once\n")
    assert main(["evaluate", run, run + "/", "--labels", "x.csv"]) == 2
    assert capsys.readouterr().err == (f"andersonn: error: run {run} is given twice (as {run} "
                                       f"and {run}/); an ensemble needs distinct runs: give "
                                       "each once\n")
    assert main(["predict", run, "CCO", "--ensemble", run]) == 2
    assert "is given twice" in capsys.readouterr().err


def test_runs_of_different_builds_are_named_with_their_builds(polarity_run: Path,
                                                              tmp_path: Path) -> None:
    from andersonn.evaluate import evaluate_split

    runs = [tmp_path / "a", tmp_path / "b"]
    for run, key, fold in zip(runs, ("aaaa", "bbbb"), (None, 2), strict=True):
        shutil.copytree(polarity_run, run)
        config = json.loads((run / "config.json").read_text())
        config["dataset"]["cache_key"] = key
        if fold:
            config["train"].update(folds=5, fold=fold)
        (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(AndersonnError) as refused:
        evaluate_split(runs)
    assert str(refused.value) == (
        "the runs were trained on different dataset builds (source or --limit) or "
        f"cross-validation folds, so their splits differ ({runs[0]}: build aaaa; {runs[1]}: "
        "build bbbb, fold 2 of 5); evaluate them apart")


# -- 10: a device the Python API was given is named as it takes it -------------------------

def test_an_unusable_device_is_named_as_the_caller_gave_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    named = r"^TrainConfig\(device='cuda'\): no CUDA device is available here$"
    with pytest.raises(ConfigError, match=named):
        train(toy_config(device="cuda"), tmp_path / "run", dataset=toy_dataset(), progress=False)
    with pytest.raises(ConfigError, match=named):
        crossval.cross_validate(toy_config(device="cuda"), tmp_path / "cv", folds=2,
                                progress=False)
    assert main(["train", "polarity", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ("andersonn: error: --device cuda: no CUDA device is "
                                       "available here\n")


# -- 11: a worker that loses its peers, workers whose launcher dies -----------------------

GLOO_LOST = ("[third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
             "[127.0.0.1]:10141. This is typically caused by a remote worker crashing.")


def test_a_lost_peer_is_one_line_with_the_checkpoint_and_the_resume_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.training as training

    run = tmp_path / "run"
    train(toy_config(), run, dataset=toy_dataset(), progress=False)

    def lost(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(GLOO_LOST)

    monkeypatch.setattr(training, "train", lost)
    argv = ["train", "polarity", "--out", str(run), "--resume", "--no-progress"]
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"andersonn: error: rank 1 lost its peers: another worker died; the last checkpoint "
        f"is {run / 'checkpoints' / 'epoch-0001'} (epoch 1); `torchrun --nproc_per_node 2 -m "
        f"andersonn train polarity --out {run} --resume` continues from it\n")
    fresh = tmp_path / "fresh"
    assert main(["train", "polarity", "--out", str(fresh), "--no-progress"]) == 1
    assert capsys.readouterr().err.endswith(
        "another worker died; no epoch had finished; `torchrun --nproc_per_node 2 -m andersonn "
        f"train polarity --out {fresh} --resume` starts it again\n")
    # another RuntimeError, or one process: not a lost peer (a defect keeps its traceback)
    assert dist_helpers.is_lost_peer(torch.distributed.DistNetworkError("x"))
    assert not dist_helpers.is_lost_peer(RuntimeError("shape mismatch"))
    # a backend error or a store timeout is not called a dead worker: its own words are kept
    timeout = torch.distributed.DistStoreError("wait timeout after 30000ms, keys: /barrier\nmore")
    assert dist_helpers.is_lost_peer(timeout)
    assert dist_helpers.collective_failure(timeout) == (
        "a collective failed (DistStoreError: wait timeout after 30000ms, keys: /barrier)")
    assert dist_helpers.collective_failure(RuntimeError(GLOO_LOST)) == (
        "lost its peers: another worker died")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        main(argv)


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def prctl(self, *args: int) -> int:
        self.calls.append(args)
        return 0


def test_die_with_parent_asks_linux_for_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _FakeLibc()
    opened: list[Any] = []

    def cdll(name: Any, use_errno: bool = False) -> _FakeLibc:
        opened.append(name)
        return libc

    monkeypatch.setattr(dist_helpers.ctypes, "CDLL", cdll)
    monkeypatch.setattr(dist_helpers.sys, "platform", "linux")
    assert dist_helpers.die_with_parent() is True
    assert libc.calls == [(1, int(signal.SIGTERM), 0, 0, 0)]  # PR_SET_PDEATHSIG, SIGTERM
    monkeypatch.setattr(dist_helpers.sys, "platform", "darwin")  # a no-op elsewhere
    assert dist_helpers.die_with_parent() is False and len(libc.calls) == 1

    def broken(name: Any, use_errno: bool = False) -> None:
        raise OSError("no libc")

    monkeypatch.setattr(dist_helpers.sys, "platform", "linux")
    monkeypatch.setattr(dist_helpers.ctypes, "CDLL", broken)
    assert dist_helpers.die_with_parent() is False


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie no one reaps counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.split()[1:2] == ["Z"] for line in status.splitlines()
               if line.startswith("State:"))


CHILD = ("import time\nfrom andersonn.training.distributed import die_with_parent\n"
         "assert die_with_parent()\nprint('ready', flush=True)\ntime.sleep(60)\n")
PARENT = ("import subprocess, sys, time\n"
          f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}], stdout=subprocess.PIPE)\n"
          "assert child.stdout.readline().strip() == b'ready'\n"
          "print(child.pid, flush=True)\ntime.sleep(60)\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_ends_when_its_launcher_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
