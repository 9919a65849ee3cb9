"""Command-line commands of the train stage: ``train``, ``calibrate``, ``predict``,
``evaluate``, ``demo``.

``andersonn train`` also runs unchanged under ``torchrun --nproc_per_node N -m andersonn train``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from andersonn.cli.options import output_dir, output_file, positive_float, positive_int

_TASKS = ("polarity", "mof-pore", "crystal-gap")
_SOLVERS = ("anderson", "forward", "broyden")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add this stage's sub-commands to the top-level and bench parsers."""
    tr = commands.add_parser("train", help="train a DEQ or explicit classifier on a task or "
                             "on your own labelled structures",
                             description="Train a classifier; writes checkpoints, metrics.jsonl, "
                             "test_metrics.json and plots to the run directory. Runs unchanged "
                             "under torchrun (DistributedDataParallel). TASK is a built-in task "
                             f"({', '.join(_TASKS)}) or a labels file of your own: a CSV/TSV "
                             "with an input column (input, smiles, structure, path or file) "
                             "and a class column (class or label) or a value column (value, "
                             "dipole, lcd, gap, ...; with --bins), or an SDF whose records "
                             "carry such a field. It is split 80/10/10 by class and cached.")
    tr.add_argument("task", metavar="TASK|LABELS_FILE")
    tr.add_argument("--model", choices=("deq", "explicit"), default=None, help="(deq)")
    tr.add_argument("--solver", choices=_SOLVERS, default=None, help="DEQ solver (anderson)")
    tr.add_argument("--epochs", type=int, default=None, help="(8)")
    tr.add_argument("--limit", type=int, default=None,
                    help="use the dataset build with this --limit (built first if missing)")
    tr.add_argument("--out", metavar="RUN_DIR", default=None, type=output_dir,
                    help="run directory (runs/TASK-MODEL[-SOLVER])")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in RUN_DIR after its last finished epoch")
    tr.add_argument("--seed", type=int, default=None, help="(0)")
    tr.add_argument("--batch-size", type=int, default=None, help="global batch size (64)")
    tr.add_argument("--lr", type=float, default=None, help="AdamW learning rate (1e-3)")
    tr.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    tr.add_argument("--config", metavar="FILE", default=None,
                    help="JSON file of TrainConfig fields (unknown keys are errors; a relative "
                    "labels path is taken from its folder); flags given win over it, and it "
                    "over a resumed run's settings")
    tr.add_argument("--device", default=None, help="auto, cpu, cuda (auto)")
    tr.add_argument("--tol", type=positive_float, default=None,
                    help="forward solver tolerance (1e-3)")
    tr.add_argument("--max-iter", type=int, default=None, help="solver iteration cap (30)")
    tr.add_argument("--jac-reg", type=float, default=None,
                    help="DEQ: weight of the Jacobian penalty ||df/dz||_F^2/d at z* (0 = off)")
    tr.add_argument("--jac-samples", type=int, default=None,
                    help="random vectors per step for the Jacobian penalty (1)")
    tr.add_argument("--warm-start", action="store_true", default=None,
                    help="DEQ: start each sample's solve at its fixed point of the last epoch")
    tr.add_argument("--hidden", type=int, default=None, help="channels of the cell (48)")
    tr.add_argument("--depth", type=int, default=None, help="explicit: number of cells (6)")
    tr.add_argument("--match-params", action="store_true", default=None,
                    help="explicit: choose the width to match the DEQ's parameter count")
    tr.add_argument("--vector-heads", type=int, default=None,
                    help="learned-charge |Σ q r| readouts where the image has frame "
                    "coordinates, e.g. polarity (0 = off, the default)")
    tr.add_argument("--patience", type=int, default=None, metavar="N",
                    help="stop early once the validation accuracy has not improved for N "
                    "epochs (the best epoch's weights are kept either way)")
    tr.add_argument("--max-time", type=positive_float, default=None, metavar="SECONDS",
                    help="stop after the epoch in which the run's training time (all its "
                    "epochs, resumed or not) reaches SECONDS (the best epoch's weights are kept)")
    # train's counts stay type=int: TrainConfig.validate checks them (one line, exit 2), the
    # same check a --config file's values get
    tr.add_argument("--threads", type=int, default=None, help="torch threads per process")
    tr.add_argument("--workers", type=int, default=None,
                    help="processes featurising the dataset when it has to be built (all cores)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar / epoch lines")
    cv = tr.add_argument_group("k-fold cross-validation")
    cv.add_argument("--folds", type=int, default=None, metavar="K",
                    help="train K runs (RUN_DIR/fold-1 … fold-K), each tested on its own "
                    "stratified K-th of the data, and score the out-of-fold "
                    "predictions of all structures: cv.json, cv.md, predictions.csv")
    cv.add_argument("--fold", type=int, default=None, metavar="I",
                    help="with --folds: train only fold I (spread the folds over machines); "
                    "the summary is written once all K are finished")
    own = tr.add_argument_group("a labels file of your own structures")
    own.add_argument("--image", choices=_TASKS, default=None,
                     help="graph image to encode them with (default: polarity for molecules, "
                     "mof-pore for crystals with C, H and a metal, crystal-gap for other "
                     "crystals)")
    own.add_argument("--bins", metavar="V[,V...]", default=None,
                     help="ascending edges that turn a value column into classes: value < V "
                     "is the first class (e.g. --bins 2.5, or --bins 0.5,3)")
    own.add_argument("--classes", metavar="NAME,NAME[,...]", default=None,
                     help="class names in order (a class column: its names, default sorted; "
                     "--bins: one more name than edges)")
    own.add_argument("--input-column", metavar="NAME", default=None,
                     help="the column holding the inputs, where it is not called input, smiles, "
                     "structure, path or file")
    own.add_argument("--label-column", metavar="NAME", default=None,
                     help="the column holding the labels, where it is not one of the recognised "
                     "names: class names, or with --bins values")
    tr.set_defaults(func=_train)

    ca = commands.add_parser("calibrate", help="fit the probability temperature of a run",
                             description="Temperature scaling on the run's validation split "
                             "(what training does at its end, for runs trained before it); "
                             "prints the expected calibration error before and after and "
                             "stores the temperature in the run's config.json, with the "
                             "dataset's training domain if the run has none.")
    ca.add_argument("run_dir", metavar="RUN_DIR|CV_DIR",
                    help="a run, or a cross-validation (train --folds): each finished fold")
    ca.add_argument("--device", default="cpu")
    ca.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    ca.set_defaults(func=_calibrate)

    pr = commands.add_parser("predict", help="classify structures with a trained run",
                             description="INPUT: SMILES, structure files (xyz, sdf, mol, mol2, "
                             "pdb, cif, POSCAR, vasprun.xml, pw.x input, xsf; also "
                             "gzip-compressed), directories of such files, "
                             "or text files listing them one per line. A file of several "
                             "structures (SDF records, xyz frames, CIF data blocks, ...) gives "
                             "one row each, named FILE#k (title).")
    pr.add_argument("run_dir", metavar="RUN_DIR|CV_DIR",
                    help="a run, or a cross-validation (train --folds): its fold runs "
                    "answer together as an ensemble")
    pr.add_argument("inputs", metavar="INPUT", nargs="+")
    pr.add_argument("--out", metavar="FILE", default=None,
                    type=output_file(".json", ".csv", ".sdf"),
                    help="write .json, .csv or (molecules) .sdf: the inputs with the "
                    "predictions as data fields")
    pr.add_argument("--ensemble", metavar="RUN_DIR", action="append", default=[],
                    help="also this run (repeatable): average the runs' calibrated "
                    "probabilities; iterations are summed over the runs")
    _add_inference_options(pr)
    _add_input_options(pr)
    pr.set_defaults(func=_predict)

    ev = commands.add_parser(
        "evaluate", help="score runs on a split of their dataset or on your labelled structures",
        description="Score one run, or several runs of one task (each alone, mean ± sd, and "
        "the ensembles of the first k), on the test split of the dataset they were trained on "
        "(--split), or on a CSV of your own structures (--labels): a header row, an input "
        "column (input, smiles, structure, path or file) and either a class column (class or "
        "label) or the property value (value; dipole in D, lcd in Å or gap in eV by task), "
        "turned into a class by the run's label rule; or an SDF whose records carry such a "
        "field (> <dipole>). Unusable rows are skipped and reported. Given cross-validation "
        "directories (train --folds), it scores each on its out-of-fold predictions and "
        "compares the first with each other one structure by structure (McNemar's test).")
    ev.add_argument("runs", metavar="RUN_DIR|CV_DIR", nargs="+")
    where = ev.add_mutually_exclusive_group()
    where.add_argument("--split", choices=("test", "val", "train"), default="test",
                       help="split of the run's dataset build (test)")
    where.add_argument("--labels", metavar="FILE.csv|FILE.sdf", default=None,
                       help="score on these labelled structures instead")
    ev.add_argument("--input-column", metavar="NAME", default=None,
                    help="with --labels: the inputs' column, where it has another name "
                    "(default: as the run was trained)")
    ev.add_argument("--label-column", metavar="NAME", default=None,
                    help="with --labels: the labels' column, where it has another name")
    ev.add_argument("--out", metavar="FILE.json", default=None, type=output_file(".json"),
                    help="write the scores (and, with --labels, every input's prediction)")
    ev.add_argument("--plots", metavar="DIR", default=None, type=output_dir,
                    help="write into DIR: confusion.png and reliability.png for runs; "
                    "cv-I-confusion.png and cv-I-reliability.png for the I-th CV_DIR (its "
                    "pooled out-of-fold predictions)")
    _add_inference_options(ev)
    _add_input_options(ev)
    ev.set_defaults(func=_evaluate)

    de = commands.add_parser("demo", help="build polarity data, train DEQ with Anderson and with "
                             "forward iteration, report accuracy and speed-up",
                             description="The README's main job: build the polarity data (a "
                             "QM9 subset), train the DEQ with Anderson and with forward iteration "
                             "under the same settings, print test accuracy and the measured "
                             "speed-up, and write report.md / report.json with plots into DIR.")
    de.add_argument("--out", metavar="DIR", default="demo", type=output_dir, help="(./demo)")
    de.add_argument("--limit", type=positive_int, default=None, help="molecules (8000)")
    de.add_argument("--epochs", type=positive_int, default=None, help="epochs per training (6)")
    de.add_argument("--threads", type=positive_int, default=None,
                    help="torch threads (all cores); 1 on a machine shared with other jobs")
    de.add_argument("--no-progress", action="store_true")
    de.set_defaults(func=_demo)


