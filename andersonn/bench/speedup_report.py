"""The report side of ``andersonn bench speedup``: tables, targets and plots of a result.

From the result dict of :func:`andersonn.bench.speedup.run_speedup` (or its ``speedup.json``),
this computes each variant's speed-up and compute saved against forward iteration at an accuracy
target (:func:`target_ratios`), whether the headline targets are met (:func:`targets_met`), the
markdown tables (:func:`speedup_markdown`) and the PNG plots (:func:`plots`). It also holds the
variant names (``DEQ_SOLVERS``, ``VARIANTS``) and the "compute saved" arithmetic (:func:`saved`)
that the runner and :mod:`andersonn.bench.speedup_probes` share, so that no module imports
``andersonn.bench.speedup`` back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.bench.report import fmt, markdown_table, new_figure, ratio, save_figure
from andersonn.training.trainer import plural

__all__ = ["DEQ_SOLVERS", "VARIANTS", "plots", "saved", "speedup_markdown", "target_ratios",
           "targets_met"]

DEQ_SOLVERS = ("forward", "anderson", "broyden")
VARIANTS = (*DEQ_SOLVERS, "explicit")


def saved(x: float | None, base: float | None) -> float | None:
    """Compute saved by ``x`` against ``base``: 1 − x / base (None when either is missing)."""
    r = ratio(x, base)
    return None if r is None else 1.0 - r


def target_ratios(reach: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-up of each variant over forward iteration in time (and f evals) to the target."""
    f = reach["forward"]
    out: dict[str, Any] = {}
    for n in ("anderson", "broyden", "explicit"):
        r = reach[n]
        if not r["reached"]:
            out[n] = {"speedup": None, "lower_bound": False, "compute_saved": None,
                      "feval_saved": None, "note": "not reached"}
            continue
        base_t = f["time_s"] if f["reached"] else f["bound_time_s"]
        base_f = f["fevals"] if f["reached"] else f["bound_fevals"]
        out[n] = {"speedup": ratio(base_t, r["time_s"]), "lower_bound": not f["reached"],
                  "compute_saved": saved(r["time_s"], base_t),
                  "feval_saved": saved(r["fevals"], base_f) if n != "explicit" else None,
                  "note": "forward not reached: lower bound" if not f["reached"] else ""}
    return out


def targets_met(res: dict[str, Any]) -> dict[str, Any]:
    """Issue 6's targets (training ≥ 5× sooner, inference ≥ 8× at the tightest tolerance) with
    the measured values and the zero-overhead bounds from the f-evaluation ratios."""
    train = res["ratios"]["common"]["anderson"]
    inf = [r for r in res["inference"] if r["solver"] == "anderson"]
    tight = min(inf, key=lambda r: r["tol"]) if inf else None
    v = res["variants"]
    bound = ratio(v["forward"]["fevals_per_sample_per_step"],
                  v["anderson"]["fevals_per_sample_per_step"])
    return {"train_5x": {"value": train["speedup"], "feval_bound": bound,
                         "met": bool(train["speedup"] is not None and train["speedup"] >= 5)},
            "inference_8x": {"tol": tight["tol"] if tight else None,
                             "value": tight["speedup_vs_forward"] if tight else None,
                             "feval_bound": tight["feval_ratio_vs_forward"] if tight else None,
                             "met": bool(tight and tight["speedup_vs_forward"]
                                         and tight["speedup_vs_forward"] >= 8)}}


def _repeats(n: int) -> str:
    """How the repeated timings are combined, said honestly: the median of two is their mean."""
    if n == 1:
        return "one timed pass"
    if n == 2:
        return "mean of 2 interleaved repeats"
    return f"median of {n} interleaved repeats"


def _speed(r: dict[str, Any]) -> str:
    if r.get("speedup") is None:
        return r.get("note") or "–"
    return ("≥ " if r.get("lower_bound") else "") + f"{r['speedup']:.2f}×"


