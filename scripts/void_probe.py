"""How well the mof-pore image's void diameter matches CoRE MOF's Zeo++ LCD, and how much it
moves with the cell's origin.

    python scripts/void_probe.py [--n 300] [--shifts 3]

Reads every k-th CIF of CoRE MOF 2019-ASR from the ``core_mof`` archive in
``$ANDERSONN_CACHE/archives`` (``andersonn data fetch mof-pore`` puts it there), computes
:func:`andersonn.images.physics.void_descriptors` on the CIF as written and with the atoms
shifted by ``--shifts`` random fractions of the cell (seeded), and prints the Pearson r and mean
absolute error against the LCD, the share of structures a threshold on the diameter alone puts in
the right small / medium / large class (6 and 12 Å), and the largest change under a shift.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from andersonn.data import core_mof
from andersonn.data.archives import ARCHIVES, default_cache_dir
from andersonn.errors import InputError
from andersonn.images.physics import void_descriptors
from andersonn.structures import read_structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="CIFs to measure")
    parser.add_argument("--shifts", type=int, default=3, help="random origin shifts per CIF")
    parser.add_argument("--worst", type=int, default=3, help="list the CIFs that move most")
    args = parser.parse_args()
    archive = {"core_mof": default_cache_dir() / "archives" / ARCHIVES["core_mof"].filename}
    entries = core_mof.read(archive).entries
    entries = entries[:: max(1, len(entries) // args.n)][: args.n]
    core_mof.materialize(archive, entries)
    lcd, est, spread, names, seconds, skipped = [], [], [], [], 0.0, 0
    for entry in tqdm(entries, desc="void diameters"):
        try:
            s = read_structure(entry.content, fmt="cif", name=entry.id)
        except InputError:
            skipped += 1
            continue
        frac = np.linalg.solve(s.cell.T, s.positions.T).T
        values = []
        for k in range(args.shifts + 1):
            shift = np.random.default_rng(k).random(3) if k else np.zeros(3)
            start = time.perf_counter()
            values.append(void_descriptors(s.numbers, ((frac + shift) % 1.0) @ s.cell,
                                           s.cell)[0])
            seconds += time.perf_counter() - start
        lcd.append(float(entry.value))
        est.append(values[0])
        spread.append(max(values) - min(values))
        names.append(entry.id)
    lcd_a, est_a = np.array(lcd), np.array(est)
    classes = [np.digitize(v, [6.0, 12.0]) for v in (lcd_a, est_a)]
    r = np.corrcoef(lcd_a, est_a)[0, 1]
    print(f"{len(lcd)} CIFs ({skipped} unreadable); Pearson r {r:.4f}, "
          f"MAE {np.abs(lcd_a - est_a).mean():.3f} Å, class from the diameter alone "
          f"{(classes[0] == classes[1]).mean():.3f}; origin shifts: max change "
          f"{max(spread):.4f} Å, > 0.01 Å in {sum(x > 0.01 for x in spread)}; "
          f"{1000 * seconds / len(lcd) / (args.shifts + 1):.1f} ms per diameter")
    for i in np.argsort(spread)[::-1][: args.worst]:
        print(f"  {names[i]}: LCD {lcd[i]:.2f} Å, estimate {est[i]:.2f} Å, moves by "
              f"{spread[i]:.3f} Å")


if __name__ == "__main__":
    main()
