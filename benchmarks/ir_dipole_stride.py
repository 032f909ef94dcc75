"""How often must the ir MD record its frames (``ir.write_every``)? What it changes in the
spectra, and what it saves.

Run (in a clone with the lock's data):

    python benchmarks/ir_dipole_stride.py [--strides 1 2 4 8] [--produce-fs 600] [--repeats 2]

1. The spectra. Recording every s-th step changes only which dipoles are kept, not the
   trajectory, so the runs of the ``ir`` and ``reference-md`` stores (``--ml``,
   ``--reference``; best recorded every step: ``-S ir.write_every=1``) subsampled give the
   spectrum of the same MD at ``write_every: s`` without any MD noise, for every s in
   ``--strides`` that is a multiple of the stores' own. Each is scored against the stores' own
   spectrum as ``compare`` scores (PCC, WD, centroid shift over ``compare.window_cm1``), all
   runs pooled.
   The central-difference derivative is corrected for its step
   (:func:`palirs_data.spectra.derivative_correction`); the Nyquist wavenumber is
   1/(2 c s Δt): 8340 cm⁻¹ at 2 fs, 4170 at 4 fs (the top of the window).
2. The cost. ``palirs_data.ir.ml_ir`` as the stage runs it (the lock's committee and dipole
   model, params.yaml's runs, dtype and cluster) with ``--thermalise-fs`` +
   ``--produce-fs`` per run at each stride, ``--repeats`` times interleaved: replica-steps
   per second from submission to the last task's end (mean and range), and the ratio of the
   means to the first stride in the same run. The dipole model is evaluated only on recorded frames.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from palirs_data import structures
from palirs_data.compare import MdRuns, md_runs
from palirs_data.compute import Executor, dask_client
from palirs_data.config import load_params
from palirs_data.ir import ml_ir
from palirs_data.spectra import compare_spectra
from palirs_data.trajectory import TrajectoryStore


def recorded_every(store: TrajectoryStore, timestep_fs: float) -> int:
    """The steps between a store's frames, from its runs' times."""
    for key in store.keys():
        t = store[key].read("time_fs", 0, 2)
        if len(t) == 2:
            return int(round((t[1] - t[0]) / timestep_fs))
    raise SystemExit(f"{store.path}: no run with two frames")


def spectra(args, params) -> None:
    window = tuple(params.compare.window_cm1)
    for label, path in (("ML MD", args.ml), ("reference MD", args.reference)):
        store = TrajectoryStore(path, mode="r")
        base = recorded_every(store, params.ir.timestep_fs)
        ir = params.ir.model_copy(update={"write_every": base})
        dipoles = [d for runs in md_runs(store, ir, params.compare).values()
                   for d in runs.dipoles]
        if not dipoles:
            print(f"{label}: no runs with dipoles in {path}")
            continue

        def spectrum(s: int):
            return MdRuns.from_dipoles([d[::s // base] for d in dipoles],
                                       ir.timestep_fs * s, ir, params.compare.block_fs
                                       ).spectrum()

        every = spectrum(base)
        print(f"{label} ({path}, {len(dipoles)} runs pooled), against frames every {base} "
              f"step(s) ({ir.timestep_fs * base:g} fs), as recorded:")
        for s in args.strides:
            if s <= base or s % base:
                continue
            r = compare_spectra(spectrum(s), every, window_cm1=window,
                                step_cm1=params.compare.step_cm1)
            print(f"  every {s} steps ({ir.timestep_fs * s:g} fs): PCC {r['pcc']:.6f}, "
                  f"WD {r['wasserstein_cm1']:.2f} cm-1, centroid shift "
                  f"{r['centroid_shift_cm1']:+.2f} cm-1")


def cost(args, params) -> None:
    table = structures.read_table(args.equilibrium)
    rates: dict[int, list[float]] = {s: [] for s in args.strides}
    base = params.ir.model_copy(update=dict(thermalise_fs=args.thermalise_fs,
                                            produce_fs=args.produce_fs,
                                            max_correlation_fs=args.produce_fs / 2))
    with tempfile.TemporaryDirectory() as tmp, dask_client(params.compute) as client:
        for k in range(args.repeats):
            for s in args.strides:
                config = base.model_copy(update={"write_every": s})
                store = TrajectoryStore(Path(tmp) / f"s{s}_{k}.zarr")
                m = ml_ir(args.models, args.dipole, table, config, store,
                          executor=Executor(client, params.compute)).metrics
                rates[s].append(m["md_stage_replica_steps_per_s"])
    first = np.mean(rates[args.strides[0]])
    print(f"ir MD cost: params.yaml's runs x ({base.thermalise_steps} + {base.produce_steps}) "
          f"steps, {base.dtype}, {params.compute.n_workers} workers x "
          f"{params.compute.threads_per_worker} thread(s); {args.repeats} repeats interleaved")
    for s, values in rates.items():
        print(f"  every {s} steps: {np.mean(values):7.1f} replica-steps/s (range "
              f"{min(values):.1f}-{max(values):.1f})  {np.mean(values) / first:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--ml", type=Path, default=Path("data/ir/trajectories.zarr"))
    parser.add_argument("--reference", type=Path,
                        default=Path("data/reference/md_trajectories.zarr"))
    parser.add_argument("--models", type=Path, default=Path("data/models/committee"))
    parser.add_argument("--dipole", type=Path, default=Path("data/models/dipole.model"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--produce-fs", type=float, default=600.0)
    parser.add_argument("--thermalise-fs", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-cost", action="store_true", help="the spectra only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    spectra(args, params)
    if not args.no_cost:
        cost(args, params)


if __name__ == "__main__":
    main()
