"""Does the committee's MD sit at the temperature it claims, and does the label source's?

The ``ir`` protocol of ``params.yaml`` (thermalisation, production, timestep, the stage's dtype)
run by the final committee (``ml_ir``, as the ``ir`` stage runs it, MD on every worker) and by
the label source (``reference_ir``, as ``reference-md`` runs it), with ``--runs`` runs each and
seeds ``--seed``: the two sides share each run's seeds (initial velocities and noise). Printed:
each side's pooled kinetic temperature (the standard error from the spread of the run means),
the paired difference ML − reference over the runs, and how the run means correlate.

The production friction is ``--friction`` (default 0.02 fs⁻¹, the thermalisation's, against
``ir.friction_fs`` 0.003): the stationary distribution of the momenta of Langevin dynamics is
Maxwell–Boltzmann at T whatever the friction and the potential, so any friction tests the same
thing, and a stronger one decorrelates the kinetic energy faster, giving a narrower interval
for the same MD. ``--friction 0`` keeps ``ir.friction_fs``.

    python benchmarks/md_temperature.py --runs 24 --seed 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from palirs_data import structures
from palirs_data.compute import Executor, dask_client
from palirs_data.config import LabelerConfig, load_params
from palirs_data.ir import ml_ir
from palirs_data.md_analysis import kinetic_temperatures
from palirs_data.reference_md import reference_ir
from palirs_data.trajectory import TrajectoryStore


def run_means(store: TrajectoryStore) -> dict[str, float]:
    """Each run's mean kinetic temperature, K, keyed by run."""
    return {k: v["mean_K"] for k, v in kinetic_temperatures(store)["runs"].items()}


def line(name: str, means: np.ndarray, target: float) -> str:
    se = means.std(ddof=1) / np.sqrt(means.size)
    return (f"{name:<22} {means.mean():7.1f} ± {se:4.1f} K  "
            f"({100 * (means.mean() / target - 1):+5.1f} ± {100 * se / target:.1f} %; "
            f"run means scatter by {means.std(ddof=1):.0f} K)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--friction", type=float, default=0.02,
                        help="production friction, fs^-1 (0: ir.friction_fs)")
    parser.add_argument("--dtype", default=None, help="the committee's (default: ir.dtype)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    p = load_params(args.params)
    update = {"seed": args.seed, "trajectories": args.runs}
    if args.friction > 0:
        update["friction_fs"] = args.friction
    if args.dtype:
        update["dtype"] = args.dtype
    ir = p.ir.model_copy(update=update)
    equilibrium = structures.read_table("data/sample/equilibrium.parquet")
    print(f"{args.runs} runs per side, seeds from {args.seed}, {ir.dtype} committee, "
          f"thermalise {ir.thermalise_fs:g} fs at {ir.thermalise_friction_fs:g} fs^-1, "
          f"produce {ir.produce_fs:g} fs at {ir.friction_fs:g} fs^-1, dt {ir.timestep_fs:g} fs")
    with tempfile.TemporaryDirectory() as tmp:
        ml_store = TrajectoryStore(Path(tmp) / "ir.zarr")
        ref_store = TrajectoryStore(Path(tmp) / "reference.zarr")
        with dask_client(p.compute) as client:
            t0 = time.perf_counter()
            ml_ir("data/models/committee", "data/models/dipole.model", equilibrium, ir,
                  ml_store, executor=Executor(client, p.compute), progress=True)
            t1 = time.perf_counter()
            reference_ir(equilibrium, ir, p.labeler or LabelerConfig(), ref_store,
                         executor=Executor(client))
            t2 = time.perf_counter()
        ml = run_means(TrajectoryStore(ml_store.path, mode="r"))
        ref = run_means(TrajectoryStore(ref_store.path, mode="r"))
    print(f"ML MD {t1 - t0:.0f} s, reference MD {t2 - t1:.0f} s")
    groups = sorted({k.rsplit("/", 1)[0] for k in ml})
    for group in groups:
        keys = sorted((k for k in ml if k.rsplit("/", 1)[0] == group and k in ref),
                      key=lambda k: int(k.rsplit("/", 1)[1]))
        target = float(group.rsplit("/", 1)[1].rstrip("K"))
        a = np.array([ml[k] for k in keys])
        b = np.array([ref[k] for k in keys])
        d = a - b
        print(f"{group} (target {target:g} K), {len(keys)} paired runs")
        print("  " + line("committee (ML)", a, target))
        print("  " + line("label source", b, target))
        print(f"  {'ML - reference':<22} {d.mean():+7.1f} ± {d.std(ddof=1) / np.sqrt(d.size):4.1f}"
              f" K; run means correlate at r = {np.corrcoef(a, b)[0, 1]:+.2f}")


if __name__ == "__main__":
    main()
