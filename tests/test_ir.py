"""IR spectra from MD: the committee-driven runs with the dipole model, and the label source's
own MD whose spectrum has its lines at the molecule's vibrational frequencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palirs_data.compute import Executor
from palirs_data import structures
from palirs_data.config import IrConfig, LabelerConfig
from palirs_data.ir import ir_replicas, run_ml_md
from palirs_data.reference_md import reference_run
from palirs_data.md_analysis import spectra_table, store_dipoles
from palirs_data.tables import SPECTRUM_SCHEMA, read_spectra, write_spectra
from palirs_data.trajectory import TrajectoryStore


def test_committee_md_with_dipoles_gives_a_mean_spectrum_and_its_spread(
        tiny_committee, tiny_dipole_model, methanol_data, tmp_path):
    minima = structures.from_table(methanol_data["result"].equilibrium)
    config = IrConfig(temperatures_K=[300.0, 500.0], trajectories=3, thermalise_fs=10.0,
                      produce_fs=100.0, write_every=2, max_correlation_fs=40.0)
    store = TrajectoryStore(tmp_path / "ir.zarr")
    report = run_ml_md(tiny_committee["committee"], tiny_dipole_model["model"], minima, config,
                       store)
    assert report.stopped == []
    assert len(store.keys()) == 6  # 1 molecule x 2 temperatures x 3 runs, one batch
    traj = store["methanol/300K/0"]
    assert traj.n_frames == 100  # 200 production steps, every 2nd written
    np.testing.assert_allclose(traj.read("time_fs")[[0, -1]], [1.0, 100.0])
    dipoles = store_dipoles(store)
    assert sorted(dipoles) == [("methanol", 300.0), ("methanol", 500.0)]
    runs = dipoles[("methanol", 300.0)]
    assert not np.allclose(runs[0], runs[1])  # independent runs
    table = spectra_table(dipoles, config)
    assert table.schema.equals(SPECTRUM_SCHEMA)
    one = table.filter(table.column("temperature_K").to_numpy() == 300.0)
    assert one.column("wavenumber_cm1").to_numpy().max() <= config.max_wavenumber_cm1
    assert set(one.column("n_runs").to_pylist()) == {3}
    assert np.all(one.column("std").to_numpy() >= 0) and one.column("std").to_numpy().max() > 0
    write_spectra(table, tmp_path / "ir.parquet")
    assert read_spectra(tmp_path / "ir.parquet").equals(table)


def test_ir_md_killed_and_continued_equals_an_uninterrupted_run(
        tiny_committee, tiny_dipole_model, methanol_data, tmp_path):
    """The ir MD killed after two production chunks, with one run's last append lost, and
    killed again before one run had produced anything, continues to the frames of an
    uninterrupted run, bit for bit (thermalised states are kept; nothing is thermalised
    twice)."""
    minima = structures.from_table(methanol_data["result"].equilibrium)
    config = IrConfig(temperatures_K=[300.0], trajectories=3, thermalise_fs=5.0,
                      produce_fs=20.0, write_every=1, max_correlation_fs=10.0)
    committee, dipole = tiny_committee["committee"], tiny_dipole_model["model"]
    whole = TrajectoryStore(tmp_path / "whole.zarr")
    run_ml_md(committee, dipole, minima, config, whole, chunk_frames=8)
    killed = TrajectoryStore(tmp_path / "killed.zarr")
    partial = config.model_copy(update={"produce_fs": 8.0})  # 16 steps: two chunks
    run_ml_md(committee, dipole, minima, partial, killed, chunk_frames=8)
    killed["methanol/300K/1"].truncate(8)
    # every run is cut back to the shortest (one chunk) and continues from there; then, one run
    # thermalised but with nothing produced: every run restarts from its thermalised state
    for shortest in (8, 0):
        killed["methanol/300K/2"].truncate(shortest)
        report = run_ml_md(committee, dipole, minima, config, killed, chunk_frames=8)
        assert report.resumed_frames == 3 * shortest and report.thermalise_seconds == 0.0
        for key in whole.keys():
            assert killed[key].n_frames == whole[key].n_frames == 40
            for name in ("positions_A", "velocities_A_fs", "model_dipole_eA", "time_fs"):
                np.testing.assert_array_equal(killed[key].read(name), whole[key].read(name))


def test_label_source_md_of_water_has_its_bands_at_the_harmonic_frequencies(water):
    """GFN2-xTB MD of water: at 100 K the centres (intensity-weighted mean wavenumbers) of the
    bend and stretch bands lie at the harmonic frequencies of the same method; at 300 K they
    move down (anharmonicity). Centres, not maxima: a freely rotating molecule's bands split
    into P and R branches some 50 cm⁻¹ either side of the band origin."""
    from palirs_data.config import SampleConfig
    from palirs_data.harmonic import harmonic_analysis
    from palirs_data.labelers import make_labeler
    from palirs_data.spectra import ir_spectrum
    from palirs_data.structures import Structure

    labeler_config = LabelerConfig()
    result = harmonic_analysis(water, make_labeler(labeler_config).calculator(),
                               fmax_eVA=SampleConfig().fmax_eVA, max_steps=500,
                               hessian_step_A=0.01, name="water")
    bend, *stretches = np.sort(result.frequencies_cm1)
    minimum = Structure.from_atoms(result.atoms, molecule="water", source="equilibrium")
    def centres(temperature):
        # 2 ps (was 4): 100 K centres 1539.0 / 3640.3 against harmonic 1538.6 / 3647.6, 300 K
        # 1458.5 / 3571.4 (4 ps: 1533.2 / 3642.0, 1468.4 / 3580.0); 300 fs of thermalising
        # left the 100 K stretch 25 cm-1 low
        config = IrConfig(temperatures_K=[temperature], trajectories=2, thermalise_fs=500.0,
                          produce_fs=2000.0, friction_fs=0.001)
        spectra = [ir_spectrum(reference_run(minimum, r, config, labeler_config)["arrays"][
            "dipole_eA"], config.timestep_fs) for r in ir_replicas([minimum], config)]
        nu, intensity = spectra[0][0], np.mean([s[1] for s in spectra], axis=0)

        def centre(lo, hi):
            sel = (nu > lo) & (nu < hi)
            return float((nu[sel] * intensity[sel]).sum() / intensity[sel].sum())

        gap = intensity[(nu > 2200) & (nu < 3000)]
        assert gap.max() < 0.05 * intensity.max()  # nothing of note between the bands
        return centre(1200, 1900), centre(3300, 4000)

    cold, warm = centres(100.0), centres(300.0)
    assert cold[0] == pytest.approx(bend, abs=10.0)
    assert cold[1] == pytest.approx(np.mean(stretches), abs=15.0)
    assert warm[0] < cold[0] and warm[1] < cold[1]


def test_reference_run_killed_after_a_chunk_continues_to_the_uninterrupted_run(water, tmp_path):
    """A reference run (the label source's MD, DFT's expensive part) writes into its
    checkpoint store as it goes: killed after its first committed chunk of 1024 frames, the
    rerun keeps those frames and produces only the rest, bit for bit the frames of a run
    never killed."""
    from palirs_data.structures import Structure

    minimum = Structure.from_atoms(water, molecule="water", source="equilibrium")
    labeler_config = LabelerConfig()
    config = IrConfig(temperatures_K=[300.0], trajectories=1, thermalise_fs=10.0,
                      produce_fs=600.0, max_correlation_fs=100.0)
    (replica,) = ir_replicas([minimum], config)
    whole = reference_run(minimum, replica, config, labeler_config,
                          str(tmp_path / "whole.zarr"))
    killed = str(tmp_path / "killed.zarr")
    first_chunk = config.model_copy(update={"produce_fs": 512.0})  # 1024 steps: one chunk
    reference_run(minimum, replica, first_chunk, labeler_config, killed)
    assert TrajectoryStore(killed)[replica.key].n_frames == 1024
    again = reference_run(minimum, replica, config, labeler_config, killed)
    assert again["report"]["resumed_frames"] == 1024
    assert again["report"]["thermalise_seconds"] == 0.0
    assert again["report"]["replica_steps"] == 1200 - 1024
    for name, array in whole["arrays"].items():
        np.testing.assert_array_equal(again["arrays"][name], array)


def test_double_harmonic_spectrum_matches_the_hessian_of_its_model(tiny_committee,
                                                                   tiny_dipole_model,
                                                                   methanol_data):
    """Autograd Hessian of a committee of one vs ASE's finite differences of the same model
    at its own minimum; intensities vs finite differences of the dipole model."""
    import torch
    from mace.calculators import MACECalculator

    from palirs_data.committee import Committee, predict_dipoles
    from palirs_data.harmonic import harmonic_analysis
    from palirs_data.harmonic import double_harmonic
    from palirs_data.units import DEBYE_EA, KM_MOL_PER_D2_A2_AMU
    from palirs_data.structures import Structure

    path = str(tiny_committee["paths"][0])
    start = structures.from_table(methanol_data["result"].equilibrium)[0]
    calc = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    fd = harmonic_analysis(start.to_atoms(), calc, fmax_eVA=1e-4, max_steps=2000,
                           hessian_step_A=0.01, name="methanol", require_convergence=False)
    minimum = Structure.from_atoms(fd.atoms, molecule="methanol", source="equilibrium")
    committee = Committee.load([path])
    model = tiny_dipole_model["model"]
    result = double_harmonic(committee, model, minimum)
    assert len(result.frequencies_cm1) == 12  # 3N - 6
    np.testing.assert_allclose(result.frequencies_cm1, np.sort(fd.frequencies_cm1), atol=3.0)
    # intensity of each mode = |dμ/dQ|², checked by central differences along the mode
    batch = committee.batch([minimum.numbers])
    x0 = torch.as_tensor(minimum.positions_A)
    h = 1e-3
    for k in range(12):
        d = torch.as_tensor(result.displacements[k])
        dmu = (predict_dipoles(model, batch, x0 + h * d) - predict_dipoles(model, batch,
                                                                          x0 - h * d)) / (2 * h)
        fd_intensity = float((dmu ** 2).sum()) / DEBYE_EA ** 2 * KM_MOL_PER_D2_A2_AMU
        assert result.intensities_km_mol[k] == pytest.approx(fd_intensity, rel=1e-4, abs=1e-6)
    # the broadened spectrum peaks at the frequency of its most intense isolated mode
    grid = np.arange(0.0, 4500.0, 0.5)
    spectrum = result.spectrum(grid, fwhm_cm1=4.0)
    inside = (result.frequencies_cm1 > 100) & (result.frequencies_cm1 < 4400)  # a rough
    # 6-epoch model can have an imaginary mode: its line lies off the grid
    assert np.trapezoid(spectrum, grid) == pytest.approx(
        result.intensities_km_mol[inside].sum(), rel=0.02)
    strongest = result.frequencies_cm1[np.argmax(result.intensities_km_mol)]
    window = np.abs(grid - strongest) < 3.0
    assert grid[window][np.argmax(spectrum[window])] == pytest.approx(strongest, abs=0.5)


def test_reference_md_runs_on_dask_as_it_does_in_process(water, tmp_path):
    """The reference-MD fan-out: one task per run on a local Dask cluster gives bit for bit
    the dipoles of the same runs in this process (seeds per run, not per worker), stored
    with their time axis; the spectra are the mean over the runs."""
    from palirs_data.compute import dask_client
    from palirs_data.config import ComputeConfig
    from palirs_data.reference_md import reference_ir
    from palirs_data.structures import Structure, to_table

    minimum = Structure.from_atoms(water, molecule="water", source="equilibrium")
    config = IrConfig(temperatures_K=[200.0], trajectories=2, thermalise_fs=5.0,
                      produce_fs=40.0, max_correlation_fs=20.0)
    table = to_table([minimum])
    here = TrajectoryStore(tmp_path / "here.zarr")
    spectra, metrics = reference_ir(table, config, LabelerConfig(), here)
    there = TrajectoryStore(tmp_path / "there.zarr")
    with dask_client(ComputeConfig(n_workers=2)) as client:
        spectra_dask, _ = reference_ir(table, config, LabelerConfig(), there,
                                       executor=Executor(client))
    assert sorted(here.keys()) == sorted(there.keys()) == ["water/200K/0", "water/200K/1"]
    for key in here.keys():
        traj = here[key]
        assert traj.n_frames == 80 and traj.attrs["source"] == "label source"
        # the label source's energies and dipoles are labels: never a model's array name
        assert {"energy_eV", "dipole_eA"} <= set(traj.array_names)
        assert not {"model_energy_eV", "model_dipole_eA"} & set(traj.array_names)
        np.testing.assert_array_equal(traj.read("dipole_eA"), there[key].read("dipole_eA"))
        np.testing.assert_allclose(traj.read("time_fs")[[0, -1]], [0.5, 40.0])
    assert not np.allclose(here["water/200K/0"].read("dipole_eA"),
                           here["water/200K/1"].read("dipole_eA"))
    assert spectra.equals(spectra_dask)
    assert set(spectra.column("n_runs").to_pylist()) == {2}
    assert metrics["runs"] == 2 and metrics["steps_per_run"] == 90 and metrics["ms_per_step"] > 0


def test_harmonic_table_is_taken_at_the_committee_minimum(tiny_committee, tiny_dipole_model,
                                                          methanol_data):
    import torch

    from palirs_data.committee import CommitteeCalculator
    from palirs_data.harmonic import harmonic_table
    from palirs_data.tables import HARMONIC_IR_SCHEMA

    committee = tiny_committee["committee"]
    minima = structures.from_table(methanol_data["result"].equilibrium)
    table, results = harmonic_table(committee, tiny_dipole_model["model"], minima,
                                    fmax_eVA=1e-4)
    assert table.schema.equals(HARMONIC_IR_SCHEMA)
    assert table.num_rows == 12 and table.column("mode").to_pylist() == list(range(12))
    assert np.all(table.column("intensity_km_mol").to_numpy() >= 0)
    np.testing.assert_array_equal(table.column("frequency_cm1").to_numpy(),
                                  results["methanol"].frequencies_cm1)
    # the calculator is the committee mean: forces = mean of the members' forces
    s = minima[0]
    calc = CommitteeCalculator(committee, s.numbers)
    atoms = s.to_atoms()
    atoms.calc = calc
    out = committee.evaluate(committee.batch([s.numbers]), torch.as_tensor(s.positions_A))
    np.testing.assert_allclose(atoms.get_forces(), out.member_forces_eVA.mean(0).numpy())


# --- the shared protocol: one integrator for any force field ----------------------------------


class _Diatomic:
    """A force field for BatchedMD: Cl2-like diatomics, harmonic bond (k eV/Å², r0 Å); with
    ``explode`` = (index, call, batch size), the forces of molecule ``index`` of a batch of
    that size turn non-finite from that call on."""

    dtype = torch.float64
    device = "cpu"

    def __init__(self, k: float = 100.0, r0: float = 2.0, explode=None) -> None:
        self.k, self.r0, self.explode, self.calls = k, r0, explode, 0

    def batch(self, numbers, device=None):
        from palirs_data.committee import MolecularBatch

        return MolecularBatch(numbers, [17], dtype=self.dtype)

    def evaluate(self, batch, positions):
        from palirs_data.committee import CommitteeOutput

        self.calls += 1
        x = positions.reshape(-1, 2, 3)
        d = x[:, 1] - x[:, 0]
        r = torch.linalg.vector_norm(d, dim=1, keepdim=True)
        f1 = -self.k * (r - self.r0) * d / r
        forces = torch.stack([-f1, f1], dim=1).reshape(-1, 3)
        energy = 0.5 * self.k * (r[:, 0] - self.r0) ** 2
        if self.explode is not None and self.calls >= self.explode[1] \
                and batch.n_graphs == self.explode[2]:
            forces[2 * self.explode[0]] = float("nan")
        zeros = torch.zeros(batch.n_graphs, dtype=self.dtype)
        return CommitteeOutput(energy, zeros, forces, torch.zeros(len(forces)), zeros,
                               zeros.clone(), energy[None], forces[None])


class _BondDipole:
    """Dipole along z proportional to the bond's stretch: no rotational side bands."""

    r_max = float("inf")

    def __call__(self, data, training=False, compute_force=False):
        x = data["positions"].reshape(-1, 2, 3)
        stretch = torch.linalg.vector_norm(x[:, 1] - x[:, 0], dim=1) - 2.0
        return {"dipole": torch.stack([0 * stretch, 0 * stretch, 0.3 * stretch], dim=1)}


