"""Structure-only physics used by the images: partial charges (MMFF94, or charge
equilibration), void descriptors and an oxidation-state (ionic) picture of the composition."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from andersonn.errors import ConfigError
from andersonn.structures.elements import (
    COMMON_OXIDATION_STATES,
    ELECTRONEGATIVITY,
    GROUP,
    MASS,
    QEQ_CHI,
    QEQ_J,
    VALENCE,
    VDW_RADIUS,
)

COULOMB_EV_A = 14.399645  # e^2 / (4 pi eps0) in eV·Å
EEM_SHIELD = 2.620  # Å, shielding length of the Coulomb kernel (fitted with the H/C/N/O/F EEM)
DEBYE_PER_EA = 4.80320
MAX_OX_COMBINATIONS = 100_000  # oxidation-state assignments tried per composition


#: above this many atoms MMFF94 typing is not attempted (bond perception from geometry grows
#: quickly with size); charge equilibration is used instead
MMFF_MAX_ATOMS = 200


@contextlib.contextmanager
def silent_c_output() -> Iterator[None]:
    """Send what C/C++ code writes to the process's stdout and stderr to /dev/null (the
    extended-Hückel code of RDKit prints "!!! Warning !!! Distance ... is suspicious" for every
    O-H bond, bypassing RDKit's logger)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


# found by trying every element 1-103 next to chlorine, one process each (session 21): Ar, Zn,
# Kr, Y, Ag, Cd, Xe, Ce-Lu, Po, At, Rn, Th, U
_HUECKEL_FATAL = frozenset([18, 30, 36, 39, 47, 48, 54, *range(58, 72), 84, 85, 86, 90, 92])


def perceive_molecule(numbers: np.ndarray, positions: np.ndarray, total_charge: int = 0
                      ) -> Any | None:
    """An RDKit molecule with bonds and bond orders perceived from the geometry alone (RDKit
    ``DetermineConnectivity``, retried with extended-Hückel connectivity, then
    ``DetermineBondOrders``), sanitised; None where perception fails or the molecule is too
    big."""
    from andersonn.structures.network import overlapping_atoms

    n = len(numbers)
    if n < 2 or n > MMFF_MAX_ATOMS or overlapping_atoms(np.asarray(positions)) is not None:
        return None  # RDKit's connectivity search crashes (SIGSEGV) on coincident atoms
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from andersonn.structures.readers import quiet

    mol = _bare_molecule(numbers, positions)
    # Distance-based connectivity (covalent radii) first; where it gives an atom an impossible
    # valence (≈ 5 % of QM9: strained rings, long C-C or short O···H contacts) the extended-
    # Hückel connectivity is tried; it is ~10× slower but perceives all of QM9.
    # RDKit's extended-Hückel code (YAeHMOP) ends the whole process (exit() or abort, its
    # message hidden with the C output) on these elements: no retry there, the caller falls back
    tries = (False,) if _HUECKEL_FATAL.intersection(np.asarray(numbers).tolist()) else (False, True)
    with quiet():
        for use_hueckel in tries:
            candidate = Chem.RWMol(mol)
            try:
                with silent_c_output() if use_hueckel else contextlib.nullcontext():
                    rdDetermineBonds.DetermineConnectivity(candidate, useHueckel=use_hueckel,
                                                           charge=int(total_charge))
                    rdDetermineBonds.DetermineBondOrders(candidate, charge=int(total_charge))
                    Chem.SanitizeMol(candidate)
            except Exception:  # perception or sanitisation failed: try the next, then fall back
                continue
            return candidate
    return None


def _bare_molecule(numbers: np.ndarray, positions: np.ndarray) -> Any:
    """An RDKit molecule of the atoms ``numbers`` at ``positions`` (Å), without bonds.

    One ``Chem.Atom`` per element, copied by ``AddAtom``, and the coordinates set in one call
    where RDKit has ``Conformer.SetPositions`` (2024.09 on): building an atom and a ``Point3D``
    for every atom took as long as the bond perception itself."""
    from rdkit import Chem

    mol = Chem.RWMol()
    atoms: dict[int, Any] = {}
    for z in np.asarray(numbers, dtype=np.int64).tolist():
        if z not in atoms:
            atoms[z] = Chem.Atom(z)
        mol.AddAtom(atoms[z])
    conf = Chem.Conformer(len(numbers))
    xyz = np.ascontiguousarray(positions, dtype=np.float64)
    if hasattr(conf, "SetPositions"):
        conf.SetPositions(xyz)
    else:  # pragma: no cover - RDKit before 2024.09
        from rdkit.Geometry import Point3D

        for i, (x, y, w) in enumerate(xyz.tolist()):
            conf.SetAtomPosition(i, Point3D(x, y, w))
    mol.AddConformer(conf, assignId=True)
    return mol


