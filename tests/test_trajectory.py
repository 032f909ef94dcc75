"""The Zarr trajectory store: registered shapes, chunked appends, consistency after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from palirs_data.errors import PalirsInputError
from palirs_data.trajectory import TrajectoryStore, trajectory_key


def _frames(n, n_atoms=3, start=0):
    rng = np.random.default_rng(start)
    return dict(positions_A=rng.normal(size=(n, n_atoms, 3)),
                velocities_A_fs=rng.normal(size=(n, n_atoms, 3)),
                dipole_eA=rng.normal(size=(n, 3)), energy_eV=rng.normal(size=n),
                force_std_max_eVA=rng.random(n), force_rel_dev=rng.random(n),
                time_fs=0.5 * np.arange(start, start + n))


def _new(path, **kw):
    store = TrajectoryStore(path)
    key = trajectory_key("water", 300, 0)
    traj = store.create(key, numbers=[8, 1, 1], molecule="water", timestep_fs=0.5,
                        temperature_K=300.0, chunk_frames=8, models=["m0", "m1", "m2"],
                        arrays=list(_frames(1)), **kw)
    return store, key, traj


def test_append_and_read_back(tmp_path):
    store, key, traj = _new(tmp_path / "t.zarr")
    a, b = _frames(5), _frames(7, start=5)
    traj.append(**a)
    assert traj.append(**b) == 12
    again = TrajectoryStore(tmp_path / "t.zarr", mode="r")[key]
    np.testing.assert_array_equal(again.read("positions_A"),
                                  np.concatenate([a["positions_A"], b["positions_A"]]))
    np.testing.assert_array_equal(again.last("time_fs"), 0.5 * 11)
    assert again.attrs["models"] == ["m0", "m1", "m2"] and again.attrs["timestep_fs"] == 0.5
    raw = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")[key]["positions_A"]
    assert raw.chunks == (8, 3, 3)  # chunked along frames
    assert raw.attrs["unit"] == "Å"


def test_append_checks_registered_shapes(tmp_path):
    _, _, traj = _new(tmp_path / "t.zarr")
    bad = _frames(4, n_atoms=2)
    with pytest.raises(ValueError, match="'positions_A' frames have shape"):
        traj.append(**bad)
    uneven = _frames(4)
    uneven["energy_eV"] = uneven["energy_eV"][:3]
    with pytest.raises(ValueError, match="disagree on the number of frames"):
        traj.append(**uneven)
    partial = _frames(4)
    del partial["dipole_eA"]
    with pytest.raises(ValueError, match="missing \\['dipole_eA'\\]"):
        traj.append(**partial)
    assert traj.n_frames == 0
    # a run records the label source's energies and dipoles or a model's, never both
    with pytest.raises(ValueError, match="labels and predictions in one run"):
        TrajectoryStore(tmp_path / "u.zarr").create(
            "w/300K/0", numbers=[8, 1, 1], molecule="w", timestep_fs=0.5, temperature_K=300.0,
            arrays=["positions_A", "model_energy_eV", "dipole_eA"])


def test_interrupted_append_is_trimmed_on_reopen(tmp_path):
    path = tmp_path / "t.zarr"
    store, key, traj = _new(path)
    traj.append(**_frames(6))
    # a crash mid-append: some arrays grew, the commit (n_frames) never happened
    group = zarr.open_group(str(path), mode="a")[key]
    group["positions_A"].resize((10, 3, 3))
    group["positions_A"][6:10] = 99.0
    group["energy_eV"].resize((9,))
    reopened = TrajectoryStore(path)[key]
    assert reopened.n_frames == 6
    for name in reopened.array_names:
        assert group[name].shape[0] == 6
    reopened.append(**_frames(2, start=6))  # and it continues where it stopped
    assert reopened.n_frames == 8
    assert not (reopened.read("positions_A") == 99.0).any()


def test_subset_of_arrays_and_truncate(tmp_path):
    store = TrajectoryStore(tmp_path / "t.zarr")
    traj = store.create("co/500K/1", numbers=[6, 8], molecule="co", timestep_fs=0.5,
                        temperature_K=500.0, arrays=["positions_A", "time_fs"])
    traj.append(positions_A=np.zeros((10, 2, 3)), time_fs=np.arange(10.0))
    traj.truncate(4)
    assert traj.n_frames == 4 and traj.read("time_fs").tolist() == [0, 1, 2, 3]
    with pytest.raises(KeyError):
        traj.read("dipole_eA")
    assert store.keys() == ["co/500K/1"]
    assert store.open_or_create("co/500K/1").n_frames == 4


def test_a_trajectory_is_never_continued_by_another_molecule(tmp_path):
    """Names that normalise alike ('my mol', 'my_mol') give one key; the store refuses to let
    the second molecule, or another temperature, continue the first one's trajectory."""
    store = TrajectoryStore(tmp_path / "t.zarr")
    key = trajectory_key("my mol", 300, 0)
    assert key == trajectory_key("my_mol", 300, 0)
    ethanol = [6, 6, 8, 1, 1, 1, 1, 1, 1]
    kwargs = dict(numbers=ethanol, molecule="my mol", timestep_fs=0.5, temperature_K=300.0,
                  arrays=["positions_A"])
    store.open_or_create(key, **kwargs).append(positions_A=np.zeros((1, 9, 3)))
    assert store.open_or_create(key, **kwargs).n_frames == 1  # the same run continues
    with pytest.raises(PalirsInputError, match="holds molecule 'my mol', not 'my_mol'"):
        store.open_or_create(key, **{**kwargs, "molecule": "my_mol"})
    with pytest.raises(PalirsInputError, match="holds numbers"):
        store.open_or_create(key, **{**kwargs, "numbers": [6, 8, 6, 1, 1, 1, 1, 1, 1]})
    with pytest.raises(PalirsInputError, match="holds temperature_K 300.0, not 500.0"):
        store.open_or_create(key, **{**kwargs, "temperature_K": 500.0})


