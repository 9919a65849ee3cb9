"""Malformed crystal and molecule files refused by the readers in one line that names the
fault (POSCAR counts, scale and elements; CIF elements and cell lengths; huge coordinates),
while the valid spellings next to them (POTCAR names, oxidation states in CIF type symbols,
selective dynamics, a volume as the scale) keep reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from andersonn.errors import InputError
from andersonn.structures import parse_structure, read_structure, structure_from_arrays
from andersonn.structures.cif import CifError, read_p1_cif

_FRACTIONS = ("0 0 0", "0.5 0.5 0", "0.5 0 0.5", "0 0.5 0.5",
              "0.5 0 0", "0 0.5 0", "0 0 0.5", "0.5 0.5 0.5")


def _poscar(species: str = "Na Cl", counts: str = "4 4", scale: str = "1.0", atoms: int = 8,
            mode: str = "Direct") -> str:
    """Rock salt NaCl (a = 5.64 Å) as a POSCAR, with one part of it changed."""
    return (f"NaCl\n{scale}\n5.64 0 0\n0 5.64 0\n0 0 5.64\n{species}\n{counts}\n{mode}\n"
            + "\n".join(_FRACTIONS[:atoms]) + "\n")


@pytest.mark.parametrize(("text", "reason"), [
    (_poscar(species="Na Cl K"), r"bad POSCAR: 3 species names \(Na Cl K\) but 2 counts \(4 4\)"),
    (_poscar(counts="4 4 2"), r"bad POSCAR: 2 species names \(Na Cl\) but 3 counts \(4 4 2\)"),
    (_poscar(atoms=6), r"bad POSCAR: 8 atoms declared, 6 coordinate lines"),
    (_poscar(scale="0"), r"bad POSCAR: scale factor 0"),
    (_poscar(scale="0.0", mode="Cartesian"), r"bad POSCAR: scale factor 0"),
    (_poscar(species="Xx Cl"), r"unknown element 'Xx' in the POSCAR element line"),
], ids=["more-names", "more-counts", "missing-lines", "scale-0", "scale-0-cartesian", "Xx"])
def test_malformed_poscar_is_refused_naming_the_fault(text: str, reason: str) -> None:
    with pytest.raises(InputError, match=rf"^P: {reason}$"):
        parse_structure(text, "poscar", "P")


def test_valid_poscar_spellings_still_read(tmp_path: Path) -> None:
    assert parse_structure(_poscar(), "poscar", "P").formula == "Cl4Na4"
    # POTCAR names (VASP 5.4), a negative scale (the cell volume), selective dynamics
    potcar = parse_structure(_poscar(species="Na_pv Cl/a1b2c3"), "poscar", "P")
    assert list(potcar.symbols) == ["Na"] * 4 + ["Cl"] * 4
    by_volume = parse_structure(_poscar(scale="-179.406144"), "poscar", "P")
    assert by_volume.volume == pytest.approx(179.406144)
    head, _ = _poscar(mode="Selective dynamics\nDirect").split("Direct\n")
    selective = head + "Direct\n" + "".join(f"{f} T T F\n" for f in _FRACTIONS)
    assert parse_structure(selective, "poscar", "P").n_atoms == 8
    # VASP 4: no element line, the comment names the species
    vasp4 = "Na Cl\n1.0\n0 2.82 2.82\n2.82 0 2.82\n2.82 2.82 0\n1 1\ndirect\n0 0 0\n0.5 0.5 0.5\n"
    assert list(parse_structure(vasp4, "poscar", "P").symbols) == ["Na", "Cl"]
    # more coordinate lines than atoms (velocities after a blank line) are not an error
    path = tmp_path / "POSCAR"
    path.write_text(_poscar() + "\n" + "0 0 0\n" * 8)
    assert read_structure(path).n_atoms == 8


def _cif(symbol: str, group: str = "P 1", a: str = "5.64") -> str:
    return (f"data_x\n_cell_length_a {a}\n_cell_length_b 5.64\n_cell_length_c 5.64\n"
            "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
            f"_symmetry_space_group_name_H-M '{group}'\nloop_\n_atom_site_label\n"
            "_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
            f"_atom_site_fract_z\nNa1 {symbol} 0 0 0\nCl1 Cl 0.5 0.5 0.5\n")


@pytest.mark.parametrize("group", ["P 1", "F m -3 m"])
def test_cif_type_symbol_that_is_no_element_is_refused(group: str) -> None:
    """The label Na1 no longer stands in for the type symbol Xx (P1 fast path), nor does
    pymatgen's placeholder species reach the element check (symmetry path)."""
    with pytest.raises(InputError, match=r"^c\.cif: unknown element 'Xx'$"):
        parse_structure(_cif("Xx", group), "cif", "c.cif")


