"""Warm starts across epochs: the table, the model's z0 path, fewer solver iterations."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from andersonn.data.cache import open_cache
from andersonn.models import build_model
from andersonn.training import train
from andersonn.training.distributed import DistInfo
from andersonn.training.warm_start import WarmStarts
from tests.test_training import cfg, make_cache

torch.set_num_threads(1)


def test_table_starts_cold_and_keeps_finite_states() -> None:
    warm = WarmStarts(5, (2, 3))
    assert warm.nbytes == 5 * 6 * 2
    index = torch.tensor([1, 3])
    assert torch.equal(warm.lookup(index, torch.device("cpu")), torch.zeros(2, 2, 3))
    states = torch.randn(2, 2, 3)
    states[1, 0, 0] = float("nan")  # a broken state is not kept: that sample stays cold
    warm.store(index, states)
    got = warm.lookup(torch.tensor([1, 3, 0]), torch.device("cpu"))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got[0], states[0].half().float())
    assert torch.equal(got[1], torch.zeros(2, 3)) and torch.equal(got[2], torch.zeros(2, 3))


def test_deq_started_at_its_fixed_point_needs_almost_no_iterations() -> None:
    torch.manual_seed(0)
    model = build_model("deq", in_channels=3, height=5, width=4, num_classes=2, hidden=8,
                        solver="anderson", solver_options={"tol": 1e-6, "max_iter": 80})
    x = torch.randn(6, 3, 5, 4)
    with torch.no_grad():
        cold = model(x)  # training mode: the state is kept
        cold_nfev = model.solver_stats()["forward"].nfev.float().mean()
        state = model.last_state
        assert state.shape == (6, 8, 5, 4)
        warm = model(x, state)
        warm_nfev = model.solver_stats()["forward"].nfev.float().mean()
        model.eval()
        model(x)
        assert model.last_state is None  # inference keeps no batch-sized state
    assert cold_nfev >= 8 and warm_nfev <= 2
    torch.testing.assert_close(warm, cold, atol=1e-4, rtol=1e-4)


def test_explicit_network_ignores_z0() -> None:
    torch.manual_seed(0)
    model = build_model("explicit", in_channels=3, height=5, width=4, num_classes=2, hidden=8,
                        depth=2).eval()
    x = torch.randn(4, 3, 5, 4)
    with torch.no_grad():
        assert torch.equal(model(x), model(x, torch.randn(4, 8, 5, 4)))


@pytest.fixture(scope="module")
def slow_toy(tmp_path_factory: pytest.TempPathFactory) -> object:
    return open_cache(make_cache(tmp_path_factory.mktemp("warm") / "cache", n=300))


def test_warm_started_training_solves_in_fewer_iterations(slow_toy: object,
                                                          tmp_path: Path) -> None:
    common = {"epochs": 4, "tol": 1e-4, "max_iter": 60, "lr": 3e-3}
    cold = train(cfg(**common), tmp_path / "cold", dataset=slow_toy, progress=False)
    warm = train(cfg(warm_start=True, **common), tmp_path / "warm", dataset=slow_toy,
                 progress=False)
    # epoch 1 is cold in both (same seed, same draws): identical
    assert warm.history[0]["fwd_nfev"] == pytest.approx(cold.history[0]["fwd_nfev"])
    for c, w in zip(cold.history[1:], warm.history[1:], strict=True):
        assert w["fwd_nfev"] < c["fwd_nfev"], (w["fwd_nfev"], c["fwd_nfev"])
    # the smaller the steps (the cosine schedule's tail), the closer last epoch's fixed point
    assert warm.history[-1]["fwd_nfev"] < 0.75 * cold.history[-1]["fwd_nfev"]
    assert warm.test_metrics["accuracy"] >= 0.8
    assert warm.run_config["train"]["warm_start"] is True


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        warm = WarmStarts(4, (3,), DistInfo(rank=rank, world_size=world, local_rank=rank))
        index = torch.tensor([rank, rank + 2])  # rank 0 solves samples 0, 2; rank 1: 1, 3
        warm.store(index, (index.float() + 1)[:, None].expand(2, 3) * (rank + 1))
        torch.save(warm.table.float(), Path(out) / f"table{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_share_their_states(tmp_path: Path) -> None:
    """Under torchrun each rank's table holds every rank's states, not only its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    t0, t1 = (torch.load(tmp_path / f"table{r}.pt", weights_only=True) for r in (0, 1))
    expected = torch.tensor([1.0, 4.0, 3.0, 8.0])[:, None].expand(4, 3)
    assert torch.equal(t0, expected) and torch.equal(t1, expected)
