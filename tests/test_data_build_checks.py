"""Checks a dataset build makes before any work, and what training says about the build it takes.

A cache that cannot be written is refused before the archives are read; seeds and label
thresholds are checked when parsed and in the API; a ``--limit`` that covers a task's whole set
is the full build; ``train`` says when it takes a ``--limit`` subset, and why it builds.
Builds use the tiny fixture archives of ``test_data`` and its fake featuriser.
"""

from __future__ import annotations

import argparse
import errno
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_data import FakeFeaturizer, archive_cache  # noqa: F401 (the `cache` fixture)

from andersonn.cli import main
from andersonn.cli.options import finite_float, non_negative_int
from andersonn.data import build as build_mod
from andersonn.data import build_dataset, load_dataset
from andersonn.data.build import FullSetWarning
from andersonn.errors import AndersonnError, AndersonnWarning, ConfigError
from andersonn.training.config import TrainConfig
from andersonn.training.inputs import load_task_dataset

from helpers import assert_refused_when_parsed

# the fixture sets are too small for val and test splits
pytestmark = pytest.mark.filterwarnings("ignore::andersonn.data.build.EmptySplitWarning")

N_CRYSTALS = 7  # crystal-gap entries of the fixture archives that read


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make creating a file fail as on a read-only file system (root ignores chmod)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _no_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an archive was read")

    monkeypatch.setattr(build_mod, "ensure_archive", never)


# --------------------------------------------------------------------------------------------
# 1. an unwritable cache is refused before the archives are read or anything is featurised
# --------------------------------------------------------------------------------------------


