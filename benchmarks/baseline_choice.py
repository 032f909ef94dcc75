"""Which baseline correction of the experiment: the scores of the demo's spectra under each.

Run after the README's main command: python benchmarks/baseline_choice.py [--run .]

Scores ML-experiment and reference-experiment (PCC and Wasserstein distance, as ``compare``
does, same seed) with the experiment's baseline removed by:
  hand ALS    the project's former hand-written asymmetric least squares (sparse solve, 10
              reweightings), kept here only as the baseline of this measurement;
  asls        pybaselines' asymmetric least squares, the same λ and p;
  arpls       pybaselines' asymmetrically reweighted PLS (no p), the same λ;
each with the floor (corrected absorbance below 1 % of the highest band set to 0) and without.
The differences are reported against hand ALS with the floor (the former default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def hand_als(y: np.ndarray, smoothness: float, asymmetry: float, iterations: int = 10
             ) -> np.ndarray:
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    n = len(y)
    d = sparse.diags([1.0, -2.0, 1.0], [0, -1, -2], shape=(n, n - 2))
    penalty = smoothness * (d @ d.T)
    w, z = np.ones(n), y
    for _ in range(iterations):
        z = spsolve((sparse.diags(w) + penalty).tocsc(), w * y)
        w = np.where(y > z, asymmetry, 1.0 - asymmetry)
    return z


def main() -> None:
    from palirs_data import experiment
    from palirs_data.compare import compare, md_runs
    from palirs_data.experiment import experimental_spectra
    from palirs_data.config import load_params
    from palirs_data.trajectory import TrajectoryStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."))
    run = parser.parse_args().run
    p = load_params(run / "params.yaml")
    ml = md_runs(TrajectoryStore(run / "data/ir/trajectories.zarr", mode="r"), p.ir, p.compare)
    ref = md_runs(TrajectoryStore(run / "data/reference/md_trajectories.zarr", mode="r"),
                  p.ir, p.compare)
    library = experiment.baseline_of
    rows = {}
    for name in ("hand ALS", "asls", "arpls"):
        for floor in (0.01, 0.0):
            if name == "hand ALS":
                experiment.baseline_of = lambda y, **o: hand_als(  # noqa: E731
                    y, o["smoothness"], o["asymmetry"])
                method = "asls"
            else:
                experiment.baseline_of, method = library, name
            config = p.compare.model_copy(update={"baseline_method": method,
                                                  "baseline_floor": floor})
            exp = experimental_spectra(run / "data/experiment", config, p.ir)
            metrics = compare(ml, ref, exp, config, p.ir)
            rows[(name, floor)] = metrics["molecules"]
    experiment.baseline_of = library
    base = rows[("hand ALS", 0.01)]
    print(f"{'baseline':<10} {'floor':>5} {'molecule':<12} {'comparison':<24} "
          f"{'PCC':>6} {'dPCC':>7} {'WD cm-1':>8} {'dWD':>6}")
    for (name, floor), molecules in rows.items():
        for molecule, entry in molecules.items():
            for pair in ("ml_vs_experiment", "reference_vs_experiment"):
                if pair not in entry:
                    continue
                s, b = entry[pair], base[molecule][pair]
                print(f"{name:<10} {floor:>5g} {molecule:<12} {pair:<24} {s['pcc']:>6.3f} "
                      f"{s['pcc'] - b['pcc']:>+7.3f} {s['wasserstein_cm1']:>8.1f} "
                      f"{s['wasserstein_cm1'] - b['wasserstein_cm1']:>+6.1f}")


if __name__ == "__main__":
    main()
