"""How well each partial-charge model predicts QM9 dipoles (``andersonn bench charges``).

The polarity image carries a partial charge per atom and the charge dipole |Σ qᵢ(rᵢ − r_com)|.
This probe measures, on a seeded random sample of QM9 molecules (their DFT geometries), how
that dipole compares with the DFT dipole for each charge model:

* ``mmff``: MMFF94 charges, bonds perceived from the geometry (molecules where typing fails are
  left out and counted);
* ``images``: what the images use — MMFF94, electronegativity equalisation where MMFF fails;
* ``eem``: electronegativity equalisation alone (the featuriser before 1.3.0);
* ``gasteiger``: Gasteiger–Marsili charges on the same perceived molecule (a common default).

Reported per model: Pearson r and mean absolute error against the DFT dipole (D), and the
accuracy of a single threshold on the charge dipole for the polarity label (dipole ≥ 2.5 D):
the threshold is chosen on the first half of the sample and scored on the second half. Nothing
is fitted beyond that one threshold, so the numbers say how much of the label the physics alone
carries before any learning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.bench.report import markdown_table, results_dir, write_results
from andersonn.errors import ConfigError
from andersonn.images.physics import (
    centre_of_mass,
    eem_charges,
    mmff_charges,
    molecule_charges,
    perceive_molecule,
)
from andersonn.structures.network import distance_matrix

DEBYE_PER_E_ANGSTROM = 4.80320
THRESHOLD_D = 2.5
MODELS = ("mmff", "images", "eem", "gasteiger")


def _gasteiger(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
    mol = perceive_molecule(numbers, positions)
    if mol is None:
        return None
    from rdkit.Chem import rdPartialCharges

    rdPartialCharges.ComputeGasteigerCharges(mol)
    q = np.array([a.GetDoubleProp("_GasteigerCharge") for a in mol.GetAtoms()])
    return q if np.isfinite(q).all() else None


CHARGE_MODELS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray | None]] = {
    "mmff": mmff_charges,
    "images": lambda z, pos: molecule_charges(z, pos, distance_matrix(pos)),
    "eem": lambda z, pos: eem_charges(z, distance_matrix(pos)),
    "gasteiger": _gasteiger,
}


def charge_dipole(numbers: np.ndarray, positions: np.ndarray, model: str) -> float | None:
    """|Σ qᵢ(rᵢ − r_com)| in Debye with the charges of ``model``; None if it has no charges."""
    if model not in CHARGE_MODELS:
        raise ConfigError(f"unknown charge model {model!r}; choose one of {', '.join(MODELS)}")
    q = CHARGE_MODELS[model](numbers, positions)
    if q is None:
        return None
    rel = positions - centre_of_mass(numbers, positions)
    return float(np.linalg.norm((q[:, None] * rel).sum(0)) * DEBYE_PER_E_ANGSTROM)


def threshold_accuracy(predicted: np.ndarray, dipole: np.ndarray,
                       label_threshold: float = THRESHOLD_D) -> tuple[float, float]:
    """(threshold, accuracy): threshold chosen on the first half, accuracy on the second."""
    half = len(dipole) // 2
    if half < 1:
        return float("nan"), float("nan")
    fit_p, fit_y = predicted[:half], dipole[:half] >= label_threshold
    candidates = np.unique(fit_p)
    accs = [float(((fit_p >= t) == fit_y).mean()) for t in candidates]
    best = float(candidates[int(np.argmax(accs))])
    test_p, test_y = predicted[half:], dipole[half:] >= label_threshold
    return best, float(((test_p >= best) == test_y).mean())


def run_probe(molecules: Sequence[tuple[np.ndarray, np.ndarray, float]],
              models: Sequence[str] = MODELS) -> dict[str, Any]:
    """Score each charge model on ``molecules`` = [(numbers, positions Å, DFT dipole D), ...]."""
    rows = []
    for model in models:
        started = time.process_time()
        pred, true = [], []
        for numbers, positions, dipole in molecules:
            d = charge_dipole(numbers, positions, model)
            if d is not None:
                pred.append(d)
                true.append(dipole)
        p, y = np.asarray(pred), np.asarray(true)
        ok = len(p) >= 3 and float(p.std()) > 0 and float(y.std()) > 0
        threshold, accuracy = threshold_accuracy(p, y)
        rows.append({
            "model": model, "n": len(p), "failed": len(molecules) - len(p),
            "pearson_r": float(np.corrcoef(p, y)[0, 1]) if ok else float("nan"),
            "mae_debye": float(np.abs(p - y).mean()) if len(p) else float("nan"),
            "threshold_debye": threshold, "heldout_accuracy": accuracy,
            "cpu_ms_per_molecule": (time.process_time() - started) * 1e3 / max(1, len(molecules)),
        })
    return {"bench": "charges", "label_threshold_debye": THRESHOLD_D, "results": rows}


def qm9_sample(n: int, seed: int = 0, cache_dir: str | None = None
               ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``n`` QM9 molecules drawn with ``seed`` (DFT geometry, DFT dipole)."""
    from andersonn.data import qm9
    from andersonn.data.archives import ensure_archive
    from andersonn.structures.readers import parse_structure

    path = ensure_archive("qm9pack", cache_dir=cache_dir)
    entries = qm9.read({"qm9pack": path}).entries
    order = np.random.default_rng(seed).permutation(len(entries))[:n]
    chosen = [entries[i] for i in order]
    qm9.materialize({"qm9pack": path}, chosen)
    out = []
    for e in chosen:
        if e.content is None:
            continue
        s = parse_structure(e.content, "xyz", e.id)
        out.append((s.numbers, s.positions, float(e.value)))
    return out


def charges_markdown(result: dict[str, Any]) -> str:
    """The probe's table as markdown."""
    rows = [[r["model"], r["n"], r["failed"], r["pearson_r"], r["mae_debye"],
             r["threshold_debye"], r["heldout_accuracy"], r["cpu_ms_per_molecule"]]
            for r in result["results"]]
    head = (f"## bench charges: {result.get('molecules', '?')} QM9 molecules (seed "
            f"{result.get('seed', '?')}), label dipole ≥ {result['label_threshold_debye']} D\n\n")
    return head + markdown_table(
        ["charges", "molecules", "no charges", "Pearson r vs DFT dipole", "MAE (D)",
         "threshold (D, first half)", "accuracy (second half)", "CPU ms / molecule"], rows)


def main(out: str | Path | None = None, n: int = 3000, seed: int = 0,
         cache_dir: str | None = None) -> dict[str, Any]:
    """Run the probe on ``n`` QM9 molecules; write charges.json / charges.md; print the table."""
    if n < 4:
        raise ConfigError(f"--molecules must be at least 4, got {n}")
    out_dir = results_dir("charges", None, out)  # before the work: a bad path fails at once
    molecules = qm9_sample(n, seed, cache_dir)
    result = {**run_probe(molecules), "molecules": len(molecules), "seed": seed}
    markdown = charges_markdown(result)
    write_results(out_dir, "charges", result, markdown)
    print(markdown)
    return result
