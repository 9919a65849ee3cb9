"""Molecules with elements on which RDKit's extended-Hückel code ends the process (exit/abort)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from andersonn.images import physics

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("z", [30, 47, 54, 58, 92])
def test_elements_that_end_the_process_in_the_hueckel_code_skip_that_retry(z: int) -> None:
    assert z in physics._HUECKEL_FATAL


def test_a_zinc_chloride_image_is_made_in_a_process_that_survives(tmp_path: Path) -> None:
    # a fatal C exit cannot be caught: run it in a child process and check it finishes
    code = ("from andersonn.structures import read_structure\n"
            "from andersonn.images import encode\n"
            "print(encode(read_structure('Cl[Zn]Cl'), 'polarity').shape)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ANDERSONN_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert done.stdout.startswith("(")