_CLI_FIELDS = {"model": "model", "solver": "solver", "epochs": "epochs", "limit": "limit",
               "seed": "seed", "batch_size": "batch_size", "lr": "lr", "bf16": "bf16",
               "device": "device", "tol": "tol", "max_iter": "max_iter", "hidden": "hidden",
               "depth": "depth", "match_params": "match_params", "threads": "threads",
               "vector_heads": "vector_heads", "jac_reg": "jac_reg", "jac_samples": "jac_samples",
               "warm_start": "warm_start", "workers": "workers", "patience": "patience",
               "max_time": "max_time_s"}


def _train(args: argparse.Namespace) -> int:
    import json

    from andersonn.errors import ConfigError
    from andersonn.training import TrainConfig, train

    overrides: dict[str, Any] = {f: getattr(args, a) for a, f in _CLI_FIELDS.items()
                                 if getattr(args, a) is not None}
    name = _task_or_labels(args, overrides)
    if args.fold is not None and args.folds is None:
        raise ConfigError("--fold I needs --folds K")
    out = Path(args.out) if args.out else Path("runs") / "-".join(
        [name, overrides.get("model", "deq")]
        + ([overrides.get("solver", "anderson")] if overrides.get("model", "deq") == "deq" else [])
        + ([f"cv{args.folds}"] if args.folds is not None else []))
    base: dict[str, Any] = {}
    stored = out / "config.json"
    if args.folds is not None:  # any finished or started fold holds the settings
        stored = next(iter(sorted(out.glob("fold-*/config.json"))), stored)
    if args.resume and stored.is_file():
        base = json.loads(stored.read_text()).get("train", {})
        base.pop("folds", None), base.pop("fold", None)
    # the config file's settings act as the command line's do: over the stored run's, under
    # the flags given
    given = TrainConfig.read_json(args.config) if args.config else {}
    _train_check_labels(overrides, given, base, args.config, out)
    cfg = TrainConfig.from_dict({**base, **given}, **overrides)
    _check_device(cfg.device)
    if cfg.model == "explicit" and cfg.solver != "anderson" and _is_main():
        print(f"andersonn: warning: solver {cfg.solver} is ignored: the explicit model has no "
              "fixed point to solve for", file=sys.stderr)
    _warn_explicit_only(cfg, {**given, **overrides})
    if args.folds is not None:  # --folds 0 too: cross_validate refuses fewer than 2
        return _cross_validate(args, cfg, name, out)
    from andersonn.training.distributed import is_lost_peer
    from andersonn.training.trainer import TrainingInterrupted

    try:
        result = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        return _interrupted(stop, args, out)
    except RuntimeError as exc:
        if not is_lost_peer(exc):
            raise
        return _lost_peers(args, out, exc)
    tm = result.test_metrics
    if tm is not None and _is_main():
        print(f"{_run_label(name, cfg)}: test accuracy {tm['accuracy']:.4f} (95 % interval "
              f"{tm['accuracy_ci95'][0]:.3f}–{tm['accuracy_ci95'][1]:.3f}), "
              f"balanced {tm['balanced_accuracy']:.4f}, "
              f"macro-F1 {tm['macro_f1']:.4f}, params {tm['params']}, "
              f"wall {tm['train_wall_time_s']:.1f} s"
              f"{f', {result.stopped}' if result.stopped else ''} → {result.run_dir}")
    elif _is_main():  # no test split (empty, or evaluate_test off): the validation score
        why = "evaluate_test is off" if not cfg.evaluate_test else "the test split is empty"
        best = result.run_config.get("best_val_acc")
        score = (f"best validation accuracy {best:.4f} (epoch {result.run_config['best_epoch']})"
                 if isinstance(best, (int, float)) and best >= 0 else "no validation score")
        print(f"{_run_label(name, cfg)}: {score}; not tested ({why})"
              f"{f', {result.stopped}' if result.stopped else ''} → {result.run_dir}")
    return 0


