"""Active learning: frame selection, the guard, continuation between iterations."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import TINY_MODEL, write_evaluation
from palirs_data.compute import Executor
from palirs_data import structures
from palirs_data.acquisition import run_acquisition
from palirs_data.config import GuardConfig
from palirs_data.guard import Guard
from palirs_data.selection import select_frames
from palirs_data.committee import Committee
from palirs_data.config import AcquireConfig
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.trajectory import TrajectoryStore


# --- selection ------------------------------------------------------------------------------

def test_selection_takes_the_most_uncertain_frames_apart_in_time():
    t = np.arange(10.0)
    u = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.95, 0.3, np.nan, 0.85, 0.1])
    assert select_frames(t, u, n=3, min_spacing_fs=0.0).tolist() == [5, 1, 8]
    assert select_frames(t, u, n=3, min_spacing_fs=2.0).tolist() == [5, 1, 8]
    # 8 is 3 fs from 5, 2 is 1 fs from 1, 4 and 6 are 1 fs from 5, 3 is 2 fs from 5 ...
    assert select_frames(t, u, n=3, min_spacing_fs=3.5).tolist() == [5, 1, 9]
    # fewer frames than asked for: all that the spacing allows; NaN never
    assert select_frames(t, u, n=10, min_spacing_fs=4.0).tolist() == [5, 1, 9]
    assert 7 not in select_frames(t, u, n=10, min_spacing_fs=0.0)


def test_selection_is_greedy_by_uncertainty_on_random_series():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_frames = int(rng.integers(1, 60))
        t = np.sort(rng.uniform(0, 100, n_frames))
        u = rng.exponential(size=n_frames)
        n, spacing = int(rng.integers(1, 8)), float(rng.uniform(0, 20))
        chosen = select_frames(t, u, n=n, min_spacing_fs=spacing)
        assert len(chosen) <= n and len(set(chosen)) == len(chosen)
        assert all(abs(t[a] - t[b]) >= spacing for a in chosen for b in chosen if a != b)
        assert np.all(np.diff(u[chosen]) <= 0)  # most uncertain first
        # every frame passed over for a less uncertain one lies too close to a better pick
        floor = u[chosen[-1]] if len(chosen) == n else -np.inf
        for i in set(range(n_frames)) - set(chosen.tolist()):
            if u[i] > floor:
                assert any(abs(t[i] - t[j]) < spacing and u[j] >= u[i] for j in chosen)


# --- the guard --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minimum(methanol_data):
    return structures.from_table(methanol_data["result"].equilibrium)[0]


@pytest.fixture(scope="module")
def inverted_member(tmp_path_factory, methanol_data):
    """One member trained on different data: the same geometries with the interaction
    energy and forces of methanol inverted (E - ΣE0 -> -(E - ΣE0), F -> -F)."""
    import pyarrow as pa

    from palirs_data.training import train_committee
    from palirs_data.config import CommitteeConfig

    table = methanol_data["labelled"]
    e0s = methanol_data["e0s"]
    rows = structures.from_table(table)
    for s in rows:
        reference = sum(e0s[int(z)] for z in s.numbers)
        s.energy_eV = 2 * reference - s.energy_eV
        s.forces_eVA = -s.forces_eVA
    inverted = structures.to_table(rows)
    assert isinstance(inverted, pa.Table)
    tmp = tmp_path_factory.mktemp("inverted")
    config = CommitteeConfig(seeds=[7], model=TINY_MODEL,
                             training={"max_num_epochs": 6, "lr": 0.01})
    report = train_committee(inverted, e0s=e0s, config=config, out_dir=tmp / "models",
                             work_dir=tmp / "work")
    return report.members[0].model


def _replicas(minimum, temperatures, seed=0):
    return [Replica(key=f"methanol/{t:g}K/{k}", molecule="methanol", numbers=minimum.numbers,
                    positions_A=minimum.positions_A, temperature_K=t, friction_fs=0.01,
                    seed=seed + k) for k, t in enumerate(temperatures)]


def test_guard_stops_a_run_of_a_disagreeing_committee(tiny_committee, inverted_member,
                                                      minimum, tmp_path):
    paths = tiny_committee["paths"]
    agreeing = Committee.load(paths)
    disagreeing = Committee.load([*paths[:2], inverted_member])
    n_steps = 200

    def run(committee, name, limit):
        guard = Guard(GuardConfig(), max_force_rel_dev=limit)
        store = TrajectoryStore(tmp_path / f"{name}.zarr")
        md = BatchedMD(committee, _replicas(minimum, [500.0]), timestep_fs=0.5, store=store)
        report = md.run(n_steps, write_every=2, guard=guard)
        return md, report, store["methanol/500K/0"]

    # members trained on the same data: how far they disagree on this run (6-epoch models
    # are rough, so the limit is 0.5 or, if they exceed it, a little above their worst)
    _, report_ok, traj_ok = run(agreeing, "good", float("inf"))
    assert report_ok.stopped == [] and traj_ok.n_frames == n_steps // 2
    limit = max(0.5, 1.2 * float(traj_ok.read("force_rel_dev").max()))
    # one member trained on an inverted surface: the run stops, early, at the limit
    md, report, traj = run(disagreeing, "bad", limit)
    replica = md.replicas[0]
    assert report.stopped == ["methanol/500K/0"]
    assert replica.stopped_at_step < n_steps // 2
    assert replica.stop_reason.startswith("force_rel_dev")
    assert float(replica.stop_reason.split()[1]) > limit
    # only the frames before the blow-up are kept: every one of them passes the guard
    assert traj.n_frames == (replica.stopped_at_step - 1) // 2
    assert np.all(traj.read("force_rel_dev") <= limit)
    assert traj.n_frames == 0 or traj.read("time_fs")[-1] < replica.stopped_at_step * 0.5


def test_guard_stops_non_finite_and_exploding_frames(tiny_committee, minimum):
    from palirs_data.guard import bonds

    committee = tiny_committee["committee"]
    md = BatchedMD(committee, _replicas(minimum, [300.0] * 4), timestep_fs=0.5)
    x = md._x.clone()
    n = len(minimum.numbers)
    x[n] = x[n + 1]
    x[n, 0] += 0.1  # replica 1: two atoms 0.1 Å apart
    i, j, d0 = bonds(minimum.numbers, minimum.positions_A)
    bond = x[2 * n + j[0]] - x[2 * n + i[0]]
    x[2 * n + j[0]] = x[2 * n + i[0]] + 1.6 * bond  # replica 2: a bond at 1.6 × its length
    x[3 * n] += 50.0  # replica 3: one atom far away
    md._x = x
    out = committee.evaluate(md.batch, md._x)
    # without the minima: only absolute distances, so the broken bond (2 Å) passes
    plain = Guard(GuardConfig(), max_force_rel_dev=1e9)
    assert plain(md, out).tolist() == [False, True, False, True]
    assert "0.10 Å apart" in md.replicas[1].stop_reason
    assert "> 20 Å" in md.replicas[3].stop_reason
    # with them a bond stretched beyond 1.5 × its length at the minimum stops the run,
    # whatever the molecule's size
    guard = Guard(GuardConfig(), max_force_rel_dev=1e9, minima=[minimum])
    assert guard(md, out).tolist() == [False, True, True, True]
    assert "a bond at 1.60 × its length at the minimum" in md.replicas[2].stop_reason
    out.energy_eV[0] = float("nan")
    assert guard(md, out)[0]


def test_bond_stretch_bound_leaves_thermal_motion_alone(tiny_committee, minimum):
    """The guard's default bond bound never fires on ordinary MD at the acquisition's hottest
    temperature (700 K, thermalised under strong friction)."""
    replicas = _replicas(minimum, [700.0] * 4)
    for r in replicas:
        r.friction_fs = 0.05
    md = BatchedMD(tiny_committee["committee"], replicas, timestep_fs=0.5)
    report = md.run(400, write_every=400, guard=Guard(GuardConfig(), minima=[minimum]))
    assert report.stopped == []
    # the bound is the parameter's: a tight one stops the same runs on a bond
    tight = Guard(GuardConfig(max_bond_stretch=1.02), minima=[minimum])
    md = BatchedMD(tiny_committee["committee"], _replicas(minimum, [700.0] * 4),
                   timestep_fs=0.5)
    assert len(md.run(400, write_every=400, guard=tight).stopped) == 4
    assert all("a bond at" in r.stop_reason for r in md.replicas)


# --- one acquisition step and its continuation ---------------------------------------------

def test_acquisition_continues_exactly_and_selects_per_temperature(tiny_committee, minimum,
                                                                   tmp_path):
    config = AcquireConfig(temperatures_K=[300.0, 700.0], duration_fs=20.0, write_every=2,
                           thermalise_fs=10.0, per_temperature=3, min_spacing_fs=2.0,
                           friction_fs=0.01,
                           max_force_rel_dev=1e9)  # tiny models: no guard here
    committee = tiny_committee["committee"]
    first = TrajectoryStore(tmp_path / "iter1.zarr")
    one = run_acquisition(committee, [minimum], config, iteration=1, store=first)
    second = TrajectoryStore(tmp_path / "iter2.zarr")
    two = run_acquisition(committee, [minimum], config, iteration=2, store=second,
                          previous=TrajectoryStore(tmp_path / "iter1.zarr", mode="r"))
    for key in ("methanol/300K/0", "methanol/700K/0"):
        a, b = first[key], second[key]
        assert a.n_frames == b.n_frames == 1 + 40 // 2  # the start, then every 2nd step
        for name in ("positions_A", "velocities_A_fs", "time_fs"):
            np.testing.assert_array_equal(b.read(name, 0, 1)[0], a.last(name))
        np.testing.assert_allclose(b.read("time_fs"), 20.0 + np.arange(21) * 1.0)
        # a new iteration draws new noise: the runs differ after the start
        assert not np.allclose(b.read("positions_A")[1:], a.read("positions_A")[1:])
    for report, iteration in ((one, 1), (two, 2)):
        table = report.table
        assert table.num_rows == 6
        assert set(table.column("source").to_pylist()) == {"active_learning"}
        assert set(table.column("iteration").to_pylist()) == {iteration}
        assert set(table.column("label_status").to_pylist()) == {"pending"}
        for t in (300.0, 700.0):
            rows = table.filter(pc.equal(table.column("temperature_K"), t))
            key = f"methanol/{t:g}K/0"
            store = first if iteration == 1 else second
            u = store[key].read("force_std_max_eVA")
            expected = 1 + select_frames(store[key].read("time_fs")[1:], u[1:], n=3,
                                         min_spacing_fs=2.0)
            assert sorted(rows.column("force_std_max_eVA").to_pylist()) == sorted(u[expected])


def test_replicas_per_temperature_are_selected_together(tiny_committee, minimum, tmp_path):
    """``acquire.replicas`` runs per molecule and temperature, each its own trajectory and
    seed; the frames of all of them compete for the ``per_temperature`` picks, and every run
    reports its own kinetic temperature. With one replica the first run is unchanged."""
    config = AcquireConfig(temperatures_K=[300.0], duration_fs=20.0, write_every=2,
                           thermalise_fs=10.0, per_temperature=4, min_spacing_fs=2.0,
                           friction_fs=0.01, max_force_rel_dev=1e9, replicas=3)
    committee = tiny_committee["committee"]
    store = TrajectoryStore(tmp_path / "three.zarr")
    report = run_acquisition(committee, [minimum], config, iteration=1, store=store)
    keys = [f"methanol/300K/{k}" for k in range(3)]
    assert sorted(store.keys()) == keys
    assert [r["key"] for r in report.runs] == keys
    x = [store[k].read("positions_A")[1:] for k in keys]
    assert not np.allclose(x[0], x[1]) and not np.allclose(x[1], x[2])
    assert sum(r["selected"] for r in report.runs) == report.table.num_rows == 4
    assert all(r["kinetic_frames"] == 20 and r["kinetic_temperature_K"] > 0
               for r in report.runs)
    # the picks are the 4 most uncertain of all candidates (spacing only within a run)
    u = np.concatenate([store[k].read("force_std_max_eVA")[1:] for k in keys])
    picked = sorted(report.table.column("force_std_max_eVA").to_pylist())
    assert picked[-1] == pytest.approx(u.max())
    assert picked[0] >= np.sort(u)[-10]  # each pick may skip its 2 neighbours
    single = TrajectoryStore(tmp_path / "one.zarr")
    run_acquisition(committee, [minimum], config.model_copy(update={"replicas": 1}),
                    iteration=1, store=single)
    # (equal up to the last bits that a larger batch's summation order changes)
    np.testing.assert_allclose(single["methanol/300K/0"].read("positions_A"),
                               store["methanol/300K/0"].read("positions_A"), atol=1e-9)


def test_acquisition_md_killed_and_continued_equals_an_uninterrupted_run(tiny_committee,
                                                                         minimum, tmp_path):
    """An acquisition whose MD was killed after its second chunk, with one trajectory's last
    append lost (the kill fell between two trajectories' appends), continues from the
    committed frames and ends bit for bit where an uninterrupted run ends; a run the guard had
    stopped stays stopped."""
    from palirs_data.acquisition import acquisition_md

    config = AcquireConfig(temperatures_K=[300.0, 700.0], duration_fs=30.0, write_every=2,
                           thermalise_fs=10.0, friction_fs=0.01, max_force_rel_dev=1e9)
    committee = tiny_committee["committee"]
    whole = TrajectoryStore(tmp_path / "whole.zarr")
    acquisition_md(committee, [minimum], config, iteration=1, store=whole, chunk_frames=8)
    killed = TrajectoryStore(tmp_path / "killed.zarr")
    partial = config.model_copy(update={"duration_fs": 15.0})  # 30 steps: frames 0-15
    acquisition_md(committee, [minimum], partial, iteration=1, store=killed, chunk_frames=8)
    killed["methanol/700K/0"].truncate(8)
    out = acquisition_md(committee, [minimum], config, iteration=1, store=killed,
                         chunk_frames=8)
    assert out["resumed_frames"] == 16
    for key in ("methanol/300K/0", "methanol/700K/0"):
        assert killed[key].n_frames == whole[key].n_frames == 31
        for name in ("positions_A", "velocities_A_fs", "model_energy_eV", "time_fs"):
            np.testing.assert_array_equal(killed[key].read(name), whole[key].read(name))
    # killed before every run had committed a chunk: started over, same result
    early = TrajectoryStore(tmp_path / "early.zarr")
    acquisition_md(committee, [minimum], partial, iteration=1, store=early, chunk_frames=8)
    early["methanol/300K/0"].truncate(0)
    acquisition_md(committee, [minimum], config, iteration=1, store=early, chunk_frames=8)
    for key in ("methanol/300K/0", "methanol/700K/0"):
        np.testing.assert_array_equal(early[key].read("positions_A"),
                                      whole[key].read("positions_A"))
    # a stopped run is not restarted by a continuation
    killed["methanol/300K/0"].set_attrs(stopped_at_time_fs=5.0, stop_reason="test")
    killed["methanol/300K/0"].truncate(5)
    again = acquisition_md(committee, [minimum], config, iteration=1, store=killed,
                           chunk_frames=8)
    assert killed["methanol/300K/0"].n_frames == 5 and again["replica_steps"] == 0


def test_acquisition_md_on_two_workers_gives_the_runs_of_one_batch(tiny_committee, minimum,
                                                                  tmp_path):
    """The iteration's MD divided over a two-worker cluster (two tasks, one store) gives every
    run of the one batch in this process, with the seeds of the whole set, up to the last
    bits a batch size changes."""
    from pathlib import Path

    from palirs_data.acquisition import _md
    from palirs_data.compute import dask_client
    from palirs_data.config import ComputeConfig

    config = AcquireConfig(temperatures_K=[300.0, 700.0], replicas=3, duration_fs=10.0,
                           write_every=2, thermalise_fs=5.0, max_force_rel_dev=1e9)
    paths = [Path(p) for p in tiny_committee["paths"]]
    here = _md(paths, [minimum], config, iteration=1, store_path=tmp_path / "here.zarr",
               previous_path=None, guard=GuardConfig(), executor=Executor.local(),
               progress=False)
    compute = ComputeConfig(n_workers=2)
    with dask_client(compute) as client:
        there = _md(paths, [minimum], config, iteration=1, store_path=tmp_path / "there.zarr",
                    previous_path=None, guard=GuardConfig(), executor=Executor(client, compute),
                    progress=False)
    assert here["tasks"] == 1 and there["tasks"] == 2 and len(there["worker"]) == 2
    assert there["replica_steps"] == here["replica_steps"] == 6 * (10 + 20)
    a, b = TrajectoryStore(tmp_path / "here.zarr"), TrajectoryStore(tmp_path / "there.zarr")
    assert a.keys() == b.keys() and len(a.keys()) == 6
    for key in a.keys():
        np.testing.assert_allclose(b[key].read("positions_A"), a[key].read("positions_A"),
                                   atol=1e-9, rtol=0)


# --- after convergence: nothing added, nothing retrained ------------------------------------

def test_converged_campaign_passes_the_table_through(methanol_data, tmp_path):
    from palirs_data.acquisition import acquire
    from palirs_data.config import ActiveLearningConfig, LabelConfig, LabelerConfig

    previous = tmp_path / "iter3"
    previous.mkdir()
    structures.write_table(methanol_data["labelled"], previous / "train.parquet")
    write_evaluation(previous, 4.2)
    result = acquire(iteration=4, previous_dir=previous,
                     equilibrium=methanol_data["result"].equilibrium,
                     config=ActiveLearningConfig(stop_mae_cm1=5.0), labeler_config=LabelerConfig(),
                     label_config=LabelConfig(checkpoint_dir=tmp_path / "ckpt"),
                     work_dir=tmp_path / "work")  # no committee needed
    assert result.table.equals(methanol_data["labelled"])
    assert result.metrics["converged"] and result.metrics["n_labelled"] == 0
    assert result.store is None and not (tmp_path / "work").exists()


def test_retrain_copies_a_committee_trained_on_the_same_data(methanol_data, tmp_path):
    import json

    from conftest import run_stage, write_params
    from palirs_data.training import training_fingerprint
    from palirs_data.config import CommitteeConfig
    from palirs_data.e0s import write_e0s

    table = methanol_data["labelled"]
    config = {"seeds": [0, 1], "model": TINY_MODEL,
              "training": {"max_num_epochs": 2, "threads": 1}}  # one per Dask worker
    e0s = methanol_data["e0s"]
    fingerprint = training_fingerprint(table, e0s=e0s, config=CommitteeConfig(**config))
    assert fingerprint != training_fingerprint(table.slice(1), e0s=e0s,
                                               config=CommitteeConfig(**config))
    params = write_params(tmp_path / "params.yaml", committee=config)
    structures.write_table(table, tmp_path / "data/campaign/iter0/train.parquet")
    from palirs_data.config import LabelerConfig
    from palirs_data.labelers import make_labeler

    write_e0s(tmp_path / "data/reference/e0s.json", e0s, make_labeler(LabelerConfig()))
    first = run_stage("train_ensemble", "--params", str(params), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    trained = tmp_path / "data/campaign/iter0/committee"
    assert json.loads((trained / "training.json").read_text())["fingerprint"] == fingerprint
    again = run_stage("train_ensemble", "--params", str(params), "--reuse", str(trained),
                      "--models", "data/campaign/iter1/committee", "--metrics",
                      "data/campaign/iter1/train_ensemble.json", "--curves",
                      "data/campaign/iter1/training_curves.csv", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "committee copied, not retrained" in again.stdout
    for k in (0, 1):
        copied = tmp_path / f"data/campaign/iter1/committee/model_{k}.model"
        assert copied.read_bytes() == (trained / f"model_{k}.model").read_bytes()


def test_the_first_committee_trains_at_most_initial_epochs(methanol_data, tmp_path):
    import json

    from conftest import run_stage, write_params
    from palirs_data.config import CommitteeConfig, LabelerConfig
    from palirs_data.e0s import write_e0s
    from palirs_data.labelers import make_labeler

    config = {"seeds": [0, 1], "model": TINY_MODEL, "training": {"max_num_epochs": 3,
                                                                 "threads": 1},
              "initial_epochs": 1}
    assert CommitteeConfig(**config).initial().training.max_num_epochs == 1
    capped = CommitteeConfig(**{**config, "initial_epochs": 5}).initial()
    assert capped.training.max_num_epochs == 3  # never more than max_num_epochs
    params = write_params(tmp_path / "params.yaml", committee=config)
    structures.write_table(methanol_data["labelled"],
                           tmp_path / "data/campaign/iter0/train.parquet")
    write_e0s(tmp_path / "data/reference/e0s.json", methanol_data["e0s"],
              make_labeler(LabelerConfig()))
    first = run_stage("train_ensemble", "--params", str(params), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    trained = tmp_path / "data/campaign/iter0/committee"
    summary = json.loads((trained / "training.json").read_text())
    assert [m["epochs"] for m in summary["members"]] == [1, 1]
    # a later iteration (with a previous committee) trains max_num_epochs: not a copy
    again = run_stage("train_ensemble", "--params", str(params), "--reuse", str(trained),
                      "--models", "data/campaign/iter1/committee", "--metrics",
                      "data/campaign/iter1/train_ensemble.json", "--curves",
                      "data/campaign/iter1/training_curves.csv", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "committee copied" not in again.stdout
    later = json.loads((tmp_path / "data/campaign/iter1/committee/training.json").read_text())
    assert [m["epochs"] for m in later["members"]] == [3, 3]
