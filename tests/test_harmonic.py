"""Harmonic analysis and normal-mode sampling: known frequencies come out where they should."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase import units as ase_units
from ase.calculators.morse import MorsePotential
from ase.vibrations import VibrationsData

from palirs_data import harmonic, molecules, sampling
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


def test_morse_ase_samples_are_the_methods_one_sided_animation():
    eps, rho0, r0 = 11.0, 2.5, 1.13
    atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, r0]])
    result = harmonic.harmonic_analysis(
        atoms, MorsePotential(epsilon=eps, rho0=rho0, r0=r0), fmax_eVA=1e-4, max_steps=200,
        hessian_step_A=0.005, name="CO")
    samples = sampling.normal_mode_samples(result, temperature_K=300.0, frames_per_mode=10,
                                           sampler="ase")
    bonds = np.array([a.get_distance(0, 1) for _, a in samples])
    # ASE's animation of the same Hessian: mode vector * sqrt(kT/|hw|) * sin(2 pi k / 30),
    # the first 10 of 30 frames: one-sided, the minimum (k = 0) included
    data = VibrationsData.from_2d(result.atoms, result.hessian_eV_A2)
    animated = list(data.iter_animated_mode(5, temperature=ase_units.kB * 300.0, frames=30))
    expected = np.array([a.get_distance(0, 1) for a in animated[:10]])
    np.testing.assert_allclose(np.abs(bonds - r0), np.abs(expected - r0), atol=1e-9)
    assert bonds[0] == pytest.approx(result.atoms.get_distance(0, 1), abs=1e-9)
    assert np.abs(bonds - r0).max() > 0.02  # ~9x the classical thermal amplitude


def _harmonic_energy_eV(result, samples) -> np.ndarray:
    """Energy of each sample in the harmonic well of ``result``: ½ dxᵀ H dx."""
    hessian = result.hessian_eV_A2
    dx = np.array([a.positions - result.atoms.positions for _, a in samples]).reshape(
        len(samples), -1)
    return 0.5 * np.einsum("si,ij,sj->s", dx, hessian, dx)


def test_thermal_samples_carry_the_equipartition_energy(methanol_sample):
    """Classical Boltzmann samples of the harmonic well at T: the potential energy averages
    (3N-6)·kT/2 (methanol: 12 modes), and each normal coordinate has variance kT/ω²."""
    from palirs_data.structures import from_table

    eq = from_table(methanol_sample.equilibrium)[0]
    result = harmonic.harmonic_analysis(eq.to_atoms(), make_labeler(LabelerConfig()).calculator(),
                                        fmax_eVA=1e-3, max_steps=50, hessian_step_A=0.01,
                                        name="methanol")
    for temperature in (100.0, 300.0):
        samples = sampling.normal_mode_samples(result, temperature_K=temperature,
                                               frames_per_mode=400, sampler="thermal",
                                               rng=np.random.default_rng(3))
        assert len(samples) == 400 * 12 and all(k is None for k, _ in samples)
        energy = _harmonic_energy_eV(result, samples)
        expected = 12 * ase_units.kB * temperature / 2
        # the mean of a sum of 12 chi-square(1) terms: relative error sqrt(2/12/4800) = 0.6 %
        assert energy.mean() == pytest.approx(expected, rel=0.03)
        sqrt_m = np.sqrt(np.repeat(result.atoms.get_masses(), 3))
        dx = np.array([a.positions - result.atoms.positions for _, a in samples]).reshape(
            len(samples), -1)
        q = (dx * sqrt_m) @ result.modes.T  # normal coordinates
        np.testing.assert_allclose(q.var(0) * result.eigenvalues,
                                   ase_units.kB * temperature, rtol=0.1)


def test_wigner_samples_hold_zero_point_motion(methanol_sample):
    """Wigner variance (ħω/2)coth(ħω/2kT)/ω²: above the classical kT/ω², by ħω/2kT for a
    stiff mode at low T, and equal to it in the classical limit."""
    from palirs_data.structures import from_table

    eq = from_table(methanol_sample.equilibrium)[0]
    result = harmonic.harmonic_analysis(eq.to_atoms(), make_labeler(LabelerConfig()).calculator(),
                                        fmax_eVA=1e-3, max_steps=50, hessian_step_A=0.01,
                                        name="methanol")
    thermal = sampling.mode_variances(result, temperature_K=300.0, sampler="thermal")
    wigner = sampling.mode_variances(result, temperature_K=300.0, sampler="wigner")
    hw = result.frequencies_cm1 * ase_units.invcm
    assert np.all(wigner > thermal)
    np.testing.assert_allclose(wigner[-1] / thermal[-1], hw[-1] / (2 * ase_units.kB * 300.0),
                               rtol=1e-3)  # O-H stretch: coth -> 1
    hot = sampling.mode_variances(result, temperature_K=1e6, sampler="wigner")
    np.testing.assert_allclose(hot, sampling.mode_variances(result, temperature_K=1e6,
                                                            sampler="thermal"), rtol=1e-3)
    with pytest.raises(ValueError, match="choose one of: thermal, wigner, ase"):
        sampling.normal_mode_samples(result, temperature_K=300.0, frames_per_mode=1,
                                     sampler="wignr")


def test_mode_matching_follows_eigenvectors_not_order():
    """Two modes that cross in frequency: sorting pairs each with the other's reference;
    eigenvector overlap pairs them correctly."""
    rng = np.random.default_rng(0)
    vectors, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    reference = vectors[:, :3].T  # rows: unit eigenvectors
    ref_freqs = np.array([1000.0, 1100.0, 3000.0])
    # the model swaps the order of the first two modes (1000 -> 1150, 1100 -> 1050) and
    # rotates its eigenvectors slightly
    model = np.array([reference[1], reference[0], reference[2]])
    model = model + 0.05 * rng.normal(size=model.shape)
    model /= np.linalg.norm(model, axis=1, keepdims=True)
    model_freqs = np.array([1050.0, 1150.0, 3010.0])
    match, overlap = harmonic.match_modes(reference, model)
    assert match.tolist() == [1, 0, 2] and (overlap > 0.9).all()
    matched = model_freqs[match] - ref_freqs
    assert np.abs(matched).mean() == pytest.approx((150 + 50 + 10) / 3)
    by_order = np.sort(model_freqs) - ref_freqs
    assert np.abs(by_order).mean() == pytest.approx((50 + 50 + 10) / 3)  # too optimistic


@pytest.fixture(scope="module")
def methanol_sample():
    mols = molecules.resolve(["methanol"], [], where="test")
    return sample_molecules(mols, make_labeler(LabelerConfig()), SampleConfig())


def test_methanol_yields_120_samples_and_12_frequencies(methanol_sample):
    freqs = methanol_sample.frequencies.column("frequency_cm1").to_numpy()
    assert methanol_sample.frequencies.num_rows == 12
    vectors = np.array(methanol_sample.frequencies.column("mode_vector").to_pylist())
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(12), atol=1e-8)  # orthonormal
    assert methanol_sample.samples.num_rows == 120
    assert (freqs > 0).all() and np.all(np.diff(freqs) >= 0)
    # physically placed: torsion lowest, O-H stretch highest, C-H stretches below it
    assert 150 < freqs[0] < 450
    assert 3400 < freqs[-1] < 3800
    assert np.sum((freqs > 2800) & (freqs < 3150)) == 3
    # thermal samples displace every mode at once
    assert methanol_sample.samples.column("mode_index").null_count == 120
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


def test_molecules_sampled_on_two_workers_give_the_tables_of_one_process():
    """The sample stage runs one task per molecule, the largest first (methanol before
    water here); the tables keep the order of the molecule list and every molecule its own
    random stream, so they equal the one-process tables byte for byte."""
    from palirs_data.compute import Executor, dask_client
    from palirs_data.config import ComputeConfig

    mols = molecules.resolve(["water", "methanol"], [], where="test")
    here = sample_molecules(mols, make_labeler(LabelerConfig()), SampleConfig())
    compute = ComputeConfig(n_workers=2)
    with dask_client(compute) as client:
        there = sample_molecules(mols, make_labeler(LabelerConfig()), SampleConfig(),
                                 executor=Executor(client, compute))
    assert there.samples.equals(here.samples)
    assert there.equilibrium.equals(here.equilibrium)
    assert there.frequencies.equals(here.frequencies)
    assert there.equilibrium.column("molecule").to_pylist() == ["water", "methanol"]
    assert there.samples.column("molecule").to_pylist()[:12] == ["water"] * 12
    # one molecule on a local cluster: no cluster is started for it
    from palirs_data.sampling import executor_for

    with executor_for(compute, n_molecules=1) as lone:
        assert not lone.distributed


def test_rigid_body_residue_of_a_finite_difference_hessian_does_not_warn(caplog):
    """xTB water at the default 0.01 Å step: the rotations get ~50 cm-1 from the finite
    differences (O(step), light atoms), yet projecting them out moves no vibration by even
    0.01 cm-1, so nothing is reported as a loose optimisation."""
    atoms = molecules.build_atoms(molecules.CATALOGUE["water"])
    labeler = make_labeler(LabelerConfig())
    with caplog.at_level("WARNING", logger="palirs_data.harmonic"):
        result = harmonic.harmonic_analysis(atoms, labeler.calculator(), fmax_eVA=1e-3,
                                            max_steps=200, hessian_step_A=0.01, name="water")
    assert result.normal.rigid_max_cm1 > 20.0
    assert result.normal.projection_shift_cm1 < 0.01
    assert not caplog.records
    # coupling a rotation to the bend leaves the projected vibrations exactly where they were
    # and shows in the shift, as second-order perturbation theory has it
    masses = result.atoms.get_masses()
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    rigid = harmonic._rigid_body_basis(result.atoms.positions, masses)
    rotation, bend = rigid[:, -1], result.normal.modes[0]
    lam = result.normal.eigenvalues[0]
    coupling = 0.05 * lam
    coupled = result.hessian_eV_A2 + coupling * np.outer(sqrt_m, sqrt_m) * (
        np.outer(rotation, bend) + np.outer(bend, rotation))
    normal = harmonic.normal_modes(coupled, result.atoms.positions, masses)
    np.testing.assert_allclose(normal.frequencies_cm1, result.frequencies_cm1, atol=1e-6)
    rotation_lam = rotation @ (result.hessian_eV_A2 / np.outer(sqrt_m, sqrt_m)) @ rotation
    expected = harmonic.wavenumber_cm1(lam + coupling ** 2 / (lam - rotation_lam)) \
        - result.frequencies_cm1[0]
    assert normal.projection_shift_cm1 > harmonic.PROJECTION_SHIFT_WARN_CM1
    assert normal.projection_shift_cm1 == pytest.approx(abs(expected), rel=0.05)