def test_keys_are_sanitised(tmp_path):
    assert trajectory_key("carbon monoxide", 300, 2) == "carbon_monoxide/300K/2"
    store = TrajectoryStore(tmp_path / "t.zarr")
    with pytest.raises(Exception, match="invalid trajectory key"):
        store.create("../escape/1", numbers=[1], molecule="x", timestep_fs=1, temperature_K=1,
                     arrays=["time_fs"])


def test_md_killed_mid_run_continues_from_its_last_committed_frame(tmp_path, tiny_committee,
                                                                     methanol_data):
    """SIGKILL a committee MD run while it writes; the store reopens consistent (every array
    as long as the committed frame count) and the re-run continues from the last committed
    frame to the target instead of starting over: one continuous time axis, no frame twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from palirs_data import structures

    equilibrium = tmp_path / "equilibrium.parquet"
    structures.write_table(methanol_data["result"].equilibrium, equilibrium)
    store_path = tmp_path / "md.zarr"
    target = 600
    cmd = [sys.executable, str(Path(__file__).parent / "md_run.py"), str(store_path),
           str(equilibrium), str(target), *map(str, tiny_committee["paths"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keys = ["methanol/300K/0", "methanol/500K/0"]
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            store = TrajectoryStore(store_path, mode="r")
            if min(store[k].n_frames for k in keys) >= 200:
                break
        except (PalirsInputError, KeyError):
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reopened = TrajectoryStore(store_path)  # for writing: trims an interrupted append
    killed_at = {k: reopened[k].n_frames for k in keys}
    assert all(200 <= n < target for n in killed_at.values()), killed_at
    for k in keys:
        traj = reopened[k]
        for name in traj.array_names:
            assert len(traj.read(name)) == traj.n_frames
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    final = TrajectoryStore(store_path, mode="r")
    for k in keys:
        traj = final[k]
        assert traj.n_frames == target
        np.testing.assert_allclose(traj.read("time_fs"), 0.5 * np.arange(1, target + 1))
        assert np.isfinite(traj.read("positions_A")).all()
        # the step across the kill is an ordinary MD step: no jump back to the start
        x = traj.read("positions_A")
        steps = np.linalg.norm(x[1:] - x[:-1], axis=-1).max(axis=1)
        assert steps[killed_at[k] - 1] < 5 * np.median(steps)


def test_one_resume_rule_keeps_stopped_runs_and_cuts_the_others_to_the_shortest(tmp_path):
    """What a killed attempt left: a run the guard stopped stays as it is; the others are cut
    back to the shortest among them, and a run with no frame yet cuts them all back to 0."""
    from palirs_data.trajectory import resume

    store = TrajectoryStore(tmp_path / "s.zarr")
    for key, n in (("m/300K/0", 12), ("m/300K/1", 8), ("m/500K/0", 5)):
        store.create(key, numbers=[8, 1, 1], molecule="m", timestep_fs=0.5,
                     temperature_K=300.0, chunk_frames=4,
                     arrays=list(_frames(1))).append(**_frames(n))
    store["m/500K/0"].set_attrs(stopped_at_time_fs=2.5, stop_reason="test")
    keys = ["m/300K/0", "m/300K/1", "m/500K/0"]
    found = resume(store, keys)
    assert found.stopped == ["m/500K/0"] and found.going == ["m/300K/0", "m/300K/1"]
    assert found.frames == 8 and found.kept_frames == 8 + 8 + 5
    assert [store[k].n_frames for k in keys] == [8, 8, 5]
    # a run not yet in the store (or empty): every other run starts over
    found = resume(store, [*keys, "m/700K/0"])
    assert found.frames == 0 and [store[k].n_frames for k in keys] == [0, 0, 5]
    assert found.kept_frames == 5
