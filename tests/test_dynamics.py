"""Batched committee MD: equals ASE's integrator, conserves energy, thermostats correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palirs_data import dynamics, md_analysis, structures
from palirs_data.trajectory import TrajectoryStore


@pytest.fixture(scope="module")
def minimum(methanol_data):
    return structures.from_table(methanol_data["result"].equilibrium)[0]


def _replica(eq, key, *, T=300.0, gamma=0.0, seed=0, v=None):
    return dynamics.Replica(key=key, molecule="methanol", numbers=eq.numbers,
                            positions_A=eq.positions_A, temperature_K=T, friction_fs=gamma,
                            seed=seed, velocities_A_fs=v)


def _v0(eq, T=300.0, seed=1):
    return dynamics.maxwell_boltzmann(eq.numbers, T, torch.Generator().manual_seed(seed)).numpy()


def test_nve_matches_ase_velocity_verlet(tiny_committee, minimum):
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from mace.calculators import MACECalculator

    v0 = _v0(minimum)
    md = dynamics.BatchedMD(tiny_committee["committee"], [_replica(minimum, "a", v=v0)],
                            timestep_fs=0.5)
    md.run(100)
    atoms = minimum.to_atoms()
    atoms.calc = MACECalculator(model_paths=[str(p) for p in tiny_committee["paths"]],
                                device="cpu", default_dtype="float64")  # committee mean
    atoms.set_velocities(v0 / units.fs)
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(100)
    np.testing.assert_allclose(md.positions[0].numpy(), atoms.positions, atol=1e-10)
    np.testing.assert_allclose(md.velocities[0].numpy(), atoms.get_velocities() * units.fs,
                               atol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nve_conserves_total_energy(tiny_committee, minimum, dtype):
    """Within the same bound in both precisions the MD stages can run in (ir.dtype,
    active_learning.acquire.dtype)."""
    from palirs_data.committee import Committee
    from palirs_data.config import torch_dtype

    committee = Committee.load(tiny_committee["paths"], dtype=torch_dtype(dtype))
    md = dynamics.BatchedMD(committee, [_replica(minimum, "a", v=_v0(minimum))],
                            timestep_fs=0.5)
    assert md.dtype == torch_dtype(dtype)
    energies = []
    for _ in range(500):  # 0.25 ps
        out = md.step()
        energies.append(float(out.energy_eV[0] + dynamics.kinetic_energy_eV(md.batch, md._v)[0]))
    energies = np.array(energies)
    t_ps = 0.5e-3 * np.arange(len(energies))
    drift_eV_per_ps = abs(np.polyfit(t_ps, energies, 1)[0])
    kinetic_scale = 1.5 * 6 * 8.617e-5 * 300  # ~ kinetic energy at 300 K
    assert drift_eV_per_ps < 0.01 * kinetic_scale
    assert energies.std() < 0.02 * kinetic_scale


def test_langevin_reaches_each_replicas_temperature(tiny_committee, minimum):
    # strong friction (0.2 /fs: velocities decorrelate in ~10 steps) so a short run suffices
    temps = [300.0, 700.0]
    reps = [_replica(minimum, f"r{k}", T=temps[k % 2], gamma=0.2, seed=k) for k in range(16)]
    md = dynamics.BatchedMD(tiny_committee["committee"], reps, timestep_fs=0.5)
    samples = []
    for i in range(500):
        md.step()
        if i >= 100:
            samples.append(dynamics.kinetic_temperature_K(md.batch, md._v).numpy())
    per_replica = np.mean(samples, axis=0).reshape(8, 2)
    mean = per_replica.mean(0)
    sem = per_replica.std(0) / np.sqrt(8)
    for target, m, e in zip(temps, mean, sem):
        assert abs(m - target) < max(4 * e, 0.06 * target), (target, m, e)


def test_replicas_are_independent_of_their_batch(tiny_committee, minimum):
    """A replica run alone and run inside a batch of others gives the same trajectory."""
    alone = dynamics.BatchedMD(tiny_committee["committee"],
                               [_replica(minimum, "x", T=500, gamma=0.02, seed=7)],
                               timestep_fs=0.5)
    alone.run(50)
    others = [_replica(minimum, f"o{k}", T=300, gamma=0.02, seed=k) for k in range(3)]
    batch = dynamics.BatchedMD(tiny_committee["committee"],
                               others[:2] + [_replica(minimum, "x", T=500, gamma=0.02, seed=7)]
                               + others[2:], timestep_fs=0.5)
    batch.run(50)
    torch.testing.assert_close(batch.positions[2], alone.positions[0], atol=1e-10, rtol=0)


def test_stopped_replica_leaves_the_others_running(tiny_committee, minimum, tmp_path):
    store = TrajectoryStore(tmp_path / "t.zarr")
    reps = [_replica(minimum, f"m/300K/{k}", gamma=0.02, seed=k) for k in range(3)]
    md = dynamics.BatchedMD(tiny_committee["committee"], reps, timestep_fs=0.5, store=store,
                            chunk_frames=8)

    def guard(md, out):  # stop replica 1 after 10 steps
        return np.array([md.replicas[i].key == "m/300K/1" and md.replicas[i].time_fs >= 5.0
                         for i in md.active])

    report = md.run(40, write_every=2, guard=guard)
    assert report.stopped == ["m/300K/1"]
    assert store["m/300K/0"].n_frames == 20 and store["m/300K/2"].n_frames == 20
    assert store["m/300K/1"].n_frames == 4  # frames at 1, 2, 3, 4 fs; the 5 fs frame is not kept
    np.testing.assert_allclose(store["m/300K/0"].read("time_fs"), np.arange(1, 21) * 1.0)


def test_run_continues_from_the_store_exactly(tiny_committee, minimum, tmp_path):
    path = tmp_path / "t.zarr"
    first = dynamics.BatchedMD(tiny_committee["committee"],
                               [_replica(minimum, "m/500K/0", T=500, gamma=0.01, seed=3)],
                               timestep_fs=0.5, store=TrajectoryStore(path))
    first.run(30, write_every=5)
    x_end, v_end = first.positions[0].clone(), first.velocities[0].clone()
    again = dynamics.BatchedMD(tiny_committee["committee"],
                               [_replica(minimum, "m/500K/0", T=500, gamma=0.01, seed=3)],
                               timestep_fs=0.5, store=TrajectoryStore(path))
    torch.testing.assert_close(again.positions[0], x_end, atol=0, rtol=0)
    torch.testing.assert_close(again.velocities[0], v_end, atol=0, rtol=0)
    again.run(10, write_every=5)
    traj = TrajectoryStore(path, mode="r")["m/500K/0"]
    assert traj.n_frames == 8
    np.testing.assert_allclose(traj.read("time_fs"), np.arange(1, 9) * 2.5)


def test_dynamics_do_not_depend_on_what_is_written(tiny_committee, minimum, tmp_path):
    """The frames a run writes (every step or every third, chunks of 2 or 256, a store or
    none) and where it is continued do not change its trajectory: the noise of a step is a
    function of the replica's seed and step alone."""
    def run(write_every, chunk_frames, tag, split=None):
        store = TrajectoryStore(tmp_path / f"{tag}.zarr")
        rep = [_replica(minimum, "m/500K/0", T=500, gamma=0.02, seed=11)]
        md = dynamics.BatchedMD(tiny_committee["committee"], rep, timestep_fs=0.5,
                                store=store, chunk_frames=chunk_frames)
        md.run(split or 30, write_every=write_every)
        if split:  # continued from its last frame by a new engine
            rep = [_replica(minimum, "m/500K/0", T=500, gamma=0.02, seed=11)]
            md = dynamics.BatchedMD(tiny_committee["committee"], rep, timestep_fs=0.5,
                                    store=store, chunk_frames=chunk_frames)
            md.run(30 - split, write_every=write_every)
        traj = TrajectoryStore(store.path, mode="r")["m/500K/0"]
        return traj.read("time_fs"), traj.read("positions_A"), traj.read("velocities_A_fs")

    t1, x1, v1 = run(1, 256, "every")
    assert t1.size == 30
    for write_every, chunk, split in [(3, 2, None), (3, 256, 12), (1, 4, 7)]:
        t, x, v = run(write_every, chunk, f"w{write_every}c{chunk}s{split}", split)
        at = np.searchsorted(t1, t)
        np.testing.assert_array_equal(t1[at], t)
        np.testing.assert_array_equal(x, x1[at])  # bit for bit
        np.testing.assert_array_equal(v, v1[at])
    alone = dynamics.BatchedMD(tiny_committee["committee"],
                               [_replica(minimum, "m/500K/0", T=500, gamma=0.02, seed=11)],
                               timestep_fs=0.5)
    alone.run(30)
    np.testing.assert_array_equal(alone.positions[0].numpy(), x1[-1])


