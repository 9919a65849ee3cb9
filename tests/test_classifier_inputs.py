"""What the Python classifier API takes in, as a scikit-learn user gives it: estimators that
``sklearn.base.clone`` copies, image arrays of any layout and dtype (reversed views, bfloat16
tensors; complex ones refused), labels as pandas columns hold them, inputs that are no
structure refused in one line, checked attribute assignment, messages in the Python API's
terms, and structure files read without leaking open files."""

from __future__ import annotations

import copy
import gc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from andersonn.ensemble import Ensemble
from andersonn.errors import ConfigError, InputError
from andersonn.predict import Classifier, ConvergenceWarning
from andersonn.structures import read_records, read_structure

from helpers import SMILES, separable_images


def _clone(estimator: Any, *, safe: bool = True) -> Any:
    """``sklearn.base.clone`` as scikit-learn writes it (scikit-learn is not a dependency):
    the parameters cloned (deep copies of anything that is no estimator), a new estimator built
    of them, and each of its parameters checked to be the very object it was given."""
    kind = type(estimator)
    if kind is dict:
        return {k: _clone(v, safe=False) for k, v in estimator.items()}
    if kind in (list, tuple, set, frozenset):
        return kind([_clone(e, safe=safe) for e in estimator])
    if not hasattr(estimator, "get_params") or isinstance(estimator, type):
        if not safe:
            return copy.deepcopy(estimator)
        raise TypeError(f"cannot clone {estimator!r}: not an estimator")
    params = {k: _clone(v, safe=False) for k, v in estimator.get_params(deep=False).items()}
    new = kind(**params)
    kept = new.get_params(deep=False)
    for name, value in params.items():
        if kept[name] is not value:
            raise RuntimeError(f"Cannot clone object {estimator!r}, as the constructor either "
                               f"does not set or modifies parameter {name}")
    return new


@pytest.fixture(scope="module")
def fitted() -> Classifier:
    """A one-epoch explicit network fitted on :func:`_images`: seconds."""
    x, y = separable_images()
    return Classifier(model="explicit", epochs=1, hidden=8, depth=1, batch_size=16, lr=1e-2,
                      threads=1).fit(x, y)


@pytest.fixture(scope="module")
def loaded(polarity_run: Path) -> Classifier:
    return Classifier.load(polarity_run)


@pytest.fixture(scope="module")
def run_images(loaded: Classifier) -> np.ndarray:
    return loaded.featurize(SMILES[:6])[0]


# -- sklearn.base.clone ------------------------------------------------------------------------
def test_clone_gives_an_unfitted_copy_with_the_same_parameters(fitted: Classifier) -> None:
    clf = Classifier(epochs=np.int64(2), lr=np.float64(0.01), hidden=8, conformers=3,
                     solver_options={"m": np.int64(4)}, predict_batch_size=32)
    copied = _clone(clf)
    assert copied is not clf and copied.model_ is None
    assert copied.get_params() == clf.get_params()
    assert copied.train_config.solver_options == {"m": 4}
    assert type(copied.get_params()["epochs"]) is int  # numpy numbers taken as Python ones
    params = clf.get_params()
    assert all(clf.get_params()[k] is v for k, v in params.items())  # the same objects
    assert _clone(Classifier()).get_params() == Classifier().get_params()
    refit = _clone(fitted)
    assert refit.model_ is None and refit.get_params() == fitted.get_params()


def test_clone_of_an_ensemble_clones_its_members() -> None:
    ens = Ensemble.of_seeds(2, epochs=1)
    copied = _clone(ens)
    assert len(copied) == 2 and copied.members[0] is not ens.members[0]
    assert [m.train_config.seed for m in copied.members] == [0, 1]
    assert copied.get_params()["members"] is copied.members


def test_parameters_follow_set_params_and_a_replaced_config() -> None:
    options = {"m": 3}
    clf = Classifier(solver_options=options, epochs=2)
    assert clf.get_params()["solver_options"] is options
    clf.set_params(epochs=5)
    assert clf.get_params()["epochs"] == 5 and clf.get_params()["solver_options"] is options
    clf.train_config = Classifier(epochs=7).train_config
    assert clf.get_params()["epochs"] == 7 and clf.get_params()["solver_options"] == {}
    assert _clone(clf).train_config.epochs == 7