def _warn_explicit_only(cfg: Any, given: dict[str, Any]) -> None:
    """Warn (rank 0) that settings given for a DEQ which apply only to the explicit model (its
    depth, its width matching) are ignored, as --solver is for the explicit model."""
    from andersonn.training.trainer import inapplicable_settings

    if cfg.model != "deq" or not _is_main():
        return
    named = [key for key in inapplicable_settings("deq")
             if key in given and given[key] not in (None, False)]
    if named:
        what = ", ".join(f"{key} {given[key]}" if key == "depth" else key for key in named)
        print(f"andersonn: warning: {what} {'is' if len(named) == 1 else 'are'} ignored: "
              f"{'it applies' if len(named) == 1 else 'they apply'} to the explicit model, not "
              "to a DEQ", file=sys.stderr)


def _train_check_labels(overrides: dict[str, Any], given: dict[str, Any],
                        base: dict[str, Any], config: str | None, out: Path) -> None:
    """A built-in task named on the command line must not meet a labels file from the config
    file or the stored run (it would train the labels file under the task's name)."""
    from andersonn.errors import ConfigError

    task = overrides.get("task")
    if task is None:
        if overrides.get("labels") is not None and base and base.get("labels") is None:
            raise ConfigError(f"cannot resume {out}: it was trained on task "
                              f"{base.get('task')}, not on a labels file")
        return
    if given.get("labels") is not None:
        raise ConfigError(f"{config} names a labels file ({given['labels']}), but the command "
                          f"line names task {task}; give one of them")
    if base.get("labels") is not None:
        raise ConfigError(f"cannot resume {out} as task {task}: it was trained on the labels "
                          f"file {base['labels']}")


