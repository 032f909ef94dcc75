"""How labelling and committee MD scale with the number of molecules: 1, 3 and 6 at once.

Run: python benchmarks/molecule_scaling.py [--models data/models/committee] [--steps 400]
     [--frames-per-mode 2]

For each set (methanol; + water, ethanol; + ethene, ethylene oxide, acetonitrile), in one run
on this machine, in this process, one thread:
  sample   the sample stage's work (xTB optimisation, finite-difference Hessian, thermal
           normal-mode samples): sampling.sample_molecules;
  label    xTB single points of those samples (labeling.label_table, no Dask);
  MD       the acquisition's committee MD of every molecule at 300/500/700 K, one replica
           each, all in one batch (dynamics.BatchedMD, the committee in float32 as the demo's
           acquire), --steps steps after 100 steps of warm-up; the sanity guard only, so that
           a committee trained on methanol alone still runs every molecule.
Each figure is reported as it is and as a ratio to the one-molecule set, per molecule and per
atom ("n times one molecule's" means a per-molecule ratio near 1). The MD counts the replica
steps that ran (a guard stop ends a replica).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

SETS = {1: ["methanol"], 3: ["methanol", "water", "ethanol"],
        6: ["methanol", "water", "ethanol", "ethene", "ethylene oxide", "acetonitrile"]}


def measure(names: list[str], models: Path, steps: int, frames_per_mode: int) -> dict:
    import torch

    from palirs_data import molecules, structures
    from palirs_data.config import GuardConfig
    from palirs_data.guard import Guard
    from palirs_data.committee import Committee
    from palirs_data.config import LabelConfig, LabelerConfig, SampleConfig
    from palirs_data.dynamics import BatchedMD, Replica
    from palirs_data.labelers import make_labeler
    from palirs_data.labeling import label_table
    from palirs_data.sampling import sample_molecules

    mols = molecules.resolve(names, [], where="benchmark")
    labeler = make_labeler(LabelerConfig())
    t0 = time.perf_counter()
    sampled = sample_molecules(mols, labeler, SampleConfig(frames_per_mode=frames_per_mode))
    t_sample = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        labelled = label_table(sampled.samples, labeler_config=LabelerConfig(),
                               config=LabelConfig(checkpoint_dir=Path(tmp), timeout_s=None))
        t_label = time.perf_counter() - t0
    minima = structures.from_table(sampled.equilibrium)
    committee = Committee.load(sorted(models.glob("model_*.model")), dtype=torch.float32)
    replicas = [Replica(key=f"{m.molecule}/{t:g}K/0", molecule=m.molecule, numbers=m.numbers,
                        positions_A=m.positions_A, temperature_K=t, friction_fs=0.02, seed=k)
                for k, (m, t) in enumerate((m, t) for m in minima for t in (300.0, 500.0,
                                                                              700.0))]
    md = BatchedMD(committee, replicas, timestep_fs=0.5)
    guard = Guard(GuardConfig(), minima=minima)
    md.run(100, write_every=101, guard=guard)  # warm-up: thermalising, caches
    t0 = time.perf_counter()
    report = md.run(steps, write_every=steps + 1, guard=guard)
    t_md = time.perf_counter() - t0
    replica_steps = report.replica_steps
    atoms = int(sum(len(m.numbers) for m in minima))
    return {"molecules": len(mols), "atoms": atoms, "samples": sampled.samples.num_rows,
            "sample_s": t_sample, "label_s": t_label,
            "label_per_point_ms": 1000 * t_label / max(labelled.table.num_rows, 1),
            "md_s": t_md, "md_step_ms": 1000 * t_md / steps,
            "md_replicas": len(replicas), "md_stopped": len(replicas) - len(md.active),
            "replica_steps": replica_steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("data/models/committee"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--frames-per-mode", type=int, default=2)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    rows = {n: measure(names, args.models, args.steps, args.frames_per_mode)
            for n, names in SETS.items()}
    one = rows[1]
    print(f"{'molecules':>9} {'atoms':>5} {'samples':>7} | {'sample s':>8} {'x/mol':>6} | "
          f"{'label s':>7} {'x/mol':>6} {'ms/pt':>6} | {'MD ms/step':>10} {'x/mol':>6} "
          f"{'x/atom':>6} {'stopped':>7}")
    for n, r in rows.items():
        print(f"{n:>9} {r['atoms']:>5} {r['samples']:>7} | {r['sample_s']:>8.1f} "
              f"{r['sample_s'] / one['sample_s'] / n:>6.2f} | {r['label_s']:>7.1f} "
              f"{r['label_s'] / one['label_s'] / n:>6.2f} {r['label_per_point_ms']:>6.1f} | "
              f"{r['md_step_ms']:>10.1f} {r['md_step_ms'] / one['md_step_ms'] / n:>6.2f} "
              f"{r['md_step_ms'] / one['md_step_ms'] / (r['atoms'] / one['atoms']):>6.2f} "
              f"{r['md_stopped']:>7}")
    print("x/mol: the set's cost / (molecules x the one-molecule cost); x/atom: the same per "
          "atom. MD: one batch of 3 replicas per molecule (300/500/700 K), float32 committee, "
          "1 thread.")


if __name__ == "__main__":
    main()
