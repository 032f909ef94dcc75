"""Geometry optimisation and harmonic (normal-mode) analysis.

The ``sample`` stage runs this with the label source; the ``evaluate`` stage runs the same
functions with a trained model, so that model and reference frequencies are computed in exactly
the same way.

- Optimisation: ASE BFGS to ``fmax`` (eV/Å).
- Hessian: central finite differences of the forces (:func:`finite_difference`, every
  Cartesian coordinate ±``hessian_step_A``, symmetrised); with ``dipole`` also the dipole's
  derivatives from the same single points (the label source's double-harmonic intensities).
- Normal modes (:func:`normal_modes`, the one analysis for every Hessian): the mass-weighted
  Hessian H_ij/sqrt(m_i m_j) with the translations and rotations projected out; its 3N−6
  (3N−5 for a linear molecule) remaining unit eigenvectors are the vibrations (eigenvalues
  λ = ω² in eV/(Å² amu)), stored with the reference frequencies so a model's modes can be
  matched to them by overlap (:func:`match_modes`). Imaginary frequencies are stored as
  negative numbers.

The normal-mode samples drawn from an analysis are in :mod:`palirs_data.sampling`.

The double-harmonic IR spectrum of a committee (:func:`double_harmonic`, :func:`harmonic_table`)
is the same :func:`normal_modes` on a Hessian by automatic differentiation of the models: the
Hessian of the committee-mean energy and the derivatives of the dipole model, at the
committee's own minimum.
Torch is imported only there, so the ``sample`` stage starts without it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from palirs_data import units
from palirs_data.errors import StageFailed
from palirs_data.tables import (FREQUENCY_SCHEMA, HARMONIC_IR_SCHEMA, check_schema, read_parquet,
                                write_parquet)

if TYPE_CHECKING:  # torch only where a model is differentiated (the sample stage runs without)
    import torch

    from palirs_data.committee import Committee
    from palirs_data.structures import Structure

log = logging.getLogger(__name__)


def _validate_frequencies(table: pa.Table, where: str) -> pa.Table:
    from palirs_data.errors import PalirsInputError

    table = check_schema(table, FREQUENCY_SCHEMA, where=where)
    freqs = table.column("frequency_cm1").to_numpy()
    if not np.isfinite(freqs).all():
        raise PalirsInputError(f"{where}: column 'frequency_cm1' has non-finite values")
    return table


def write_frequencies(table: pa.Table, path) -> None:
    write_parquet(table, path, validate=_validate_frequencies)


def read_frequencies(path) -> pa.Table:
    return read_parquet(path, schema=FREQUENCY_SCHEMA, validate=_validate_frequencies)


@dataclass
class NormalModes:
    """Vibrations of one geometry from its Hessian: ``frequencies_cm1`` (n_vib,) ascending,
    negative = imaginary; ``eigenvalues`` (n_vib,) ω², eV/(Å² amu), and ``modes`` (n_vib, 3N)
    the unit eigenvectors of the mass-weighted Hessian, in the same order; ``masses_amu`` (N,);
    ``rigid_max_cm1`` the largest |frequency| the Hessian gives a translation or rotation before
    they are projected out; ``projection_shift_cm1`` the most that projecting them out moves a
    vibration (against the vibrations of the unprojected Hessian).

    A finite-difference Hessian gives the rotations a frequency that grows with its step (xTB
    water, step 0.02 / 0.01 / 0.005 Å: 102 / 50 / 35 cm⁻¹, light atoms and small moments of
    inertia) while the vibrations move by less than 0.01 cm⁻¹ when they are projected out: the
    rigid-body figure alone says little. The shift says what the projection does to the
    frequencies (docs/method.md, "Rigid-body residue")."""

    frequencies_cm1: np.ndarray
    eigenvalues: np.ndarray
    modes: np.ndarray
    masses_amu: np.ndarray
    rigid_max_cm1: float
    projection_shift_cm1: float = 0.0

    @property
    def displacements(self) -> np.ndarray:
        """Cartesian displacement of each mode per unit normal coordinate, (n_vib, 3N),
        Å/(Å amu^½)."""
        return self.modes / np.sqrt(np.repeat(self.masses_amu, 3))[None, :]

    def intensities_km_mol(self, dipole_jacobian_eA_per_A: np.ndarray) -> np.ndarray:
        """Double-harmonic IR intensity of each mode, km/mol, from the dipole's Jacobian
        (3, 3N), e·Å per Å: |dμ/dQ|²."""
        dmu_dq = np.asarray(dipole_jacobian_eA_per_A) @ self.displacements.T
        return (dmu_dq ** 2).sum(0) / units.DEBYE_EA ** 2 * units.KM_MOL_PER_D2_A2_AMU


def wavenumber_cm1(eigenvalues: np.ndarray) -> np.ndarray:
    """Signed wavenumber of mass-weighted Hessian eigenvalues ω², eV/(Å² amu): ν̃ = ω/(2πc),
    negative for a negative curvature (an imaginary frequency)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    omega = np.sign(lam) * np.sqrt(np.abs(lam) * units.ACCEL_EV_A_AMU_IN_A_FS2)  # rad/fs
    return omega / (2 * np.pi * units.SPEED_OF_LIGHT_CM_FS)


