"""Where does a centroid shift between the ML and the reference spectrum come from: the dipole
model, or the dynamics?

An ML spectrum has two ingredients that can differ from the label source's: the trajectory
(the committee's forces) and the dipoles along it (the dipole model). Given stores of paired
runs (``ir.zarr``: committee MD with the dipole model's dipoles; ``reference.zarr``: the label
source's MD with its own dipoles, run k of both from the same seed), as
``benchmarks/interval_calibration.py`` keeps them, this swaps one ingredient at a time:

- ``model dipoles on reference MD``: the dipole model along the label source's trajectories.
  Against the reference spectrum only the dipoles differ; the trajectories are the same, so
  the MD's noise cancels almost entirely and a few runs measure the dipole model's share.
- ``label-source dipoles on ML MD``: the label source's dipoles (single points) along the
  committee's trajectories. Against the ML spectrum only the dipoles differ; against the
  reference spectrum only the dynamics (with the noise of two sets of trajectories).

Printed per (molecule, T): each spectrum's share of intensity in bands of the window, and its
scores (PCC, WD, centroid shift, with ``compare``'s paired whole-run bootstrap intervals). With
several ``--dipole-model``, each is put on the reference MD (a row each: which model's
intensities are nearer the label source's); ``--dipole-only`` skips the label source's single
points (about 2 ms each for methanol; ``--runs`` limits how many runs get them).

    python benchmarks/spectrum_shift_source.py --store /tmp/calnew_a --runs 96
    python benchmarks/spectrum_shift_source.py --store /tmp/calnew_a --runs 96 --dipole-only \
        --dipole-model data/models/dipole.model /tmp/dipens/seed1/dipole.model
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from palirs_data.committee import load_model
from palirs_data.compare import MdRuns, score
from palirs_data.config import LabelerConfig, load_params
from palirs_data.evaluation import model_dipoles
from palirs_data.labelers import make_labeler
from palirs_data.trajectory import TrajectoryStore, dipoles_of
from palirs_data.units import DEBYE_EA

BANDS = ((500.0, 1800.0), (1800.0, 3200.0), (3200.0, 4000.0))


def read_runs(store: TrajectoryStore, depth: int, limit: int
              ) -> dict[tuple[str, float], list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]:
    """(seed, numbers, positions, dipoles) of the first ``limit`` runs of each group, in the
    order :func:`palirs_data.compare.md_runs` takes them."""
    out: dict = {}
    for key in sorted(store.keys(), key=lambda k: (k.rsplit("/", 1)[0],
                                                   int(k.rsplit("/", 1)[1]))):
        traj = store[key]
        dipoles = dipoles_of(traj)
        if dipoles is None or traj.n_frames < 2 * depth:
            continue
        group = out.setdefault((traj.attrs["molecule"], float(traj.attrs["temperature_K"])), [])
        if len(group) < limit:
            group.append((traj.attrs.get("seed"), np.asarray(traj.numbers),
                          traj.read("positions_A"), dipoles))
    return out


def source_dipoles(labeler, numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.array([labeler.label(Atoms(numbers=numbers, positions=x)).dipole_eA
                     for x in positions])


def shares(spectrum: tuple[np.ndarray, np.ndarray]) -> list[float]:
    nu, y = spectrum
    inside = (nu >= BANDS[0][0]) & (nu <= BANDS[-1][1])
    total = np.trapezoid(y[inside], nu[inside])
    return [float(np.trapezoid(y[(nu >= a) & (nu <= b)], nu[(nu >= a) & (nu <= b)]) / total)
            for a, b in BANDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--dipole-model", type=Path, nargs="+",
                        default=[Path("data/models/dipole.model")],
                        help="dipole models to put on the reference MD (several: a row each)")
    parser.add_argument("--dipole-only", action="store_true",
                        help="skip the label-source dipoles along the ML MD")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    p = load_params(args.params)
    dt = p.ir.timestep_fs * p.ir.write_every
    depth = int(round(p.ir.max_correlation_fs / dt))
    labeler = make_labeler(p.labeler or LabelerConfig())
    ml_all = read_runs(TrajectoryStore(args.store / "ir.zarr", mode="r"), depth, args.runs)
    ref_all = read_runs(TrajectoryStore(args.store / "reference.zarr", mode="r"), depth,
                        args.runs)
    window, rng = tuple(p.compare.window_cm1), np.random.default_rng(0)
    band_names = ", ".join(f"{a:.0f}-{b:.0f}" for a, b in BANDS)
    for key in sorted(ml_all):
        ml_raw, ref_raw = ml_all[key], ref_all[key]
        seeds = [r[0] for r in ml_raw]
        assert seeds == [r[0] for r in ref_raw], "ML and reference runs must share their seeds"
        frames = sum(len(x) for _, _, x, _ in ml_raw)
        print(f"{key[0]} {key[1]:g} K: {len(seeds)} paired runs, {frames} frames a side; "
              f"share of intensity in {band_names} cm-1, and scores")

        def runs(dipoles):
            return MdRuns.from_dipoles(dipoles, dt, p.ir, p.compare.block_fs, seeds=seeds)

        def row(name, spectrum_runs, against=None, label=""):
            text = f"    {name:<46} " + "  ".join(
                f"{v:.3f}" for v in shares(spectrum_runs.spectrum()))
            if against is not None:
                s = score(spectrum_runs, against, window, p.compare, rng)
                text += (f"  {label}: PCC {s['pcc']:.4f} {s['pcc_ci']}, WD "
                         f"{s['wasserstein_cm1']:.1f} {s['wasserstein_cm1_ci']}, shift "
                         f"{s['centroid_shift_cm1']:+.1f} {s['centroid_shift_cm1_ci']} cm-1")
            print(text, flush=True)

        ml, ref = runs([r[3] for r in ml_raw]), runs([r[3] for r in ref_raw])
        row("reference (label-source MD and dipoles)", ref)
        row("ML (committee MD, model dipoles)", ml, ref, "vs reference")
        for path in args.dipole_model:
            t0 = time.perf_counter()
            model = load_model(path)
            d_on_ref = [model_dipoles(model, n, x) for _, n, x, _ in ref_raw]
            error = np.concatenate(d_on_ref) - np.concatenate([r[3] for r in ref_raw])
            rmse = np.sqrt(np.mean(np.square(error))) / DEBYE_EA * 1e3
            row(f"{path} on reference MD ({rmse:.1f} mD)", runs(d_on_ref), ref,
                f"vs reference ({time.perf_counter() - t0:.0f} s)")
        if args.dipole_only:
            continue
        t0 = time.perf_counter()
        s_ml = runs([source_dipoles(labeler, n, x) for _, n, x, _ in ml_raw])
        row("label-source dipoles on ML MD", s_ml, ref, "vs reference (the dynamics)")
        row(f"  ({time.perf_counter() - t0:.0f} s) ML against it", ml, s_ml,
            "the stage's dipole model")


if __name__ == "__main__":
    main()
