"""Committee MD throughput: the paper's way (ASE + MACECalculator) vs the batched engine.

Run: python benchmarks/md_throughput.py --models data/models/committee [--steps 40]
     [--dtype float64]

Both drive Langevin MD (0.5 fs, friction 0.001 fs⁻¹) with the mean forces of the same three
MACE models, in one run on this machine:
  paper's way   ASE Langevin, MACECalculator holding the 3 models, one replica (methanol);
  engine        palirs_data.dynamics.BatchedMD with 1, 3, 24 and 72 replicas (methanol
                copies: 24 molecules x 3 temperatures is the acquisition batch).
Figures are replica-steps per second and the ratio to the paper's way.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

from palirs_data import dynamics
from palirs_data.committee import Committee


def paper_way(models: list[Path], steps: int, dtype: str) -> float:
    from ase import units
    from ase.md.langevin import Langevin
    from mace.calculators import MACECalculator

    atoms = molecule("CH3OH")
    atoms.calc = MACECalculator(model_paths=[str(m) for m in models], device="cpu",
                                default_dtype=dtype)
    md = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01, rng=np.random.default_rng(0))
    md.run(3)  # warm-up
    start = time.perf_counter()
    md.run(steps)
    return steps / (time.perf_counter() - start)


def engine(committee: Committee, n: int, steps: int) -> float:
    base = molecule("CH3OH")
    temps = [300.0, 500.0, 700.0]
    reps = [dynamics.Replica(key=f"r{k}", molecule="methanol", numbers=base.numbers,
                             positions_A=base.positions, temperature_K=temps[k % 3],
                             friction_fs=0.001, seed=k) for k in range(n)]
    md = dynamics.BatchedMD(committee, reps, timestep_fs=0.5)
    md.run(3)
    start = time.perf_counter()
    md.run(steps)
    return n * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("data/models/committee"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = ap.parse_args()
    models = sorted(args.models.glob("model_*.model"))
    if len(models) != 3:
        raise SystemExit(f"{args.models}: expected 3 committee models (run dvc repro first)")
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    committee = Committee.load(models, dtype=dtype)
    baseline = paper_way(models, args.steps, args.dtype)
    print(f"methanol, 3-model MACE committee, {args.dtype}, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'driver':<34}{'replica-steps/s':>16}{'vs paper':>10}")
    print(f"{'paper: ASE Langevin + MACECalculator':<34}{baseline:>16.1f}{1.0:>9.2f}x")
    for n in (1, 3, 24, 72):
        rate = engine(committee, n, args.steps)
        print(f"{f'engine, {n} replicas':<34}{rate:>16.1f}{rate / baseline:>9.2f}x")


if __name__ == "__main__":
    main()
