"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import tiny_polarity_dataset, tiny_polarity_run


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared 2-core CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """No test reads or writes the user's dataset cache: each session gets an empty one."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ANDERSONN_CACHE", str(tmp_path_factory.mktemp("andersonn-cache")))
    yield
    mp.undo()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Dataset builds featurise with ``test_data.FakeFeaturizer`` (fast, deterministic images
    per entry name) instead of the real featuriser; returns it."""
    from test_data import FakeFeaturizer

    from andersonn.data import build

    feat = FakeFeaturizer()
    monkeypatch.setattr(build, "_images_api", feat.api)
    return feat


@pytest.fixture(scope="session")
def polarity_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained polarity run (one epoch of a hidden-8 DEQ), shared by the prediction tests;
    a test that changes it works on a copy."""
    root = tmp_path_factory.mktemp("polarity-run")
    return tiny_polarity_run(tiny_polarity_dataset(root), root / "run")