def _rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, 6; 5 for a linear molecule, 3 for an atom) of the mass-weighted
    translations and rotations. A rotation counts about each principal axis whose moment of
    inertia exceeds 1e-3 of the largest (a linear molecule has one moment of ~0)."""
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    r = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    inertia = np.einsum("i,ij,ik->jk", masses, r, r)
    inertia = np.trace(inertia) * np.eye(3) - inertia
    moments, axes = np.linalg.eigh(inertia)
    vectors = [np.tile(axis, len(masses)) * sqrt_m for axis in np.eye(3)]
    vectors += [np.cross(axis, r).ravel() * sqrt_m
                for moment, axis in zip(moments, axes.T) if moment > 1e-3 * moments.max()]
    q, _ = np.linalg.qr(np.array(vectors).T)
    return q


def normal_modes(hessian_eV_A2: np.ndarray, positions_A: np.ndarray,
                 masses_amu: np.ndarray) -> NormalModes:
    """The one normal-mode analysis, whatever made the Hessian (finite differences of a label
    source's forces, or a model's automatic differentiation): the symmetrised Hessian is
    mass-weighted, the translations and rotations of ``positions_A`` are projected out, and the
    3N−6 (3N−5 for a linear molecule) remaining eigenvectors are the vibrations."""
    masses = np.asarray(masses_amu, dtype=np.float64)
    hessian = np.asarray(hessian_eV_A2, dtype=np.float64)
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    weighted = 0.5 * (hessian + hessian.T) / np.outer(sqrt_m, sqrt_m)
    rigid = _rigid_body_basis(np.asarray(positions_A, dtype=np.float64), masses)
    rigid_max = float(np.abs(wavenumber_cm1(np.linalg.eigvalsh(rigid.T @ weighted @ rigid)))
                      .max())
    projector = np.eye(len(sqrt_m)) - rigid @ rigid.T
    n_vib = len(sqrt_m) - rigid.shape[1]

    def vibrations(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the eigenvectors lying furthest outside the rigid-body space (ascending)
        values, vectors = np.linalg.eigh(matrix)
        keep = np.sort(np.argsort(np.linalg.norm(rigid.T @ vectors, axis=0))[:n_vib])
        return values[keep], vectors[:, keep]

    values, vectors = vibrations(projector @ weighted @ projector)
    unprojected, _ = vibrations(weighted)
    shift = float(np.abs(wavenumber_cm1(unprojected) - wavenumber_cm1(values)).max(initial=0.0))
    return NormalModes(wavenumber_cm1(values), values, vectors.T.copy(), masses, rigid_max, shift)


def n_vibrational_modes(atoms: Atoms) -> int:
    """3N−6, or 3N−5 for a linear molecule (the rank of the rigid-body space decides, as in
    :func:`normal_modes`)."""
    rigid = _rigid_body_basis(atoms.positions.astype(np.float64), atoms.get_masses())
    return 3 * len(atoms) - rigid.shape[1]


def finite_difference(atoms: Atoms, calc: Calculator, *, step_A: float, dipole: bool = False
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Hessian (3N, 3N), eV/Å², by central differences of the forces of ``calc`` (every
    Cartesian coordinate displaced by ±``step_A``), and with ``dipole`` the dipole's Jacobian
    (3, 3N), e·Å per Å, from the same 6N single points."""
    x0 = np.asarray(atoms.positions, dtype=np.float64)
    work = Atoms(numbers=atoms.numbers, positions=x0)
    work.calc = calc
    n3 = x0.size
    hessian = np.empty((n3, n3))
    jacobian = np.empty((3, n3)) if dipole else None
    for i in range(n3):
        points = []
        for sign in (1.0, -1.0):
            x = x0.copy()
            x.flat[i] += sign * step_A
            work.positions = x
            points.append((work.get_forces().ravel().copy(),
                           np.asarray(work.get_dipole_moment()) if dipole else None))
        hessian[i] = -(points[0][0] - points[1][0]) / (2 * step_A)
        if jacobian is not None:
            jacobian[:, i] = (points[0][1] - points[1][1]) / (2 * step_A)
    return 0.5 * (hessian + hessian.T), jacobian


