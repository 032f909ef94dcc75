"""Evaluation: frequency errors, test-set selection, dipole model, error metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palirs_data import evaluation, harmonic, structures
from palirs_data.committee import predict_dipoles


def test_frequency_error_is_zero_when_the_model_is_the_reference(methanol_data):
    """Run the evaluation's harmonic analysis with the label source itself (GFN2-xTB)."""
    from palirs_data.config import LabelerConfig
    from palirs_data.labelers import make_labeler

    result = methanol_data["result"]
    eq = structures.from_table(result.equilibrium)[0]
    again = harmonic.harmonic_analysis(eq.to_atoms(), make_labeler(LabelerConfig()).calculator(),
                                       fmax_eVA=1e-3, max_steps=100, hessian_step_A=0.01,
                                       name="methanol")
    errors = evaluation.frequency_errors(result.frequencies, {"methanol": again})
    assert errors["mae_cm1"] < 1e-3 and errors["rmse_cm1"] < 1e-3  # cm-1: zero up to BFGS noise
    assert errors["per_molecule"]["methanol"]["min_overlap"] > 0.99


def _reference_harmonics(methanol_data):
    from palirs_data.config import LabelerConfig
    from palirs_data.labelers import make_labeler

    eq = structures.from_table(methanol_data["result"].equilibrium)[0]
    return harmonic.harmonic_analysis(eq.to_atoms(), make_labeler(LabelerConfig()).calculator(),
                                      fmax_eVA=1e-3, max_steps=100, hessian_step_A=0.01,
                                      name="methanol")


def test_frequency_errors_measure_a_known_shift(methanol_data):
    import dataclasses

    ref = methanol_data["result"].frequencies
    again = _reference_harmonics(methanol_data)
    shift = np.where(np.arange(12) % 2, 10.0, -10.0)
    shifted = dataclasses.replace(again, normal=dataclasses.replace(
        again.normal, frequencies_cm1=again.frequencies_cm1 + shift))
    errors = evaluation.frequency_errors(ref, {"methanol": shifted})
    assert errors["mae_cm1"] == pytest.approx(10.0, abs=1e-3)
    assert errors["rmse_cm1"] == pytest.approx(10.0, abs=1e-3)
    assert errors["per_molecule"]["methanol"]["mae_cm1"] == pytest.approx(10.0, abs=1e-3)


def test_stop_rule_reads_the_committee_mean(tiny_committee, methanol_data, tmp_path):
    """evaluate.json's frequency_mae_cm1 (what acquire's stop rule reads) is the committee
    mean's, matched by overlap; the members' MAEs are reported beside it as the spread."""
    from palirs_data.acquisition import read_iteration
    from palirs_data.reports import Evaluation

    result = methanol_data["result"]
    report = evaluation.committee_frequencies(
        tiny_committee["paths"], result.equilibrium, result.frequencies, fmax_eVA=1e-3,
        max_steps=200, hessian_step_A=0.01)
    metrics = report.metrics()
    assert metrics["frequency_mae_cm1"] == report.committee["mae_cm1"]
    assert len(metrics["frequency_member_mae_cm1"]) == 3
    assert metrics["frequency_member_mae_std_cm1"] == pytest.approx(
        np.std(metrics["frequency_member_mae_cm1"]))
    assert metrics["frequency_mae_cm1"] not in metrics["frequency_member_mae_cm1"]
    # a one-member committee is that member
    alone = evaluation.committee_frequencies(
        tiny_committee["paths"][:1], result.equilibrium, result.frequencies, fmax_eVA=1e-3,
        max_steps=200, hessian_step_A=0.01).metrics()
    assert alone["frequency_mae_cm1"] == pytest.approx(metrics["frequency_member_mae_cm1"][0])
    Evaluation.model_validate({**metrics, "test": {"n_test": 0}}).write(
        tmp_path / "evaluate.json")
    structures.write_table(methanol_data["labelled"], tmp_path / "train.parquet")
    _, read = read_iteration(tmp_path)
    assert read.frequency_mae_cm1 == report.committee["mae_cm1"]


