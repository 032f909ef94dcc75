"""Active learning: committee MD, the guard, the choice of frames, one acquisition step.

One iteration ``iterK`` continues from ``iterP`` (its predecessor, a directory holding the
training table, the committee, the trajectory store and the evaluation of that iteration):

1. If ``iterP``'s harmonic-frequency MAE is below ``active_learning.stop_mae_cm1`` the campaign
   has converged: the table passes through unchanged and no MD runs.
2. Otherwise every molecule runs committee MD (forces = committee mean, BAOAB Langevin) at each
   temperature, all of them in one batch (:class:`~palirs_data.dynamics.BatchedMD`). Each run
   starts from the last frame (positions, velocities, time) of the same molecule and
   temperature in ``iterP``'s store, or from the reference minimum with Maxwell-Boltzmann
   velocities the first time. Frame 0 of every trajectory in the new store is that starting
   state, evaluated by the new committee; it is not selected (it belongs to ``iterP``) unless
   the guard stops the run before any new frame.
3. The guard (:class:`Guard`) stops a run at once when a frame's relative force deviation
   (:data:`~palirs_data.committee.REL_DEV_EPS_EVA`) exceeds the limit, when anything is not
   finite, or when atoms collapse or fly apart. The offending frame is never written, so the
   store holds only frames before the blow-up and the next iteration restarts from the last
   sane one.
4. Per molecule and temperature, the ``per_temperature`` frames with the largest committee
   uncertainty (``acquire.uncertainty``: ``force_std_max_eVA`` or ``force_rel_dev``) are
   chosen, no two closer in time than ``min_spacing_fs`` (:func:`select_frames`).
5. The chosen frames are labelled by the label source (:func:`palirs_data.labeling.label_table`,
   with its checkpoints, retries and failure accounting) and appended to the table with their
   iteration, temperature and uncertainty.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from palirs_data import structures
from palirs_data.committee import Committee, CommitteeOutput, segment_reduce
from palirs_data.config import ActiveLearningConfig, AcquireConfig, LabelConfig, LabelerConfig
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.errors import PalirsInputError
from palirs_data.labeling import label_table
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore, trajectory_key

log = logging.getLogger(__name__)


def select_frames(time_fs: np.ndarray, uncertainty: np.ndarray, *, n: int,
                  min_spacing_fs: float) -> np.ndarray:
    """Indices of up to ``n`` frames with the largest ``uncertainty``, most uncertain first,
    no two closer than ``min_spacing_fs`` in time (greedy: a frame is skipped when it lies
    within the spacing of one already chosen). Non-finite uncertainties are never chosen."""
    time_fs, uncertainty = np.asarray(time_fs, float), np.asarray(uncertainty, float)
    if time_fs.shape != uncertainty.shape:
        raise ValueError("time and uncertainty differ in length")
    order = np.argsort(-np.where(np.isfinite(uncertainty), uncertainty, -np.inf), kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n or not np.isfinite(uncertainty[i]):
            break
        if all(abs(time_fs[i] - time_fs[j]) >= min_spacing_fs for j in chosen):
            chosen.append(int(i))
    return np.array(chosen, dtype=np.int64)


class Guard:
    """Stops a replica whose frame is not to be trusted (see the module docstring); the reason
    is kept on the replica (``stop_reason``)."""

    def __init__(self, *, max_force_rel_dev: float, min_distance_A: float,
                 max_distance_A: float) -> None:
        self.max_force_rel_dev = max_force_rel_dev
        self.min_distance_A = min_distance_A
        self.max_distance_A = max_distance_A

    def __call__(self, md: BatchedMD, out: CommitteeOutput) -> np.ndarray:
        batch, x = md.batch, md.coordinates
        n = batch.n_graphs
        s, r = batch.pairs
        d = torch.linalg.vector_norm(x[r] - x[s], dim=1)
        owner = batch.batch[s]
        has_pairs = torch.zeros(n, dtype=torch.bool, device=x.device).index_fill_(0, owner, True)
        d_min = torch.where(has_pairs, segment_reduce(d, owner, n, "amin"), torch.inf)
        d_max = torch.where(has_pairs, segment_reduce(d, owner, n, "amax"), 0.0)
        finite = (torch.isfinite(out.energy_eV)
                  & segment_reduce(torch.isfinite(out.forces_eVA).all(-1).to(x.dtype),
                                    batch.batch, n, "amin").bool()
                  & segment_reduce(torch.isfinite(x).all(-1).to(x.dtype), batch.batch, n,
                                    "amin").bool())
        rel = out.force_rel_dev
        checks = [
            (~finite, lambda k: "non-finite energy, forces or positions"),
            (rel > self.max_force_rel_dev,
             lambda k: f"force_rel_dev {float(rel[k]):.3g} > {self.max_force_rel_dev:g}"),
            (d_min < self.min_distance_A,
             lambda k: f"atoms {float(d_min[k]):.2f} Å apart (< {self.min_distance_A:g} Å)"),
            (d_max > self.max_distance_A,
             lambda k: f"atoms {float(d_max[k]):.1f} Å apart (> {self.max_distance_A:g} Å)"),
        ]
        stop = np.zeros(n, dtype=bool)
        for mask, reason in checks:
            for k in np.flatnonzero(mask.cpu().numpy()):
                if not stop[k]:
                    stop[k] = True
                    md.replicas[md.active[k]].stop_reason = reason(k)  # type: ignore[attr-defined]
        return stop


def iteration_seed(seed: int, iteration: int, index: int) -> int:
    """The velocity/noise seed of replica ``index`` in ``iteration`` (differs per iteration,
    so a continued run does not replay the previous iteration's noise)."""
    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1)[0])