def mmff_charges(numbers: np.ndarray, positions: np.ndarray, total_charge: int = 0
                 ) -> np.ndarray | None:
    """MMFF94 partial charges of a molecule, or None where they cannot be assigned.

    Bonds and bond orders are perceived from the geometry (:func:`perceive_molecule`), so the
    charges depend on the structure, not on how it was written down. MMFF94's bond-charge
    increments were fitted to ab initio dipole moments: on QM9 the resulting dipole correlates
    with the DFT dipole at r ≈ 0.91 (electronegativity equalisation fitted to Mulliken
    charges: 0.77; ``andersonn bench charges``). None when perception or MMFF atom typing fails
    (e.g. unusual elements or > ``MMFF_MAX_ATOMS``) or gives charges that do not add up to
    ``total_charge`` (3 of 3,000 QM9 molecules: strained heteroaromatics, a zwitterion).
    """
    from rdkit.Chem import rdForceFieldHelpers

    from andersonn.structures.readers import quiet

    numbers, positions = np.asarray(numbers), np.asarray(positions)
    if not 2 <= len(numbers) <= MMFF_MAX_ATOMS:
        return None  # before the (n, n) distances of the atom orders are computed
    # RDKit's bond-order and formal-charge assignment depends on the order of the atoms (QM9
    # dsgdb9nsd_131906: a nitro-oxazole in one order, a zwitterion whose MMFF charges sum to
    # +2 e in another, no structure at all in a third). The atoms are perceived in orders made
    # from the geometry alone, and the structure with the fewest formal charges whose MMFF
    # charges add up to the molecule's charge is kept: charges independent of the listing
    best: tuple[int, np.ndarray] | None = None
    for order in geometric_atom_orders(numbers, positions):
        mol = perceive_molecule(numbers[order], positions[order], total_charge)
        if mol is None:
            continue
        with quiet():
            props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
        if props is None:
            continue
        q = np.empty(len(numbers), dtype=np.float64)
        q[order] = [props.GetMMFFPartialCharge(i) for i in range(len(numbers))]
        if not np.isfinite(q).all() or abs(q.sum() - total_charge) > 1e-6:
            continue
        separation = sum(abs(a.GetFormalCharge()) for a in mol.GetAtoms())
        if best is None or separation < best[0]:
            best = (separation, q)
        if separation == abs(total_charge):
            break  # no charge separation: nothing better to find
    return None if best is None else best[1]


def geometric_atom_orders(numbers: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """Four orders of the atoms that depend on the geometry only, not on how the atoms were
    listed: by element (light or heavy first), then distance from the centre of mass (near or
    far first), then the sum of distances to all other atoms (each rounded to 1e-3 Å). Atoms
    that tie on all three are (near-)symmetric copies of each other and keep their order."""
    rel = positions - centre_of_mass(numbers, positions)
    r_com = np.round(np.sqrt((rel * rel).sum(1)), 3)
    diff = positions[:, None, :] - positions[None, :, :]
    spread = np.round(np.sqrt((diff * diff).sum(-1)).sum(1), 3)
    z = np.asarray(numbers, dtype=np.int64)
    return [np.lexsort((spread, r_com * sign_r, z * sign_z))
            for sign_z in (1, -1) for sign_r in (1, -1)]


def molecule_charges(numbers: np.ndarray, positions: np.ndarray, dist: np.ndarray,
                     total_charge: float = 0.0) -> np.ndarray:
    """MMFF94 charges where they can be assigned, else electronegativity equalisation."""
    q = mmff_charges(numbers, positions, round(total_charge))
    return q if q is not None else eem_charges(numbers, dist, total_charge)


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
                     max_reach: float = 40.0) -> tuple[float, float]:
    """(largest empty-sphere diameter in Å, void fraction) of a periodic structure.

    A grid over the cell (about ``spacing`` Å, at most ``max_points`` points) is scored by the
    distance to the nearest van der Waals surface (KD-tree over the atoms and their images within
    ``reach`` Å); a pattern search to 1e-3 Å refines the grid points that could lie in the
    largest pore (:func:`_pore_seeds`), so the result does not depend on the cell's origin.
    Distances are exact up to ``reach`` minus the largest van der Waals radius present; a pore
    larger than that is measured again with ``reach`` doubled, up to ``max_reach`` (beyond it
    the diameter is capped: a lower bound). The void fraction is the share of grid points
    outside every vdW sphere.
    """
    largest = float(VDW_RADIUS[np.unique(numbers)].max())
    if not reach > largest:
        raise ConfigError(f"void search reach {reach:g} Å must exceed the largest van der Waals "
                          f"radius present ({largest:g} Å)")
    lengths = np.linalg.norm(cell, axis=1)
    counts = np.maximum(2, np.ceil(lengths / spacing)).astype(int)
    total = float(np.prod(counts))
    if total > max_points:
        counts = np.maximum(2, np.floor(counts * (max_points / total) ** (1 / 3))).astype(int)
    grid = np.stack(np.meshgrid(*((np.arange(c) + 0.5) / c for c in counts), indexing="ij"),
                    -1).reshape(-1, 3)
    pts = grid @ cell
    void_fraction = None
    while True:
        surface_distance, exact_below = _surface_distance(numbers, positions, cell, reach)
        sd = surface_distance(pts)
        if void_fraction is None:
            void_fraction = float((sd > 0).mean())
        best = _largest_sphere_radius(surface_distance, pts, sd, cell, counts)
        if best < exact_below or reach >= max_reach:
            return max(0.0, 2.0 * best), void_fraction
        reach = min(2.0 * reach, max_reach)


