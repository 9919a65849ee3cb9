"""Deep ensembles: the mean of the members' probabilities, summed iterations, refusal of runs
that disagree, the ``predict --ensemble`` command, and ``of_seeds`` + ``fit``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.ensemble import Ensemble
from andersonn.errors import AndersonnError, InputError
from andersonn.predict import Classifier

from helpers import tiny_polarity_dataset, tiny_polarity_run

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"
INPUTS = ["CCO", "CCCN", str(FIXTURES / "acetonitrile.xyz"), "((", str(FIXTURES / "ethanol.mol")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ensemble")
    dataset = tiny_polarity_dataset(root)
    return [tiny_polarity_run(dataset, root / f"seed{s}", seed=s) for s in (0, 1, 2)]


def test_probabilities_are_the_members_mean(runs: list[Path]) -> None:
    ens = Ensemble.from_runs(runs)
    solo = [Classifier.load(r) for r in runs]
    good = [i for i in INPUTS if i != "(("]
    member_probs = np.stack([c.predict_proba(good) for c in solo])
    assert not np.allclose(member_probs[0], member_probs[1])  # seeds give different models
    np.testing.assert_allclose(ens.predict_proba(good), member_probs.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(ens.member_probabilities(good), member_probs, atol=1e-7)
    assert list(ens.predict(good)) == [ens.classes_[i]
                                       for i in member_probs.mean(axis=0).argmax(axis=1)]
    assert len(ens) == 3 and "seed1" in repr(ens)

    preds = ens.predict_inputs(INPUTS)
    solo_preds = [c.predict_inputs(INPUTS) for c in solo]
    assert [p.ok for p in preds] == [True, True, True, False, True]
    assert "((" in preds[3].input and preds[3].error == solo_preds[0][3].error
    for i in (0, 1, 2, 4):
        assert preds[i].iterations == sum(s[i].iterations for s in solo_preds)
        for c in ens.classes_:
            mean = np.mean([s[i].probabilities[c] for s in solo_preds])
            assert preds[i].probabilities[c] == pytest.approx(mean, abs=1e-7)


def test_one_member_is_the_classifier(runs: list[Path]) -> None:
    one = Ensemble.load(runs[0])
    assert isinstance(one, Ensemble) and len(one) == 1
    clf = Classifier.load(runs[0])
    np.testing.assert_array_equal(one.predict_proba(["CCO", "CN"]),
                                  clf.predict_proba(["CCO", "CN"]))


def test_runs_that_disagree_are_refused(runs: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "relabelled"
    shutil.copytree(runs[1], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["classes"] = ["a", "b"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AndersonnError, match=r"relabelled: its classes .* differs"):
        Ensemble.from_runs([runs[0], other])
    with pytest.raises(InputError, match="at least one"):
        Ensemble.from_runs([])
    with pytest.raises(InputError, match="Classifier objects"):
        Ensemble(["not a classifier"])  # type: ignore[list-item]
    assert main(["predict", str(runs[0]), "CCO", "--ensemble", str(other)]) == 2


def test_predict_command_with_ensemble(runs: list[Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "preds.json"
    args = ["predict", str(runs[0]), "CCO", "((", "--ensemble", str(runs[1]),
            "--ensemble", str(runs[2]), "--out", str(out)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert record["ensemble"] == [str(r) for r in runs]
    expected = Ensemble.from_runs(runs).predict_proba(["CCO"])[0]
    got = record["predictions"][0]["probabilities"]
    assert [got[c] for c in record["classes"]] == pytest.approx(list(expected), abs=1e-6)
    assert not record["predictions"][1]["ok"]
    assert "cannot predict ((" in capsys.readouterr().err


def test_of_seeds_fit_on_arrays() -> None:
    rng = np.random.default_rng(0)
    y = np.array(["neg", "pos"] * 40)
    x = rng.normal(size=(80, 3, 4, 4)).astype(np.float32)
    x[:, 0] += np.where(y == "pos", 3.0, -3.0)[:, None, None]
    ens = Ensemble.of_seeds(2, model="explicit", epochs=3, hidden=8, depth=2, batch_size=16,
                            lr=1e-2, threads=1, seed=5)
    assert [m.train_config.seed for m in ens.members] == [5, 6]
    with pytest.raises(AndersonnError, match="not fitted"):
        ens.predict(x)
    ens.fit(x, y)
    assert list(ens.classes_) == ["neg", "pos"] and ens.score(x, y) > 0.9
    members = ens.member_probabilities(x)
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ens.predict_proba(x), members.mean(axis=0), atol=1e-7)
    with pytest.raises(InputError, match="at least 1"):
        Ensemble.of_seeds(0)
