"""Follow-ups of the Python API and of ``train``'s advice: a refused device is named as the
caller gave it (``Classifier.load(device=...)``, ``--device``), ``set_params`` on a fitted or
loaded classifier changes the solve its predictions use (and where it runs), a resume that
drops an unfinished run's temperature says so, and the advice after Ctrl-C under ``torchrun``
is a torchrun command."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.cli import main
from andersonn.ensemble import Ensemble
from andersonn.errors import AndersonnWarning, ConfigError
from andersonn.predict import Classifier
from andersonn.training import TrainConfig, calibrate_run, load_run, train

from helpers import SMILES, tiny_polarity_dataset


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def images(polarity_run: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Classifier.load(polarity_run).featurize(SMILES[:6])[0]


def _iterations(clf: Classifier, images: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a capped solve warns; the counts are what is compared
        warnings.simplefilter("ignore")
        return clf._infer(images)[1]


# -- 1: a refused device is named as the caller gave it -----------------------------------------
@pytest.mark.parametrize(("load", "named"), [
    (lambda run: Classifier.load(run, device="cuda"), "Classifier.load(device='cuda')"),
    (lambda run: Ensemble.from_runs([run], device="cuda:1"),
     "Ensemble.from_runs(device='cuda:1')"),
    (lambda run: Ensemble.load(run, device="cuda"), "Ensemble.load(device='cuda')"),
    (lambda run: load_run(run, device="cuda"), "load_run(device='cuda')"),
    (lambda run: calibrate_run(run, device="cuda"), "calibrate_run(device='cuda')"),
])
def test_python_callers_get_their_parameter_named(polarity_run: Path, no_cuda: None, load,
                                                  named: str) -> None:
    with pytest.raises(ConfigError,
                       match=f"^{re.escape(named)}: no CUDA device is available here$"):
        load(polarity_run)


def test_an_unknown_device_is_named_too(polarity_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"^Classifier\.load\(device='gpu0'\): unknown device "
                                          r"\(cpu, cuda, cuda:N or auto\)$"):
        Classifier.load(polarity_run, device="gpu0")


@pytest.mark.parametrize("command", [["predict", "{run}", "CCO"], ["evaluate", "{run}"],
                                     ["calibrate", "{run}"]])
def test_the_command_line_names_its_option(polarity_run: Path, no_cuda: None, command,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = [word.format(run=polarity_run) for word in command] + ["--device", "cuda"]
    assert main(argv) == 2
    assert capsys.readouterr().err == ("andersonn: error: --device cuda: no CUDA device is "
                                       "available here\n")


def test_calibrate_takes_device_auto(polarity_run: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from andersonn.training import runs

    run = tmp_path / "run"
    shutil.copytree(polarity_run, run)
    data = tiny_polarity_dataset(tmp_path / "data")
    monkeypatch.setattr(runs, "run_build", lambda run_config: data)
    assert main(["calibrate", str(run), "--device", "auto"]) == 0  # torch.device("auto") before
    assert calibrate_run(run, device="auto")["split"] == "val"


# -- 2: set_params on a fitted or loaded classifier changes the solve it predicts with ---------
def test_set_params_switches_the_solver_of_a_loaded_run(polarity_run: Path,
                                                        images: np.ndarray) -> None:
    clf = Classifier.load(polarity_run)
    anderson = _iterations(clf, images)
    forward = _iterations(Classifier.load(polarity_run, solver="forward"), images)
    assert not np.array_equal(anderson, forward)  # the two solvers are told apart
    assert clf.set_params(solver="forward") is clf
    assert clf.model_.solver_name == "forward"
    np.testing.assert_array_equal(_iterations(clf, images), forward)
    clf.set_params(solver="anderson")
    np.testing.assert_array_equal(_iterations(clf, images), anderson)
    clf.set_params(eval_max_iter=4)
    np.testing.assert_array_equal(_iterations(clf, images), np.full(len(images), 4.0))
    # eval_tol None: the training tol is the evaluation one
    clf.set_params(eval_max_iter=None, tol=1e-2)
    loose = _iterations(Classifier.load(polarity_run, solver_options={"tol": 1e-2}), images)
    np.testing.assert_array_equal(_iterations(clf, images), loose)


def test_a_loads_solver_override_shows_in_get_params_and_survives_set_params(
        polarity_run: Path, images: np.ndarray) -> None:
    clf = Classifier.load(polarity_run, solver="forward",
                          solver_options={"tol": 1e-2, "max_iter": 7})
    params = clf.get_params()
    assert (params["solver"], params["eval_tol"], params["eval_max_iter"]) == ("forward", 1e-2, 7)
    before = _iterations(clf, images)
    clf.set_params(predict_batch_size=2, epochs=3)  # nothing about the solve
    assert clf.model_.solver_name == "forward"
    assert clf.model_.solver_options == {"tol": 1e-2, "max_iter": 7}
    np.testing.assert_array_equal(_iterations(clf, images), before)


def test_a_refused_solver_change_leaves_the_model_as_it_was(polarity_run: Path) -> None:
    clf = Classifier.load(polarity_run)
    with pytest.raises(ConfigError, match=r"^set_params: unknown option 'm' for solver "
                                          r"'forward_iteration'"):
        clf.set_params(solver="forward", solver_options={"m": 3})
    assert clf.get_params()["solver"] == "anderson" and clf.get_params()["solver_options"] == {}
    assert clf.model_.solver_name == "anderson"
    assert clf.model_.solver_options == {"tol": 1e-3, "max_iter": 30}
    clf.set_params(solver_options={"m": 3})  # an anderson option: taken
    assert clf.model_.solver_options["m"] == 3
    clf.set_params(solver="forward", solver_options={})  # and dropped with the solver
    assert clf.model_.solver_name == "forward" and "m" not in clf.model_.solver_options


def test_set_params_device_moves_a_fitted_model(polarity_run: Path, no_cuda: None) -> None:
    clf = Classifier.load(polarity_run)
    with pytest.raises(ConfigError, match=r"^set_params\(device='cuda'\): no CUDA device is "
                                          r"available here$"):
        clf.set_params(device="cuda", solver="forward")
    assert clf.model_.solver_name == "anderson"  # refused as a whole
    assert clf.get_params()["device"] != "cuda"
    moved = []
    clf.model_.to = lambda device: moved.append(device)  # type: ignore[method-assign]
    clf.device = torch.device("meta")  # as if it had been loaded elsewhere
    clf.set_params(device="cpu")
    assert moved == [torch.device("cpu")] and clf.device == torch.device("cpu")


def test_an_ensemble_members_set_params_reaches_the_ensemble(polarity_run: Path,
                                                             images: np.ndarray) -> None:
    ens = Ensemble.from_runs([polarity_run])
    forward = _iterations(Classifier.load(polarity_run, solver="forward"), images)
    ens.members[0].set_params(solver="forward")
    np.testing.assert_array_equal(_iterations(ens, images), forward)
    with pytest.raises(ConfigError, match=r"unknown Ensemble parameter\(s\) solver; .*"
                                          r"ensemble\.members\[i\]\.set_params"):
        ens.set_params(solver="forward")


# -- 3: a resume that drops an unfinished run's temperature says so --------------------------
def _interrupted(run: Path, data, epochs: int, resume: bool = False) -> None:
    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    cfg = TrainConfig(task="polarity", epochs=epochs, hidden=8, batch_size=4, threads=1,
                      plots=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, resume=resume, dataset=data, progress=False, on_epoch=stop)


def test_a_resume_says_it_drops_an_unfinished_runs_temperature(tmp_path: Path) -> None:
    data = tiny_polarity_dataset(tmp_path / "data")
    run = tmp_path / "run"
    _interrupted(run, data, epochs=2)
    config = json.loads((run / "config.json").read_text())
    # as `andersonn calibrate RUN` leaves it (the tiny set has too few samples to fit one)
    config["calibration"] = {"method": "temperature", "split": "val", "temperature": 0.7}
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(AndersonnWarning) as caught:
        _interrupted(run, data, epochs=3, resume=True)
    notes = [str(w.message) for w in caught if "temperature" in str(w.message)]
    assert notes == [f"{run}: its probability temperature 0.7 is dropped: it was fitted to the "
                     "best weights so far, which further training may replace; the run is "
                     "calibrated again when it finishes (stopped before that, refit it with "
                     f"`andersonn calibrate {run}`)"]
    assert "calibration" not in json.loads((run / "config.json").read_text())
    with warnings.catch_warnings():  # nothing left to drop: no second note
        warnings.simplefilter("error", AndersonnWarning)
        _interrupted(run, data, epochs=4, resume=True)


def test_a_resume_of_a_finished_run_keeps_its_temperature_without_a_note(tmp_path: Path
                                                                        ) -> None:
    data = tiny_polarity_dataset(tmp_path / "data")
    run = tmp_path / "run"
    train(TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1,
                      plots=False), run, dataset=data, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["calibration"] = {"method": "temperature", "split": "val", "temperature": 0.7}
    (run / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AndersonnWarning)
        _interrupted(run, data, epochs=2, resume=True)
    # it still describes model.safetensors, which the interrupted resume left as it was
    assert json.loads((run / "config.json").read_text())["calibration"]["temperature"] == 0.7


# -- 4: the advice after Ctrl-C is the command as it was launched ----------------------------
_ARGS = argparse.Namespace(task="polarity", folds=None, fold=None, config=None)


@pytest.mark.parametrize(("environ", "command"), [
    ({}, "`andersonn train polarity --out R --resume`"),
    ({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"},
     "`torchrun --nproc_per_node 4 -m andersonn train polarity --out R --resume`"),
    ({"LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "1"},
     "`torchrun --nproc_per_node 1 -m andersonn train polarity --out R --resume`"),
    ({"LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "16"},
     "`torchrun --nnodes 2 --nproc_per_node 8 -m andersonn train polarity --out R --resume` "
     "(on every node, with your other torchrun options)"),
    ({"LOCAL_WORLD_SIZE": "x"}, "`andersonn train polarity --out R --resume`"),
])
def test_the_resume_command_is_launched_as_the_run_was(environ: dict[str, str],
                                                       command: str) -> None:
    from andersonn.cli.train import _resume_command

    assert _resume_command(_ARGS, Path("R"), environ) == command


def test_the_interrupt_advice_under_torchrun(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.cli.train import _interrupted

    for name, value in (("RANK", "0"), ("LOCAL_WORLD_SIZE", "2"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(task="polarity", folds=5, fold=2, config="my settings.json")
    assert _interrupted(types.SimpleNamespace(epoch=1, epochs=3, run_dir="R"), args,
                        Path("R")) == 130
    assert capsys.readouterr().err == (
        "andersonn: interrupted: R holds epoch 1 of 3; `torchrun --nproc_per_node 2 -m "
        "andersonn train polarity --out R --folds 5 --fold 2 --config 'my settings.json' "
        "--resume` continues from epoch 2\n")


def test_a_single_string_is_one_input_not_its_characters(tmp_path: Path) -> None:
    """explain(clf, "CCO") and predict_inputs("CCO") explained C, C and O one by one."""
    from andersonn.predict import expand_inputs

    assert expand_inputs("CCO") == ["CCO"]
    xyz = tmp_path / "w.xyz"
    xyz.write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    assert [str(p) for p in expand_inputs(xyz)] == [str(xyz)]
    assert expand_inputs(["CCO", "C"]) == ["CCO", "C"]