def test_fast_cif_reader_refuses_the_type_symbol_itself() -> None:
    with pytest.raises(CifError, match=r"^unknown element 'Xx'$"):
        read_p1_cif(_cif("Xx"))
    # no type symbol column: the label names the element, as before
    no_symbol = _cif("Na").replace("_atom_site_type_symbol\n", "").replace(" Na 0", " 0") \
        .replace("Cl1 Cl", "Cl1")
    numbers, _, _ = read_p1_cif(no_symbol)
    assert numbers.tolist() == [11, 17]


@pytest.mark.parametrize(("symbol", "z"), [("Na", 11), ("Na+", 11), ("Na1+", 11), ("D", 1),
                                            ("Fe2+", 26), ("O2-", 8)])
def test_cif_type_symbols_with_charges_still_read(symbol: str, z: int) -> None:
    fast = read_p1_cif(_cif(symbol))
    assert fast is not None and fast[0].tolist() == [z, 17]
    s = parse_structure(_cif(symbol, "F m -3 m"), "cif", "c.cif")
    assert sorted(s.numbers.tolist()) == sorted([z] * 4 + [17] * 4)


@pytest.mark.parametrize("group", ["P 1", "F m -3 m"])
@pytest.mark.parametrize("a", ["-5.64", "0", "'-5.64(2)'"])
def test_cif_with_a_non_positive_cell_length_is_refused(group: str, a: str) -> None:
    shown = a.strip("'")
    with pytest.raises(InputError, match=rf"^c\.cif: bad CIF: cell length a = {shown}$".replace(
            "(", r"\(").replace(")", r"\)")):
        parse_structure(_cif("Na", group, a), "cif", "c.cif")
    # the value on the line after its data name is checked as well
    split = _cif("Na", group).replace("_cell_length_c 5.64", "_cell_length_c\n-1.0")
    with pytest.raises(InputError, match=r"^c\.cif: bad CIF: cell length c = -1\.0$"):
        parse_structure(split, "cif", "c.cif")


@pytest.mark.parametrize(("text", "fmt"), [
    ("2\n\nH 0 0 0\nH 1e300 0 0\n", "xyz"),
    ('2\nLattice="5 0 0 0 5 0 0 0 5"\nNa 0 0 0\nCl 1e300 2.5 2.5\n', "xyz"),
    ("CRYSTAL\nPRIMVEC\n5 0 0\n0 5 0\n0 0 5\nPRIMCOORD\n2 1\nNa 0 0 0\nCl 1e300 2.5 2.5\n", "xsf"),
], ids=["molecule", "extended-xyz", "xsf"])
def test_huge_coordinates_are_refused_in_one_line(text: str, fmt: str) -> None:
    with pytest.raises(InputError, match=r"^h: coordinates too large \(1e\+300 Å; at most "
                                         r"1e\+06 Å expected\)$"):
        parse_structure(text, fmt, "h")


def test_huge_cell_and_the_bound_itself() -> None:
    with pytest.raises(InputError, match=r"^h: cell vectors too large \(1e\+300 Å"):
        structure_from_arrays([11], [[0, 0, 0]], np.diag([1e300, 5, 5]), name="h")
    # a molecule far from the origin, under the bound, is fine
    far = parse_structure("2\n\nC 999998 0 0\nC 999999.54 0 0\n", "xyz", "far")
    assert far.n_atoms == 2 and len(far.bonds) == 1


def test_a_gz_name_on_plain_text_is_refused(tmp_path):
    plain = tmp_path / "plain.xyz.gz"
    plain.write_text("1\n\nO 0 0 0\n")
    with pytest.raises(InputError, match=r"^plain\.xyz\.gz: not gzip data"):
        read_structure(plain)


@pytest.mark.parametrize("symbol", ["Og", "Hs", "Ts", "Cn"])
def test_cif_type_symbol_beyond_the_table_is_not_read_as_its_first_letter(symbol: str) -> None:
    # the label fallback ("OW1" -> O) once turned Og into oxygen and Hs into hydrogen
    with pytest.raises(CifError, match=rf"^element '{symbol}' is beyond"):
        read_p1_cif(_cif(symbol))
    with pytest.raises(InputError, match=r"^c\.cif: unknown element"):  # pymatgen's path too
        parse_structure(_cif(symbol), "cif", "c.cif")