def test_step_noise_is_standard_normal_and_distinct_per_step_and_seed():
    a = dynamics.step_noise(5, 1, 6)
    np.testing.assert_array_equal(a, dynamics.step_noise(5, 1, 6))  # a function of its inputs
    assert not np.array_equal(a, dynamics.step_noise(5, 2, 6))
    assert not np.array_equal(a, dynamics.step_noise(6, 1, 6))
    xi = np.concatenate([dynamics.step_noise(seed, step, 6).ravel()
                         for seed in range(20) for step in range(1, 201)])  # 72000 numbers
    assert abs(xi.mean()) < 4 / np.sqrt(xi.size)
    assert xi.var() == pytest.approx(1.0, abs=4 * np.sqrt(2 / xi.size))
    steps = np.stack([dynamics.step_noise(3, k, 6).ravel() for k in range(1, 2001)])
    lag1 = np.corrcoef(steps[:-1].ravel(), steps[1:].ravel())[0, 1]
    assert abs(lag1) < 4 / np.sqrt(steps[:-1].size)  # successive steps uncorrelated


def test_maxwell_boltzmann_has_the_right_temperature(tiny_committee, minimum):
    committee = tiny_committee["committee"]
    numbers = [minimum.numbers] * 400
    batch = committee.batch(numbers)
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([dynamics.maxwell_boltzmann(minimum.numbers, 500.0, gen) for _ in numbers])
    T = dynamics.kinetic_temperature_K(batch, v).mean()
    # COM removal takes 3 of 3N degrees of freedom: expected 500 * (3N-3)/3N
    assert float(T) == pytest.approx(500.0 * 15 / 18, rel=0.03)
    momentum = (torch.as_tensor(batch.masses_amu)[:, None] * v).reshape(400, 6, 3).sum(1)
    assert float(momentum.abs().max()) < 1e-12  # zero total momentum, replica by replica


