"""Single points per second for methanol: a plain serial loop vs the Dask fan-out.

Run: python benchmarks/label_throughput.py [--n 2000] [--workers 2] [--chunk 200] [--repeats 3]
     [--pyscf 3]

All variants label the same structures (methanol displaced at random, 0.05 Å) with the same
label source in the same run:
  serial loop      labeler.label(atoms) in a Python loop, nothing else;
  label_table      the label stage's machinery in this process (chunks, checkpoints, the
                   per-point watchdog thread of label.timeout_s);
  no watchdog      the same with label.timeout_s = null (single points in the calling thread);
  dask fan-out     the same machinery over a local Dask cluster of N worker processes.
The cluster's start-up is timed separately (it is paid once per stage run). Each variant
runs --repeats times, interleaved with the others; the best time of each is reported.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import molecule

from palirs_data import structures
from palirs_data.compute import Executor, dask_client
from palirs_data.config import ComputeConfig, LabelConfig, LabelerConfig
from palirs_data.labelers import make_labeler
from palirs_data.labeling import label_table
from palirs_data.structures import Structure


def methanol_table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = molecule("CH3OH")
    rows = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        rows.append(Structure.from_atoms(atoms, molecule="methanol", source="user"))
    return structures.to_table(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="single points per variant")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=200, help="single points per Dask task")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many, interleaved")
    ap.add_argument("--pyscf", type=int, default=0,
                    help="also time this many PySCF PBE/def2-SVP single points (serial)")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    table = methanol_table(args.n)
    config = LabelerConfig(method="xtb")
    labeler = make_labeler(config)
    atoms_list = [s.to_atoms() for s in structures.from_table(table)]
    labeler.label(atoms_list[0])  # warm-up (library load)

    times: dict[str, list[float]] = {"serial": [], "machinery": [], "no_watchdog": [],
                                     "fanout": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            dask_client(ComputeConfig(n_workers=args.workers)) as client:
        client.wait_for_workers(args.workers)
        client.run(lambda: make_labeler(config).label(atoms_list[0]))  # warm workers
        startup = time.perf_counter() - t0
        for rep in range(args.repeats):  # interleaved, so drifts of the machine hit all alike
            t0 = time.perf_counter()
            for atoms in atoms_list:
                labeler.label(atoms)
            times["serial"].append(time.perf_counter() - t0)

            cfg = LabelConfig(chunk_size=args.chunk, checkpoint_dir=Path(tmp) / f"a{rep}")
            t0 = time.perf_counter()
            label_table(table, labeler_config=config, config=cfg)
            times["machinery"].append(time.perf_counter() - t0)

            cfg = LabelConfig(chunk_size=args.chunk, checkpoint_dir=Path(tmp) / f"c{rep}",
                              timeout_s=None)
            t0 = time.perf_counter()
            label_table(table, labeler_config=config, config=cfg)
            times["no_watchdog"].append(time.perf_counter() - t0)

            cfg = LabelConfig(chunk_size=args.chunk, checkpoint_dir=Path(tmp) / f"b{rep}")
            t0 = time.perf_counter()
            report = label_table(table, labeler_config=config, config=cfg,
                                 executor=Executor(client))
            times["fanout"].append(time.perf_counter() - t0)
            assert report.n_failed == 0
    serial, machinery, bare, fanout = (min(times[k]) for k in ("serial", "machinery",
                                                               "no_watchdog", "fanout"))

    n = args.n
    print(f"methanol, GFN2-xTB (tblite), {n} single points each, "
          f"{args.workers} Dask workers, {args.chunk} per task, best of {args.repeats}")
    print(f"{'variant':<28}{'s/point':>12}{'points/s':>12}{'vs serial':>11}")
    for name, seconds in [("serial loop", serial), ("label_table, in process", machinery),
                          ("label_table, no watchdog", bare),
                          (f"dask fan-out ({args.workers} workers)", fanout)]:
        print(f"{name:<28}{seconds / n * 1e3:>10.3f}ms{n / seconds:>12.1f}"
              f"{serial / seconds:>10.2f}x")
    print(f"dask local cluster start-up and warm-up: {startup:.2f} s (once per stage run)")
    print(f"ratio dask fan-out / serial loop: {serial / fanout:.2f}")
    print(f"ratio label_table with / without the timeout watchdog: {bare / machinery:.2f}")

    if args.pyscf:
        dft = make_labeler(LabelerConfig(method="pyscf"))
        t0 = time.perf_counter()
        for atoms in atoms_list[: args.pyscf]:
            dft.label(atoms)
        per = (time.perf_counter() - t0) / args.pyscf
        print(f"PySCF PBE/def2-SVP (density fitting), serial, 1 thread: {per:.2f} s/point "
              f"({per / (serial / n):.0f}x the xTB cost)")


if __name__ == "__main__":
    main()