def test_cluster_selection_gives_20_from_5_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 10
    points = np.concatenate([c + rng.normal(size=(40, 8)) for c in centres])
    idx, labels = evaluation.select_by_clusters(points, n_clusters=5, per_cluster=4,
                                                rng=np.random.default_rng(1))
    assert len(idx) == 20 and len(set(idx)) == 20
    assert sorted(np.bincount(labels).tolist()) == [4, 4, 4, 4, 4]
    # each selected frame lies in one of the true blobs, 4 per blob
    blob = idx // 40
    assert sorted(np.bincount(blob, minlength=5).tolist()) == [4, 4, 4, 4, 4]


def test_small_clusters_are_topped_up():
    points = np.concatenate([np.zeros((2, 3)), np.ones((30, 3)) * 5 + np.arange(90).reshape(30, 3)
                             * 1e-3])
    idx, _ = evaluation.select_by_clusters(points, n_clusters=2, per_cluster=4,
                                           rng=np.random.default_rng(0))
    assert len(idx) == 8 and len(set(idx)) == 8 and {0, 1} <= set(idx)


def test_mbtr_separates_geometries():
    from ase.build import molecule

    a = molecule("CH3OH")
    b = a.copy()
    b.positions *= 1.3
    d = evaluation.mbtr_descriptors([a, a.copy(), b], ["H", "C", "N", "O"])
    assert d.shape[0] == 3 and np.allclose(d[0], d[1])
    assert np.linalg.norm(d[0] - d[2]) > 0.1
    assert np.linalg.norm(d[0]) == pytest.approx(1.0)  # l2-normalised


def test_test_set_has_20_structures_per_molecule(tiny_committee, methanol_data):
    report = evaluation.build_test_set(
        tiny_committee["paths"], methanol_data["result"].equilibrium,
        species=["H", "C", "N", "O"], temperature_K=300.0, duration_fs=100.0,
        timestep_fs=0.5, friction_fs=0.01, n_candidates=50, n_clusters=5, per_cluster=4,
        seed=0)
    table = report.table
    assert table.num_rows == 20
    assert set(table.column("source").to_pylist()) == {"test"}
    assert set(table.column("label_status").to_pylist()) == {"pending"}
    assert report.frames_per_molecule["methanol"] == 50


def test_errors_on_test_set_are_zero_against_own_predictions(tiny_committee, tiny_dipole_model,
                                                             methanol_data):
    """Label rows with the models' own predictions: every error must vanish."""
    committee, dip = tiny_committee["committee"], tiny_dipole_model["model"]
    rows = [s for s in structures.from_table(methanol_data["labelled"])[:12]]
    pred = committee.predict_table(structures.to_table(rows))
    batch = committee.batch([s.numbers for s in rows])
    pos = torch.as_tensor(np.concatenate([s.positions_A for s in rows]))
    mu = predict_dipoles(dip, batch, pos).numpy()
    for k, s in enumerate(rows):
        s.energy_eV = float(pred["pred_energy_eV"][k])
        s.forces_eVA = pred["pred_forces_eVA"][k]
        s.dipole_eA = mu[k]
    errors = evaluation.errors_on_test_set(structures.to_table(rows), committee, dip)
    assert errors["n_test"] == 12
    for key in ("energy_rmse_meV", "force_rmse_meV_A", "dipole_rmse_mD"):
        assert errors[key] < 1e-6, key
    real = evaluation.errors_on_test_set(methanol_data["labelled"], committee, dip)
    assert real["force_rmse_meV_A"] > 1.0 and real["dipole_rmse_mD"] > 0.1


