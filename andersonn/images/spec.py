"""Image specifications: channel set, rows (atoms/environments), neighbour slots, limits.

``IMAGE_SPECS`` holds one preset per task ("polarity", "mof-pore", "crystal-gap").
Versions: ``FEATURIZER_VERSION`` is the featuriser as a whole — bump it whenever a change alters
any image. Each preset also carries the version at which *its* images last changed
(``PRESET_VERSIONS``), so a change to one task's channels does not invalidate the data caches and
trained runs of the others. Custom specs use ``FEATURIZER_VERSION``. The data cache and
``predict`` check :meth:`ImageSpec.featurizer_version`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from andersonn.errors import ConfigError

FEATURIZER_VERSION = "1.5.0"  # 1.5.0: images independent of atom order and cell origin

#: preset name -> featuriser version at which that preset's images last changed (keep each
#: <= FEATURIZER_VERSION; tests check a preset's images against fixtures of its version)
PRESET_VERSIONS: dict[str, str] = {
    # 1.5.0: charges perceived in a geometric atom order; neighbour and row ties broken on
    # exact values; Pauling bond orders whatever the file wrote; dipole contribution faded below
    # 0.1 eÅ (1.4.0: Hückel-connectivity retry gives MMFF94 charges to all of QM9)
    "polarity": "1.5.0",
    "mof-pore": "1.5.0",     # 1.5.0: void diameter refined in every candidate pore, exact reach
    "crystal-gap": "1.2.0",  # 1.2.0: oxidation-state and shell-filling channels
}

#: channel name -> (level, description). level: "atom" (constant along a row), "neighbour"
#: (one value per neighbour slot) or "global" (constant over the whole image).
CHANNELS: dict[str, tuple[str, str]] = {
    "atom_en": ("atom", "Pauling electronegativity / 4"),
    "atom_radius": ("atom", "covalent radius / 2 Å"),
    "atom_period": ("atom", "period / 7"),
    "atom_group": ("atom", "group / 18"),
    "atom_valence": ("atom", "valence electrons / 12"),
    "atom_s_unfilled": ("atom", "holes in the valence s shell / 2 (0 if the shell is empty)"),
    "atom_p_unfilled": ("atom", "holes in the valence p shell / 6 (0 if the shell is empty)"),
    "atom_d_unfilled": ("atom", "holes in the (n-1) d shell / 10 (0 if the shell is empty)"),
    "atom_f_unfilled": ("atom", "holes in the (n-2) f shell / 14 (0 if the shell is empty)"),
    "atom_metal": ("atom", "1 for a metallic element (pymatgen Element.is_metal), else 0"),
    "atom_charge": ("atom", "partial charge, e: MMFF94 (bonds perceived from the geometry), "
                    "electronegativity equalisation where MMFF typing fails or its charges do "
                    "not add up to the molecule's charge"),
    "atom_r_com": ("atom", "distance from the centre of mass / 5 Å"),
    "atom_dipole_proj": ("atom", "(r - r_com) · dipole / max(|dipole|, 0.1 eÅ), / 5 Å"),
    "atom_dipole_contrib": ("atom", "q (r - r_com) · dipole / max(|dipole|, 0.1 eÅ), e·Å (sums "
                            "to |dipole| above 0.1 eÅ; fades out below, where the direction is "
                            "noise)"),
    "atom_frame_y": ("atom", "(r - r_com) · e2 / 5 Å; e2 = part of sum |q| (r - r_com) normal to "
                             "the dipole, weighted by min(1, |that part| / 0.1 eÅ)"),
    "atom_frame_z": ("atom", "(r - r_com) · (dipole unit vector × e2) / 5 Å, same weighting"),
    "atom_degree": ("atom", "number of bonded neighbours / 6"),
    "atom_mult": ("atom", "fraction of the structure's atoms this row stands for"),
    "atom_n6": ("atom", "atoms within 6 Å / 100"),
    "atom_d_nonbonded": ("atom", "distance to the nearest non-bonded atom / 6 Å"),
    "nbr_en": ("neighbour", "neighbour electronegativity / 4"),
    "nbr_radius": ("neighbour", "neighbour covalent radius / 2 Å"),
    "nbr_valence": ("neighbour", "neighbour valence electrons / 12"),
    "nbr_group": ("neighbour", "neighbour group / 18"),
    "nbr_charge": ("neighbour", "neighbour partial charge, e"),
    "en_diff": ("neighbour", "(EN neighbour - EN atom) / 2"),
    "bond_order": ("neighbour", "bond order / 3 (0 = not bonded); Pauling's estimate from the "
                   "bond length, whatever orders the file wrote"),
    "inv_distance": ("neighbour", "1 / distance, Å^-1"),
    "g_dipole": ("global", "crude dipole |sum q (r - r_com)| from the partial charges / 5 D"),
    "g_n_atoms": ("global", "number of atoms / 30"),
    "g_density": ("global", "density / 3 g cm^-3"),
    "g_vol_per_atom": ("global", "cell volume per atom / 30 Å^3"),
    "g_void_diameter": ("global", "largest empty-sphere diameter (vdW surfaces, grid refined in "
                        "every candidate pore) / 20 Å"),
    "g_packing": ("global", "sum of atomic vdW sphere volumes / cell volume (overlaps counted)"),
    "g_en_range": ("global", "max - min electronegativity / 3"),
    "g_ox_imbalance": ("global", "|net charge| per atom of the best assignment of one common "
                                 "oxidation state per element, clipped to 1 (1: single element)"),
    "g_d_partial": ("global", "fraction of atoms that are d-block atoms with a partly filled d "
                              "shell (group - oxidation state in 1..9) in that assignment"),
    "g_f_partial": ("global", "fraction of atoms that are f-block atoms with a partly filled 4f/5f "
                              "shell in that assignment"),
    "g_unpaired_d": ("global", "mean over atoms of min(d, 10 - d) for partly filled d shells / 5"),
    "g_ve_odd": ("global", "1 if the valence electrons per reduced formula unit are odd"),
}


@dataclass(frozen=True)
class ImageSpec:
    """A node-neighbour image layout: ``channels`` x ``rows`` x ``slots``.

    rows: atoms (molecules) or distinct local environments (crystals) kept, canonically ordered.
    slots: nearest neighbours per row, sorted by distance then element.
    cutoff: neighbour search radius in Å for periodic structures.
    max_atoms: beyond this many atoms (in the given cell) the input is refused as
        "too large for the chosen image".
    """

    name: str
    channels: tuple[str, ...]
    rows: int
    slots: int
    cutoff: float = 6.0
    max_atoms: int = 20000
    void_spacing: float = 1.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise ConfigError(f"image spec {self.name!r}: unknown channels {unknown}")
        if self.rows < 1 or self.slots < 1:
            raise ConfigError(f"image spec {self.name!r}: rows and slots must be >= 1")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        return (len(self.channels), self.rows, self.slots)

    @property
    def channel_names(self) -> list[str]:
        """Channel names in order."""
        return list(self.channels)

    @property
    def featurizer_version(self) -> str:
        """The version of this spec's images: the preset's own where this spec *is* a preset,
        else the featuriser's."""
        preset = IMAGE_SPECS.get(self.name)
        if preset == self and self.name in PRESET_VERSIONS:
            return PRESET_VERSIONS[self.name]
        return FEATURIZER_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (includes the featurizer version)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["featurizer_version"] = self.featurizer_version
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSpec:
        """Inverse of :meth:`to_dict` (the featurizer version key is ignored)."""
        fields = {k: v for k, v in d.items() if k != "featurizer_version"}
        fields["channels"] = tuple(fields["channels"])
        return cls(**fields)


