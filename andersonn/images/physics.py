"""Structure-only physics used by the images: charge equilibration and void descriptors."""

from __future__ import annotations

import numpy as np

from andersonn.structures.elements import MASS, QEQ_CHI, QEQ_J, VDW_RADIUS

COULOMB_EV_A = 14.399645  # e^2 / (4 pi eps0) in eV·Å
EEM_SHIELD = 2.620  # Å, shielding length of the Coulomb kernel (fitted with the H/C/N/O/F EEM)
DEBYE_PER_EA = 4.80320


def eem_charges(numbers: np.ndarray, dist: np.ndarray, total_charge: float = 0.0) -> np.ndarray:
    """Electronegativity-equalisation partial charges of a finite molecule.

    Minimises sum(chi q + J q^2 / 2) + shielded Coulomb (14.4 / sqrt(r^2 + a^2)) subject to
    sum(q) = total_charge (H/C/N/O/F fitted to QM9 Mulliken charges, others from QEq or
    Pauling electronegativity; see :mod:`andersonn.structures.elements`). ``dist`` is the
    (N, N) distance matrix. One (N+1)-square linear solve; rotation and permutation invariant.
    """
    n = len(numbers)
    if n == 1:
        return np.array([float(total_charge)])
    a = np.empty((n + 1, n + 1))
    a[:n, :n] = COULOMB_EV_A / np.sqrt(dist * dist + EEM_SHIELD * EEM_SHIELD)
    a[np.arange(n), np.arange(n)] = QEQ_J[numbers]
    a[n, :n] = 1.0
    a[:n, n] = 1.0
    a[n, n] = 0.0
    b = np.empty(n + 1)
    b[:n] = -QEQ_CHI[numbers]
    b[n] = total_charge
    try:
        sol = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.zeros(n)
    return sol[:n]


def centre_of_mass(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mass-weighted centre."""
    m = MASS[numbers]
    return (m[:, None] * positions).sum(0) / m.sum()


def void_descriptors(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                     spacing: float = 1.0, max_points: int = 8000, reach: float = 10.0,
                     ) -> tuple[float, float]:
    """(largest empty-sphere diameter in Å, void fraction) of a periodic structure.

    A grid over the cell (about ``spacing`` Å, at most ``max_points`` points) is scored by the
    distance to the nearest van der Waals surface (KD-tree over the atoms and their images within
    ``reach`` Å); the 6 best points are refined by a pattern search to 1e-3 Å. Distances beyond
    ``reach`` are lower-bounded by it, enough to place any pore in the small/medium/large classes.
    The void fraction is the share of grid points outside every vdW sphere.
    """
    from scipy.spatial import cKDTree

    from andersonn.structures.network import periodic_images

    rep, owner = periodic_images(positions, cell, reach)
    rep_num = numbers[owner]
    tree = cKDTree(rep)
    radii = VDW_RADIUS[rep_num]
    kq = min(4, len(rep_num))

    def surface_distance(points: np.ndarray) -> np.ndarray:
        d, idx = tree.query(points, k=kq)
        if kq == 1:
            d, idx = d[:, None], idx[:, None]
        return (d - radii[idx]).min(axis=1)

    lengths = np.linalg.norm(cell, axis=1)
    counts = np.maximum(2, np.ceil(lengths / spacing)).astype(int)
    total = float(np.prod(counts))
    if total > max_points:
        counts = np.maximum(2, np.floor(counts * (max_points / total) ** (1 / 3))).astype(int)
    grid = np.stack(np.meshgrid(*((np.arange(c) + 0.5) / c for c in counts), indexing="ij"),
                    -1).reshape(-1, 3)
    pts = grid @ cell
    sd = surface_distance(pts)
    void_fraction = float((sd > 0).mean())
    # refine the best grid points by a pattern search (26 directions, step halved when stuck)
    top = pts[np.argsort(-sd, kind="stable")[:6]]
    val = surface_distance(top)
    step = np.full(len(top), 0.5 * float(np.max(lengths / counts)))
    offs = np.stack(np.meshgrid(*([np.array([-1.0, 0.0, 1.0])] * 3), indexing="ij"),
                    -1).reshape(-1, 3)
    offs = offs[np.abs(offs).sum(1) > 0]
    offs = offs / np.linalg.norm(offs, axis=1)[:, None]
    for _ in range(60):
        active = step > 1e-3
        if not active.any():
            break
        cand = top[:, None, :] + step[:, None, None] * offs[None, :, :]
        cd = surface_distance(cand.reshape(-1, 3)).reshape(len(top), len(offs))
        k = cd.argmax(1)
        better = active & (cd[np.arange(len(top)), k] > val + 1e-9)
        top[better] = cand[better, k[better]]
        val[better] = cd[better, k[better]]
        step[active & ~better] *= 0.5
    best = max(float(sd.max()), float(val.max()))
    return max(0.0, 2.0 * best), void_fraction
