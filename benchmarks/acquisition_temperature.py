"""How close to its target does a short acquisition run keep its temperature, by friction?

Run: python benchmarks/acquisition_temperature.py [--frictions 0.01 0.05] [--replicas 8]
     [--committee data/campaign/iter1/committee] [--equilibrium data/sample/equilibrium.parquet]

For each friction (one process each, one thread, side by side), the acquire stage's MD
(``acquisition.acquisition_md`` with params.yaml's ``active_learning.acquire`` settings, only
``friction_fs`` and ``replicas`` changed) of the committee from the minimum of every molecule at
every temperature, for one iteration (``duration_fs``, after ``thermalise_fs``). Printed per
friction and temperature: the mean kinetic temperature of the runs, the standard deviation of
the run means over the replicas (what one run's mean scatters by), and from it the standard
error of the pooled mean of ``params.yaml``'s number of replicas; and the frame spread of the
committee's force disagreement (the candidates acquisition selects from). The seeds are those
of the stage (``acquire.seed``, iteration 1), so the first replicas are the stage's own runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(friction: float, args) -> dict:
    import numpy as np

    from palirs_data import structures
    from palirs_data.acquisition import acquisition_md
    from palirs_data.committee import Committee
    from palirs_data.config import load_params, torch_dtype
    from palirs_data.md_analysis import kinetic_temperatures_K
    from palirs_data.trajectory import TrajectoryStore

    params = load_params(args.params)
    config = params.active_learning.acquire.model_copy(
        update={"friction_fs": friction, "replicas": args.replicas})
    paths = sorted(args.committee.glob("model_*.model"))
    committee = Committee.load(paths, dtype=torch_dtype(config.dtype))
    minima = structures.from_table(structures.read_table(args.equilibrium))
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore(Path(tmp) / "md.zarr")
        start = time.perf_counter()
        acquisition_md(committee, minima, config, iteration=1, store=store,
                       guard=params.guard)
        seconds = time.perf_counter() - start
        out: dict = {"friction_fs": friction, "seconds": round(seconds, 1), "groups": {}}
        for key in sorted(store.keys()):
            traj = store[key]
            t = kinetic_temperatures_K(numbers=traj.numbers,
                                       velocities_A_fs=traj.read("velocities_A_fs"))
            spread = traj.read("force_std_max_eVA") if "force_std_max_eVA" in \
                traj.array_names else np.array([np.nan])
            group = out["groups"].setdefault(f"{traj.attrs['molecule']}/"
                                             f"{traj.attrs['temperature_K']:g}K",
                                             {"means": [], "spread_p90": []})
            group["means"].append(float(t.mean()))
            group["spread_p90"].append(float(np.nanpercentile(spread, 90)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frictions", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--committee", type=Path,
                        default=Path("data/campaign/iter1/committee"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # a child process: JSON on stdout's last line
        print(json.dumps(run_one(args.one, args)))
        return
    import numpy as np

    from palirs_data.config import load_params

    pooled_over = load_params(args.params).active_learning.acquire.replicas
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--one", str(f), "--replicas",
                               str(args.replicas), "--committee", str(args.committee),
                               "--equilibrium", str(args.equilibrium), "--params",
                               str(args.params)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **env}) for f in args.frictions]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    print(f"{args.replicas} replicas per temperature; pooled SE for {pooled_over} replicas")
    print(f"{'friction fs-1':>13} {'group':<16} {'mean K':>7} {'run std %':>9} "
          f"{'pooled SE %':>11} {'worst |dev| of pooled %':>23} {'spread p90 eV/A':>15} {'s':>5}")
    for r in results:
        for name, g in r["groups"].items():
            target = float(name.split("/")[-1].rstrip("K"))
            means = np.array(g["means"])
            std = 100 * means.std(ddof=1) / target
            # every disjoint set of pooled_over replicas, as the stage pools them
            sets = [means[i:i + pooled_over] for i in range(0, len(means) - pooled_over + 1,
                                                           pooled_over)]
            worst = max(abs(100 * (s.mean() / target - 1)) for s in sets)
            print(f"{r['friction_fs']:13g} {name:<16} {means.mean():7.1f} {std:9.1f} "
                  f"{std / np.sqrt(pooled_over):11.1f} {worst:23.1f} "
                  f"{np.mean(g['spread_p90']):15.3f} {r['seconds']:5.0f}")


if __name__ == "__main__":
    main()