@dataclass
class HarmonicResult:
    """Optimised geometry and its harmonic analysis.

    ``modes`` holds the frequencies (ascending, negative = imaginary), the mass-weighted
    eigenvectors and eigenvalues (:class:`NormalModes`); ``hessian_eV_A2`` (3N, 3N) the
    finite-difference Hessian; ``energy_eV`` of the optimised geometry; ``optimisation_steps``
    taken by BFGS; ``intensities_km_mol`` the double-harmonic intensities where the dipole's
    derivatives were asked for, else None.
    """

    atoms: Atoms
    energy_eV: float
    normal: NormalModes
    hessian_eV_A2: np.ndarray
    optimisation_steps: int
    intensities_km_mol: np.ndarray | None = None

    @property
    def frequencies_cm1(self) -> np.ndarray:
        return self.normal.frequencies_cm1

    @property
    def modes(self) -> np.ndarray:
        return self.normal.modes

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.normal.eigenvalues


def optimise(atoms: Atoms, calc: Calculator, *, fmax_eVA: float, max_steps: int,
             name: str, require_convergence: bool = True) -> tuple[Atoms, int]:
    """BFGS minimisation to ``fmax_eVA``. Not converged: :class:`StageFailed`, or with
    ``require_convergence=False`` a warning (a half-trained model's surface may be rough)."""
    work = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    work.calc = calc
    opt = BFGS(work, logfile=None)
    converged = opt.run(fmax=fmax_eVA, steps=max_steps)
    fmax = float(np.linalg.norm(work.get_forces(), axis=1).max())
    if not converged and not require_convergence:
        log.warning("molecule '%s': optimisation stopped at fmax %.2e eV/Å after %d steps",
                    name, fmax, max_steps)
    elif not converged:
        raise StageFailed(
            f"molecule '{name}': optimisation did not reach fmax {fmax_eVA} eV/Å in "
            f"{max_steps} steps (last {fmax:.2e} eV/Å)"
        )
    return work, int(opt.nsteps)


#: warn when projecting out the rigid-body motions moves a vibration by more than this, cm⁻¹
#: (a fifth of the campaign's 5 cm⁻¹ stop rule; xTB's methanol, ethanol, water and ammonia at
#: step 0.01 Å move by at most 0.005 cm⁻¹, and by 0.12 after a loose optimisation to
#: fmax 0.05 eV/Å)
PROJECTION_SHIFT_WARN_CM1 = 1.0


