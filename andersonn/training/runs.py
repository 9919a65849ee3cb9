"""Finished runs: load the best model, recalibrate it, or get its cell injection for probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from andersonn.data.splits import split_indices
from andersonn.errors import AndersonnError, UnfinishedRunWarning, warn_user
from andersonn.fileio import atomic_write_json, folder_lock, lock_holder
from andersonn.models import build_model
from andersonn.training import checkpoint as ckpt
from andersonn.training.distributed import DistInfo, resolve_device
from andersonn.training.evaluation import calibrate_split, calibration_record, eval_pass
from andersonn.training.inputs import (
    feature_domain,
    fold_of,
    labelled_dataset_of,
    split_tensors,
)

__all__ = ["calibrate_run", "load_run", "load_run_injection", "run_build", "run_dataset"]


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", *,
             what: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The best-val model of a finished run (eval mode) and its ``config.json``; a DEQ solves
    with the run's evaluation solver settings (``eval_tol`` / ``eval_max_iter``), as training
    validated and calibrated it. ``what``: how a refused ``device`` is named (default
    ``load_run(device='cuda')``; a caller names its own parameter, the CLI its ``--device``)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        if not run_dir.is_dir():
            raise AndersonnError(f"{run_dir}: no such run folder" if not run_dir.exists()
                                 else f"{run_dir}: a file, not a run folder")
        if any(run_dir.glob("fold-*/config.json")):  # the CLI takes it; the API wants the folds
            raise AndersonnError(
                f"{run_dir}: a cross-validation, not a training run: load its finished folds "
                "as one model with Ensemble.from_runs(crossval.finished_folds(...))")
        raise AndersonnError(f"{run_dir}: not a training run (no config.json)")
    try:
        run_config = json.loads(cfg_path.read_text())
        hparams = dict(run_config["model"])
    except (ValueError, KeyError, TypeError):
        raise AndersonnError(f"{cfg_path}: damaged run config") from None
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        folder = ckpt.latest_checkpoint(run_dir)
        if folder is None:
            raise AndersonnError(f"{run_dir}: no model.safetensors (training not finished?)")
        weights = folder / "best.safetensors"
        warn_user(_unfinished_note(run_dir, folder, run_config), UnfinishedRunWarning)
    elif _final_stage_behind(run_dir, run_config):
        try:
            folder = ckpt.latest_checkpoint(run_dir)
        except AndersonnError:  # the note then says less; the weights are still there
            folder = None
        warn_user(_unfinished_note(run_dir, folder, run_config,
                                   which="its model.safetensors, which may not be the one "
                                         "config.json describes"), UnfinishedRunWarning)
    name = hparams.pop("name", "deq")
    model = build_model(name, **hparams)
    try:
        model.load_state_dict(ckpt.load_weights(weights))
    except RuntimeError as exc:
        raise AndersonnError(f"{weights}: weights do not fit the model in config.json "
                             f"({str(exc).splitlines()[0]})") from None
    model.to(resolve_device(device, what=what or f"load_run(device={device!r})")).eval()
    solver = run_config.get("solver") or {}
    if hasattr(model, "set_solver") and solver.get("name") and solver.get("eval"):
        # the hparams hold the training solve; inference answers at the recorded eval settings
        model.set_solver(solver["name"], dict(solver["eval"]))
    return model, run_config


def _final_stage_behind(run_dir: Path, run_config: dict[str, Any]) -> bool:
    """Whether a run holding model.safetensors has trained past its last completed final
    stage: killed between writing the weights and the config that describes them (its
    calibration), or extended by a ``--resume`` that is running or was stopped. Runs trained
    before config.json's ``finished`` record, or whose checkpoints were removed, pass."""
    if "finished" not in run_config:
        return False
    epoch = ckpt.checkpoint_epoch(run_dir)
    done = run_config["finished"]
    return epoch is not None and (not isinstance(done, dict) or done.get("epoch") != epoch)


