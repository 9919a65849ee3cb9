"""Node-neighbour graph images: one row per atom (or distinct environment), one column per
neighbour slot, channels carrying chemistry and geometry. See docs/graph-images.md.

Invariances by construction:
- every value is a distance, a scalar element property or a projection onto a direction defined
  by the structure itself, so rigid rotations/translations do not change the image;
- rows are ordered canonically (lexicographic order of their rounded content, ties broken by
  the exact content) and neighbour slots by (distance, element, partial charge, each rounded;
  then bond order and the exact values), so atom order does not matter; molecule bond orders
  are geometric (Pauling, from the bond length) whatever the input format wrote, so two
  spellings of one resonance structure give one image;
- crystals: rows are the distinct local environments, each with the fraction of atoms it stands
  for (``atom_mult``), so primitive, conventional and super-cells give the same image.
"""

from __future__ import annotations

import math

import numpy as np

from andersonn.errors import InputError
from andersonn.images.physics import (
    DEBYE_PER_EA,
    centre_of_mass,
    molecule_charges,
    oxidation_descriptors,
    void_descriptors,
)
from andersonn.images.spec import CHANNELS, ImageSpec, get_spec
from andersonn.structures.elements import (
    COVALENT_RADIUS,
    ELECTRONEGATIVITY,
    GROUP,
    IS_METAL,
    PERIOD,
    SYMBOLS,
    UNFILLED,
    VALENCE,
    VDW_RADIUS,
)
from andersonn.structures.network import (
    BOND_TOLERANCE,
    distance_matrix,
    nearest_neighbours,
    pauling_order,
)
from andersonn.structures.structure import Structure

KEY_DECIMALS = 3  # rounding used for canonical ordering and environment de-duplication
IMAGE_DECIMALS = 4  # stored images are quantised to 1e-4 (kills float noise of invariance)

_ATOM_TABLES = {
    "atom_en": ELECTRONEGATIVITY / 4, "atom_radius": COVALENT_RADIUS / 2,
    "atom_period": PERIOD / 7, "atom_group": GROUP / 18, "atom_valence": VALENCE / 12,
    "atom_s_unfilled": UNFILLED[:, 0] / 2, "atom_p_unfilled": UNFILLED[:, 1] / 6,
    "atom_d_unfilled": UNFILLED[:, 2] / 10, "atom_f_unfilled": UNFILLED[:, 3] / 14,
    "atom_metal": IS_METAL,
}
#: global channel -> (key of physics.oxidation_descriptors, scale)
_OX_CHANNELS = {"g_ox_imbalance": ("imbalance", 1.0), "g_d_partial": ("d_partial", 1.0),
                "g_f_partial": ("f_partial", 1.0), "g_unpaired_d": ("unpaired_d", 5.0),
                "g_ve_odd": ("ve_odd", 1.0)}
_NBR_TABLES = {
    "nbr_en": ELECTRONEGATIVITY / 4, "nbr_radius": COVALENT_RADIUS / 2,
    "nbr_valence": VALENCE / 12, "nbr_group": GROUP / 18,
}


def encode(structure: Structure, spec: ImageSpec | str) -> np.ndarray:
    """Encode ``structure`` as a float32 image of shape ``spec.shape`` (C, H, W)."""
    return encode_labelled(structure, spec)[0]


def encode_labelled(structure: Structure, spec: ImageSpec | str) -> tuple[np.ndarray, list[str]]:
    """Like :func:`encode`, also returning the element symbol of each row ("" for padding)."""
    img, labels, _ = encode_with_atoms(structure, spec)
    return img, labels