def test_read_only_cache_is_refused_before_any_work(
    cache: Path, fake: FakeFeaturizer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _read_only(monkeypatch)
    _no_archives(monkeypatch)
    folder = cache / "datasets" / "crystal-gap"
    with pytest.raises(AndersonnError) as exc:
        build_dataset("crystal-gap", progress=False)
    assert str(exc.value) == (f"cannot write the dataset cache {folder}: read-only file system; "
                              "set ANDERSONN_CACHE to a writable folder")
    assert fake.calls == []
    assert main(["data", "build", "crystal-gap", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"andersonn: error: cannot write the dataset cache {folder}: read-only file system; "
        "set ANDERSONN_CACHE to a writable folder\n")
    assert fake.calls == []


def test_cache_folder_that_is_a_file_is_refused_naming_cache_dir(
    tmp_path: Path, fake: FakeFeaturizer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_archives(monkeypatch)
    folder = tmp_path / "elsewhere" / "datasets" / "polarity"
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    assert main(["data", "build", "polarity", "--cache-dir", str(tmp_path / "elsewhere"),
                 "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"andersonn: error: cannot write the dataset cache {folder}: it is a file, not a folder; "
        "give a writable --cache-dir\n")
    assert fake.calls == []


def test_train_on_a_read_only_cache_stops_before_featurising(
    cache: Path, fake: FakeFeaturizer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _read_only(monkeypatch)
    with pytest.raises(AndersonnError, match=r"^cannot write the dataset cache .*read-only"):
        load_task_dataset(TrainConfig(task="crystal-gap"), progress=False)
    assert fake.calls == []


def test_reused_build_on_a_read_only_cache_opens_keeping_latest(
    cache: Path, fake: FakeFeaturizer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = build_dataset("crystal-gap", progress=False)
    build_dataset("crystal-gap", limit=5, progress=False)
    latest = cache / "datasets" / "crystal-gap" / "LATEST"
    pointer = latest.read_text()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(build_mod, "atomic_write_text", refuse)
    with pytest.warns(AndersonnWarning,
                      match=r"^cannot update .*LATEST \(read-only file system\): `andersonn "):
        again = build_dataset("crystal-gap", progress=False)
    assert again.directory == full.directory and latest.read_text() == pointer
    assert len(fake.calls) == 2


def test_labels_file_build_on_an_unwritable_cache_is_refused_before_featurising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from andersonn.data import labelled

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("featurised")

    monkeypatch.setattr(labelled, "labelled_dataset", never)
    labels = Path(__file__).parent / "fixtures" / "labelled" / "qm9_dipoles.csv"
    (tmp_path / "cache" / "datasets").mkdir(parents=True)
    (tmp_path / "cache" / "datasets" / "custom").write_text("")
    with pytest.raises(AndersonnError, match=r"^cannot write the dataset cache .*custom: it is a "
                       r"file, not a folder; give a writable --cache-dir$"):
        labelled.build_labelled_dataset(labels, bins=[2.5], progress=False,
                                        cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------------
# 3. seeds: whole numbers of at least 0
# --------------------------------------------------------------------------------------------


def test_non_negative_int() -> None:
    assert non_negative_int("0") == 0 and non_negative_int("17") == 17
    for text, why in (("-1", "must be at least 0, got -1"), ("1.5", "'1.5' is not a whole number"),
                      ("x", "'x' is not a whole number")):
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            non_negative_int(text)
        assert str(exc.value) == why


@pytest.mark.parametrize("action", ["build", "info"])
def test_negative_seed_is_refused_when_parsed(
    action: str, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str],
) -> None:
    assert_refused_when_parsed(["data", action, "crystal-gap", "--seed", "-1"], capsys,
                               "argument --seed: must be at least 0, got -1")
    assert fake.calls == []


def test_negative_seed_is_refused_by_the_api_before_work(
    cache: Path, fake: FakeFeaturizer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_archives(monkeypatch)
    for seed in (-1, 1.5, True):
        with pytest.raises(ConfigError, match=r"^seed must be a whole number of at least 0, got "):
            build_dataset("crystal-gap", seed=seed, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"got -3$"):
        load_dataset("crystal-gap", seed=-3)
    assert fake.calls == []
    assert build_mod._check_seed(np.int64(2)) == 2


# --------------------------------------------------------------------------------------------
# 4. label thresholds: finite numbers
# --------------------------------------------------------------------------------------------


def test_finite_float() -> None:
    assert finite_float("-2.5") == -2.5 and finite_float("3") == 3.0
    for text in ("inf", "-inf", "nan", "Infinity"):
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            finite_float(text)
        assert str(exc.value) == f"must be a finite number, got {text}"
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'abc' is not a number$"):
        finite_float("abc")


@pytest.mark.parametrize(("task", "flag", "value"), [
    ("crystal-gap", "--insulator-gap", "inf"), ("crystal-gap", "--metal-gap", "nan"),
    ("polarity", "--dipole-threshold", "inf"), ("mof-pore", "--small-lcd", "-inf"),
    ("mof-pore", "--large-lcd", "nan"),
])
def test_non_finite_threshold_is_refused_when_parsed(
    task: str, flag: str, value: str, fake: FakeFeaturizer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for action in ("build", "info"):
        assert_refused_when_parsed(["data", action, task, f"{flag}={value}"], capsys,
                                   f"argument {flag}: must be a finite number, got {value}")
    assert fake.calls == []


@pytest.mark.parametrize(("task", "key", "flag"), [
    ("crystal-gap", "insulator", "--insulator-gap"), ("crystal-gap", "metal", "--metal-gap"),
    ("polarity", "dipole", "--dipole-threshold"), ("mof-pore", "small", "--small-lcd"),
    ("mof-pore", "large", "--large-lcd"),
])
def test_non_finite_threshold_is_refused_by_the_api(
    task: str, key: str, flag: str, cache: Path, fake: FakeFeaturizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_archives(monkeypatch)
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ConfigError) as exc:
            build_dataset(task, thresholds={key: value}, progress=False)
        assert str(exc.value) == (f"{task} threshold {key} ({flag}) must be a finite number, "
                                  f"got {value!r}")
    assert fake.calls == []


# --------------------------------------------------------------------------------------------
# 5. a --limit of at least the whole set is the full build
# --------------------------------------------------------------------------------------------


def test_limit_over_the_set_size_is_the_full_build(
    cache: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.warns(FullSetWarning) as caught:
        big = build_dataset("crystal-gap", limit=100000, progress=False)
    assert [str(w.message) for w in caught if w.category is FullSetWarning] == [
        f"--limit 100000 is more than the {N_CRYSTALS} crystal-gap entries: the full set is used"]
    assert big.meta["limit"] is None and len(big) == N_CRYSTALS
    full = build_dataset("crystal-gap", progress=False)
    assert full.directory == big.directory and len(fake.calls) == 1
    with pytest.warns(FullSetWarning, match=f"^--limit {N_CRYSTALS} covers all the "):
        same = build_dataset("crystal-gap", limit=N_CRYSTALS, progress=False)
    assert same.directory == full.directory and len(fake.calls) == 1
    with pytest.warns(FullSetWarning):
        assert load_dataset("crystal-gap", limit=50).directory == full.directory
    assert [p.name for p in (cache / "datasets" / "crystal-gap").iterdir()
            if p.is_dir()] == [full.directory.name]

    with pytest.warns(FullSetWarning) as caught:
        assert main(["data", "build", "crystal-gap", "--limit", "100000", "--no-progress"]) == 0
    assert [str(w.message) for w in caught if w.category is FullSetWarning] == [
        f"--limit 100000 is more than the {N_CRYSTALS} crystal-gap entries: the full set is used"]
    assert f"({N_CRYSTALS} entries" in capsys.readouterr().out and len(fake.calls) == 1


def test_limit_below_the_set_size_is_still_a_subset(cache: Path, fake: FakeFeaturizer) -> None:
    full = build_dataset("crystal-gap", progress=False)
    part = build_dataset("crystal-gap", limit=N_CRYSTALS - 1, progress=False)
    assert part.directory != full.directory and len(part) == N_CRYSTALS - 1
    assert part.meta["limit"] == N_CRYSTALS - 1


# --------------------------------------------------------------------------------------------
# 2 and 6. what training says about the build it takes or builds
# --------------------------------------------------------------------------------------------


def test_training_without_limit_says_it_takes_a_subset_build(
    cache: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str],
) -> None:
    build_dataset("crystal-gap", limit=5, progress=False)
    ds = load_task_dataset(TrainConfig(task="crystal-gap"), progress=False)
    assert len(ds) == 5
    assert capsys.readouterr().err == (
        "andersonn: training on the latest crystal-gap build: 5 entries (--limit 5); give "
        "--limit to choose another build, or `andersonn data build crystal-gap` for the full "
        "set\n")
    load_task_dataset(TrainConfig(task="crystal-gap", limit=5), progress=False)
    assert capsys.readouterr().err == ""  # the limit was asked for
    build_dataset("crystal-gap", progress=False)
    assert len(load_task_dataset(TrainConfig(task="crystal-gap"), progress=False)) == N_CRYSTALS
    assert capsys.readouterr().err == ""  # the full set


def test_training_says_why_it_builds(
    cache: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = TrainConfig(task="crystal-gap", limit=5)
    first = load_task_dataset(cfg, progress=False)
    assert capsys.readouterr().err == (
        "andersonn: no crystal-gap build (--limit 5) is cached yet: building it\n")
    directory = first.directory
    del first
    with open(directory / "images.npy", "r+b") as handle:  # damaged
        handle.truncate(100)
    assert len(load_task_dataset(cfg, progress=False)) == 5
    err = capsys.readouterr().err
    assert err == (f"andersonn: the cached crystal-gap build (--limit 5) in {directory} is "
                   "incomplete or damaged: rebuilding it\n")
    assert "rebuild it with" not in err and len(fake.calls) == 2

    fake.version = "fake-2"  # the latest build is stale
    load_task_dataset(TrainConfig(task="crystal-gap"), progress=False)
    assert capsys.readouterr().err == (
        "andersonn: the cached crystal-gap build is stale (featurizer version fake-1 != current "
        "fake-2): building a current one\n")


def test_a_run_of_an_old_limit_over_the_set_size_finds_the_full_build(
    cache: Path, fake: FakeFeaturizer,
) -> None:
    # before a --limit at or above the set's size meant the full build, it built the full
    # content under a key of its own; a run recorded that key
    from andersonn.data.build import _resolve, _spec_dict, cache_key
    from andersonn.data.cache import write_cache
    from andersonn.training.runs import run_build

    full = build_dataset("crystal-gap", progress=False)
    task_def, values, opts, spec, version, _ = _resolve("crystal-gap", None, None)
    key, fields = cache_key(task_def, thresholds=values, options=opts, limit=100000, seed=0,
                            featurizer_version=version, image_spec=_spec_dict(spec))
    old = full.directory.parent / key
    meta = {**full.meta, "key": key, "key_fields": fields, "limit": 100000}
    write_cache(old, images=np.asarray(full.images), labels=np.asarray(full.labels),
                ids=full.ids, splits=np.asarray(full.splits), classes=full.classes, meta=meta,
                report=full.report)
    run = {"task": "crystal-gap", "dataset": {"cache_key": key, "limit": 100000},
           "train": {"task": "crystal-gap", "limit": 100000}, "thresholds": None,
           "featurizer_version": full.meta["featurizer_version"],
           "image_spec": full.meta["image_spec"]}
    assert run_build(run).directory == old
    shutil.rmtree(old)
    with pytest.warns(FullSetWarning):
        assert run_build(run).directory == full.directory
    other = {**run, "featurizer_version": "0.0.1"}  # another featuriser: still refused
    with pytest.warns(FullSetWarning), pytest.raises(AndersonnError, match="differs from it"):
        run_build(other)


def test_a_build_damaged_at_the_right_size_is_named_not_unpickled(tmp_path):
    # numpy's message advised loading the file with allow_pickle=True
    import numpy as np

    from andersonn.data.cache import CachedDataset
    from andersonn.errors import AndersonnError

    build = tmp_path / "build"
    build.mkdir()
    for name, array in (("images", np.zeros((3, 2, 2, 2), np.float32)),
                        ("labels", np.arange(3)), ("splits", np.zeros(3, np.int8))):
        np.save(build / f"{name}.npy", array)
    (build / "ids.json").write_text('["a", "b", "c"]')
    (build / "meta.json").write_text('{"classes": ["x", "y"]}')
    assert len(CachedDataset(build)) == 3
    raw = bytearray((build / "labels.npy").read_bytes())
    raw[:6] = b"XXXXXX"  # the same size, no longer a .npy header
    (build / "labels.npy").write_bytes(bytes(raw))
    with pytest.raises(AndersonnError, match=r"damaged dataset build \(labels\.npy: unreadable\); "
                                             r"rebuild it with `andersonn data build TASK "
                                             r"--force`") as caught:
        CachedDataset(build)
    assert "pickle" not in str(caught.value)
    (build / "labels.npy").unlink()
    with pytest.raises(AndersonnError, match=r"\(labels\.npy: No such file or directory\)"):
        CachedDataset(build)


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch, capsys):
    # ENOSPC on write names no file: the CLI showed a traceback instead of one line
    import errno
    import os

    import numpy as np

    from andersonn import fileio
    from andersonn.data.cache import write_cache

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        fileio.atomic_write_text(tmp_path / "out.json", "{}")
    assert caught.value.filename == os.fspath(tmp_path / "out.json")
    assert caught.value.strerror == "No space left on device" and not list(tmp_path.iterdir())

    def short_write(handle, arr, allow_pickle):
        raise OSError("2995200 requested and 1572832 written")  # numpy's, without errno

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(OSError, match=r"is the disk full\?") as caught:
        write_cache(tmp_path / "build", images=np.zeros((1, 1, 1, 1), np.float32), labels=[0],
                    ids=["a"], splits=[0], classes=["x"], meta={})
    assert caught.value.filename == os.fspath(tmp_path / "build" / "images.npy")


def test_clean_and_threshold_messages_name_what_the_user_can_type():
    from andersonn.data import clean_datasets
    from andersonn.data.tasks import get_task
    from andersonn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown task 'bogus'; choose one of polarity, "
                                          r"mof-pore, crystal-gap, custom or all$"):
        clean_datasets(["bogus"])
    with pytest.raises(ConfigError, match=r"needs --small-lcd below --large-lcd, got small 12 Å, "
                                          r"large 6 Å$"):
        get_task("mof-pore").thresholds({"small": 12.0, "large": 6.0})