def _cross_validate(args: argparse.Namespace, cfg: Any, name: str, out: Path) -> int:
    from andersonn.crossval import cross_validate
    from andersonn.training.distributed import is_lost_peer
    from andersonn.training.trainer import TrainingInterrupted

    try:
        summary = cross_validate(cfg, out, folds=args.folds, only=args.fold,
                                 resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        return _interrupted(stop, args, out)
    except RuntimeError as exc:
        if not is_lost_peer(exc):
            raise
        return _lost_peers(args, out, exc)
    if summary is not None:
        print(f"{_run_label(name, cfg)}: {summary.summary_line()} → {out / 'cv.md'}")
    return 0


def _resume_command(args: argparse.Namespace, out: Path,
                   environ: Mapping[str, str] | None = None) -> str:
    """The command that continues an interrupted ``train`` (quoted, in backticks), launched as
    it was: under ``torchrun`` (``LOCAL_WORLD_SIZE`` in ``environ``, default the process's
    environment) the torchrun form with its process counts (its other options are not known
    here: on several nodes the advice says to add them)."""
    import os
    import shlex

    environ = os.environ if environ is None else environ
    command = ["andersonn", "train", args.task, "--out", str(out)]
    if args.folds is not None:
        command += ["--folds", str(args.folds)]
        if args.fold is not None:
            command += ["--fold", str(args.fold)]
    if args.config:
        command += ["--config", args.config]
    command.append("--resume")
    launcher, note = _launcher(environ)
    if launcher:
        command = [*launcher, "-m", *command]
    return f"`{shlex.join(command)}`{note}"


def _launcher(environ: Mapping[str, str]) -> tuple[list[str], str]:
    """The ``torchrun`` words (and a note on what they leave out) that launched this process,
    from the variables torchrun sets; nothing for a plain process."""
    try:
        local, world = int(environ["LOCAL_WORLD_SIZE"]), int(environ.get("WORLD_SIZE", "1"))
    except (KeyError, ValueError):
        return [], ""
    if local < 1 or world <= local:
        return ["torchrun", "--nproc_per_node", str(max(local, 1))], ""
    nodes = ["--nnodes", str(world // local)] if world % local == 0 else []
    return (["torchrun", *nodes, "--nproc_per_node", str(local)],
            " (on every node, with your other torchrun options)")


def _interrupted(stop: Any, args: argparse.Namespace, out: Path) -> int:
    """Ctrl-C during training: say what the run holds and the command that continues it."""
    if _is_main():
        command = _resume_command(args, out)
        if stop.epoch == 0:
            what = f"no epoch of {stop.run_dir} finished yet; {command} starts it again"
        elif stop.epoch >= stop.epochs:
            held = "its only epoch" if stop.epochs == 1 else f"all {stop.epochs} epochs"
            what = f"{stop.run_dir} holds {held}; {command} finishes it (calibration, test)"
        else:
            from andersonn.training.trainer import epochs_held

            what = (f"{stop.run_dir} holds {epochs_held(stop.epoch)} of {stop.epochs}; "
                    f"{command} continues from epoch {stop.epoch + 1}")
        print(f"andersonn: interrupted: {what}", file=sys.stderr)
    return 130


def _lost_peers(args: argparse.Namespace, out: Path, exc: BaseException) -> int:
    """A collective failed under ``torchrun`` (another worker died, or the backend failed):
    say so in one line (every surviving rank: rank 0 may be the one that died), with the last
    checkpoint and the command that continues from it, instead of the backend's traceback."""
    import os

    from andersonn.errors import AndersonnError
    from andersonn.training import checkpoint as ckpt
    from andersonn.training.distributed import collective_failure

    command = _resume_command(args, out)
    if args.folds is not None:
        where = f"{command} continues the cross-validation from its folds' last checkpoints"
    else:
        try:
            folder, epoch = ckpt.latest_checkpoint(out), ckpt.checkpoint_epoch(out)
        except (AndersonnError, OSError):
            folder, epoch = None, None
        where = (f"the last checkpoint is {folder} (epoch {epoch}); {command} continues from it"
                 if folder is not None else f"no epoch had finished; {command} starts it again")
    print(f"andersonn: error: rank {os.environ.get('RANK', '?')} {collective_failure(exc)}; "
          f"{where}", file=sys.stderr)
    return 1


def _run_label(name: str, cfg: Any) -> str:
    """``polarity deq (anderson)`` / ``mine explicit``: what a summary line is about."""
    return f"{name} {cfg.model}{f' ({cfg.solver})' if cfg.model == 'deq' else ''}"


_LABEL_SUFFIXES = (".csv", ".tsv", ".sdf", ".sdf.gz")


def _task_or_labels(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """Put the task, or the labels file and its options, into ``overrides``; return the name
    of the default run directory."""
    from andersonn.errors import ConfigError
    from andersonn.training.config import LABELS_FILE_FIELDS

    if args.task in _TASKS:
        overrides["task"] = args.task
        for option in LABELS_FILE_FIELDS:
            if getattr(args, option) is not None:
                raise ConfigError(f"--{option.replace('_', '-')} applies to a labels file of "
                                  f"your own, not to task {args.task}")
        return str(args.task)
    path = Path(args.task)
    if not path.name.lower().endswith(_LABEL_SUFFIXES):
        raise ConfigError(f"{args.task!r} is neither a task ({', '.join(_TASKS)}) nor a labels "
                          f"file ({', '.join(_LABEL_SUFFIXES)})")
    if not path.is_file():
        raise ConfigError(f"{args.task}: no such labels file")
    overrides["labels"] = str(path.resolve())
    if args.image is not None:
        overrides["image"] = args.image
    if args.bins is not None:
        try:
            overrides["bins"] = [float(v) for v in args.bins.split(",")]
        except ValueError:
            raise ConfigError(f"--bins {args.bins!r}: give numbers separated by commas") from None
    if args.classes is not None:
        overrides["classes"] = [c.strip() for c in args.classes.split(",")]
    for option in ("input_column", "label_column"):
        if getattr(args, option) is not None:
            overrides[option] = getattr(args, option)
    return path.name.split(".")[0]


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _calibrate(args: argparse.Namespace) -> int:
    import torch

    from andersonn.training import calibrate_run

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from andersonn.crossval import is_cross_validation

    _check_device(args.device)
    if is_cross_validation(args.run_dir):
        return _calibrate_cross_validation(args)
    r = calibrate_run(args.run_dir, device=args.device)
    _print_calibration(r)
    print(f"stored in {Path(args.run_dir) / 'config.json'}")
    return 0


def _calibrate_cross_validation(args: argparse.Namespace) -> int:
    """``calibrate CV_DIR``: every finished fold run, then the summary (its probabilities are
    the calibrated ones) when the cross-validation has one."""
    from andersonn.crossval import finished_folds, fold_runs, planned_folds, summarize
    from andersonn.errors import AndersonnError
    from andersonn.training import calibrate_run

    folds = fold_runs(args.run_dir)
    done = finished_folds(args.run_dir)  # by the final record: weights alone may be older
    if not done:
        raise AndersonnError(f"{args.run_dir}: a cross-validation without a finished fold")
    for run in done:
        print(f"{run}:")
        _print_calibration(calibrate_run(run, device=args.device), indent="  ")
    try:  # the planned folds: those that never started count too
        planned = planned_folds(args.run_dir)
    except AndersonnError:
        planned = []
    runs = planned + [run for run in folds if run not in planned]
    for run in runs:
        if run not in done:
            state = "not finished" if run in folds else "not started"
            print(f"{run}: {state}; calibrated when its training ends")
    print(f"stored in each fold's config.json ({len(done)} of {len(runs)})")
    if (Path(args.run_dir) / "cv.json").is_file() and len(done) == len(runs):
        summary = summarize(args.run_dir, device=args.device)
        summary.write(args.run_dir)
        print(f"summary rewritten with the calibrated probabilities: {summary.summary_line()} "
              f"→ {Path(args.run_dir) / 'cv.md'}")
    return 0


def _print_calibration(r: dict[str, Any], indent: str = "") -> None:
    if r["method"] == "none":
        print(f"{indent}no temperature fitted: {r['reason']}; probabilities stay as trained")
    else:
        print(f"{indent}temperature {r['temperature']:.4f} (fitted on the validation split)")
        print(f"{indent}validation ECE {r['val_ece']:.4f} → {r['val_ece_calibrated']:.4f}")
    if "test_ece" in r:
        print(f"{indent}test ECE       {r['test_ece']:.4f} → {r['test_ece_calibrated']:.4f}")
    if "domain_added" in r:
        from andersonn.data.domain import Domain

        print(f"{indent}training domain recorded: "
              f"{Domain.from_dict(r['domain_added']).describe()}")


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", choices=_SOLVERS, default=None,
                        help="override the DEQ solver")
    parser.add_argument("--tol", type=positive_float, default=None,
                        help="override the solver tolerance")
    parser.add_argument("--max-iter", type=positive_int, default=None,
                        help="override the iteration cap")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: torch's, all cores)")


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conformers", type=positive_int, default=1, metavar="K",
                        help="SMILES inputs: average the probabilities over up to K force-field "
                        "conformers (1); better calibrated, K times the work")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes reading the inputs (all cores for 64 inputs or more)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_device(device: str) -> None:
    """Refuse an unusable ``--device`` in the command line's words, before any run is read
    (the Python functions it is passed on to name their own parameter)."""
    from andersonn.training.distributed import resolve_device

    resolve_device(device)


def _solver_options(args: argparse.Namespace) -> dict[str, Any] | None:
    options = {key: value for key, value in (("tol", args.tol), ("max_iter", args.max_iter))
               if value is not None}
    return options or None


def _has_solver(clf: Any) -> bool:
    """Whether a classifier (or any member of an ensemble) solves a fixed point."""
    members = getattr(clf, "members", [clf])
    return any(getattr(m.model_, "model_name", "deq") == "deq" for m in members)


def _predict(args: argparse.Namespace) -> int:
    import torch

    from andersonn.ensemble import Ensemble
    from andersonn.errors import InputError
    from andersonn.predict import Classifier, format_table, write_predictions
    from andersonn.predict.output import keep_existing_output

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = _solver_options(args)
    clf: Classifier
    _check_device(args.device)
    runs = _run_dirs([args.run_dir, *args.ensemble])
    if len(runs) > 1:  # a run given twice: refused by from_runs
        clf = Ensemble.from_runs(runs, device=args.device, solver=args.solver,
                                 solver_options=options)
    else:
        clf = Classifier.load(runs[0], device=args.device, solver=args.solver,
                              solver_options=options)
    clf.conformers = args.conformers
    if (args.solver is not None or options) and not _has_solver(clf):
        print("andersonn: warning: an explicit network has no fixed-point solver; --solver, "
              "--tol and --max-iter change nothing", file=sys.stderr)
    domain = clf.domain_
    if args.out and args.out.lower().endswith(".sdf") and domain is not None \
            and domain.kind != "molecule":
        raise InputError(f"{args.out}: an SD file holds molecules, and this run classifies "
                         f"{domain.kind}s; write .csv or .json")
    preds = clf.predict_inputs(args.inputs, workers=args.workers,
                               progress=not args.no_progress)
    for p in preds:
        if not p.ok:
            print(f"andersonn: cannot predict {p.input}: {p.reason}", file=sys.stderr)
        for note in p.warnings:
            print(f"andersonn: warning: {p.input}: {note}", file=sys.stderr)
    if args.out:
        if not any(p.ok for p in preds):
            keep_existing_output(args.out, len(preds), "predicted")
        write_predictions(args.out, preds, clf.classes_,
                          meta={"run_dir": str(args.run_dir), "task": clf.config_.get("task"),
                                "conformers": clf.conformers,
                                **({"ensemble": runs} if len(runs) > 1 else {})})
        n_ok = sum(p.ok for p in preds)
        print(f"{n_ok}/{len(preds)} predicted → {args.out}")
    else:
        print(format_table(preds, clf.classes_))
    return 0 if any(p.ok for p in preds) else 2  # as for any bad input; some failed: 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from andersonn.evaluate import evaluate_labelled, evaluate_split
    from andersonn.fileio import atomic_write_json

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _check_device(args.device)
    common = {"device": args.device, "solver": args.solver,
              "solver_options": _solver_options(args)}
    if (args.input_column or args.label_column) and not args.labels:
        from andersonn.errors import ConfigError

        raise ConfigError("--input-column and --label-column apply to --labels FILE")
    if _cross_validations(args.runs):
        if not args.labels:
            return _evaluate_cross_validations(args)
        args.runs = _run_dirs(args.runs)  # the fold runs: each alone, and as ensembles
    if (args.solver is not None or common["solver_options"]) and not any(
            _run_model(run) == "deq" for run in args.runs):
        print("andersonn: warning: an explicit network has no fixed-point solver; --solver, "
              "--tol and --max-iter change nothing", file=sys.stderr)
    if args.labels:
        result = evaluate_labelled(args.runs, args.labels, workers=args.workers,
                                   progress=not args.no_progress, conformers=args.conformers,
                                   input_column=args.input_column,
                                   label_column=args.label_column, **common)
    else:
        result = evaluate_split(args.runs, split=args.split, **common)
    print(result.to_markdown())
    note = result.convergence_note()
    if note is not None:
        limit = f" (now {args.max_iter})" if args.max_iter else ""
        print(f"andersonn: warning: {note}; raise --max-iter{limit} or try another --solver",
              file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, result.to_dict())
        print(f"→ {args.out}")
    if args.plots:
        for path in result.write_plots(args.plots):
            print(f"→ {path}")
    return 0


def _run_model(run: str) -> str:
    """The model kind of a run (``deq`` / ``explicit``) as its config records it (``deq``
    where it cannot be read: the evaluation itself then reports the problem)."""
    try:
        return str(json.loads((Path(run) / "config.json").read_text())["train"]["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return "deq"


def _run_dirs(paths: list[str]) -> list[str]:
    """Run directories, a cross-validation standing for its finished folds (an ensemble)."""
    from andersonn.crossval import check_folds, finished_folds, is_cross_validation
    from andersonn.errors import AndersonnError

    out: list[str] = []
    for path in paths:
        if is_cross_validation(path):
            check_folds(path)  # folds of one model only (an --epochs extension part-way: no)
            folds = finished_folds(path)
            if not folds:
                raise AndersonnError(f"{path}: a cross-validation without a finished fold")
            out += [str(d) for d in folds]
        else:
            out.append(path)
    return out


def _cross_validations(paths: list[str]) -> bool:
    """Whether the RUN_DIR arguments are cross-validation directories (all or none)."""
    from andersonn.crossval import is_cross_validation
    from andersonn.errors import ConfigError

    which = [is_cross_validation(p) for p in paths]
    if any(which) and not all(which):
        raise ConfigError("give runs or cross-validations (directories of fold-1 … fold-K), "
                          "not both")
    return all(which)


def _evaluate_cross_validations(args: argparse.Namespace) -> int:
    from andersonn.crossval import compare, comparison_line, summarize
    from andersonn.errors import ConfigError
    from andersonn.fileio import atomic_write_json

    if args.split != "test" or args.solver or args.tol or args.max_iter:
        raise ConfigError("a cross-validation is scored on its out-of-fold predictions as "
                          "trained; --split and solver options take run directories (e.g. "
                          "its fold-1 … fold-K)")
    summaries = [summarize(path, device=args.device) for path in args.runs]
    for summary in summaries:
        print(summary.to_markdown(), end="\n\n")
    comparisons = [compare(summaries[0], other) for other in summaries[1:]]
    for result in comparisons:
        print(comparison_line(result))
    if args.out:
        atomic_write_json(args.out, {"cross_validations": [s.to_dict() for s in summaries],
                                     "comparisons": comparisons})
        print(f"→ {args.out}")
    if args.plots:
        for i, summary in enumerate(summaries, start=1):
            folder = Path(args.plots)
            print(f"→ {summary.plot_confusion(folder / f'cv-{i}-confusion.png')}")
            print(f"→ {summary.plot_reliability(folder / f'cv-{i}-reliability.png')}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from andersonn.demo import run_demo

    extra = {"threads": args.threads} if args.threads is not None else {}
    run_demo(out_dir=args.out, limit=args.limit, epochs=args.epochs,
             progress=not args.no_progress, **extra)
    return 0
