"""Reference images of each preset at its featuriser version (``tests/fixtures/images``).

``test_images.test_preset_images_match_their_version`` re-encodes these structures and compares
them with the stored images: a change that alters a preset's images must bump that preset's
``PRESET_VERSIONS`` entry (and ``FEATURIZER_VERSION``), after which the fixture of the new version
is written with ``python tests/image_fixtures.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from andersonn.images import IMAGE_SPECS, encode
from andersonn.structures import read_structure

HERE = Path(__file__).parent / "fixtures"
STRUCTURES = HERE / "structures"
IMAGES = HERE / "images"

#: preset -> fixture structures encoded with it
INPUTS: dict[str, tuple[str, ...]] = {
    "polarity": ("water.xyz", "acetonitrile.xyz", "ethanol.mol", "benzene.sdf",
                 "qm9_strained.xyz"),
    "crystal-gap": ("NaCl.cif", "NaCl_primitive.vasp", "POSCAR_Si", "Si_conventional.cif"),
    "mof-pore": ("mof_KECRAL10_clean.cif", "mof_ABAVIJ_clean.cif"),
}


def fixture_path(preset: str) -> Path:
    """Where the reference images of ``preset`` at its current version are stored."""
    return IMAGES / f"{preset}-{IMAGE_SPECS[preset].featurizer_version}.npz"


def encode_inputs(preset: str) -> dict[str, np.ndarray]:
    """The images of the preset's fixture structures, made by the installed featuriser."""
    return {name: encode(read_structure(STRUCTURES / name), preset).astype(np.float32)
            for name in INPUTS[preset]}


def write_fixture(preset: str) -> Path:
    """Store the current images of ``preset`` as its reference (never overwrites)."""
    path = fixture_path(preset)
    if path.exists():
        raise FileExistsError(f"{path} exists: bump the preset's version instead of overwriting")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **encode_inputs(preset))
    IMAGES.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


if __name__ == "__main__":
    for name in INPUTS:
        if not fixture_path(name).exists():
            print("wrote", write_fixture(name))
