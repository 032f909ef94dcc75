"""The cost of a setting, projected from the measurements of a finished run on this machine.

Run: python benchmarks/cost_model.py [--run .] [--setting full] [--speedup 30]

Reads the measured rates of a finished pipeline run in ``--run`` (a repository after the
README's main command, or after ``campaign experiments --setting multi-molecule``):
  training   s per structure-epoch per member, per atom (data/campaign/iter*/train_ensemble.json
             and the tables they trained on);
  MD         s per atom-step of the committee MD (metrics/ir.json: the runs' replica-steps over
             the MD's wall time, both workers);
  labels     s per single point of the label source (metrics/label.json);
and projects the named setting (palirs_data/settings.py, applied to --run's params.yaml):
initial structures from the catalogue's mode counts, the labels the campaign adds per
iteration, committee training from scratch every iteration, acquisition MD, the ir MD of
campaign and transfer molecules. Times are for this machine's two cores; ``--speedup`` divides
the training and MD (the GPU work) by an assumed factor for one GPU: an assumption, printed
as such, until a GPU run measures it (nothing here has run on a GPU). Training and MD are
taken to cost in proportion to atoms (small molecules inside the cutoff have ~N² edges, so
larger ones cost more); the model width is the run's (wider models cost more per step).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import yaml


def _modes_and_atoms(mol) -> tuple[int, int]:
    from palirs_data.molecules import build_atoms

    atoms = build_atoms(mol)
    n = len(atoms)
    linear = n == 2 or (n > 2 and np.linalg.matrix_rank(
        atoms.positions - atoms.positions.mean(0), tol=1e-3) == 1)
    return (3 * n - 5 if linear else 3 * n - 6), n


def measured(run: Path) -> dict:
    """The rates of a finished run (module docstring)."""
    from palirs_data import structures
    from palirs_data.reports import Training

    per_structure_epoch, per_atom = [], []
    for path in sorted((run / "data/campaign").glob("iter*/train_ensemble.json")):
        report = Training.read(path)
        if report.reused_from is not None:
            continue  # copied, not trained: no rate
        table = structures.read_table(path.parent / "train.parquet")
        ok = table.filter(pc.equal(table.column("label_status"), "ok"))
        atoms = float(np.mean([len(n) for n in ok.column("numbers").to_pylist()]))
        members = sorted(report.trained_on)
        curves = (path.parent / "training_curves.csv").read_text().splitlines()[1:]
        epochs = sum(1 for line in curves if line.split(",")[0] == members[0])
        seconds = report.committee_training_seconds / len(members)
        per_structure_epoch.append(seconds / (ok.num_rows * epochs))
        per_atom.append(seconds / (ok.num_rows * epochs * atoms))
    ir = json.loads((run / "metrics/ir.json").read_text())
    minima = {s.molecule: len(s.numbers) for s in structures.from_table(
        structures.read_table(run / "data/sample/equilibrium.parquet"))}
    atoms_per_replica = float(np.mean([minima[m] for m in ir["molecules"]]))
    md_atom_step = 1.0 / (ir["md_stage_replica_steps_per_s"] * atoms_per_replica)
    label = json.loads((run / "metrics/label.json").read_text())
    return {"train_s_per_atom_structure_epoch": float(np.median(per_atom)),
            "train_s_per_structure_epoch": float(np.median(per_structure_epoch)),
            "md_s_per_atom_step": float(md_atom_step),
            "label_s_per_point": float(label["seconds_per_single_point"])}


def project(params: dict, rates: dict, speedup: float) -> list[tuple[str, float]]:
    """Seconds per part of the campaign ``params`` (a parsed params.yaml) at ``rates``."""
    from palirs_data.config import Params, run_molecules

    p = Params.model_validate(params)
    campaign = [_modes_and_atoms(m) for m in run_molecules(p)]
    transfer = [_modes_and_atoms(m) for m in run_molecules(p, which="transfer")]
    n_mol = len(campaign)
    iterations = len(p.active_learning.iterations)
    acq = p.active_learning.acquire
    per_iteration = n_mol * len(acq.temperatures_K) * acq.per_temperature
    n0 = sum(p.sample.frames_per_mode * modes for modes, _ in campaign)
    mean_atoms = float(np.mean([a for _, a in campaign]))
    members = len(p.committee.seeds)
    epochs = p.committee.training.max_num_epochs
    structures = [n0 + k * per_iteration for k in range(iterations + 1)]
    train = sum(structures) * (1 - p.committee.valid_fraction) * epochs * mean_atoms * rates[
        "train_s_per_atom_structure_epoch"] * members / 2  # members side by side on 2 workers
    acquire_steps = (acq.thermalise_fs + iterations * acq.duration_fs) / acq.timestep_fs
    acquire_md = (acquire_steps * acq.replicas * len(acq.temperatures_K)
                  * sum(a for _, a in campaign) * rates["md_s_per_atom_step"])
    ir = p.ir
    ir_steps = (ir.thermalise_fs + ir.produce_fs) / ir.timestep_fs
    ir_md = (ir_steps * ir.trajectories * len(ir.temperatures_K)
             * sum(a for _, a in campaign + transfer) * rates["md_s_per_atom_step"])
    labels = (structures[-1] + n_mol * p.test_set.n_clusters * p.test_set.per_cluster) * rates[
        "label_s_per_point"]
    return [("labels (label source, both workers)", labels),
            (f"committee training ({iterations + 1} times, {structures[0]} -> {structures[-1]} "
             f"structures, {epochs} epochs, / speed-up)", train / speedup),
            ("acquisition MD (/ speed-up)", acquire_md / speedup),
            ("ir MD, campaign + transfer molecules (/ speed-up)", ir_md / speedup)]


def main() -> None:
    from palirs_data.settings import SETTINGS, merged

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("."), help="a finished run's repository")
    ap.add_argument("--setting", default="full", choices=SETTINGS)
    ap.add_argument("--speedup", type=float, default=1.0,
                    help="assumed speed-up of training and MD on the target (1: this machine)")
    args = ap.parse_args()
    rates = measured(args.run)
    print("measured on", args.run.resolve(), {k: f"{v:.3g}" for k, v in rates.items()})
    raw = yaml.safe_load((args.run / "params.yaml").read_text())
    params = merged(raw, SETTINGS[args.setting])
    total = 0.0
    for what, seconds in project(params, rates, args.speedup):
        total += seconds
        print(f"{what:<90} {seconds / 3600:8.1f} h")
    print(f"{'total (the parts above; evaluation, test set and spectra analysis not counted)':<90}"
          f" {total / 3600:8.1f} h" + (f"  [speed-up {args.speedup:g}x assumed, not measured]"
                                       if args.speedup != 1 else ""))


if __name__ == "__main__":
    main()
