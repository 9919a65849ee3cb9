"""Applicability domain: summaries of parsed structures, the domain of a training split, the
checks prediction makes, and the record a dataset build writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from andersonn.data.domain import Domain
from andersonn.structures import read_structure

FIXTURES = Path(__file__).parent / "fixtures" / "structures"


def test_summary_of_known_structures() -> None:
    assert read_structure(str(FIXTURES / "water.xyz")).summary() == ((1, 8), 3, False, 1)
    assert read_structure("CCO").summary() == ((1, 6, 8), 9, False, 3)
    nacl = read_structure(str(FIXTURES / "NaCl.cif")).summary()
    assert nacl[0] == (11, 17) and nacl[2] is True
    # a supercell is the same crystal: same elements, more atoms
    bigger = read_structure(str(FIXTURES / "NaCl_221.cif")).summary()
    assert bigger[0] == nacl[0] and bigger[1] > nacl[1]


def test_domain_counts_structures_not_atoms() -> None:
    molecules = ["CCO", "CC", "O", "C(F)(F)F"]
    domain = Domain.from_summaries(read_structure(s).summary() for s in molecules)
    assert domain.kind == "molecule" and domain.n == 4
    assert dict(domain.elements or {}) == {"H": 4, "C": 3, "O": 2, "F": 1}
    assert domain.atoms == (3, 9)  # water to ethanol
    assert domain.heavy_atoms == (1, 4)  # water to CHF3
    assert Domain.from_dict(domain.to_dict()) == domain
    assert domain.describe() == \
        "molecules, 4 training structures, 4 elements (H C O F), 3–9 atoms, 1–4 heavy atoms"


def test_mixed_kinds_and_empty() -> None:
    summaries = [((1, 8), 3, False), ((11, 17), 8, True)]
    assert Domain.from_summaries(summaries).kind == "mixed"
    with pytest.raises(ValueError, match="at least one"):
        Domain.from_summaries([])


def test_check_kind_error_and_warnings() -> None:
    molecules = Domain.from_summaries([((1, 6), 5, False), ((1, 6, 8), 9, False)])
    error, notes = molecules.check(((11, 17), 8, True))
    assert error is not None and "a crystal, but this model was trained on molecules" in error
    assert molecules.check(((1, 6, 8), 9, False)) == (None, [])
    _, notes = molecules.check(((1, 6, 17, 35), 7, False))
    assert notes == ["elements Cl, Br not in any of the 2 training structures"]
    _, notes = molecules.check(((1, 6), 30, False))
    assert notes == ["30 atoms; the training molecules had 5–9"]
    crystals = Domain.from_summaries([((11, 17), 8, True)])
    assert crystals.check(((11, 17), 64, True)) == (None, [])  # cells are not size-checked
    error, _ = crystals.check(((1, 8), 3, False))
    assert error is not None and "a molecule" in error
    mixed = Domain.from_summaries([((1, 8), 3, False), ((11, 17), 8, True)])
    assert mixed.check(((11, 17), 2, True))[0] is None
    assert mixed.check(((1, 8), 3, False))[0] is None
    # with heavy-atom counts: QM9-like training (≤ 9 heavy atoms) flags a drug-sized molecule
    # whose total atom count is still inside the training range
    qm9_like = Domain.from_summaries([((1, 6), 5, False, 1), ((1, 6, 8), 29, False, 9)])
    assert qm9_like.check(((1, 6, 8), 21, False, 13)) == (
        None, ["21 atoms (13 heavy); the training molecules had 5–29 (1–9 heavy)"])
    assert qm9_like.check(((1, 6, 8), 21, False, 9)) == (None, [])
    kind_only = Domain("crystal")
    assert kind_only.check(((92,), 1, True)) == (None, [])  # nothing else recorded


@pytest.mark.parametrize("record, message", [
    ({"kind": "liquid"}, "kind 'liquid'"),
    ({"kind": "crystal", "elements": {"Xx": 3}}, "unknown element"),
    ({"kind": "crystal", "atoms": [1]}, "not enough values"),
])
def test_malformed_records_rejected(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Domain.from_dict(record)


def test_featurize_many_summaries_follow_the_images() -> None:
    from andersonn.images import IMAGE_SPECS, featurize_many

    water = (FIXTURES / "water.xyz").read_text()
    inputs = [(water, "xyz", "water"), ("((", "smiles", "bad"), ("CCO", "smiles", "ethanol")]
    res = featurize_many(inputs, IMAGE_SPECS["polarity"], workers=1, progress=False)
    assert res.ok_indices == [0, 2] and len(res.failures) == 1
    assert res.summaries == [((1, 8), 3, False, 1), ((1, 6, 8), 9, False, 3)]


def test_image_summaries_are_occupied_pixel_means_and_maxima() -> None:
    import numpy as np

    from andersonn.data.domain import image_summaries

    img = np.zeros((1, 2, 3, 2))
    img[0, 0, 0] = [1.0, 3.0]   # an occupied row: channel 0 = 1, 3; channel 1 = 0, 0
    img[0, 1, 1, 0] = -2.0      # another occupied pixel, channel 1 only
    # occupied pixels: (0,0), (0,1), (1,0); channel 0 over them 1, 3, 0; channel 1 0, 0, -2
    np.testing.assert_allclose(image_summaries(img), [[4 / 3, -2 / 3, 3.0, 0.0]])
    np.testing.assert_allclose(image_summaries(np.concatenate([img, img]), rows=[1]),
                               image_summaries(img))


def test_feature_domain_flags_what_lies_far_from_the_training_images() -> None:
    import numpy as np

    from andersonn.data.domain import FEATURE_QUANTILE, FeatureDomain

    rng = np.random.default_rng(0)
    train = rng.normal(size=(4000, 3, 4, 5)) + 5.0  # no empty pixels
    domain = FeatureDomain.fit(train)
    held_out = rng.normal(size=(4000, 3, 4, 5)) + 5.0
    flagged = (domain.distances(held_out) > domain.threshold).mean()
    assert flagged < 3 * (1 - FEATURE_QUANTILE) + 0.002  # about 0.1 %, as on training data
    shifted = held_out[:50] + np.array([0.0, 3.0, 0.0])[None, :, None, None]
    assert (domain.distances(shifted) > domain.threshold).all()
    assert domain.check(held_out[int(np.argmin(domain.distances(held_out)))]) == []
    (note,) = domain.check(shifted[0])
    assert note.startswith("unlike the training structures (feature distance")
    again = FeatureDomain.from_dict(domain.to_dict())
    np.testing.assert_allclose(again.distances(shifted), domain.distances(shifted))
    with pytest.raises(ValueError, match="training images per summary dimension"):
        FeatureDomain.fit(train[:20])  # 6 summary dimensions need 30
    with pytest.raises(ValueError, match="shapes disagree"):
        FeatureDomain.from_dict({"mean": [0.0, 1.0], "precision": [[1.0]], "threshold": 1.0})
