"""MD frames for the dipole model: picked evenly over every acquisition run of every
iteration, labelled by the label source, never the committee's."""

from __future__ import annotations

import numpy as np
import pytest

from palirs_data import structures
from palirs_data.config import LabelConfig, LabelerConfig
from palirs_data.dipole_data import acquisition_stores, md_frames, md_frames_table
from palirs_data.trajectory import TrajectoryStore, trajectory_key


def _run(store, molecule, temperature, replica, n_frames, start, numbers=(8, 1, 1)):
    """A run whose frame k is the molecule's geometry shifted along x by (start + k) / 1000 Å:
    the shift names the frame."""
    base = np.array([[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
    traj = store.create(trajectory_key(molecule, temperature, replica), numbers=list(numbers),
                        molecule=molecule, timestep_fs=0.5, temperature_K=temperature,
                        arrays=["positions_A", "time_fs"])
    shifts = (start + np.arange(n_frames)) / 1000.0
    traj.append(positions_A=base[None] + shifts[:, None, None] * np.array([1.0, 0, 0]),
                time_fs=0.5 * np.arange(n_frames))


def _campaign(tmp_path):
    """iter1: water at 300 K (two runs of 11 frames) and 500 K; iter2 continues the 300 K
    runs (frame 0 repeats iter1's last); iter3 converged (an empty store); iter4 a leftover
    of another campaign."""
    one = TrajectoryStore(tmp_path / "iter1" / "trajectories.zarr")
    _run(one, "water", 300.0, 0, 11, start=0)
    _run(one, "water", 300.0, 1, 11, start=100)
    _run(one, "water", 500.0, 0, 11, start=200)
    two = TrajectoryStore(tmp_path / "iter2" / "trajectories.zarr")
    _run(two, "water", 300.0, 0, 11, start=10)
    _run(two, "water", 300.0, 1, 11, start=110)
    TrajectoryStore(tmp_path / "iter3" / "trajectories.zarr")
    _run(TrajectoryStore(tmp_path / "iter4" / "trajectories.zarr"), "water", 700.0, 0, 11, 300)
    (tmp_path / "iter0").mkdir()  # no MD in iteration 0
    return tmp_path


def _shift(row) -> int:
    return int(round(row.positions_A[0, 0] * 1000))


def test_frames_are_spread_over_every_run_of_every_iteration(tmp_path):
    names = ["iter0", "iter1", "iter2", "iter3"]  # the campaign's iterations
    stores = acquisition_stores(_campaign(tmp_path), names)
    assert [k for k, _ in stores] == [1, 2, 3]  # iteration 0 runs no MD
    rows = md_frames(stores, 8, known_ids=set())
    at = {T: [r for r in rows if r.temperature_K == T] for T in (300.0, 500.0)}
    assert len(at[300.0]) == 8 and len(at[500.0]) == 8
    shifts = sorted(_shift(r) for r in at[300.0])
    # 40 frames of 300 K (4 runs x 10, first frames left out) in iteration and key order,
    # positions 0, 6, 11, 17, 22, 28, 33, 39 (np.linspace): two frames of every run
    assert shifts == [1, 7, 13, 19, 102, 108, 114, 120]
    assert {r.iteration for r in at[300.0]} == {1, 2}
    assert all(r.source == "dipole_md" and r.label_status == "pending" for r in rows)
    assert all(_shift(r) not in (0, 100, 200) for r in rows)  # no run's starting frame
    # a frame the table already holds is left out, not replaced
    known = {at[500.0][0].structure_id}
    again = md_frames(stores, 8, known_ids=known)
    assert len(again) == 15 and known.isdisjoint(r.structure_id for r in again)


def test_the_picked_frames_are_labelled_by_the_label_source(tmp_path):
    from palirs_data.labeling import label_table

    campaign = _campaign(tmp_path / "campaign")
    names = ["iter0", "iter1", "iter2", "iter3"]
    pending = md_frames_table(campaign, names, 3, structures.empty_table())
    assert pending.num_rows == 6  # 300 and 500 K; iter4 is no iteration of this campaign
    assert set(pending.column("label_status").to_pylist()) == {"pending"}
    report = label_table(pending, labeler_config=LabelerConfig(),
                         config=LabelConfig(checkpoint_dir=tmp_path / "ckpt"))
    assert set(report.table.column("label_status").to_pylist()) == {"ok"}
    dipoles = np.array(report.table.column("dipole_eA").to_pylist())
    assert np.all(np.isfinite(dipoles)) and np.linalg.norm(dipoles, axis=1).min() > 0.1
    assert md_frames_table(campaign, names, 0, structures.empty_table()).num_rows == 0


@pytest.mark.parametrize("value", [-1])
def test_a_negative_frame_count_is_refused(value):
    from pydantic import ValidationError

    from palirs_data.config import DipoleConfig

    with pytest.raises(ValidationError):
        DipoleConfig(md_frames=value)


def test_frames_keep_their_molecules_charge_and_multiplicity(tmp_path):
    """A frame is labelled as its molecule is in the final table: a cation stays a cation."""
    from palirs_data.structures import Structure

    campaign = _campaign(tmp_path)
    base = np.array([[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
    final = structures.to_table([Structure(molecule="water", numbers=[8, 1, 1],
                                           positions_A=base, source="user", charge_e=1,
                                           multiplicity=2)])
    picked = md_frames_table(campaign, ["iter0", "iter1"], 4, final)
    assert picked.num_rows == 8
    assert set(picked.column("charge_e").to_pylist()) == {1}
    assert set(picked.column("multiplicity").to_pylist()) == {2}