def speedup_markdown(res: dict[str, Any]) -> str:
    """The speed-up tables (training, inference, crossover, targets) as markdown."""
    v, reach, t = res["variants"], res["time_to_target"], res["targets"]
    m = res["machine"]
    lines = [f"## bench speedup: {res['task']}\n",
             f"Machine: {m.get('processor')}, {m.get('cpu_count')} CPU cores, torch "
             f"{m.get('torch')} ({m.get('torch_threads')} thread(s)), device {m.get('device')}"
             f"{', ' + m['gpu'] if m.get('gpu') else ''}. Data: train {res['data']['train']}, "
             f"val {res['data']['val']}, test {res['data']['test']}; tol "
             f"{res['settings']['tol']}, max_iter {res['settings']['max_iter']}, "
             f"{plural(res['settings']['epochs'], 'epoch')}, batch "
             f"{res['settings']['batch_size']}, "
             f"hidden {res['settings']['hidden']}, seed {res['settings']['seed']}"
             + ("; DEQs warm-started from the last epoch" if res["settings"].get("warm_start")
                else "") + ".\n",
             f"Common validation accuracy (highest reached by every DEQ variant): "
             f"**{t['common']:.4f}**; fraction target ({res['settings']['target_fraction']} × "
             f"best DEQ peak): {t['fraction']:.4f}. Times are training wall time "
             "(validation excluded).\n"]
    rows = []
    for n in VARIANTS:
        s = v[n]
        rc, rf = reach["common"][n], reach["fraction"][n]
        rat = res["ratios"]["common"].get(n, {})
        ratf = res["ratios"]["fraction"].get(n, {})
        rows.append([n, s["params"], s["time_per_epoch_s"],
                     f"{s['fwd_nfev']:.1f} / {s['fwd_nfev_max']:.1f}" if n != "explicit" else "–",
                     f"{s['bwd_nfev']:.1f} / {s['bwd_nfev_max']:.1f}" if n != "explicit" else "–",
                     f"{s['fwd_converged']:.2f} / {s['bwd_converged']:.2f}" if n != "explicit"
                     else "–", s["peak_val_acc"],
                     fmt(rc["time_s"]) if rc["reached"] else "not reached",
                     "1×" if n == "forward" else _speed(rat),
                     fmt(rf["time_s"]) if rf["reached"] else "not reached",
                     "1×" if n == "forward" else _speed(ratf), s["test_acc"]])
    lines.append(markdown_table(
        ["variant", "params", "s / epoch", "fwd f-evals / batch (mean / max)",
         "bwd f-evals / batch (mean / max)", "converged fwd / bwd", "peak val acc",
         "t → common acc (s)",
         "speed-up vs forward", "t → fraction target (s)", "speed-up (fraction)", "test acc"],
        rows))
    saved_rows = []
    for n in ("anderson", "broyden"):
        r = res["ratios"]["common"][n]
        saved_rows.append([n, fmt(r.get("compute_saved")), fmt(r.get("feval_saved")),
                           fmt(res["per_batch_compute_saved"][n]),
                           fmt(res["epoch_time_speedup"][n])])
    lines.append("\nCompute saved against forward iteration (same run):\n")
    lines.append(markdown_table(
        ["solver", "time to common acc: 1 − t/t_fwd", "f-evals to common acc: 1 − F/F_fwd",
         "f-evals per batch (fwd+bwd): 1 − F/F_fwd", "epoch-time speed-up"], saved_rows))
    inf_rows = [[f"{r['tol']:.0e}", r["solver"], r["time_per_structure_s"] * 1e3,
                 r["nfev_mean"], r["residual_max"], r["converged_fraction"],
                 "yes" if r["matched"] else "NO", r["accuracy"],
                 "1×" if r["solver"] == "forward" else fmt(r["speedup_vs_forward"], suffix="×"),
                 "–" if r["solver"] == "forward"
                 else f"{fmt(r['compute_saved'])} / {fmt(r['feval_saved'])}"]
                for r in res["inference"]]
    lines.append(f"\nInference on the Anderson-trained weights ({res['inference'][0]['n']} test "
                 f"structures, max_iter {res['settings']['inference_max_iter']}, "
                 f"{_repeats(res['settings']['repeats'])}):\n")
    lines.append(markdown_table(
        ["tol", "solver", "ms / structure", "f-evals (mean)", "max residual", "converged",
         "matched", "accuracy", "speed-up vs forward", "compute saved (time / f-evals)"],
        inf_rows))
    spec = res.get("trained_cell_spectrum")
    if spec:
        lines.append(
            f"\nSpectrum of the Anderson-trained cell ({spec['n']} test structures, "
            f"{spec['arnoldi_steps']} Arnoldi steps): ρ(∂f/∂z) at z* "
            f"{min(spec['rho_power']):.3f}–{max(spec['rho_power']):.3f} (forward iteration "
            f"needs ≈ log(tol)/log ρ evaluations); best Krylov rate of the fitted disk "
            f"{min(spec['krylov_rate']):.3f}–{max(spec['krylov_rate']):.3f}, so no "
            f"Anderson-type method can need fewer than about 1/"
            f"{max(spec['predicted_ratio']):.1f} of forward iteration's f evaluations at a "
            f"small tolerance (predicted ratio {min(spec['predicted_ratio']):.1f}–"
            f"{max(spec['predicted_ratio']):.1f}×; see `andersonn bench spectrum`).\n")
    cross = res["crossover"]
    pen = res["anderson_cost_per_iteration_vs_forward"]
    lines.append("\nResidual vs time (one batch of the best-validation weights' own problem, "
                 f"tol 0, {_repeats(res['settings']['repeats'])} of the time stamps): "
                 "Anderson costs "
                 f"{fmt(pen)}× forward iteration's time per iteration; "
                 + (f"crossover at {cross['time_s'] * 1e3:.1f} ms (Anderson iteration "
                    f"{cross['anderson_iteration']}, residual {cross['residual']:.2e} vs "
                    f"forward {cross['forward_residual_at_time']:.2e})."
                    if cross else "no crossover within the traced iterations.") + "\n")
    tm = res["targets_met"]
    lines.append(
        f"\nTargets: training ≥5× sooner to common accuracy: "
        f"**{'met' if tm['train_5x']['met'] else 'not met'}** ({fmt(tm['train_5x']['value'])}×); "
        f"inference ≥8× at tol {fmt(tm['inference_8x']['tol'])}: "
        f"**{'met' if tm['inference_8x']['met'] else 'not met'}** "
        f"({fmt(tm['inference_8x']['value'])}×). Zero-overhead bounds (forward / Anderson "
        f"f-evaluation ratio): training {fmt(tm['train_5x'].get('feval_bound'))}× per batch, "
        f"inference {fmt(tm['inference_8x'].get('feval_bound'))}×.\n")
    return "\n".join(lines)