def _surface_distance(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, reach: float
                      ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """A function giving the distance from points to the nearest van der Waals surface of the
    periodic structure, and the value up to which it is exact.

    Points are wrapped into the cell first, so every atom within ``reach`` of one is among the
    periodic images searched: a distance below ``reach`` minus the largest radius is exact; one
    above only says "at least this", so it is capped there (otherwise it would depend on which
    far images were searched, that is on where the cell's origin is)."""
    from scipy.spatial import cKDTree

    from andersonn.structures.network import periodic_images

    rep, owner = periodic_images(positions, cell, reach)
    radii = VDW_RADIUS[numbers[owner]]
    # one tree per radius: the nearest surface need not belong to one of the few nearest
    # centres (a farther atom with a larger radius can be nearer), so each radius's nearest
    # centre is found and the smallest gap kept — exact, not an upper bound
    trees = [(cKDTree(rep[radii == radius]), float(radius)) for radius in np.unique(radii)]
    exact_below = reach - float(radii.max())
    to_frac = np.linalg.inv(cell)

    def surface_distance(points: np.ndarray) -> np.ndarray:
        inside = ((points @ to_frac) % 1.0) @ cell
        gap = np.full(len(inside), np.inf)
        for tree, radius in trees:
            np.minimum(gap, tree.query(inside, k=1)[0] - radius, out=gap)
        return np.minimum(gap, exact_below)

    return surface_distance, exact_below


def _largest_sphere_radius(surface_distance: Callable[[np.ndarray], np.ndarray],
                           points: np.ndarray, surface: np.ndarray, cell: np.ndarray,
                           counts: np.ndarray) -> float:
    """The largest distance to the surface, refined from the grid ``points`` (values
    ``surface``) from every point the largest sphere's centre could be near
    (:func:`_pore_seeds`): the best few grid points cluster in one pore, and which pore won then
    depended on where the cell's origin was. The seeds are refined in stages
    (:data:`REFINE_STOPS`); a search stuck at step s is within about s of its local maximum (the
    distance is 1-Lipschitz), so after each stage only those within 2 s of the best go on."""
    seeds = _pore_seeds(points, surface, cell / counts[:, None])
    step = 0.5 * float(np.max(np.linalg.norm(cell, axis=1) / counts))
    values = np.empty(0)
    to_frac = np.linalg.inv(cell)
    for stop in REFINE_STOPS:
        seeds, values = _pattern_search(surface_distance, seeds, step, stop)
        keep = np.flatnonzero(values >= values.max() - 2.0 * stop)
        # searches that reached the same maximum: one goes on
        keep = keep[_thinned(((seeds[keep] @ to_frac) % 1.0) @ cell, -values[keep], 2.0 * stop)]
        seeds, values, step = seeds[keep], values[keep], stop
    return max(float(surface.max()), float(values.max()))


def _thinned(points: np.ndarray, rank: np.ndarray, separation: float) -> np.ndarray:
    """Indices of ``points`` taken in the order of ``rank`` (lowest first), skipping any within
    ``separation`` of one already taken."""
    chosen: list[int] = []
    for i in np.argsort(rank, kind="stable").tolist():
        if chosen:
            gap = points[chosen] - points[i]
            if float(np.einsum("ij,ij->i", gap, gap).min()) < separation * separation:
                continue
        chosen.append(i)
    return np.array(chosen, dtype=np.intp)


#: Å: every seed is refined to the first step; after each, only the seeds within twice that step
#: of the best go on (most seeds sit in pores that cannot win, or are symmetric copies)
REFINE_STOPS = (0.25, 0.1, 0.02, 0.004, 0.001)


def _pattern_search(surface_distance: Callable[[np.ndarray], np.ndarray], points: np.ndarray,
                    step: float, stop: float, max_rounds: int = 60
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``surface_distance`` from each of ``points``: move to the best of 26
    neighbours ``step`` away while that improves, else halve the step, until it is below
    ``stop``. Returns the points reached and their values."""
    top = points.copy()
    val = surface_distance(top)
    steps = np.full(len(top), step)
    offs = np.stack(np.meshgrid(*([np.array([-1.0, 0.0, 1.0])] * 3), indexing="ij"),
                    -1).reshape(-1, 3)
    offs = offs[np.abs(offs).sum(1) > 0]
    offs = offs / np.linalg.norm(offs, axis=1)[:, None]
    for _ in range(max_rounds):
        active = np.flatnonzero(steps >= stop)
        if not len(active):
            break
        cand = top[active, None, :] + steps[active, None, None] * offs[None, :, :]
        cd = surface_distance(cand.reshape(-1, 3)).reshape(len(active), len(offs))
        k = cd.argmax(1)
        gain = cd[np.arange(len(active)), k]
        better = gain > val[active] + 1e-9
        moved = active[better]
        top[moved] = cand[better, k[better]]
        val[moved] = gain[better]
        steps[active[~better]] *= 0.5
    return top, val


def _pore_seeds(points: np.ndarray, surface: np.ndarray, step: np.ndarray,
                separation: float = 1.0) -> np.ndarray:
    """Starting points for refining the largest empty sphere: the grid points whose distance
    to the surface is within the grid's covering radius of the best (the distance is
    1-Lipschitz, so the best sphere's centre lies that close to one of them), best first,
    thinned to ``separation`` Å apart."""
    corners = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=float)
    cover = 0.5 * float(np.linalg.norm(corners @ step, axis=1).max())
    candidates = np.flatnonzero(surface >= surface.max() - cover)
    chosen = candidates[_thinned(points[candidates], -surface[candidates], separation)]
    return points[chosen].copy()


def _d_f_counts(zs: np.ndarray, ox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d and f electrons left on each element at oxidation state ``ox`` (group - ox for the
    d block, the coordination-chemistry convention; 4f/5f count for lanthanides/actinides)."""
    d = np.where((GROUP[zs] >= 3) & (GROUP[zs] <= 12) & ((zs < 57) | (zs > 71)) & (zs < 89),
                 np.clip(GROUP[zs] - ox, 0, 10), 0.0)
    f = np.where((zs >= 57) & (zs <= 71), np.clip(zs - 54 - ox, 0, 14),
                 np.where(zs >= 89, np.clip(zs - 86 - ox, 0, 14), 0.0))
    return d, f


def oxidation_descriptors(numbers: np.ndarray) -> dict[str, float]:
    """Ionic picture of a composition from its element counts alone (so cell-choice invariant).

    Tries every assignment of one common oxidation state per element (pymatgen's list; 0 for
    elements without one) and keeps the best by (|net charge|, number of element pairs whose
    states contradict their electronegativity order, sum of |state|). Returns

    - ``imbalance``: |net charge| per atom of the best assignment, clipped to 1; 1 for a single
      element (no ionic picture) or a composition with too many combinations;
    - ``d_partial`` / ``f_partial``: fraction of atoms that are d-block (f-block) atoms with a
      partly filled d (f) shell at their assigned state (d^1..d^9; f^1..f^13);
    - ``unpaired_d``: mean over atoms of min(d, 10 - d) for the partly filled d shells;
    - ``ve_odd``: 1 if the valence electrons (group-based count) per reduced formula unit are odd.
    """
    zs, cnt = np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)
    frac = cnt / cnt.sum()
    reduced = cnt // np.gcd.reduce(cnt)
    out = {"ve_odd": float(round(float((reduced * VALENCE[zs]).sum())) % 2)}
    opts = [COMMON_OXIDATION_STATES[z] or (0,) for z in zs]
    n_comb = int(np.prod([len(o) for o in opts], dtype=np.float64))
    if len(zs) == 1 or n_comb > MAX_OX_COMBINATIONS:
        best = np.zeros(len(zs))
        out["imbalance"] = 1.0
    else:
        grid = np.stack(np.meshgrid(*[np.asarray(o, dtype=np.int64) for o in opts],
                                    indexing="ij"), -1).reshape(-1, len(zs))
        net = np.abs(grid @ cnt)
        en = ELECTRONEGATIVITY[zs]
        a, b = np.nonzero(en[:, None] > en[None, :] + 0.1)
        wrong = (grid[:, a] > grid[:, b]).sum(1)
        size = np.abs(grid) @ cnt
        k = int(np.lexsort((size, wrong, net))[0])
        best = grid[k].astype(np.float64)
        out["imbalance"] = min(1.0, float(net[k]) / float(cnt.sum()))
    d, f = _d_f_counts(zs, best)
    part_d = (d > 0) & (d < 10)
    out["d_partial"] = float((frac * part_d).sum())
    out["f_partial"] = float((frac * ((f > 0) & (f < 14))).sum())
    out["unpaired_d"] = float((frac * np.where(part_d, np.minimum(d, 10 - d), 0)).sum())
    return out
