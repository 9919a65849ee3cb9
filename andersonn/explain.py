"""Why a run predicts what it predicts: per-atom attributions by integrated gradients.

For one input, the class probability is followed along a straight path from the empty image
(all zeros: no atoms) to the input's image; integrating the gradient of the log-probability of
the explained class along that path (Sundararajan et al., ICML 2017) splits the difference
``log p(class | input) − log p(class | empty)`` over the image's entries, up to the quadrature
error that :attr:`Explanation.gap` reports. Each filled row of a graph image is one atom (a
molecule) or one environment of symmetry-equivalent sites (a crystal), so the sum over a row is
that atom's or environment's share; the whole-structure channels (``g_*``: dipole of the
charges, density, composition descriptors) form one more share. Positive shares speak for the
class, negative ones against it.

The gradient through the DEQ is the implicit one (the adjoint fixed point), as in training.
``andersonn explain RUN INPUT...`` is the command-line front; molecules get a drawing with each
atom coloured by its share (``--out DIR``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.errors import InputError

__all__ = ["DEFAULT_STEPS", "Explanation", "attribute", "draw_explanation", "explain",
           "picture_name", "previous_pictures"]

DEFAULT_STEPS = 32
PRECISE_TOL = 1e-5  # DEQ forward and adjoint tolerance while explaining (gradients, not classes)


@dataclasses.dataclass
class Explanation:
    """The attribution of one input (or why it failed: ``error``).

    ``rows``: per filled image row its element, the atoms it stands for (0-based indices into
    the structure as read) and its share; ``atom_shares``: the share per atom (a row's share
    split evenly over its atoms); ``whole_structure``: the share of the whole-structure channels;
    ``total``: ``log p(target | input) − log p(target | empty image)``; ``gap``: ``total`` minus
    the sum of all shares (the quadrature error of the integral; small against ``total`` when
    the steps suffice).
    """

    name: str
    kind: str = ""
    predicted: str = ""
    target: str = ""
    probabilities: dict[str, float] = dataclasses.field(default_factory=dict)
    log_p: float | None = None  # the numbers are None for an input that failed
    log_p_empty: float | None = None
    total: float | None = None
    gap: float | None = None
    whole_structure: float | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    atom_shares: list[float] = dataclasses.field(default_factory=list)
    symbols: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    structure: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (without the structure)."""
        record = dataclasses.asdict(dataclasses.replace(self, structure=None))
        record.pop("structure")
        return record

    def to_text(self, top: int = 12) -> str:
        """A few lines: the prediction, the explained difference and the largest shares."""
        if not self.ok or self.total is None or self.gap is None or self.whole_structure is None:
            from andersonn.predict import without_name

            return f"{self.name}: error: {without_name(self.error, self.name)}"
        atoms = self.total - self.gap - self.whole_structure
        lines = [f"{self.name} → {self.predicted} (p {self.probabilities[self.predicted]:.3f}); "
                 f"log p({self.target}) {self.log_p:+.3f} vs {self.log_p_empty:+.3f} for the "
                 f"empty image: {self.total:+.3f} = atoms {atoms:+.3f} + whole structure "
                 f"{self.whole_structure:+.3f} (gap {self.gap:+.3f})"]
        ranked = sorted(self.rows, key=lambda r: -abs(r["share"]))
        for row in ranked[:top]:
            atoms = row["atoms"]
            where = (f"{row['element']}{atoms[0] + 1}" if len(atoms) == 1 else
                     f"{row['element']} ×{len(atoms)} (atoms {_ranges(atoms)})")
            lines.append(f"  {where:<28} {row['share']:+.3f}")
        if len(ranked) > top:
            rest = sum(r["share"] for r in ranked[top:])
            lines.append(f"  {f'{len(ranked) - top} more rows':<28} {rest:+.3f}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _ranges(indices: Sequence[int]) -> str:
    """1-based atom numbers, consecutive runs shortened: 1-4,7."""
    parts, start, prev = [], None, None
    for i in sorted(int(v) + 1 for v in indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def attribute(model: torch.nn.Module, image: np.ndarray, target: int, steps: int = DEFAULT_STEPS,
              temperature: float = 1.0, baseline: np.ndarray | None = None
              ) -> tuple[np.ndarray, float, float]:
    """Integrated gradients of ``log softmax(model(x) / temperature)[target]`` from
    ``baseline`` (default: the zero image) to ``image`` (C, H, W), midpoint rule with ``steps``
    points. Returns (attribution (C, H, W), log p at the image, log p at the baseline)."""
    _check_steps(steps)
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None]
    x0 = (torch.zeros_like(x) if baseline is None
          else torch.as_tensor(np.asarray(baseline, dtype=np.float32)).expand_as(x))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    path = (x0 + alphas.view(-1, 1, 1, 1) * (x - x0)).requires_grad_(True)
    model.eval()
    with torch.enable_grad():
        log_p = torch.log_softmax(model(path).float() / temperature, dim=1)[:, target]
        (grads,) = torch.autograd.grad(log_p.sum(), path)
    with torch.no_grad():
        ends = torch.log_softmax(model(torch.cat([x, x0])).float() / temperature,
                                 dim=1)[:, target]
    attribution = ((x - x0)[0] * grads.mean(dim=0)).numpy()
    return attribution, float(ends[0]), float(ends[1])


def _check_steps(steps: int) -> None:
    """Refuse fewer than one point on the integration path."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")


def _target_class(target: str, classes: Sequence[Any]) -> Any:
    """The class ``target`` names: exactly, else the one class equal to it but for case."""
    if target in classes:
        return target
    folded = [c for c in classes if str(c).casefold() == str(target).casefold()]
    if len(folded) == 1:
        return folded[0]
    if folded:
        raise InputError(f"class {target!r} matches {', '.join(repr(str(c)) for c in folded)} "
                         "but for case; give one of them exactly")
    raise InputError(f"unknown class {target!r}; this run's classes are "
                     f"{', '.join(str(c) for c in classes)}")


def explain(classifier: Any, inputs: Sequence[Any], target: str | None = None,
            steps: int = DEFAULT_STEPS) -> list[Explanation]:
    """Explain a fitted :class:`andersonn.predict.Classifier` (one run) on ``inputs`` (SMILES,
    structure files, directories or list files, as ``predict`` takes them). ``target``: the
    class to explain (a class name, matched regardless of case where that is unambiguous;
    default: each input's predicted class). An input that cannot be read comes back with
    ``error`` set; the rest are explained."""
    from andersonn.images import CHANNELS, encode_with_atoms
    from andersonn.predict import expand_inputs, read_in_domain

    _check_steps(steps)
    # a DEQ solves tighter than for a prediction (on a copy: the classifier keeps its own)
    model = copy.copy(classifier._check_fitted())
    max_iter = max(100, int(getattr(model, "solver_options", {}).get("max_iter", 0)))
    model.set_solver(None, {"tol": PRECISE_TOL, "max_iter": max_iter},
                     backward_options={"tol": PRECISE_TOL, "max_iter": 100})
    classes = list(classifier.classes_)
    if target is not None:
        target = _target_class(target, classes)
    spec = classifier._spec()
    whole = np.array([CHANNELS[name][0] == "global" for name in spec.channels])
    results = []
    for item in expand_inputs(inputs):
        name = str(getattr(item, "name", item))
        try:
            [structure], notes = read_in_domain(item, classifier.domain_, spec.max_atoms)
            image, symbols, members = encode_with_atoms(structure, spec)
            if classifier.feature_domain_ is not None:
                notes = notes + classifier.feature_domain_.check(image)
        except Exception as exc:  # reported per input; the rest go on
            results.append(Explanation(name=name, error=str(exc).splitlines()[0][:300]))
            continue
        with torch.no_grad():
            probs = torch.softmax(model(torch.as_tensor(image)[None]).float()
                                  / classifier.temperature_, dim=1)[0].numpy()
        predicted = classes[int(probs.argmax())]
        explained = target or predicted
        attribution, log_p, log_p_empty = attribute(
            model, image, classes.index(explained), steps, classifier.temperature_)
        per_row = attribution[~whole].sum(axis=(0, 2))
        rows = [{"element": symbols[r], "atoms": [int(a) for a in members[r]],
                 "share": float(per_row[r])} for r in range(len(members))]
        atom_shares = np.zeros(structure.n_atoms)
        for row in rows:
            atom_shares[row["atoms"]] += row["share"] / len(row["atoms"])
        whole_share = float(attribution[whole].sum())
        total = log_p - log_p_empty
        results.append(Explanation(
            name=name, kind=structure.kind, predicted=predicted, target=explained,
            probabilities={c: float(p) for c, p in zip(classes, probs, strict=True)},
            log_p=log_p, log_p_empty=log_p_empty, total=total,
            gap=total - float(per_row.sum()) - whole_share, whole_structure=whole_share,
            rows=rows, atom_shares=atom_shares.tolist(), symbols=list(structure.symbols),
            warnings=notes, structure=structure))
    return results


def draw_explanation(explanation: Explanation, path: str | Path, size: int = 520) -> Path:
    """A PNG of a molecule (2-D layout of its atom-bond network) with every atom coloured by
    its share: red speaks for the explained class, blue against, the strength by |share|
    relative to the largest; each atom is annotated with its share."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    from andersonn.fileio import atomic_write_bytes

    s = explanation.structure
    if s is None or s.kind != "molecule":
        raise InputError(f"{explanation.name}: only molecules are drawn")
    mol = Chem.RWMol()
    for z in s.numbers:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for (i, j), order in zip(s.bonds, s.bond_orders, strict=True):
        if i != j and mol.GetBondBetweenAtoms(int(i), int(j)) is None:
            mol.AddBond(int(i), int(j), kinds.get(round(float(order)), Chem.BondType.SINGLE))
    mol.UpdatePropertyCache(strict=False)
    rdDepictor.Compute2DCoords(mol)
    shares = np.asarray(explanation.atom_shares)
    scale = float(np.abs(shares).max()) or 1.0
    colours = {}
    for i, share in enumerate(shares):
        t = min(1.0, abs(float(share)) / scale)
        colours[i] = (1.0, 1 - 0.75 * t, 1 - 0.75 * t) if share > 0 else (1 - 0.75 * t,
                                                                         1 - 0.75 * t, 1.0)
        mol.GetAtomWithIdx(i).SetProp("atomNote", f"{share:+.2f}")
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    drawer.drawOptions().annotationFontScale = 0.6
    title = f"{explanation.name[:40]}: shares of log p({explanation.target})"
    drawer.DrawMolecule(mol.GetMol(), highlightAtoms=list(range(len(shares))),
                        highlightAtomColors=colours, highlightBonds=[], legend=title)
    drawer.FinishDrawing()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, drawer.GetDrawingText())
    return target


PICTURE_NAME = re.compile(r"[0-9]{3,}-[A-Za-z0-9._=#()+-]+\.png")
"""What :func:`picture_name` gives (no folder, no other kind of file)."""


def previous_pictures(folder: str | Path) -> list[Path]:
    """The drawings an earlier ``explain --out FOLDER`` left there: those its
    ``explanations.json`` lists that are named as :func:`picture_name` names them and still
    exist (none where there is no such record: no other file is ever taken for one)."""
    folder = Path(folder)
    try:
        records = json.loads((folder / "explanations.json").read_text())["explanations"]
        names = {r.get("picture") for r in records if isinstance(r, dict)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [folder / name for name in sorted(n for n in names if isinstance(n, str))
            if PICTURE_NAME.fullmatch(name) and (folder / name).is_file()]


def picture_name(index: int, name: str) -> str:
    """A file name for input ``index``'s drawing: its number and the input's whole name (a
    file: its name without the folders) cleaned up; where that lost characters (``/`` in a
    SMILES, a long name cut) a short hash of the whole name keeps distinct inputs apart."""
    from andersonn.structures.readers import is_file

    text = Path(name).name if is_file(name) else name
    clean = re.sub(r"[^A-Za-z0-9._=#()+-]+", "_", text).strip("_.")
    if clean != text or len(clean) > 40:
        digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        clean = f"{clean[:40].strip('_.')}-{digest}".lstrip("-")
    return f"{index:03d}-{clean or 'input'}.png"
