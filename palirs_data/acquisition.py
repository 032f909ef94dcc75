"""Active learning: committee MD, the choice of frames, one acquisition step.

One iteration ``iterK`` continues from ``iterP`` (its predecessor, a directory holding the
training table, the committee, the trajectory store and the evaluation of that iteration):

1. The stop rule, per molecule: a molecule whose committee-mean harmonic-frequency MAE in
   ``iterP``'s evaluation is below ``active_learning.stop_mae_cm1`` has converged and gets no
   new data this iteration, while the others go on; not before ``iterP`` is iteration
   ``active_learning.min_iterations`` (the frequencies see only the well's curvature: with 1,
   the committee has been trained on frames of its own MD before the rule can stop it).
   When every molecule has, the campaign has converged: the table passes through unchanged
   and no MD runs. (A molecule is judged afresh each iteration: if a retrained committee
   lifts it above the rule again, it acquires again, from its minimum when the previous
   iteration ran no MD for it.)
2. Otherwise every molecule still acquiring runs committee MD (forces = committee mean,
   BAOAB Langevin) at each temperature, all of them in one batch
   (:class:`~palirs_data.dynamics.BatchedMD`). Each run starts from the last frame
   (positions, velocities, time) of the same molecule and temperature in ``iterP``'s store,
   or the first time from the reference minimum with Maxwell-Boltzmann velocities,
   thermalised under a stronger friction (``acquire.thermalise_fs``,
   ``thermalise_friction_fs``) before any frame is written, so that the run is at its
   temperature and not near T/2. Frame 0 of every trajectory in the new store is that
   starting state, evaluated by the new committee; it is not selected (it belongs to
   ``iterP``) unless the guard stops the run before any new frame.
3. The guard (:mod:`palirs_data.guard`) stops a run at once when a frame's relative force
   deviation exceeds ``acquire.max_force_rel_dev``, when anything is not finite, when atoms
   collapse or fly apart, or when a bond of the molecule's minimum stretches beyond
   ``guard.max_bond_stretch`` × its length there. The offending frame is never written, so
   the store holds only frames before the blow-up and the next iteration restarts from the
   last sane one.
4. Per molecule and temperature, the ``per_temperature`` frames with the largest committee
   uncertainty (``acquire.uncertainty``: ``force_std_max_eVA`` or ``force_rel_dev``) are
   chosen, no two closer in time than ``min_spacing_fs``
   (:func:`palirs_data.selection.select_frames`).
5. The chosen frames are labelled by the label source (:func:`palirs_data.labeling.label_table`,
   with its checkpoints, retries and failure accounting) and appended to the table with their
   iteration, temperature and uncertainty.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from palirs_data import structures
from palirs_data.atomic import keyed_work_dir
from palirs_data.committee import Committee
from palirs_data.compute import Executor
from palirs_data.config import (ActiveLearningConfig, AcquireConfig, GuardConfig, LabelConfig,
                                LabelerConfig)
from palirs_data.dynamics import BatchedMD, Replica, thermalise
from palirs_data.errors import PalirsInputError
from palirs_data.guard import Guard
from palirs_data.labeling import label_table
from palirs_data.selection import select_acquired
from palirs_data.reports import Evaluation
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore, resume, trajectory_key

log = logging.getLogger(__name__)


def iteration_seed(seed: int, iteration: int, index: int) -> int:
    """The velocity/noise seed of replica ``index`` in ``iteration`` (differs per iteration,
    so a continued run does not replay the previous iteration's noise)."""
    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1)[0])


def acquisition_replicas(minima: list[Structure], config: AcquireConfig, *, iteration: int,
                         previous: TrajectoryStore | None) -> list[Replica]:
    """``config.replicas`` runs per molecule and temperature, continuing ``previous`` where
    it has the trajectory."""
    replicas = []
    for s in minima:
        for t, k in ((t, k) for t in config.temperatures_K for k in range(config.replicas)):
            key = trajectory_key(s.molecule, t, k)
            r = Replica(key=key, molecule=s.molecule, numbers=s.numbers,
                        positions_A=s.positions_A, temperature_K=t,
                        friction_fs=config.friction_fs,
                        seed=iteration_seed(config.seed, iteration, len(replicas)))
            if previous is not None and key in previous and previous[key].n_frames:
                traj = previous[key]
                r.positions_A = traj.last("positions_A")
                r.velocities_A_fs = traj.last("velocities_A_fs")
                r.time_fs = float(traj.last("time_fs"))
            replicas.append(r)
    return replicas


