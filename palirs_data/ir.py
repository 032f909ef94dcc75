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
as one batch) or :class:`LabelerForceField` (the label source's forces, with its own dipoles
as the dipole model, :class:`LabelerDipoles`; one run per task). A run that stops early
(non-finite forces, collapse, explosion) is reported and counts with what it produced; the
others run to full length.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from palirs_data import units
from palirs_data.committee import Committee, CommitteeCalculator
from palirs_data.compute import Executor
from palirs_data.config import IrConfig, LabelerConfig
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.structures import Structure
from palirs_data.md_analysis import (committee_spread, kinetic_temperatures, spectra_table,
                                     store_dipoles)
from palirs_data.tables import HARMONIC_IR_SCHEMA, SPECTRUM_SCHEMA
from palirs_data.trajectory import TrajectoryStore, trajectory_key

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


class LabelerForceField:
    """The label source as the force field of :class:`~palirs_data.dynamics.BatchedMD` (a
    :class:`~palirs_data.dynamics.ForceField`, as :class:`~palirs_data.committee.Committee`
    is): one single point per replica and step, no committee spread. A single point that
    fails gives non-finite forces, and the guard stops that run (reported; the others go on).
    The dipoles of the last single points are kept: :class:`LabelerDipoles` hands them to the
    engine as its dipole model, so a written frame costs no second single point."""

    dtype = torch.float64
    device = "cpu"

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

    def __init__(self, force_field: LabelerForceField) -> None:
        self.force_field = force_field

    def __call__(self, data: dict, training: bool = False, compute_force: bool = False
                 ) -> dict[str, torch.Tensor]:
        ff = self.force_field
        if ff.last_positions is None or not torch.equal(data["positions"], ff.last_positions):
            raise RuntimeError("dipoles asked for positions the label source did not label")
        return {"dipole": ff.last_dipoles}


@dataclass
class IrRunReport:
    thermalise_seconds: float
    produce_seconds: float
    replica_steps: int
    stopped: list[str]
    resumed_frames: int = 0  # produced frames found in the store (a killed run's), kept


