"""How often prediction's applicability-domain warnings fire, in and out of domain.

    python scripts/domain_probe.py CRYSTAL_RUN POLARITY_RUN MOF_RUN [--mofs 200]

For each trained run (``andersonn train``; older runs first get their domain and feature domain
with ``andersonn calibrate RUN``) it counts the validation and test structures of the run's own
full dataset build whose images lie beyond the feature-distance threshold — the false-alarm
rate. Then it gives the crystal-gap model the first ``--mofs`` CoRE MOF 2019 CIFs (crystals
made of elements it has seen, but nothing like its training crystals) and the polarity model a
handful of drug molecules (larger than any QM9 molecule), and prints how many are flagged.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from andersonn.data import load_dataset
from andersonn.data.archives import ensure_archive
from andersonn.predict import Classifier

DRUGS = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O", "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "nicotine": "CN1CCCC1c1cccnc1", "salicylic acid": "OC(=O)c1ccccc1O",
    "naphthalene": "c1ccc2ccccc2c1", "isoproterenol": "CC(C)NCC(O)c1ccc(O)c(O)c1",
    "dopamine": "NCCc1ccc(O)c(O)c1", "glycerol": "OCC(O)CO",
}


def false_alarms(run: str) -> None:
    """Share of the run's own validation / test structures beyond the feature threshold."""
    clf = Classifier.load(run)
    if clf.feature_domain_ is None:
        raise SystemExit(f"{run}: no feature domain; run `andersonn calibrate {run}` first")
    ds = load_dataset(clf.config_["task"], limit=clf.config_["train"].get("limit"))
    for split in ("val", "test"):
        idx = ds.split_indices(split)
        far = clf.feature_domain_.distances(np.asarray(ds.images[idx])) > \
            clf.feature_domain_.threshold
        print(f"{run}: {split} {len(idx)} structures, {100 * far.mean():.2f} % flagged")


def flagged(preds: list) -> str:
    ok = [p for p in preds if p.ok]
    unlike = sum(any("unlike the training" in w for w in p.warnings) for p in ok)
    warned = sum(bool(p.warnings) for p in ok)
    return (f"{len(ok)} predicted, {unlike} ({100 * unlike / max(len(ok), 1):.1f} %) unlike the "
            f"training structures, {warned} with any warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("crystal_run")
    ap.add_argument("polarity_run")
    ap.add_argument("mof_run")
    ap.add_argument("--mofs", type=int, default=200)
    args = ap.parse_args()
    for run in (args.crystal_run, args.polarity_run, args.mof_run):
        false_alarms(run)

    with zipfile.ZipFile(ensure_archive("core_mof")) as zf:
        member = next(n for n in zf.namelist() if n.endswith("2019-ASR.tar.xz"))
        payload = zf.read(member)
    with tempfile.TemporaryDirectory() as tmp, \
            tarfile.open(fileobj=io.BytesIO(payload), mode="r:xz") as tf:
        n = 0
        for m in tf:
            if m.isfile() and m.name.endswith(".cif") and n < args.mofs:
                data = tf.extractfile(m)
                if data is not None:
                    (Path(tmp) / Path(m.name).name).write_bytes(data.read())
                    n += 1
        preds = Classifier.load(args.crystal_run).predict_inputs([tmp], workers=None)
    print(f"{n} CoRE MOFs given to {args.crystal_run}: {flagged(preds)}")

    preds = Classifier.load(args.polarity_run).predict_inputs(list(DRUGS.values()))
    print(f"{len(DRUGS)} drug molecules given to {args.polarity_run}: {flagged(preds)}")
    for name, p in zip(DRUGS, preds, strict=True):
        print(f"  {name:16s} {p.label}: {'; '.join(p.warnings) or 'no warning'}")


if __name__ == "__main__":
    main()
