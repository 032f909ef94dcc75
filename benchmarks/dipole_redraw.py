"""How much of an ML spectrum's score is the dipole model's draw?

The ``ir`` stage's committee MD (``data/ir/trajectories.zarr``) is kept as it ran; only the
dipoles along it are recomputed, from its stored positions, with each ``--dipole-model`` in
turn (e.g. the ``dipole`` stage's model trained with another ``dipole.seed`` on the same
table), in the precision of the MD (``ir.dtype``). Each set of dipoles is scored as the
``compare`` stage scores it (:func:`palirs_data.compare.compare`: the same reference MD,
experiments, bootstrap and seed), so the first row, the stage's own model, reproduces
``metrics/compare.json``. The committee's MD is the same in every row: what moves is the
dipole model alone.

    python benchmarks/dipole_redraw.py --dipole-model /tmp/seed1/dipole.model [...]

Run it in a directory where the pipeline has run (``dvc repro compare``).

Measured (2026-12-05, the multi-molecule setting with energy weight 10, two cores beside
other work, about 4.5 min per model): the stage's model (seed 0) and ``dipole.seed: 1`` on
the same table, 10.5 against 17.1 mDebye along acetonitrile's reference MD, move ML-reference
PCC by at most 0.018 per molecule (acetonitrile 0.854 -> 0.861), the mean over six molecules
0.918 +- 0.046 -> 0.916 +- 0.050: inside every interval (docs/molecules.md, "Energy weight
10").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from palirs_data.committee import MolecularBatch, load_model, predict_dipoles
from palirs_data.compare import compare, md_runs
from palirs_data.config import load_params, torch_dtype
from palirs_data.experiment import experimental_spectra
from palirs_data.trajectory import TrajectoryStore, dipole_array


class _Redrawn:
    """A trajectory of the ML store whose model dipoles come from another dipole model."""

    def __init__(self, traj, dipoles: np.ndarray) -> None:
        self._traj, self._dipoles = traj, dipoles
        self.attrs, self.n_frames, self.array_names = traj.attrs, traj.n_frames, \
            traj.array_names

    def read(self, name: str, start=None, stop=None) -> np.ndarray:
        if name == dipole_array(False):
            return self._dipoles[slice(start, stop)]
        return self._traj.read(name, start, stop)


class RedrawnStore:
    """The ML trajectory store with every run's dipoles recomputed by ``model``."""

    def __init__(self, store: TrajectoryStore, model: torch.nn.Module) -> None:
        self._store, self._model = store, model
        self._dtype = next(model.parameters()).dtype
        self._z = [int(z) for z in model.atomic_numbers]

    def keys(self) -> list[str]:
        return self._store.keys()

    def __getitem__(self, key: str) -> _Redrawn:
        traj = self._store[key]
        if traj.n_frames == 0 or dipole_array(False) not in traj.array_names:
            return traj
        pos = traj.read("positions_A")
        out = []
        for start in range(0, len(pos), 1000):  # 1000 frames a call
            chunk = pos[start:start + 1000]
            batch = MolecularBatch([traj.numbers] * len(chunk), self._z, dtype=self._dtype)
            out.append(predict_dipoles(self._model, batch, torch.as_tensor(
                chunk.reshape(-1, 3), dtype=self._dtype)).numpy().astype(np.float64))
        return _Redrawn(traj, np.concatenate(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dipole-model", type=Path, nargs="+", required=True,
                        help="other dipole models (the stage's own is always the first row)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    p = load_params(args.params)
    store = TrajectoryStore("data/ir/trajectories.zarr", mode="r")
    reference = md_runs(TrajectoryStore("data/reference/md_trajectories.zarr", mode="r"),
                        p.ir, p.compare)
    experiment = experimental_spectra(Path("data/experiment"), p.compare, p.ir)
    rows = {}
    for path in [Path("data/models/dipole.model"), *args.dipole_model]:
        t0 = time.perf_counter()
        model = load_model(path, dtype=torch_dtype(p.ir.dtype))
        ml = md_runs(RedrawnStore(store, model), p.ir, p.compare)
        rows[str(path)] = compare(ml, reference, experiment, p.compare, p.ir)["molecules"]
        print(f"{path}: dipoles recomputed and scored in {time.perf_counter() - t0:.0f} s",
              flush=True)
    print(f"{'molecule':<16} {'dipole model':<34} {'ML-ref PCC [95 %]':>24} "
          f"{'ML-exp PCC [95 %]':>24}")
    means: dict[str, dict[str, list[float]]] = {}
    for molecule in next(iter(rows.values())):
        for path, scores in rows.items():
            cells = []
            for pair in ("ml_vs_reference", "ml_vs_experiment"):
                s = scores[molecule].get(pair)
                if s is None:
                    cells.append(f"{'-':>24}")
                    continue
                means.setdefault(path, {}).setdefault(pair, []).append(s["pcc"])
                cells.append(f"{s['pcc']:>7.3f} [{s['pcc_ci'][0]:.3f}, {s['pcc_ci'][1]:.3f}]")
            print(f"{molecule:<16} {path[-34:]:<34} {cells[0]:>24} {cells[1]:>24}")
    for path, pairs in means.items():
        print(f"mean ± std over molecules, {path}: " + "; ".join(
            f"{pair} {np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"
            for pair, v in pairs.items()))


if __name__ == "__main__":
    main()