def test_a_loaded_classifier_clones(loaded: Classifier) -> None:
    copied = _clone(loaded)
    assert copied.model_ is None and copied.get_params() == loaded.get_params()


# -- image arrays of any layout and dtype -----------------------------------------------------
def test_a_reversed_view_of_images_is_taken(fitted: Classifier) -> None:
    x, y = separable_images()
    expected = fitted.predict_proba(x)[::-1]
    np.testing.assert_allclose(fitted.predict_proba(x[::-1]), expected, rtol=1e-6)
    assert (fitted.predict(x[::-1]) == fitted.predict(x)[::-1]).all()
    assert fitted.score(x[::-1], y[::-1]) == fitted.score(x, y)
    strided = np.repeat(x, 2, axis=0)[::2]  # a view with doubled strides
    np.testing.assert_allclose(fitted.predict_proba(strided), expected[::-1], rtol=1e-6)


def test_half_precision_tensors_are_taken(fitted: Classifier) -> None:
    x, _ = separable_images(8)
    for dtype in (torch.bfloat16, torch.float16):
        half = torch.tensor(x).to(dtype)
        expected = fitted.predict_proba(half.float().numpy())
        np.testing.assert_allclose(fitted.predict_proba(half), expected, rtol=1e-6)
        np.testing.assert_allclose(fitted.predict_proba(list(half)), expected, rtol=1e-6)


