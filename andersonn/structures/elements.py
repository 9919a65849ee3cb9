"""Element property tables (indexed by atomic number) used by readers, networks and images.

Values: Pauling electronegativity (0 where undefined), covalent radius (Cordero, via ASE),
van der Waals radius (ASE, with a fallback), atomic mass, period, group and valence electrons;
common oxidation states, unfilled s/p/d/f valence orbitals and metal flags (from pymatgen,
written out as tables).
Plain numpy arrays so worker processes do not need to import pymatgen.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses, chemical_symbols, covalent_radii
from ase.data.vdw import vdw_radii

MAX_Z = 103

_EN = [0.0, 2.2, 0.0, 0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, 0.0, 0.93, 1.31, 1.61, 1.9, 2.19,
       2.58, 3.16, 0.0, 0.82, 1.0, 1.36, 1.54, 1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.9, 1.65, 1.81,
       2.01, 2.18, 2.55, 2.96, 3.0, 0.82, 0.95, 1.22, 1.33, 1.6, 2.16, 1.9, 2.2, 2.28, 2.2, 1.93,
       1.69, 1.78, 1.96, 2.05, 2.1, 2.66, 2.6, 0.79, 0.89, 1.1, 1.12, 1.13, 1.14, 1.13, 1.17, 1.2,
       1.2, 1.1, 1.22, 1.23, 1.24, 1.25, 1.1, 1.27, 1.3, 1.5, 2.36, 1.9, 2.2, 2.2, 2.28, 2.54, 2.0,
       1.62, 2.33, 2.02, 2.0, 2.2, 2.2, 0.7, 0.9, 1.1, 1.3, 1.5, 1.38, 1.36, 1.28, 1.3, 1.3, 1.3,
       1.3, 1.3, 1.3, 1.3, 1.3, 1.3]

SYMBOLS: list[str] = list(chemical_symbols[: MAX_Z + 1])
SYMBOL_TO_Z: dict[str, int] = {s: z for z, s in enumerate(SYMBOLS) if z > 0}
ELECTRONEGATIVITY = np.asarray(_EN, dtype=np.float64)
COVALENT_RADIUS = np.asarray(covalent_radii[: MAX_Z + 1], dtype=np.float64)
MASS = np.asarray(atomic_masses[: MAX_Z + 1], dtype=np.float64)
_vdw = np.asarray(vdw_radii[: MAX_Z + 1], dtype=np.float64)
VDW_RADIUS = np.where(np.isfinite(_vdw), _vdw, COVALENT_RADIUS + 0.8)


def _period_group(z: int) -> tuple[int, int]:
    """Period and IUPAC group (lanthanides/actinides: group 3)."""
    if z <= 2:
        return 1, (1 if z == 1 else 18)
    starts = [(3, 2), (11, 3), (19, 4), (37, 5), (55, 6), (87, 7)]
    period, start = 2, 3
    for s, p in starts:
        if z >= s:
            start, period = s, p
    pos = z - start  # 0-based position in the period
    if period in (2, 3):
        return period, (pos + 1 if pos < 2 else pos + 11)
    if period in (4, 5):
        return period, pos + 1
    # periods 6/7 hold 14 f-block elements after group 2
    if pos < 2:
        return period, pos + 1
    if pos < 2 + 15:
        return period, 3
    return period, pos - 14 + 1


PERIOD = np.zeros(MAX_Z + 1, dtype=np.float64)
GROUP = np.zeros(MAX_Z + 1, dtype=np.float64)
VALENCE = np.zeros(MAX_Z + 1, dtype=np.float64)
for _z in range(1, MAX_Z + 1):
    _p, _g = _period_group(_z)
    PERIOD[_z], GROUP[_z] = _p, _g
    VALENCE[_z] = _g if _g <= 12 else _g - 10
VALENCE[2] = 2.0

# Charge-equilibration (QEq, Rappe & Goddard 1991) electronegativity chi and hardness J in eV;
# elements without a tabulated value get chi from a linear fit to Pauling EN and J = 10 eV.
_QEQ = {1: (4.528, 13.890), 6: (5.343, 10.126), 7: (6.899, 11.760), 8: (8.741, 13.364),
        9: (10.874, 14.948), 15: (5.463, 8.000), 16: (6.928, 8.972), 17: (8.564, 9.892),
        35: (7.790, 8.850), 53: (6.822, 7.524), 14: (4.168, 6.974), 5: (5.110, 9.910)}
QEQ_CHI = np.where(ELECTRONEGATIVITY > 0, 3.56 * ELECTRONEGATIVITY - 3.31, 3.0)
QEQ_J = np.full(MAX_Z + 1, 10.0)
for _z, (_chi, _j) in _QEQ.items():
    QEQ_CHI[_z], QEQ_J[_z] = _chi, _j
# H, C, N, O, F: electronegativity-equalisation parameters fitted (least squares, L-BFGS) to the
# B3LYP Mulliken charges of 800 QM9 molecules, with the Coulomb shielding EEM_SHIELD = 2.620 Å
# (andersonn.images.physics). Only differences of chi matter; H keeps its QEq value.
_EEM_FIT = {1: (0.0, 6.280), 6: (0.2422, 5.566), 7: (0.4207, 5.831), 8: (0.5282, 6.001),
            9: (6.212, 61.81)}
for _z, (_dchi, _j) in _EEM_FIT.items():
    QEQ_CHI[_z], QEQ_J[_z] = 4.528 + _dchi, _j


# Common oxidation states (pymatgen ``Element.common_oxidation_states``, pymatgen 2026.10.24),
# H (Z = 1) to Lr; "" = none (noble gases). Written out so that importing needs no pymatgen.
_COMMON_OX = (
    "-1 1", "", "1", "2", "3", "-4 -3 -2 -1 0 1 2 3 4", "-3 3 5", "-2", "-1", "", "1", "2",
    "3", "-4 4", "-3 3 5", "-2 2 4 6", "-1 1 3 5 7", "", "1", "2", "3", "4", "5", "3 6",
    "2 4 7", "2 3", "2 3", "2", "2", "2", "3", "-4 2 4", "-3 3 5", "-2 2 4 6", "-1 1 3 5", "2",
    "1", "2", "3", "4", "5", "4 6", "4 7", "3 4", "3", "2 4", "1", "2", "3", "-4 2 4",
    "-3 3 5", "-2 2 4 6", "-1 1 3 5 7", "2 4 6", "1", "2", "3", "3 4", "3", "3", "3", "3",
    "2 3", "3", "3", "3", "3", "3", "3", "3", "3", "4", "5", "4 6", "4 7", "4", "3 4", "2 4",
    "3", "1 2", "1 3", "2 4", "3", "-2 2 4", "-1 1", "", "1", "2", "3", "4", "5", "6", "5",
    "4", "3", "3", "3", "3", "3", "3", "3", "3", "3",
)
COMMON_OXIDATION_STATES: list[tuple[int, ...]] = [()] + [
    tuple(int(v) for v in f.split()) for f in _COMMON_OX]

# Unfilled valence orbitals, Z = 1..103, four hex digits "s p d f" each: holes in the outermost
# s and p shells (principal number = period), in the (period - 1) d and the (period - 2) f shell;
# an empty shell counts 0 (Magpie's NsUnfilled ... NfUnfilled). From pymatgen 2026.10.24
# ``Element.full_electronic_structure`` (so e.g. Cr 4s1 3d5 -> "1050", Pd 4d10 -> "0000").
_UNFILLED = (
    "1000 0000 1000 0000 0500 0400 0300 0200 0100 0000 1000 0000 0500 0400 0300 0200 0100 0000 "
    "1000 0000 0090 0080 0070 1050 0050 0040 0030 0020 1000 0000 0500 0400 0300 0200 0100 0000 "
    "1000 0000 0090 0080 1060 1050 0050 1030 1020 0000 1000 0000 0500 0400 0300 0200 0100 0000 "
    "1000 0000 0090 009D 000B 000A 0009 0008 0007 0097 0005 0004 0003 0002 0001 0000 0090 0080 "
    "0070 0060 0050 0040 0030 1010 1000 0000 0500 0400 0300 0200 0100 0000 1000 0000 0090 0080 "
    "009C 009B 009A 0008 0007 0097 0005 0004 0003 0002 0001 0000 0500"
)
#: (MAX_Z + 1, 4) holes in the s, p, d, f valence shells
UNFILLED = np.zeros((MAX_Z + 1, 4))
for _z, _code in enumerate(_UNFILLED.split(), start=1):
    UNFILLED[_z] = [int(c, 16) for c in _code]

# 1 where pymatgen's ``Element.is_metal`` is true (alkali, alkaline-earth, transition and
# post-transition metals, lanthanides, actinides; not B, Si, Ge, As, Sb, Te, Po), Z = 1..103.
_METAL = ("00110000001110000011111111111110000011111111111111000011111111111111111111111111"
          "11100011111111111111111")
IS_METAL = np.array([0.0] + [float(c) for c in _METAL])


def symbol_to_z(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive); 0 if unknown."""
    s = symbol.strip()
    if not s:
        return 0
    return SYMBOL_TO_Z.get(s[0].upper() + s[1:].lower(), 0)
