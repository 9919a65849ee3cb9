"""k-fold cross-validation: one run per fold, scored on the pooled out-of-fold predictions.

On a small dataset one 10 % test split says little: a few hundred structures give a 95 %
interval several points wide, and another split can move the accuracy by as much.
:func:`cross_validate` trains folds 1 … k (:mod:`andersonn.data.folds`), each an ordinary run in
``OUT/fold-i`` whose test split is fold i, so every structure is predicted once by a model that
never saw it. :func:`summarize` scores those out-of-fold predictions on the whole dataset (the
interval then covers all N structures) and each fold alone (mean ± sd over folds), and
:meth:`CrossValidation.write` puts ``cv.json``, ``cv.md``, ``predictions.csv`` (every
structure's fold, class, prediction and probabilities) and ``plots/confusion.png`` into ``OUT``.

It runs in one process or under ``torchrun`` (each fold is a distributed training; rank 0
summarises). ``resume`` skips finished folds and continues an interrupted one from its last
epoch; ``only`` trains a single fold, so the folds can be spread over machines that share
``OUT``. ``andersonn train TASK|FILE --folds K`` is the command-line front.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.errors import AndersonnError, ConfigError, ResumeConflict
from andersonn.training.config import TrainConfig

__all__ = ["FOLD_DIR", "CrossValidation", "compare", "cross_validate", "finished_folds",
           "fold_dirs", "is_cross_validation", "mcnemar_p_value", "summarize"]

FOLD_DIR = "fold-{}"
"""Name of fold i's run directory inside a cross-validation's output directory."""

SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "metal_vs_nonmetal_balanced_accuracy",
          "ece", "nll")

# settings that may differ between the folds' runs without changing what they measure
_FREE_KEYS = ("fold", "threads", "workers", "device", "plots", "evaluate_test")


@dataclasses.dataclass
class CrossValidation:
    """The scores of a finished k-fold cross-validation.

    ``pooled``: the out-of-fold predictions of all folds together scored on the whole dataset
    (accuracy with its 95 % interval, balanced accuracy, macro-F1, ECE, NLL, per-class scores,
    confusion matrix); ``per_fold``: each fold's test scores; ``spread``: their mean and sample
    standard deviation; ``predictions``: per structure its id, fold, true and predicted class,
    probabilities and solver iterations (``iterations``: None throughout for an explicit
    network, which solves no fixed point).
    """

    directory: str
    task: str
    source: str
    folds: int
    classes: list[str]
    n: int
    runs: list[str]
    pooled: dict[str, Any]
    per_fold: list[dict[str, Any]]
    spread: dict[str, dict[str, float | None]]
    settings: dict[str, Any]
    predictions: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``cv.json``), without the per-structure predictions."""
        record = dataclasses.asdict(self)
        record.pop("predictions")
        return record

    def to_markdown(self) -> str:
        """A table of the folds, their mean ± sd and the pooled scores."""
        keys = [k for k in SCORES if k in self.pooled]
        head = ["fold", "test structures", *keys, "iterations"]
        lines = [f"{self.task}: {self.folds}-fold cross-validation of {self.source} "
                 f"({self.n} structures)", "",
                 "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for s in self.per_fold:
            lines.append(f"| {s['fold']} | {s['n']} | "
                         + " | ".join(f"{s[k]:.3f}" for k in keys)
                         + f" | {_iterations_text(s['iterations'])} |")
        lines.append(f"| mean ± sd | {self.n / self.folds:.0f} | " + " | ".join(
            f"{self.spread[k]['mean']:.3f} ± {self.spread[k]['std']:.3f}" for k in keys)
            + f" | {_iterations_text(self.spread['iterations']['mean'])} |")
        lines.append(f"| pooled | {self.n} | "
                     + " | ".join(f"**{self.pooled[k]:.3f}**" for k in keys)
                     + f" | {_iterations_text(self.pooled['iterations'])} |")
        lo, hi = self.pooled["accuracy_ci95"]
        lines += ["", f"pooled accuracy {self.pooled['accuracy']:.3f}, 95 % interval (Wilson, "
                  f"{self.n} structures) {lo:.3f}–{hi:.3f}", "", "confusion matrix (pooled; "
                  "rows true, columns predicted): " + ", ".join(self.classes)]
        lines += ["    " + " ".join(f"{v:6d}" for v in row)
                  for row in self.pooled["confusion_matrix"]]
        return "\n".join(lines)

    def summary_line(self) -> str:
        """One line: pooled accuracy with its interval, per-fold mean ± sd, balanced accuracy."""
        lo, hi = self.pooled["accuracy_ci95"]
        acc = self.spread["accuracy"]
        return (f"{self.folds}-fold cross-validation on {self.n} structures: pooled accuracy "
                f"{self.pooled['accuracy']:.4f} (95 % interval {lo:.3f}–{hi:.3f}), per fold "
                f"{acc['mean']:.4f} ± {acc['std']:.4f}, balanced "
                f"{self.pooled['balanced_accuracy']:.4f}, macro-F1 "
                f"{self.pooled['macro_f1']:.4f}")

    def write(self, directory: str | Path) -> list[Path]:
        """Write ``cv.json``, ``cv.md``, ``predictions.csv`` and ``plots/confusion.png``
        (atomically; a failed plot is reported, not fatal)."""
        from andersonn.fileio import atomic_write_json, atomic_write_text

        folder = Path(directory)
        paths = [folder / "cv.json", folder / "cv.md", folder / "predictions.csv"]
        atomic_write_json(paths[0], self.to_dict())
        atomic_write_text(paths[1], self.to_markdown() + "\n")
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["index", "id", "fold", "class", "predicted",
                         *[f"p_{c}" for c in self.classes], "iterations"])
        for row in self.predictions:
            writer.writerow([row["index"], row["id"], row["fold"], row["class"], row["predicted"],
                             *[f"{p:.6f}" for p in row["probabilities"]],
                             "" if row["iterations"] is None else f"{row['iterations']:.1f}"])
        atomic_write_text(paths[2], buf.getvalue())
        try:
            paths.append(self.plot_confusion(folder / "plots" / "confusion.png"))
        except Exception as exc:  # a by-product; never lose the scores over it
            print(f"andersonn: warning: plotting failed: {exc}", file=sys.stderr)
        return paths

    def plot_confusion(self, path: str | Path) -> Path:
        """The pooled out-of-fold confusion matrix as a PNG at ``path``."""
        from andersonn.training.plots import plot_confusion

        plot_confusion(self.pooled["confusion_matrix"], self.classes, path,
                       title=f"{self.directory}: {self.folds}-fold, out of fold "
                       f"(all {self.n})"[-80:])
        return Path(path)

    def plot_reliability(self, path: str | Path) -> Path:
        """The reliability diagram of the pooled out-of-fold probabilities as a PNG at
        ``path``."""
        from andersonn.evaluate import _reliability
        from andersonn.training.plots import plot_reliability

        rows = self.predictions
        probs = np.array([row["probabilities"] for row in rows], dtype=np.float64)
        labels = np.array([self.classes.index(row["class"]) for row in rows], dtype=np.int64)
        plot_reliability({f"{self.folds}-fold, out of fold": _reliability(probs, labels)}, path,
                         title=f"{self.task}: reliability (all {self.n})")
        return Path(path)


