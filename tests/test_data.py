"""Tests of the data stage: archives, sources, labels, splits, cache and CLI.

Fast tests build tiny archives with the real internal layout (wheel zips, tar.xz inside a zip, a
tar.gz sdist, a zip inside a zip) from the rows in ``tests/fixtures/data`` (real QM9 / matminer /
JARVIS rows) and use a fake featuriser, so they need neither network nor the images stage.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from andersonn.cli import main
from andersonn.data import TASKS, build_dataset, dataset_info, load_dataset, open_cache, write_cache
from andersonn.data import archives as archives_mod
from andersonn.data import clean as clean_mod
from andersonn.data.archives import ARCHIVES, ensure_archive, iter_tar_members, read_tar_member
from andersonn.data.cache import is_complete
from andersonn.data.domain import Domain
from andersonn.data.materials_project import GAPS_MEMBER, parse_structure_dict
from andersonn.data.splits import stratified_split, stratified_subset
from andersonn.errors import AndersonnError

FIXTURES = Path(__file__).parent / "fixtures" / "data"

# --------------------------------------------------------------------------------------------
# Tiny archives with the real layout
# --------------------------------------------------------------------------------------------

_CIF = """data_{name}
_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
_symmetry_int_tables_number 1
loop_
  _symmetry_equiv_pos_as_xyz
  'x, y, z'
loop_
  _atom_site_label
  _atom_site_type_symbol
  _atom_site_fract_x
  _atom_site_fract_y
  _atom_site_fract_z
  Cu1 Cu 0.0 0.0 0.0
  O1 O 0.5 0.0 0.0
  O2 O 0.0 0.5 0.0
  C1 C 0.0 0.0 0.5
"""

MOF_ASR = [  # (filename, LCD)
    ("AAA_clean", 3.5), ("BBB_clean", 4.2), ("CCC_clean", 5.9),
    ("DDD_clean", 7.0), ("EEE_clean", 9.5), ("FFF_clean", 13.0),
]
MOF_FSR = [("AAA_freeONLY", 3.9), ("ZZZ_freeONLY", 12.5)]
MALICIOUS = "__import__('os').system('echo pwned > /tmp/andersonn-pwned')"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _csv_text(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def make_archives(folder: Path, *, extra_flla: list[list[str]] | None = None) -> dict[str, Path]:
    """Write the four fixture archives into ``folder``; return key -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    # qm9pack wheel: 12 real QM9 rows spread over the three parts
    lines = (FIXTURES / "qm9_rows.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    parts = {f"qm9pack/data/qm9_part{i + 1}.csv": (header + "".join(rows[i::3])).encode()
             for i in range(3)}
    parts["qm9pack/__init__.py"] = b"raise SystemExit('never import me')\n"
    paths["qm9pack"] = _zip(folder / ARCHIVES["qm9pack"].filename, parts)
    # core_mof wheel: csv + tar.xz of CIFs
    cifs = {f"{n}.cif": _CIF.format(name=n, a=4.0 + i).encode() for i, (n, _) in enumerate(MOF_ASR)}
    fsr = {f"{n}.cif": _CIF.format(name=n, a=5.0).encode() for n, _ in MOF_FSR}
    mof = {
        "CoRE_MOF/data/2019-ASR.csv": _csv_text(["filename", "LCD", "PLD"],
                                                [[n, v, v / 2] for n, v in MOF_ASR]),
        "CoRE_MOF/data/2019-ASR.tar.xz": _tar_bytes(cifs, "w:xz"),
        "CoRE_MOF/data/2019-FSR.csv": _csv_text(["filename", "LCD", "PLD"],
                                                [[n, v, v / 2] for n, v in MOF_FSR]),
        "CoRE_MOF/data/2019-FSR.tar.xz": _tar_bytes(fsr, "w:xz"),
    }
    paths["core_mof"] = _zip(folder / ARCHIVES["core_mof"].filename, mof)
    # matminer sdist: the four csv files with real rows
    members = {}
    for csv_path in sorted((FIXTURES / "matminer").glob("*.csv")):
        text = csv_path.read_text()
        if csv_path.stem == "flla_2015" and extra_flla:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(extra_flla)
            text += buf.getvalue()
        members[f"matminer-0.4.0/matminer/datasets/{csv_path.name}"] = text.encode()
    members["matminer-0.4.0/setup.py"] = b"raise SystemExit('never run me')\n"
    path = folder / ARCHIVES["matminer"].filename
    path.write_bytes(_tar_bytes(members, "w:gz"))
    paths["matminer"] = path
    # jarvis wheel: a zip inside the zip
    gaps = json.loads((FIXTURES / "gaps.json").read_text())
    items = sorted(gaps.items())
    split = {"train": dict(items[:4]), "val": dict(items[4:6]), "test": dict(items[6:])}
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("megnet_gappbe.json", json.dumps(split))
    paths["jarvis_leaderboard"] = _zip(
        folder / ARCHIVES["jarvis_leaderboard"].filename,
        {GAPS_MEMBER: inner.getvalue()},
    )
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pin(monkeypatch: pytest.MonkeyPatch, paths: dict[str, Path]) -> None:
    for key, path in paths.items():
        monkeypatch.setitem(ARCHIVES, key, replace(ARCHIVES[key], sha256=_sha(path)))


@pytest.fixture(name="cache")
def archive_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeFeaturizer
                  ) -> Path:
    """A cache root holding the fixture archives where a build without --source finds them
    (``cache`` in the modules that import it)."""
    root = tmp_path / "cache"
    _pin(monkeypatch, make_archives(root / "archives"))
    monkeypatch.setenv("ANDERSONN_CACHE", str(root))
    return root


