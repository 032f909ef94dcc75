"""IR spectra from MD: the machine-learned committee (``ir``) and the label source itself
(``reference-md``), with one protocol and one spectrum function.

Protocol, per molecule and temperature: ``ir.trajectories`` independent runs (different
velocity/noise seeds) start at the reference minimum, BAOAB Langevin with a weak friction
(``ir.friction_fs``; a friction γ broadens every line by about γ/(2πc), 0.001 fs⁻¹ ≈ 5 cm⁻¹),
``thermalise_fs`` without recording, then ``produce_fs`` with the dipole recorded every
``write_every`` steps. The spectrum of each run is :func:`palirs_data.spectra.ir_spectrum`;
the molecule's spectrum is the mean over runs and its standard deviation.

ML runs: all molecules × temperatures × runs advance as one batch of the committee engine
(:class:`~palirs_data.dynamics.BatchedMD`, forces = committee mean), dipoles from the dipole
model, everything (positions, dipoles, committee spread) in the trajectory store.
Reference runs: the same BAOAB steps with forces and dipoles from the label source, one run
per Dask task.
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
from palirs_data.config import IrConfig, LabelerConfig
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.spectra import SPEED_OF_LIGHT_CM_FS, ir_spectrum
from palirs_data.structures import Structure
from palirs_data.tables import check_schema
from palirs_data.trajectory import TrajectoryStore, trajectory_key

log = logging.getLogger(__name__)

#: one row per molecule, temperature and wavenumber
SPECTRUM_SCHEMA = pa.schema([
    pa.field("molecule", pa.string(), nullable=False),
    pa.field("temperature_K", pa.float64(), nullable=False),
    pa.field("wavenumber_cm1", pa.float64(), nullable=False),
    pa.field("intensity", pa.float64(), nullable=False),  # mean over runs, arbitrary units
    pa.field("std", pa.float64(), nullable=False),  # standard deviation over runs
    pa.field("n_runs", pa.int32(), nullable=False),
])


def run_seed(seed: int, molecule_index: int, temperature_K: float, run: int) -> int:
    return int(np.random.SeedSequence([seed, molecule_index, int(round(temperature_K * 1000)),
                                       run]).generate_state(1)[0])


def ir_replicas(minima: list[Structure], config: IrConfig) -> list[Replica]:
    return [Replica(key=trajectory_key(s.molecule, t, k), molecule=s.molecule,
                    numbers=s.numbers, positions_A=s.positions_A, temperature_K=t,
                    friction_fs=config.friction_fs, seed=run_seed(config.seed, m, t, k))
            for m, s in enumerate(minima) for t in config.temperatures_K
            for k in range(config.trajectories)]


def _sanity_guard():
    """Stops only runs that have gone wrong (non-finite, collapsed or exploded), never on
    committee disagreement: the production run is the measurement."""
    from palirs_data.acquisition import Guard

    return Guard(max_force_rel_dev=float("inf"), min_distance_A=0.5, max_distance_A=20.0)


@dataclass
class IrRunReport:
    thermalise_seconds: float
    produce_seconds: float
    replica_steps: int
    stopped: list[str]
    resumed_frames: int = 0  # produced frames found in the store (a killed run's), kept


def production_seed(seed: int) -> int:
    """The noise seed of a run's production part (its thermalisation uses ``seed``)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def run_ml_md(committee: Committee, dipole_model: torch.nn.Module, minima: list[Structure],
              config: IrConfig, store: TrajectoryStore, *, progress: bool = False,
              chunk_frames: int = 1024) -> IrRunReport:
    """Thermalise, then produce with dipoles into ``store`` (module docstring).

    Each run's thermalised state is kept in its trajectory's attributes, so a ``store`` left
    by a killed run of the same computation is continued: thermalised runs are not thermalised
    again, produced frames are kept (all runs cut back to the shortest, for an append the kill
    interrupted) and production continues from the last one; runs the guard stopped stay
    stopped. The noise is reseeded at every written chunk (:mod:`palirs_data.dynamics`), so the
    result equals that of an uninterrupted run."""
    replicas = ir_replicas(minima, config)
    guard = _sanity_guard()

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
    first = None
    fresh: list[Replica] = []
    if cold:
        md = BatchedMD(committee, cold, timestep_fs=config.timestep_fs)
        first = md.run(config.thermalise_steps, write_every=config.thermalise_steps + 1,
                       guard=guard, progress=progress)
        for r, x, v in zip([md.replicas[i] for i in md.active], md.positions, md.velocities):
            r.positions_A, r.velocities_A_fs = x.cpu().numpy(), v.cpu().numpy()
            r.time_fs = 0.0
            fresh.append(r)
    for r in warm:
        attrs = store[r.key].attrs
        r.positions_A = np.asarray(attrs["thermalised_positions_A"], dtype=np.float64)
        r.velocities_A_fs = np.asarray(attrs["thermalised_velocities_A_fs"], dtype=np.float64)
    order = {r.key: i for i, r in enumerate(replicas)}
    running = sorted(fresh + warm, key=lambda r: order[r.key])
    for r in running:
        r.seed = production_seed(r.seed)
    if warm:
        shortest = min([store[r.key].n_frames for r in warm] + ([0] if fresh else []))
        for r in warm:
            store[r.key].truncate(shortest)
    done = store[warm[0].key].n_frames if warm else 0
    second = None
    if running:
        md = BatchedMD(committee, running, timestep_fs=config.timestep_fs, store=store,
                       dipole_model=dipole_model, chunk_frames=chunk_frames)
        for r in fresh:  # the production's starting point, for a continuation
            store[r.key].set_attrs(thermalised_positions_A=np.asarray(r.positions_A).tolist(),
                                   thermalised_velocities_A_fs=np.asarray(
                                       r.velocities_A_fs).tolist())
        second = md.run(config.produce_steps - done * config.write_every,
                        write_every=config.write_every, guard=guard, progress=progress)
    stopped = sorted({*(first.stopped if first else []), *(second.stopped if second else []),
                      *(k for k, v in states.items() if v == "stopped")})
    return IrRunReport(first.seconds if first else 0.0, second.seconds if second else 0.0,
                       (first.replica_steps if first else 0)
                       + (second.replica_steps if second else 0), stopped, resumed)


