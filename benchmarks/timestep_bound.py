"""The longest MD timestep worth accepting: NVE energy conservation and stability vs timestep.

Run: python benchmarks/timestep_bound.py [--models data/models/committee]
     [--equilibrium data/sample/equilibrium.parquet] [--molecule methanol]
     [--timesteps 0.25 0.5 1 2 3 5] [--temperature 700] [--replicas 8] [--time-fs 500]

The final demo committee (committee-mean forces, float64). ``--replicas`` copies of the
molecule's minimum are thermalised at ``--temperature`` (Langevin, 0.5 fs, γ 0.02 fs⁻¹,
500 fs), then each timestep runs NVE from the same state for ``--time-fs``. Printed per
timestep: steps per O-H period (9 fs), the total-energy drift (eV/ps, fit over all replicas)
and fluctuation (std, eV) relative to the mean kinetic energy, the mean kinetic temperature,
the largest interatomic distance reached (Å) and the replicas that came apart (NaN, or an
atom pair farther than twice the minimum's largest distance). ``palirs_data.config`` accepts
timesteps up to ``MAX_TIMESTEP_FS``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from palirs_data import dynamics, structures
from palirs_data.committee import Committee

BOLTZMANN_EV_K = 8.617333262e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--molecule", default="methanol")
    parser.add_argument("--timesteps", type=float, nargs="+",
                        default=[0.25, 0.5, 1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--temperature", type=float, default=700.0)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--time-fs", type=float, default=500.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    committee = Committee.load(sorted(args.models.glob("*.model")))
    eq = next(s for s in structures.from_table(structures.read_table(args.equilibrium))
              if s.molecule == args.molecule)
    d0 = np.linalg.norm(eq.positions_A[:, None] - eq.positions_A[None], axis=-1).max()
    reps = [dynamics.Replica(key=f"r{k}", molecule=eq.molecule, numbers=eq.numbers,
                             positions_A=eq.positions_A, temperature_K=args.temperature,
                             friction_fs=0.02, seed=k) for k in range(args.replicas)]
    warm = dynamics.BatchedMD(committee, reps, timestep_fs=0.5)
    warm.run(1000)
    x0 = [p.numpy().copy() for p in warm.positions]
    v0 = [v.numpy().copy() for v in warm.velocities]
    n_atoms = len(eq.numbers)
    print(f"{args.molecule}, {args.replicas} replicas thermalised at {args.temperature:g} K, "
          f"NVE for {args.time_fs:g} fs; largest distance at the minimum {d0:.2f} Å")
    print("dt_fs  steps/OH-period  drift/<Ekin> per ps  std/<Ekin>  T_K   max_dist_A  apart")
    for dt in args.timesteps:
        nve = [dynamics.Replica(key=f"r{k}", molecule=eq.molecule, numbers=eq.numbers,
                                positions_A=x0[k], velocities_A_fs=v0[k],
                                temperature_K=args.temperature, friction_fs=0.0, seed=k)
               for k in range(args.replicas)]
        md = dynamics.BatchedMD(committee, nve, timestep_fs=dt)
        steps = int(round(args.time_fs / dt))
        total, kinetic, dmax = [], [], 0.0
        apart = set()
        for _ in range(steps):
            out = md.step()
            ekin = dynamics.kinetic_energy_eV(md.batch, md._v)
            total.append((out.energy_eV + ekin).numpy())
            kinetic.append(ekin.numpy())
            for k, p in enumerate(md.positions):
                p = p.numpy()
                if not np.isfinite(p).all():
                    apart.add(k)
                    continue
                d = np.linalg.norm(p[:, None] - p[None], axis=-1).max()
                dmax = max(dmax, d)
                if d > 2 * d0:
                    apart.add(k)
        total, kinetic = np.array(total), np.array(kinetic)
        ok = [k for k in range(args.replicas) if k not in apart]
        t_ps = dt * 1e-3 * np.arange(steps)
        mean_kin = kinetic[:, ok].mean() if ok else float("nan")
        if ok:
            drift = np.mean([abs(np.polyfit(t_ps, total[:, k], 1)[0]) for k in ok])
            std = np.mean([total[:, k].std() for k in ok])
        else:
            drift = std = float("nan")
        temp = 2 * mean_kin / (3 * n_atoms * BOLTZMANN_EV_K)
        print(f"{dt:5.2f}  {9.0 / dt:15.1f}  {drift / mean_kin:20.2e}  {std / mean_kin:10.2e}"
              f"  {temp:5.0f}  {dmax:10.2f}  {len(apart)}/{args.replicas}")


if __name__ == "__main__":
    main()
