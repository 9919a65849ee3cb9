"""Atom-bond networks from geometry.

Molecules without bonds (xyz): two atoms are bonded when their distance is below
``BOND_TOLERANCE * (r_i + r_j)`` (Cordero covalent radii); the bond order is estimated with
Pauling's relation ``n = exp((r_i + r_j - d) / 0.3)`` clipped to [0.5, 3] (C–C 1.54 Å -> 1,
aromatic 1.39 Å -> ~1.5, 1.33 Å -> ~1.9, 1.20 Å -> ~2.9).

Crystals: the same rule under periodic boundary conditions, with a vectorised neighbour search
(:func:`ase.neighborlist.neighbor_list`), so every periodic image is seen.
"""

from __future__ import annotations

import numpy as np

from andersonn.structures.elements import COVALENT_RADIUS

BOND_TOLERANCE = 1.15
PAULING_B = 0.3


def pauling_order(numbers_i: np.ndarray, numbers_j: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Geometric bond-order estimate from Pauling's bond length–bond order relation."""
    r0 = COVALENT_RADIUS[numbers_i] + COVALENT_RADIUS[numbers_j]
    return np.clip(np.exp((r0 - dist) / PAULING_B), 0.5, 3.0)


def distance_matrix(positions: np.ndarray) -> np.ndarray:
    """(N, N) Euclidean distances between the rows of ``positions`` (N, 3), in their units."""
    diff = positions[:, None, :] - positions[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


MIN_CONTACT = 0.5
"""Å: atoms of a molecule closer than this are the same atom written twice (or fragments placed
on top of each other); bond perception on them is meaningless and RDKit's crashes."""


def overlapping_atoms(positions: np.ndarray, limit: float = MIN_CONTACT
                      ) -> tuple[int, int, float] | None:
    """The first pair of atoms (i, j, distance) closer than ``limit`` Å, or None."""
    if len(positions) < 2:
        return None
    from scipy.spatial import cKDTree

    pairs = cKDTree(positions).query_pairs(limit, output_type="ndarray")
    if len(pairs) == 0:
        return None
    i, j = (int(v) for v in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))][0])
    return i, j, float(np.linalg.norm(positions[i] - positions[j]))


MIN_SITE_DISTANCE = 0.01
"""Å: sites of a crystal closer than this under periodic boundaries are one site written twice
(a duplicate, or the same site at fractional 0 and 1). Not :data:`MIN_CONTACT`: the disordered
hydrogens of CoRE MOF 2019 leave 828 of its 12,020 ASR CIFs with a pair under 0.5 Å (the
closest: 0.019 Å), and the mof-pore dataset keeps them."""


def overlapping_sites(positions: np.ndarray, cell: np.ndarray, limit: float = MIN_SITE_DISTANCE
                      ) -> tuple[int, int, float] | None:
    """The first pair of atoms (i <= j, distance) of a crystal closer than ``limit`` Å under
    periodic boundaries (atoms wrapped into the cell, every image within reach; i == j: an
    atom and its own image, in a cell thinner than ``limit``), or None."""
    if len(positions) == 0:
        return None
    from scipy.spatial import cKDTree

    rep, owner = periodic_images(positions, cell, limit)
    pairs = cKDTree(rep).query_pairs(limit, output_type="ndarray")
    pairs = pairs[pairs[:, 0] < len(positions)]  # rows < N are the atoms themselves
    if len(pairs) == 0:
        return None
    a, b = owner[pairs[:, 0]], owner[pairs[:, 1]]
    i, j = np.minimum(a, b), np.maximum(a, b)
    k = int(np.lexsort((j, i))[0])
    return int(i[k]), int(j[k]), float(np.linalg.norm(rep[pairs[k, 0]] - rep[pairs[k, 1]]))


