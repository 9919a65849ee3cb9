"""Scoring finished runs: on a split of the dataset they were trained on, or on a user's own
labelled structures.

- :func:`evaluate_split` scores runs on their dataset build's ``test`` (or ``val``/``train``)
  split.
- :func:`evaluate_labelled` scores them on a CSV of inputs (SMILES or structure files) with
  either a class name or the property value, or on an SDF whose records carry one as a data
  field. A value is turned into a class by the run's own label rule and thresholds (dipole in
  D, LCD in Å, band gap in eV). Rows that cannot be used are skipped and reported, and the rest
  are scored. Accuracy is also split between inputs inside and outside the training domain.

Several runs of one task are scored one by one (mean ± sd over them) and as ensembles of their
first k (:class:`andersonn.ensemble.Ensemble`). That is how a seed spread and the gain of a deep
ensemble are measured. ``andersonn evaluate`` is the command-line front.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from andersonn.data.domain import DomainNote
from andersonn.ensemble import Ensemble, solver_evaluations
from andersonn.errors import AndersonnError, InputError, warn_user

__all__ = ["HEADLINE", "Evaluation", "evaluate_labelled", "evaluate_split", "read_labelled",
           "score_probabilities"]

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "metal_vs_nonmetal_balanced_accuracy",
            "ece", "nll")
"""Scores reported per run and per ensemble (metal vs non-metal only where a task has metals)."""

VALUE_COLUMNS = {"polarity": ("value", "dipole", "dipole_debye"),
                 "mof-pore": ("value", "lcd"),
                 "crystal-gap": ("value", "gap", "band_gap", "gap_ev")}
"""Value column names accepted (case-insensitive) in a labelled CSV, per task (the input and
class columns: :mod:`andersonn.data.labelled`)."""


def score_probabilities(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]
                        ) -> dict[str, float]:
    """The :data:`HEADLINE` scores of probabilities (N, K) against integer labels (N,), and
    the 95 % interval of the accuracy (``accuracy_ci95``)."""
    from andersonn.training.calibration import expected_calibration_error
    from andersonn.training.metrics import classification_report, confusion_matrix

    report = classification_report(
        confusion_matrix(labels, np.asarray(probs).argmax(axis=1), len(classes)), classes)
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    report["ece"] = expected_calibration_error(p, y) if len(y) else 0.0
    report["nll"] = (float(-torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean())
                     if len(y) else 0.0)
    scores: dict[str, Any] = {k: float(report[k]) for k in HEADLINE if k in report}
    scores["accuracy_ci95"] = report["accuracy_ci95"]
    return scores


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate_split` and :func:`evaluate_labelled` measure.

    ``single``: the scores of each run alone (plus its mean solver ``iterations`` per input,
    None for a network without a solver); ``spread``: their mean and sample standard deviation
    (iterations: over the runs with a solver); ``ensembles``: the scores of the ensemble of the
    first k runs, k = 2 … N (iterations: summed over its members with a solver); ``report``:
    accuracy, per-class scores and the confusion matrix of all runs together (of the one run
    when there is one); ``skipped``: labelled rows not scored and why; ``domain``: accuracy
    inside / outside the training domain; ``rows``: per-input truth and prediction (labelled
    CSVs only); ``reliability``: accuracy and mean confidence per confidence bin of each run
    (and of all runs together); ``unconverged``: per run, the inputs whose fixed-point solve
    stopped short of its tolerance (at ``max_iter``; 0 for a network without a solver).
    """

    task: str
    source: str
    runs: list[str]
    classes: list[str]
    n: int
    single: list[dict[str, Any]]
    spread: dict[str, dict[str, float | None]]
    ensembles: dict[int, dict[str, Any]]
    report: dict[str, Any]
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    domain: dict[str, dict[str, float]] | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reliability: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    unconverged: list[int] = dataclasses.field(default_factory=list)

    def convergence_note(self) -> str | None:
        """How many inputs' solves stopped short of the tolerance, in one line (None where
        every solve converged): their scores are those of unconverged fixed points."""
        if not any(self.unconverged):
            return None
        if len(self.runs) == 1:
            where = f"{self.unconverged[0]} of {self.n} inputs"
        else:
            where = f"{max(self.unconverged)} of {self.n} inputs (" + ", ".join(
                f"{run}: {count}" for run, count in zip(self.runs, self.unconverged,
                                                         strict=True) if count) + ")"
        return (f"the fixed-point solve of {where} stopped short of its tolerance: their "
                "scores are those of unconverged solves")

    def write_plots(self, directory: str | Path) -> list[Path]:
        """``confusion.png`` (all runs together) and ``reliability.png`` into ``directory``."""
        from andersonn.training.plots import plot_confusion, plot_reliability

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        which = "all runs" if len(self.runs) > 1 else "the run"
        paths = [folder / "confusion.png", folder / "reliability.png"]
        plot_confusion(self.report["confusion_matrix"], self.classes, paths[0],
                       title=f"{self.task}: {which} on {self.source}"[:80])
        plot_reliability(self.reliability, paths[1], title=f"{self.task}: reliability")
        return paths

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the ``--out FILE.json`` record)."""
        record = dataclasses.asdict(self)
        record["ensembles"] = {str(k): v for k, v in self.ensembles.items()}
        return record

    def to_markdown(self) -> str:
        """A markdown table: each run, the mean ± sd, the ensembles; then skips and domain."""
        keys = [k for k in HEADLINE if k in self.single[0]] + ["iterations"]
        head = ["run", *keys]
        lines = [f"{self.task}: {self.n} inputs of {self.source}", "",
                 "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        def fmt(key: str, value: float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.1f}" if key == "iterations" else f"{value:.3f}"

        for run, s in zip(self.runs, self.single, strict=True):
            lines.append(f"| {run} | " + " | ".join(fmt(k, s[k]) for k in keys) + " |")
        def spread(key: str) -> str:
            given = sum(s[key] is not None for s in self.single)  # explicit runs: no iterations
            mean, std = self.spread[key]["mean"], self.spread[key]["std"]
            if mean is None:
                return "-"
            if given < len(self.single):
                return f"{fmt(key, mean)} ± {fmt(key, std)} ({given} with a solver)" \
                    if given > 1 else f"{fmt(key, mean)} (1 with a solver)"
            return f"{fmt(key, mean)} ± {fmt(key, std)}"

        if len(self.single) > 1:
            lines.append(f"| mean ± sd of {len(self.single)} | "
                         + " | ".join(spread(k) for k in keys) + " |")
        for k, s in self.ensembles.items():
            lines.append(f"| ensemble of the first {k} | "
                         + " | ".join(fmt(key, s[key]) for key in keys) + " |")
        intervals = [(run, s.get("accuracy_ci95")) for run, s in zip(self.runs, self.single,
                                                                     strict=True)]
        intervals += [(f"ensemble of {k}", s.get("accuracy_ci95"))
                      for k, s in self.ensembles.items()]
        shown = [f"{name} {lo:.3f}–{hi:.3f}" for name, (lo, hi) in
                 ((n, ci) for n, ci in intervals if ci)]
        if shown:
            lines += ["", f"accuracy, 95 % interval (Wilson, {self.n} inputs): "
                      + ", ".join(shown)]
        if self.domain:
            parts = [f"{where} {d['n']} (accuracy {d['accuracy']:.3f})"
                     for where, d in self.domain.items() if d["n"]]
            lines += ["", "training domain: " + ", ".join(parts)]
        if self.skipped:
            lines += ["", f"skipped {len(self.skipped)}:"]
            lines += [f"- {s['where']}: {s['reason']}" for s in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"- … and {len(self.skipped) - 20} more (see the JSON record)")
        return "\n".join(lines)


def _as_ensemble(runs: Sequence[str | Path] | Ensemble, device: str, solver: str | None,
                 solver_options: dict[str, Any] | None) -> tuple[Ensemble, list[str]]:
    if isinstance(runs, Ensemble):
        names = [str(getattr(m, "run_dir_", f"member-{i}")) for i, m in enumerate(runs.members)]
        return runs, names
    if isinstance(runs, (str, Path)):
        runs = [runs]
    runs = list(runs)  # a run given twice: refused by from_runs
    return Ensemble.from_runs(runs, device=device, solver=solver,
                              solver_options=solver_options), [str(r) for r in runs]


def _reliability(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Mean confidence, accuracy and count of each non-empty confidence bin."""
    from andersonn.training.calibration import calibration_bins

    sums = calibration_bins(torch.as_tensor(probs), torch.as_tensor(labels)).numpy()
    filled = sums[0] > 0
    return {"confidence": (sums[1][filled] / sums[0][filled]).tolist(),
            "accuracy": (sums[2][filled] / sums[0][filled]).tolist(),
            "count": sums[0][filled].astype(int).tolist()}


