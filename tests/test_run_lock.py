"""One writer per folder: ``fileio.folder_lock`` and the training run's lock (a second trainer
on the same run folder is refused at once, before it loads data or touches a file)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from andersonn.errors import AndersonnError
from andersonn.fileio import LOCK_NAME, FolderBusy, folder_lock

from helpers import tiny_polarity_dataset, tiny_polarity_run


def test_a_second_holder_is_refused_and_the_first_release_frees_the_folder(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder, "another training") as lock:
        assert lock == folder / LOCK_NAME
        assert lock.read_text().strip() == str(os.getpid())
        busy = rf"^{folder}: another training is writing into it \(process {os.getpid()}\); wait"
        with pytest.raises(FolderBusy, match=busy), folder_lock(folder, "another training"):
            pass
        (folder / "kept.txt").write_text("x")
    assert [p.name for p in folder.iterdir()] == ["kept.txt"]  # the lock file goes with it
    with folder_lock(folder):  # released: the next holder gets it
        pass
    assert (folder / "kept.txt").exists()


def test_a_folder_the_lock_created_and_left_empty_is_removed(tmp_path):
    folder = tmp_path / "new" / "run"
    with folder_lock(folder):
        assert folder.is_dir()
    assert not folder.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with folder_lock(existing):
        pass
    assert existing.is_dir()  # not ours to remove


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    folder = tmp_path / "run"
    ready = tmp_path / "ready"
    code = textwrap.dedent(f"""
        import pathlib, time
        from andersonn.fileio import folder_lock
        with folder_lock({str(folder)!r}):
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(FolderBusy, match=rf"\(process {child.pid}\)"), folder_lock(folder):
            pass
    finally:
        child.kill()
        child.wait()
    with folder_lock(folder):  # kill -9 released it
        pass


def test_a_second_training_in_the_same_run_folder_is_refused(tmp_path):
    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"
    with folder_lock(run, "another training"):
        with pytest.raises(AndersonnError, match="another training is writing into it"):
            tiny_polarity_run(dataset, run)
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]  # nothing written but the lock
    tiny_polarity_run(dataset, run)  # free again: trains
    assert (run / "model.safetensors").exists() and not (run / LOCK_NAME).exists()


def test_resume_of_a_folder_holding_only_the_lock_starts_a_new_run(tmp_path):
    from andersonn.training import TrainConfig, train

    dataset = tiny_polarity_dataset(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("")  # left by an earlier trainer that failed before writing
    cfg = TrainConfig(task="polarity", epochs=1, hidden=8, batch_size=4, threads=1, plots=False)
    train(cfg, run, resume=True, dataset=dataset, progress=False)
    assert (run / "model.safetensors").exists()


def test_a_lock_file_removed_by_its_holder_is_not_locked_twice(tmp_path, monkeypatch):
    # a waiter that opened the old file just before its holder removed it must not take it
    import andersonn.fileio as fileio

    folder = tmp_path / "run"
    folder.mkdir()
    real_open, opened = os.open, []

    def open_then_holder_leaves(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if not opened:
            opened.append(fd)
            os.unlink(path)  # the previous holder's release, between open and flock
        return fd

    monkeypatch.setattr(fileio.os, "open", open_then_holder_leaves)
    with folder_lock(folder) as lock:
        assert lock.exists()  # the new file, locked (the first was given up)
        monkeypatch.setattr(fileio.os, "open", real_open)
        with pytest.raises(FolderBusy), folder_lock(folder):
            pass


def test_a_file_system_that_cannot_lock_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    import errno

    import andersonn.fileio as fileio
    from andersonn.errors import AndersonnWarning

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fileio.fcntl, "flock", no_locks)
    with pytest.warns(AndersonnWarning, match="this file system cannot lock files"), \
            folder_lock(tmp_path / "run") as lock:
        assert lock.exists()
    assert not (tmp_path / "run").exists()


def test_folders_the_lock_made_are_removed_up_to_the_first_that_existed(tmp_path):
    with folder_lock(tmp_path / "a" / "b" / "run"):
        pass
    assert list(tmp_path.iterdir()) == []
    with folder_lock(tmp_path / "a" / "b" / "run"):
        (tmp_path / "a" / "kept").write_text("x")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["kept"]


def test_the_holder_is_named_while_it_lives_and_a_symlinked_lock_is_not_followed(tmp_path):
    from andersonn.fileio import lock_holder

    folder = tmp_path / "run"
    assert lock_holder(folder) is None
    with folder_lock(folder):
        assert lock_holder(folder) is None  # this process: not "another" holder
    folder.mkdir()
    (folder / LOCK_NAME).write_text(f"{os.getppid()}\n")  # another live process
    assert lock_holder(folder) == os.getppid()
    (folder / LOCK_NAME).write_text("999999999\n")  # left by a killed holder
    assert lock_holder(folder) is None
    (folder / LOCK_NAME).unlink()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (folder / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError), folder_lock(folder):
        pass
    assert target.read_text() == "keep me"


def test_calibrating_a_run_that_trains_is_refused(tmp_path):
    from andersonn.training import calibrate_run

    dataset = tiny_polarity_dataset(tmp_path)
    run = tiny_polarity_run(dataset, tmp_path / "run")
    with folder_lock(run, "a training"), pytest.raises(FolderBusy, match="a training is "
                                                                          "writing into it"):
        calibrate_run(run, dataset=dataset)
    calibrate_run(run, dataset=dataset)  # free: calibrates