def molecular_bonds(numbers: np.ndarray, positions: np.ndarray,
                    tolerance: float = BOND_TOLERANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds of a finite molecule from covalent radii: (pairs (M,2), orders (M,), lengths (M,))."""
    n = len(numbers)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0), np.zeros(0)
    if n <= 400:
        dist = distance_matrix(positions)
        r = COVALENT_RADIUS[numbers]
        close = dist < tolerance * (r[:, None] + r[None, :])
        i, j = np.nonzero(np.triu(close, 1))
        d = dist[i, j]
    else:
        from scipy.spatial import cKDTree

        pairs = cKDTree(positions).query_pairs(2 * tolerance * COVALENT_RADIUS.max(),
                                               output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.linalg.norm(positions[i] - positions[j], axis=1)
    rsum = COVALENT_RADIUS[numbers[i]] + COVALENT_RADIUS[numbers[j]]
    keep = (d < tolerance * rsum) & (d > 0.1)
    i, j, d = i[keep], j[keep], d[keep]
    return (np.stack([i, j], axis=1).astype(np.int64), pauling_order(numbers[i], numbers[j], d), d)


def periodic_images(positions: np.ndarray, cell: np.ndarray, reach: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Atoms wrapped into the cell plus every periodic image within ``reach`` Å of the cell.

    Returns (cartesian positions (M, 3), index of the original atom (M,)); the first N rows are
    the wrapped atoms themselves.
    """
    inv = np.linalg.inv(cell)
    frac = (positions @ inv) % 1.0
    vol = abs(np.linalg.det(cell))
    heights = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    m = np.maximum(1, np.ceil(reach / heights)).astype(int)
    grids = np.meshgrid(*(np.arange(-k, k + 1) for k in m), indexing="ij")
    shifts = np.stack(grids, -1).reshape(-1, 3)
    # zero shift first, so the first N rows are the atoms themselves
    shifts = shifts[np.argsort(np.abs(shifts).sum(1), kind="stable")]
    margin = reach / heights
    n = len(frac)
    rep = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    owner = np.tile(np.arange(n), len(shifts))
    keep = np.all((rep > -margin) & (rep < 1 + margin), axis=1)
    return rep[keep] @ cell, owner[keep]


def periodic_neighbour_list(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                            cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, distance) within ``cutoff`` Å under PBC (both directions, all images).

    KD-tree over the atoms and their images near the cell (scipy), vectorised.
    """
    from scipy.spatial import cKDTree

    rep, owner = periodic_images(positions, cell, cutoff)
    n = len(numbers)
    centre = cKDTree(rep[:n])
    pairs = centre.sparse_distance_matrix(cKDTree(rep), float(cutoff), output_type="ndarray")
    i = pairs["i"].astype(np.int64)
    jr = pairs["j"].astype(np.int64)
    d = pairs["v"]
    keep = d > 1e-8
    return i[keep], owner[jr[keep]], d[keep]


def nearest_neighbours(positions: np.ndarray, cell: np.ndarray, k: int, reach: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest periodic neighbours of every atom within ``reach`` Å.

    Returns (j (N, k) original atom index or -1, distance (N, k) or inf) sorted by distance and
    the number of atoms within ``reach`` (N,).
    """
    from scipy.spatial import cKDTree

    rep, owner = periodic_images(positions, cell, reach)
    n = len(positions)
    tree = cKDTree(rep)
    kk = min(k + 1, len(rep))
    d, idx = tree.query(rep[:n], k=kk, distance_upper_bound=reach)
    d, idx = d.reshape(n, kk)[:, 1:], idx.reshape(n, kk)[:, 1:]  # drop self (distance 0)
    valid = np.isfinite(d)
    j = np.where(valid, owner[np.minimum(idx, len(rep) - 1)], -1)
    counts = tree.query_ball_point(rep[:n], r=reach, return_length=True) - 1
    if kk - 1 < k:
        pad = k - (kk - 1)
        j = np.pad(j, ((0, 0), (0, pad)), constant_values=-1)
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
    return j, d, np.asarray(counts)


def periodic_bonds(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                   tolerance: float = BOND_TOLERANCE,
                   pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds of a crystal under PBC: (pairs (M,2) with i <= j, orders, lengths).

    ``pairs`` may pass a precomputed neighbour list (i, j, d) whose cutoff covers bonding.
    """
    if pairs is None:
        cut = tolerance * 2 * float(COVALENT_RADIUS[np.unique(numbers)].max())
        pairs = periodic_neighbour_list(numbers, positions, cell, cut)
    i, j, d = pairs
    rsum = COVALENT_RADIUS[numbers[i]] + COVALENT_RADIUS[numbers[j]]
    keep = (d < tolerance * rsum) & (d > 0.1) & (i <= j)
    # i == j pairs (bond to own image) appear twice (+/- image); keep one of them
    i, j, d = i[keep], j[keep], d[keep]
    same = i == j
    if same.any():
        # drop every second duplicate of self-image bonds
        idx = np.flatnonzero(same)
        order = np.lexsort((d[idx], i[idx]))
        drop = idx[order][1::2]
        mask = np.ones(len(i), dtype=bool)
        mask[drop] = False
        i, j, d = i[mask], j[mask], d[mask]
    return np.stack([i, j], axis=1).astype(np.int64), pauling_order(numbers[i], numbers[j], d), d
