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

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from palirs_data import units
from palirs_data.committee import Committee
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


def run_ml_md(committee: Committee, dipole_model: torch.nn.Module, minima: list[Structure],
              config: IrConfig, store: TrajectoryStore, *, progress: bool = False
              ) -> IrRunReport:
    """Thermalise, then produce with dipoles into ``store`` (module docstring)."""
    replicas = ir_replicas(minima, config)
    warm = BatchedMD(committee, replicas, timestep_fs=config.timestep_fs)
    guard = _sanity_guard()
    first = warm.run(config.thermalise_steps, write_every=config.thermalise_steps + 1,
                     guard=guard, progress=progress)
    for r, x, v in zip([warm.replicas[i] for i in warm.active], warm.positions,
                       warm.velocities):
        r.positions_A, r.velocities_A_fs = x.cpu().numpy(), v.cpu().numpy()
        r.time_fs = 0.0
    alive = [warm.replicas[i] for i in warm.active]
    md = BatchedMD(committee, alive, timestep_fs=config.timestep_fs, store=store,
                   dipole_model=dipole_model, chunk_frames=1024)
    second = md.run(config.produce_steps, write_every=config.write_every, guard=guard,
                    progress=progress)
    stopped = sorted(set(first.stopped) | set(second.stopped))
    return IrRunReport(first.seconds, second.seconds,
                       first.replica_steps + second.replica_steps, stopped)


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