def reference_run(s: Structure, temperature_K: float, seed: int, config: IrConfig,
                  labeler_config: LabelerConfig) -> np.ndarray:
    """One MD run driven by the label source with the BAOAB steps of the committee engine;
    returns the dipoles (n_frames, 3), e·Å, of the production part."""
    from ase.data import atomic_masses

    from palirs_data.dynamics import maxwell_boltzmann
    from palirs_data.labelers import make_labeler

    labeler = make_labeler(labeler_config)
    atoms = s.to_atoms()
    gen = torch.Generator().manual_seed(seed)
    m = atomic_masses[s.numbers][:, None]
    inv_m = units.ACCEL_EV_A_AMU_IN_A_FS2 / m
    dt = config.timestep_fs
    c1 = np.exp(-config.friction_fs * dt)
    c2 = np.sqrt((1 - c1 ** 2) * units.KB_EV_PER_K * temperature_K / m
                 / units.AMU_A2_FS2_IN_EV)
    x = np.array(s.positions_A, dtype=np.float64)
    v = maxwell_boltzmann(s.numbers, temperature_K, gen).numpy()

    def label(positions):
        atoms.positions = positions
        result = labeler.label(atoms, charge_e=s.charge_e, multiplicity=s.multiplicity)
        return result.forces_eVA, result.dipole_eA

    f, mu = label(x)
    dipoles = []
    total = config.thermalise_steps + config.produce_steps
    for step in range(1, total + 1):
        v = v + 0.5 * dt * f * inv_m
        x = x + 0.5 * dt * v
        v = c1 * v + c2 * torch.randn(v.shape, generator=gen, dtype=torch.float64).numpy()
        x = x + 0.5 * dt * v
        f, mu = label(x)
        v = v + 0.5 * dt * f * inv_m
        if step > config.thermalise_steps and (step - config.thermalise_steps) \
                % config.write_every == 0:
            dipoles.append(mu)
    return np.asarray(dipoles)


def spectra_table(dipoles: dict[tuple[str, float], list[np.ndarray]], config: IrConfig
                  ) -> pa.Table:
    """Mean and standard deviation over runs of each (molecule, temperature)'s spectra,
    up to ``config.max_wavenumber_cm1``."""
    columns: dict[str, list] = {f.name: [] for f in SPECTRUM_SCHEMA}
    dt = config.timestep_fs * config.write_every
    for (molecule, temperature), runs in sorted(dipoles.items()):
        n = min(len(d) for d in runs)  # a run stopped early is cut to the shortest
        spectra = [ir_spectrum(d[:n], dt, max_correlation_fs=config.max_correlation_fs,
                               zero_padding=config.zero_padding) for d in runs]
        nu = spectra[0][0]
        keep = nu <= config.max_wavenumber_cm1
        stack = np.array([s[1][keep] for s in spectra])
        k = int(keep.sum())
        columns["molecule"] += [molecule] * k
        columns["temperature_K"] += [float(temperature)] * k
        columns["wavenumber_cm1"] += nu[keep].tolist()
        columns["intensity"] += stack.mean(0).tolist()
        columns["std"] += stack.std(0).tolist()
        columns["n_runs"] += [len(runs)] * k
    return pa.Table.from_pydict(columns, schema=SPECTRUM_SCHEMA)


