"""The CPU allocator tuning: applied once, switched off by the environment, harmless elsewhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from andersonn import runtime

PROBE = (
    "import json, andersonn.runtime as r; first = r.tune_cpu_allocator(); "
    "print(json.dumps([first, r.tune_cpu_allocator(), r.cpu_allocator_tuned()]))"
)


def _run_probe(env_value: str | None) -> list[bool]:
    import json
    import os

    env = dict(os.environ)
    env.pop(runtime.ENV_SWITCH, None)
    if env_value is not None:
        env[runtime.ENV_SWITCH] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


@pytest.mark.skipif(runtime._libc() is None, reason="needs glibc")
def test_tunes_glibc_once_and_reports_it() -> None:
    assert _run_probe(None) == [True, True, True]


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_environment_switch_disables_tuning(value: str) -> None:
    assert _run_probe(value) == [False, False, False]


def test_no_libc_means_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime, "_libc", lambda: None)
    monkeypatch.delenv(runtime.ENV_SWITCH, raising=False)
    assert runtime.tune_cpu_allocator() is False
    assert runtime.cpu_allocator_tuned() is False


def test_rejected_setting_is_not_reported_as_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            return 0 if param == runtime._M_MMAP_THRESHOLD else 1

    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime, "_libc", lambda: FakeLibc())
    monkeypatch.delenv(runtime.ENV_SWITCH, raising=False)
    assert runtime.tune_cpu_allocator() is False


def test_cli_tunes_before_running_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import andersonn.cli as cli

    calls: list[bool] = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append(True) or True)
    assert cli.main(["bench", "speedup", "polarity", "--seeds", "0"]) == 2  # a quick error
    assert calls == [True]
