"""The ir stage's committee MD: one task on one worker (before) vs divided over every worker.

Run: python benchmarks/ir_md_placement.py [--models data/models/committee]
     [--dipole data/models/dipole.model] [--produce-fs 300] [--repeats 2]

Every variant runs the same MD on the default local cluster (params.yaml compute: 2 workers ×
1 thread): the ir runs of params.yaml (molecules of data/sample/equilibrium.parquet ×
temperatures × ir.trajectories, frames every ir.write_every steps) with ``--produce-fs`` of
production after ``--thermalise-fs`` of thermalisation:
  one task            all runs as one ml_md_task on one worker (how the stage ran before):
                      the other core idles;
  divided, float64    palirs_data.ir.ml_ir: the runs divided over the MD slots
                      (compute.md_slots: one per worker), one task each;
  divided, float32    the same with ir.dtype float32.
Each figure is replica-steps (thermalisation included) over the wall time from submission to
the last task's end (models loaded on the workers). The variants run --repeats times,
interleaved; the mean and the range are reported, and the ratio of the means to the first.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from palirs_data import structures
from palirs_data.compute import Executor, dask_client
from palirs_data.config import load_params
from palirs_data.ir import ir_replicas, ml_ir, ml_md_task
from palirs_data.trajectory import TrajectoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--dipole", type=Path, default=Path("data/models/dipole.model"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--produce-fs", type=float, default=300.0)
    parser.add_argument("--thermalise-fs", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = load_params(args.params)
    table = structures.read_table(args.equilibrium)
    minima = structures.from_table(table)
    base = params.ir.model_copy(update=dict(
        thermalise_fs=args.thermalise_fs, produce_fs=args.produce_fs,
        max_correlation_fs=args.produce_fs / 2, dtype="float64"))
    paths = sorted(str(p.resolve()) for p in args.models.glob("model_*.model"))
    dipole = str(args.dipole.resolve())
    replicas = ir_replicas(minima, base)
    replica_steps = len(replicas) * (base.thermalise_steps + base.produce_steps)
    rates: dict[str, list[float]] = {"one task": [], "divided, float64": [],
                                     "divided, float32": []}
    tasks = {}
    with tempfile.TemporaryDirectory() as tmp, dask_client(params.compute) as client:
        for k in range(args.repeats):
            t0 = time.perf_counter()
            client.submit(ml_md_task, paths, dipole, replicas, base,
                          str(Path(tmp) / f"one{k}.zarr"), pure=False).result()
            rates["one task"].append(replica_steps / (time.perf_counter() - t0))
            for dtype in ("float64", "float32"):
                config = base.model_copy(update={"dtype": dtype})
                store = TrajectoryStore(Path(tmp) / f"{dtype}{k}.zarr")
                m = ml_ir(args.models, args.dipole, table, config, store,
                          executor=Executor(client, params.compute)).metrics
                rates[f"divided, {dtype}"].append(m["md_stage_replica_steps_per_s"])
                tasks[dtype] = m["md_tasks"]
    first = np.mean(rates["one task"])
    print(f"ir MD: {len(replicas)} runs x ({base.thermalise_steps} + {base.produce_steps}) "
          f"steps, frames every {base.write_every} steps; {params.compute.n_workers} workers x "
          f"{params.compute.threads_per_worker} thread(s); {args.repeats} repeats")
    for name, values in rates.items():
        n = tasks.get(name.split(", ")[-1], 1) if name != "one task" else 1
        print(f"  {name:<18} {n} task(s)  {np.mean(values):7.1f} replica-steps/s "
              f"(range {min(values):.1f}-{max(values):.1f})  {np.mean(values) / first:5.2f}x")


if __name__ == "__main__":
    main()
