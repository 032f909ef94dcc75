"""The sample stage with an expensive label source: molecules one after another in the
stage's process (before) vs one task per molecule on the stage's Dask workers.

Run: python benchmarks/sample_placement.py [--method pyscf]
     [--molecules water methanol ethene acetonitrile]

Both variants call palirs_data.sampling.sample_molecules with the label source of params.yaml
(``--method`` overrides ``labeler.method``) and ``sample`` of params.yaml: optimisation,
finite-difference Hessian, labelled minimum and samples of every molecule. "one process" runs
them in this process, one after another (how the stage ran before); "workers" on the default
local cluster (params.yaml compute: 2 workers x 1 thread), the largest molecule first. Prints
each molecule's BFGS steps, the wall time of each variant and their ratio, and checks that the
two give the same tables.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from palirs_data import molecules
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.labelers import make_labeler
from palirs_data.sampling import sample_molecules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--method", default="pyscf")
    parser.add_argument("--molecules", nargs="+",
                        default=["water", "methanol", "ethene", "acetonitrile"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = load_params(args.params)
    labeler = make_labeler(params.labeler.model_copy(update={"method": args.method}))
    mols = molecules.resolve(args.molecules, [], where="--molecules")

    start = time.perf_counter()
    alone = sample_molecules(mols, labeler, params.sample, seed=params.molecules.seed)
    t_alone = time.perf_counter() - start
    with executor(params.compute) as ex:
        start = time.perf_counter()
        spread = sample_molecules(mols, labeler, params.sample, seed=params.molecules.seed,
                                  executor=ex)
        t_spread = time.perf_counter() - start
        workers = ex.workers()
    same = (alone.samples.equals(spread.samples) and alone.frequencies.equals(spread.frequencies)
            and alone.equilibrium.equals(spread.equilibrium))
    print(f"\n{args.method}, {len(mols)} molecules ({', '.join(args.molecules)})")
    print("| sample stage | wall s | vs one process |")
    print("|---|---|---|")
    print(f"| one process, molecules one after another | {t_alone:.0f} | 1.00x |")
    print(f"| one task per molecule on {workers} workers | {t_spread:.0f} | "
          f"{t_alone / t_spread:.2f}x |")
    print(f"tables identical: {same}")


if __name__ == "__main__":
    main()
