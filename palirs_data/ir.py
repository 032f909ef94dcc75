"""IR spectra from MD: the machine-learned committee (``ir``) and the label source itself
(``reference-md``), with one protocol and one spectrum function.

Protocol (:func:`run_md`), the same for ML and reference MD: per molecule and temperature,
``ir.trajectories`` independent runs (own velocity/noise seeds) start at the reference minimum
with Maxwell-Boltzmann velocities, are thermalised for ``thermalise_fs`` under the stronger
``thermalise_friction_fs`` (nothing recorded), then produce ``produce_fs`` under the weak
``friction_fs`` (a friction γ broadens every line by about γ/(2πc): 0.001 fs⁻¹ ≈ 5 cm⁻¹), BAOAB
Langevin, positions, velocities and dipoles recorded every ``write_every`` steps. The
spectrum is that of the autocorrelation of dμ/dt pooled over the runs
(:func:`~palirs_data.md_analysis.spectra_table`), with the standard deviation over the runs'
spectra; each production run's mean kinetic temperature is reported
(:func:`~palirs_data.md_analysis.kinetic_temperatures`).

One integrator drives both: :class:`~palirs_data.dynamics.BatchedMD`, given the committee
(forces = committee mean, dipoles from the dipole model; all molecules × temperatures × runs
as one batch) or the label source (:mod:`palirs_data.reference_md`; one run per task). A run
the guard (:mod:`palirs_data.guard`) stops early is reported and counts with what it
produced; the others run to full length. This module is the protocol and the ``ir`` stage;
the double-harmonic spectrum of the committee is :func:`palirs_data.harmonic.harmonic_table`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from palirs_data.committee import Committee
from palirs_data.compute import Executor
from palirs_data.config import GuardConfig, IrConfig
from palirs_data.dynamics import BatchedMD, Replica, thermalise
from palirs_data.guard import Guard
from palirs_data.harmonic import harmonic_table
from palirs_data.md_analysis import (committee_spread, kinetic_temperatures, spectra_table,
                                     store_dipoles)
from palirs_data.structures import Structure
from palirs_data.tables import HARMONIC_IR_SCHEMA, SPECTRUM_SCHEMA
from palirs_data.trajectory import TrajectoryStore, resume, trajectory_key

log = logging.getLogger(__name__)


def run_seed(seed: int, molecule_index: int, temperature_K: float, run: int) -> int:
    return int(np.random.SeedSequence([seed, molecule_index, int(round(temperature_K * 1000)),
                                       run]).generate_state(1)[0])


def ir_replicas(minima: list[Structure], config: IrConfig) -> list[Replica]:
    """The runs of the protocol, the same for ML and reference MD: every molecule ×
    temperature × ``config.trajectories``, each with its own seed (:func:`run_seed`)."""
    return [Replica(key=trajectory_key(s.molecule, t, k), molecule=s.molecule,
                    numbers=s.numbers, positions_A=s.positions_A, temperature_K=t,
                    friction_fs=config.friction_fs, seed=run_seed(config.seed, m, t, k))
            for m, s in enumerate(minima) for t in config.temperatures_K
            for k in range(config.trajectories)]


@dataclass
class IrRunReport:
    thermalise_seconds: float
    produce_seconds: float
    replica_steps: int
    stopped: list[str]
    resumed_frames: int = 0  # produced frames found in the store (a killed run's), kept


def _thermalise_cold(force_field, cold: list[Replica], config: IrConfig,
                     store: TrajectoryStore, guard: Guard) -> list[Replica]:
    """Thermalise the runs that start at their minimum (:func:`palirs_data.dynamics.thermalise`,
    nothing written); a run the guard stops there is recorded as stopped at time 0. Returns
    the runs that go on to production."""
    stopped = set(thermalise(force_field, cold, timestep_fs=config.timestep_fs,
                             steps=config.thermalise_steps,
                             friction_fs=config.thermalise_friction_fs, guard=guard))
    fresh = []
    for r in cold:
        r.time_fs = 0.0
        if r.key not in stopped:
            fresh.append(r)
            continue
        reason = getattr(r, "stop_reason", None)
        store.open_or_create(r.key, numbers=r.numbers, molecule=r.molecule,
                             timestep_fs=config.timestep_fs, temperature_K=r.temperature_K,
                             arrays=["time_fs"], friction_fs=r.friction_fs,
                             seed=r.seed).set_attrs(
            stopped_at_time_fs=0.0,
            stop_reason="stopped while thermalising" + (f": {reason}" if reason else ""))
    return fresh


def run_md(force_field, replicas: list[Replica], config: IrConfig, store: TrajectoryStore, *,
           guard: GuardConfig = GuardConfig(), dipole_model: torch.nn.Module | None = None,
           progress: bool = False, chunk_frames: int = 1024) -> IrRunReport:
    """The protocol of ML and reference MD alike, driven by ``force_field`` (the committee,
    with ``dipole_model`` for the dipoles, or the label source,
    :class:`palirs_data.reference_md.LabelerForceField`): every run starts at its minimum with
    Maxwell-Boltzmann velocities, is thermalised for ``config.thermalise_fs`` under the
    stronger ``thermalise_friction_fs`` (nothing written), then produces ``config.produce_fs``
    under ``friction_fs`` with every ``write_every``-th frame (positions, velocities, dipoles)
    written to ``store``; the ``guard`` (:mod:`palirs_data.guard`, no committee limit) stops
    a run that goes wrong, the others run to full length.

    A ``store`` left by a killed run of the same computation is continued by the one resume
    rule (:func:`palirs_data.trajectory.resume`); each run's thermalised state is kept in its
    trajectory's attributes, so a thermalised run is not thermalised again. The result equals
    that of an uninterrupted run."""
    import time

    sane = Guard(guard, minima=replicas)  # every run of the protocol starts at its minimum
    resumed = resume(store, [r.key for r in replicas])
    going = [r for r in replicas if r.key in set(resumed.going)]
    cold = [r for r in going
            if r.key not in store or "thermalised_positions_A" not in store[r.key].attrs]
    t0 = time.perf_counter()
    fresh = _thermalise_cold(force_field, cold, config, store, sane) if cold else []
    thermalise_seconds = time.perf_counter() - t0 if cold else 0.0
    cold_keys, fresh_keys = {r.key for r in cold}, {r.key for r in fresh}
    warm = [r for r in going if r.key not in cold_keys]
    for r in warm:  # from the kept thermalised state (or, with frames, from the last one)
        attrs = store[r.key].attrs
        r.positions_A = np.asarray(attrs["thermalised_positions_A"], dtype=np.float64)
        r.velocities_A_fs = np.asarray(attrs["thermalised_velocities_A_fs"], dtype=np.float64)
    order = {r.key: i for i, r in enumerate(replicas)}
    running = sorted(fresh + warm, key=lambda r: order[r.key])
    second = None
    if running:
        md = BatchedMD(force_field, running, timestep_fs=config.timestep_fs, store=store,
                       dipole_model=dipole_model, chunk_frames=chunk_frames)
        for r in fresh:  # the production's starting point, for a continuation
            store[r.key].set_attrs(thermalised_positions_A=np.asarray(r.positions_A).tolist(),
                                   thermalised_velocities_A_fs=np.asarray(
                                       r.velocities_A_fs).tolist())
        second = md.run(config.produce_steps - resumed.frames * config.write_every,
                        write_every=config.write_every, guard=sane, progress=progress)
    stopped = sorted({*(cold_keys - fresh_keys), *resumed.stopped,
                      *(second.stopped if second else [])})
    if stopped:
        log.warning("MD runs stopped early (reported; the others ran to full length): %s",
                    ", ".join(stopped))
    return IrRunReport(thermalise_seconds, second.seconds if second else 0.0,
                       len(cold) * config.thermalise_steps
                       + (second.replica_steps if second else 0), stopped, resumed.kept_frames)


def run_ml_md(committee: Committee, dipole_model: torch.nn.Module, minima: list[Structure],
              config: IrConfig, store: TrajectoryStore, *, guard: GuardConfig = GuardConfig(),
              progress: bool = False, chunk_frames: int = 1024) -> IrRunReport:
    """The committee MD of ``ir``: :func:`run_md` on all molecules × temperatures × runs as
    one batch, forces from the committee mean, dipoles from ``dipole_model``."""
    return run_md(committee, ir_replicas(minima, config), config, store, guard=guard,
                  dipole_model=dipole_model, progress=progress, chunk_frames=chunk_frames)


@dataclass
class IrResult:
    spectra: pa.Table
    harmonic: pa.Table
    metrics: dict


def ml_md_task(committee_paths: list[str], dipole_path: str, replicas: list[Replica],
               config: IrConfig, store_path: str, progress: bool = False,
               guard: GuardConfig = GuardConfig()) -> dict:
    """Committee MD of some of ``ir``'s runs (:func:`run_md`) as one unit of GPU work: loads
    the models from files (a location every worker sees) onto this worker's device (CUDA when
    it has one), writes the trajectories of ``replicas`` into the store at ``store_path``
    (other tasks may write other trajectories of it at the same time) and returns the report,
    with where it ran."""
    from palirs_data.committee import load_model
    from palirs_data.compute import device, worker_name
    from palirs_data.config import torch_dtype

    dev, dtype = device(), torch_dtype(config.dtype)
    committee = Committee.load(committee_paths, dtype=dtype, device=dev)
    dipole_model = load_model(dipole_path, dtype=dtype, device=dev)
    report = run_md(committee, replicas, config, TrajectoryStore(store_path), guard=guard,
                    dipole_model=dipole_model, progress=progress)
    return {**dataclasses.asdict(report), "worker": worker_name(), "device": dev}


def ir_work_store(work_dir, committee_dir, dipole_path, equilibrium: pa.Table,
                  config: IrConfig, *, guard: GuardConfig = GuardConfig()) -> TrajectoryStore:
    """The store the ``ir`` MD writes to before it becomes the stage's output: under
    ``work_dir``, named by the models, minima and protocol, so that a killed run is continued
    (:func:`run_ml_md`) by the same computation only."""
    from palirs_data.atomic import keyed_work_dir

    files = [*sorted(Path(committee_dir).glob("model_*.model")), Path(dipole_path)]
    parts = [*equilibrium.column("structure_id").to_pylist(), config.model_dump_json(),
             guard.model_dump_json()]
    path = keyed_work_dir(work_dir, "ir", files=files, parts=parts) / "trajectories.zarr"
    return TrajectoryStore(path)


def _ml_md(paths: list[Path], dipole_path, minima: list[Structure], config: IrConfig,
           store: TrajectoryStore, guard: GuardConfig, executor: Executor,
           progress: bool) -> dict:
    """The ``ir`` MD divided over the ``executor``'s MD slots, one GPU task each
    (:func:`ml_md_task`), all writing their own trajectories of ``store``; the merged report
    with the wall time from submission to the last task's end."""
    import time

    from palirs_data.md_parts import md_in_parts

    t_md = time.perf_counter()
    replicas = ir_replicas(minima, config)
    models = [str(Path(p).resolve()) for p in paths]
    store_path, stamp = str(Path(store.path).resolve()), time.time_ns()

    def submit(k: int, part: list[Replica], task_progress: bool):
        return executor.submit(ml_md_task, models, str(Path(dipole_path).resolve()), part,
                               config, store_path, task_progress, guard, gpu=True,
                               key=f"ir-md-{k}-{stamp}")

    report = md_in_parts(executor, replicas, store, submit, progress=progress,
                         total_frames=len(replicas) * (config.produce_steps // config.write_every))
    return {**report, "wall_seconds": time.perf_counter() - t_md}


def _ir_metrics(minima: list[Structure], config: IrConfig, report: dict,
                store: TrajectoryStore) -> dict:
    """What ``metrics/ir.json`` says about the MD: runs, timings, stops, temperatures."""
    n_runs = len(minima) * len(config.temperatures_K) * config.trajectories
    steps = config.thermalise_steps + config.produce_steps
    md_seconds = report["thermalise_seconds"] + report["produce_seconds"]
    return {
        "molecules": [s.molecule for s in minima], "temperatures_K": config.temperatures_K,
        "runs": n_runs, "steps_per_run": steps,
        "simulated_ps": round(n_runs * steps * config.timestep_fs / 1000, 3),
        "thermalise_seconds": round(report["thermalise_seconds"], 1),
        "produce_seconds": round(report["produce_seconds"], 1),
        "md_replica_steps_per_s": round(report["replica_steps"] / max(md_seconds, 1e-9), 1),
        # the stage's MD from submission to the last task's end (models loaded, every part)
        "md_wall_seconds": round(report["wall_seconds"], 1),
        "md_stage_replica_steps_per_s": round(report["replica_steps"]
                                              / max(report["wall_seconds"], 1e-9), 1),
        "md_tasks": report["tasks"], "md_worker": report["worker"],
        "md_device": report["device"],
        "md_resumed_frames": report["resumed_frames"],
        "stopped": report["stopped"], "kinetic_temperature": kinetic_temperatures(store),
        "committee_spread": committee_spread(store)}


def ml_ir(committee_dir, dipole_path, equilibrium: pa.Table, config: IrConfig,
          store: TrajectoryStore, *, guard: GuardConfig = GuardConfig(),
          executor: Executor | None = None, progress: bool = False) -> IrResult:
    """The ``ir`` stage: committee MD with dipoles into ``store``, the spectrum table (mean and
    std over runs) and the double-harmonic table, with timings. The runs are divided over the
    ``executor``'s MD slots (one per worker, or per GPU worker:
    :func:`palirs_data.compute.md_slots`; one in this process), one GPU task
    (:func:`ml_md_task`) each, all writing their own trajectories of ``store``. Each run's
    noise comes from its own seed, so the split does not change the trajectories (beyond
    the last bits of a batched model call; tests/test_ir.py)."""
    import time

    from palirs_data import structures
    from palirs_data.committee import load_model
    from palirs_data.errors import PalirsInputError

    executor = executor or Executor.local()
    start = time.perf_counter()
    paths = sorted(Path(committee_dir).glob("model_*.model"))
    if not paths:
        raise PalirsInputError(f"{committee_dir}: no committee models (model_*.model)")
    minima = structures.from_table(equilibrium)
    if not minima:  # an empty molecule set (the transfer set by default): nothing to run
        return IrResult(SPECTRUM_SCHEMA.empty_table(), HARMONIC_IR_SCHEMA.empty_table(),
                        {"molecules": [], "runs": 0, "stopped": [], "seconds": 0.0})
    report = _ml_md(paths, dipole_path, minima, config, store, guard, executor, progress)
    store = TrajectoryStore(store.path, mode="r")  # as the tasks left it
    spectra = spectra_table(store_dipoles(store), config)
    t0 = time.perf_counter()
    harmonic, _ = harmonic_table(Committee.load(paths), load_model(dipole_path), minima)
    metrics = {**_ir_metrics(minima, config, report, store),
               "harmonic_seconds": round(time.perf_counter() - t0, 1),
               "seconds": round(time.perf_counter() - start, 1)}
    return IrResult(spectra, harmonic, metrics)