@dataclass
class AcquisitionReport:
    table: pa.Table  # the selected frames, labels pending
    runs: list[dict]  # one record per trajectory
    md_seconds: float
    replica_steps: int
    md_worker: str | None = None  # the Dask worker that ran the MD (None: this process)
    md_device: str = "cpu"
    resumed_frames: int = 0  # frames found in the store from a killed run, not recomputed


def acquisition_md(committee: Committee, minima: list[Structure], config: AcquireConfig, *,
                   iteration: int, store: TrajectoryStore,
                   previous: TrajectoryStore | None = None, guard: GuardConfig = GuardConfig(),
                   progress: bool = False, chunk_frames: int = 256,
                   keys: list[str] | None = None) -> dict:
    """The committee MD of one iteration into ``store`` (module docstring, steps 2-3); with
    ``keys``, only those runs (the others may be run by other tasks into the same store;
    every run's seeds are those of the whole set). The ``guard`` bounds and the committee's
    limit ``config.max_force_rel_dev`` stop a run (:mod:`palirs_data.guard`).

    ``store`` may hold the frames of a killed attempt at the same computation (same committee,
    minima, settings): it is continued by the one resume rule
    (:func:`palirs_data.trajectory.resume`), and the result equals that of an uninterrupted
    run."""
    replicas = acquisition_replicas(minima, config, iteration=iteration, previous=previous)
    if keys is not None:
        wanted = set(keys)
        replicas = [r for r in replicas if r.key in wanted]
    resumed = resume(store, [r.key for r in replicas])
    going = set(resumed.going)
    replicas = [r for r in replicas if r.key in going]
    # frame 0 is the starting state: a continued run has made frames - 1 writes
    steps = config.n_steps - max(resumed.frames - 1, 0) * config.write_every
    sane = Guard(guard, minima=minima, max_force_rel_dev=config.max_force_rel_dev)
    start = time.perf_counter()
    warm_steps = 0
    if not resumed.frames:  # runs that start at a minimum are thermalised first
        cold = [r for r in replicas if r.velocities_A_fs is None]
        thermalise(committee, cold, timestep_fs=config.timestep_fs,
                   steps=config.thermalise_steps, friction_fs=config.thermalise_friction_fs,
                   guard=sane)
        warm_steps = len(cold) * config.thermalise_steps
    md = BatchedMD(committee, replicas, timestep_fs=config.timestep_fs, store=store,
                   model_names=[f"iter{iteration - 1}"],
                   chunk_frames=chunk_frames) if replicas else None
    seconds, replica_steps = time.perf_counter() - start, warm_steps  # thermalisation too
    if md is not None:
        if not resumed.frames:
            stop = sane(md, md.output)  # a start that the new committee already distrusts
            md.record()  # frame 0: the starting state
            md.stop([i for i, s in zip(list(md.active), stop) if s], 0)
        report = md.run(steps, write_every=config.write_every, guard=sane, progress=progress)
        seconds = time.perf_counter() - start
        replica_steps += report.replica_steps
    return {"md_seconds": seconds, "replica_steps": replica_steps,
            "resumed_frames": resumed.kept_frames}