def acquisition_replicas(minima: list[Structure], config: AcquireConfig, *, iteration: int,
                         previous: TrajectoryStore | None) -> list[Replica]:
    """One replica per molecule and temperature, continuing ``previous`` where it has the
    trajectory."""
    replicas = []
    for s in minima:
        for t in config.temperatures_K:
            key = trajectory_key(s.molecule, t, 0)
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


def run_acquisition(committee: Committee, minima: list[Structure], config: AcquireConfig, *,
                    iteration: int, store: TrajectoryStore,
                    previous: TrajectoryStore | None = None,
                    progress: bool = False) -> AcquisitionReport:
    """Committee MD of every molecule and temperature (one batch), guarded, into ``store``;
    then the most uncertain frames of each run (module docstring, steps 2-4)."""
    replicas = acquisition_replicas(minima, config, iteration=iteration, previous=previous)
    if any(key in store and store[key].n_frames for key in (r.key for r in replicas)):
        raise ValueError(f"{store.path}: already holds frames; acquisition starts a new store")
    md = BatchedMD(committee, replicas, timestep_fs=config.timestep_fs, store=store,
                   model_names=[f"iter{iteration - 1}"])
    guard = Guard(max_force_rel_dev=config.max_force_rel_dev,
                  min_distance_A=config.min_distance_A, max_distance_A=config.max_distance_A)
    stop = guard(md, md.output)  # a start that the new committee already distrusts
    md.record()  # frame 0: the starting state
    md.stop([i for i, s in zip(list(md.active), stop) if s], 0)
    report = md.run(config.n_steps, write_every=config.write_every, guard=guard,
                    progress=progress)
    rows, runs = [], []
    by_molecule = {s.molecule: s for s in minima}
    for r in replicas:
        traj = store[r.key]
        t = traj.read("time_fs")
        unc = {"force_std_max_eVA": traj.read("force_std_max_eVA"),
               "force_rel_dev": traj.read("force_rel_dev")}
        # frame 0 (the starting state) is a candidate only when the guard stopped the run
        # before any new frame: the committee distrusts the start itself, and without its
        # label the next iteration would start from the same state again
        first = 1 if traj.n_frames > 1 else 0
        chosen = first + select_frames(t[first:], unc[config.uncertainty][first:],
                                       n=config.per_temperature,
                                       min_spacing_fs=config.min_spacing_fs)
        positions = traj.read("positions_A")
        m = by_molecule[r.molecule]
        for i in chosen:
            rows.append(Structure(
                molecule=r.molecule, numbers=r.numbers, positions_A=positions[i],
                source="active_learning", charge_e=m.charge_e, multiplicity=m.multiplicity,
                iteration=iteration, temperature_K=r.temperature_K,
                force_std_max_eVA=float(unc["force_std_max_eVA"][i]),
                force_rel_dev=float(unc["force_rel_dev"][i])))
        runs.append({
            "key": r.key, "molecule": r.molecule, "temperature_K": r.temperature_K,
            "frames": traj.n_frames, "start_time_fs": float(t[0]), "end_time_fs": float(t[-1]),
            "stopped_at_step": r.stopped_at_step,
            "stop_reason": getattr(r, "stop_reason", None),
            "max_force_std_max_eVA": float(np.nanmax(unc["force_std_max_eVA"])),
            "max_force_rel_dev": float(np.nanmax(unc["force_rel_dev"])),
            "selected": len(chosen)})
        traj.set_attrs(stopped_at_step=r.stopped_at_step,
                       stop_reason=getattr(r, "stop_reason", None))
    table = structures.to_table(structures.dedupe(rows)) if rows else structures.empty_table()
    return AcquisitionReport(table, runs, report.seconds, report.replica_steps)