# --------------------------------------------------------------------------------------------
# A fake featuriser with the contract of andersonn.images
# --------------------------------------------------------------------------------------------


@dataclass
class FakeSpec:
    name: str
    shape: tuple[int, int, int] = (2, 4, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}


@dataclass
class FakeResult:
    images: np.ndarray
    ok_indices: list[int]
    failures: list[tuple[int, str, str]]


@dataclass
class FakeFeaturizer:
    version: str = "fake-1"
    calls: list[list[str]] = field(default_factory=list)
    fail_ids: set[str] = field(default_factory=set)

    def api(self) -> tuple[dict[str, FakeSpec], str, Any]:
        return {t: FakeSpec(t) for t in TASKS}, self.version, self.featurize_many

    def featurize_many(self, inputs, spec, workers=None, progress=True, desc=""):
        self.calls.append([name for _, _, name in inputs])
        images, ok, failures = [], [], []
        for i, (content, fmt, name) in enumerate(inputs):
            valid = {
                "xyz": isinstance(content, str) and content.split("\n", 1)[0].strip().isdigit(),
                "cif": isinstance(content, str) and "_cell_length_a" in content,
                "poscar": isinstance(content, str) and len(content.splitlines()) > 7,
                "pymatgen-dict": isinstance(content, dict) and "sites" in content,
            }.get(fmt, False)
            if not valid or name in self.fail_ids:
                failures.append((i, name, f"fake featuriser rejects {fmt}"))
                continue
            images.append(np.full(spec.shape, zlib.crc32(name.encode()) % 97, np.float32))
            ok.append(i)
        return FakeResult(np.stack(images) if images else np.zeros((0, *spec.shape), np.float32),
                          ok, failures)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeFeaturizer) -> dict[str, Any]:
    source = tmp_path / "src"
    bad_row = ["mp-999", "{'X': 1.0}", "0", "1", MALICIOUS, "0", "0"]
    paths = make_archives(source, extra_flla=[bad_row])
    _pin(monkeypatch, paths)
    monkeypatch.setenv("ANDERSONN_CACHE", str(tmp_path / "cache"))
    return {"source": source, "cache": tmp_path / "cache", "fake": fake, "paths": paths}


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDERSONN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert archives_mod.default_cache_dir() == tmp_path / "xdg" / "andersonn"
    monkeypatch.setenv("ANDERSONN_CACHE", str(tmp_path / "own"))
    assert archives_mod.archive_dir() == tmp_path / "own" / "archives"
    assert archives_mod.archive_dir(tmp_path / "x") == tmp_path / "x" / "archives"


def test_pinned_archives_match_data_sources() -> None:
    assert ARCHIVES["matminer"].sdist and ARCHIVES["matminer"].filename == "matminer-0.4.0.tar.gz"
    assert ARCHIVES["qm9pack"].sha256.startswith("1d88c298")
    cmd = archives_mod.pip_command(ARCHIVES["qm9pack"], "/d")
    assert cmd[3:] == ["download", "--no-deps", "--only-binary", ":all:", "--dest", "/d",
                       ARCHIVES["qm9pack"].requirement]
    with pytest.raises(AndersonnError, match="sdist"):  # pip would run its setup.py
        archives_mod.pip_command(ARCHIVES["matminer"], "/d")


def test_sha256_mismatch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_archives(tmp_path)
    _pin(monkeypatch, paths)
    assert ensure_archive("core_mof", source_dir=tmp_path) == paths["core_mof"]
    with open(paths["core_mof"], "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(AndersonnError) as err:
        ensure_archive("core_mof", source_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "corrupt" in msg and ARCHIVES["core_mof"].sha256 in msg
    assert "pip download --no-deps" in msg and "core_mof==2019.1" in msg


def test_missing_archive_hint_names_data_fetch_never_an_sdist_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AndersonnError) as err:  # the sdist: only `andersonn data fetch`
        ensure_archive("matminer", source_dir=tmp_path)
    msg = str(err.value)
    assert "`andersonn data fetch crystal-gap --dest DIR`" in msg and "PyPI access" in msg
    assert f"copy DIR/matminer-0.4.0.tar.gz into {tmp_path}" in msg
    assert "pip download" not in msg and "--no-binary" not in msg
    assert ARCHIVES["matminer"].sha256 in msg and "\n" not in msg

    with pytest.raises(AndersonnError) as err:  # a wheel: also the equivalent pip line
        ensure_archive("core_mof", source_dir=tmp_path)
    msg = str(err.value)
    assert "`andersonn data fetch mof-pore --dest DIR`" in msg
    assert "`pip download --no-deps --only-binary :all: --dest DIR core_mof==2019.1`" in msg
    assert "--no-binary" not in msg and "\n" not in msg

    (tmp_path / "matminer-0.4.0.tar.gz").write_bytes(b"not the pinned file")
    with pytest.raises(AndersonnError, match="corrupt") as err:
        ensure_archive("matminer", source_dir=tmp_path)
    assert "andersonn data fetch crystal-gap" in str(err.value)
    assert "pip download" not in str(err.value)

    def broken(request: object, timeout: float = 0) -> Any:
        raise OSError("no network")

    spec = ARCHIVES["matminer"]
    with pytest.raises(AndersonnError, match="could not download") as err:
        archives_mod.fetch_sdist_from_index(spec, tmp_path / "x", index_url="https://idx/simple",
                                            opener=broken)
    assert "andersonn data fetch crystal-gap" in str(err.value)
    assert "--no-binary" not in str(err.value)
    with pytest.raises(AndersonnError, match="pip exit status 1") as err:  # a wheel pip fails on
        ensure_archive("qm9pack", cache_dir=tmp_path / "c", runner=lambda cmd: 1)
    msg = str(err.value)
    assert "andersonn data fetch polarity" in msg and "--only-binary :all:" in msg


def test_fetch_uses_pip_download_into_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = make_archives(tmp_path / "upstream")
    _pin(monkeypatch, built)
    seen: list[list[str]] = []

    def runner(cmd: list[str]) -> int:
        seen.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / built["qm9pack"].name).write_bytes(built["qm9pack"].read_bytes())
        return 0

    path = ensure_archive("qm9pack", cache_dir=tmp_path / "c", runner=runner)
    assert path == tmp_path / "c" / "archives" / built["qm9pack"].name
    assert seen and "qm9pack==1.0.3" in seen[0] and "--no-deps" in seen[0]
    ensure_archive("qm9pack", cache_dir=tmp_path / "c", runner=runner)  # kept: no second fetch
    assert len(seen) == 1


