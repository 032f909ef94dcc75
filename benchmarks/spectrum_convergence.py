"""How long and how many MD runs a spectrum needs: the label source's own MD (the ``ir``
protocol through the shared integrator), two independent sets of runs (seeds 0 and 1), scored
against each other with the bootstrap intervals of ``compare``. Two sets of the same physics
differ by noise only, so their PCC, WD and intervals are the floor any ML–reference comparison
of that length and run count can reach; the script also prints the pooled kinetic temperature.

    python benchmarks/spectrum_convergence.py --settings 3x3000 12x3000 3x50000 --friction 0.001

Prints one row per setting (runs x production fs) and friction: PCC [interval], WD
[interval], the interval half-widths, pooled kinetic temperatures of both sets, wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from palirs_data import structures
from palirs_data.compare import md_runs, score
from palirs_data.compute import Executor, dask_client
from palirs_data.config import CompareConfig, ComputeConfig, IrConfig, LabelerConfig
from palirs_data.reference_md import reference_ir
from palirs_data.trajectory import TrajectoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equilibrium", default="data/sample/equilibrium.parquet")
    parser.add_argument("--settings", nargs="+", default=["3x3000", "12x3000"],
                        help="runs x production (fs) per set")
    parser.add_argument("--friction", type=float, nargs="+", default=[0.001])
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    table = structures.read_table(args.equilibrium)
    minima = structures.from_table(table)
    print(f"{'runs':>4} {'ps':>5} {'gamma':>6} {'PCC A vs B':>24} {'+-':>6} {'WD cm-1':>20} "
          f"{'+-':>5} {'T_A K':>12} {'T_B K':>12} {'s':>6}", flush=True)
    compare_config = CompareConfig()
    with dask_client(ComputeConfig(n_workers=args.workers)) as client, \
            tempfile.TemporaryDirectory() as tmp:
        for friction in args.friction:
            for setting in args.settings:
                n, produce = int(setting.split("x")[0]), float(setting.split("x")[1])
                t0 = time.perf_counter()
                sets, temps = [], []
                for seed in (0, 1):
                    config = IrConfig(temperatures_K=[args.temperature], trajectories=n,
                                      thermalise_fs=500.0, produce_fs=produce, seed=seed,
                                      friction_fs=friction)
                    store = TrajectoryStore(Path(tmp) / f"{friction}-{setting}-{seed}.zarr")
                    _, metrics = reference_ir(table, config, LabelerConfig(), store,
                                              executor=Executor(client))
                    sets.append(md_runs(store, config, compare_config))
                    pooled = metrics["kinetic_temperature"]["pooled"]
                    temps.append(next(iter(pooled.values())))
                key = (minima[0].molecule, args.temperature)
                s = score(sets[0][key], sets[1][key], compare_config.window_cm1,
                          compare_config, np.random.default_rng(0))
                pcc_hw = (s["pcc_ci"][1] - s["pcc_ci"][0]) / 2
                wd_hw = (s["wasserstein_cm1_ci"][1] - s["wasserstein_cm1_ci"][0]) / 2
                t_text = [f"{t['mean_K']:.0f}+-{t['stderr_K'] or 0:.0f}" for t in temps]
                print(f"{n:>4} {produce / 1000:>5.1f} {friction:>6.3f} "
                      f"{s['pcc']:>7.3f} [{s['pcc_ci'][0]:.3f}, {s['pcc_ci'][1]:.3f}] "
                      f"{pcc_hw:>6.3f} {s['wasserstein_cm1']:>6.1f} "
                      f"[{s['wasserstein_cm1_ci'][0]:.0f}, {s['wasserstein_cm1_ci'][1]:.0f}] "
                      f"{wd_hw:>5.1f} {t_text[0]:>12} {t_text[1]:>12} "
                      f"{time.perf_counter() - t0:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