def acquisition_md_task(committee_paths: list[str], minima: list[Structure],
                        config: AcquireConfig, iteration: int, store_path: str,
                        previous_path: str | None, keys: list[str] | None = None,
                        progress: bool = False, guard: GuardConfig = GuardConfig()) -> dict:
    """:func:`acquisition_md` of the runs ``keys`` (None: all) as one unit of GPU work on a
    Dask worker: the models are loaded from files onto this worker's device, the
    trajectories go to the store at ``store_path`` (both on a file system the worker shares
    with the submitting process)."""
    from palirs_data.compute import device, worker_name

    from palirs_data.config import torch_dtype

    dev = device()
    committee = Committee.load(committee_paths, dtype=torch_dtype(config.dtype), device=dev)
    previous = TrajectoryStore(previous_path, mode="r") if previous_path else None
    out = acquisition_md(committee, minima, config, iteration=iteration,
                         store=TrajectoryStore(store_path), previous=previous, keys=keys,
                         guard=guard, progress=progress)
    return {**out, "worker": worker_name(), "device": dev}


def run_acquisition(committee: Committee, minima: list[Structure], config: AcquireConfig, *,
                    iteration: int, store: TrajectoryStore,
                    previous: TrajectoryStore | None = None, guard: GuardConfig = GuardConfig(),
                    progress: bool = False) -> AcquisitionReport:
    """Committee MD of every molecule and temperature (one batch), guarded, into ``store``;
    then the most uncertain frames of each run (module docstring, steps 2-4), in this
    process."""
    md = acquisition_md(committee, minima, config, iteration=iteration, store=store,
                        previous=previous, guard=guard, progress=progress)
    table, runs = select_acquired(minima, config, iteration=iteration, store=store)
    return AcquisitionReport(table, runs, md["md_seconds"], md["replica_steps"],
                             resumed_frames=md["resumed_frames"])


@dataclass
class AcquireResult:
    table: pa.Table  # the previous table with the new labelled frames appended
    metrics: dict
    checkpoint: Path | None = None  # label checkpoint, to clear once the table is written
    store: Path | None = None  # the trajectories (in the work directory); None: no MD ran


