"""How much the crystal-gap descriptors can tell, without a network: gradient-boosted trees.

    python scripts/crystal_gap_probe.py [--seeds 3]        # needs scikit-learn

Takes the current `crystal-gap` build (``andersonn data build crystal-gap``), its splits and
images, re-reads its structures from the pinned archives, and fits scikit-learn's
HistGradientBoostingClassifier on the training split with three descriptor sets:

* ``image``: per-channel mean and maximum of each graph image (what the network sees, pooled);
* ``magpie``: composition statistics in the manner of Magpie (Ward et al. 2016) — 20 element
  properties (pymatgen's element data) × fraction-weighted mean, min, max, range, mean absolute
  deviation — plus density, volume per atom, space group, sites, element count and the
  nearest-neighbour distance over the sum of atomic radii (mean, min, max);
* ``both``.

Prints, per set, mean accuracy and metal-vs-rest balanced accuracy on the validation and test
splits over ``--seeds`` seeds. A ceiling check for the network's accuracy on 6,277 crystals.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from andersonn.data import load_dataset
from andersonn.data import materials_project as mp
from andersonn.data.archives import ensure_archive
from andersonn.data.domain import image_summaries


def _valence_shells(element: object) -> tuple[int, int, int, int]:
    """Electrons in the outer s, p, (n−1)d and (n−2)f shells (filled d/f shells count 0)."""
    shells = element.full_electronic_structure  # type: ignore[attr-defined]
    n_max = max(n for n, _, _ in shells)
    s = sum(c for n, sub, c in shells if sub == "s" and n == n_max)
    p = sum(c for n, sub, c in shells if sub == "p" and n == n_max)
    d = sum(c for n, sub, c in shells if sub == "d" and n == n_max - 1 and c < 10)
    f = sum(c for n, sub, c in shells if sub == "f" and n == n_max - 2 and c < 14)
    return s, p, d, f


def _number(value: object, default: float) -> float:
    try:
        return float(value) if value is not None else default  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


_PROPS: dict[str, np.ndarray] = {}


def element_properties(symbol: str) -> np.ndarray:
    """20 properties of one element (missing values replaced by typical ones)."""
    if symbol not in _PROPS:
        from pymatgen.core import Element

        el = Element(symbol)
        s, p, d, f = _valence_shells(el)
        ionisation = el.ionization_energies[0] if el.ionization_energies else 0.0
        _PROPS[symbol] = np.array([
            el.Z, _number(el.X, 2.0), el.row, el.group,
            _number(el.atomic_radius_calculated or el.atomic_radius, 1.5),
            _number(el.mendeleev_no, 50), _number(el.melting_point, 1000),
            _number(el.molar_volume, 15), s, p, d, f,
            2 - s if s else 0, 6 - p if p else 0, 10 - d if d else 0, 14 - f if f else 0,
            _number(ionisation, 0.0), _number(el.electron_affinity, 0.0),
            float(el.is_metal), float(el.is_transition_metal)], dtype=float)
    return _PROPS[symbol]


def magpie_features(structure: object) -> np.ndarray:
    """Composition statistics and a few structure descriptors of one pymatgen Structure."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    comp = structure.composition.fractional_composition  # type: ignore[attr-defined]
    symbols = [e.symbol for e in comp.elements]
    w = np.array([comp[e] for e in comp.elements])
    props = np.stack([element_properties(x) for x in symbols])
    mean = w @ props
    stats = [mean, props.min(0), props.max(0), props.max(0) - props.min(0),
             w @ np.abs(props - mean)]
    try:
        space_group = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
    except Exception:  # spglib gives up on a few distorted cells
        space_group = 0
    ratios = []
    for site, neighbours in zip(structure, structure.get_all_neighbors(4.0), strict=True):
        if not neighbours:
            ratios.append(2.0)
            continue
        nearest = min(neighbours, key=lambda n: n.nn_distance)
        radii = (element_properties(site.specie.symbol)[4]
                 + element_properties(nearest.specie.symbol)[4])
        ratios.append(nearest.nn_distance / radii)
    r = np.array(ratios)
    extra = [structure.density, structure.volume / len(structure), space_group,  # type: ignore
             len(structure), len(symbols), r.mean(), r.min(), r.max()]
    return np.concatenate([*stats, np.array(extra, dtype=float)])


def structures_of(ids: list[str]) -> list[object]:
    """pymatgen Structures of the given mp-ids, read from the pinned archives."""
    from pymatgen.core import Structure

    paths = {k: ensure_archive(k) for k in ("matminer", "jarvis_leaderboard")}
    entries = {e.id: e for e in mp.read(paths).entries}
    out = []
    for mp_id in ids:
        e = entries[mp_id]
        if e.fmt == "pymatgen-dict":
            out.append(Structure.from_dict(e.content))
        else:
            out.append(Structure.from_str(e.content, fmt="poscar" if e.fmt == "poscar" else "cif"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.metrics import accuracy_score, balanced_accuracy_score
    except ImportError:
        raise SystemExit("this probe needs scikit-learn: pip install scikit-learn") from None
    warnings.filterwarnings("ignore")
    ds = load_dataset("crystal-gap")
    y, splits = np.asarray(ds.labels), np.asarray(ds.splits)
    t0 = time.perf_counter()
    magpie = np.stack([magpie_features(s) for s in structures_of(list(ds.ids))])
    print(f"{len(y)} crystals, {magpie.shape[1]} magpie descriptors "
          f"({time.perf_counter() - t0:.0f} s)")
    pooled = image_summaries(ds.images)  # what the domain check uses, too
    sets = {"image": pooled, "magpie": magpie, "both": np.concatenate([pooled, magpie], 1)}
    print("descriptors   val acc  val metal-bal  test acc  test metal-bal")
    for name, x in sets.items():
        scores = []
        for seed in range(args.seeds):
            clf = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05,
                                                 l2_regularization=1.0, random_state=seed)
            clf.fit(x[splits == 0], y[splits == 0])
            row = []
            for split in (1, 2):
                truth, guess = y[splits == split], clf.predict(x[splits == split])
                row += [accuracy_score(truth, guess),
                        balanced_accuracy_score(truth == 0, guess == 0)]
            scores.append(row)
        m = np.mean(scores, 0)
        print(f"{name:12s}  {m[0]:7.3f}  {m[1]:13.3f}  {m[2]:8.3f}  {m[3]:14.3f}")


if __name__ == "__main__":
    main()
