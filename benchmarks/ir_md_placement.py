"""Where the ir stage's committee MD runs: in the stage's process vs as one Dask task.

Run: python benchmarks/ir_md_placement.py [--models data/models/committee]
     [--dipole data/models/dipole.model] [--steps 600] [--repeats 2]

Both variants run the same MD (the methanol minimum of data/sample/equilibrium.parquet, 3 runs
in one batch, dipoles every step, the ir protocol of params.yaml but --steps production steps
and no thermalisation) through ``palirs_data.ir``:
  in process     run_ml_md in this process, torch with all its threads (the old ir stage);
  1-thread worker   ml_md_task on a plain local cluster worker (OMP_NUM_THREADS=1);
  GPU slot          ml_md_task on the default local cluster's GPU=1 worker, the way the ir
                    stage runs it now (no GPU here: every core, compute.gpu_worker_threads).
The cluster start is timed apart (paid once per stage run); a task includes loading the
models on the worker.
Each variant runs --repeats times, interleaved; the best of each is reported, and the ratio
of replica-steps per second.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from palirs_data import structures
from palirs_data.committee import Committee, load_model
from palirs_data.compute import dask_client, gpu_workers
from palirs_data.config import ComputeConfig, IrConfig
from palirs_data.ir import ml_md_task, run_ml_md
from palirs_data.trajectory import TrajectoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--dipole", type=Path, default=Path("data/models/dipole.model"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    paths = sorted(str(p.resolve()) for p in args.models.glob("model_*.model"))
    minima = structures.from_table(structures.read_table(args.equilibrium))
    config = IrConfig(thermalise_fs=0.0, produce_fs=args.steps * 0.5,
                      max_correlation_fs=args.steps * 0.25)
    committee = Committee.load(paths)
    dipole = load_model(args.dipole)
    best = {"in process": float("inf"), "1-thread worker": float("inf"),
            "GPU slot": float("inf")}
    replica_steps = 0
    default = ComputeConfig()  # n_workers 2, one of them the GPU slot
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with dask_client(default) as client:
            cluster_seconds = time.perf_counter() - start
            gpu, cpu = gpu_workers(client)[0], [a for a in client.scheduler_info()["workers"]
                                                 if a not in gpu_workers(client)][0]
            for k in range(args.repeats):
                t0 = time.perf_counter()
                report = run_ml_md(committee, dipole, minima, config,
                                   TrajectoryStore(Path(tmp) / f"here{k}.zarr"))
                best["in process"] = min(best["in process"], time.perf_counter() - t0)
                replica_steps = report.replica_steps
                for name, worker in (("1-thread worker", cpu), ("GPU slot", gpu)):
                    t0 = time.perf_counter()
                    client.submit(ml_md_task, paths, str(args.dipole.resolve()), minima,
                                  config, str(Path(tmp) / f"{k}-{name}.zarr"),
                                  workers=[worker], allow_other_workers=False,
                                  pure=False).result()
                    best[name] = min(best[name], time.perf_counter() - t0)
    print(f"ir MD, {len(minima)} molecule(s) x 3 runs x {args.steps} steps, dipoles every step; "
          f"torch threads in process: {torch.get_num_threads()}")
    for name, seconds in best.items():
        print(f"  {name:<16} {seconds:7.2f} s  {replica_steps / seconds:7.1f} "
              f"replica-steps/s  {best['in process'] / seconds:5.2f}x in process")
    print(f"  local cluster start (once per stage run): {cluster_seconds:.1f} s")


if __name__ == "__main__":
    main()