def _diatomic_minimum():
    from palirs_data.structures import Structure

    return Structure(structure_id="cl2", molecule="cl2", numbers=np.array([17, 17]),
                     positions_A=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]),
                     source="equilibrium")


def test_a_harmonic_bond_through_the_shared_protocol_has_its_frequency_and_temperature(
        tmp_path):
    """The ir protocol (thermalise, then produce) driving a harmonic force field: the spectrum
    peaks at sqrt(k/μ)/(2πc) and the pooled kinetic temperature is the target (equipartition
    over all 3N degrees of freedom under Langevin)."""
    from ase.data import atomic_masses

    from palirs_data import units
    from palirs_data.ir import run_md
    from palirs_data.md_analysis import kinetic_temperatures
    from palirs_data.units import SPEED_OF_LIGHT_CM_FS

    config = IrConfig(temperatures_K=[300.0], trajectories=16, friction_fs=0.005,
                      thermalise_fs=500.0, produce_fs=4000.0, max_correlation_fs=1000.0)
    store = TrajectoryStore(tmp_path / "md.zarr")
    report = run_md(_Diatomic(), ir_replicas([_diatomic_minimum()], config), config, store,
                    dipole_model=_BondDipole())
    assert report.stopped == []
    mu = atomic_masses[17] / 2
    expected = np.sqrt(100.0 / mu * units.ACCEL_EV_A_AMU_IN_A_FS2) / (
        2 * np.pi * SPEED_OF_LIGHT_CM_FS)
    table = spectra_table(store_dipoles(store), config)
    nu, intensity = (table.column(c).to_numpy() for c in ("wavenumber_cm1", "intensity"))
    assert nu[np.argmax(intensity)] == pytest.approx(expected, abs=5.0)  # ~1240 cm-1
    pooled = kinetic_temperatures(store)["pooled"]["cl2/300K"]
    assert pooled["runs"] == 16 and abs(pooled["deviation_percent"]) < 5.0, pooled
    # the runs are the independent samples: 16 runs of a 6-dof molecule, each 20 x 1/γ long
    assert 0 < pooled["stderr_K"] < 15.0 and abs(pooled["mean_K"] - 300) < 3 * pooled["stderr_K"]


