"""Reference MD: the ``ir`` protocol driven by the label source itself (``reference-md``).

The label source becomes the force field of the one integrator
(:class:`~palirs_data.dynamics.BatchedMD`) through :class:`LabelerForceField`, and its own
dipoles become the dipole model (:class:`LabelerDipoles`): the same runs, lengths, friction,
thermalisation, seeds, guard and resume rule as the committee's MD
(:func:`palirs_data.ir.run_md`), one run per task. What it records are labels
(``energy_eV``, ``dipole_eA``); the spectra are made as in ``ir``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import torch

from palirs_data.compute import Executor
from palirs_data.config import GuardConfig, IrConfig, LabelConfig, LabelerConfig
from palirs_data.cost import check_cost
from palirs_data.dynamics import Replica
from palirs_data.ir import ir_replicas, run_md
from palirs_data.md_analysis import kinetic_temperatures, spectra_table, store_dipoles
from palirs_data.structures import Structure
from palirs_data.tables import SPECTRUM_SCHEMA
from palirs_data.trajectory import TrajectoryStore

log = logging.getLogger(__name__)


class LabelerForceField:
    """The label source as the force field of :class:`~palirs_data.dynamics.BatchedMD` (a
    :class:`~palirs_data.dynamics.ForceField`, as :class:`~palirs_data.committee.Committee`
    is): one single point per replica and step, no committee spread. A single point that
    fails gives non-finite forces, and the guard stops that run (reported; the others go on).
    The dipoles of the last single points are kept: :class:`LabelerDipoles` hands them to the
    engine as its dipole model, so a written frame costs no second single point."""

    dtype = torch.float64
    device = "cpu"
    labels = True  # its energies and dipoles are labels (:mod:`palirs_data.trajectory`)

    def __init__(self, labeler, *, charge_e: int = 0, multiplicity: int = 1) -> None:
        self.labeler = labeler
        self.charge_e, self.multiplicity = charge_e, multiplicity
        self.last_positions: torch.Tensor | None = None
        self.last_dipoles: torch.Tensor | None = None

    def batch(self, numbers, device: str | None = None):
        from palirs_data.committee import MolecularBatch

        z_table = sorted({int(z) for n in numbers for z in np.asarray(n)})
        return MolecularBatch(numbers, z_table, dtype=self.dtype, device=self.device)

    def evaluate(self, batch, positions: torch.Tensor):
        from ase import Atoms

        from palirs_data.committee import CommitteeOutput

        x = positions.detach().cpu().numpy()
        numbers = batch.numbers.cpu().numpy()
        ptr = batch.ptr.tolist()
        energies, forces, dipoles = [], [], []
        for a, b in zip(ptr[:-1], ptr[1:]):
            try:
                label = self.labeler.label(Atoms(numbers=numbers[a:b], positions=x[a:b]),
                                           charge_e=self.charge_e,
                                           multiplicity=self.multiplicity)
                energies.append(label.energy_eV)
                forces.append(label.forces_eVA)
                dipoles.append(label.dipole_eA)
            except Exception as exc:  # noqa: BLE001  any failure of the code stops this run
                log.warning("label source failed during MD (%s: %s); the run stops",
                            type(exc).__name__, str(exc)[:200])
                energies.append(np.nan)
                forces.append(np.full((b - a, 3), np.nan))
                dipoles.append(np.full(3, np.nan))
        e = torch.as_tensor(np.asarray(energies, dtype=np.float64))
        f = torch.as_tensor(np.concatenate(forces))
        self.last_positions = positions.detach().clone()
        self.last_dipoles = torch.as_tensor(np.asarray(dipoles, dtype=np.float64))
        zeros = torch.zeros(len(e), dtype=self.dtype)
        return CommitteeOutput(
            energy_eV=e, energy_std_eV=zeros, forces_eVA=f,
            force_std_eVA=torch.zeros(len(f), dtype=self.dtype), force_std_max_eVA=zeros,
            force_rel_dev=zeros.clone(), member_energies_eV=e[None],
            member_forces_eVA=f[None])


class LabelerDipoles:
    """The dipole model of a run driven by :class:`LabelerForceField`: the label source's
    dipoles at the positions it last labelled (the engine records a frame right after the
    step that labelled it). Positions it has not labelled are refused, not guessed."""

    r_max = float("inf")
    labels = True

    def __init__(self, force_field: LabelerForceField) -> None:
        self.force_field = force_field

    def __call__(self, data: dict, training: bool = False, compute_force: bool = False
                 ) -> dict[str, torch.Tensor]:
        ff = self.force_field
        if ff.last_positions is None or not torch.equal(data["positions"], ff.last_positions):
            raise RuntimeError("dipoles asked for positions the label source did not label")
        return {"dipole": ff.last_dipoles}


def reference_run(s: Structure, replica: Replica, config: IrConfig,
                  labeler_config: LabelerConfig, store_path: str | None = None, *,
                  guard: GuardConfig = GuardConfig()) -> dict:
    """One run of the protocol driven by the label source (:func:`palirs_data.ir.run_md` with
    :class:`LabelerForceField`); returns its arrays and attributes. With ``store_path`` the
    run writes its own trajectory of that store (others may write theirs at the same time)
    and continues what a killed attempt left there (the one resume rule); without, a scratch
    store."""
    import tempfile
    from pathlib import Path

    from palirs_data.labelers import make_labeler

    force_field = LabelerForceField(make_labeler(labeler_config), charge_e=s.charge_e,
                                    multiplicity=s.multiplicity)
    replica = dataclasses.replace(replica, positions_A=np.asarray(s.positions_A),
                                  velocities_A_fs=None, time_fs=0.0)
    with tempfile.TemporaryDirectory(prefix="palirs-reference-md-") as tmp:
        store = TrajectoryStore(store_path or Path(tmp) / "run.zarr")
        report = run_md(force_field, [replica], config, store, guard=guard,
                        dipole_model=LabelerDipoles(force_field))
        traj = store[replica.key]
        arrays = {name: traj.read(name) for name in traj.array_names}
        attrs = {k: traj.attrs.get(k) for k in ("stopped_at_time_fs", "stop_reason")}
    return {"arrays": arrays, "attrs": attrs, "report": dataclasses.asdict(report)}


def reference_work_store(work_dir, equilibrium: pa.Table, config: IrConfig,
                         labeler_config: LabelerConfig, *, guard: GuardConfig = GuardConfig()
                         ) -> TrajectoryStore:
    """The store the reference runs write to as they go (their checkpoint): under
    ``work_dir``, named by the minima, the protocol and the label source, so that a killed
    ``reference-md`` is continued by the same computation only."""
    from palirs_data.atomic import keyed_work_dir

    parts = [*equilibrium.column("structure_id").to_pylist(), config.model_dump_json(),
             labeler_config.model_dump_json(), guard.model_dump_json()]
    return TrajectoryStore(keyed_work_dir(work_dir, "reference-md", parts=parts)
                           / "trajectories.zarr")


def reference_task(s: Structure, replica: Replica, config: IrConfig,
                   labeler_config: LabelerConfig, store_path: str | None = None,
                   guard: GuardConfig = GuardConfig()) -> dict:
    """One reference run on a worker (:func:`reference_run`) and its wall time."""
    import time

    t0 = time.perf_counter()
    result = reference_run(s, replica, config, labeler_config, store_path, guard=guard)
    return {**result, "seconds": time.perf_counter() - t0}


def _store_runs(jobs: list[tuple[Replica, Structure]], results: dict[str, dict],
                config: IrConfig, store: TrajectoryStore) -> list[str]:
    """Every run's arrays and stop into ``store``; returns the runs the guard stopped."""
    stopped = []
    for r, s in jobs:
        result = results[r.key]
        arrays = result["arrays"]
        traj = store.create(r.key, numbers=s.numbers, molecule=s.molecule,
                            timestep_fs=config.timestep_fs, temperature_K=r.temperature_K,
                            arrays=list(arrays), chunk_frames=4096,
                            friction_fs=config.friction_fs, seed=r.seed, source="label source")
        if len(arrays["time_fs"]):
            traj.append(**arrays)
        if result["attrs"]["stopped_at_time_fs"] is not None:
            traj.set_attrs(**result["attrs"])
            stopped.append(r.key)
    return stopped


