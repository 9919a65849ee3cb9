"""Labelled CSVs of QM9 molecules that a polarity run never saw, for ``andersonn evaluate``.

    python scripts/qm9_holdout.py RUN OUT_DIR [--n 1000] [--seed 0] [--split test]

Picks ``--n`` molecules of the ``qm9pack`` archive that are not in the dataset build ``RUN`` was
trained on (any split; with ``--split``, the molecules of that split of the build instead, or
with ``--split all`` all of them), and writes the same molecules twice:

- ``OUT_DIR/smiles.csv``: ``smiles,dipole``, the way a chemist would give them (RDKit builds a
  conformer; the DFT geometry is not used);
- ``OUT_DIR/xyz.csv`` + ``OUT_DIR/xyz/*.xyz``: ``file,dipole`` with the QM9 DFT geometries, the
  way the training images were made.

Then ``andersonn evaluate RUN --labels OUT_DIR/smiles.csv`` (and ``.../xyz.csv``) measures how
well the run does on new molecules, and how much of that depends on getting the DFT geometry.
Unseen molecules exist only for runs trained on a ``--limit`` subset. With ``--split test``,
``xyz.csv`` must score exactly what ``andersonn evaluate RUN --split test`` does (the same
images from files as from the build), and ``smiles.csv`` the same molecules from SMILES.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from andersonn.data.archives import archive_dir
from andersonn.data.qm9 import MEMBERS, xyz_text
from andersonn.data.splits import SPLIT_NAMES
from andersonn.training.runs import run_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("out", metavar="OUT_DIR")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                        help="take the molecules of this split of the run's build (all: every "
                        "molecule of it, e.g. to train on them through a labels file)")
    args = parser.parse_args(argv)
    config = json.loads((Path(args.run) / "config.json").read_text())
    if config.get("task") != "polarity":
        print(f"qm9_holdout: {args.run} is a {config.get('task')} run, not polarity",
              file=sys.stderr)
        return 2
    ds = run_dataset(config)
    if args.split:
        chosen = {i for i, s in zip(ds.ids, ds.splits, strict=True)
                  if args.split == "all" or s == SPLIT_NAMES.index(args.split)}
    else:
        seen = set(ds.ids)
    wheel = next(archive_dir().glob("qm9pack-*.whl"), None)
    if wheel is None:
        print("qm9_holdout: no qm9pack wheel in the archive cache; run "
              "`andersonn data build polarity` first", file=sys.stderr)
        return 2
    csv.field_size_limit(sys.maxsize)
    rows = []
    with zipfile.ZipFile(wheel) as zf:
        for member in MEMBERS:
            with zf.open(member) as handle:
                for row in csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")):
                    name = row["XYZ_file"].strip().removesuffix(".xyz")
                    if (name in chosen) if args.split else (name not in seen):
                        rows.append((name, row["SMILES"].strip(), row["Elements"],
                                     row["XYZ_Ang"], float(row["Dipole_debye"])))
    n = min(args.n, len(rows))
    pick = np.random.default_rng(args.seed).choice(len(rows), size=n, replace=False)
    out = Path(args.out)
    (out / "xyz").mkdir(parents=True, exist_ok=True)
    smiles_lines, xyz_lines = ["smiles,dipole"], ["file,dipole"]
    for i in sorted(pick):
        name, smiles, elements, coords, dipole = rows[i]
        text = xyz_text(ast.literal_eval(elements), ast.literal_eval(coords), name)
        (out / "xyz" / f"{name}.xyz").write_text(text)
        smiles_lines.append(f"{smiles},{dipole}")
        xyz_lines.append(f"xyz/{name}.xyz,{dipole}")
    (out / "smiles.csv").write_text("\n".join(smiles_lines) + "\n")
    (out / "xyz.csv").write_text("\n".join(xyz_lines) + "\n")
    where = args.split or "unseen"
    print(f"{n} of {len(rows)} {where} molecules → {out}/smiles.csv, {out}/xyz.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
