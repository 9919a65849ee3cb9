"""Explanations: which atoms each image row stands for, integrated gradients that add up, and
the ``explain`` command on a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.explain import attribute
from andersonn.images import encode, encode_with_atoms
from andersonn.models import build_model
from andersonn.structures import read_structure
from andersonn.training import TrainConfig, train

FIXTURES = Path(__file__).parent / "fixtures"
STRUCTURES = FIXTURES / "structures"
DIPOLES = FIXTURES / "labelled" / "qm9_dipoles.csv"


@pytest.mark.parametrize(("name", "spec", "rows"), [
    ("ethanol.mol", "polarity", 9),           # one atom per row
    ("NaCl.cif", "crystal-gap", 2),           # symmetry-equivalent sites merged
    ("mof_ABAVIJ_clean.cif", "mof-pore", 48),  # 108 atoms, environments reduced to 48 rows
])
def test_every_atom_belongs_to_one_row_of_its_element(name, spec, rows):
    s = read_structure(STRUCTURES / name)
    image, symbols, members = encode_with_atoms(s, spec)
    assert np.array_equal(image, encode(s, spec))  # the same image as ever
    assert len(members) == rows
    assert np.array_equal(np.sort(np.concatenate(members)), np.arange(s.n_atoms))
    for symbol, atoms in zip(symbols, members, strict=False):
        assert {s.symbols[a] for a in atoms} == {symbol}
    if name == "NaCl.cif":
        supercell = read_structure(STRUCTURES / "NaCl_221.cif")
        assert [len(m) for m in encode_with_atoms(supercell, spec)[2]] == [16, 16]


def test_integrated_gradients_add_up_to_the_change_in_log_probability():
    torch.manual_seed(0)
    model = build_model("deq", in_channels=3, height=6, width=4, num_classes=3, hidden=8,
                        groups=4, solver="anderson",
                        solver_options={"tol": 1e-7, "max_iter": 200},
                        backward_options={"tol": 1e-7, "max_iter": 200})
    model.set_normalization(torch.tensor([0.5, -0.3, 0.2]), torch.tensor([1.0, 0.7, 1.3]))
    image = np.random.default_rng(0).normal(size=(3, 6, 4)).astype(np.float32)
    # from a third of the image (a smooth stretch of the path; near the zero image GroupNorm
    # sees an almost constant input and the integrand is rough: that shows as the gap)
    attribution, log_p, log_p_start = attribute(model, image, target=2, steps=64,
                                                baseline=image / 3)
    assert attribution.shape == image.shape and np.abs(attribution).max() > 0
    with torch.no_grad():
        direct = torch.log_softmax(model(torch.as_tensor(image)[None]), dim=1)[0, 2]
    assert log_p == pytest.approx(float(direct), abs=1e-5)
    change = log_p - log_p_start
    assert abs(change) > 0.05
    assert attribution.sum() == pytest.approx(change, abs=0.01 * abs(change))
    same, _, _ = attribute(model, image, target=2, steps=8, baseline=image)
    assert np.abs(same).max() == 0  # no path, nothing to attribute
    blank = np.where(np.arange(6)[None, :, None] < 3, image, 0).astype(np.float32)
    rows = attribute(model, blank, target=0, steps=16)[0].sum(axis=(0, 2))
    assert np.all(rows[3:] == 0)  # empty rows carry no share


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("explain") / "run"
    train(TrainConfig(labels=str(DIPOLES), bins=[2.5], epochs=1, hidden=8, threads=1,
                      workers=1, plots=False), folder, progress=False)
    return folder


def test_explain_command_shares_add_up_and_bad_inputs_fail_alone(run, tmp_path, capsys):
    out = tmp_path / "why"
    argv = ["explain", str(run), "CC(=O)N", "xx(", str(STRUCTURES / "NaCl.cif"), "",
            "--steps", "8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "CC(=O)N →" in printed.out and "O3" in printed.out
    # a failed input is reported on stderr, as predict reports it, naming the input once
    assert "xx(" not in printed.out and "unparsable SMILES" not in printed.out
    assert "andersonn: cannot explain xx(: unparsable SMILES" in printed.err
    assert "molecules only" in printed.err
    # a blank input is named visibly, once (it was "cannot explain : '': empty input")
    assert "andersonn: cannot explain '': empty input" in printed.err
    records = json.loads((out / "explanations.json").read_text())["explanations"]
    good, bad, crystal, _ = records
    assert len(good["atom_shares"]) == 9 and good["symbols"][2] == "O"
    assert sum(good["atom_shares"]) + good["whole_structure"] + good["gap"] == pytest.approx(
        good["total"], abs=1e-5)
    assert good["total"] == pytest.approx(good["log_p"] - good["log_p_empty"])
    assert good["target"] == good["predicted"]
    assert sum(good["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "unparsable" in bad["error"] and "molecules only" in crystal["error"]
    assert (out / good["picture"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["explain", str(run), "CC(=O)N", "--steps", "8", "--target", "< 2.5"]) == 0
    assert "log p(< 2.5)" in capsys.readouterr().out
    assert main(["explain", str(run), "CCO", "--target", "polar"]) == 2
    assert "unknown class 'polar'" in capsys.readouterr().err
    assert main(["explain", str(run), "xx("]) == 2  # nothing could be explained