IMAGE_SPECS: dict[str, ImageSpec] = {
    "polarity": ImageSpec(
        name="polarity",
        channels=("atom_en", "atom_valence", "atom_charge", "atom_r_com", "atom_dipole_proj",
                  "atom_dipole_contrib", "atom_frame_y", "atom_frame_z", "atom_degree", "nbr_en",
                  "nbr_charge", "bond_order", "inv_distance", "g_dipole"),
        rows=29, slots=10, cutoff=6.0, max_atoms=400),
    "mof-pore": ImageSpec(
        name="mof-pore",
        channels=("atom_en", "atom_radius", "atom_degree", "atom_mult", "atom_n6",
                  "atom_d_nonbonded", "nbr_en", "bond_order", "inv_distance", "g_density",
                  "g_vol_per_atom", "g_void_diameter", "g_packing"),
        rows=48, slots=12, cutoff=6.0, max_atoms=20000, void_spacing=1.0),
    "crystal-gap": ImageSpec(
        name="crystal-gap",
        channels=("atom_en", "atom_radius", "atom_period", "atom_group", "atom_valence",
                  "atom_mult", "atom_degree", "atom_s_unfilled", "atom_p_unfilled",
                  "atom_d_unfilled", "atom_f_unfilled", "atom_metal", "nbr_en", "nbr_valence",
                  "nbr_group", "en_diff", "bond_order", "inv_distance", "g_density",
                  "g_vol_per_atom", "g_en_range", "g_ox_imbalance", "g_d_partial", "g_f_partial",
                  "g_unpaired_d", "g_ve_odd"),
        rows=32, slots=12, cutoff=6.0, max_atoms=5000),
}

#: default task per structure kind (CLI ``image`` without ``--task``)
DEFAULT_TASK = {"molecule": "polarity", "crystal": "crystal-gap"}


def get_spec(spec: ImageSpec | str) -> ImageSpec:
    """An :class:`ImageSpec` from itself or a preset name."""
    if isinstance(spec, ImageSpec):
        return spec
    if spec not in IMAGE_SPECS:
        raise ConfigError(f"unknown image spec {spec!r} (choose from {', '.join(IMAGE_SPECS)})")
    return IMAGE_SPECS[spec]