def test_complex_images_are_refused(fitted: Classifier) -> None:
    x, _ = separable_images(4)
    z = x.astype(np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way to the refusal
        for given in (z, torch.tensor(z), list(z), [torch.tensor(i) for i in z]):
            with pytest.raises(InputError, match=r"^X: complex images \(complex64|"
                                                 r"^X: complex images \(torch.complex64"):
                fitted.predict_proba(given)


# -- labels as a pandas column holds them, and labels that are no class -----------------------
# (the tiny run's solves stop short of their tolerance: its ConvergenceWarning is not the point)
@pytest.mark.filterwarnings("ignore::andersonn.predict.ConvergenceWarning")
def test_score_reads_whole_number_floats_as_class_indices(loaded: Classifier,
                                                          run_images: np.ndarray) -> None:
    truth = np.array([0, 1, 1, 0, 1, 0])
    expected = float(np.mean(loaded.predict_proba(run_images).argmax(axis=1) == truth))
    assert loaded.score(run_images, truth.astype(np.float64)) == expected
    assert loaded.score(run_images, truth) == expected


@pytest.mark.filterwarnings("ignore::andersonn.predict.ConvergenceWarning")
def test_score_refuses_a_label_that_is_no_class(loaded: Classifier, run_images: np.ndarray,
                                                fitted: Classifier) -> None:
    names = ["Weakly polar"] + ["strongly polar"] * 5
    with pytest.raises(InputError, match=r"^score: y: label 'Weakly polar' is not one of the "
                                         r"classes \['weakly polar', 'strongly polar'\]$"):
        loaded.score(run_images, names)
    with pytest.raises(InputError, match=r"^score: y: label 2 is not a class index \(0...1\) "
                                         r"nor a class name$"):
        loaded.score(run_images, [0.0, 1.0, 2.0, 0.0, 1.0, 0.0])
    with pytest.raises(InputError, match=r"^score: y: label '0.0' is not one of the classes "):
        loaded.score(run_images, [0.0, 1.0, 0.5, 0.0, 1.0, 0.0])  # not whole: class names
    x, _ = separable_images(6)
    with pytest.raises(InputError, match=r"^score: y: label 7 is not one of the classes "
                                         r"\[0, 1\]$"):
        fitted.score(x, [0, 1, 7, 0, 1, 0])


def test_fit_reads_whole_number_floats_as_class_indices_too() -> None:
    from andersonn.predict.labels import _encode_labels

    index, values = _encode_labels(np.array([1.0, 0.0, 1.0]), ["a", "b"])
    assert index.tolist() == [1, 0, 1] and values.tolist() == ["a", "b"]
    index, _ = _encode_labels([0.5, 1.5], [0.5, 1.5])  # float classes: matched by value
    assert index.tolist() == [0, 1]


# -- inputs that are no structure --------------------------------------------------------------
@pytest.mark.parametrize(("given", "kind"), [([1, 2], "int"), (None, "NoneType"),
                                             (3.5, "float"), ("images-as-lists", "list"),
                                             ("image-and-path", "ndarray")])
def test_inputs_that_are_no_structure_are_refused_in_one_line(
        loaded: Classifier, run_images: np.ndarray, given: Any, kind: str) -> None:
    if given == "images-as-lists":
        given = run_images[:2].tolist()
    elif given == "image-and-path":
        given = [run_images[0], "mol.xyz"]
    with pytest.raises(InputError) as err:
        loaded.predict(given)
    assert str(err.value) == (f"X: input 0 ({kind}): not a SMILES, a path or a Structure; "
                              "images must be one (N, C, H, W) array")


def test_predict_inputs_says_which_input_is_no_structure(loaded: Classifier) -> None:
    out = loaded.predict_inputs([1, None, "CCO"])
    assert [p.ok for p in out] == [False, False, True]
    assert out[0].error == "int: not a SMILES, a path or a Structure"
    assert out[1].error == "NoneType: not a SMILES, a path or a Structure"


def test_fit_refuses_inputs_that_are_no_structure() -> None:
    with pytest.raises(InputError, match=r"^fit: X: input 1 \(int\): not a SMILES"):
        Classifier().fit(["CCO", 3], [0, 1])


# -- attributes checked when assigned ---------------------------------------------------------
def test_assigned_batch_size_and_conformers_are_checked(fitted: Classifier) -> None:
    clf = Classifier()
    for name in ("predict_batch_size", "conformers"):
        with pytest.raises(ConfigError, match=rf"^{name} must be an integer >= 1 \(got 0\)$"):
            setattr(clf, name, 0)
        with pytest.raises(ConfigError, match=rf"^{name} must be an integer >= 1"):
            setattr(clf, name, 2.5)
        setattr(clf, name, np.int64(4))
        assert getattr(clf, name) == 4 and type(getattr(clf, name)) is int
    ens = Ensemble([fitted])
    with pytest.raises(ConfigError, match=r"^predict_batch_size must be an integer >= 1"):
        ens.predict_batch_size = 0
    ens.predict_batch_size = 8
    assert fitted.predict_batch_size == 8


# -- messages in the Python API's terms -------------------------------------------------------
def test_convergence_warning_names_the_python_parameters(polarity_run: Path,
                                                          run_images: np.ndarray) -> None:
    clf = Classifier.load(polarity_run, solver_options={"tol": 1e-12, "max_iter": 1})
    with pytest.warns(ConvergenceWarning) as caught:
        clf.predict_proba(run_images)
    message = str(caught[0].message)
    assert "solver_options={'max_iter': N}" in message and "--" not in message


def test_fit_names_a_missing_cuda_device_as_the_parameter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, y = separable_images(8)
    with pytest.raises(ConfigError, match=r"^Classifier\(device='cuda:1'\): no CUDA device is "
                                          r"available here$"):
        Classifier(device="cuda:1", epochs=1).fit(x, y)


# -- structure files read without leaking open files ------------------------------------------
_POSCAR = """NaCl
1.0
5.64 0 0
0 5.64 0
0 0 5.64
Na Cl
1 1
Direct
0 0 0
0.5 0.5 0.5
"""


def test_structure_files_are_closed(tmp_path: Path) -> None:
    (tmp_path / "POSCAR").write_text(_POSCAR)
    (tmp_path / "nacl.vasp").write_text(_POSCAR)
    (tmp_path / "two.xyz").write_text("2\na\nH 0 0 0\nH 0 0 0.74\n2\nb\nH 0 0 0\nH 0 0 0.75\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_structure(tmp_path / "POSCAR").numbers.tolist() == [11, 17]
        assert read_structure(tmp_path / "nacl.vasp").numbers.tolist() == [11, 17]
        assert len(read_records(tmp_path / "two.xyz")) == 2
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
