"""Applicability domain: summaries of parsed structures, the domain of a training split, the
checks prediction makes, and the record a dataset build writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from andersonn.data.domain import Domain
from andersonn.structures import read_structure

FIXTURES = Path(__file__).parent / "fixtures" / "structures"


def test_summary_of_known_structures() -> None:
    assert read_structure(str(FIXTURES / "water.xyz")).summary() == ((1, 8), 3, False)
    assert read_structure("CCO").summary() == ((1, 6, 8), 9, False)
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
    assert Domain.from_dict(domain.to_dict()) == domain
    assert domain.describe() == \
        "molecules, 4 training structures, 4 elements (H C O F), 3–9 atoms"


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
    assert res.summaries == [((1, 8), 3, False), ((1, 6, 8), 9, False)]
