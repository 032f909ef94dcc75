"""Geometry optimisation, harmonic (normal-mode) analysis and normal-mode sampling.

The ``sample`` stage runs this with the label source; the ``evaluate`` stage runs the same
functions with a trained model, so that model and reference frequencies are computed in exactly
the same way.

- Optimisation: ASE BFGS to ``fmax`` (eV/Å).
- Hessian: central finite differences of the forces (ASE ``Vibrations``, ``nfree=2``).
- Vibrational modes: all 3N modes of the Hessian minus the 6 (5 for a linear molecule) of
  smallest magnitude, which are the translations and rotations. Imaginary frequencies are
  stored as negative numbers.
- Normal modes: eigenvectors of the mass-weighted Hessian H_ij/sqrt(m_i m_j), unit length in
  mass-weighted coordinates (eigenvalues λ = ω² in eV/(Å² amu)); stored with the reference
  frequencies so a model's modes can be matched to them by overlap (:func:`match_modes`).
- Samples (:func:`normal_mode_samples`), ``frames_per_mode`` × n_vib geometries per molecule:

  - ``thermal`` (default): classical Boltzmann sampling of the harmonic well at T, every mode
    displaced at once, normal coordinate Q_k ~ N(0, kT/ω_k²); the harmonic potential energy of
    a sample then averages (3N−6)·kT/2, the potential energy MD at T visits.
  - ``wigner``: the harmonic Wigner distribution at T, variance (ħω/2)·coth(ħω/2kT)/ω² per
    mode (zero-point motion included; the classical limit is ``thermal``).
  - ``ase``: the method's original samples, one mode at a time as ASE animates it
    (``VibrationsData.iter_animated_mode``: the mode vector times sqrt(kT/|ħω|) times
    sin(2πk/3F)), the first F of 3F frames, one-sided, minimum included. Its amplitude is
    3-10× the classical thermal one at 300 K (not a physical distribution).

The double-harmonic IR spectrum of a committee (:func:`double_harmonic`, :func:`harmonic_table`)
is the same analysis by automatic differentiation of the models: the Hessian of the
committee-mean energy and the derivatives of the dipole model, at the committee's own minimum.
Torch is imported only there, so the ``sample`` stage starts without it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS
from ase.vibrations import Vibrations, VibrationsData

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
class HarmonicResult:
    """Optimised geometry and its harmonic analysis.

    ``frequencies_cm1`` (n_vib,) ascending, negative = imaginary; ``mode_indices`` (n_vib,)
    index each vibrational mode in ``vibrations`` (ASE's full 3N list); ``modes`` (n_vib, 3N)
    the unit eigenvectors of the mass-weighted Hessian and ``eigenvalues`` (n_vib,) its
    eigenvalues ω², eV/(Å² amu), in the same order; ``energy_eV`` of the optimised geometry;
    ``optimisation_steps`` taken by BFGS.
    """

    atoms: Atoms
    energy_eV: float
    frequencies_cm1: np.ndarray
    mode_indices: np.ndarray
    vibrations: VibrationsData
    optimisation_steps: int
    dropped_max_cm1: float  # largest |frequency| among the dropped translations/rotations
    modes: np.ndarray | None = None
    eigenvalues: np.ndarray | None = None


def is_linear(atoms: Atoms, *, tol: float = 1e-3) -> bool:
    """Linear if the smallest principal moment of inertia is ~0 relative to the largest."""
    if len(atoms) < 3:
        return True
    moments = np.sort(atoms.get_moments_of_inertia())
    return bool(moments[0] < tol * moments[-1])


def n_vibrational_modes(atoms: Atoms) -> int:
    """3N-6, or 3N-5 for a linear molecule."""
    return 3 * len(atoms) - (5 if is_linear(atoms) else 6)


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


def harmonic_analysis(atoms: Atoms, calc: Calculator, *, fmax_eVA: float, max_steps: int,
                      hessian_step_A: float, name: str,
                      require_convergence: bool = True) -> HarmonicResult:
    """Optimise ``atoms`` with ``calc`` and compute its harmonic frequencies and modes."""
    opt_atoms, steps = optimise(atoms, calc, fmax_eVA=fmax_eVA, max_steps=max_steps, name=name,
                                require_convergence=require_convergence)
    energy = float(opt_atoms.get_potential_energy())
    with tempfile.TemporaryDirectory(prefix="palirs-vib-") as tmp:
        vib = Vibrations(opt_atoms, name=f"{tmp}/vib", delta=hessian_step_A, nfree=2)
        vib.run()
        data = vib.get_vibrations()
    mode_energies = data.get_energies()  # complex, eV; imaginary part for negative curvature
    signed = np.where(np.abs(mode_energies.imag) > np.abs(mode_energies.real),
                      -np.abs(mode_energies.imag), mode_energies.real) / units.INVCM_EV
    n_vib = n_vibrational_modes(opt_atoms)
    order = np.argsort(np.abs(signed))
    keep = np.sort(order[len(signed) - n_vib:])
    dropped = order[: len(signed) - n_vib]
    dropped_max = float(np.abs(signed[dropped]).max()) if dropped.size else 0.0
    keep = keep[np.argsort(signed[keep])]
    freqs = signed[keep]
    if dropped_max > 50.0:
        log.warning("molecule '%s': translations/rotations reach %.1f cm-1 (loose optimisation?)",
                    name, dropped_max)
    if (freqs < 0).any():
        log.warning("molecule '%s': %d imaginary frequencies; not a minimum", name,
                    int((freqs < 0).sum()))
    values, vectors = mass_weighted_modes(data)
    return HarmonicResult(opt_atoms, energy, freqs, keep, data, steps, dropped_max,
                          modes=vectors[:, keep].T.copy(), eigenvalues=values[keep])


def mass_weighted_modes(data: VibrationsData) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (3N,), eV/(Å² amu), and unit eigenvectors (3N, 3N, as columns) of the
    mass-weighted Hessian, in ASE's order (ascending eigenvalue, as ``get_energies``)."""
    sqrt_m = np.sqrt(np.repeat(data.get_atoms().get_masses(), 3))
    hessian = data.get_hessian_2d()
    weighted = hessian / np.outer(sqrt_m, sqrt_m)
    return np.linalg.eigh(0.5 * (weighted + weighted.T))


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


#: normal-mode samplers (module docstring)
SAMPLERS = ("thermal", "wigner", "ase")


def mode_variances(result: HarmonicResult, *, temperature_K: float, sampler: str) -> np.ndarray:
    """Variance of each vibrational normal coordinate, Å² amu: kT/ω² (``thermal``) or
    (ħω/2)·coth(ħω/2kT)/ω² (``wigner``); |ω²| for an imaginary mode."""
    kT = units.KB_EV_PER_K * temperature_K
    lam = np.abs(result.eigenvalues)
    if sampler == "thermal":
        return kT / lam
    if sampler == "wigner":
        hw = np.abs(result.frequencies_cm1) * units.INVCM_EV  # ħω, eV
        return 0.5 * hw / np.tanh(hw / (2 * kT)) / lam
    raise ValueError(f"no variance for sampler {sampler!r}; choose one of: thermal, wigner")


def normal_mode_samples(result: HarmonicResult, *, temperature_K: float, frames_per_mode: int,
                        sampler: str = "thermal", rng: np.random.Generator | None = None
                        ) -> list[tuple[int | None, Atoms]]:
    """``frames_per_mode`` × n_vib displaced geometries of the minimum in ``result``.

    Returns ``(mode_index, atoms)`` pairs; ``mode_index`` counts vibrational modes in ascending
    frequency (as in the frequency table) for ``ase`` samples, which displace one mode each,
    and is None for ``thermal`` and ``wigner`` samples, which displace all modes at once
    (module docstring). ``rng`` draws the normal coordinates of those two.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if sampler == "ase":
        kT = units.KB_EV_PER_K * temperature_K
        samples: list[tuple[int | None, Atoms]] = []
        for vib_index, full_index in enumerate(result.mode_indices):
            frames = list(result.vibrations.iter_animated_mode(
                int(full_index), temperature=kT, frames=3 * frames_per_mode))
            for frame in frames[:frames_per_mode]:
                samples.append((vib_index, Atoms(numbers=frame.numbers,
                                                 positions=frame.positions)))
        return samples
    rng = rng if rng is not None else np.random.default_rng(0)
    sigma = np.sqrt(mode_variances(result, temperature_K=temperature_K, sampler=sampler))
    n_samples = frames_per_mode * len(sigma)
    q = rng.standard_normal((n_samples, len(sigma))) * sigma  # normal coordinates, Å amu^½
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(result.atoms.get_masses(), 3))
    displacements = (q @ result.modes) * inv_sqrt_m  # (n_samples, 3N), Å
    x0 = result.atoms.positions
    return [(None, Atoms(numbers=result.atoms.numbers, positions=x0 + d.reshape(x0.shape)))
            for d in displacements]


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
