"""Benchmark settings refused in one line before any work: a build without a test split, a
negative seed, a memory budget that is not a finite positive number."""

from __future__ import annotations

import types

import numpy as np
import pytest

from andersonn.bench.memory import MemorySettings
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