def _counts(table: pa.Table) -> dict[str, int]:
    ok = table.filter(pc.equal(table.column("label_status"), "ok"))
    names, counts = np.unique(np.asarray(ok.column("molecule").to_pylist(), dtype=object),
                              return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def read_iteration(directory: Path) -> tuple[pa.Table, Evaluation]:
    """The training table and the evaluation of a finished iteration directory."""
    evaluation = directory / "evaluate.json"
    if not evaluation.is_file():
        raise PalirsInputError(f"{evaluation}: no such file (is {directory.name} evaluated?)")
    return structures.read_table(directory / "train.parquet"), Evaluation.read(evaluation)


def work_store_path(work_dir: Path, *, iteration: int, committee_paths: list[Path],
                    minima: list[Structure], config: AcquireConfig, guard: GuardConfig,
                    previous: TrajectoryStore | None) -> Path:
    """Where an iteration's MD runs before it becomes the stage's output: a directory keyed
    by everything the trajectories depend on (committee files, minima, settings, the previous
    iteration's last frames), so a killed run is continued only by the same computation."""
    parts: list = [m.structure_id for m in minima]
    parts += [config.model_dump_json(), guard.model_dump_json(), iteration]
    if previous is not None:
        for key in previous.keys():
            traj = previous[key]
            parts.append(key)
            if traj.n_frames:
                parts += [traj.last("positions_A").tobytes(),
                          traj.last("velocities_A_fs").tobytes()]
    return keyed_work_dir(work_dir, f"iter{iteration}", files=committee_paths,
                          parts=parts) / "trajectories.zarr"


def _md(committee_paths: list[Path], minima: list[Structure], config: AcquireConfig, *,
        iteration: int, store_path: Path, previous_path: Path | None, guard: GuardConfig,
        executor: Executor, progress: bool) -> dict:
    """The iteration's MD divided over the ``executor``'s MD slots, one GPU task
    (:func:`acquisition_md_task`) each (:func:`palirs_data.md_parts.md_in_parts`)."""
    from palirs_data.md_parts import md_in_parts

    replicas = acquisition_replicas(minima, config, iteration=iteration, previous=None)
    paths = [str(p.resolve()) for p in committee_paths]
    previous = str(previous_path.resolve()) if previous_path else None

    def submit(k: int, part: list[Replica], task_progress: bool):
        return executor.submit(acquisition_md_task, paths, minima, config, iteration,
                               str(store_path.resolve()), previous, [r.key for r in part],
                               progress=task_progress, guard=guard, gpu=True)

    total = len(replicas) * (config.n_steps // config.write_every + 1)
    return md_in_parts(executor, replicas, TrajectoryStore(store_path), submit,
                       total_frames=total, progress=progress)


def _converged(iteration: int, config: ActiveLearningConfig, mae: float,
               previous_table: pa.Table, metrics: dict, start: float) -> AcquireResult:
    """Every molecule has converged: the table passes through unchanged, no MD runs."""
    log.info("iter%d: converged (every molecule's frequency MAE < %.2f cm-1; overall "
             "%.2f); no new data", iteration - 1, config.stop_mae_cm1, mae)
    counts = _counts(previous_table)
    metrics.update(converged=True, n_selected=0, n_labelled=0, n_failed=0,
                   n_train=sum(counts.values()), labels_per_molecule=counts,
                   added_per_molecule={}, max_force_std_max_eVA=None,
                   max_force_rel_dev=None, guard_stops=0, runs=[], md_seconds=0.0,
                   label_seconds=0.0)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return AcquireResult(previous_table, metrics)


def _iteration_md(previous_dir: Path, minima: list[Structure], config: AcquireConfig, *,
                  iteration: int, work_dir: Path, guard: GuardConfig, executor: Executor,
                  progress: bool) -> tuple[AcquisitionReport, Path, dict]:
    """The iteration's committee MD in its work store, continuing ``previous_dir``'s runs,
    and the frames it selects."""
    committee_paths = sorted((previous_dir / "committee").glob("model_*.model"))
    if not committee_paths:
        raise PalirsInputError(f"{previous_dir / 'committee'}: no committee models")
    previous_path = previous_dir / "trajectories.zarr"
    previous_path = previous_path if previous_path.exists() else None
    store_path = work_store_path(
        work_dir, iteration=iteration, committee_paths=committee_paths, minima=minima,
        config=config, guard=guard,
        previous=TrajectoryStore(previous_path, mode="r") if previous_path else None)
    md = _md(committee_paths, minima, config, iteration=iteration, store_path=store_path,
             previous_path=previous_path, guard=guard, executor=executor, progress=progress)
    if md["resumed_frames"]:
        log.info("iter%d: continued a killed run: %d frames were already in %s", iteration,
                 md["resumed_frames"], store_path)
    table, runs = select_acquired(minima, config, iteration=iteration,
                                  store=TrajectoryStore(store_path))
    report = AcquisitionReport(table, runs, md["md_seconds"], md["replica_steps"],
                               md["worker"], md["device"], md["resumed_frames"])
    log.info("iter%d: MD of %d runs in %.1f s on %s (%s), %d frames selected", iteration,
             len(report.runs), report.md_seconds, report.md_device,
             report.md_worker or "this process", report.table.num_rows)
    stalled = [r["key"] for r in report.runs if r["frames"] == 1]
    if stalled:
        log.warning("iter%d: the guard stopped %s at their first frame; if that frame is "
                    "already labelled the committee is under-trained there (see "
                    "committee.training), and the run will restart from it again",
                    iteration, ", ".join(stalled))
    return report, store_path, md


def acquire(*, iteration: int, previous_dir: Path, equilibrium: pa.Table,
            config: ActiveLearningConfig, labeler_config: LabelerConfig,
            label_config: LabelConfig, work_dir: Path, guard: GuardConfig = GuardConfig(),
            executor: Executor | None = None, progress: bool = False) -> AcquireResult:
    """One acquisition step (module docstring): returns the grown table and its metrics.

    The trajectories are written to a store under ``work_dir`` (:func:`work_store_path`),
    returned as ``AcquireResult.store`` for the stage to move into place; a killed run
    continues from the frames and labels already there. The MD runs as GPU tasks and the
    single points fan out over the ``executor`` (default: in this process)."""
    executor = executor or Executor.local()
    start = time.perf_counter()
    previous_table, previous_eval = read_iteration(previous_dir)
    mae = previous_eval.frequency_mae_cm1
    all_minima = structures.from_table(equilibrium)
    by_molecule = previous_eval.molecule_maes([m.molecule for m in all_minima])
    done = sorted(n for n, v in by_molecule.items() if config.stop_rule_holds(iteration - 1, v))
    minima = [m for m in all_minima if m.molecule not in done]
    metrics: dict = {"iteration": iteration, "previous_frequency_mae_cm1": mae,
                     "previous_frequency_mae_per_molecule_cm1": {
                         n: round(v, 4) for n, v in by_molecule.items()},
                     "converged_molecules": done,
                     "acquiring_molecules": [m.molecule for m in minima],
                     "selected_by": config.acquire.uncertainty}
    if not minima:
        return _converged(iteration, config, mae, previous_table, metrics, start)
    if done:
        log.info("iter%d: %s converged (frequency MAE < %.2f cm-1): no new data for them; "
                 "acquiring for %s", iteration - 1, ", ".join(done), config.stop_mae_cm1,
                 ", ".join(m.molecule for m in minima))
    report, store_path, md = _iteration_md(previous_dir, minima, config.acquire,
                                           iteration=iteration, work_dir=work_dir,
                                           guard=guard, executor=executor, progress=progress)
    selected = report.table.filter(  # never label a structure the table already has
        pc.invert(pc.is_in(report.table.column("structure_id"),
                           value_set=previous_table.column("structure_id"))))
    labelled = label_table(selected, labeler_config=labeler_config, config=label_config,
                           executor=executor)
    table = structures.concat_tables([previous_table, labelled.table])
    counts = _counts(table)
    metrics.update(
        converged=False, n_selected=selected.num_rows,
        n_labelled=labelled.n_pending - labelled.n_failed,
        n_failed=labelled.n_failed, n_train=sum(counts.values()), labels_per_molecule=counts,
        added_per_molecule=_counts(labelled.table),
        max_force_std_max_eVA=max(r["max_force_std_max_eVA"] for r in report.runs),
        max_force_rel_dev=max(r["max_force_rel_dev"] for r in report.runs),
        guard_stops=sum(r["stopped_at_step"] is not None for r in report.runs),
        runs=report.runs, md_seconds=round(report.md_seconds, 2),
        md_replica_steps_per_s=round(report.replica_steps / max(report.md_seconds, 1e-9), 1),
        md_tasks=md.get("tasks", 1), md_worker=report.md_worker, md_device=report.md_device,
        md_resumed_frames=report.resumed_frames,
        label_seconds=round(labelled.wall_seconds, 2))
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return AcquireResult(table, metrics, labelled.checkpoint, store_path)


def summary_line(m: dict, *, previous: str, output) -> str:
    """The acquire stage's one-line summary of its metrics ``m``. A run the guard stopped
    before its first new frame has no kinetic temperature: shown as ``stopped``."""
    if m["converged"]:
        return (f"converged at {previous} (frequency MAE "
                f"{m['previous_frequency_mae_cm1']:.2f} cm-1): table unchanged -> {output}")
    done = (f"; converged, no new data: {', '.join(m['converged_molecules'])}"
            if m.get("converged_molecules") else "")
    temps = ", ".join(
        f"{r['molecule']} {r['temperature_K']:g}->"
        + ("stopped" if r.get("kinetic_temperature_K") is None
           else f"{r['kinetic_temperature_K']:.0f}") for r in m["runs"])
    return (f"{len(m['runs'])} runs in {m['md_tasks']} MD task(s) at "
            f"{m['md_replica_steps_per_s']:.0f} replica-steps/s ({m['guard_stops']} stopped "
            f"by the guard; mean kinetic temperature, K: {temps}), {m['n_selected']} frames "
            f"selected, {m['n_labelled']} labelled, {m['n_failed']} failed; {m['n_train']} "
            f"labelled structures{done} -> {output}")
