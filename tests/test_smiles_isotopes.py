"""SMILES with explicit hydrogen isotopes ([2H], [3H]) on either side of their heavy atom."""

from __future__ import annotations

import numpy as np
import pytest

from andersonn.structures import readers


def _distances(smiles: str) -> tuple[list[int], np.ndarray]:
    s = readers.read_structure(smiles)
    pos = np.asarray(s.positions)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    return sorted(np.asarray(s.numbers).tolist()), np.sort(d[np.triu_indices(len(pos), 1)])


@pytest.mark.parametrize(("after", "before"), [
    ("CO[2H]", "[2H]OC"), ("C[3H]", "[3H]C"), ("O([2H])[2H]", "[2H]O[2H]"),
    ("C([2H])O", "[2H]CO"),
])
def test_an_isotope_after_its_atom_reads_like_one_before_it(after: str, before: str) -> None:
    # the isotope written after its heavy atom used to fail with a zip() length error
    elements_after, d_after = _distances(after)
    elements_before, d_before = _distances(before)
    assert elements_after == elements_before
    np.testing.assert_allclose(d_after, d_before, atol=1e-6)
    assert d_after.min() > 0.9  # every atom placed (an unplaced one sits at the origin)