def test_tar_member_with_dotdot_or_link_is_rejected(tmp_path: Path) -> None:
    data = _tar_bytes({"ok.csv": b"a", "../evil.csv": b"b"}, "w:xz")
    with pytest.raises(AndersonnError, match="unsafe"):
        list(iter_tar_members(data, "r:xz"))
    data = _tar_bytes({"/etc/evil": b"b"}, "w:gz")
    with pytest.raises(AndersonnError, match="unsafe"):
        read_tar_member(data, "/etc/evil")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("data/link.csv")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(AndersonnError, match="link"):
        list(iter_tar_members(buf.getvalue(), "r"))
    assert not (tmp_path.parent / "evil.csv").exists()


def test_literal_eval_rejects_malicious_structure(tmp_path: Path) -> None:
    marker = Path("/tmp/andersonn-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="not a Python literal"):
        parse_structure_dict(MALICIOUS)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a pymatgen"):
        parse_structure_dict("[1, 2, 3]")
    assert parse_structure_dict("{'lattice': {}, 'sites': []}") == {"lattice": {}, "sites": []}


# --------------------------------------------------------------------------------------------
# Labels, dedup, splits
# --------------------------------------------------------------------------------------------


def test_label_rules() -> None:
    pol, mof, gap = TASKS["polarity"], TASKS["mof-pore"], TASKS["crystal-gap"]
    t = pol.thresholds()
    assert t == {"dipole": 2.5}
    assert [pol.label(v, t) for v in (0.0, 2.4999, 2.5, 3.8)] == [0, 0, 1, 1]
    t = mof.thresholds()
    assert [mof.label(v, t) for v in (3.9, 5.999, 6.0, 11.99, 12.0, 30)] == [0, 0, 1, 1, 2, 2]
    t = gap.thresholds()
    assert [gap.label(v, t) for v in (0.0, 0.001, 3.0, 3.0001, 11.8)] == [0, 1, 1, 2, 2]
    assert pol.label(2.2, pol.thresholds({"dipole": 2.0})) == 1
    with pytest.raises(AndersonnError):
        mof.thresholds({"small": 12, "large": 6})
    with pytest.raises(AndersonnError):
        pol.thresholds({"nope": 1.0})


def test_crystal_gap_join_dedups_and_rejects_literal(env: dict[str, Any]) -> None:
    from andersonn.data import materials_project

    res = materials_project.read(env["paths"])
    ids = [e.id for e in res.entries]
    assert len(ids) == len(set(ids)) == 7  # mp-126 and mp-2 are in flla and elastic: kept once
    assert res.stats["duplicate_rows_dropped"] == 2
    by_id = {e.id: e for e in res.entries}
    assert by_id["mp-126"].fmt == "pymatgen-dict" and by_id["mp-126"].origin == "flla_2015"
    assert by_id["mp-22925"].fmt == "poscar"  # piezo row: fields shifted vs header, aligned
    assert by_id["mp-22881"].fmt == "poscar" and by_id["mp-22881"].origin == "dielectric_constant"
    assert res.skipped == [("mp-999", "flla_2015.csv: structure is not a Python literal "
                                      "(ValueError)")]
    t = TASKS["crystal-gap"]
    labels = sorted(t.label(e.value, t.thresholds()) for e in res.entries)
    assert labels == [0, 0, 1, 1, 2, 2, 2]


def test_splits_deterministic_stratified_disjoint() -> None:
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=1000, p=[0.5, 0.35, 0.15])
    a = stratified_split(labels, seed=7)
    assert a.dtype == np.int8 and set(np.unique(a)) == {0, 1, 2}
    assert np.array_equal(a, stratified_split(labels, seed=7))
    assert not np.array_equal(a, stratified_split(labels, seed=8))
    for cls in range(3):
        n = int((labels == cls).sum())
        counts = np.bincount(a[labels == cls], minlength=3)
        assert abs(counts[0] - 0.8 * n) <= 1 and abs(counts[1] - 0.1 * n) <= 1
        assert counts.sum() == n  # each item in exactly one split
    sub = stratified_subset(labels, 100, seed=3)
    assert np.array_equal(sub, stratified_subset(labels, 100, seed=3))
    assert len(sub) == len(set(sub.tolist())) == 100
    assert abs(np.bincount(labels[sub], minlength=3)[2] - 15) <= 1
    assert len(stratified_subset(labels, 5000)) == 1000


# --------------------------------------------------------------------------------------------
# Build, cache, load
# --------------------------------------------------------------------------------------------