@dataclass
class AcquireResult:
    table: pa.Table  # the previous table with the new labelled frames appended
    metrics: dict
    checkpoint: Path | None = None  # label checkpoint, to clear once the table is written


def _counts(table: pa.Table) -> dict[str, int]:
    ok = table.filter(pc.equal(table.column("label_status"), "ok"))
    names, counts = np.unique(np.asarray(ok.column("molecule").to_pylist(), dtype=object),
                              return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def read_iteration(directory: Path) -> tuple[pa.Table, dict]:
    """The training table and the evaluation of a finished iteration directory."""
    evaluation = directory / "evaluate.json"
    if not evaluation.is_file():
        raise PalirsInputError(f"{evaluation}: no such file (is {directory.name} evaluated?)")
    try:
        metrics = json.loads(evaluation.read_text())
        float(metrics["frequency_mae_cm1"])
    except (ValueError, KeyError, TypeError):
        raise PalirsInputError(f"{evaluation}: not an evaluation (no frequency_mae_cm1)"
                               ) from None
    return structures.read_table(directory / "train.parquet"), metrics


def acquire(*, iteration: int, previous_dir: Path, equilibrium: pa.Table,
            config: ActiveLearningConfig, labeler_config: LabelerConfig,
            label_config: LabelConfig, store: TrajectoryStore, client=None,
            progress: bool = False) -> AcquireResult:
    """One acquisition step (module docstring): returns the grown table and its metrics;
    trajectories go to ``store``."""
    start = time.perf_counter()
    previous_table, previous_eval = read_iteration(previous_dir)
    mae = float(previous_eval["frequency_mae_cm1"])
    metrics: dict = {"iteration": iteration, "previous_frequency_mae_cm1": mae,
                     "selected_by": config.acquire.uncertainty}
    if mae < config.stop_mae_cm1:
        log.info("iter%d: converged (frequency MAE %.2f < %.2f cm-1); no new data",
                 iteration - 1, mae, config.stop_mae_cm1)
        counts = _counts(previous_table)
        metrics.update(converged=True, n_selected=0, n_labelled=0, n_failed=0,
                       n_train=sum(counts.values()), labels_per_molecule=counts,
                       added_per_molecule={}, max_force_std_max_eVA=None,
                       max_force_rel_dev=None, guard_stops=0, runs=[], md_seconds=0.0,
                       label_seconds=0.0)
        metrics["seconds"] = round(time.perf_counter() - start, 2)
        return AcquireResult(previous_table, metrics)
    committee = Committee.load(sorted((previous_dir / "committee").glob("model_*.model")))
    previous_store = (TrajectoryStore(previous_dir / "trajectories.zarr", mode="r")
                      if (previous_dir / "trajectories.zarr").exists() else None)
    minima = structures.from_table(equilibrium)
    report = run_acquisition(committee, minima, config.acquire, iteration=iteration,
                             store=store, previous=previous_store, progress=progress)
    log.info("iter%d: MD of %d runs in %.1f s, %d frames selected", iteration,
             len(report.runs), report.md_seconds, report.table.num_rows)
    known = previous_table.column("structure_id")
    stalled = [r["key"] for r in report.runs if r["frames"] == 1]
    if stalled:
        log.warning("iter%d: the guard stopped %s at their first frame; if that frame is "
                    "already labelled the committee is under-trained there (see "
                    "committee.training), and the run will restart from it again",
                    iteration, ", ".join(stalled))
    selected = report.table.filter(  # never label a structure the table already has
        pc.invert(pc.is_in(report.table.column("structure_id"), value_set=known)))
    labelled = label_table(selected, labeler_config=labeler_config, config=label_config,
                           client=client)
    table = structures.concat_tables([previous_table, labelled.table])
    counts = _counts(table)
    stops = [r for r in report.runs if r["stopped_at_step"] is not None]
    metrics.update(
        converged=False, n_selected=selected.num_rows,
        n_labelled=labelled.n_pending - labelled.n_failed,
        n_failed=labelled.n_failed, n_train=sum(counts.values()), labels_per_molecule=counts,
        added_per_molecule=_counts(labelled.table),
        max_force_std_max_eVA=max(r["max_force_std_max_eVA"] for r in report.runs),
        max_force_rel_dev=max(r["max_force_rel_dev"] for r in report.runs),
        guard_stops=len(stops), runs=report.runs, md_seconds=round(report.md_seconds, 2),
        md_replica_steps_per_s=round(report.replica_steps / max(report.md_seconds, 1e-9), 1),
        label_seconds=round(labelled.wall_seconds, 2))
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return AcquireResult(table, metrics, labelled.checkpoint)
