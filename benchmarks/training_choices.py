"""What makes a committee member converge: initial samples, width, batch, epochs, E0s.

Run: python benchmarks/training_choices.py [--variants thermal_16 ase_16 ...] [--seeds 0 1]
     [--work /tmp/palirs-training-choices] [--parallel 2]

Methanol with GFN2-xTB. The data are made once under --work:
  thermal / ase / wigner   120 labelled initial samples of each sampler (sample stage code);
  held-out                 200 frames of xTB Langevin MD (ASE's integrator, 1 ps at 0.02 fs^-1,
                           then 10 ps at 0.001 fs^-1, a frame every 25 fs), labelled; the script
                           prints their mean kinetic temperature (ASE 3.29's Langevin ran this
                           molecule at about 455 K for a 300 K target: a hot held-out set).
Each variant trains ONE member (``training.train_member``: mace_run_train, 1 thread) on the
80:20 split of a sampler's table, then reports its harmonic-frequency MAE against the reference
(modes matched by overlap, ``evaluation.frequency_errors``), energy and force RMSE on the
held-out frames and the training seconds. --parallel members train side by side (2 on 2 cores,
as the stage does). The table "What makes the committee converge" (docs/method.md) is this output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BASE = {"max_num_epochs": 150, "batch_size": 10, "lr": 0.01, "patience": 50}
#: name: (sampler, MaceModelConfig fields, MaceTrainingConfig fields)
VARIANTS = {
    "ase_16": ("ase", {}, BASE),
    "thermal_16": ("thermal", {}, BASE),
    "thermal_16_e0_average": ("thermal", {}, {**BASE, "extra_args": ["--E0s", "average"]}),
    "thermal_16_swa": ("thermal", {}, {**BASE, "extra_args": ["--swa", "--start_swa", "100",
                                                               "--scheduler_patience", "10"]}),
    "thermal_16_patience10": ("thermal", {}, {**BASE,
                                              "extra_args": ["--scheduler_patience", "10"]}),
    "thermal_32": ("thermal", {"num_channels": 32}, BASE),
    "thermal_32_scaleshift": ("thermal", {"num_channels": 32},
                              {**BASE, "extra_args": ["--model", "ScaleShiftMACE"]}),
    "thermal_16_batch5": ("thermal", {}, {**BASE, "batch_size": 5}),
    "thermal_32_batch5": ("thermal", {"num_channels": 32}, {**BASE, "batch_size": 5}),
    "thermal_32_batch5_e100": ("thermal", {"num_channels": 32},
                               {**BASE, "batch_size": 5, "max_num_epochs": 100}),
}
ELEMENTS = ["H", "C", "N", "O"]


def make_data(work: Path) -> None:
    """The samplers' tables, the reference, the E0s and the held-out MD frames."""
    from ase import units as u
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from palirs_data import molecules, structures
    from palirs_data.config import LabelConfig, LabelerConfig, SampleConfig
    from palirs_data.e0s import isolated_atom_energies
    from palirs_data.harmonic import write_frequencies
    from palirs_data.labelers import make_labeler
    from palirs_data.labeling import label_table
    from palirs_data.sampling import sample_molecules
    from palirs_data.structures import Structure

    if (work / "held_out.parquet").is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    labeler = make_labeler(LabelerConfig())
    mols = molecules.resolve(["methanol"], [], where="benchmark")

    def label(table):
        return label_table(table, labeler_config=LabelerConfig(),
                           config=LabelConfig(checkpoint_dir=work / "ckpt")).table

    for sampler in ("thermal", "ase", "wigner"):
        result = sample_molecules(mols, labeler, SampleConfig(sampler=sampler))
        structures.write_table(label(result.samples), work / f"{sampler}.parquet")
    structures.write_table(result.equilibrium, work / "equilibrium.parquet")
    write_frequencies(result.frequencies, work / "frequencies.parquet")
    e0s = isolated_atom_energies(labeler, ELEMENTS)
    (work / "e0s.json").write_text(json.dumps(e0s))
    eq = structures.from_table(result.equilibrium)[0]
    atoms = eq.to_atoms()
    atoms.calc = labeler.calculator()
    rng = np.random.default_rng(1)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    Langevin(atoms, 0.5 * u.fs, temperature_K=300, friction=0.02 / u.fs, rng=rng).run(2000)
    md = Langevin(atoms, 0.5 * u.fs, temperature_K=300, friction=0.001 / u.fs, rng=rng)
    frames, temps = [], []
    for _ in range(200):
        md.run(50)
        frames.append(atoms.positions.copy())
        temps.append(atoms.get_temperature())
    print(f"held-out MD: mean kinetic temperature {np.mean(temps):.0f} K (target 300 K)")
    rows = [Structure(molecule="methanol", numbers=eq.numbers, positions_A=x, source="test",
                      temperature_K=300.0, charge_e=0, multiplicity=1) for x in frames]
    structures.write_table(label(structures.to_table(rows)), work / "held_out.parquet")


