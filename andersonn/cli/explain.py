"""Command-line command ``explain``: per-atom attributions of a run's predictions."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from andersonn.cli.options import non_negative_int, output_dir, positive_int


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the top-level parser."""
    ex = commands.add_parser(
        "explain", help="which atoms a run's prediction rests on (integrated gradients)",
        description="For each INPUT (as predict takes them): the predicted class and how the "
        "log-probability of the explained class splits over the atoms (crystals: over the "
        "environments of symmetry-equivalent sites) and the whole-structure features, by "
        "integrated gradients from the empty image. Positive shares speak for the class. "
        "The fixed point is solved to 1e-5 here (predict stops at the run's looser tolerance), "
        "so probabilities can differ from predict's in the third decimal.")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("inputs", metavar="INPUT", nargs="+")
    ex.add_argument("--target", metavar="CLASS", default=None,
                    help="class to explain, its name in any case (default: each input's "
                    "predicted class)")
    ex.add_argument("--steps", type=positive_int, default=None,
                    help="points on the integration path (32); more shrink the gap")
    ex.add_argument("--top", type=non_negative_int, default=12,
                    help="rows printed per input (12)")
    ex.add_argument("--out", metavar="DIR", default=None, type=output_dir,
                    help="write explanations.json and, for molecules, one PNG each with "
                    "the atoms coloured by their share (replacing those of an earlier "
                    "explain into DIR)")
    ex.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    ex.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    import torch

    from andersonn.crossval import is_cross_validation
    from andersonn.errors import ConfigError
    from andersonn.explain import (
        DEFAULT_STEPS,
        draw_explanation,
        explain,
        picture_name,
        previous_pictures,
    )
    from andersonn.fileio import atomic_write_json
    from andersonn.predict import Classifier, without_name
    from andersonn.predict.output import keep_existing_output

    if is_cross_validation(args.run_dir):
        raise ConfigError(f"{args.run_dir} is a cross-validation of several fold runs; explain "
                          f"one of them, e.g. {Path(args.run_dir) / 'fold-1'}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.run_dir)
    results = explain(classifier, args.inputs, target=args.target,
                      steps=args.steps if args.steps is not None else DEFAULT_STEPS)
    for result in results:
        if result.ok:
            print(result.to_text(top=args.top))
        else:  # as predict and evaluate report an input that failed
            shown = result.name if result.name.strip() else repr(result.name)  # '' visibly
            reason = without_name(without_name(result.error, shown), result.name)
            print(f"andersonn: cannot explain {shown}: {reason}", file=sys.stderr)
    if args.out:
        folder = Path(args.out)
        if not any(r.ok for r in results):
            keep_existing_output(folder / "explanations.json", len(results), "explained")
        earlier = previous_pictures(folder)  # listed by the explanations.json replaced here
        records = []
        for i, result in enumerate(results, start=1):
            record = result.to_dict()
            if result.ok and result.kind == "molecule":
                try:
                    path = draw_explanation(result, folder / picture_name(i, result.name))
                    record["picture"] = path.name
                except Exception as exc:  # a picture is a by-product; keep the numbers
                    record["picture_error"] = str(exc).splitlines()[0]
            records.append(record)
        # atom indices (rows' "atoms", the order of "atom_shares") count from 0
        atomic_write_json(folder / "explanations.json",
                          {"run": str(args.run_dir), "atom_index_base": 0,
                           "explanations": records})
        drawn = {r["picture"] for r in records if "picture" in r}
        removed = 0
        for stale in earlier:
            if stale.name not in drawn:
                with contextlib.suppress(OSError):
                    stale.unlink()
                    removed += 1
        print(f"→ {folder / 'explanations.json'}"
              + (f" and {len(drawn)} picture(s)" if drawn else "")
              + (f"; removed {removed} picture(s) of an earlier explain there" if removed
                 else ""))
    failed = sum(not r.ok for r in results)
    return 0 if failed < len(results) else 2
