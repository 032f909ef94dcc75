"""Run committee MD of methanol into a trajectory store until it holds N frames (continuing
whatever the store already holds); a test kills it mid-run and runs it again.

python md_run.py STORE EQUILIBRIUM N MODEL [MODEL ...]
"""

from __future__ import annotations

import sys

from palirs_data import structures
from palirs_data.committee import Committee
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.trajectory import TrajectoryStore, trajectory_key


def main(store_path: str, equilibrium: str, n_frames: int, models: list[str]) -> None:
    (s,) = structures.from_table(structures.read_table(equilibrium))
    store = TrajectoryStore(store_path)
    replicas = [Replica(key=trajectory_key(s.molecule, t, 0), molecule=s.molecule,
                        numbers=s.numbers, positions_A=s.positions_A, temperature_K=t,
                        friction_fs=0.001, seed=7) for t in (300.0, 500.0)]
    md = BatchedMD(Committee.load(models), replicas, timestep_fs=0.5, store=store,
                   chunk_frames=25)
    done = min(r.n_frames for r in md.replicas)
    md.run(n_frames - done, write_every=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