def test_a_run_that_explodes_is_reported_and_leaves_the_others_whole(tmp_path):
    from palirs_data.ir import run_md

    config = IrConfig(temperatures_K=[300.0], trajectories=3, thermalise_fs=50.0,
                      produce_fs=400.0, max_correlation_fs=100.0, friction_fs=0.005)
    store = TrajectoryStore(tmp_path / "md.zarr")
    # replica 1 explodes 3/4 into production (100 thermalisation steps, then 800)
    report = run_md(_Diatomic(explode=(1, 100 + 600, 3)), ir_replicas(
        [_diatomic_minimum()], config), config, store, dipole_model=_BondDipole())
    assert report.stopped == ["cl2/300K/1"]
    assert store["cl2/300K/1"].attrs["stop_reason"].startswith("non-finite")
    lengths = [store[f"cl2/300K/{k}"].n_frames for k in range(3)]
    assert lengths[0] == lengths[2] == 800 and 500 < lengths[1] < 800
    table = spectra_table(store_dipoles(store), config)
    assert set(table.column("n_runs").to_pylist()) == {3}  # the short run counts, with its
    # frames; one shorter than twice the correlation depth is left out
    dipoles = store_dipoles(store)
    dipoles[("cl2", 300.0)][1] = dipoles[("cl2", 300.0)][1][:300]
    assert set(spectra_table(dipoles, config).column("n_runs").to_pylist()) == {2}