def reference_ir(equilibrium: pa.Table, config: IrConfig, labeler_config: LabelerConfig,
                 store: TrajectoryStore, *, executor: Executor | None = None,
                 progress: bool = False, work: TrajectoryStore | None = None,
                 guard: GuardConfig = GuardConfig(),
                 max_projected_hours: float | None = LabelConfig().max_projected_hours
                 ) -> tuple[pa.Table, dict]:
    """The ``reference-md`` stage: the ``ir`` protocol (the same runs, lengths, friction,
    thermalisation and seeds) driven by the label source through the same integrator, one
    task of the ``executor`` per run (default: in this process); every run's frames into
    ``store``, spectra as in ``ir``. With ``work`` (:func:`reference_work_store`) every run
    checkpoints there as it goes, and a rerun after a kill continues each run where it
    stopped."""
    import time

    from palirs_data import structures
    from palirs_data.progress import make_progress

    executor = executor or Executor.local()
    start = time.perf_counter()
    minima = structures.from_table(equilibrium)
    if not minima:  # an empty molecule set: nothing to run
        return SPECTRUM_SCHEMA.empty_table(), {
            "runs": 0, "steps_per_run": 0, "simulated_ps": 0.0, "stopped": [],
            "kinetic_temperature": {"runs": {}, "pooled": {}}, "seconds": 0.0}
    by_name = {s.molecule: s for s in minima}
    jobs = [(r, by_name[r.molecule]) for r in ir_replicas(minima, config)]
    steps = config.thermalise_steps + config.produce_steps  # one single point per step
    check_cost(f"reference MD, {len(jobs)} runs x {steps} steps", labeler_config,
               [(steps, len(s.numbers)) for _, s in jobs], max_hours=max_projected_hours,
               advice=" or set reference_md.enabled: false")
    work_path = None
    if work is not None:
        work.require_parents(r.key for r, _ in jobs)
        work_path = str(work.path)
    results: dict[str, dict] = {}
    futures = {executor.submit(reference_task, s, r, config, labeler_config, work_path, guard,
                               key=f"reference-md-{r.key}-{r.seed}"): r.key for r, s in jobs}
    with make_progress() as bar:
        task = bar.add_task("reference MD", total=len(futures), visible=progress)
        for future in executor.as_completed(futures):
            results[futures[future]] = future.result()
            bar.advance(task)
    stopped = _store_runs(jobs, results, config, store)
    table = spectra_table(store_dipoles(store), config)
    run_seconds = [results[r.key]["seconds"] for r, _ in jobs]
    metrics = {"runs": len(jobs), "steps_per_run": steps,
               "simulated_ps": round(len(jobs) * steps * config.timestep_fs / 1000, 3),
               "run_seconds_mean": round(float(np.mean(run_seconds)), 1),
               "ms_per_step": round(1000 * float(np.mean(run_seconds)) / steps, 3),
               "stopped": sorted(stopped),
               "kinetic_temperature": kinetic_temperatures(store),
               "seconds": round(time.perf_counter() - start, 1)}
    return table, metrics