def test_a_constant_energy_error_per_molecule_is_reported_apart(tiny_committee, methanol_data):
    """Reference energies = the committee's own, shifted by one constant per molecule (+40
    meV/atom for six structures, -10 for six others named as another molecule): the raw RMSE
    is that of the offsets, the RMSE within molecules is zero, the offsets come back with
    their signs (prediction minus reference); forces are untouched."""
    committee = tiny_committee["committee"]
    rows = [s for s in structures.from_table(methanol_data["labelled"])[:12]]
    pred = committee.predict_table(structures.to_table(rows))
    for k, s in enumerate(rows):
        offset = 40.0 if k < 6 else -10.0
        s.molecule = "methanol" if k < 6 else "methanol-b"
        s.energy_eV = float(pred["pred_energy_eV"][k]) - offset * 1e-3 * s.n_atoms
        s.forces_eVA = pred["pred_forces_eVA"][k]
    errors = evaluation.errors_on_test_set(structures.to_table(rows), committee)
    assert errors["energy_rmse_meV_per_atom"] == pytest.approx(np.sqrt((40**2 + 10**2) / 2))
    assert errors["energy_rmse_within_molecule_meV_per_atom"] < 1e-6
    assert errors["energy_offset_meV_per_atom"] == pytest.approx(
        {"methanol": 40.0, "methanol-b": -10.0})
    assert errors["force_rmse_meV_A"] < 1e-6
    # what is left is what varies within a molecule; a lone structure has nothing left
    rmse, offsets = evaluation.energy_offsets(np.array([1.0, 3.0, 5.0, 7.0, 100.0]),
                                              ["a", "a", "b", "b", "c"])
    assert rmse == pytest.approx(1.0) and offsets == {"a": 2.0, "b": 6.0, "c": 100.0}
    assert evaluation.energy_offsets(np.array([1.0, 2.0]), ["a", "b"])[0] is None


def test_rmse_interval_shows_an_outlier_and_shrinks_with_more_structures():
    """19 structures off by 1 and one by 10: RMSE 2.44, and a bootstrap interval from the
    resamples without the outlier (about a third of them: RMSE 1) to well above; the same
    mixture over ten times the structures has a narrow interval around the same RMSE."""
    few = [np.array([1.0])] * 19 + [np.array([10.0])]
    lo, hi = evaluation.rmse_interval(few)
    rmse = np.sqrt((19 + 100) / 20)
    assert lo == pytest.approx(1.0) and 3.0 < hi < 5.0 and lo < rmse < hi
    many = [np.array([1.0])] * 190 + [np.array([10.0])] * 10
    lo2, hi2 = evaluation.rmse_interval(many)
    assert lo2 < rmse < hi2 and (hi2 - lo2) < 0.5 * (hi - lo)
    # a structure's errors count component by component: 3 components of 2 are RMSE 2
    assert evaluation.rmse_interval([np.full(3, 2.0)] * 5) == pytest.approx([2.0, 2.0])