def test_ml_and_reference_md_run_one_integrator(tiny_committee, tiny_dipole_model,
                                                methanol_data, water, tmp_path, monkeypatch):
    """Both the committee's and the label source's runs go through BatchedMD (thermalise and
    produce); the reference's dipoles are the label source's own at each written frame."""
    from palirs_data import dynamics
    from palirs_data.labelers import make_labeler
    from palirs_data.structures import Structure

    engines = []
    original = dynamics.BatchedMD.run

    def counting(self, *args, **kwargs):
        engines.append(type(self.committee).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dynamics.BatchedMD, "run", counting)
    config = IrConfig(temperatures_K=[300.0], trajectories=1, thermalise_fs=5.0,
                      produce_fs=20.0, max_correlation_fs=5.0)
    minima = structures.from_table(methanol_data["result"].equilibrium)
    run_ml_md(tiny_committee["committee"], tiny_dipole_model["model"], minima, config,
              TrajectoryStore(tmp_path / "ml.zarr"))
    minimum = Structure.from_atoms(water, molecule="water", source="equilibrium")
    result = reference_run(minimum, ir_replicas([minimum], config)[0], config, LabelerConfig())
    assert engines == ["Committee", "Committee", "LabelerForceField", "LabelerForceField"]
    arrays = result["arrays"]
    assert len(arrays["dipole_eA"]) == 40
    atoms = water.copy()
    atoms.positions = arrays["positions_A"][-1]
    label = make_labeler(LabelerConfig()).label(atoms)
    np.testing.assert_allclose(arrays["dipole_eA"][-1], label.dipole_eA, atol=1e-10)


