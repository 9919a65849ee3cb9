"""Train polarity on SMILES conformers instead of the QM9 DFT geometries.

    python scripts/smiles_geometry_probe.py OUT_RUN [--limit 8000] [--epochs 6] [--jac-reg 1.0]

Takes the molecules, labels and splits of the polarity build with ``--limit`` and re-encodes
each molecule from its QM9 SMILES, the way ``andersonn predict`` reads a SMILES (one seeded
ETKDG + MMFF94 conformer). Molecules that cannot be embedded are dropped. It writes that
dataset next to the run (``OUT_RUN-cache``) and trains the DEQ on it with the given settings
(one torch thread). Its test accuracy is then measured on SMILES conformers. Compare it with
``andersonn evaluate RUN --labels`` on ``scripts/qm9_holdout.py --split test`` SMILES for a run
trained on the DFT geometries.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import zipfile

import numpy as np

from andersonn.data import load_dataset
from andersonn.data.archives import archive_dir
from andersonn.data.cache import open_cache, write_cache
from andersonn.data.qm9 import MEMBERS
from andersonn.images.batch import featurize_many
from andersonn.training import TrainConfig, train


def qm9_smiles() -> dict[str, str]:
    """QM9 id -> SMILES, from the cached ``qm9pack`` wheel."""
    wheel = next(archive_dir().glob("qm9pack-*.whl"), None)
    if wheel is None:
        raise SystemExit("smiles_geometry_probe: run `andersonn data build polarity` first")
    csv.field_size_limit(sys.maxsize)
    smiles = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in MEMBERS:
            with zf.open(member) as handle:
                for row in csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")):
                    smiles[row["XYZ_file"].strip().removesuffix(".xyz")] = row["SMILES"].strip()
    return smiles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT_RUN")
    parser.add_argument("--limit", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--jac-reg", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    ds = load_dataset("polarity", limit=args.limit)
    smiles = qm9_smiles()
    t0 = time.perf_counter()
    res = featurize_many([(smiles[i], "smiles", i) for i in ds.ids], "polarity",
                         workers=args.workers, progress=False)
    print(f"encoded {len(res.ok_indices)} of {len(ds.ids)} SMILES in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    ok = np.asarray(res.ok_indices)
    meta = {**ds.meta, "geometry": "SMILES: one ETKDG + MMFF94 conformer, as predict"}
    cache = write_cache(f"{args.out}-cache", images=res.images,
                        labels=np.asarray(ds.labels)[ok], ids=[ds.ids[i] for i in ok],
                        splits=np.asarray(ds.splits)[ok], classes=list(ds.classes), meta=meta)
    cfg = TrainConfig(task="polarity", epochs=args.epochs, threads=1, jac_reg=args.jac_reg,
                      limit=args.limit)
    result = train(cfg, args.out, dataset=open_cache(cache), progress=False)
    print(f"test accuracy on SMILES conformers: {result.test_metrics['accuracy']:.4f} "
          f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