def test_dipole_error_along_md_reads_the_label_source_runs(tiny_dipole_model, tiny_committee,
                                                           methanol_data, tmp_path):
    """Two reference runs whose recorded dipoles are the model's plus a known offset (along
    x, 0 and 2 mDebye): per-component RMSE over both sqrt((0 + 4) / 6) mD, per run 0 and
    sqrt(4 / 3), every 50th frame counted."""
    from palirs_data.trajectory import TrajectoryStore
    from palirs_data.units import DEBYE_EA

    dip = tiny_dipole_model["model"]
    rows = structures.from_table(methanol_data["labelled"])[:120]
    batch = tiny_committee["committee"].batch([s.numbers for s in rows])
    pos = np.array([s.positions_A for s in rows])
    mu = predict_dipoles(dip, batch, torch.as_tensor(pos.reshape(-1, 3))).detach().numpy()
    store = TrajectoryStore(tmp_path / "ref.zarr")
    for run, offset_mD in enumerate((0.0, 2.0)):
        traj = store.create(f"methanol/300K/{run}", numbers=rows[0].numbers,
                            molecule="methanol", timestep_fs=0.5, temperature_K=300.0,
                            arrays=["positions_A", "dipole_eA"])
        traj.append(positions_A=pos, dipole_eA=mu + [offset_mD * 1e-3 * DEBYE_EA, 0, 0])
    out = evaluation.dipole_errors_along_md(tmp_path / "ref.zarr", dip)
    assert list(out) == ["methanol/300K"]
    got = out["methanol/300K"]
    assert got["frames"] == 2 * 3 and got["runs"] == 2  # frames 0, 50 and 100 of each
    assert got["dipole_rmse_mD"] == pytest.approx(np.sqrt(4 / 6), rel=1e-6)
    assert got["run_rmse_range_mD"] == pytest.approx([0.0, np.sqrt(4 / 3)], abs=1e-6)
    # frames recorded 2 fs apart (ir.write_every: 4): every 12th, about 25 fs as before
    coarse = TrajectoryStore(tmp_path / "coarse.zarr")
    traj = coarse.create("methanol/300K/0", numbers=rows[0].numbers, molecule="methanol",
                         timestep_fs=0.5, temperature_K=300.0,
                         arrays=["positions_A", "dipole_eA", "time_fs"])
    traj.append(positions_A=pos, dipole_eA=mu, time_fs=2.0 * np.arange(1, len(pos) + 1))
    assert evaluation.dipole_errors_along_md(tmp_path / "coarse.zarr", dip)[
        "methanol/300K"]["frames"] == 10  # frames 0, 12, ..., 108 of 120
    # the model's dipoles of a series of frames do not depend on how many go into one call
    one = evaluation.model_dipoles(dip, rows[0].numbers, pos)
    np.testing.assert_allclose(one, mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(evaluation.model_dipoles(dip, rows[0].numbers, pos,
                                                        batch_frames=7), one, rtol=0, atol=1e-12)


def test_dipole_model_rotates_with_the_molecule(tiny_dipole_model, tiny_committee,
                                                methanol_data):
    from scipy.spatial.transform import Rotation

    dip = tiny_dipole_model["model"]
    assert np.isfinite(tiny_dipole_model["report"].valid_rmse_mu_mD)
    s = structures.from_table(methanol_data["labelled"])[3]
    batch = tiny_committee["committee"].batch([s.numbers])
    pos = torch.as_tensor(s.positions_A)
    R = torch.as_tensor(Rotation.from_rotvec([0.3, -1.1, 0.4]).as_matrix())
    mu = predict_dipoles(dip, batch, pos)[0]
    mu_rot = predict_dipoles(dip, batch, pos @ R.T)[0]
    torch.testing.assert_close(mu_rot, R @ mu, atol=1e-9, rtol=0)
    assert float(torch.linalg.vector_norm(mu)) > 0


def test_md_streams_dipoles_into_the_store(tiny_committee, tiny_dipole_model, methanol_data,
                                          tmp_path):
    from palirs_data import dynamics
    from palirs_data.trajectory import TrajectoryStore

    eq = structures.from_table(methanol_data["result"].equilibrium)[0]
    rep = dynamics.Replica(key="methanol/300K/0", molecule="methanol", numbers=eq.numbers,
                           positions_A=eq.positions_A, temperature_K=300.0, friction_fs=0.01,
                           seed=0)
    store = TrajectoryStore(tmp_path / "t.zarr")
    md = dynamics.BatchedMD(tiny_committee["committee"], [rep], timestep_fs=0.5, store=store,
                            dipole_model=tiny_dipole_model["model"])
    md.run(20, write_every=4)
    traj = store["methanol/300K/0"]
    assert traj.n_frames == 5 and traj.read("model_dipole_eA").shape == (5, 3)
    batch = tiny_committee["committee"].batch([eq.numbers])
    expected = predict_dipoles(tiny_dipole_model["model"], batch,
                               torch.as_tensor(traj.last("positions_A")))[0].numpy()
    np.testing.assert_allclose(traj.last("model_dipole_eA"), expected, atol=1e-12)


def test_force_spread_that_tracks_the_error_correlates_fully(tiny_committee, methanol_data):
    """Reference forces = committee mean + an error on one atom proportional to the
    committee's largest force std: the per-structure rank correlation is 1; errors unrelated
    to the spread (a shuffled assignment) correlate far less."""
    committee = tiny_committee["committee"]
    rows = [s for s in structures.from_table(methanol_data["labelled"])[:24]]
    pred = committee.predict_table(structures.to_table(rows))
    std = pred["pred_force_std_max_eVA"]
    assert np.ptp(std) > 0

    def labelled(scale):
        for k, s in enumerate(rows):
            s.energy_eV = float(pred["pred_energy_eV"][k])
            s.forces_eVA = pred["pred_forces_eVA"][k].copy()
            s.forces_eVA[0, 0] += 3.0 * scale[k]
        return evaluation.errors_on_test_set(structures.to_table(rows), committee)

    tracked = labelled(std)
    assert tracked["force_std_error_spearman"] == pytest.approx(1.0)
    assert tracked["force_std_error_pearson"] == pytest.approx(1.0)
    shuffled = labelled(np.random.default_rng(0).permutation(std))
    assert shuffled["force_std_error_spearman"] < 0.6
    assert evaluation.uncertainty_correlation(np.ones(5), np.arange(5.0)) == {
        "force_std_error_spearman": None, "force_std_error_pearson": None}
