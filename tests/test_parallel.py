"""Crash-tolerant process mapping: an input that kills its worker fails alone, the rest finish
in order (featurising and prediction both read structures this way)."""

from __future__ import annotations

import faulthandler
import os
import signal

import numpy as np
import pytest

from andersonn.images import batch
from andersonn.parallel import map_in_processes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

BAD = {7, 8, 15}


def _die() -> None:
    faulthandler.disable()  # keep pytest's crash dump of the worker out of the log
    os.kill(os.getpid(), signal.SIGSEGV)  # what a crash in native code looks like


def _square_or_die(x: int) -> int:
    if x in BAD:
        _die()
    return x * x


@pytest.mark.parametrize("chunksize", [None, 1, 4, 64])
def test_crashing_items_fail_alone_and_order_is_kept(chunksize):
    items = list(range(20))
    out = list(map_in_processes(_square_or_die, items, 2, chunksize=chunksize,
                                crashed=lambda x: f"crashed {x}"))
    assert out == [f"crashed {x}" if x in BAD else x * x for x in items]


def test_no_crash_gives_plain_map():
    assert list(map_in_processes(abs, [-3, 2, -1], 3, crashed=lambda x: None)) == [3, 2, 1]


def _fake_featurize(content, fmt, name, spec):
    if name == "bad":
        _die()
    return (np.full(spec.shape, float(content), dtype=np.float32), None)


def test_featurize_many_survives_a_worker_crash(monkeypatch):
    # fork copies the patched module into the workers
    monkeypatch.setattr(batch, "_featurize_summarized", _fake_featurize)
    inputs = [(k, "smiles", "bad" if k == 3 else f"m{k}") for k in range(10)]
    result = batch.featurize_many(inputs, "polarity", workers=2, progress=False, chunksize=4)
    assert result.ok_indices == [k for k in range(10) if k != 3]
    assert [img.flat[0] for img in result.images] == [float(k) for k in result.ok_indices]
    assert [(i, n) for i, n, _ in result.failures] == [(3, "bad")]
    assert "crashed the process" in result.failures[0][2]


_ORPHAN_SCRIPT = """
import os, sys, time
from andersonn.parallel import map_in_processes

def slow(x):
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(60)
    return x

list(map_in_processes(slow, list(range(4)), 2, crashed=lambda x: None, chunksize=1))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    import subprocess
    import sys
    import time

    pids_file = tmp_path / "pids"
    script = tmp_path / "run.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pids_file)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pids_file.exists() and len(pids_file.read_text().split()) >= 2:
                break
            time.sleep(0.1)
        workers = [int(p) for p in pids_file.read_text().split()]
        assert len(workers) >= 2
    finally:
        parent.kill()  # kill -9: no cleanup code of the parent runs
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)


def _record_start(path: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")


def test_a_crash_far_into_the_first_chunks_costs_few_pools(tmp_path):
    # the culprit sits in another worker's chunk: isolating one item per restart used to cost
    # about two pools per item between the last result and the culprit
    starts = tmp_path / "starts"
    out = list(map_in_processes(_square_or_die_at_40, list(range(200)), 2, chunksize=32,
                                crashed=lambda x: None, initializer=_record_start,
                                initargs=(str(starts),)))
    assert out == [None if x == 40 else x * x for x in range(200)]
    pools = len(starts.read_text().split())  # one line per worker process started
    assert pools <= 8, pools


def _square_or_die_at_40(x: int) -> int:
    if x == 40:
        _die()
    return x * x


def _failing_initializer() -> None:
    raise RuntimeError("no RDKit here")


def test_an_initializer_error_is_raised_once_not_reported_as_crashes():
    with pytest.raises(RuntimeError, match="no RDKit here"):
        list(map_in_processes(abs, list(range(30)), 2, crashed=lambda x: "crashed",
                              initializer=_failing_initializer))
