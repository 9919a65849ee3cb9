"""Data-stage options and results refused or flagged in one line: a ``--source`` or ``--dest``
that is not a folder, a failed download (what failed and what to do), a build whose training
split holds one class, and ``load_dataset`` opening a ``--limit`` subset as the latest build.
Builds use the tiny fixture archives of ``test_data`` and its fake featuriser."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_data import FakeFeaturizer, archive_cache  # noqa: F401 (the `cache` fixture)

from andersonn.cli import main
from andersonn.data import build_dataset, load_dataset
from andersonn.data.archives import ARCHIVES, ensure_archive, pip_reason
from andersonn.data.build import OneClassWarning, SubsetBuildWarning, one_class_message
from andersonn.errors import AndersonnError

from helpers import assert_refused_when_parsed

# the fixture sets are too small for val and test splits
pytestmark = pytest.mark.filterwarnings("ignore::andersonn.data.build.EmptySplitWarning")


# --------------------------------------------------------------------------------------------
# --source and --dest must be folders
# --------------------------------------------------------------------------------------------
def test_build_source_that_is_not_a_folder_is_refused_when_parsed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a missing folder was reported as "archive ... not found in /nonexistent", or not at
    # all when a cached build was reused
    missing = tmp_path / "nope"
    assert_refused_when_parsed(["data", "build", "polarity", "--source", str(missing)], capsys,
                               f"argument --source: {missing}: no such folder")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_refused_when_parsed(["data", "build", "polarity", "--source", str(afile)], capsys,
                               f"argument --source: {afile} is a file, not a folder")


def test_build_source_that_is_not_a_folder_is_refused_by_the_api_before_a_reuse(
        cache: Path, fake: FakeFeaturizer, tmp_path: Path) -> None:
    build_dataset("polarity", progress=False)  # a build --source would otherwise reuse
    missing = tmp_path / "nope"
    with pytest.raises(AndersonnError) as err:
        build_dataset("polarity", source_dir=missing, progress=False)
    assert str(err.value) == (f"--source {missing}: no such folder (give the folder holding the "
                              "source archives, as filled by `andersonn data fetch`)")
    with pytest.raises(AndersonnError, match=r"^--source .*: no such folder"):
        ensure_archive("qm9pack", source_dir=missing)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AndersonnError, match=r"^--source .*afile: a file, not a folder"):
        build_dataset("polarity", source_dir=tmp_path / "afile", progress=False)
    assert len(fake.calls) == 1


def test_fetch_dest_that_is_a_file_is_refused_when_parsed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # it failed after the download with "andersonn: error: DIR: File exists"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_refused_when_parsed(["data", "fetch", "polarity", "--dest", str(afile)], capsys,
                               f"argument --dest: {afile} is a file; give a folder")


# --------------------------------------------------------------------------------------------
# a failed download says what failed and what to do
# --------------------------------------------------------------------------------------------
UNREACHABLE = (
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) "
    "after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection."
    "HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] "
    "Connection refused')': /simple/qm9pack/\n"
    "ERROR: Could not find a version that satisfies the requirement qm9pack==1.0.3 (from "
    "versions: none)\nERROR: No matching distribution found for qm9pack==1.0.3\n")


def test_pip_reason_tells_an_unreachable_index_from_pips_own_error() -> None:
    assert pip_reason(UNREACHABLE) == (
        ": the package index could not be reached — no network, a proxy in the way, or "
        "PIP_INDEX_URL / pip config naming an index that is down")
    assert pip_reason("ERROR: a\nERROR: Hashes do not match\n") == ": Hashes do not match"
    assert pip_reason("something odd\n") == ": something odd"
    assert pip_reason("") == ""


def test_fetch_failure_is_one_line_saying_what_failed_and_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.data import archives

    def pip_offline(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        assert kwargs.get("stderr") == subprocess.PIPE  # pip's retries are not spilled
        return subprocess.CompletedProcess(cmd, 1, stdout=None, stderr=UNREACHABLE)

    monkeypatch.setattr(archives.subprocess, "run", pip_offline)
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "polarity", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    spec = ARCHIVES["qm9pack"]
    assert err == (
        "andersonn: fetching qm9pack==1.0.3 with pip download ...\n"
        "andersonn: error: could not download qm9pack==1.0.3 (pip exit status 1: "
        "the package index could not be reached — no network, a proxy in the way, or "
        f"PIP_INDEX_URL / pip config naming an index that is down; expected sha256 "
        f"{spec.sha256}); fetch it on a machine with PyPI access with `andersonn data fetch "
        "polarity --dest DIR` (or `pip download --no-deps --only-binary :all: --dest DIR "
        f"qm9pack==1.0.3`) and copy DIR/{spec.filename} into {dest}; or, with {spec.filename} "
        "at hand in a folder DIR, run `andersonn data build polarity --source DIR`\n")
    assert [p.name for p in dest.iterdir()] == []  # no temporary download folder left


def test_sdist_download_failure_names_the_offline_build() -> None:
    from andersonn.data.archives import fetch_sdist_from_index

    def refused(request: object, timeout: float = 0) -> Any:
        raise OSError("[Errno 111] Connection refused")

    with pytest.raises(AndersonnError) as err:
        fetch_sdist_from_index(ARCHIVES["matminer"], Path("/unused"),
                               index_url="http://127.0.0.1:9/simple", opener=refused)
    assert str(err.value).startswith(
        "could not download matminer-0.4.0.tar.gz from http://127.0.0.1:9/simple (OSError: "
        "[Errno 111] Connection refused; expected sha256 ")
    assert str(err.value).endswith(
        "; or, with matminer-0.4.0.tar.gz at hand in a folder DIR, run `andersonn data build "
        "crystal-gap --source DIR`")


# --------------------------------------------------------------------------------------------
# a build whose training split holds one class is flagged
# --------------------------------------------------------------------------------------------
def test_one_class_message_names_the_task_and_the_counts() -> None:
    classes = ["weakly polar", "strongly polar"]
    assert one_class_message("polarity", classes, [160, 0], [200, 0]) == (
        "every entry of this polarity build is in one class (weakly polar 160, strongly polar "
        "0 in the train split; weakly polar 200, strongly polar 0 in all): training on it is "
        "meaningless (`andersonn train` refuses it); build with other label thresholds or a "
        "larger --limit")
    assert one_class_message("polarity", classes, [3, 0], [3, 2]).startswith(
        "every training entry of this polarity build is in one class (weakly polar 3, strongly "
        "polar 0 in the train split; weakly polar 3, strongly polar 2 in all)")
    assert one_class_message("polarity", classes, [3, 1], [3, 1]) is None
    assert one_class_message("polarity", classes, [0, 0], [0, 1]) is None  # empty: not this


def test_a_one_class_build_warns_in_the_api_and_on_the_command_line(
        cache: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str]) -> None:
    # --dipole-threshold 1000 put every molecule in one class, silently
    with pytest.warns(OneClassWarning) as caught:
        ds = build_dataset("polarity", thresholds={"dipole": 1000.0}, progress=False)
    n, train = len(ds), int((ds.splits == 0).sum())
    assert np.unique(ds.labels).tolist() == [0]
    expected = one_class_message("polarity", ds.classes, [train, 0], [n, 0])
    assert [str(w.message) for w in caught if w.category is OneClassWarning] == [expected]
    assert expected.startswith(f"every entry of this polarity build is in one class (weakly "
                               f"polar {train}, strongly polar 0 in the train split")
    # the command says it for a reused build too, once
    assert main(["data", "build", "polarity", "--dipole-threshold", "1000",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines.count(f"andersonn: warning: {expected}") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", OneClassWarning)
        build_dataset("polarity", progress=False, force=True)  # both classes: no warning


# --------------------------------------------------------------------------------------------
# load_dataset(task) says when the latest build is a --limit subset
# --------------------------------------------------------------------------------------------
def test_load_dataset_warns_when_the_latest_build_is_a_subset(
        cache: Path, fake: FakeFeaturizer) -> None:
    full = build_dataset("polarity", progress=False)
    part = build_dataset("polarity", limit=6, progress=False)  # a bench / demo subset: LATEST
    with pytest.warns(SubsetBuildWarning) as caught:
        assert load_dataset("polarity").directory == part.directory
    assert [str(w.message) for w in caught] == [
        "load_dataset('polarity') opened the latest build, a --limit 6 subset (6 entries of "
        "12); pass limit=None for the full set, or limit=6 to take this subset without this "
        "warning"]
    assert caught[0].filename == __file__  # attributed to the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetBuildWarning)
        assert load_dataset("polarity", limit=None).directory == full.directory
        assert load_dataset("polarity", limit=6).directory == part.directory
        build_dataset("polarity", progress=False)  # the full set is LATEST again
        assert load_dataset("polarity").directory == full.directory


def test_subset_warning_names_the_settings_that_reopen_the_build(
        cache: Path, fake: FakeFeaturizer) -> None:
    part = build_dataset("polarity", limit=6, seed=2, thresholds={"dipole": 3.0},
                         progress=False)
    with pytest.warns(SubsetBuildWarning, match=r"or limit=6, seed=2, thresholds=\{'dipole': "
                                                r"3\.0\} to take this subset"):
        load_dataset("polarity")
    assert load_dataset("polarity", limit=6, seed=2,
                        thresholds={"dipole": 3.0}).directory == part.directory


def test_data_info_shows_a_subset_without_the_load_warning(
        cache: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str]) -> None:
    build_dataset("polarity", limit=6, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetBuildWarning)
        assert main(["data", "info", "polarity"]) == 0
    out = capsys.readouterr()
    assert "limit/seed  6 / 0" in out.out and out.err == ""


def test_a_second_build_of_a_task_is_refused_while_one_runs(cache: Path) -> None:
    import multiprocessing

    from andersonn.errors import FolderBusy
    from andersonn.fileio import folder_lock

    task_root = cache / "datasets" / "polarity"
    ready, done = multiprocessing.Event(), multiprocessing.Event()

    def hold() -> None:  # another process in the middle of a build (flock is per process)
        with folder_lock(task_root, "another build of this task"):
            ready.set()
            done.wait(30)

    holder = multiprocessing.get_context("fork").Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(FolderBusy, match=rf"^{task_root}: another build of this task is "
                                             rf"writing into it \(process {holder.pid}\)"):
            build_dataset("polarity", progress=False)
    finally:
        done.set()
        holder.join(30)
    assert build_dataset("polarity", progress=False).meta["n"] > 0  # free again
