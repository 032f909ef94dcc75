"""The choice of frames: per molecule and temperature, the most uncertain frames of the
committee MD, spread out in time (step 4 of :mod:`palirs_data.acquisition`), and what
``acquire.json`` says about each run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from palirs_data import structures
from palirs_data.config import AcquireConfig
from palirs_data.md_analysis import kinetic_temperatures_K, mean_with_error
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore, trajectory_key


def select_frames(time_fs: np.ndarray, uncertainty: np.ndarray, *, n: int,
                  min_spacing_fs: float) -> np.ndarray:
    """Indices of up to ``n`` frames with the largest ``uncertainty``, most uncertain first,
    no two closer than ``min_spacing_fs`` in time (greedy: a frame is skipped when it lies
    within the spacing of one already chosen). Non-finite uncertainties are never chosen."""
    time_fs, uncertainty = np.asarray(time_fs, float), np.asarray(uncertainty, float)
    if time_fs.shape != uncertainty.shape:
        raise ValueError("time and uncertainty differ in length")
    order = np.argsort(-np.where(np.isfinite(uncertainty), uncertainty, -np.inf), kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n or not np.isfinite(uncertainty[i]):
            break
        if all(abs(time_fs[i] - time_fs[j]) >= min_spacing_fs for j in chosen):
            chosen.append(int(i))
    return np.array(chosen, dtype=np.int64)


def _finite(x: float) -> float | None:
    """``x``, or None where it is not a number (JSON has no NaN)."""
    return float(x) if np.isfinite(x) else None


def _run_record(m: Structure, temperature: float, key: str, traj, t: np.ndarray,
                unc: dict[str, np.ndarray], config: AcquireConfig) -> dict:
    """What ``acquire.json`` says about one run: its span, why it stopped, its uncertainty
    and its mean kinetic temperature (null for a run stopped at its first frame)."""
    stopped = traj.attrs.get("stopped_at_time_fs")
    # frame 0 is the starting state (the previous iteration's last frame): not counted
    kinetic = kinetic_temperatures_K(numbers=m.numbers,
                                     velocities_A_fs=traj.read("velocities_A_fs")[1:])
    t_mean, t_se = mean_with_error(kinetic)
    return {
        "key": key, "molecule": m.molecule, "temperature_K": temperature,
        "frames": traj.n_frames, "start_time_fs": float(t[0]), "end_time_fs": float(t[-1]),
        "stopped_at_step": (None if stopped is None else
                            int(round((stopped - t[0]) / config.timestep_fs))),
        "stop_reason": traj.attrs.get("stop_reason"),
        "max_force_std_max_eVA": _finite(np.nanmax(unc["force_std_max_eVA"])),
        "max_force_rel_dev": _finite(np.nanmax(unc["force_rel_dev"])),
        "kinetic_temperature_K": _finite(t_mean), "kinetic_temperature_se_K": _finite(t_se),
        "kinetic_frames": int(kinetic.size), "selected": 0}


def select_acquired(minima: list[Structure], config: AcquireConfig, *, iteration: int,
                    store: TrajectoryStore) -> tuple[pa.Table, list[dict]]:
    """The most uncertain frames of each run in ``store`` (module docstring, step 4), and one
    record per run."""
    rows, runs = [], []
    for m in minima:
        for temperature in config.temperatures_K:
            # the candidates of all replicas, selected together: replica k's times are shifted
            # past replica k-1's so that the spacing rule acts within a run only
            cand: list[tuple[int, np.ndarray]] = []  # (replica, frame indices)
            times, uncs, offset = [], [], 0.0
            for k in range(config.replicas):
                key = trajectory_key(m.molecule, temperature, k)
                traj = store[key]
                t = traj.read("time_fs")
                unc = {"force_std_max_eVA": traj.read("force_std_max_eVA"),
                       "force_rel_dev": traj.read("force_rel_dev")}
                # frame 0 (the starting state) is a candidate only when the guard stopped the
                # run before any new frame: the committee distrusts the start itself, and
                # without its label the next iteration would start from the same state again
                first = 1 if traj.n_frames > 1 else 0
                idx = np.arange(first, traj.n_frames)
                cand.append((k, idx))
                times.append(t[idx] - t[0] + offset)
                uncs.append(unc[config.uncertainty][idx])
                offset = float(times[-1].max(initial=0.0)) + config.min_spacing_fs + 1.0
                runs.append(_run_record(m, temperature, key, traj, t, unc, config))
            owner = np.concatenate([np.full(len(i), k) for k, i in cand])
            frame = np.concatenate([i for _, i in cand])
            chosen = select_frames(np.concatenate(times), np.concatenate(uncs),
                                   n=config.per_temperature, min_spacing_fs=config.min_spacing_fs)
            for c in chosen:
                k, i = int(owner[c]), int(frame[c])
                traj = store[trajectory_key(m.molecule, temperature, k)]
                rows.append(Structure(
                    molecule=m.molecule, numbers=m.numbers,
                    positions_A=traj.read("positions_A")[i],
                    source="active_learning", charge_e=m.charge_e, multiplicity=m.multiplicity,
                    iteration=iteration, temperature_K=temperature,
                    force_std_max_eVA=float(traj.read("force_std_max_eVA")[i]),
                    force_rel_dev=float(traj.read("force_rel_dev")[i])))
                runs[-config.replicas + k]["selected"] += 1
    table = structures.to_table(structures.dedupe(rows)) if rows else structures.empty_table()
    return table, runs