def run_md(force_field, replicas: list[Replica], config: IrConfig, store: TrajectoryStore, *,
           dipole_model: torch.nn.Module | None = None, progress: bool = False,
           chunk_frames: int = 1024) -> IrRunReport:
    """The protocol of ML and reference MD alike, driven by ``force_field`` (the committee,
    with ``dipole_model`` for the dipoles, or :class:`LabelerForceField`): every run starts
    at its minimum with Maxwell-Boltzmann velocities, is thermalised for
    ``config.thermalise_fs`` under the stronger ``thermalise_friction_fs``
    (:func:`palirs_data.dynamics.thermalise`, nothing written), then produces
    ``config.produce_fs`` under ``friction_fs`` with every ``write_every``-th frame (positions,
    velocities, dipoles) written to ``store``.

    Each run's thermalised state is kept in its trajectory's attributes, so a ``store`` left
    by a killed run of the same computation is continued: thermalised runs are not thermalised
    again, produced frames are kept (the runs still going cut back to the shortest, for an
    append the kill interrupted) and production continues from the last one; runs the guard
    stopped stay stopped, and the others run to full length. The noise is reseeded at every
    written chunk (:mod:`palirs_data.dynamics`), so the result equals that of an uninterrupted
    run."""
    import time

    from palirs_data.acquisition import sanity_guard
    from palirs_data.dynamics import thermalise

    guard = sanity_guard(replicas)  # every run of the protocol starts at its minimum

    def state(r: Replica) -> str:
        if r.key not in store:
            return "cold"
        attrs = store[r.key].attrs
        if attrs.get("stopped_at_time_fs") is not None:
            return "stopped"
        if store[r.key].n_frames or "thermalised_positions_A" in attrs:
            return "warm"
        return "cold"

    states = {r.key: state(r) for r in replicas}
    cold = [r for r in replicas if states[r.key] == "cold"]
    warm = [r for r in replicas if states[r.key] == "warm"]
    resumed = sum(store[r.key].n_frames for r in warm)
    thermalise_seconds = 0.0
    fresh: list[Replica] = []
    stopped_early: list[str] = []
    if cold:
        t0 = time.perf_counter()
        stopped_early = thermalise(force_field, cold, timestep_fs=config.timestep_fs,
                                   steps=config.thermalise_steps,
                                   friction_fs=config.thermalise_friction_fs, guard=guard)
        thermalise_seconds = time.perf_counter() - t0
        for r in cold:
            r.time_fs = 0.0
            if r.key in stopped_early:
                store.open_or_create(r.key, numbers=r.numbers, molecule=r.molecule,
                                     timestep_fs=config.timestep_fs,
                                     temperature_K=r.temperature_K, arrays=["time_fs"],
                                     friction_fs=r.friction_fs, seed=r.seed).set_attrs(
                    stopped_at_time_fs=0.0, stop_reason="stopped while thermalising"
                    + (f": {r.stop_reason}" if getattr(r, "stop_reason", None) else ""))
            else:
                fresh.append(r)
    for r in warm:
        attrs = store[r.key].attrs
        r.positions_A = np.asarray(attrs["thermalised_positions_A"], dtype=np.float64)
        r.velocities_A_fs = np.asarray(attrs["thermalised_velocities_A_fs"], dtype=np.float64)
    order = {r.key: i for i, r in enumerate(replicas)}
    running = sorted(fresh + warm, key=lambda r: order[r.key])
    if warm:
        shortest = min([store[r.key].n_frames for r in warm] + ([0] if fresh else []))
        for r in warm:
            store[r.key].truncate(shortest)
    done = store[warm[0].key].n_frames if warm else 0
    second = None
    if running:
        md = BatchedMD(force_field, running, timestep_fs=config.timestep_fs, store=store,
                       dipole_model=dipole_model, chunk_frames=chunk_frames)
        for r in fresh:  # the production's starting point, for a continuation
            store[r.key].set_attrs(thermalised_positions_A=np.asarray(r.positions_A).tolist(),
                                   thermalised_velocities_A_fs=np.asarray(
                                       r.velocities_A_fs).tolist())
        second = md.run(config.produce_steps - done * config.write_every,
                        write_every=config.write_every, guard=guard, progress=progress)
    stopped = sorted({*stopped_early, *(second.stopped if second else []),
                      *(k for k, v in states.items() if v == "stopped")})
    if stopped:
        log.warning("MD runs stopped early (reported; the others ran to full length): %s",
                    ", ".join(stopped))
    return IrRunReport(thermalise_seconds, second.seconds if second else 0.0,
                       len(cold) * config.thermalise_steps
                       + (second.replica_steps if second else 0), stopped, resumed)


def run_ml_md(committee: Committee, dipole_model: torch.nn.Module, minima: list[Structure],
              config: IrConfig, store: TrajectoryStore, *, progress: bool = False,
              chunk_frames: int = 1024) -> IrRunReport:
    """The committee MD of ``ir``: :func:`run_md` on all molecules × temperatures × runs as
    one batch, forces from the committee mean, dipoles from ``dipole_model``."""
    return run_md(committee, ir_replicas(minima, config), config, store,
                  dipole_model=dipole_model, progress=progress, chunk_frames=chunk_frames)


def reference_run(s: Structure, replica: Replica, config: IrConfig,
                  labeler_config: LabelerConfig, store_path: str | None = None) -> dict:
    """One run of the protocol driven by the label source (:func:`run_md` with
    :class:`LabelerForceField`); returns its arrays and attributes. With ``store_path`` the
    run writes its own trajectory of that store (others may write theirs at the same time)
    and continues what a killed attempt left there (:func:`run_md`'s resume rule: the
    thermalised state, then every committed chunk of frames); without, a scratch store."""
    import tempfile
    from pathlib import Path

    from palirs_data.labelers import make_labeler

    force_field = LabelerForceField(make_labeler(labeler_config), charge_e=s.charge_e,
                                    multiplicity=s.multiplicity)
    replica = dataclasses.replace(replica, positions_A=np.asarray(s.positions_A),
                                  velocities_A_fs=None, time_fs=0.0)
    with tempfile.TemporaryDirectory(prefix="palirs-reference-md-") as tmp:
        store = TrajectoryStore(store_path or Path(tmp) / "run.zarr")
        report = run_md(force_field, [replica], config, store,
                        dipole_model=LabelerDipoles(force_field))
        traj = store[replica.key]
        arrays = {name: traj.read(name) for name in traj.array_names}
        attrs = {k: traj.attrs.get(k) for k in ("stopped_at_time_fs", "stop_reason")}
    return {"arrays": arrays, "attrs": attrs, "report": dataclasses.asdict(report)}


