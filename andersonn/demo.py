"""``andersonn demo``: the README's first command.

Builds (or reuses) a polarity subset of QM9, trains the same DEQ twice under identical settings —
once with Anderson acceleration, once with plain forward iteration — and reports test accuracy,
wall time and f-evaluations of each, the measured speed-up, plots and a markdown report.
Sized to finish in well under 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from andersonn.errors import AndersonnError, ResumeConflict
from andersonn.fileio import atomic_write_json, atomic_write_text

__all__ = ["DEMO_DEFAULTS", "run_demo"]


def fmt(v: float | None) -> str:
    """A speed-up ratio as text."""
    return f"{v:.2f}×" if v else "n/a"

DEMO_DEFAULTS: dict[str, Any] = {"limit": 8000, "epochs": 6, "hidden": 32, "batch_size": 64,
                                 "lr": 2e-3, "tol": 1e-3, "max_iter": 30, "seed": 0,
                                 "max_time_s": 300.0}


def _epochs(n: int) -> str:
    """``1 epoch`` / ``6 epochs``."""
    from andersonn.training.trainer import plural  # torch: imported when the demo runs

    return plural(n, "epoch")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_or_build(limit: int, progress: bool) -> Any:
    from andersonn.data import build_dataset, load_dataset

    try:
        return load_dataset("polarity", limit=limit)
    except AndersonnError:
        _say(f"[demo] building the polarity dataset ({limit} QM9 molecules)…")
        return build_dataset("polarity", limit=limit, progress=progress)


def _summary(result: Any) -> dict[str, Any]:
    hist = result.history
    tm = result.test_metrics or {}
    n = max(len(hist), 1)
    return {
        "test_accuracy": tm.get("accuracy"), "test_balanced_accuracy": tm.get("balanced_accuracy"),
        "test_macro_f1": tm.get("macro_f1"), "best_epoch": tm.get("best_epoch"),
        "epochs": len(hist),
        "train_wall_time_s": hist[-1]["wall_time_s"] if hist else 0.0,
        "train_time_per_epoch_s": sum(h["train_time_s"] for h in hist) / n,
        "fwd_nfev": sum(h["fwd_nfev"] for h in hist) / n,
        "bwd_nfev": sum(h["bwd_nfev"] for h in hist) / n,
        "fwd_nfev_max": sum(h["fwd_nfev_max"] for h in hist) / n,
        "test_fwd_nfev": (tm.get("solver") or {}).get("fwd_nfev"),
        "val_acc_curve": [(h["wall_time_s"], h["val_acc"]) for h in hist],
        "params": tm.get("params"),
        "calibration": tm.get("calibration"),
    }


def _plot(out: Path, runs: dict[str, dict[str, Any]], comparison: dict[str, Any]) -> list[str]:
    from andersonn.training.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, s in runs.items():
        curve = s["val_acc_curve"]
        ax[0].plot([c[0] for c in curve], [c[1] for c in curve], "o-", label=name)
    ax[0].set(xlabel="training wall time (s)", ylabel="val accuracy",
              title="validation accuracy vs time")
    for name, item in comparison.items():
        if item.get("trace"):
            ax[1].semilogy(range(1, len(item["trace"]) + 1), item["trace"], "o-", ms=3,
                           label=name)
    ax[1].set(xlabel="iteration", ylabel="relative residual",
              title="fixed-point residual (one test batch)")
    for a in ax:
        a.grid(alpha=0.3, which="both")
        a.legend()
    _save(fig, out / "demo.png")
    return ["demo.png"]


def _set_aside(run_dir: Path) -> Path:
    """Rename ``run_dir`` to the first free ``<name>.old-N`` beside it; returns the new path."""
    for i in range(1, 10_000):
        target = run_dir.with_name(f"{run_dir.name}.old-{i}")
        if not target.exists():
            run_dir.rename(target)
            return target
    raise AndersonnError(f"{run_dir}: too many earlier runs set aside beside it; remove some")


def run_demo(out_dir: str | Path = "demo", limit: int | None = None, epochs: int | None = None,
             progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Run the demo; returns the report dict (also written to ``out_dir/report.json``)."""
    import numpy as np

    from andersonn.training import TrainConfig, train

    out = Path(out_dir)
    settings = {**DEMO_DEFAULTS, **overrides}
    if limit is not None:
        settings["limit"] = int(limit)
    if epochs is not None:
        settings["epochs"] = int(epochs)
    t_start = time.perf_counter()
    ds = _load_or_build(int(settings["limit"]), progress)
    data_s = time.perf_counter() - t_start
    if not (np.asarray(ds.splits) == 2).any():  # it reports test accuracy: refuse before training
        raise AndersonnError(f"demo --limit {settings['limit']}: the polarity subset of "
                             f"{len(ds.labels)} molecules has an empty test split; "
                             "give a larger --limit (at least 100)")
    _say(f"[demo] dataset ready: {len(ds.labels)} molecules, image {tuple(ds.images.shape[1:])} "
         f"({data_s:.0f} s)")
    runs: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    for solver in ("anderson", "forward"):
        cfg = TrainConfig(task="polarity", model="deq", solver=solver, plots=True, **settings)
        run_dir = out / f"deq-{solver}"
        # a run killed before its first checkpoint holds config.json: resumed, it starts over
        resume = any((run_dir / name).exists() for name in ("checkpoint.json", "config.json"))
        _say(f"[demo] training the DEQ with {solver} "
             f"({_epochs(cfg.epochs)}, tol {cfg.tol:g}, max_iter {cfg.max_iter})…")
        try:
            result = train(cfg, run_dir, resume=resume, dataset=ds, progress=progress)
        except ResumeConflict as exc:
            # an earlier demo's run on other data (e.g. an older featuriser) or settings: keep
            # it, under another name, and train afresh
            kept = _set_aside(run_dir)
            _say(f"[demo] {exc}; moved it to {kept} and training afresh")
            result = train(cfg, run_dir, resume=False, dataset=ds, progress=progress)
        results[solver] = result
        runs[solver] = _summary(result)
        s = runs[solver]
        _say(f"[demo] {solver}: test accuracy {s['test_accuracy']:.4f}, "
             f"{s['train_wall_time_s']:.0f} s, {s['fwd_nfev']:.1f} forward / "
             f"{s['bwd_nfev']:.1f} backward f-evaluations per sample")
    a, f = runs["anderson"], runs["forward"]

    def ratio(x: float | None, y: float | None) -> float | None:
        return (x / y) if x and y else None

    same_epochs = a["epochs"] == f["epochs"]
    speedup = {
        # the time limit can stop the slower run early: then compare time per epoch
        "wall_time": ratio(f["train_wall_time_s"], a["train_wall_time_s"]) if same_epochs
        else ratio(f["train_time_per_epoch_s"], a["train_time_per_epoch_s"]),
        "train_time_per_epoch": ratio(f["train_time_per_epoch_s"], a["train_time_per_epoch_s"]),
        "forward_nfev": ratio(f["fwd_nfev"], a["fwd_nfev"]),
        "backward_nfev": ratio(f["bwd_nfev"], a["bwd_nfev"]),
        "total_nfev": ratio(f["fwd_nfev"] + f["bwd_nfev"], a["fwd_nfev"] + a["bwd_nfev"]),
    }
    comparison = ((results["anderson"].test_metrics or {}).get("solver") or {}).get("comparison",
                                                                                    {})
    figures = []
    try:
        figures = _plot(out, runs, comparison)
    except Exception as exc:  # a figure must not sink the demo
        _say(f"[demo] warning: plotting failed: {exc}")
    total_s = time.perf_counter() - t_start
    report = {"settings": settings, "dataset": {"n": len(ds.labels),
                                                "image_shape": list(ds.images.shape[1:]),
                                                "seconds": data_s},
              "runs": runs, "speedup": speedup, "total_seconds": total_s,
              "out_dir": str(out)}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", _markdown(report, figures))
    print(f"\nDEQ on polarity ({len(ds.labels)} QM9 molecules, {_epochs(settings['epochs'])}, "
          f"same seed and settings):")
    for name, s in runs.items():
        print(f"  {name:9s} test accuracy {s['test_accuracy']:.4f}   training "
              f"{s['train_wall_time_s']:6.1f} s ({_epochs(s['epochs'])})   f-evals/sample fwd "
              f"{s['fwd_nfev']:5.1f} bwd {s['bwd_nfev']:5.1f}")
    print(f"  Anderson speed-up over forward iteration: wall time {fmt(speedup['wall_time'])}, "
          f"f-evaluations {fmt(speedup['total_nfev'])}")
    print(f"  report: {out / 'report.md'}   (demo took {total_s:.0f} s)")
    return report