def test_build_all_tasks_from_fixture_archives(env: dict[str, Any]) -> None:
    ds = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert len(ds) == 7 and ds.classes == ["metal", "semiconductor", "insulator"]
    assert ds.images.shape == (7, 2, 4, 4) and isinstance(ds.images, np.memmap)
    assert ds.labels.dtype == np.int64 and ds.splits.dtype == np.int8
    assert dict(zip(ds.ids, ds.labels.tolist(), strict=True))["mp-111"] == 2
    assert ds.meta["sources"]["matminer"]["sha256"] == ARCHIVES["matminer"].sha256
    assert ds.report["skipped"][0]["id"] == "mp-999"
    assert ds.meta["source_stats"]["without_gap"] == 0

    pol = build_dataset("polarity", source_dir=env["source"], progress=False)
    assert len(pol) == 12
    labels = dict(zip(pol.ids, pol.labels.tolist(), strict=True))
    assert labels["dsgdb9nsd_000005"] == 1 and labels["dsgdb9nsd_000003"] == 0  # HCN, water
    xyz_input = env["fake"].calls[-1]
    assert "dsgdb9nsd_000001" in xyz_input

    mof = build_dataset("mof-pore", source_dir=env["source"], progress=False)
    assert sorted(mof.labels.tolist()) == [0, 0, 0, 1, 1, 2]
    fsr = build_dataset("mof-pore", source_dir=env["source"], progress=False,
                        options={"include_fsr": True})
    assert "FSR/ZZZ_freeONLY" in fsr.ids and "FSR/AAA_freeONLY" not in fsr.ids
    assert fsr.directory != mof.directory


def test_featurisation_failures_are_skipped_and_reported(env: dict[str, Any]) -> None:
    env["fake"].fail_ids = {"dsgdb9nsd_000004"}
    ds = build_dataset("polarity", source_dir=env["source"], progress=False)
    assert "dsgdb9nsd_000004" not in ds.ids and len(ds) == 11
    report = json.loads((ds.directory / "report.json").read_text())
    assert report["skipped"] == [{"id": "dsgdb9nsd_000004", "stage": "featurize",
                                  "reason": "fake featuriser rejects xyz"}]
    info = dataset_info("polarity")
    assert info["skipped_count"] == 1 and info["skipped_first"][0]["id"] == "dsgdb9nsd_000004"


def test_limit_takes_seeded_subset_before_featurising(env: dict[str, Any]) -> None:
    ds = build_dataset("polarity", limit=6, seed=3, source_dir=env["source"], progress=False)
    assert len(ds) == 6 and len(env["fake"].calls[-1]) == 6
    assert sorted(np.bincount(ds.labels).tolist()) == [2, 4]  # 4 of 12 polar -> 2 of 6
    again = build_dataset("polarity", limit=6, seed=3, source_dir=env["source"], progress=False,
                          force=True)
    assert again.ids == ds.ids and np.array_equal(again.splits, ds.splits)


def test_cache_reused_when_same_and_rebuilt_when_inputs_change(env: dict[str, Any]) -> None:
    fake = env["fake"]
    a = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert len(fake.calls) == 1
    b = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert len(fake.calls) == 1 and b.directory == a.directory  # reused, nothing featurised
    assert load_dataset("crystal-gap").directory == a.directory

    c = build_dataset("crystal-gap", source_dir=env["source"], progress=False,
                      thresholds={"insulator": 2.0})
    assert len(fake.calls) == 2 and c.directory != a.directory
    assert c.meta["thresholds"]["insulator"] == 2.0
    assert load_dataset("crystal-gap", thresholds={"insulator": 2.0}).directory == c.directory
    with pytest.raises(AndersonnError, match="run `andersonn data build crystal-gap --seed 5"):
        load_dataset("crystal-gap", seed=5)

    fake.version = "fake-2"  # featuriser changed: old builds are stale, never reused
    with pytest.raises(AndersonnError, match="stale"):
        load_dataset("crystal-gap")
    with pytest.raises(AndersonnError, match="andersonn data build crystal-gap"):
        load_dataset("crystal-gap", thresholds={"insulator": 2.0})
    d = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert len(fake.calls) == 3 and d.directory not in (a.directory, c.directory)
    assert d.meta["featurizer_version"] == "fake-2"
    assert load_dataset("crystal-gap").directory == d.directory
    fake.version = "fake-1"  # back to the first featuriser: LATEST (d) is stale, a is current
    assert load_dataset("crystal-gap").directory == a.directory


def test_half_written_cache_is_detected_and_rebuilt(env: dict[str, Any]) -> None:
    ds = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    directory = ds.directory
    del ds
    (directory / "COMPLETE").unlink()  # as if the build died before the marker
    assert not is_complete(directory)
    with pytest.raises(AndersonnError, match="incomplete"):
        open_cache(directory)
    with pytest.raises(AndersonnError, match="incomplete"):
        load_dataset("crystal-gap", seed=0)
    rebuilt = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert rebuilt.directory == directory and is_complete(directory)
    assert len(env["fake"].calls) == 2

    with open(directory / "images.npy", "r+b") as handle:  # truncated file under a marker
        handle.truncate(100)
    with pytest.raises(AndersonnError, match="truncated"):
        open_cache(directory)


