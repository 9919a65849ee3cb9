"""``andersonn image``: the image spec it picks for a structure file is the one training on a
labels file of such structures picks (a metal-organic framework: mof-pore; a crystal:
crystal-gap), unless ``--task`` names one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from andersonn.cli import main

FIX = Path(__file__).parent / "fixtures" / "structures"


@pytest.mark.parametrize(("name", "extra", "spec"), [
    ("mof_ABAVIJ_clean.cif", [], "mof-pore"),  # C, H and a metal: a framework
    ("NaCl.cif", [], "crystal-gap"),
    ("mof_ABAVIJ_clean.cif", ["--task", "crystal-gap"], "crystal-gap"),
])
def test_image_chooses_the_spec_as_labels_file_training_does(
        name: str, extra: list[str], spec: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import andersonn.images.render as render
    from andersonn.data.labelled import choose_image

    written: list[tuple[str, tuple[int, ...]]] = []

    def fake_write(stem: Any, img: np.ndarray, spec: Any, labels: Any, title: str) -> tuple:
        written.append((spec.name, img.shape))  # no PNG rendering: slow and beside the point
        return Path(f"{stem}.png"), Path(f"{stem}.npy")

    monkeypatch.setattr(render, "write_image_files", fake_write)
    path = str(FIX / name)
    assert main(["image", path, "--out", str(tmp_path / "img"), *extra]) == 0
    from andersonn.images import IMAGE_SPECS

    assert written == [(spec, IMAGE_SPECS[spec].shape)]
    if not extra:
        assert choose_image([path], None) == spec


@pytest.mark.parametrize(("source", "task", "warning"), [
    (str(FIX / "NaCl.cif"), "polarity",
     "NaCl.cif: a crystal drawn with the polarity image, made for molecules (models of that task "
     "refuse crystals)"),
    ("CCO", "crystal-gap",
     "CCO: a molecule drawn with the crystal-gap image, made for crystals (models of that task "
     "refuse molecules)"),
    ("CCO", "polarity", None),
])
def test_image_warns_when_task_does_not_fit_the_structure(
        source: str, task: str, warning: str | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import andersonn.images.render as render

    monkeypatch.setattr(render, "write_image_files",
                        lambda stem, *rest: (Path(f"{stem}.png"), Path(f"{stem}.npy")))
    assert main(["image", source, "--task", task, "--out", str(tmp_path / "img")]) == 0
    err = capsys.readouterr().err
    assert err == (f"andersonn: warning: {warning}\n" if warning else "")
