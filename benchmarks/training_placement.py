"""Where the committee trains: in the stage's process vs on the local Dask cluster.

Run: python benchmarks/training_placement.py [--data data/campaign/iter0/train.parquet]
     [--epochs 10] [--repeats 1]

All variants train the committee of params.yaml (its seeds, model and threads) for --epochs
epochs on the same labelled table, through ``palirs_data.training.train_committee``:
  in process       one member after the other in this process (threads from params.yaml);
  GPU slot         the default local cluster (2 workers, one the GPU=1 slot): each member is
                   a GPU task, so they run one after the other on the slot (the stage now);
  side by side     a local cluster of 2 plain workers and no GPU slot, members with 1 thread
                   each, two at a time (what "every member its own task" gives without one).
The wall time of the whole committee is reported, best of --repeats, interleaved, and its ratio
to the in-process time; cluster start-up is included (it is paid once per stage run).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from palirs_data import structures
from palirs_data.training import train_committee
from palirs_data.compute import Executor, dask_client
from palirs_data.config import ComputeConfig, load_params
from palirs_data.e0s import read_e0s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/campaign/iter0/train.parquet"))
    parser.add_argument("--e0s", type=Path, default=Path("data/reference/e0s.json"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    p = load_params(args.params)
    training = p.committee.training.model_copy(update={"max_num_epochs": args.epochs})
    committee = p.committee.model_copy(update={"training": training})
    one_thread = committee.model_copy(update={"training": training.model_copy(
        update={"threads": 1})})
    table = structures.read_table(args.data)
    e0s = read_e0s(args.e0s)
    variants = [
        ("in process", committee, None),
        ("GPU slot", committee, ComputeConfig()),
        ("side by side", one_thread, ComputeConfig(local_gpu_workers=0)),
    ]
    best = {name: float("inf") for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for name, config, compute in variants:
                out, work = Path(tmp) / f"{k}-{name}", Path(tmp) / f"{k}-{name}-work"
                t0 = time.perf_counter()
                if compute is None:
                    train_committee(table, e0s=e0s, config=config, out_dir=out, work_dir=work)
                else:
                    with dask_client(compute) as client:
                        train_committee(table, e0s=e0s, config=config, out_dir=out,
                                        work_dir=work, executor=Executor(client, compute))
                best[name] = min(best[name], time.perf_counter() - t0)
    print(f"committee of {len(committee.seeds)} members, {args.epochs} epochs, "
          f"{table.num_rows} structures, threads per member {training.threads} "
          f"(side by side: 1)")
    for name, seconds in best.items():
        print(f"  {name:<13} {seconds:7.1f} s   {best['in process'] / seconds:5.2f}x in process")


if __name__ == "__main__":
    main()
