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

With ``--history``, the committed locks instead: every distinct set of per-run kinetic
temperatures that git's history of ``metrics/ir.json`` (ML) and ``metrics/reference_md.json``
holds for one molecule and temperature. All locks run the same seeds (``ir.seed``), so run k of
one lock and run k of the next start from the same velocities under the same noise; printed: how
the run means of two ML sets correlate (over the runs, for every pair of sets), how the ML and
reference sets of one lock correlate, and the mean over the ML sets, run by run. Correlated
sets are one sample, not many: their agreement is no evidence of a bias.

    python benchmarks/temperature_pool.py --history
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


def committed_runs(commit: str, name: str) -> dict[str, dict[int, float]]:
    """Per-run mean kinetic temperatures of ``metrics/<name>`` at ``commit``, by set."""
    try:
        text = subprocess.check_output(["git", "show", f"{commit}:metrics/{name}"],
                                       stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        return {}
    out: dict[str, dict[int, float]] = {}
    for key, v in json.loads(text).get("kinetic_temperature", {}).get("runs", {}).items():
        group, run = key.rsplit("/", 1)
        out.setdefault(group, {})[int(run)] = v["mean_K"]
    return out


def history() -> None:
    """Correlation of the run means between the committed locks (see the module docstring)."""
    commits = subprocess.check_output(
        ["git", "log", "--format=%h", "--", "metrics/ir.json", "metrics/reference_md.json"],
        text=True).split()
    ml: dict[str, list[tuple]] = {}
    pairs: dict[str, list[tuple]] = {}
    for commit in commits:
        a, b = committed_runs(commit, "ir.json"), committed_runs(commit, "reference_md.json")
        for group, runs in a.items():
            ml_set = tuple(runs[k] for k in sorted(runs))
            if ml_set not in ml.setdefault(group, []):
                ml[group].append(ml_set)
            if group in b and sorted(b[group]) == sorted(runs):
                pair = (ml_set, tuple(b[group][k] for k in sorted(runs)))
                if pair not in pairs.setdefault(group, []):
                    pairs[group].append(pair)
    for group, found in ml.items():
        n = max(len(s) for s in found)
        sets_ = np.array([s for s in found if len(s) == n])  # the commonest protocol: most runs
        if len(sets_) < 2:
            continue
        r = np.corrcoef(sets_)[~np.eye(len(sets_), dtype=bool)]
        print(f"{group}: {len(sets_)} distinct ML sets of {n} runs in the history; means "
              + " ".join(f"{m:.1f}" for m in sets_.mean(axis=1)))
        print(f"  ML set vs ML set, run means: r {r.mean():+.2f} on average "
              f"(from {r.min():+.2f} to {r.max():+.2f})")
        cross = [np.corrcoef(x, y)[0, 1] for x, y in pairs.get(group, []) if len(x) == n]
        if cross:
            print(f"  ML vs reference of one lock: r {np.mean(cross):+.2f} on average over "
                  f"{len(cross)} locks (from {min(cross):+.2f} to {max(cross):+.2f})")
        print("  run by run, mean over the ML sets: "
              + " ".join(f"{m:.0f}" for m in sets_.mean(axis=0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="*")
    parser.add_argument("--history", action="store_true",
                        help="the committed locks' per-run temperatures (git history)")
    args = parser.parse_args()
    if args.history:
        history()
        return
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