def store_dipoles(store: TrajectoryStore) -> dict[tuple[str, float], list[np.ndarray]]:
    """Production dipoles of every trajectory in an ``ir`` store, by (molecule, T)."""
    out: dict[tuple[str, float], list[np.ndarray]] = {}
    for key in store.keys():
        traj = store[key]
        attrs = traj.attrs
        out.setdefault((attrs["molecule"], float(attrs["temperature_K"])), []).append(
            traj.read("dipole_eA"))
    return out


def read_harmonic(path) -> pa.Table:
    from palirs_data.tables import read_parquet

    return read_parquet(path, schema=HARMONIC_IR_SCHEMA, validate=lambda t, where: check_schema(
        t, HARMONIC_IR_SCHEMA, where=where))


def write_harmonic(table: pa.Table, path) -> None:
    from palirs_data.tables import write_parquet

    write_parquet(table, path, validate=lambda t, where: check_schema(
        t, HARMONIC_IR_SCHEMA, where=where))


def read_spectra(path) -> pa.Table:
    from palirs_data.tables import read_parquet

    return read_parquet(path, schema=SPECTRUM_SCHEMA,
                        validate=lambda t, where: check_schema(t, SPECTRUM_SCHEMA, where=where))


def write_spectra(table: pa.Table, path) -> None:
    from palirs_data.tables import write_parquet

    write_parquet(table, path,
                  validate=lambda t, where: check_schema(t, SPECTRUM_SCHEMA, where=where))


# --- the double-harmonic spectrum ---------------------------------------------------------------

#: 1 (D/Å)² amu⁻¹ in km/mol (ASE's infrared module), and 1 e·Å in Debye
KM_MOL_PER_D2_A2_AMU = 42.2561
DEBYE_PER_EA = 1.0 / units.DEBYE_EA


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
    frequencies = omega / (2 * np.pi * SPEED_OF_LIGHT_CM_FS)
    displacements = vectors / sqrt_m[:, None]
    dmu_dq = jacobian @ displacements  # e·Å per (Å amu^½)
    intensities = (dmu_dq ** 2).sum(0) * DEBYE_PER_EA ** 2 * KM_MOL_PER_D2_A2_AMU
    return HarmonicIr(frequencies, intensities, displacements.T.reshape(-1, n, 3))


#: one row per vibrational mode of the double-harmonic analysis
HARMONIC_IR_SCHEMA = pa.schema([
    pa.field("molecule", pa.string(), nullable=False),
    pa.field("mode", pa.int32(), nullable=False),
    pa.field("frequency_cm1", pa.float64(), nullable=False),  # negative: imaginary
    pa.field("intensity_km_mol", pa.float64(), nullable=False),
])


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


