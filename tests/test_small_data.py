"""Too little data to train on, said in one line: an empty validation or training split (naming
the split, the build and the remedy), too few structures per class for a labels file, and a
class with fewer structures than folds."""

from __future__ import annotations

import types

import numpy as np
import pytest

from andersonn.data.folds import FoldView, fold_split
from andersonn.data.labelled import labelled_dataset
from andersonn.errors import AndersonnError, ConfigError, InputError
from andersonn.training import train

from helpers import toy_config, toy_dataset


def test_an_empty_val_split_names_the_split_the_build_and_the_remedy(tmp_path):
    splits = np.array([0] * 8 + [2] * 2, np.int8)
    built = toy_dataset(10, splits, {"task": "polarity", "cache_key": "abc123", "limit": 10})
    with pytest.raises(AndersonnError) as caught:
        train(toy_config(task="polarity"), tmp_path / "a", dataset=built, progress=False)
    assert str(caught.value) == (
        "too few structures to train on in dataset 'polarity' (build abc123, --limit 10): its "
        "val split is empty (8 train, 0 val, 2 test); train on a larger build (raise --limit)")
    with pytest.raises(AndersonnError, match=r"\(as given\): its train and val splits are "
                                             r"empty \(0 train, 0 val, 10 test\)"):
        train(toy_config(), tmp_path / "b", dataset=toy_dataset(10, np.full(10, 2, np.int8)),
              progress=False)


def test_fit_s_small_data_message_speaks_of_validation_not_test():
    inputs = ["CCO", "CC", "CCC", "CO"]
    with pytest.raises(InputError, match=r"^too few usable structures to train and validate on: "
                                         r"class weak \(2\), strong \(2\); each class needs at "
                                         r"least 10"):
        labelled_dataset(inputs, [0, 0, 1, 1], ["weak", "strong"], image="polarity",
                         progress=False, workers=1, split=lambda y: np.zeros(len(y), np.int8))
    with pytest.raises(InputError, match=r"^too few usable structures to train and test on: "):
        labelled_dataset(inputs, [0, 0, 1, 1], ["weak", "strong"], image="polarity",
                         progress=False, workers=1)


def test_the_fold_refusal_names_the_class():
    labels = np.repeat([0, 1], [22, 6])
    with pytest.raises(ConfigError, match=r"^7 folds need at least 7 structures of every "
                                          r"class; class 'strong' has 6$"):
        fold_split(labels, 7, 1, classes=["weak", "strong"])
    data = types.SimpleNamespace(labels=labels, classes=["weak", "strong"], meta={})
    with pytest.raises(ConfigError, match="class 'strong' has 6"):
        FoldView(data, 7, 1)
    with pytest.raises(ConfigError, match="class 1 has 6"):  # no names: the index
        fold_split(labels, 7, 1)
