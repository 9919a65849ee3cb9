"""Prediction in chunks: ``predict_proba``, ``Ensemble.member_probabilities`` and
``evaluate_labelled`` read, encode and infer their inputs in chunks, as ``predict_inputs`` does,
with the same answers; the featuriser takes an optional progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from andersonn.ensemble import Ensemble
from andersonn.errors import InputError
from andersonn.evaluate import evaluate_labelled
from andersonn.predict import Classifier
from andersonn.predict.featurize import _progress

from helpers import count_featurize_chunks, tiny_polarity_dataset, tiny_polarity_run

pytestmark = pytest.mark.filterwarnings("ignore::andersonn.predict.DomainWarning",
                                       "ignore::andersonn.predict.ConvergenceWarning")
torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / "fixtures" / "structures"
READABLE = ["CCO", "CC", "CCN", str(FIXTURES / "water.xyz"), "CO", "CCCO", "OCCO", "CC#N",
            "CCCC"]


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("second-run")
    return tiny_polarity_run(tiny_polarity_dataset(root), root / "seed1", seed=1)


def test_predict_proba_in_chunks_gives_the_same_probabilities(
        polarity_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = Classifier.load(polarity_run)
    clf.conformers, clf.predict_batch_size = 2, 3
    # the reference: every image at once
    images, ok, _errors, _notes, counts = clf._featurize(READABLE)
    assert len(ok) == len(READABLE) and len(images) > len(READABLE)  # SMILES conformers
    reference = clf._infer_inputs(images, counts)[0]
    assert np.array_equal(clf.predict_proba(READABLE), reference)
    sizes = count_featurize_chunks(monkeypatch, 4)
    assert np.array_equal(clf.predict_proba(READABLE), reference)
    assert sizes == [4, 4, 1]
    # images given as such are inferred as they are
    sizes.clear()
    assert np.array_equal(clf.predict_proba(images), clf._infer(images)[0])
    assert sizes == []


def test_predict_proba_in_chunks_reports_every_unreadable_input(
        polarity_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = Classifier.load(polarity_run)
    clf.predict_batch_size = 1
    inferred: list[int] = []
    infer = Classifier._infer

    def spy(self, images):
        inferred.append(len(images))
        return infer(self, images)

    monkeypatch.setattr(Classifier, "_infer", spy)
    sizes = count_featurize_chunks(monkeypatch, 2)
    with pytest.raises(InputError, match=r"2 input\(s\) could not be featurised: \(\(: .*; xx\("):
        clf.predict_proba(["CCO", "CC", "((", "CO", "xx("])
    assert sizes == [2, 2, 1]  # all read, for the report
    assert inferred == [2]  # nothing inferred once an input had failed
    assert clf.predict_proba([]).shape == (0, len(clf.classes_))


def test_ensemble_and_labelled_evaluation_in_chunks_give_the_same_answers(
        polarity_run: Path, second_run: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [polarity_run, second_run]
    ens = Ensemble.from_runs(runs)
    ens.predict_batch_size = 3  # the batches decide where a DEQ solve stops
    members = ens.member_probabilities(READABLE)
    solo = np.stack([Classifier.load(r).set_params(predict_batch_size=3).predict_proba(READABLE)
                     for r in runs])
    assert members.shape == (2, len(READABLE), len(ens.classes_))
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(members, solo, atol=1e-7)

    table = tmp_path / "mine.csv"
    rows = [*READABLE[:4], "((", *READABLE[4:]]
    table.write_text("input,class\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(rows)))
    whole = evaluate_labelled(ens, table, conformers=2)
    # the reference: every image at once
    images, ok, _errors, _notes, counts = ens._featurize(
        [str(r) for r in rows], conformers=2)
    probs, iters, short = ens.member_outputs(images, counts)
    assert short.shape == iters.shape and np.all(short >= 0)
    assert [r["probabilities"] for r in whole.rows] == [
        dict(zip(ens.classes_, p.tolist(), strict=True)) for p in probs.mean(axis=0)]
    assert whole.single[0]["iterations"] == pytest.approx(float(iters[0].mean()))
    assert [s["where"] for s in whole.skipped] == ["(("] and whole.n == len(ok)

    sizes = count_featurize_chunks(monkeypatch, 4)
    assert np.array_equal(ens.member_probabilities(READABLE), members)
    assert sizes == [4, 4, 1]
    sizes.clear()
    chunked = evaluate_labelled(ens, table, conformers=2)
    assert sizes == [4, 4, 2]
    assert chunked.to_dict() == whole.to_dict()


def test_featurize_advances_a_given_bar(polarity_run: Path) -> None:
    class Bar:
        def __init__(self) -> None:
            self.n, self.closed = 0, False

        def update(self, k: int) -> None:
            self.n += k

        def close(self) -> None:
            self.closed = True

    bar = Bar()
    clf = Classifier.load(polarity_run)
    assert clf._featurize(["CCO", "((", "CC"], bar=bar)[1] == [0, 2]
    assert bar.n == 3 and not bar.closed  # the caller's bar: the caller closes it
    with _progress(3, False) as none:
        assert none is None
    with _progress(3, True) as shown:
        shown.update(3)
    assert shown.n == shown.total == 3 and shown.disable  # closed on leaving


def test_an_empty_list_file_is_one_bad_input_not_dropped(tmp_path: Path) -> None:
    from andersonn.predict import UnusableInput, expand_inputs

    for name, content in (("empty.smi", b""), ("blanks.smi", b"\n\n"),
                          ("comments.smi", b"# only a comment\n\n"), ("empty.txt", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        (item,) = expand_inputs([str(path)])
        assert isinstance(item, UnusableInput) and "empty file" in item.reason, name


def test_a_smi_list_with_a_latin1_title_separator_is_cut_there(tmp_path: Path) -> None:
    from andersonn.predict import expand_inputs

    path = tmp_path / "nbsp.smi"
    path.write_bytes(b"CCO\xa0ethanol\nCCN\xa0\xe9thylamine\n")
    items = expand_inputs([str(path)])
    assert [(i.name, i.text) for i in items] == [("CCO (ethanol)", "CCO"),
                                                  ("CCN (\xe9thylamine)", "CCN")]
