"""The Python classifier API as a scikit-learn user meets it: labels of their own kind back,
inputs checked up front (shape, length, NaN, not fitted), the caller's global state left alone
(warnings, RDKit logs, torch threads and RNG), estimator parameters, a loaded run answering at
its evaluation tolerance."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.ensemble import Ensemble
from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.predict import Classifier, DomainWarning

from helpers import SMILES, separable_images


def _tiny(**settings) -> Classifier:
    """A one-epoch explicit network: seconds to fit."""
    return Classifier(**{"model": "explicit", "epochs": 1, "hidden": 8, "depth": 1,
                         "batch_size": 16, "lr": 1e-2, "threads": 1, **settings})


@pytest.fixture(scope="module")
def images_of_the_run(polarity_run: Path) -> np.ndarray:
    clf = Classifier.load(polarity_run)
    return clf.featurize(SMILES[:12])[0]


# -- 1: a loaded run answers at the run's evaluation solver settings --------------------------
def test_a_loaded_run_solves_at_its_eval_tolerance(polarity_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "eval-run"
    shutil.copytree(polarity_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["solver"]["eval"] = {**cfg["solver"]["eval"], "tol": 1e-5, "max_iter": 80}
    (copy / "config.json").write_text(json.dumps(cfg))
    model = Classifier.load(copy).model_
    assert (model.solver_options["tol"], model.solver_options["max_iter"]) == (1e-5, 80)
    ens = Ensemble.from_runs([copy])
    assert ens.members[0].model_.solver_options["tol"] == 1e-5
    override = Classifier.load(copy, solver="forward", solver_options={"tol": 1e-2}).model_
    assert override.solver_name == "forward"
    assert (override.solver_options["tol"], override.solver_options["max_iter"]) == (1e-2, 80)


def test_fitted_and_loaded_classifier_agree(tmp_path: Path) -> None:
    x, y = separable_images(32)
    clf = Classifier(epochs=1, hidden=8, batch_size=16, threads=1, eval_tol=1e-5,
                     eval_max_iter=80, seed=1).fit(x, y, out_dir=tmp_path / "run")
    loaded = Classifier.load(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(loaded.predict_proba(x), clf.predict_proba(x), atol=1e-6)


# -- 2: images of another shape ---------------------------------------------------------------
def test_images_of_another_shape_are_refused(polarity_run: Path,
                                             images_of_the_run: np.ndarray) -> None:
    clf = Classifier.load(polarity_run)
    shape = tuple(images_of_the_run.shape[1:])
    with pytest.raises(InputError, match=rf"\(C, H, W\) = \(\d+, 10, \d+\), but this model "
                                         rf"takes \({shape[0]}, {shape[1]}, {shape[2]}\)"):
        clf.predict(images_of_the_run[:, :, :10])
    with pytest.raises(InputError, match=r"= \(5, "):
        clf.predict_proba(images_of_the_run[:, :5])
    x, y = separable_images(20)
    with pytest.raises(InputError, match=r"val images must be images of the training images' "
                                         r"shape \(C, H, W\) = \(3, 4, 4\), got shape \(2, 4, 4\)"):
        _tiny().fit(x, y, val=(x[:, :2], y))


# -- 3: the device training chose is the one predict uses ---------------------------------------
def test_fit_takes_the_device_training_put_the_model_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import andersonn.training as training

    real = training.train

    def train_elsewhere(*args, **kwargs):  # as on a CUDA machine with device="auto"
        result = real(*args, **kwargs)
        result.model.to("meta")
        return result

    monkeypatch.setattr(training, "train", train_elsewhere)
    x, y = separable_images(20)
    clf = _tiny().fit(x, y)
    assert clf.device == torch.device("meta")
    ens = Ensemble.of_seeds(2, model="explicit", epochs=1, hidden=8, depth=1, threads=1).fit(x, y)
    assert ens.device == torch.device("meta")
    assert all(m.device == torch.device("meta") for m in ens.members)


# -- 4, 11, 12: global state; structures split train/val only; workers honoured ----------------
STRUCTURES = ["CCO", "CO", "CCN", "OCCO", "CC(=O)O", "NCCN", "CC#N", "CCOC", "CCCO", "CN",
              "O=CO", "CC(C)O",  # polar: N or O
              "CC", "CCC", "CCCC", "C=C", "CCCCC", "C1CCCCC1", "CC(C)C", "CCCCCC", "C#C",
              "C1CC1", "C=CC", "CC(C)(C)C"]
POLAR = ["polar"] * 12 + ["not polar"] * 12


def test_fit_on_structures_leaves_the_callers_state_alone(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from rdkit import RDLogger, rdBase

    import andersonn.data.labelled as labelled
    import andersonn.training as training

    seen: dict = {}
    real_dataset, real_train = labelled.labelled_dataset, training.train

    def dataset_spy(*args, **kwargs):
        seen["workers"] = kwargs.get("workers")
        return real_dataset(*args, **kwargs)

    def train_spy(cfg, out_dir, **kwargs):
        seen["splits"] = np.asarray(kwargs["dataset"].splits).copy()
        return real_train(cfg, out_dir, **kwargs)

    monkeypatch.setattr(labelled, "labelled_dataset", dataset_spy)
    monkeypatch.setattr(training, "train", train_spy)
    RDLogger.EnableLog("rdApp.info")
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.simplefilter("default")
            logs = rdBase.LogStatus()
            torch.manual_seed(123)
            rng = torch.get_rng_state()
            clf = Classifier(epochs=1, hidden=8, batch_size=8, threads=2, workers=1)
            clf.fit(np.array(STRUCTURES), POLAR)  # a numpy array of SMILES: structures
            # featurised in-process: no global "ignore" (imports may add their own filters)
            assert not _silenced(warnings.filters)
            assert rdBase.LogStatus() == logs
            assert torch.equal(torch.get_rng_state(), rng)
    finally:
        RDLogger.DisableLog("rdApp.info")
    assert torch.get_num_threads() == 1  # the autouse fixture's, not fit's threads=2
    assert seen["workers"] == 1
    # train and validation only: nothing set aside for a test that fit never scores
    assert set(seen["splits"].tolist()) == {0, 1}
    assert (seen["splits"] == 1).sum() == 4  # 15 % of 12 per class, rounded
    assert clf.domain_.n == (seen["splits"] == 0).sum()  # the domain of what it trained on
    assert set(clf.predict(["CCO", "CCCC"])) <= {"polar", "not polar"}


def test_featurising_in_process_keeps_warning_filters_and_rdkit_logs() -> None:
    from rdkit import rdBase

    from andersonn.images import featurize_many

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        logs = rdBase.LogStatus()
        res = featurize_many([("CCO", "smiles", "a"), ("((", "smiles", "b")], "polarity",
                             workers=1, progress=False)
        assert res.n_ok == 1 and len(res.failures) == 1
        assert not _silenced(warnings.filters) and rdBase.LogStatus() == logs


def _silenced(filters: list) -> bool:
    """Whether ``filters`` ignore every warning."""
    return any(f[0] == "ignore" and f[1] is None and f[2] is Warning for f in filters)


def test_fit_restores_threads_and_random_state_and_still_repeats() -> None:
    x, y = separable_images(24)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first = _tiny(threads=2, seed=3).fit(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == 1
    again = _tiny(threads=2, seed=3).fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x), again.predict_proba(x))


# -- 5: labels ---------------------------------------------------------------------------------
def test_labels_come_back_as_their_own_kind() -> None:
    x, y = separable_images(32)
    ints = _tiny().fit(x, y)
    assert ints.classes_.dtype.kind == "i" and ints.classes_.tolist() == [0, 1]
    predicted = ints.predict(x)
    assert predicted.dtype.kind == "i"
    assert ints.score(x, y) == (predicted == y).mean() > 0.5
    assert ints.score(x, y.astype(float)) == ints.score(x, y)  # like with like
    assert ints.score(x, y.astype(str)) == ints.score(x, y)    # or by name
    with pytest.raises(InputError, match=r"^score: y: label 5 is not one of the classes \[0, 1\]$"):
        ints.score(x, y + 5)  # labels of no class: refused, not silently wrong

    one_based = _tiny().fit(x, (y + 1).reshape(-1, 1))  # (N, 1) column, 1-based
    assert one_based.classes_.tolist() == [1, 2] and set(one_based.predict(x)) <= {1, 2}
    assert one_based.config_["classes"] == ["1", "2"]  # the run stores names (JSON)
    signed = _tiny().fit(x, 2 * y - 1)
    assert signed.classes_.tolist() == [-1, 1]
    flags = _tiny().fit(x, y.astype(bool))
    assert flags.predict(x).dtype == bool
    names = _tiny().fit(x, np.where(y == 1, "pos", "neg").tolist())
    assert list(names.classes_) == ["neg", "pos"] and set(names.predict(x)) <= {"neg", "pos"}
    assert names.score(x, y) == names.score(x, np.where(y == 1, "pos", "neg"))  # indices


def test_labels_with_classes_are_names_or_indices() -> None:
    x, y = separable_images(24)
    clf = _tiny().fit(x, y, classes=["neg", "pos"])
    assert list(clf.classes_) == ["neg", "pos"] and set(clf.predict(x)) <= {"neg", "pos"}
    by_name = _tiny().fit(x, np.where(y == 1, "pos", "neg"), classes=["pos", "neg"])
    assert list(by_name.classes_) == ["pos", "neg"]
    with pytest.raises(InputError, match=r"label 2 is not an index into the 2 classes"):
        _tiny().fit(x, 2 * y, classes=["neg", "pos"])
    with pytest.raises(InputError, match=r"label 'pos' is not one of the classes"):
        _tiny().fit(x, np.where(y == 1, "pos", "neg"), classes=["neg", "other"])
    with pytest.raises(AndersonnError, match=r"in dataset 'custom': class c \(0\)"):
        _tiny().fit(x, y, classes=["a", "b", "c"])


def test_missing_or_malformed_labels_are_refused() -> None:
    x, y = separable_images(20)
    floats = y.astype(float)
    floats[[3, 7]] = np.nan
    with pytest.raises(InputError, match=r"fit: y: 2 missing label\(s\) \(NaN or None\) at "
                                         r"row\(s\) 3, 7"):
        _tiny().fit(x, floats)
    with pytest.raises(InputError, match=r"1 missing label\(s\) \(NaN or None\) at row\(s\) 0;"):
        _tiny().fit(x, [None] + ["a", "b"] * 9 + ["a"])
    with pytest.raises(InputError, match=r"shape \(N,\).*y.argmax"):
        _tiny().fit(x, np.eye(2, dtype=int)[y])
    with pytest.raises(InputError, match="at least two classes"):
        _tiny().fit(x, np.zeros(20, int))
    x25, _ = separable_images(25)
    with pytest.raises(InputError, match=r"fit: y holds 25 different numbers: values, not class "
                                         r"labels\? Bin them into classes first"):
        _tiny().fit(x25, np.linspace(0, 5, 25) + 1 / 3)


def test_a_loaded_run_answers_with_its_class_names(polarity_run: Path,
                                                   images_of_the_run: np.ndarray) -> None:
    clf = Classifier.load(polarity_run)
    assert list(clf.classes_) == ["weakly polar", "strongly polar"]
    assert all(isinstance(c, str) for c in clf.predict(images_of_the_run))
    truth = np.array([int(any(a in s for a in "NO")) for s in SMILES[:12]])
    assert clf.score(images_of_the_run, truth) == clf.score(images_of_the_run,
                                                            clf.classes_[truth])


# -- 6, 7: lengths and kinds of X --------------------------------------------------------------
def test_inputs_and_labels_of_different_lengths_are_refused() -> None:
    x, y = separable_images(20)
    with pytest.raises(InputError, match="fit: 17 images but 20 labels"):
        _tiny().fit(x[:-3], y)
    with pytest.raises(InputError, match="fit: 20 images but 17 labels"):
        _tiny().fit(x, y[:-3])
    with pytest.raises(InputError, match="fit: val: 20 images but 2 labels"):
        _tiny().fit(x, y, val=(x, y[:2]))
    with pytest.raises(InputError, match="fit: 3 structures but 2 labels"):
        _tiny().fit(["CCO", "CC", "CN"], ["a", "b"])


def test_kinds_of_x(polarity_run: Path, images_of_the_run: np.ndarray,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    import andersonn.data.labelled as labelled

    clf = Classifier.load(polarity_run)
    imgs = images_of_the_run[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = clf.predict_proba(imgs)
        np.testing.assert_array_equal(clf.predict_proba(list(imgs)), want)  # arrays stacked
        np.testing.assert_array_equal(
            clf.predict_proba(torch.from_numpy(imgs).requires_grad_()), want)
        assert clf.predict(s for s in ["CCO", "CC"]).shape == (2,)  # a generator
        assert clf.predict(np.array(["CCO", "CC"])).shape == (2,)
    with pytest.raises(InputError, match=r"one image: pass X\[None\]"):
        clf.predict(imgs[0])
    with pytest.raises(InputError, match="all of one shape"):
        clf.predict([imgs[0], imgs[0, :2]])

    class Reached(Exception):
        pass

    def stop(inputs, *args, **kwargs):
        raise Reached(list(inputs))

    monkeypatch.setattr(labelled, "labelled_dataset", stop)
    with pytest.raises(Reached) as got:
        _tiny().fit(np.array(["CCO", "CC"]), ["a", "b"])
    assert got.value.args[0] == ["CCO", "CC"]
    with pytest.raises(Reached) as got:
        _tiny().fit((s for s in ["CCO", "CC"]), ["a", "b"])
    assert got.value.args[0] == ["CCO", "CC"]
    x, y = separable_images(20)
    assert _tiny().fit(list(x), y).config_["image_shape"] == [3, 4, 4]  # stacked as images


# -- 8, 9: not fitted; NaN images ------------------------------------------------------------
def test_an_unfitted_classifier_says_so() -> None:
    for call in (lambda c: c.predict(["CCO"]), lambda c: c.predict_proba(np.zeros((1, 3, 4, 4))),
                 lambda c: c.featurize(["CCO"]), lambda c: c.predict_inputs(["CCO"]),
                 lambda c: c.score(["CCO"], ["a"])):
        with pytest.raises(AndersonnError, match=r"this Classifier is not fitted; call fit\(\)"):
            call(Classifier())
    with pytest.raises(AndersonnError, match=r"this Ensemble is not fitted"):
        Ensemble.of_seeds(2, epochs=1).predict(["CCO"])


def test_images_with_nan_or_inf_are_refused_naming_the_rows(
        polarity_run: Path, images_of_the_run: np.ndarray) -> None:
    bad = images_of_the_run.copy()
    bad[10, 0, 0, 0] = np.nan
    bad[3] = np.inf
    with pytest.raises(InputError, match=r"X: 2 image\(s\) hold NaN or infinite values "
                                         r"\(row\(s\) 3, 10\)"):
        Classifier.load(polarity_run).predict(bad)
    x, y = separable_images(20)
    x[5, 1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"fit: X: 1 image\(s\) .* \(row\(s\) 5\)"):
        _tiny().fit(x, y)


# -- 10: an estimator --------------------------------------------------------------------------
def test_estimator_parameters_and_clone() -> None:
    clf = Classifier(epochs=np.int64(2), lr=np.float64(0.01), hidden=8, conformers=3,
                     predict_batch_size=32, grad_clip=None)
    params = clf.get_params()
    assert params["epochs"] == 2 and type(params["epochs"]) is int
    assert params["conformers"] == 3 and params["predict_batch_size"] == 32
    assert params["image"] is None and params["grad_clip"] is None
    clone = type(clf)(**clf.get_params())  # sklearn.base.clone, by hand: it checks identity
    assert all(clone.get_params()[k] is v for k, v in params.items()) and clone.model_ is None
    assert repr(clf) == ("Classifier(conformers=3, predict_batch_size=32, hidden=8, epochs=2, "
                         "lr=0.01, grad_clip=None)")
    assert repr(Classifier()) == "Classifier()"
    assert clf.set_params(epochs=np.int32(5), image="polarity", conformers=1) is clf
    assert clf.train_config.epochs == 5 and clf.image == "polarity" and clf.conformers == 1
    with pytest.raises(ConfigError, match="epoch"):
        clf.set_params(epoch=3)
    with pytest.raises(ConfigError, match="conformers must be an integer >= 1"):
        Classifier(conformers=0)
    assert clf.train_config.epochs == 5  # a refused set_params changes nothing
    # batch_size= is the training batch; the inference batch is predict_batch_size
    clf = Classifier(batch_size=8)
    assert clf.train_config.batch_size == 8 and clf.predict_batch_size == 256
    with pytest.warns(FutureWarning, match="predict_batch_size"):
        assert clf.batch_size == 256


def test_estimator_parameters_of_a_fitted_and_a_loaded_classifier(polarity_run: Path) -> None:
    loaded = Classifier.load(polarity_run)
    copy = type(loaded)(**loaded.get_params())
    assert copy.get_params() == loaded.get_params() and copy.model_ is None
    assert "hidden=8" in repr(loaded)
    assert isinstance(loaded.classes_, np.ndarray)
    ens = Ensemble.from_runs([polarity_run])
    assert type(ens)(**ens.get_params()).members == ens.members


# -- 13: a refitted ensemble forgets its runs --------------------------------------------------
def test_a_refitted_ensemble_does_not_name_its_old_runs(polarity_run: Path) -> None:
    ens = Ensemble.from_runs([polarity_run])
    assert str(polarity_run) in repr(ens)
    x, y = separable_images(24)
    ens.fit(x, y)
    assert str(polarity_run) not in repr(ens) and list(ens.classes_) == [0, 1]


# -- 14: warnings point at the caller ----------------------------------------------------------
def test_warnings_from_predict_point_at_the_callers_line(polarity_run: Path) -> None:
    clf = Classifier.load(polarity_run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.predict(["CCO", "ClCCCl"])
    domain = [w for w in caught if issubclass(w.category, DomainWarning)]
    assert domain and all(w.filename == __file__ for w in caught)


# -- 15: dtypes, empty score, an out_dir holding a run -----------------------------------------
def test_probabilities_are_float64_and_empty_scores_are_refused(
        polarity_run: Path, images_of_the_run: np.ndarray, tmp_path: Path) -> None:
    clf = Classifier.load(polarity_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert clf.predict_proba(images_of_the_run[:2]).dtype == np.float64
        assert clf.predict_proba([]).dtype == np.float64
        assert Ensemble.from_runs([polarity_run]).predict_proba(["CCO"]).dtype == np.float64
    with pytest.raises(InputError, match="score: no inputs to score"):
        clf.score([], [])
    x, y = separable_images(20)
    _tiny().fit(x, y, out_dir=tmp_path / "run")
    with pytest.raises(InputError, match=r"already holds a run; give another out_dir"):
        _tiny().fit(x, y, out_dir=tmp_path / "run")


def test_ensemble_set_params_leaves_the_replaced_members_alone() -> None:
    old = [Classifier(epochs=1), Classifier(epochs=1)]
    for member in old:
        member.predict_batch_size = 8
    ens = Ensemble(old)
    ens.set_params(members=[Classifier(epochs=2), Classifier(epochs=2)])
    assert [m.predict_batch_size for m in old] == [8, 8]
    assert ens.train_config.epochs == 2


def test_a_refused_ensemble_set_params_changes_nothing() -> None:
    members = [Classifier(epochs=1), Classifier(epochs=1)]
    ens = Ensemble(members)
    for bad in ([], [1, 2]):
        with pytest.raises(AndersonnError):
            ens.set_params(members=bad)
        assert ens.members == members and len(ens) == 2