def encode_with_atoms(structure: Structure, spec: ImageSpec | str
                      ) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """Like :func:`encode_labelled`, also returning the atoms (indices into ``structure``) each
    filled row stands for: one atom per row for a molecule that fits, every atom of a merged
    environment (crystals: the symmetry-equivalent sites) or of the environments a reduced row
    absorbed."""
    spec = get_spec(spec)
    s = structure
    n = s.n_atoms
    if n > spec.max_atoms:
        raise InputError(f"{s.name}: {n} atoms, too large for the chosen image "
                         f"{spec.name!r} (max_atoms={spec.max_atoms})")
    feats = _features(s, spec)
    rows = feats["rows"]  # (n, C, W) float64, without atom_mult and global channels
    numbers = s.numbers
    weight = np.ones(n)
    members = list(np.arange(n).reshape(n, 1))  # atom i alone: array([i]) for each row
    # crystals: collapse identical environments (unit-cell invariance); molecules only if needed
    if s.periodic or n > spec.rows:
        rows, numbers, weight, owner = _deduplicate(rows, numbers, weight)
        members = _regroup(members, owner, len(rows))
    if len(rows) > spec.rows:
        rows, numbers, weight, owner = _reduce(rows, numbers, weight, spec, s.name)
        members = _regroup(members, owner, len(rows))
    order = _canonical_order(rows, numbers)
    rows, numbers, weight = rows[order], numbers[order], weight[order]
    members = [members[i] for i in order]
    c, h, w = spec.shape
    img = np.zeros((c, h, w), dtype=np.float64)
    k = len(rows)
    img[:, :k, :] = np.transpose(rows, (1, 0, 2))
    for ci, name in enumerate(spec.channels):
        level = CHANNELS[name][0]
        if name == "atom_mult":
            img[ci, :k, :] = (weight / n)[:, None]
        elif level == "global":
            img[ci, :, :] = feats["global"][name]
    img = np.round(img, IMAGE_DECIMALS).astype(np.float32)
    labels = [SYMBOLS[int(z)] for z in numbers] + [""] * (h - k)
    return img, labels, members


def _regroup(members: list[np.ndarray], owner: np.ndarray, k: int) -> list[np.ndarray]:
    """The atoms of each of ``k`` new rows, given the new row (``owner``) of every old row."""
    return [np.sort(np.concatenate([members[i] for i in np.flatnonzero(owner == j)]))
            for j in range(k)]


# ------------------------------------------------------------------------ features
#: channels that need the partial charges of a molecule (the others see zeros without them)
_CHARGE_CHANNELS = frozenset({"atom_charge", "nbr_charge", "atom_dipole_proj",
                              "atom_dipole_contrib", "atom_frame_y", "atom_frame_z", "g_dipole"})
#: global channels every structure has (0 where they do not apply)
_GLOBAL_DEFAULTS = ("g_dipole", "g_n_atoms", "g_density", "g_vol_per_atom", "g_void_diameter",
                    "g_packing", *_OX_CHANNELS)


def _features(s: Structure, spec: ImageSpec) -> dict:
    """The per-atom rows (n, C, W) of the atom and neighbour channels of ``spec`` (atom_mult
    and the global channels left 0) and the values of its global channels.

    Only the channels ``spec`` holds are computed: a value a channel would have does not
    depend on which other channels are computed."""
    need = set(spec.channels)
    n = s.n_atoms
    z = s.numbers
    if s.periodic:
        atom, glob, charges, nbr_idx, nbr_d, nbr_bo = _crystal_features(s, spec, need)
    else:
        atom, glob, charges, nbr_idx, nbr_d, nbr_bo = _molecule_features(s, spec, need)
    if "g_en_range" in need:
        present = np.unique(z)
        glob["g_en_range"] = float(ELECTRONEGATIVITY[present].max()
                                   - ELECTRONEGATIVITY[present].min()) / 3
    if need & set(_OX_CHANNELS):
        ox = oxidation_descriptors(z)
        for name, (key, scale) in _OX_CHANNELS.items():
            glob[name] = ox[key] / scale
    for name in _GLOBAL_DEFAULTS:
        glob.setdefault(name, 0.0)
    for name, table in _ATOM_TABLES.items():
        if name in need:
            atom[name] = table[z]
    atom["atom_charge"] = charges
    nbr = _neighbour_channels(z, charges, nbr_idx, nbr_d, nbr_bo, need)

    rows = np.zeros((n, len(spec.channels), spec.slots))
    for ci, name in enumerate(spec.channels):
        level = CHANNELS[name][0]
        if level == "atom" and name != "atom_mult":
            rows[:, ci, :] = atom[name][:, None] if name in atom else 0.0
        elif level == "neighbour":
            rows[:, ci, :] = nbr[name]
    return {"rows": rows, "global": glob}


_Features = tuple[dict[str, np.ndarray], dict[str, float], np.ndarray, np.ndarray, np.ndarray,
                  np.ndarray]