def ml_md_task(committee_paths: list[str], dipole_path: str, minima: list[Structure],
               config: IrConfig, store_path: str) -> dict:
    """The committee MD of ``ir`` as one unit of GPU work: loads the models from files (a
    location every worker sees) onto this worker's device (CUDA when it has one), writes the
    trajectories into the store at ``store_path`` and returns the report, with where it ran."""
    from palirs_data.committee import load_model
    from palirs_data.compute import device, worker_name

    dev = device()
    committee = Committee.load(committee_paths, device=dev)
    dipole_model = load_model(dipole_path, device=dev)
    report = run_ml_md(committee, dipole_model, minima, config, TrajectoryStore(store_path))
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
          store: TrajectoryStore, *, client=None, compute=None,
          progress: bool = False) -> IrResult:
    """The ``ir`` stage: committee MD with dipoles into ``store``, the spectrum table (mean and
    std over runs) and the double-harmonic table, with timings. With a Dask ``client`` the MD
    runs as one GPU-annotated task (:func:`ml_md_task`, :func:`palirs_data.compute.submit`;
    ``compute`` is the :class:`~palirs_data.config.ComputeConfig`); without, in this
    process."""
    import time
    from pathlib import Path

    from palirs_data import structures
    from palirs_data.committee import load_model
    from palirs_data.compute import submit, watch_store
    from palirs_data.config import ComputeConfig
    from palirs_data.errors import PalirsInputError

    start = time.perf_counter()
    paths = sorted(Path(committee_dir).glob("model_*.model"))
    if not paths:
        raise PalirsInputError(f"{committee_dir}: no committee models (model_*.model)")
    committee = Committee.load(paths)
    dipole_model = load_model(dipole_path)
    minima = structures.from_table(equilibrium)
    n_runs = len(minima) * len(config.temperatures_K) * config.trajectories
    if client is None:
        report = dataclasses.asdict(run_ml_md(committee, dipole_model, minima, config, store,
                                              progress=progress))
        report.update(worker=None, device=committee.device)
    else:
        store_path = str(Path(store.path).resolve())
        future = submit(client, ml_md_task, [str(Path(p).resolve()) for p in paths],
                        str(Path(dipole_path).resolve()), minima, config, store_path,
                        config=compute or ComputeConfig(), gpu=True,
                        key=f"ir-md-{time.time_ns()}")
        report = watch_store(future, store_path, label="md (Dask)", progress=progress,
                             total_frames=n_runs * (config.produce_steps
                                                    // config.write_every))
        store = TrajectoryStore(store.path, mode="r")  # as the worker left it
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
        "md_worker": report["worker"], "md_device": report["device"],
        "md_resumed_frames": report["resumed_frames"],
        "stopped": report["stopped"], "harmonic_seconds": round(harmonic_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1)}
    return IrResult(spectra, harmonic, metrics)


def reference_task(s: Structure, temperature_K: float, seed: int, config: IrConfig,
                   labeler_config: LabelerConfig) -> dict[str, np.ndarray | float]:
    """One reference run on a worker: its dipoles and wall time."""
    import time

    t0 = time.perf_counter()
    dipoles = reference_run(s, temperature_K, seed, config, labeler_config)
    return {"dipole_eA": dipoles, "seconds": time.perf_counter() - t0}


def reference_ir(equilibrium: pa.Table, config: IrConfig, labeler_config: LabelerConfig,
                 store: TrajectoryStore, *, client=None, progress: bool = False
                 ) -> tuple[pa.Table, dict]:
    """The ``reference-md`` stage: MD driven by the label source with the ``ir`` protocol
    (``config`` is :meth:`ReferenceMdConfig.protocol`), one Dask task per run; dipoles into
    ``store``, spectra as in ``ir``."""
    import time

    from palirs_data import structures
    from palirs_data.progress import make_progress

    start = time.perf_counter()
    minima = structures.from_table(equilibrium)
    by_name = {s.molecule: s for s in minima}
    jobs = [(r, by_name[r.molecule]) for r in ir_replicas(minima, config)]  # ir's seed rule
    results: dict[str, dict] = {}
    if client is None:
        for r, s in jobs:
            results[r.key] = reference_task(s, r.temperature_K, r.seed, config,
                                            labeler_config)
    else:
        from distributed import as_completed

        futures = {client.submit(reference_task, s, r.temperature_K, r.seed, config,
                                 labeler_config, key=f"reference-md-{r.key}-{r.seed}",
                                 pure=False): r.key for r, s in jobs}
        with make_progress() as bar:
            task = bar.add_task("reference MD", total=len(futures), visible=progress)
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.advance(task)
    dipoles: dict[tuple[str, float], list[np.ndarray]] = {}
    dt = config.timestep_fs * config.write_every
    for r, s in jobs:
        d = results[r.key]["dipole_eA"]
        traj = store.create(r.key, numbers=s.numbers, molecule=s.molecule,
                            timestep_fs=dt, temperature_K=r.temperature_K,
                            arrays=["dipole_eA", "time_fs"], chunk_frames=4096,
                            friction_fs=config.friction_fs, seed=r.seed,
                            source="label source")
        traj.append(dipole_eA=d, time_fs=dt * np.arange(1, len(d) + 1))
        dipoles.setdefault((s.molecule, r.temperature_K), []).append(d)
    table = spectra_table(dipoles, config)
    run_seconds = [results[r.key]["seconds"] for r, _ in jobs]
    steps = config.thermalise_steps + config.produce_steps
    metrics = {"runs": len(jobs), "steps_per_run": steps,
               "simulated_ps": round(len(jobs) * steps * config.timestep_fs / 1000, 3),
               "run_seconds_mean": round(float(np.mean(run_seconds)), 1),
               "ms_per_step": round(1000 * float(np.mean(run_seconds)) / steps, 3),
               "seconds": round(time.perf_counter() - start, 1)}
    return table, metrics