def test_thermalised_runs_sit_at_their_temperature(tiny_committee, minimum):
    """Started at the minimum with Maxwell-Boltzmann velocities, a weakly coupled run sits
    near T/2 (kinetic energy shares out into the potential); thermalised first under a strong
    friction, it starts and stays at T."""
    committee = tiny_committee["committee"]
    kwargs = dict(T=400.0, gamma=0.001)

    def production(replicas):
        md = dynamics.BatchedMD(committee, replicas, timestep_fs=0.5)
        temps = []
        for _ in range(120):  # 60 fs: far shorter than 1/gamma = 1 ps
            md.step()
            temps.append(dynamics.kinetic_temperature_K(md.batch, md._v).numpy())
        per_run = np.mean(temps, axis=0)
        return float(per_run.mean()), float(per_run.std(ddof=1) / np.sqrt(per_run.size))

    cold, _ = production([_replica(minimum, f"c{k}", seed=k, **kwargs) for k in range(24)])
    warm = [_replica(minimum, f"w{k}", seed=k, **kwargs) for k in range(24)]
    # 125 fs under 1/gamma = 25 fs: five relaxation times
    stopped = dynamics.thermalise(committee, warm, timestep_fs=0.5, steps=250, friction_fs=0.04)
    assert stopped == [] and all(r.velocities_A_fs is not None for r in warm)
    assert all(r.time_fs == 0.0 for r in warm)
    hot, se = production(warm)
    # Under the weak friction each run keeps the energy it was thermalised to, so the 24 run
    # means scatter by ~30 % (one set's mean by ~6 %: 362-442 K over six seed sets, 408 in
    # all, 2026-12-07): the mean must lie within 3 standard errors of T, far from T/2
    assert abs(hot - 400.0) < 3 * se and se < 0.1 * 400.0, (hot, se)
    assert cold < 0.8 * 400.0, cold


def test_kinetic_temperature_of_a_trajectory_and_its_error():
    numbers = np.array([8, 1, 1])
    rng = np.random.default_rng(0)
    from ase.data import atomic_masses

    from palirs_data import units

    sigma = np.sqrt(units.KB_EV_PER_K * 300.0 / atomic_masses[numbers] / units.AMU_A2_FS2_IN_EV)
    v = rng.normal(size=(20000, 3, 3)) * sigma[None, :, None]
    temps = md_analysis.kinetic_temperatures_K(numbers=numbers, velocities_A_fs=v)
    mean, se = md_analysis.mean_with_error(temps, blocks=20)
    assert abs(mean - 300.0) < 4 * se and 0.5 < se < 3.0  # 300 * sqrt(2/9/20000) = 1 K


def test_two_runs_never_share_a_trajectory(tiny_committee, minimum):
    """Two replicas with one key (names that normalise alike, a temperature listed twice)
    are refused before any step, instead of writing both into one trajectory."""
    from palirs_data.errors import PalirsInputError

    with pytest.raises(PalirsInputError, match="two runs share the trajectory 'a'"):
        dynamics.BatchedMD(tiny_committee["committee"],
                           [_replica(minimum, "a"), _replica(minimum, "b"),
                            _replica(minimum, "a", seed=1)], timestep_fs=0.5)