def _molecule_features(s: Structure, spec: ImageSpec, need: set[str]) -> _Features:
    """(atom channels, global channels, charges, neighbour index / distance / bond order
    (n, slots)) of a molecule: every other atom is a neighbour candidate, ordered by
    (distance, element, partial charge), each rounded, then by bond order (higher first) and
    the exact distance and charge. The bonds are the structure's; their orders are Pauling's
    estimate from the bond length (as for files without bonds), not the orders a file wrote."""
    n = s.n_atoms
    z = s.numbers
    K = spec.slots
    pos = s.positions
    dist = distance_matrix(pos)
    bo = np.zeros((n, n))
    if len(s.bonds):
        i, j = s.bonds[:, 0], s.bonds[:, 1]
        bo[i, j] = bo[j, i] = pauling_order(z[i], z[j], dist[i, j])
    charges = np.zeros(n)
    if need & _CHARGE_CHANNELS:
        charges = molecule_charges(z, pos, dist, float(s.charge))
    atom, dnorm = _dipole_frame(z, pos, charges)
    glob = {"g_dipole": dnorm * DEBYE_PER_EA / 5, "g_n_atoms": n / 30}
    dmask = dist + np.eye(n) * 1e9
    bonded = bo > 0
    atom["atom_degree"] = bonded.sum(1) / 6
    if "atom_n6" in need:
        atom["atom_n6"] = ((dmask < 6.0).sum(1)) / 100
    if "atom_d_nonbonded" in need:
        nb = np.where(bonded, np.inf, dmask)
        dnb = nb.min(1) if n > 1 else np.zeros(1)
        atom["atom_d_nonbonded"] = np.where(np.isfinite(dnb) & (dnb < 1e8), dnb, 0) / 6
    nbr_idx = np.full((n, K), -1, dtype=np.int64)
    nbr_d = np.zeros((n, K))
    nbr_bo = np.zeros((n, K))
    if n > 1:
        # the element and charge keys are the same in every row: broadcast, not copied
        q_exact = np.broadcast_to(charges[None, :], (n, n))
        q_key = np.broadcast_to(np.round(charges, KEY_DECIMALS)[None, :], (n, n))
        z_key = np.broadcast_to(z[None, :], (n, n))
        order = np.lexsort((q_exact, dmask, -bo, q_key, z_key, np.round(dmask, KEY_DECIMALS)),
                           axis=-1)
        kk = min(K, n - 1)
        sel = order[:, :kk]
        row = np.arange(n)[:, None]
        nbr_idx[:, :kk] = sel
        nbr_d[:, :kk] = dist[row, sel]
        nbr_bo[:, :kk] = bo[row, sel]
    return atom, glob, charges, nbr_idx, nbr_d, nbr_bo


def _dipole_frame(z: np.ndarray, pos: np.ndarray, charges: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], float]:
    """The atom channels a molecule's centre of mass, dipole and charge distribution define,
    and the dipole's length (e·Å).

    A structure-defined frame: e1 along the dipole, e2 along the part of the charge-magnitude
    centroid normal to it, e3 = e1 x e2; weights fade out degenerate axes."""
    com = centre_of_mass(z, pos)
    rel = pos - com
    dip = (charges[:, None] * rel).sum(0)  # e·Å
    dnorm = _length(dip)
    along = rel @ dip
    atom = {"atom_r_com": np.linalg.norm(rel, axis=1) / 5,
            "atom_dipole_proj": along / max(dnorm, 0.1) / 5,
            # below 0.1 eÅ the dipole's direction is noise (an exact 0 for a symmetric
            # molecule): fade the projection out there instead of following the noise
            "atom_dipole_contrib": charges * along / max(dnorm, 0.1)}
    e1 = dip / dnorm if dnorm > 1e-9 else np.zeros(3)
    c = (np.abs(charges)[:, None] * rel).sum(0)
    perp = c - (c @ e1) * e1
    pn = _length(perp)
    e2 = perp / pn if pn > 1e-9 else np.zeros(3)
    wgt = min(1.0, pn / 0.1) * min(1.0, dnorm / 0.1)
    atom["atom_frame_y"] = wgt * (rel @ e2) / 5
    atom["atom_frame_z"] = wgt * (rel @ _cross(e1, e2)) / 5
    return atom, dnorm