def harmonic_analysis(atoms: Atoms, calc: Calculator, *, fmax_eVA: float, max_steps: int,
                      hessian_step_A: float, name: str, require_convergence: bool = True,
                      dipole: bool = False) -> HarmonicResult:
    """Optimise ``atoms`` with ``calc``, then its finite-difference Hessian (and with
    ``dipole`` the double-harmonic intensities) and :func:`normal_modes`."""
    opt_atoms, steps = optimise(atoms, calc, fmax_eVA=fmax_eVA, max_steps=max_steps, name=name,
                                require_convergence=require_convergence)
    energy = float(opt_atoms.get_potential_energy())
    hessian, jacobian = finite_difference(opt_atoms, calc, step_A=hessian_step_A, dipole=dipole)
    normal = normal_modes(hessian, opt_atoms.positions, opt_atoms.get_masses())
    if normal.projection_shift_cm1 > PROJECTION_SHIFT_WARN_CM1:
        log.warning("molecule '%s': projecting out translations/rotations (%.1f cm-1) moves a "
                    "vibration by %.2f cm-1: the geometry is not a minimum of this surface or "
                    "the Hessian step (%g Å) is too coarse", name, normal.rigid_max_cm1,
                    normal.projection_shift_cm1, hessian_step_A)
    else:
        log.debug("molecule '%s': translations/rotations %.1f cm-1 (finite-difference residue), "
                  "projected out; vibrations move by %.3f cm-1", name, normal.rigid_max_cm1,
                  normal.projection_shift_cm1)
    if (normal.frequencies_cm1 < 0).any():
        log.warning("molecule '%s': %d imaginary frequencies; not a minimum", name,
                    int((normal.frequencies_cm1 < 0).sum()))
    intensities = None if jacobian is None else normal.intensities_km_mol(jacobian)
    return HarmonicResult(opt_atoms, energy, normal, hessian, steps, intensities)


def match_modes(reference: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assign each reference mode a model mode by eigenvector overlap.

    ``reference`` (n, 3N) and ``model`` (n, 3N) hold unit mass-weighted eigenvectors as rows.
    The assignment maximises the summed overlap |⟨q_ref|q_model⟩| over one-to-one pairings
    (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``), so two modes that cross
    in frequency are still compared with their own counterparts. Returns the model index of
    each reference mode and the overlap of each pair.
    """
    from scipy.optimize import linear_sum_assignment

    overlap = np.abs(np.asarray(reference) @ np.asarray(model).T)
    rows, cols = linear_sum_assignment(-overlap)
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = cols
    return order, overlap[rows, cols][np.argsort(rows)]


# --- the double-harmonic spectrum of a committee and its dipole model ----------------------

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


def double_harmonic(committee: Committee, dipole_model: torch.nn.Module,
                    s: Structure) -> HarmonicIr:
    """Harmonic frequencies from the Hessian of the committee-mean energy and intensities
    from the dipole model's derivatives, both by automatic differentiation, at the geometry
    of ``s`` (give a minimum of the committee), analysed by :func:`normal_modes`."""
    import torch
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
    normal = normal_modes(hessian.detach().cpu().numpy().astype(np.float64),
                          np.asarray(s.positions_A, dtype=np.float64),
                          atomic_masses[np.asarray(s.numbers)])
    intensities = normal.intensities_km_mol(jacobian.detach().cpu().numpy().astype(np.float64))
    return HarmonicIr(normal.frequencies_cm1, intensities,
                      normal.displacements.reshape(-1, n, 3))


def harmonic_table(committee: Committee, dipole_model: torch.nn.Module,
                   minima: list[Structure], *, fmax_eVA: float = 1e-3, max_steps: int = 2000
                   ) -> tuple[pa.Table, dict[str, HarmonicIr]]:
    """Double-harmonic spectrum of each molecule at the committee's own minimum (BFGS from
    the reference minimum)."""
    from palirs_data.committee import CommitteeCalculator

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
