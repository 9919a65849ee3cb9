"""The outcome of predicting one input (:class:`Prediction`) and its output: a table for the
terminal, or a JSON, CSV or SD file (:mod:`andersonn.predict.sdf`) written atomically."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from andersonn.errors import InputError
from andersonn.fileio import atomic_write_json, atomic_write_text
from andersonn.predict.inputs import without_name

__all__ = ["Prediction", "format_table", "keep_existing_output", "write_predictions"]


@dataclasses.dataclass
class Prediction:
    """The outcome for one input: its class and probabilities, or why it failed; ``warnings``
    say where a readable input lies outside the model's training domain."""

    input: str
    ok: bool
    label: str | None = None
    probabilities: dict[str, float] | None = None
    iterations: float | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    source: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The input as read (a path, SMILES or record): what ``--out FILE.sdf`` writes back."""

    @property
    def reason(self) -> str:
        """Why the input failed ("" when it did not), without its name in front: for a line
        that names the input first (``cannot predict C1CC: unparsable SMILES``)."""
        return without_name(self.error or "", self.input)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the ``--out FILE.json`` record)."""
        return {"input": self.input, "ok": self.ok, "class": self.label,
                "probabilities": self.probabilities, "iterations": self.iterations,
                "error": self.reason if self.error else None,
                "warnings": list(self.warnings)}


def format_table(preds: Sequence[Prediction], classes: Sequence[str]) -> str:
    """A plain-text table of predictions (for the terminal)."""
    rows = [["input", "class", *[f"p({c})" for c in classes], "iterations"]]
    for p in preds:
        if p.ok and p.probabilities is not None:
            label = f"{p.label}{' *' if p.warnings else ''}"
            rows.append([p.input, label, *[f"{p.probabilities[c]:.3f}" for c in classes],
                         f"{p.iterations:.1f}" if p.iterations is not None else "-"])
        else:
            rows.append([p.input, "ERROR", *["-"] * len(classes), "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    widths[0] = min(widths[0], 60)
    lines = []
    for r in rows:
        first = r[0] if len(r[0]) <= 60 else "…" + r[0][-59:]
        lines.append("  ".join([first.ljust(widths[0])] +
                               [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    if any(p.ok and p.warnings for p in preds):
        lines.append("* see the warnings above: outside the training domain, read with a caveat, "
                     "or solved short of the tolerance")
    return "\n".join(lines)


def keep_existing_output(path: str | Path, total: int, verb: str) -> None:
    """Where none of ``total`` inputs could be ``verb`` (``predicted``, ``explained``): refuse
    (:class:`InputError`) to replace an existing output ``path`` by a record of errors only;
    a new ``path`` may take that record."""
    if Path(path).exists():
        raise InputError(f"no input could be {verb} ({total} given); the existing {path} is "
                         "kept as it was")


def write_predictions(path: str | Path, preds: Sequence[Prediction], classes: Sequence[str],
                      meta: dict[str, Any] | None = None) -> None:
    """Write predictions atomically as JSON (``.json``), CSV (``.csv``) or, for molecules, an
    SD file of the inputs with the predictions as data fields (``.sdf``,
    :mod:`andersonn.predict.sdf`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        from andersonn.predict.sdf import sdf_predictions

        atomic_write_text(path, sdf_predictions(preds, classes))
    elif suffix == ".json":  # strict JSON: no NaN (a model without a solver has None)
        record = {**(meta or {}), "classes": list(classes),
                  "predictions": [p.to_dict() for p in preds]}
        atomic_write_json(path, record, allow_nan=False)
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["input", "status", "class", *[f"p_{c}" for c in classes],
                         "iterations", "error", "warnings"])
        for p in preds:
            probs = [f"{p.probabilities[c]:.6f}" for c in classes] if p.probabilities else \
                [""] * len(classes)
            writer.writerow([p.input, "ok" if p.ok else "error", p.label or "", *probs,
                             "" if p.iterations is None else f"{p.iterations:.2f}",
                             p.reason, "; ".join(p.warnings)])
        atomic_write_text(path, buf.getvalue())
    else:
        raise InputError(f"{path}: --out must end in .json, .csv or .sdf")