def _iterations_text(value: float | None) -> str:
    """Mean solver iterations in a table: ``n/a`` for a network without a solver."""
    return "n/a" if value is None else f"{value:.1f}"


def fold_dirs(out_dir: str | Path, folds: int) -> list[Path]:
    """The run directories of folds 1 … ``folds`` inside ``out_dir``."""
    return [Path(out_dir) / FOLD_DIR.format(i) for i in range(1, folds + 1)]


def _finished(run_dir: Path, epochs: int | None = None, *, calibrated: bool = True) -> bool:
    """Whether the run in ``run_dir`` finished: its final stage (best weights, calibration,
    test metrics, plots) completed for the epochs its ``config.json`` plans, and, given
    ``epochs``, for as many (a resume with more epochs continues it, as ``train --resume``
    does). A run killed during its final stage, or while a resume extends it, has not.
    ``calibrated=False``: a run without its calibration (trained before it existed) counts."""
    from andersonn.training.checkpoint import checkpoint_epoch

    if not (run_dir / "model.safetensors").is_file():
        return False
    try:
        conf = json.loads((run_dir / "config.json").read_text())
        planned = int(conf["train"]["epochs"])
        tested = bool(conf["train"].get("evaluate_test", True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if calibrated and "calibration" not in conf:
        return False
    if "finished" in conf:  # absent only in runs trained before the record
        done = conf["finished"]
        if not isinstance(done, dict) or done.get("epochs") != planned \
                or done.get("epoch") != checkpoint_epoch(run_dir):
            return False
        tested = bool(done.get("test"))
    if tested and not (run_dir / "test_metrics.json").is_file():
        return False
    return epochs is None or planned == int(epochs)


def fold_runs(out_dir: str | Path) -> list[Path]:
    """The fold runs (with a config) of the cross-validation ``out_dir``, in fold order."""
    return sorted((conf.parent for conf in Path(out_dir).glob("fold-*/config.json")
                   if re.fullmatch(r"fold-[1-9][0-9]*", conf.parent.name)),  # no backups
                  key=lambda d: (len(d.name), d.name))


def finished_folds(out_dir: str | Path) -> list[Path]:
    """The fold runs in the cross-validation ``out_dir`` whose training finished (as
    :func:`summarize` and a resume judge them: their final stage is recorded for the epochs
    they plan; a calibration is not required, ``calibrate`` adds it), in fold order. A fold
    interrupted in a resume that extends it still holds the weights of its earlier end, but
    is not finished."""
    return [run for run in fold_runs(out_dir) if _finished(run, calibrated=False)]


def cross_validate(cfg: TrainConfig, out_dir: str | Path, *, folds: int | None = None,
                   only: int | None = None, resume: bool = False, progress: bool = True
                   ) -> CrossValidation | None:
    """Train the folds of a ``folds``-fold cross-validation of ``cfg`` (default ``cfg.folds``)
    into ``out_dir/fold-i`` and, once every fold is finished, summarise and write the scores.

    ``only``: train just that fold (1-based). ``resume``: skip finished folds and continue
    an interrupted one; without it a fold directory that already holds a run is refused.
    Returns the summary (on rank 0, when all folds are done), else None.
    """
    from andersonn.training import train
    from andersonn.training.checkpoint import POINTER
    from andersonn.training.distributed import barrier, cleanup, setup
    from andersonn.training.inputs import load_task_dataset

    k = int(folds if folds is not None else (cfg.folds or 0))
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds (got {k})")
    if only is not None and not 1 <= int(only) <= k:
        raise ConfigError(f"fold must be between 1 and {k} (got {only})")
    todo = [int(only)] if only is not None else list(range(1, k + 1))
    out = Path(out_dir)
    if (out / "config.json").is_file() or (out / POINTER).is_file():
        raise ConfigError(f"{out} holds a single run, not a cross-validation; give another "
                          "folder for the folds")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; give a folder for the cross-validation")
    device = cfg.torch_device()
    info = setup(device)  # one process group for all folds (train() then reuses it)
    try:
        dataset = None  # loaded (built on rank 0 if need be) once, for the first fold to train
        for i, run_dir in zip(todo, [fold_dirs(out_dir, k)[i - 1] for i in todo], strict=True):
            fold_cfg = TrainConfig.from_dict({**cfg.to_dict(), "folds": k, "fold": i})
            if resume and (run_dir / "config.json").is_file():
                _check_fold(run_dir, fold_cfg)
            if resume and _finished(run_dir, cfg.epochs):
                if info.is_main and progress:
                    print(f"andersonn: fold {i}/{k} already finished ({run_dir})",
                          file=sys.stderr)
                continue
            if info.is_main and progress:
                print(f"andersonn: fold {i}/{k} → {run_dir}", file=sys.stderr)
            if dataset is None:  # resumed: the build the folds were trained on, if cached
                key = _recorded_build(out) if resume else None
                dataset = load_task_dataset(fold_cfg, info, progress, key)
            before = _weights_stamp(run_dir)
            try:
                result = train(fold_cfg, run_dir, resume=resume, dataset=dataset,
                               progress=progress)
            finally:  # a fold's model replaced (or going): the summary no longer describes it
                if info.is_main and _weights_stamp(run_dir) != before:
                    _remove_summary(out)
            tm = result.test_metrics
            if info.is_main and progress and tm is not None:
                print(f"andersonn: fold {i}/{k}: test accuracy {tm['accuracy']:.4f} on "
                      f"{tm['n']} structures", file=sys.stderr)
        barrier(info)
        if not info.is_main:
            return None
        # finished for this call's epochs: the folds an --epochs extension has not reached yet
        # are still to train (not folds of another cross-validation)
        missing = [d.name for d in fold_dirs(out_dir, k) if not _finished(d, cfg.epochs)]
        if missing:  # the outcome of this call, so printed even without progress
            print(f"andersonn: {k - len(missing)} of {k} folds finished; the summary is "
                  f"written when {', '.join(missing)} are (the same command with --fold I "
                  "for each, or with --resume for all)", file=sys.stderr)
            return None
        summary = summarize(out_dir, device=str(device) if device.type == "cuda" else "cpu")
        summary.write(out_dir)
        return summary
    finally:
        cleanup(info)


_SUMMARY_FILES = ("cv.json", "cv.md", "predictions.csv", "plots/confusion.png")
"""The files :meth:`CrossValidation.write` puts into a cross-validation's folder."""


def _weights_stamp(run_dir: Path) -> tuple[int, int] | None:
    """Which ``model.safetensors`` a run holds (inode, modification time; None: none): an
    atomic rewrite gives another."""
    try:
        stat = (run_dir / "model.safetensors").stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _remove_summary(out: Path) -> None:
    """Remove the summary of ``out`` (written for fold models that are no longer there); the
    call that finishes the last fold writes it again."""
    for name in _SUMMARY_FILES:
        (out / name).unlink(missing_ok=True)


def _recorded_build(out: Path) -> str | None:
    """The key of the build the folds in ``out`` were trained on (None: none recorded)."""
    from andersonn.training.inputs import recorded_build_key

    keys = (recorded_build_key(run) for run in fold_runs(out))
    return next((key for key in keys if key), None)


def _check_fold(run_dir: Path, fold_cfg: TrainConfig) -> None:
    """Refuse to go on with a fold run trained with settings that ``train --resume`` would
    refuse (another fold count, model, seed, ...): its scores would not belong to this
    cross-validation."""
    from andersonn.training.trainer import conflict_message, conflicting_values

    try:
        old = json.loads((run_dir / "config.json").read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        raise AndersonnError(f"{run_dir / 'config.json'}: damaged run config") from None
    diff = conflicting_values(old, fold_cfg)
    if diff:
        raise ResumeConflict(conflict_message(run_dir, diff))


def _settings(run_config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (run_config.get("train") or {}).items() if k not in _FREE_KEYS}


def _compared(run_config: dict[str, Any]) -> dict[str, Any]:
    """The settings folds must share: :func:`_settings` less those that change nothing for the
    fold's model (an explicit network's depth for a DEQ, ...)."""
    from andersonn.training.trainer import inapplicable_settings

    settings = _settings(run_config)
    ignored = inapplicable_settings(str(settings.get("model", "deq")))
    return {k: v for k, v in settings.items() if k not in ignored}


def _check_same(runs: list[Path]) -> None:
    """Refuse fold runs (those with a readable ``config.json``) trained with different settings
    or data than the first, or under another fold number."""
    configs: list[tuple[int, Path, dict[str, Any]]] = []
    for i, run_dir in enumerate(runs, start=1):
        try:
            conf = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            continue  # missing: reported as not finished
        if isinstance(conf, dict):
            configs.append((i, run_dir, conf))
    if not configs:
        return
    _, first, reference = configs[0]
    for i, run_dir, conf in configs:
        mine, theirs = _compared(conf), _compared(reference)
        differ = sorted(key for key in set(mine) | set(theirs)
                        if mine.get(key) != theirs.get(key))
        if conf.get("dataset") != reference.get("dataset"):
            differ.append("dataset")
        if differ or (conf.get("train") or {}).get("fold") != i:
            # epochs alone: a `--resume --epochs N` extension that stopped part-way
            hint = ("; an --epochs extension that did not reach every fold? resume it with "
                    "the same --epochs" if differ == ["epochs"] else "")
            raise AndersonnError(f"{run_dir}: not fold {i} of the same cross-validation as "
                                 f"{first.name} (differs in "
                                 f"{', '.join(differ) or 'its fold number'}){hint}")


def planned_folds(out_dir: str | Path) -> list[Path]:
    """The run directories of folds 1 … K of the cross-validation ``out_dir``, K as its folds
    record it (those not started yet included)."""
    out = Path(out_dir)
    try:
        any_fold = fold_runs(out)[0] / "config.json"
        k = int(json.loads(any_fold.read_text())["train"]["folds"])
    except (IndexError, OSError, ValueError, KeyError, TypeError):
        raise AndersonnError(f"{out}: not a cross-validation (no fold-I run directory with "
                             "its fold count)") from None
    return fold_dirs(out, k)


def check_folds(out_dir: str | Path) -> list[Path]:
    """:func:`planned_folds`, after refusing folds trained with different settings or data
    (finished or not: a fold of another cross-validation, or one an ``--epochs`` extension
    has not reached yet)."""
    runs = planned_folds(out_dir)
    _check_same(runs)
    return runs


def summarize(out_dir: str | Path, device: str = "cpu") -> CrossValidation:
    """Score the finished folds in ``out_dir`` on their out-of-fold predictions.

    Refuses a missing or unfinished fold, and folds trained with different settings or on
    different data (their out-of-fold predictions would not describe one model)."""
    from andersonn.ensemble import Ensemble
    from andersonn.evaluate import _mean_or_none, _spread, score_probabilities
    from andersonn.training.inputs import fold_of
    from andersonn.training.metrics import classification_report, confusion_matrix
    from andersonn.training.runs import run_build

    out = Path(out_dir)
    runs = check_folds(out)
    missing = [d.name for d in runs if not _finished(d)]
    if missing:
        raise AndersonnError(f"{out}: {', '.join(missing)} not finished; train them first")
    members = [Ensemble.from_runs([d], device=device) for d in runs]
    reference = members[0].config_
    classes = list(members[0].classes_)
    base = run_build(reference)  # opened once: every fold splits the same build (checked above)
    labels = np.asarray(base.labels, dtype=np.int64)
    probs = np.full((len(labels), len(classes)), np.nan)
    iters = np.zeros(len(labels))
    tested_in = np.zeros(len(labels), dtype=np.int64)
    per_fold = []
    for i, ens in enumerate(members, start=1):
        ds = fold_of(base, ens.config_["train"])
        idx = ds.split_indices("test")
        p, it, _ = ens.member_outputs(np.asarray(ds.images[idx], dtype=np.float32))
        probs[idx], iters[idx], tested_in[idx] = p[0], it[0], i
        # an explicit network's iterations are NaN: None (null), as evaluate reports them
        per_fold.append({"fold": i, "n": len(idx), "iterations": _mean_or_none(it[0]),
                         **score_probabilities(p[0], labels[idx], classes)})
    if np.isnan(probs).any():
        raise AndersonnError(f"{out}: the folds' test splits do not cover every structure "
                             "(the dataset changed after training?)")
    pooled = {**score_probabilities(probs, labels, classes),
              "iterations": _mean_or_none(iters)}
    report = classification_report(confusion_matrix(labels, probs.argmax(axis=1),
                                                    len(classes)), classes)
    pooled.update(per_class=report["per_class"], confusion_matrix=report["confusion_matrix"])
    keys = [key for key in (*SCORES, "iterations") if key in per_fold[0]]
    spread = {key: _spread([s[key] for s in per_fold]) for key in keys}
    ids = list(getattr(base, "ids", None) or [str(j) for j in range(len(labels))])
    predicted = probs.argmax(axis=1)
    rows = [{"index": j, "id": ids[j], "fold": int(tested_in[j]), "class": classes[labels[j]],
             "predicted": classes[predicted[j]], "probabilities": probs[j].tolist(),
             "iterations": None if np.isnan(iters[j]) else float(iters[j])}
            for j in range(len(labels))]
    train = reference.get("train") or {}
    return CrossValidation(directory=str(out), task=str(reference.get("task")),
                           source=str(train.get("labels") or reference.get("task")),
                           folds=len(runs), classes=classes, n=len(labels),
                           runs=[str(d) for d in runs], pooled=pooled, per_fold=per_fold,
                           spread=spread, settings=_settings(reference), predictions=rows)


def is_cross_validation(path: str | Path) -> bool:
    """Whether ``path`` is the output directory of a cross-validation (not a run)."""
    folder = Path(path)
    return bool(fold_runs(folder)) and not (folder / "config.json").is_file()


def mcnemar_p_value(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value: the probability, were both models equally accurate,
    of a split of the discordant structures (right by one model only) at least this uneven."""
    n, k = only_first + only_second, min(only_first, only_second)
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2 * math.exp(top) * sum(math.exp(v - top) for v in logs))


def compare(first: CrossValidation, second: CrossValidation) -> dict[str, Any]:
    """Paired comparison of two cross-validations of the same structures (e.g. the DEQ and the
    explicit network): the accuracy difference first − second with its 95 % interval for paired
    proportions, the discordant counts and the exact McNemar p-value."""
    rows_a, rows_b = first.predictions, second.predictions
    same = len(rows_a) == len(rows_b) and first.classes == second.classes and all(
        (a["id"], a["class"]) == (b["id"], b["class"]) for a, b in zip(rows_a, rows_b,
                                                                        strict=True))
    if not same:
        raise AndersonnError("the two cross-validations are not of the same structures and "
                             "labels; only those can be compared pair by pair")
    right_a = np.array([r["class"] == r["predicted"] for r in rows_a])
    right_b = np.array([r["class"] == r["predicted"] for r in rows_b])
    n = len(right_a)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    from andersonn.training.metrics import Z95

    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    return {"first": first.directory, "second": second.directory, "n": n,
            "accuracy": [float(right_a.mean()), float(right_b.mean())],
            "difference": diff, "difference_ci95": [diff - Z95 * se, diff + Z95 * se],
            "only_first_right": only_a, "only_second_right": only_b,
            "mcnemar_p": mcnemar_p_value(only_a, only_b)}


def comparison_line(result: dict[str, Any]) -> str:
    """One line on a :func:`compare` result."""
    lo, hi = result["difference_ci95"]
    a, b = result["accuracy"]
    return (f"{result['first']} vs {result['second']} on the same {result['n']} structures: "
            f"accuracy {a:.4f} vs {b:.4f}, difference {100 * result['difference']:+.2f} points "
            f"(95 % interval {100 * lo:+.2f} to {100 * hi:+.2f}); right only by the first "
            f"{result['only_first_right']}, only by the second {result['only_second_right']}; "
            f"McNemar exact p = {result['mcnemar_p']:.3g}")