def run_variant(name: str, seed: int, work: Path) -> dict:
    """Train one member of ``name`` with ``seed`` and measure it (in this process)."""
    from palirs_data import harmonic, structures
    from palirs_data.committee import Committee, load_model
    from palirs_data.training import train_member, write_split
    from palirs_data.config import MaceModelConfig, MaceTrainingConfig
    from palirs_data.evaluation import errors_on_test_set, frequency_errors, model_harmonics

    sampler, model, training = VARIANTS[name]
    out = work / "runs" / f"{name}-s{seed}"
    table = structures.read_table(work / f"{sampler}.parquet")
    e0s = {int(z): e for z, e in json.loads((work / "e0s.json").read_text()).items()}
    train, valid, n_train, _ = write_split(table, elements=ELEMENTS, valid_fraction=0.2,
                                           split_seed=0, data_dir=out / "data")
    start = time.perf_counter()
    report = train_member(name="m", train_file=train, valid_file=valid, e0s=e0s,
                          elements=ELEMENTS, model=MaceModelConfig(**model),
                          training=MaceTrainingConfig(threads=1, **training), seed=seed,
                          work_dir=out / "member")
    seconds = time.perf_counter() - start
    member = Committee([load_model(report.model)])
    freq = frequency_errors(
        harmonic.read_frequencies(work / "frequencies.parquet"),
        model_harmonics(member, structures.read_table(work / "equilibrium.parquet"),
                        fmax_eVA=1e-3, max_steps=2000, hessian_step_A=0.01))
    test = errors_on_test_set(structures.read_table(work / "held_out.parquet"), member)
    return {"variant": name, "seed": seed, "n_train": n_train, "seconds": round(seconds, 1),
            "frequency_mae_cm1": round(freq["mae_cm1"], 2),
            "energy_rmse_meV_per_atom": round(test["energy_rmse_meV_per_atom"], 2),
            "force_rmse_meV_A": round(test["force_rmse_meV_A"], 1),
            "valid_rmse_f_meV_A": round(report.valid_rmse_f_meV_A, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("/tmp/palirs-training-choices"))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one variant, one seed, JSON on stdout's last line
        print(json.dumps(run_variant(args.one[0], int(args.one[1]), args.work)))
        return
    make_data(args.work)
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    results = []
    for k in range(0, len(jobs), args.parallel):
        procs = [subprocess.Popen([sys.executable, __file__, "--work", str(args.work),
                                   "--one", v, str(s)], stdout=subprocess.PIPE, text=True)
                 for v, s in jobs[k:k + args.parallel]]
        results += [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    print(f"{'variant':<24} {'seed':>4} {'MAE cm-1':>8} {'E meV/at':>8} {'F meV/Å':>8} "
          f"{'valid F':>7} {'s':>6}")
    for r in results:
        print(f"{r['variant']:<24} {r['seed']:>4} {r['frequency_mae_cm1']:8.2f} "
              f"{r['energy_rmse_meV_per_atom']:8.2f} {r['force_rmse_meV_A']:8.1f} "
              f"{r['valid_rmse_f_meV_A']:7.1f} {r['seconds']:6.0f}")


if __name__ == "__main__":
    main()