def reference_work_store(work_dir, equilibrium: pa.Table, config: IrConfig,
                         labeler_config: LabelerConfig) -> TrajectoryStore:
    """The store the reference runs write to as they go (their checkpoint): under
    ``work_dir``, named by the minima, the protocol and the label source, so that a killed
    ``reference-md`` is continued by the same computation only."""
    from palirs_data.atomic import keyed_work_dir

    parts = [*equilibrium.column("structure_id").to_pylist(), config.model_dump_json(),
             labeler_config.model_dump_json()]
    return TrajectoryStore(keyed_work_dir(work_dir, "reference-md", parts=parts)
                           / "trajectories.zarr")


# --- the double-harmonic spectrum ---------------------------------------------------------------



@dataclass
class HarmonicIr:
    """Vibrational modes of one geometry: frequencies (cm⁻¹, ascending, negative =
    imaginary), IR intensities (km/mol) from the dipole derivatives, and each mode's Cartesian
    displacement per unit mass-weighted normal coordinate (n_modes, n_atoms, 3), Å/(Å amu^½)."""

    frequencies_cm1: np.ndarray
    intensities_km_mol: np.ndarray
    displacements: np.ndarray

    def spectrum(self, wavenumber_cm1: np.ndarray, fwhm_cm1: float = 10.0) -> np.ndarray:
        """Lorentzian lines of full width ``fwhm_cm1``, area = intensity (km/mol)."""
        nu = np.asarray(wavenumber_cm1, dtype=np.float64)[:, None]
        half = fwhm_cm1 / 2
        lines = half / np.pi / ((nu - self.frequencies_cm1[None, :]) ** 2 + half ** 2)
        return lines @ self.intensities_km_mol