def test_write_cache_open_cache_and_torch_split(tmp_path: Path) -> None:
    import torch

    images = np.arange(10 * 2 * 3 * 3, dtype=np.float32).reshape(10, 2, 3, 3)
    labels = np.array([0, 1] * 5)
    splits = stratified_split(labels, seed=0)
    write_cache(tmp_path / "ds", images=images, labels=labels, ids=[f"m{i}" for i in range(10)],
                splits=splits, classes=["a", "b"], meta={"task": "toy"})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    ds = open_cache(tmp_path / "ds", verify=True)
    assert ds.meta["n"] == 10 and ds.classes == ["a", "b"]
    train = ds.torch_split("train")
    assert len(train) == int((splits == 0).sum())
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == (2, 3, 3) and y.dtype == torch.int64
    i = int(np.flatnonzero(splits == 0)[0])
    assert torch.equal(x, torch.from_numpy(images[i])) and int(y) == labels[i]
    import pickle

    clone = pickle.loads(pickle.dumps(train))  # what a spawn DataLoader worker receives
    assert isinstance(clone.images, np.memmap) and torch.equal(clone[0][0], x)
    all_idx = np.concatenate([ds.split_indices(s) for s in ("train", "val", "test")])
    assert sorted(all_idx.tolist()) == list(range(10))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_build_and_info(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "build", "crystal-gap", "--source", str(env["source"]), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "metal" in out and "sha256" in out
    assert main(["data", "info", "crystal-gap"]) == 0
    out = capsys.readouterr().out
    assert "label rule  metal if gap <= 0 eV" in out
    assert "skipped     1" in out and "mp-999" in out and "Python literal" in out
    assert ARCHIVES["jarvis_leaderboard"].sha256 in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert sum(int(v) for v in lines["all"]) == 7 * 2  # class cells + total
    assert main(["data", "info", "crystal-gap", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"] == {"metal": 2, "semiconductor": 2, "insulator": 3}
    assert sum(sum(row.values()) for row in info["counts"].values()) == 7


def test_cli_missing_archive_exit_2_one_line(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["data", "build", "mof-pore", "--source", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("andersonn: error:")
    assert "pip download --no-deps" in err and "core_mof==2019.1" in err
    assert main(["data", "info", "polarity"]) == 2
    assert "andersonn data build polarity" in capsys.readouterr().err
    assert main(["data", "build", "polarity", "--small-lcd", "5"]) == 2
    assert "applies to task mof-pore" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The real featuriser and the real archives
# --------------------------------------------------------------------------------------------


def _real_images() -> Any:
    images = pytest.importorskip("andersonn.images")
    if not hasattr(images, "featurize_many") or not hasattr(images, "IMAGE_SPECS"):
        pytest.skip("andersonn.images has not landed yet")
    return images


def test_real_featuriser_on_tiny_inputs(tmp_path: Path) -> None:
    images = _real_images()
    from andersonn.data.qm9 import xyz_text

    water = xyz_text(["O", "H", "H"], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692],
                                       [0.0, -0.7572, -0.4692]], "water")
    spec = images.IMAGE_SPECS["polarity"]
    res = images.featurize_many([(water, "xyz", "water")], spec, workers=1, progress=False)
    assert list(res.ok_indices) == [0] and res.images.dtype == np.float32
    assert res.images.shape[1:] == tuple(spec.shape)
    cif = _CIF.format(name="toy", a=4.0)
    poscar = "Na Cl\n1.0\n5.6 0 0\n0 5.6 0\n0 0 5.6\nNa Cl\n1 1\ndirect\n0 0 0 Na\n0.5 0.5 0.5 Cl\n"
    items = {"mof-pore": (cif, "cif", "toy"), "crystal-gap": (poscar, "poscar", "nacl")}
    for task, item in items.items():
        res = images.featurize_many([item], images.IMAGE_SPECS[task], workers=1, progress=False)
        assert len(res.ok_indices) + len(res.failures) == 1


def test_real_featuriser_builds_fixture_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _real_images()
    paths = make_archives(tmp_path / "src")
    _pin(monkeypatch, paths)
    for task, n in (("crystal-gap", 7), ("polarity", 12), ("mof-pore", 6)):
        ds = build_dataset(task, source_dir=tmp_path / "src", cache_dir=tmp_path / "c",
                           workers=1, progress=False)
        assert ds.report["skipped"] == [] and len(ds) == n
        assert ds.images.shape[1:] == tuple(images.IMAGE_SPECS[task].shape)
        assert ds.meta["featurizer_version"] == images.IMAGE_SPECS[task].featurizer_version
        assert np.isfinite(ds.images).all()
        domain = Domain.from_dict(ds.meta["domain"])  # over the training split only
        assert domain.kind == TASKS[task].kind and domain.n == int((ds.splits == 0).sum())
        assert domain.elements and max(domain.elements.values()) <= domain.n
        if task == "polarity":
            assert set(domain.elements) <= {"H", "C", "N", "O", "F"}


@pytest.mark.network
@pytest.mark.slow
def test_real_crystal_gap_build(tmp_path: Path) -> None:
    _real_images()
    ds = build_dataset("crystal-gap", cache_dir=tmp_path, progress=False)
    assert ds.meta["candidate_class_counts"] == [2327, 2934, 1016]
    assert ds.meta["candidates"] == 6277
    assert len(ds) + sum(1 for s in ds.report["skipped"] if s["stage"] == "featurize") == 6277
    assert len(ds) > 6000
    for name in ARCHIVES:
        if name in ("matminer", "jarvis_leaderboard"):
            assert (tmp_path / "archives" / ARCHIVES[name].filename).is_file()
    assert os.fspath(tmp_path) in os.fspath(ds.directory)
    assert sys.modules.get("matminer") is None and sys.modules.get("jarvis_leaderboard") is None


class _FakeResponse(io.BytesIO):
    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_sdist_is_taken_from_the_index_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import json as _json
    from dataclasses import replace

    payload = b"not really a tarball"
    spec = replace(ARCHIVES["matminer"], sha256=hashlib.sha256(payload).hexdigest())
    urls: list[str] = []

    def opener(request: object, timeout: float = 0) -> _FakeResponse:
        url = getattr(request, "full_url", request)
        urls.append(str(url))
        if str(url).endswith("/matminer/"):
            listing = {"files": [{"filename": spec.filename, "url": "https://files/m.tar.gz"}]}
            return _FakeResponse(_json.dumps(listing).encode())
        return _FakeResponse(payload)

    got = archives_mod.fetch_sdist_from_index(spec, tmp_path, index_url="https://idx/simple",
                                              opener=opener)
    assert got.read_bytes() == payload and urls[0] == "https://idx/simple/matminer/"
    bad = replace(spec, sha256="0" * 64)
    (tmp_path / spec.filename).unlink()
    with pytest.raises(AndersonnError, match="expected 0000"):
        archives_mod.fetch_sdist_from_index(bad, tmp_path, index_url="https://idx/simple",
                                            opener=opener)
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind


# --------------------------------------------------------------------------------------------
# andersonn data fetch: archives for an offline machine
# --------------------------------------------------------------------------------------------


def _fake_pip(built: dict[str, Path], calls: list[list[str]]) -> Any:
    """A stand-in for ``pip download``: copies the fixture wheel named by the requirement."""
    by_req = {ARCHIVES[k].requirement: path for k, path in built.items()}

    def runner(cmd: list[str]) -> int:
        calls.append(list(cmd))
        assert "--only-binary" in cmd and "--no-binary" not in cmd
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / by_req[cmd[-1]].name).write_bytes(by_req[cmd[-1]].read_bytes())
        return 0

    return runner


def test_fetch_archives_fetched_then_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from andersonn.data import fetch_archives

    built = make_archives(tmp_path / "upstream")
    _pin(monkeypatch, built)
    calls: list[list[str]] = []
    runner = _fake_pip(built, calls)
    seen: list[tuple[str, str]] = []
    dest = tmp_path / "offline"
    paths = fetch_archives(["polarity", "mof-pore"], dest=dest, runner=runner,
                           on_archive=lambda spec, path, status: seen.append((path.name, status)))
    assert paths == [dest / ARCHIVES["qm9pack"].filename, dest / ARCHIVES["core_mof"].filename]
    assert seen == [(p.name, "fetched") for p in paths] and len(calls) == 2
    assert all(_sha(p) == ARCHIVES[k].sha256 for p, k in zip(paths, ("qm9pack", "core_mof"),
                                                             strict=True))
    seen.clear()
    assert fetch_archives("mof-pore", dest=dest, runner=runner,
                          on_archive=lambda spec, path, status: seen.append((path.name, status)))
    assert seen == [(ARCHIVES["core_mof"].filename, "present")] and len(calls) == 2
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in paths)  # no temps

    # default dest: the cache's archives folder
    got = fetch_archives("polarity", cache_dir=tmp_path / "c", runner=runner)
    assert got == [tmp_path / "c" / "archives" / ARCHIVES["qm9pack"].filename]
    with pytest.raises(AndersonnError, match="unknown task"):
        fetch_archives(["nope"], dest=dest, runner=runner)


def test_fetch_archives_sha_mismatch_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from andersonn.data import fetch_archives

    built = make_archives(tmp_path / "upstream")
    _pin(monkeypatch, built)

    def runner(cmd: list[str]) -> int:  # serves a different file under the pinned name
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / ARCHIVES["qm9pack"].filename).write_bytes(b"tampered")
        return 0

    with pytest.raises(AndersonnError) as err:
        fetch_archives("polarity", dest=tmp_path / "d", runner=runner)
    msg = str(err.value)
    assert "\n" not in msg and "corrupt" in msg and ARCHIVES["qm9pack"].sha256 in msg
    assert "andersonn data fetch polarity --dest DIR" in msg


