"""Is the committee's MD colder than the label source's? Every pooled kinetic temperature of
``metrics/ir.json`` (ML) and ``metrics/reference_md.json`` (reference) in the given metrics
directories (and their ``transfer_`` counterparts), pooled over sets.

Each set (one molecule and temperature of one run of the pipeline) gives a mean kinetic
temperature and a standard error from the spread of its run means; the script prints every set
and, for ML and reference apart, the mean deviation from the target (%), the mean
z = (T - target) / stderr with its standard error over the sets, the mean z² (1 when the
sets' standard errors are right and many runs make them; with n runs a Student-t statistic has
variance (n - 1)/(n - 3): 1.67 for 6 runs, 1.22 for 12) and how many sets miss 5 %; then the
ML minus reference difference over the sets one run of the pipeline has on both sides.

    python benchmarks/temperature_pool.py metrics benchmarks/results/*/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FILES = {"ML": ("ir.json", "transfer_ir.json"),
         "reference": ("reference_md.json", "transfer_reference_md.json")}


def sets(directory: Path, names: tuple[str, ...]) -> list[dict]:
    out = []
    for name in names:
        path = directory / name
        if not path.is_file():
            continue
        pooled = json.loads(path.read_text()).get("kinetic_temperature", {}).get("pooled", {})
        for key, v in pooled.items():
            if v.get("stderr_K"):
                out.append({"where": f"{directory}/{name}", "set": key, **v})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+")
    args = parser.parse_args()
    paired = []  # ML minus reference, set by set, where one run of the pipeline has both
    for d in args.directories:
        for ml_name, ref_name in zip(*FILES.values()):
            ref = {r["set"]: r for r in sets(d, (ref_name,))}
            for r in sets(d, (ml_name,)):
                if r["set"] in ref:
                    paired.append(100 * (r["mean_K"] - ref[r["set"]]["mean_K"]) / r["target_K"])
    for source, names in FILES.items():
        rows = [r for d in args.directories for r in sets(d, names)]
        if not rows:
            print(f"{source}: no sets")
            continue
        dev = np.array([100 * (r["mean_K"] - r["target_K"]) / r["target_K"] for r in rows])
        z = np.array([(r["mean_K"] - r["target_K"]) / r["stderr_K"] for r in rows])
        for r, zz in zip(rows, z):
            print(f"  {source:9s} {r['where']}: {r['set']} {r['mean_K']:.1f} ± "
                  f"{r['stderr_K']:.1f} K ({r['runs']} runs), z {zz:+.2f}")
        print(f"{source}: {len(rows)} sets; deviation {dev.mean():+.2f} ± "
              f"{dev.std(ddof=1) / np.sqrt(len(dev)):.2f} % (mean ± standard error over sets); "
              f"mean z {z.mean():+.2f} ± {z.std(ddof=1) / np.sqrt(len(z)):.2f}; "
              f"mean z² {np.mean(z ** 2):.2f}; outside 5 %: "
              f"{int((np.abs(dev) > 5).sum())} of {len(dev)}")
    if paired:
        diff = np.array(paired)
        print(f"ML - reference, {len(diff)} paired sets: {diff.mean():+.2f} ± "
              f"{diff.std(ddof=1) / np.sqrt(len(diff)):.2f} % of the target")


if __name__ == "__main__":
    main()