def _rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, 5 or 6) of translations and rotations, mass-weighted."""
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    r = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    vectors = []
    for axis in np.eye(3):
        vectors.append(np.tile(axis, len(masses)) * sqrt_m)
        vectors.append(np.cross(axis, r).ravel() * sqrt_m)
    q, rr = np.linalg.qr(np.array(vectors).T)
    return q[:, np.abs(np.diag(rr)) > 1e-6 * np.abs(np.diag(rr)).max()]


def double_harmonic(committee: Committee, dipole_model: torch.nn.Module,
                    s: Structure) -> HarmonicIr:
    """Harmonic frequencies from the Hessian of the committee-mean energy and intensities
    from the dipole model's derivatives, both by automatic differentiation, at the geometry
    of ``s`` (give a minimum of the committee). Translations and rotations are projected out
    of the mass-weighted Hessian before it is diagonalised."""
    from ase.data import atomic_masses

    dtype = committee.dtype
    x0 = torch.as_tensor(np.asarray(s.positions_A), dtype=dtype, device=committee.device)
    batch = committee.batch([s.numbers])

    def energy(x):
        graph = batch.graph(x, committee.r_max)
        return torch.stack([m(dict(graph), training=False, compute_force=False)["energy"].sum()
                            for m in committee.models]).mean()

    def dipole(x):
        graph = batch.graph(x, float(dipole_model.r_max))
        return dipole_model(dict(graph), training=False, compute_force=False)["dipole"][0]

    n = len(s.numbers)
    hessian = torch.autograd.functional.hessian(energy, x0.clone()).reshape(3 * n, 3 * n)
    jacobian = torch.autograd.functional.jacobian(dipole, x0.clone()).reshape(3, 3 * n)
    hessian = hessian.detach().cpu().numpy().astype(np.float64)
    jacobian = jacobian.detach().cpu().numpy().astype(np.float64)
    hessian = 0.5 * (hessian + hessian.T)
    masses = atomic_masses[np.asarray(s.numbers)]
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    rigid = _rigid_body_basis(np.asarray(s.positions_A, dtype=np.float64), masses)
    projector = np.eye(3 * n) - rigid @ rigid.T
    weighted = projector @ (hessian / np.outer(sqrt_m, sqrt_m)) @ projector
    values, vectors = np.linalg.eigh(weighted)
    # drop the rigid-body modes: the eigenvectors lying in the projected-out space
    vibrational = np.argsort(np.linalg.norm(rigid.T @ vectors, axis=0))[:3 * n - rigid.shape[1]]
    vibrational = np.sort(vibrational)
    values, vectors = values[vibrational], vectors[:, vibrational]
    omega = np.sign(values) * np.sqrt(np.abs(values) * units.ACCEL_EV_A_AMU_IN_A_FS2)  # rad/fs
    frequencies = omega / (2 * np.pi * units.SPEED_OF_LIGHT_CM_FS)
    displacements = vectors / sqrt_m[:, None]
    dmu_dq = jacobian @ displacements  # e·Å per (Å amu^½)
    intensities = (dmu_dq ** 2).sum(0) / units.DEBYE_EA ** 2 * units.KM_MOL_PER_D2_A2_AMU
    return HarmonicIr(frequencies, intensities, displacements.T.reshape(-1, n, 3))


def harmonic_table(committee: Committee, dipole_model: torch.nn.Module,
                   minima: list[Structure], *, fmax_eVA: float = 1e-3, max_steps: int = 2000
                   ) -> tuple[pa.Table, dict[str, HarmonicIr]]:
    """Double-harmonic spectrum of each molecule at the committee's own minimum (BFGS from
    the reference minimum)."""
    from palirs_data.harmonic import optimise

    columns: dict[str, list] = {f.name: [] for f in HARMONIC_IR_SCHEMA}
    results = {}
    for s in minima:
        atoms, _ = optimise(s.to_atoms(), CommitteeCalculator(committee, s.numbers),
                            fmax_eVA=fmax_eVA, max_steps=max_steps, name=s.molecule,
                            require_convergence=False)
        relaxed = dataclasses.replace(s, positions_A=atoms.positions.copy(),
                                      structure_id="")
        result = double_harmonic(committee, dipole_model, relaxed)
        results[s.molecule] = result
        k = len(result.frequencies_cm1)
        columns["molecule"] += [s.molecule] * k
        columns["mode"] += list(range(k))
        columns["frequency_cm1"] += result.frequencies_cm1.tolist()
        columns["intensity_km_mol"] += result.intensities_km_mol.tolist()
    return pa.Table.from_pydict(columns, schema=HARMONIC_IR_SCHEMA), results


@dataclass
class IrResult:
    spectra: pa.Table
    harmonic: pa.Table
    metrics: dict


def ml_md_task(committee_paths: list[str], dipole_path: str, replicas: list[Replica],
               config: IrConfig, store_path: str, progress: bool = False) -> dict:
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
    report = run_md(committee, replicas, config, TrajectoryStore(store_path),
                    dipole_model=dipole_model, progress=progress)
    return {**dataclasses.asdict(report), "worker": worker_name(), "device": dev}


def ir_work_store(work_dir, committee_dir, dipole_path, equilibrium: pa.Table,
                  config: IrConfig) -> TrajectoryStore:
    """The store the ``ir`` MD writes to before it becomes the stage's output: under
    ``work_dir``, named by the models, minima and protocol, so that a killed run is continued
    (:func:`run_ml_md`) by the same computation only."""
    from pathlib import Path

    from palirs_data.atomic import keyed_work_dir

    files = [*sorted(Path(committee_dir).glob("model_*.model")), Path(dipole_path)]
    parts = [*equilibrium.column("structure_id").to_pylist(), config.model_dump_json()]
    path = keyed_work_dir(work_dir, "ir", files=files, parts=parts) / "trajectories.zarr"
    return TrajectoryStore(path)


def ml_ir(committee_dir, dipole_path, equilibrium: pa.Table, config: IrConfig,
          store: TrajectoryStore, *, executor: Executor | None = None,
          progress: bool = False) -> IrResult:
    """The ``ir`` stage: committee MD with dipoles into ``store``, the spectrum table (mean and
    std over runs) and the double-harmonic table, with timings. The runs are divided over the
    ``executor``'s MD slots (one per worker, or per GPU worker:
    :func:`palirs_data.compute.md_slots`; one in this process), one GPU task
    (:func:`ml_md_task`) each, all writing their own trajectories of ``store``. Each run's
    noise comes from its own seed, so the split does not change the trajectories (beyond
    the last bits of a batched model call; tests/test_ir.py)."""
    import time
    from pathlib import Path

    from palirs_data import structures
    from palirs_data.committee import load_model
    from palirs_data.compute import merge_md_reports, split_balanced, watch_store
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
    committee = Committee.load(paths)
    dipole_model = load_model(dipole_path)
    n_runs = len(minima) * len(config.temperatures_K) * config.trajectories
    t_md = time.perf_counter()
    replicas = ir_replicas(minima, config)
    parts = split_balanced([len(r.numbers) for r in replicas], executor.md_slots())
    store.require_parents([r.key for r in replicas])
    store_path = str(Path(store.path).resolve())
    stamp = time.time_ns()
    # in this process the task shows its own progress; on workers, the store is the progress
    futures = [executor.submit(ml_md_task, [str(Path(p).resolve()) for p in paths],
                               str(Path(dipole_path).resolve()), [replicas[i] for i in part],
                               config, store_path, progress and not executor.distributed,
                               gpu=True, key=f"ir-md-{k}-{stamp}")
               for k, part in enumerate(parts)]
    report = merge_md_reports(watch_store(
        futures, store_path, label=f"md ({len(parts)} tasks)",
        progress=progress and executor.distributed,
        total_frames=n_runs * (config.produce_steps // config.write_every)))
    store = TrajectoryStore(store.path, mode="r")  # as the tasks left it
    md_wall_seconds = time.perf_counter() - t_md
    spectra = spectra_table(store_dipoles(store), config)
    t0 = time.perf_counter()
    harmonic, _ = harmonic_table(committee, dipole_model, minima)
    harmonic_seconds = time.perf_counter() - t0
    steps = config.thermalise_steps + config.produce_steps
    md_seconds = report["thermalise_seconds"] + report["produce_seconds"]
    metrics = {
        "molecules": [s.molecule for s in minima], "temperatures_K": config.temperatures_K,
        "runs": n_runs, "steps_per_run": steps,
        "simulated_ps": round(n_runs * steps * config.timestep_fs / 1000, 3),
        "thermalise_seconds": round(report["thermalise_seconds"], 1),
        "produce_seconds": round(report["produce_seconds"], 1),
        "md_replica_steps_per_s": round(report["replica_steps"] / max(md_seconds, 1e-9), 1),
        # the stage's MD from submission to the last task's end (models loaded, every part)
        "md_wall_seconds": round(md_wall_seconds, 1),
        "md_stage_replica_steps_per_s": round(report["replica_steps"]
                                              / max(md_wall_seconds, 1e-9), 1),
        "md_tasks": report["tasks"], "md_worker": report["worker"],
        "md_device": report["device"],
        "md_resumed_frames": report["resumed_frames"],
        "stopped": report["stopped"], "kinetic_temperature": kinetic_temperatures(store),
        "committee_spread": committee_spread(store),
        "harmonic_seconds": round(harmonic_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1)}
    return IrResult(spectra, harmonic, metrics)


def reference_task(s: Structure, replica: Replica, config: IrConfig,
                   labeler_config: LabelerConfig, store_path: str | None = None) -> dict:
    """One reference run on a worker (:func:`reference_run`) and its wall time."""
    import time

    t0 = time.perf_counter()
    result = reference_run(s, replica, config, labeler_config, store_path)
    return {**result, "seconds": time.perf_counter() - t0}


def reference_ir(equilibrium: pa.Table, config: IrConfig, labeler_config: LabelerConfig,
                 store: TrajectoryStore, *, executor: Executor | None = None,
                 progress: bool = False, work: TrajectoryStore | None = None
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
    work_path = None
    if work is not None:
        work.require_parents(r.key for r, _ in jobs)
        work_path = str(work.path)
    results: dict[str, dict] = {}
    futures = {executor.submit(reference_task, s, r, config, labeler_config, work_path,
                               key=f"reference-md-{r.key}-{r.seed}"): r.key for r, s in jobs}
    with make_progress() as bar:
        task = bar.add_task("reference MD", total=len(futures), visible=progress)
        for future in executor.as_completed(futures):
            results[futures[future]] = future.result()
            bar.advance(task)
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
    table = spectra_table(store_dipoles(store), config)
    run_seconds = [results[r.key]["seconds"] for r, _ in jobs]
    steps = config.thermalise_steps + config.produce_steps
    metrics = {"runs": len(jobs), "steps_per_run": steps,
               "simulated_ps": round(len(jobs) * steps * config.timestep_fs / 1000, 3),
               "run_seconds_mean": round(float(np.mean(run_seconds)), 1),
               "ms_per_step": round(1000 * float(np.mean(run_seconds)) / steps, 3),
               "stopped": sorted(stopped),
               "kinetic_temperature": kinetic_temperatures(store),
               "seconds": round(time.perf_counter() - start, 1)}
    return table, metrics