def _unfinished_note(run_dir: Path, folder: Path | None, run_config: dict[str, Any],
                     which: str = "") -> str:
    """What a user of an unfinished run gets: how far it trained, which weights it gets
    (``which``; by default the checkpoint's best) and whether they are calibrated."""
    epoch, best = None, None
    if folder is not None:
        try:
            state = json.loads((folder / "state.json").read_text())
            epoch, best = int(state["epoch"]), int(state["best_epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    planned = (run_config.get("train") or {}).get("epochs")
    if epoch is not None and planned and epoch >= int(planned):
        from andersonn.training.trainer import plural

        how_far = f" ({plural(int(planned), 'epoch')} trained; its final stage did not complete)"
    else:
        how_far = "" if epoch is None else (f" (checkpoint after epoch {epoch}"
                                            + (f" of {planned}" if planned else "") + ")")
    which = which or ("its best weights so far" + ("" if best is None else f", from epoch {best}"))
    if not run_config.get("calibration"):
        which += ", with uncalibrated probabilities"
    holder = lock_holder(run_dir)
    advice = (f"it is still training (process {holder})" if holder is not None
              else "finish it with `andersonn train ... --resume`")
    return f"{run_dir}: training has not finished{how_far}; using {which} ({advice})"


def run_build(run_config: dict[str, Any]) -> Any:
    """The cached build a finished run was trained on, with the build's own splits: the one
    recorded in the run (``dataset.cache_key``) while it is cached. A labels file's build is
    otherwise rebuilt from the file, refused when the file (or a file it names) has changed
    since. A task's build is otherwise the build of the run's ``--limit`` (the one recorded,
    which a run given no limit took as the latest build) and label thresholds, refused when
    its key differs from the recorded one (the featuriser or the sources changed since)."""
    from andersonn.data import load_dataset
    from andersonn.data.build import build_command, cached_build

    train = run_config.get("train", {})
    data = run_config.get("dataset") or {}
    key = data.get("cache_key") if isinstance(data.get("cache_key"), str) else None
    if train.get("labels") is not None:  # the run's own build, not the file as it is now
        return labelled_dataset_of(train, key=key)
    task = run_config["task"]
    own = cached_build(task, key) if key else None
    if own is not None:
        return own
    limit = data["limit"] if "limit" in data else train.get("limit")
    thresholds = run_config.get("thresholds")
    try:
        ds = load_dataset(task, limit=limit, thresholds=thresholds)
    except AndersonnError as exc:
        if not key:
            raise
        raise AndersonnError(f"the {task} build this run was trained on ({key}) is no longer "
                             f"cached; {exc}") from None
    if key and ds.meta.get("key") not in (None, key) and not _same_full_set(ds, limit, run_config):
        raise AndersonnError(
            f"the {task} build this run was trained on ({key}) is no longer cached, and the "
            f"build of its settings now ({ds.meta.get('key')}, `"
            f"{build_command(task, limit=limit, thresholds=ds.meta.get('thresholds'))}`) "
            "differs from it (featuriser version or sources changed); train a new run on it")
    return ds


def _same_full_set(ds: Any, limit: Any, run_config: dict[str, Any]) -> bool:
    """Whether ``ds``, the full build, holds what a run recorded under another key: a run
    given a ``--limit`` of at least the set's size, built (before such a limit came to mean the
    full build) under a key of its own, with the same featuriser and image spec."""
    candidates = ds.meta.get("candidates")
    return (isinstance(limit, int) and isinstance(candidates, int) and limit >= candidates
            and ds.meta.get("limit") is None
            and ds.meta.get("featurizer_version") == run_config.get("featurizer_version")
            and ds.meta.get("image_spec") == run_config.get("image_spec"))


def run_dataset(run_config: dict[str, Any]) -> Any:
    """:func:`run_build`, split as the run was (its cross-validation fold, if any)."""
    return fold_of(run_build(run_config), run_config.get("train", {}))


def calibrate_run(run_dir: str | Path, dataset: Any = None, device: str | torch.device = "cpu",
                  *, what: str | None = None) -> dict[str, Any]:
    """Fit (or refit) the temperature of a finished run on its validation split and store it.

    For runs trained before calibration existed: loads the best-val model and ``dataset``
    (default: the cached build the run was trained on, refused if its featuriser or image spec
    differ), fits T as training does, measures the test ECE before and after, and rewrites
    ``config.json`` (and ``test_metrics.json``, when present) atomically. A run whose recorded
    applicability domain is missing or older than its dataset's gets the dataset's
    (``domain_added`` in the result), and one without a feature domain gets it. Returns
    the calibration record plus ``test_ece`` / ``test_ece_calibrated``. Holds the run folder's
    lock (:func:`~andersonn.fileio.folder_lock`): a run that is training is refused.
    ``device``: as :func:`load_run`'s (``auto`` too); ``what``: how a refused one is named
    (default ``calibrate_run(device='cuda')``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        load_run(run_dir)  # says what the path is instead
    with folder_lock(run_dir, "a training"):
        return _calibrate_run(run_dir, dataset, device,
                              what or f"calibrate_run(device={device!r})")


def _calibrate_run(run_dir: Path, dataset: Any, device: str | torch.device, what: str
                   ) -> dict[str, Any]:
    model, run_config = load_run(run_dir, device=device, what=what)
    ds = dataset if dataset is not None else run_dataset(run_config)
    meta = dict(getattr(ds, "meta", {}) or {})
    for key in ("featurizer_version", "image_spec"):
        if run_config.get(key) is not None and meta.get(key) != run_config.get(key):
            raise AndersonnError(f"{run_dir}: the dataset's {key} differs from the run's; "
                                 "calibrate on the data the run was trained on")
    train_cfg = dict(run_config.get("train") or {})
    batch_size, bf16 = int(train_cfg.get("eval_batch_size", 256)), bool(train_cfg.get("bf16"))
    k = int(getattr(model, "num_classes", len(run_config.get("classes", [])) or 2))
    # where load_run put the model (``auto`` resolved: torch.device("auto") is no device)
    dev, info = next(model.parameters()).device, DistInfo()
    xv, yv = split_tensors(ds, "val")
    if not xv.shape[0]:
        raise AndersonnError(f"{run_dir}: its dataset has no validation split to calibrate on")
    record = calibrate_split(model, xv, yv, k, batch_size, dev, info, bf16)
    xte, yte = split_tensors(ds, "test")
    result = dict(record)
    test_record = None
    if xte.shape[0]:
        test = eval_pass(model, xte, yte, k, batch_size, dev, info, bf16, return_logits=True)
        test_record = calibration_record(test["logits"], test["labels"], record["temperature"],
                                         info)
        result["test_ece"] = test_record["ece"]
        result["test_ece_calibrated"] = test_record["ece_calibrated"]
    run_config["calibration"] = record
    if meta.get("domain") and run_config.get("domain") != meta["domain"]:  # same data (above)
        run_config["domain"] = result["domain_added"] = meta["domain"]
    if not run_config.get("feature_domain"):
        run_config["feature_domain"] = feature_domain(
            ds.images, split_indices(ds.splits, "train"))
    atomic_write_json(run_dir / "config.json", run_config)
    metrics_path = run_dir / "test_metrics.json"
    if metrics_path.is_file() and test_record is not None:
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = test_record
        atomic_write_json(metrics_path, metrics)
    return result


def load_run_injection(run_dir: str | Path, split: str = "test", n: int | None = None,
                       dataset: Any = None) -> tuple[nn.Module, torch.Tensor, Any]:
    """A finished DEQ run's model, the cell injection x of the first ``n`` structures of
    ``split`` in ``dataset`` (default: the cached build the run was trained on), and that
    dataset — what probes of the trained cell (``scripts/*.py``) solve z* = cell(z*, x) on."""
    model, run_config = load_run(run_dir)
    if not hasattr(model, "cell"):
        raise AndersonnError(f"{run_dir}: not a DEQ run (no cell to probe)")
    ds = dataset if dataset is not None else run_dataset(run_config)
    idx = ds.split_indices(split)[:n]
    images = torch.as_tensor(np.asarray(ds.images[idx], dtype=np.float32))
    with torch.no_grad():
        x = model.embed(model.normalize(images))
    return model, x, ds