def _length(v: np.ndarray) -> float:
    """Euclidean length of a vector: ``np.linalg.norm(v)`` (it is ``sqrt(v.dot(v))`` too, so
    the value is the same to the bit) without its generic-argument overhead."""
    return math.sqrt(float(v.dot(v)))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors: ``np.cross(a, b)`` (the same products and differences,
    so the same bits) without its broadcasting set-up, which cost 15× the arithmetic."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _crystal_features(s: Structure, spec: ImageSpec, need: set[str]) -> _Features:
    """(atom channels, global channels, charges (zeros), neighbour index / distance / bond
    order (n, slots)) of a crystal: the nearest periodic neighbours within ``spec.cutoff``,
    ordered by (distance, element)."""
    n = s.n_atoms
    z = s.numbers
    K = spec.slots
    atom: dict[str, np.ndarray] = {}
    glob: dict[str, float] = {}
    extra = K + 8  # candidates beyond the K slots: tie-breaks, degree, nearest non-bonded
    jn, dn, n_reach = nearest_neighbours(s.positions, s.cell, extra, spec.cutoff)
    valid = jn >= 0
    zj = np.where(valid, z[np.maximum(jn, 0)], 0)
    dkey = np.where(valid, np.round(dn, KEY_DECIMALS), np.inf)
    order = np.lexsort((zj, dkey), axis=-1)
    jn, dn, zj, valid = (np.take_along_axis(a, order, 1) for a in (jn, dn, zj, valid))
    rsum = COVALENT_RADIUS[z][:, None] + COVALENT_RADIUS[zj]
    bonded = valid & (dn < BOND_TOLERANCE * rsum) & (dn > 0.1)
    nbr_idx = np.where(valid[:, :K], jn[:, :K], -1)
    nbr_d = np.where(valid[:, :K], dn[:, :K], 0.0)
    nbr_bo = np.where(bonded[:, :K],
                      pauling_order(z[:, None], zj[:, :K], np.where(valid, dn, 9)[:, :K]), 0)
    atom["atom_degree"] = bonded.sum(1) / 6
    atom["atom_n6"] = n_reach / 100  # spec.cutoff is 6 Å in the presets
    dnb = np.where(valid & ~bonded, dn, np.inf).min(1)
    atom["atom_d_nonbonded"] = np.where(np.isfinite(dnb), dnb, spec.cutoff) / 6
    vol = float(s.volume or 0.0)
    glob["g_density"] = float(s.density or 0.0) / 3
    glob["g_vol_per_atom"] = vol / n / 30
    glob["g_packing"] = float((4.0 / 3.0 * np.pi * VDW_RADIUS[z] ** 3).sum() / vol)
    if "g_void_diameter" in need:
        diam, _ = void_descriptors(z, s.positions, s.cell, spacing=spec.void_spacing)
        glob["g_void_diameter"] = diam / 20
    return atom, glob, np.zeros(n), nbr_idx, nbr_d, nbr_bo


def _neighbour_channels(z: np.ndarray, charges: np.ndarray, nbr_idx: np.ndarray,
                        nbr_d: np.ndarray, nbr_bo: np.ndarray, need: set[str]
                        ) -> dict[str, np.ndarray]:
    """The neighbour-level channels in ``need``, (n, slots) each; 0 in empty slots."""
    valid = nbr_idx >= 0
    jj = np.where(valid, nbr_idx, 0)
    zj = z[jj]
    nbr: dict[str, np.ndarray] = {}
    for name, table in _NBR_TABLES.items():
        if name in need:
            nbr[name] = np.where(valid, table[zj], 0.0)
    if "nbr_charge" in need:
        nbr["nbr_charge"] = np.where(valid, charges[jj], 0.0)
    if "en_diff" in need:
        nbr["en_diff"] = np.where(valid, (ELECTRONEGATIVITY[zj] - ELECTRONEGATIVITY[z][:, None])
                                  / 2, 0.0)
    if "bond_order" in need:
        nbr["bond_order"] = nbr_bo / 3
    if "inv_distance" in need:
        nbr["inv_distance"] = np.where(valid, 1.0 / np.maximum(nbr_d, 1e-6), 0.0)
    return nbr


# ------------------------------------------------------------------------ rows
def _row_keys(rows: np.ndarray) -> np.ndarray:
    return np.round(rows.reshape(len(rows), -1), KEY_DECIMALS) + 0.0  # +0.0 folds -0.0