def plots(res: dict[str, Any], out_dir: Path) -> None:
    """Write the benchmark's PNG plots (accuracy vs time, residual vs time, inference) to
    ``out_dir``; a plotting failure is reported and does not lose the result."""
    try:
        fig, ax = new_figure()
        for n in VARIANTS:
            c = res["variants"][n]["curve"]
            ax.plot([p["train_time_s"] for p in c], [p["val_acc"] for p in c], marker="o",
                    ms=3, label=n)
        ax.axhline(res["targets"]["common"], color="grey", ls="--", lw=1,
                   label=f"common acc {res['targets']['common']:.3f}")
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{res['task']}: validation accuracy vs wall time")
        ax.legend()
        save_figure(fig, out_dir / "val_acc_vs_time.png")

        fig, ax = new_figure()
        for n in DEQ_SOLVERS:
            tr = res["residual_traces"][n]
            ax.semilogy(np.asarray(tr["time_s"]) * 1e3, tr["best_residual"], marker=".",
                        label=n)
        cross = res["crossover"]
        if cross:
            ax.axvline(cross["time_s"] * 1e3, color="grey", ls="--", lw=1,
                       label=f"crossover {cross['time_s'] * 1e3:.1f} ms")
        ax.set_xlabel("wall time (ms)")
        ax.set_ylabel("relative residual (best so far, batch mean)")
        ax.set_title("residual vs time, one batch")
        ax.legend()
        save_figure(fig, out_dir / "residual_vs_time.png")

        fig, ax = new_figure()
        tols = list(res["settings"]["inference_tols"])
        width = 0.8 / len(DEQ_SOLVERS)
        for i, n in enumerate(DEQ_SOLVERS):
            vals = [next(r["time_per_structure_s"] * 1e3 for r in res["inference"]
                         if r["solver"] == n and r["tol"] == tol) for tol in tols]
            ax.bar(np.arange(len(tols)) + i * width, vals, width, label=n)
        ax.set_xticks(np.arange(len(tols)) + width, [f"{t:.0e}" for t in tols])
        ax.set_xlabel("relative residual tolerance")
        ax.set_ylabel("inference time per structure (ms)")
        ax.set_title("inference at matched residual")
        ax.legend()
        save_figure(fig, out_dir / "inference_time.png")
    except Exception as exc:  # plots are a by-product: never lose the numbers over them
        print(f"andersonn: warning: plotting failed: {exc}", file=sys.stderr)