def _offline_fetch_paths(
    monkeypatch: pytest.MonkeyPatch, built: dict[str, Path]
) -> dict[str, list[Any]]:
    """Patch the two real fetch paths (pip for wheels, the index for the sdist): no network."""
    log: dict[str, list[Any]] = {"pip": [], "index": []}
    runner = _fake_pip(built, log["pip"])

    def run(cmd: list[str], check: bool = False, **kwargs: Any) -> Any:
        import subprocess

        return subprocess.CompletedProcess(cmd, runner(cmd))

    def from_index(spec: Any, folder: Path, **kwargs: Any) -> Path:
        log["index"].append(spec.filename)
        (folder / spec.filename).write_bytes(built[spec.key].read_bytes())
        return folder / spec.filename

    monkeypatch.setattr(archives_mod.subprocess, "run", run)
    monkeypatch.setattr(archives_mod, "fetch_sdist_from_index", from_index)
    return log


def test_fetch_archives_all_takes_the_sdist_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from andersonn.data import fetch_archives

    built = make_archives(tmp_path / "upstream")
    _pin(monkeypatch, built)
    log = _offline_fetch_paths(monkeypatch, built)
    paths = fetch_archives("all", dest=tmp_path / "d")
    assert [p.name for p in paths] == [ARCHIVES[k].filename for k in
                                       ("qm9pack", "core_mof", "matminer", "jarvis_leaderboard")]
    assert log["index"] == ["matminer-0.4.0.tar.gz"]  # the sdist never goes through pip
    assert [c[-1] for c in log["pip"]] == ["qm9pack==1.0.3", "core_mof==2019.1",
                                           "jarvis_leaderboard==2024.10.30"]


