"""DistributedDataParallel: two CPU processes (gloo) train the same model as one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from andersonn.data.cache import open_cache, write_cache
from andersonn.training import TrainConfig, train

CFG = {"task": "toy", "model": "deq", "epochs": 2, "hidden": 8, "batch_size": 16, "lr": 1e-2,
       "threads": 1, "seed": 3, "plots": False, "class_weights": "none", "tol": 1e-4,
       "max_iter": 40}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_cache(directory: Path, n: int = 192) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    images = rng.normal(size=(n, 3, 5, 4)).astype(np.float32)
    images[:, 0, :2, :] += 3.0 * (labels[:, None, None] - 0.5)
    splits = np.zeros(n, np.int8)
    splits[128:160] = 1
    splits[160:] = 2
    return write_cache(directory, images=images, labels=labels, ids=[str(i) for i in range(n)],
                       splits=splits, classes=["a", "b"], meta={"task": "toy"})


def _worker(rank: int, world: int, port: int, cache: str, out: str, variant: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    cfg = CFG if variant == "rank" else {**CFG, "epochs": 1, "jac_reg": 1.0}
    result = train(TrainConfig(**cfg), Path(out) / "run", dataset=open_cache(cache),
                   progress=False)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(out) / f"{variant}{rank}.safetensors"))
    if variant == "jac":
        assert result.history[0]["jac_loss"] > 0
        return
    temperature = result.run_config["calibration"]["temperature"]  # fitted on sharded val sums
    torch.save(torch.tensor([temperature], dtype=torch.float64), Path(out) / f"t{rank}.pt")
    if rank == 0:
        torch.save(torch.tensor([result.history[-1]["train_loss"],
                                 result.test_metrics["accuracy"]]), Path(out) / "metrics.pt")


def _ranks_in_step(tmp_path: Path, variant: str) -> dict[str, torch.Tensor]:
    """Train on 2 gloo processes; both must end with the same weights (rank 0's returned)."""
    cache = _make_cache(tmp_path / "cache")
    mp.spawn(_worker, args=(2, _free_port(), str(cache), str(tmp_path), variant), nprocs=2,
             join=True)
    r0 = load_file(tmp_path / f"{variant}0.safetensors")
    r1 = load_file(tmp_path / f"{variant}1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks ended with different weights"
    return r0


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    r0 = _ranks_in_step(tmp_path, "rank")
    cache = tmp_path / "cache"
    # only rank 0 wrote the run
    run = tmp_path / "run"
    assert (run / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    torch.set_num_threads(1)
    single = train(TrainConfig(**CFG), tmp_path / "single", dataset=open_cache(cache),
                   progress=False)
    ddp_loss, ddp_acc = torch.load(tmp_path / "metrics.pt", weights_only=True).tolist()
    s = single.model.state_dict()
    # same global batches → same model up to solver tolerance and float summation order
    # (Adam magnifies the noise of parameters whose gradient is ~0, hence the abs bound)
    for k, v in s.items():
        assert float((v - r0[k]).abs().max()) < 2e-2, k
    flat_s = torch.cat([v.flatten() for v in s.values()])
    flat_d = torch.cat([r0[k].flatten() for k in s])
    assert float((flat_s - flat_d).norm() / flat_s.norm()) < 5e-3
    assert single.history[-1]["train_loss"] == pytest.approx(ddp_loss, rel=1e-2)
    assert single.test_metrics["accuracy"] == pytest.approx(ddp_acc, abs=0.05)
    # calibration: every rank fits the same temperature, close to one process's on the same data
    t0, t1 = (float(torch.load(tmp_path / f"t{r}.pt", weights_only=True)) for r in (0, 1))
    assert t0 == t1
    assert single.run_config["calibration"]["temperature"] == pytest.approx(t0, rel=5e-2)


def test_two_process_ddp_with_the_jacobian_penalty(tmp_path: Path) -> None:
    """The penalty's double backward runs inside DDP's forward; ranks must stay in step."""
    _ranks_in_step(tmp_path, "jac")


LABELS = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"


def _loader_worker(rank: int, world: int, port: int, out: str, labels: str,
                   caches: list[str]) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "ANDERSONN_CACHE": caches[rank]})
    from andersonn.errors import AndersonnError
    from andersonn.training.distributed import cleanup, setup
    from andersonn.training.inputs import load_task_dataset

    info = setup(torch.device("cpu"))
    try:
        ds = load_task_dataset(TrainConfig(labels=labels, bins=[2.5], workers=1), info,
                               progress=False)
        result = f"ok {ds.directory.name} {len(ds.labels)}"
    except AndersonnError as exc:
        result = f"error {exc}"
    finally:
        cleanup(info)
    (Path(out) / f"load{rank}.txt").write_text(result)


def _load_on_two_ranks(tmp_path: Path, labels: Path, caches: list[Path]) -> list[str]:
    mp.spawn(_loader_worker, args=(2, _free_port(), str(tmp_path), str(labels),
                                   [str(c) for c in caches]), nprocs=2, join=True)
    return [(tmp_path / f"load{r}.txt").read_text() for r in (0, 1)]


def test_every_rank_opens_rank_0s_build_or_all_stop_with_one_message(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    first, second = _load_on_two_ranks(tmp_path, LABELS, [shared, shared])
    assert first.startswith("ok ") and first == second  # the same build, by its key
    # a machine whose cache lacks rank 0's build: both ranks stop, with that rank's reason
    # (rank 1 used to train on its own latest build, or wait forever for rank 0)
    results = _load_on_two_ranks(tmp_path, LABELS, [shared, tmp_path / "empty"])
    assert results[0] == results[1]
    assert results[0].startswith("error rank 1: dataset build") and "ANDERSONN_CACHE" in results[0]
    # a labels file rank 0 refuses: rank 1 gets the same one-line error
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles,dipole\nC,1\n")
    results = _load_on_two_ranks(tmp_path, bad, [shared, shared])
    assert results[0] == results[1] and results[0].startswith("error ")


# -- a train split the ranks cannot share evenly, clocks that disagree, rank 0's refusals -----
ODD = {**CFG, "class_weights": "auto", "max_time_s": 1000.0}


def _odd_cache(directory: Path) -> Path:
    """191 training structures (not divisible by 2), imbalanced classes (weighted loss)."""
    rng = np.random.default_rng(1)
    n = 251
    labels = (rng.random(n) < 0.3).astype(np.int64)
    images = rng.normal(size=(n, 3, 5, 4)).astype(np.float32)
    images[:, 0, :2, :] += 3.0 * (labels[:, None, None] - 0.5)
    splits = np.zeros(n, np.int8)
    splits[191:221] = 1
    splits[221:] = 2
    return write_cache(directory, images=images, labels=labels, ids=[str(i) for i in range(n)],
                       splits=splits, classes=["a", "b"], meta={"task": "toy"})


class _FastClock:
    """time for rank 1 only: its clock runs a million times fast (every epoch past max_time_s)."""

    def __init__(self) -> None:
        import time

        self._time, self._t0 = time, time.perf_counter()

    def perf_counter(self) -> float:
        return self._t0 + (self._time.perf_counter() - self._t0) * 1e6

    def __getattr__(self, name: str) -> object:
        return getattr(self._time, name)


def _workflow_worker(rank: int, world: int, port: int, cache: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    import andersonn.training.trainer as trainer
    from andersonn.errors import AndersonnError
    from andersonn.training.distributed import cleanup, setup

    info = setup(torch.device("cpu"))  # one group for all the calls below
    messages = []
    # rank 0 alone looks at the run directory: a refusal must stop both ranks, one message
    for resume, folder in ((False, "held"), (True, "notarun")):
        try:
            train(TrainConfig(**CFG), Path(out) / folder, resume=resume,
                  dataset=open_cache(cache), progress=False)
            messages.append("trained")
        except AndersonnError as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
    (Path(out) / f"refused{rank}.txt").write_text("\n".join(messages))
    if rank == 1:
        trainer.time = _FastClock()  # type: ignore[assignment]
    result = train(TrainConfig(**ODD), Path(out) / "odd", dataset=open_cache(cache),
                   progress=False)
    cleanup(info)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(out) / f"odd{rank}.safetensors"))
    (Path(out) / f"odd{rank}.json").write_text(json.dumps(
        [r["train_loss"] for r in result.history]))


def test_two_processes_stop_together_and_train_an_odd_split_as_one_process(tmp_path: Path
                                                                           ) -> None:
    cache = _odd_cache(tmp_path / "cache")
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "checkpoint.json").write_text("{}")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "other.txt").write_text("x")
    mp.spawn(_workflow_worker, args=(2, _free_port(), str(cache), str(tmp_path)), nprocs=2,
             join=True)
    refused = [(tmp_path / f"refused{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert refused[0] == refused[1], refused
    assert refused[0][0] == (f"AndersonnError: {tmp_path / 'held'} already holds a run; pass "
                             "--resume to continue it or choose another --out")
    assert refused[0][1].startswith(f"ConfigError: cannot resume {tmp_path / 'notarun'}: it "
                                    "holds no run")

    # rank 1's clock says the time limit is passed; rank 0's decides: both train 2 epochs
    losses = [json.loads((tmp_path / f"odd{r}.json").read_text()) for r in (0, 1)]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    r0, r1 = (load_file(tmp_path / f"odd{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks ended with different weights"
    torch.set_num_threads(1)
    single = train(TrainConfig(**ODD), tmp_path / "single", dataset=open_cache(cache),
                   progress=False)
    # 191 samples, not 192 with a repeat; the weighted loss normalised over the global batch
    assert single.history[0]["train_loss"] == pytest.approx(losses[0][0], rel=1e-4)
    assert single.history[1]["train_loss"] == pytest.approx(losses[0][1], rel=1e-3)
    s = single.model.state_dict()
    flat_s = torch.cat([v.flatten() for v in s.values()])
    flat_d = torch.cat([r0[k].flatten() for k in s])
    assert float((flat_s - flat_d).norm() / flat_s.norm()) < 5e-3  # as in the test above
