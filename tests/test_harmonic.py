"""Harmonic analysis and normal-mode sampling: known frequencies come out where they should."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase import units as ase_units
from ase.calculators.morse import MorsePotential

from palirs_data import harmonic, molecules
from palirs_data.config import LabelerConfig, SampleConfig
from palirs_data.labelers import make_labeler
from palirs_data.sampling import sample_molecules


def _morse_wavenumber_cm1(epsilon_eV, rho0, r0_A, m1_amu, m2_amu) -> float:
    """Analytic harmonic wavenumber of a Morse diatomic: k = 2 ε (ρ0/r0)², ω = sqrt(k/μ)."""
    k_SI = 2 * epsilon_eV * (rho0 / r0_A) ** 2 * ase_units._e / 1e-20  # J/m²
    mu_SI = m1_amu * m2_amu / (m1_amu + m2_amu) * ase_units._amu
    return np.sqrt(k_SI / mu_SI) / (2 * np.pi * ase_units._c * 100)


def test_morse_diatomic_frequency_matches_analytic():
    eps, rho0, r0 = 11.0, 2.5, 1.13  # CO-like
    atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, r0 + 0.05]])  # start off the minimum
    result = harmonic.harmonic_analysis(
        atoms, MorsePotential(epsilon=eps, rho0=rho0, r0=r0), fmax_eVA=1e-4, max_steps=200,
        hessian_step_A=0.005, name="CO")
    expected = _morse_wavenumber_cm1(eps, rho0, r0, 12.011, 15.999)
    assert len(result.frequencies_cm1) == 1  # 3N-5 for a linear molecule
    assert result.frequencies_cm1[0] == pytest.approx(expected, abs=0.5)
    assert np.linalg.norm(result.atoms.positions[1] - result.atoms.positions[0]) == \
        pytest.approx(r0, abs=1e-4)


def test_morse_samples_follow_ase_animation_amplitude():
    eps, rho0, r0 = 11.0, 2.5, 1.13
    atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, r0]])
    result = harmonic.harmonic_analysis(
        atoms, MorsePotential(epsilon=eps, rho0=rho0, r0=r0), fmax_eVA=1e-4, max_steps=200,
        hessian_step_A=0.005, name="CO")
    samples = harmonic.normal_mode_samples(result, temperature_K=300.0, frames_per_mode=10)
    bonds = np.array([a.get_distance(0, 1) for _, a in samples])
    assert len(bonds) == 10 and len(np.unique(np.round(bonds, 8))) == 10
    # ASE's animation: mode vector * sqrt(kT/|hw|) * sin(phase); phases 2pi(k+1/4)/10
    mode = result.vibrations.get_modes(all_atoms=True)[result.mode_indices[0]]
    hw = abs(result.vibrations.get_energies()[result.mode_indices[0]])
    amplitude = np.linalg.norm(mode[1] - mode[0]) * np.sqrt(ase_units.kB * 300.0 / hw)
    phases = 2 * np.pi * (np.arange(10) + 0.25) / 10
    np.testing.assert_allclose(np.sort(np.abs(bonds - r0)),
                               np.sort(amplitude * np.abs(np.sin(phases))), atol=1e-6)
    assert abs(np.mean(bonds) - r0) < 1e-6  # symmetric about the minimum


@pytest.fixture(scope="module")
def methanol_sample():
    mols = molecules.resolve(["methanol"], [], where="test")
    return sample_molecules(mols, make_labeler(LabelerConfig()), SampleConfig())


def test_methanol_yields_120_samples_and_12_frequencies(methanol_sample):
    freqs = methanol_sample.frequencies.column("frequency_cm1").to_numpy()
    assert methanol_sample.frequencies.num_rows == 12
    assert methanol_sample.samples.num_rows == 120
    assert (freqs > 0).all() and np.all(np.diff(freqs) >= 0)
    # physically placed: torsion lowest, O-H stretch highest, C-H stretches below it
    assert 150 < freqs[0] < 450
    assert 3400 < freqs[-1] < 3800
    assert np.sum((freqs > 2800) & (freqs < 3150)) == 3
    counts = np.bincount(methanol_sample.samples.column("mode_index").to_numpy())
    assert counts.tolist() == [10] * 12
    ids = methanol_sample.samples.column("structure_id").to_pylist()
    assert len(set(ids)) == 120


def test_methanol_minimum_is_converged(methanol_sample):
    eq = methanol_sample.equilibrium.to_pylist()[0]
    assert eq["label_status"] == "ok" and eq["source"] == "equilibrium"
    assert np.linalg.norm(np.asarray(eq["forces_eVA"]), axis=1).max() < 1e-3
    # every sample lies above the minimum in energy (it is a minimum)
    labeler = make_labeler(LabelerConfig())
    from palirs_data.structures import from_table

    some = from_table(methanol_sample.samples)[::17]
    assert all(labeler.label(s.to_atoms()).energy_eV > eq["energy_eV"] for s in some)


def test_linear_and_nonlinear_mode_counts():
    for name, n_modes in [("carbon dioxide", 4), ("hydrogen cyanide", 4), ("water", 3),
                          ("ammonia", 6)]:
        atoms = molecules.build_atoms(molecules.CATALOGUE[name])
        assert harmonic.n_vibrational_modes(atoms) == n_modes, name


def test_sampling_is_bitwise_reproducible(methanol_sample):
    """Same inputs, same bytes: DVC hashes outputs, so a re-run must not differ in the last bit
    (threaded xTB reductions would; the labeler pins its OpenMP threads)."""
    mols = molecules.resolve(["methanol"], [], where="test")
    again = sample_molecules(mols, make_labeler(LabelerConfig()), SampleConfig())
    assert again.samples.equals(methanol_sample.samples)
    assert again.frequencies.equals(methanol_sample.frequencies)