def test_cli_fetch_then_offline_build(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = _offline_fetch_paths(monkeypatch, env["paths"])
    dest = tmp_path / "offline"
    assert main(["data", "fetch", "crystal-gap", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out.splitlines()
    for line, key in zip(out, ("matminer", "jarvis_leaderboard"), strict=False):
        path = dest / ARCHIVES[key].filename
        assert line.startswith("fetched ") and str(path) in line
        assert f"({path.stat().st_size} bytes)" in line and ARCHIVES[key].sha256 in line
    assert "--source DIR" in out[-1] and len(out) == 3
    assert main(["data", "fetch", "crystal-gap", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["present", "present"]
    assert len(log["index"]) == 1 and len(log["pip"]) == 1
    # the copied folder is all an offline build needs
    assert main(["data", "build", "crystal-gap", "--source", str(dest), "--no-progress"]) == 0
    assert "metal" in capsys.readouterr().out
    assert main(["data", "fetch", "polarity", "--cache-dir", str(tmp_path / "c")]) == 0
    assert str(tmp_path / "c" / "archives" / ARCHIVES["qm9pack"].filename) in (
        capsys.readouterr().out)


# --------------------------------------------------------------------------------------------
# andersonn data clean
# --------------------------------------------------------------------------------------------


def _fake_build(cache: Path, task: str, name: str, *, version: str = "fake-1") -> Path:
    """A tiny complete build of ``task`` named ``name``, as made by featuriser ``version``."""
    meta = {"task": task, "featurizer_version": version, "image_spec": FakeSpec(task).to_dict(),
            "sources": {k: {"sha256": ARCHIVES[k].sha256} for k in TASKS[task].archives}}
    return write_cache(cache / "datasets" / task / name, images=np.ones((2, 2, 4, 4), np.float32),
                       labels=[0, 1], ids=["a", "b"], splits=[0, 1],
                       classes=TASKS[task].classes, meta=meta)


def _temp_dir(task_root: Path, name: str, age_s: float) -> Path:
    tmp = task_root / name
    tmp.mkdir(parents=True)
    (tmp / "images.npy").write_bytes(b"x" * 100)
    then = time.time() - age_s
    os.utime(tmp, (then, then))
    return tmp


def _messy_cache(cache: Path) -> dict[str, Path]:
    """crystal-gap builds: current, stale, incomplete, damaged, old and young temps, LATEST."""
    root = cache / "datasets" / "crystal-gap"
    dirs = {
        "current": _fake_build(cache, "crystal-gap", "aaaa"),
        "stale": _fake_build(cache, "crystal-gap", "bbbb", version="fake-0"),
        "incomplete": _fake_build(cache, "crystal-gap", "cccc"),
        "damaged": _fake_build(cache, "crystal-gap", "dddd"),
        "other_task": _fake_build(cache, "polarity", "eeee", version="fake-0"),
    }
    (dirs["incomplete"] / "COMPLETE").unlink()
    with open(dirs["damaged"] / "images.npy", "r+b") as handle:
        handle.truncate(10)
    dirs["old_tmp"] = _temp_dir(root, ".ffff.x1.tmp", age_s=7200)
    dirs["young_tmp"] = _temp_dir(root, ".ffff.x2.tmp", age_s=60)
    (root / "LATEST").write_text("bbbb\n")
    (root / "notes.txt").write_text("not a build")
    (cache / "archives").mkdir(parents=True)
    (cache / "archives" / ARCHIVES["matminer"].filename).write_bytes(b"archive")
    return dirs


def test_clean_removes_stale_and_incomplete_keeps_current(
    tmp_path: Path, fake: FakeFeaturizer
) -> None:
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    dirs = _messy_cache(cache)
    root = cache / "datasets" / "crystal-gap"
    stale_size = sum(p.stat().st_size for p in dirs["stale"].iterdir())
    records = clean_datasets(["crystal-gap"], cache_dir=cache)
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"bbbb", "cccc", "dddd", ".ffff.x1.tmp", ".ffff.x2.tmp", "LATEST"}
    assert by_name["bbbb"] == {
        "task": "crystal-gap", "name": "bbbb", "path": str(dirs["stale"]), "action": "removed",
        "reason": "stale: featurizer version fake-0 != current fake-1", "bytes": stale_size}
    assert "incomplete" in by_name["cccc"]["reason"]
    assert "damaged" in by_name["dddd"]["reason"]
    assert by_name[".ffff.x1.tmp"]["action"] == "removed"
    assert by_name[".ffff.x2.tmp"]["action"] == "kept"  # a build may be writing it
    assert by_name["LATEST"]["action"] == "removed"
    for key in ("stale", "incomplete", "damaged", "old_tmp"):
        assert not dirs[key].exists()
    assert is_complete(dirs["current"]) and dirs["young_tmp"].is_dir()
    assert not (root / "LATEST").exists() and (root / "notes.txt").is_file()
    assert is_complete(dirs["other_task"])  # only the named task
    assert (cache / "archives" / ARCHIVES["matminer"].filename).read_bytes() == b"archive"

    again = clean_datasets(cache_dir=cache)  # every task by default, in TASKS order
    assert [(r["task"], r["action"]) for r in again] == [("polarity", "removed"),
                                                         ("crystal-gap", "kept")]
    assert not dirs["other_task"].exists()
    assert clean_datasets(cache_dir=tmp_path / "nothing-here") == []


def test_clean_dry_run_deletes_nothing(tmp_path: Path, fake: FakeFeaturizer) -> None:
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    dirs = _messy_cache(cache)
    before = sorted(str(p) for p in cache.rglob("*"))
    dry = clean_datasets("crystal-gap", cache_dir=cache, dry_run=True)
    assert sorted(str(p) for p in cache.rglob("*")) == before
    assert {r["action"] for r in dry} == {"would remove", "kept"}
    real = clean_datasets("crystal-gap", cache_dir=cache)
    assert [(r["name"], r["bytes"]) for r in dry] == [(r["name"], r["bytes"]) for r in real]
    assert not dirs["stale"].exists()


def test_clean_all_removes_every_build(tmp_path: Path, fake: FakeFeaturizer) -> None:
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    dirs = _messy_cache(cache)
    root = cache / "datasets" / "crystal-gap"
    (root / "LATEST").write_text("aaaa\n")
    fake.version = "unavailable"  # --all needs no featuriser
    records = clean_datasets("crystal-gap", cache_dir=cache, all_builds=True)
    assert {r["name"] for r in records if r["action"] == "removed"} == {
        "aaaa", "bbbb", "cccc", "dddd", ".ffff.x1.tmp", "LATEST"}
    assert sorted(p.name for p in root.iterdir()) == [".ffff.x2.tmp", "notes.txt"]
    assert is_complete(dirs["other_task"]) and (cache / "archives").is_dir()


def test_clean_latest_kept_when_its_build_is_kept(tmp_path: Path, fake: FakeFeaturizer) -> None:
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    _messy_cache(cache)
    latest = cache / "datasets" / "crystal-gap" / "LATEST"
    latest.write_text("aaaa\n")
    records = clean_datasets("crystal-gap", cache_dir=cache)
    assert "LATEST" not in {r["name"] for r in records}
    assert latest.read_text() == "aaaa\n"


def test_clean_never_follows_symlinks(tmp_path: Path, fake: FakeFeaturizer) -> None:
    from andersonn.data import clean_datasets

    cache = tmp_path / "cache"
    outside = _fake_build(tmp_path / "elsewhere", "crystal-gap", "stale", version="fake-0")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    stale = _fake_build(cache, "crystal-gap", "bbbb", version="fake-0")
    (stale / "link-to-victim").symlink_to(victim)
    (stale / "dir-link").symlink_to(outside, target_is_directory=True)
    root = cache / "datasets" / "crystal-gap"
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "LATEST").symlink_to(tmp_path / "victim.txt")
    (cache / "datasets" / "polarity").symlink_to(outside.parent, target_is_directory=True)

    for all_builds in (False, True):
        records = clean_datasets(cache_dir=cache, all_builds=all_builds)
        kept = {r["name"]: r["reason"] for r in records if r["action"] == "kept"}
        assert kept == {"linked": "symlink: never followed", "polarity": "symlink: never followed"}
        assert (root / "linked").is_symlink() and (cache / "datasets" / "polarity").is_symlink()
    assert not stale.exists()
    assert victim.read_text() == "keep me" and is_complete(outside)
    assert (root / "LATEST").is_symlink()
    with pytest.raises(AndersonnError, match="refusing"):
        clean_mod._remove_tree(root / "linked", root)


def test_clean_keeps_a_build_a_process_has_mapped(env: dict[str, Any]) -> None:
    import gc

    from andersonn.data import clean_datasets

    ds = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    directory = ds.directory
    env["fake"].version = "fake-2"  # the build is stale now, but this process maps its images
    records = clean_datasets("crystal-gap")
    assert [r["action"] for r in records] == ["kept"]
    assert f"memory-mapped by running process {os.getpid()}" in records[0]["reason"]
    assert is_complete(directory)
    del ds
    gc.collect()
    records = clean_datasets("crystal-gap")
    assert [(r["name"], r["action"]) for r in records] == [(directory.name, "removed"),
                                                          ("LATEST", "removed")]
    with pytest.raises(AndersonnError, match="has not been built"):
        load_dataset("crystal-gap")
    fresh = build_dataset("crystal-gap", source_dir=env["source"], progress=False)
    assert fresh.meta["featurizer_version"] == "fake-2"
    assert clean_datasets("crystal-gap") == []  # the current build stays


def test_cli_clean(
    tmp_path: Path, fake: FakeFeaturizer, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    dirs = _messy_cache(cache)
    args = ["data", "clean", "--cache-dir", str(cache)]
    assert main([*args, "crystal-gap", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("would remove") and str(dirs["stale"]) in line
               and "stale: featurizer version fake-0" in line for line in out)
    assert any(line.startswith("kept") and str(dirs["young_tmp"]) in line for line in out)
    assert out[-1].startswith("would free ") and "nothing deleted" in out[-1]
    assert dirs["stale"].is_dir()

    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    removed = [line for line in out if line.startswith("removed")]
    assert len(removed) == 6 and any(str(dirs["other_task"]) in line for line in removed)
    assert out[-1].startswith("freed ") and "6 item(s) removed" in out[-1]
    assert not dirs["stale"].exists() and is_complete(dirs["current"])

    assert main([*args, "all", "--all"]) == 0
    assert not dirs["current"].exists() and dirs["young_tmp"].is_dir()
    assert capsys.readouterr().out.splitlines()[-1].startswith("freed ")
    assert main([*args, "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_cli_limit_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("build", "info"):
        with pytest.raises(SystemExit) as info:
            main(["data", action, "polarity", "--limit", "-3"])
        assert info.value.code == 2
        assert "--limit: must be at least 1, got -3" in capsys.readouterr().err


def test_build_with_an_empty_split_warns(env: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from andersonn.data.build import EmptySplitWarning

    with pytest.warns(EmptySplitWarning, match=r"the val and test splits .* are empty"):
        ds = build_dataset("polarity", limit=5, source_dir=env["source"], progress=False)
    assert set(ds.splits.tolist()) == {0}
    assert main(["data", "build", "polarity", "--limit", "5", "--source", str(env["source"]),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "andersonn: warning: the val and test splits of this build are empty" in err