def _deduplicate(rows: np.ndarray, numbers: np.ndarray, weight: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows with identical rounded content (symmetry-equivalent environments); also
    returns the kept row each input row went to."""
    # exact integer hash of the rounded rows (64-bit, wrap-around arithmetic): fast 1-D unique
    ints = np.rint(rows.reshape(len(rows), -1) * 10**KEY_DECIMALS).astype(np.int64)
    mult = np.random.default_rng(12345).integers(1, 2**62, size=ints.shape[1] + 1,
                                                    dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        h = (ints * mult[1:]).sum(1) + numbers.astype(np.int64) * mult[0]
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    w = np.bincount(inverse, weights=weight, minlength=len(first))
    return rows[first], numbers[first], w, inverse


def _canonical_order(rows: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Heavier elements first, then lexicographic order of the rounded row content, then of
    the exact content (rows that tie when rounded need not be equal: listing the atoms in
    another order must not swap them). The order of ``np.lexsort((*keys.T[::-1], -numbers))``:
    that sorts once per column (140 for polarity), the costliest step of encoding a small
    molecule; one sort of byte strings that order like the rows costs a third."""
    content = _sortable_bytes(_row_keys(rows))
    exact = _sortable_bytes(rows.reshape(len(rows), -1) + 0.0)
    heavy_first = (-np.asarray(numbers, dtype=np.int64)).tolist()
    order = sorted(range(len(content)), key=lambda i: (heavy_first[i], content[i], exact[i]))
    return np.array(order, dtype=np.intp)


_SIGN_BIT = np.uint64(1 << 63)


def _sortable_bytes(keys: np.ndarray) -> list[bytes]:
    """Each row of the float64 matrix ``keys`` as bytes whose lexicographic order is the
    numeric order of the rows (column 0 first), as ``np.lexsort`` sees it: every NaN ties with
    every other and comes after +inf. -0.0 comes just before 0.0 (``_row_keys`` folds it).

    An IEEE 754 double orders like a sign-magnitude integer: flipping the magnitude bits of
    the negative ones and then the sign bit of all gives unsigned integers in the same order,
    written big-endian so that the first differing byte decides."""
    bits = np.ascontiguousarray(np.where(np.isnan(keys), np.nan, keys)).view(np.int64)
    ordered = (bits ^ ((bits >> 63) & 0x7FFF_FFFF_FFFF_FFFF)).view(np.uint64) ^ _SIGN_BIT
    return [row.tobytes() for row in ordered.astype(">u8")]


def _reduce(rows: np.ndarray, numbers: np.ndarray, weight: np.ndarray, spec: ImageSpec,
            name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified deterministic selection of ``spec.rows`` distinct environments.

    Every element keeps at least one row; the remaining rows are shared among the elements in
    proportion to their number of distinct environments (largest remainder, ties by atomic
    number); within an element, rows are picked by farthest-point sampling in feature space
    starting from the most frequent environment. Each dropped environment adds its weight to
    the nearest kept row of its element, so ``atom_mult`` still sums to 1. Also returns the
    kept row each input row went to.
    """
    h = spec.rows
    elements = np.unique(numbers)[::-1]  # heavy first
    if len(elements) > h:
        raise InputError(f"{name}: {len(elements)} elements, too large for the chosen image "
                         f"{spec.name!r} ({h} rows)")
    feats = _row_keys(rows)  # rounded: exact, reproducible distances and tie-breaks
    groups = [np.flatnonzero(numbers == e) for e in elements]
    # canonical order within each group for deterministic tie-breaks
    groups = [g[_canonical_order(rows[g], numbers[g])] for g in groups]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    quota = np.ones(len(groups), dtype=int)
    spare = h - len(groups)
    while spare > 0:
        room = sizes - quota
        if room.sum() <= 0:
            break
        share = np.where(room > 0, sizes, 0.0)
        ideal = spare * share / share.sum()
        add = np.minimum(np.floor(ideal).astype(int), room.astype(int))
        if add.sum() == 0:
            rem = np.where(room > 0, ideal - np.floor(ideal), -1.0)
            add[int(np.argmax(rem))] = 1
        quota += add
        spare -= int(add.sum())
    keep_rows, keep_num, keep_w = [], [], []
    target = np.zeros(len(rows), dtype=np.int64)
    kept = 0
    for g, q in zip(groups, quota, strict=False):
        f = feats[g]
        chosen = [int(np.argmax(weight[g]))]
        mind = np.linalg.norm(f - f[chosen[0]], axis=1)
        while len(chosen) < q:
            nxt = int(np.argmax(mind))
            chosen.append(nxt)
            mind = np.minimum(mind, np.linalg.norm(f - f[nxt], axis=1))
        chosen_arr = np.array(chosen)
        dist = np.linalg.norm(f[:, None, :] - f[None, chosen_arr, :], axis=2)
        owner = dist.argmin(1)
        w = np.bincount(owner, weights=weight[g], minlength=len(chosen_arr))
        target[g] = kept + owner
        kept += len(chosen_arr)
        keep_rows.append(rows[g[chosen_arr]])
        keep_num.append(numbers[g[chosen_arr]])
        keep_w.append(w)
    return (np.concatenate(keep_rows), np.concatenate(keep_num), np.concatenate(keep_w),
            target)