def _markdown(report: dict[str, Any], figures: list[str]) -> str:
    s, runs, sp = report["settings"], report["runs"], report["speedup"]
    lines = [
        "# andersonn demo: Anderson vs forward iteration on QM9 polarity", "",
        f"Dataset: {report['dataset']['n']} QM9 molecules, images "
        f"{tuple(report['dataset']['image_shape'])}; label: strongly vs weakly polar "
        "(dipole threshold). Train/val/test split from the data stage; model selected on val.",
        f"Model: DEQ (hidden {s['hidden']}), {_epochs(s['epochs'])}, batch {s['batch_size']}, "
        f"AdamW lr {s['lr']:g}, solver tol {s['tol']:g}, max_iter {s['max_iter']}, seed "
        f"{s['seed']}; at most {s['max_time_s']:g} s of training per solver (a run that "
        "reaches it stops after that epoch; the speed-up then compares time per epoch).", "",
        "| solver | epochs | test acc | balanced acc | macro-F1 | training wall time (s) | "
        "fwd f-evals / sample | bwd f-evals / sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['epochs']} | {r['test_accuracy']:.4f} | "
                     f"{r['test_balanced_accuracy']:.4f} | "
                     f"{r['test_macro_f1']:.4f} | {r['train_wall_time_s']:.1f} | "
                     f"{r['fwd_nfev']:.1f} | {r['bwd_nfev']:.1f} |")
    lines += ["", f"**Anderson speed-up**: wall time {fmt(sp['wall_time'])}, forward f-evaluations "
              f"{fmt(sp['forward_nfev'])}, backward {fmt(sp['backward_nfev'])}, total "
              f"{fmt(sp['total_nfev'])}.", ""]
    cal = runs.get("anderson", {}).get("calibration")
    if cal:
        lines += [f"Calibrated probabilities (Anderson run): a temperature T = "
                  f"{cal['temperature']:.3f} fitted on the validation split takes the test "
                  f"expected calibration error from {cal['ece']:.4f} to "
                  f"{cal['ece_calibrated']:.4f}.", ""]
    for fig in figures:
        lines.append(f"![{fig}]({fig})")
    run = Path(report.get("out_dir", "demo")) / "deq-anderson"
    lines += ["", "Ask the trained scientist about your own molecules: `andersonn predict "
              f"{run} CCO 'OC(=O)c1ccccc1' my_molecules.sdf` (inputs with elements or sizes "
              "outside its training data are flagged).", "",
              "Per-run details: `deq-anderson/` and `deq-forward/` (metrics.jsonl, "
              "test_metrics.json, plots/).", f"Demo total time: {report['total_seconds']:.0f} s.",
              ""]
    return "\n".join(lines)