def test_ir_md_divided_over_two_workers_gives_the_runs_of_one_batch(
        tiny_committee, tiny_dipole_model, methanol_data, tmp_path):
    """On a two-worker cluster the ir runs go out as two tasks, one per worker, writing one
    store side by side; every run equals the same run of the one batch in this process up to
    the last bits that a different batch size changes in the models' summation order (the
    noise is per run, not per batch)."""
    from pathlib import Path

    from palirs_data.compute import dask_client
    from palirs_data.config import ComputeConfig
    from palirs_data.ir import ml_ir

    config = IrConfig(temperatures_K=[300.0, 500.0], trajectories=2, thermalise_fs=5.0,
                      produce_fs=20.0, max_correlation_fs=10.0)
    equilibrium = methanol_data["result"].equilibrium
    committee_dir = Path(tiny_committee["paths"][0]).parent
    dipole = tiny_dipole_model["report"].model
    here = TrajectoryStore(tmp_path / "here.zarr")
    one = ml_ir(committee_dir, dipole, equilibrium, config, here)
    assert one.metrics["md_tasks"] == 1
    there = TrajectoryStore(tmp_path / "there.zarr")
    with dask_client(ComputeConfig(n_workers=2)) as client:
        split = ml_ir(committee_dir, dipole, equilibrium, config, there,
                      executor=Executor(client, ComputeConfig(n_workers=2)))
        names = sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())
    assert split.metrics["md_tasks"] == 2
    assert sorted(split.metrics["md_worker"]) == names  # both workers ran MD
    assert sorted(there.keys()) == sorted(here.keys()) and len(here.keys()) == 4
    for key in here.keys():
        assert there[key].n_frames == here[key].n_frames == 40
        for name in ("positions_A", "velocities_A_fs", "model_dipole_eA"):
            np.testing.assert_allclose(there[key].read(name), here[key].read(name),
                                       atol=1e-9, rtol=0)
    assert split.metrics["md_stage_replica_steps_per_s"] > 0