def _evaluation(ens: Ensemble, names: list[str], source: str, probs: np.ndarray,
                iters: np.ndarray, short: np.ndarray, labels: np.ndarray,
                **extra: Any) -> Evaluation:
    from andersonn.training.metrics import classification_report, confusion_matrix

    classes = list(ens.classes_)
    single = [{**score_probabilities(p, labels, classes), "iterations": _mean_or_none(it)}
              for p, it in zip(probs, iters, strict=True)]
    spread = {key: _spread([s[key] for s in single])
              for key in single[0] if key != "accuracy_ci95"}
    ensembles = {k: {**score_probabilities(probs[:k].mean(axis=0), labels, classes),
                     "iterations": _mean_or_none(solver_evaluations(iters[:k]))}
                 for k in range(2, len(probs) + 1)}
    report = classification_report(
        confusion_matrix(labels, probs.mean(axis=0).argmax(axis=1), len(classes)), classes)
    reliability = {name: _reliability(p, labels) for name, p in zip(names, probs, strict=True)}
    if len(probs) > 1:
        reliability[f"ensemble of {len(probs)}"] = _reliability(probs.mean(axis=0), labels)
    return Evaluation(task=str(ens.config_.get("task")), source=source, runs=names,
                      classes=classes, n=len(labels), single=single, spread=spread,
                      ensembles=ensembles, report=report, reliability=reliability,
                      unconverged=[int((s > 1.0).sum()) for s in short], **extra)


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean solver evaluations per input; None for a model without a solver (NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return None if values.size == 0 or np.isnan(values).any() else float(values.mean())


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation of the runs' scores (0 for one run); the runs without
    a value (iterations of an explicit network) left out, None when none has one."""
    given = [v for v in values if v is not None]
    if not given:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(given)),
            "std": float(np.std(given, ddof=1)) if len(given) > 1 else 0.0}


def evaluate_split(runs: Sequence[str | Path] | Ensemble, split: str = "test",
                   dataset: Any = None, device: str = "cpu", solver: str | None = None,
                   solver_options: dict[str, Any] | None = None) -> Evaluation:
    """Score runs (directories, or a loaded :class:`Ensemble`) on ``split`` of the dataset
    build they were trained on (``dataset``: that build, already opened, else the cache's).

    The runs must share the build (its key; for older runs task and ``--limit``), else their
    splits would differ.
    """
    from andersonn.data.splits import SPLIT_NAMES
    from andersonn.training.inputs import run_label_rule, split_tensors
    from andersonn.training.runs import run_dataset

    if split not in SPLIT_NAMES:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    ens, names = _as_ensemble(runs, device, solver, solver_options)
    builds: dict[str, tuple[str, list[str]]] = {}  # each build: its label and runs
    for name, member in zip(names, ens.members, strict=True):
        identity = json.dumps(_build_identity(member.config_), sort_keys=True, default=str)
        builds.setdefault(identity, (_build_label(member.config_), []))[1].append(name)
    if len(builds) > 1:
        which = "; ".join(f"{', '.join(runs)}: {label}" for label, runs in builds.values())
        raise AndersonnError("the runs were trained on different dataset builds (source or "
                             "--limit) or cross-validation folds, so their splits differ "
                             f"({which}); evaluate them apart")
    ds = dataset if dataset is not None else run_dataset(ens.config_)
    # the build's rule as this run records it (a shared labels-file build names another file)
    rules = (run_label_rule(getattr(ds, "meta", {}) or {}, (ens.config_.get("train") or {})
                            .get("labels")), ens.config_.get("label_rule"))
    if None not in rules and rules[0] != rules[1]:
        raise AndersonnError(f"the dataset labels by {rules[0]!r} but the runs were trained on "
                             f"{rules[1]!r}")
    images, labels = split_tensors(ds, split)
    if len(labels) == 0:
        raise AndersonnError(f"the {split} split of this dataset build is empty")
    # each member's outputs, members first (the ensemble's own member inference)
    probs, iters, short = ens.member_outputs(images.numpy())
    return _evaluation(ens, names, f"the {split} split", probs, iters, short, labels.numpy())


def _build_identity(config: dict[str, Any]) -> list[Any]:
    """What makes two runs' splits equal: the build's key where the run records it (so a run
    given ``--limit 8000`` and one that took that same build as the latest agree), else the
    dataset record and ``--limit`` (runs from before builds were keyed); and the CV fold."""
    dataset = config.get("dataset") or {}
    train = config.get("train", {})
    fold = [train.get("folds"), train.get("fold")]
    if dataset.get("cache_key"):
        return ["key", dataset["cache_key"], *fold]
    return [dataset, train.get("limit"), *fold]


def _build_label(config: dict[str, Any]) -> str:
    """A run's build as a refusal names it: ``build 3f9c12ab00d1e2f3`` (runs from before
    builds were keyed: ``--limit N`` or ``no --limit``, and its size) and its
    cross-validation fold."""
    dataset = config.get("dataset") or {}
    train = config.get("train") or {}
    if dataset.get("cache_key"):
        label = f"build {dataset['cache_key']}"
    else:
        limit = train.get("limit")
        label = f"--limit {limit}" if limit else "no --limit"
        label += f" ({dataset['n']} structures)" if dataset.get("n") else ""
    if train.get("folds"):
        label += f", fold {train.get('fold')} of {train['folds']}"
    return label


def read_labelled(path: str | Path, task: str, classes: Sequence[str],
                  thresholds: dict[str, float] | Sequence[float] | None = None, *,
                  input_column: str | None = None, label_column: str | None = None
                  ) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """Read labelled structures: a CSV (``.tsv``: tab-separated) with a header row, or an SDF
    (also ``.sdf.gz``) whose records carry the label as a data field
    (:func:`andersonn.data.labelled.read_label_table`).

    CSV columns (case-insensitive): the input, one of ``input``, ``smiles``, ``structure``,
    ``path``, ``file`` (a relative path is taken from the CSV's folder when the file is there);
    and either the class (``class`` or ``label``: a class name or index) or the property value
    (``value``, or ``dipole`` / ``lcd`` / ``gap`` by task), turned into a class by the task's
    label rule under ``thresholds`` (for a run trained on a labels file, task ``custom``: its
    bins). In an SDF each record is the input and its data fields (``> <dipole>``) are the
    columns. ``input_column`` / ``label_column`` name other columns: a named label column
    holds values where most of its labels are numbers and the task turns values into classes
    (a built-in task, or a labels-file run trained with bins), else class names. Rows that cannot
    be used (an empty input or label, a value that is not a number, a class that is none of
    ``classes``) are skipped. Returns the inputs, their class indices, and the rows skipped
    (``where``, ``reason``). A file that cannot be used at all is an :class:`InputError`.
    """
    from andersonn.data.labelled import CUSTOM_TASK, label_rows, read_label_table
    from andersonn.data.labelled import VALUE_COLUMNS as ANY_VALUE
    from andersonn.data.tasks import get_task

    custom = task == CUSTOM_TASK
    table = read_label_table(path, ANY_VALUE if custom else VALUE_COLUMNS[task],
                             input_column=input_column, label_column=label_column,
                             values=bool(thresholds) or not custom)
    if custom:
        if table.kind == "value" and not thresholds:
            raise InputError(f"{path}: its labels are values ({table.column!r}), but this run "
                             "was trained on class names; give a class column")
        bins = list(thresholds) if table.kind == "value" else None  # type: ignore[arg-type]
        rows = label_rows(table, classes, bins)
    else:
        task_def = get_task(task)
        rule = task_def.thresholds(thresholds)  # type: ignore[arg-type]
        rows = label_rows(
            table, classes, to_class=functools.partial(task_def.label, thresholds=rule))
    inputs, labels, _, _, skipped = rows
    _warn_conflicting_labels(table, rows.kept, inputs, labels, classes)
    return inputs, labels, skipped


def _warn_conflicting_labels(table: Any, kept: list[int], inputs: list[Any], labels: list[int],
                             classes: Sequence[str]) -> None:
    """Warn, one line per input (the first five), where the same input (a SMILES or path)
    is given on several rows with different classes: each row is scored as given.
    ``kept``: the table row of each input."""
    given: dict[str, list[tuple[str, int]]] = {}
    for k, item, label in zip(kept, inputs, labels, strict=True):
        where = table.rows[k][0]
        if isinstance(item, str):
            given.setdefault(item.strip(), []).append((where, label))
    conflicts = [(item, seen) for item, seen in given.items()
                 if len({label for _, label in seen}) > 1]
    prefix = f"{table.path.name} "
    for item, seen in conflicts[:5]:
        shown = ", ".join(f"{where.removeprefix(prefix)} ({classes[label]})"
                          for where, label in seen[:6]) + (", …" if len(seen) > 6 else "")
        warn_user(f"{table.path.name}: {item} is given with conflicting labels: {shown}; each row "
              "is scored as given", UserWarning)
    if len(conflicts) > 5:
        warn_user(f"{table.path.name}: {len(conflicts) - 5} more input(s) given with conflicting "
              "labels", UserWarning)


def evaluate_labelled(runs: Sequence[str | Path] | Ensemble, labels_file: str | Path,
                      device: str = "cpu", solver: str | None = None,
                      solver_options: dict[str, Any] | None = None, workers: int | None = 1,
                      progress: bool = False, conformers: int = 1,
                      input_column: str | None = None,
                      label_column: str | None = None) -> Evaluation:
    """Score runs on the structures and labels of a CSV or SDF (see :func:`read_labelled`).

    The run's thresholds turn values into classes. Each input is read once, with the first
    run's domain checks. Unreadable inputs are skipped and reported. ``domain`` splits the
    accuracy of all runs together between inputs inside and outside the training domain.
    ``conformers`` > 1 averages each SMILES input over that many conformers (as ``predict``).
    ``input_column`` / ``label_column``: default, those the run was trained with. The inputs
    are read, encoded and inferred :data:`andersonn.predict.PREDICT_CHUNK` at a time.
    """
    from andersonn.predict import _progress, without_name

    ens, names = _as_ensemble(runs, device, solver, solver_options)
    trained = ens.config_.get("train", {})
    inputs, truth, skipped = read_labelled(
        labels_file, str(ens.config_.get("task")), ens.classes_, ens.config_.get("thresholds"),
        input_column=input_column or trained.get("input_column"),
        label_column=label_column or trained.get("label_column"))
    if workers is None:
        workers = (os.cpu_count() or 1) if len(inputs) >= 64 else 1
    with _progress(len(inputs), progress and len(inputs) >= 64) as bar:
        done = ens._infer_in_chunks(inputs, ens._member_infer, max(1, workers), bar,
                                    conformers=conformers)
    ok, errors, notes = done.ok, done.errors, done.notes
    input_names = [str(getattr(item, "name", item)) for item in inputs]  # records: their name
    skipped += [{"where": input_names[i], "reason": without_name(errors[i], input_names[i])}
                for i in range(len(inputs))
                if errors[i]]
    if not ok:
        raise InputError(f"{labels_file}: none of its {len(inputs)} inputs could be read "
                         f"(first: {skipped[-1]['where']}: {skipped[-1]['reason']})")
    labels = np.asarray([truth[i] for i in ok], dtype=np.int64)
    probs, iters, short = ens._per_member(*done.outputs, done.counts)
    mean = probs.mean(axis=0)
    predicted = mean.argmax(axis=1)
    classes = list(ens.classes_)
    rows = [{"input": input_names[i], "class": classes[labels[r]],
             "predicted": classes[predicted[r]], "correct": bool(predicted[r] == labels[r]),
             "probabilities": {c: float(v) for c, v in zip(classes, mean[r], strict=True)},
             "warnings": notes[i]} for r, i in enumerate(ok)]
    outside = np.array([any(isinstance(n, DomainNote) for n in notes[i]) for i in ok])
    correct = predicted == labels
    domain = {where: {"n": int(mask.sum()),
                      "accuracy": float(correct[mask].mean()) if mask.any() else None}
              for where, mask in (("inside", ~outside), ("outside", outside))}
    return _evaluation(ens, names, str(labels_file), probs, iters, short, labels,
                       skipped=skipped, domain=domain, rows=rows)
