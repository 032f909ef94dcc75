"""Do two runs of the spectra with different seeds agree within their intervals?

Reruns the committee MD of ``ir`` (the final committee and dipole model of the pipeline, the
``ir`` protocol of ``params.yaml``) and the reference MD with ``ir.seed`` set to ``--seed``,
scores them with the bootstrap intervals of ``compare`` (PCC, WD and the centroid shift) and
prints that beside the pipeline's own ``metrics/compare.json`` figures (the seed of
``params.yaml``), with the kinetic temperatures of the rerun.

    python benchmarks/spectrum_rerun.py --seed 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from palirs_data import structures
from palirs_data.compare import md_runs, score
from palirs_data.compute import Executor, dask_client
from palirs_data.config import LabelerConfig, load_params
from palirs_data.experiment import experimental_spectra
from palirs_data.ir import ml_ir
from palirs_data.reference_md import reference_ir
from palirs_data.md_analysis import kinetic_temperatures
from palirs_data.trajectory import TrajectoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    p = load_params(args.params)
    ir = p.ir.model_copy(update={"seed": args.seed})
    equilibrium = structures.read_table("data/sample/equilibrium.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore(Path(tmp) / "ir.zarr")
        with dask_client(p.compute) as client:  # as the stages run: MD on every worker
            t0 = time.perf_counter()
            result = ml_ir("data/models/committee", "data/models/dipole.model", equilibrium,
                           ir, store, executor=Executor(client, p.compute), progress=True)
            seconds = time.perf_counter() - t0
            store = TrajectoryStore(store.path, mode="r")
            rerun = md_runs(store, ir, p.compare)
            temps = kinetic_temperatures(store)["pooled"]
            ref_store = TrajectoryStore(Path(tmp) / "reference.zarr")
            reference_ir(equilibrium, ir, p.labeler or LabelerConfig(), ref_store,
                         executor=Executor(client))
            ref_temps = kinetic_temperatures(ref_store)["pooled"]
        reference = md_runs(ref_store, ir, p.compare)
    experiment = experimental_spectra(Path("data/experiment"), p.compare, p.ir)
    pipeline = json.loads(Path("metrics/compare.json").read_text())["molecules"]
    rng = np.random.default_rng(p.compare.seed)
    t = float(p.compare.temperature_K)
    print(f"rerun: {result.metrics['runs']} runs in {seconds:.0f} s; kinetic T "
          + ", ".join(f"{k} {v['mean_K']:.0f} ± {v['stderr_K'] or 0:.0f} K"
                      for k, v in temps.items())
          + "; reference " + ", ".join(f"{k} {v['mean_K']:.0f} ± {v['stderr_K'] or 0:.0f} K"
                                       for k, v in ref_temps.items()))
    print(f"{'molecule':<12} {'comparison':<18} {'seed':>5} {'PCC':>24} {'WD cm-1':>20} "
          f"{'shift cm-1':>22}")
    for (molecule, temperature), runs in sorted(rerun.items()):
        if temperature != t:
            continue
        pairs = [("ml_vs_reference", reference.get((molecule, t)))]
        if molecule in experiment:
            pairs.append(("ml_vs_experiment", experiment[molecule].compared))
        for pair, other in pairs:
            if other is None:
                continue
            window = tuple(pipeline[molecule][pair]["window_cm1"])
            mine = score(runs, other, window, p.compare, rng)
            for seed, s in ((p.ir.seed, pipeline[molecule][pair]), (args.seed, mine)):
                print(f"{molecule:<12} {pair:<18} {seed:>5} "
                      f"{s['pcc']:>7.3f} [{s['pcc_ci'][0]:.3f}, {s['pcc_ci'][1]:.3f}] "
                      f"{s['wasserstein_cm1']:>6.0f} [{s['wasserstein_cm1_ci'][0]:.0f}, "
                      f"{s['wasserstein_cm1_ci'][1]:.0f}] "
                      f"{s['centroid_shift_cm1']:>+6.0f} [{s['centroid_shift_cm1_ci'][0]:+.0f}, "
                      f"{s['centroid_shift_cm1_ci'][1]:+.0f}]")


if __name__ == "__main__":
    main()
