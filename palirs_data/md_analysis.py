"""What MD runs give, read from their trajectory store: kinetic temperatures, the committee's
spread along the runs, the production dipoles and their spectra table.

Torch-free: the ``ir`` and ``reference-md`` stages write with it, ``compare`` and the
campaign's reports read with it without loading a model.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from palirs_data import units
from palirs_data.config import IrConfig
from palirs_data.spectra import correlation_blocks, pooled_spectrum
from palirs_data.tables import SPECTRUM_SCHEMA
from palirs_data.trajectory import TrajectoryStore, dipoles_of, run_group

log = logging.getLogger(__name__)


def kinetic_temperatures_K(*, numbers: np.ndarray, velocities_A_fs: np.ndarray) -> np.ndarray:
    """Kinetic temperature of each frame of one trajectory, K: 2·KE/(3N·k_B), with
    ``velocities_A_fs`` (n_frames, N, 3). A Langevin thermostat acts on all 3N degrees of
    freedom, centre of mass included, so 3N is the count whose average is T."""
    from ase.data import atomic_masses

    m = atomic_masses[np.asarray(numbers)]
    ke = 0.5 * np.einsum("i,fij->f", m, np.asarray(velocities_A_fs) ** 2)
    return 2 * ke * units.AMU_A2_FS2_IN_EV / (3 * len(m) * units.KB_EV_PER_K)


def mean_with_error(values: np.ndarray, *, blocks: int = 10) -> tuple[float, float]:
    """Mean of a correlated time series and its standard error by block averaging (the
    series cut into ``blocks`` consecutive blocks; fewer values than blocks: each value a
    block)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    n = min(blocks, values.size)
    means = np.array([b.mean() for b in np.array_split(values, n)])
    se = means.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return float(values.mean()), float(se)


def spectra_table(dipoles: dict[tuple[str, float], list[np.ndarray]], config: IrConfig
                  ) -> pa.Table:
    """Each (molecule, temperature)'s spectrum: that of the autocorrelation pooled over its
    runs, each run on its own length (:func:`palirs_data.spectra.pooled_spectrum`; for runs
    of equal length, the mean of the runs' spectra), and the standard deviation over the runs'
    spectra, up to ``config.max_wavenumber_cm1``. A run stopped early counts with the frames
    it has; one shorter than twice the correlation depth is left out (logged)."""
    columns: dict[str, list] = {f.name: [] for f in SPECTRUM_SCHEMA}
    dt = config.timestep_fs * config.write_every
    depth_frames = int(round(config.max_correlation_fs / dt))
    for (molecule, temperature), runs in sorted(dipoles.items()):
        usable = [d for d in runs if len(d) >= 2 * depth_frames]
        if len(usable) < len(runs):
            log.warning("%s at %g K: %d of %d runs shorter than twice the correlation depth "
                        "(%g fs) are left out", molecule, temperature, len(runs) - len(usable),
                        len(runs), 2 * config.max_correlation_fs)
        if not usable:
            continue
        blocks = [correlation_blocks(d, dt, max_correlation_fs=config.max_correlation_fs,
                                     block_fs=np.inf) for d in usable]
        nu, mean = pooled_spectrum(blocks, zero_padding=config.zero_padding)
        each = np.array([pooled_spectrum([b], zero_padding=config.zero_padding)[1]
                         for b in blocks])
        keep = nu <= config.max_wavenumber_cm1
        k = int(keep.sum())
        columns["molecule"] += [molecule] * k
        columns["temperature_K"] += [float(temperature)] * k
        columns["wavenumber_cm1"] += nu[keep].tolist()
        columns["intensity"] += mean[keep].tolist()
        columns["std"] += each[:, keep].std(0).tolist()
        columns["n_runs"] += [len(usable)] * k
    return pa.Table.from_pydict(columns, schema=SPECTRUM_SCHEMA)


def kinetic_temperatures(store: TrajectoryStore) -> dict:
    """Mean kinetic temperature of every production run in ``store`` (block-averaged
    standard error, :func:`mean_with_error`), and pooled over the runs of
    each molecule and target temperature: frame-weighted mean, standard error from the spread
    of the run means (the runs are the independent samples), deviation from the target."""
    runs, groups = {}, {}
    for key in sorted(store.keys()):
        traj = store[key]
        if not traj.n_frames or "velocities_A_fs" not in traj.array_names:
            continue
        t = kinetic_temperatures_K(numbers=traj.numbers,
                                   velocities_A_fs=traj.read("velocities_A_fs"))
        mean, se = mean_with_error(t)
        runs[key] = {"mean_K": round(mean, 1), "stderr_K": _round(se, 1),
                     "frames": int(traj.n_frames)}
        target = float(traj.attrs["temperature_K"])
        groups.setdefault(run_group(traj.attrs["molecule"], target),
                          (target, []))[1].append((mean, traj.n_frames))
    pooled = {}
    for name, (target, values) in groups.items():
        means = np.array([m for m, _ in values])
        frames = np.array([n for _, n in values], dtype=np.float64)
        mean = float((means * frames).sum() / frames.sum())
        se = float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else None
        pooled[name] = {"target_K": target, "mean_K": round(mean, 1),
                        "stderr_K": _round(se, 1), "runs": len(means),
                        "deviation_percent": round(100 * (mean / target - 1), 1)}
    return {"runs": runs, "pooled": pooled}


def committee_spread(store: TrajectoryStore) -> dict[str, dict]:
    """The committee's force disagreement along the production runs, per molecule and
    temperature (``force_std_max_eVA`` of every frame of its runs, eV/Å): median, 95th
    percentile and largest. On a molecule never trained on (the transfer set) this is the
    warning sign: a spread well above the training molecules' says the spectrum is an
    extrapolation."""
    frames: dict[str, list[np.ndarray]] = {}
    for key in sorted(store.keys()):
        traj = store[key]
        if not traj.n_frames or "force_std_max_eVA" not in traj.array_names:
            continue
        group = run_group(traj.attrs["molecule"], float(traj.attrs["temperature_K"]))
        frames.setdefault(group, []).append(traj.read("force_std_max_eVA"))
    out = {}
    for group, values in frames.items():
        v = np.concatenate(values)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        out[group] = {"median_eVA": round(float(np.median(v)), 4),
                      "p95_eVA": round(float(np.percentile(v, 95)), 4),
                      "max_eVA": round(float(v.max()), 4), "frames": int(len(v))}
    return out


def temperature_summary(report: dict) -> str:
    """One line of the pooled kinetic temperatures of :func:`kinetic_temperatures`."""
    return ", ".join(f"{name} {g['mean_K']:.0f}" + (f" ± {g['stderr_K']:.0f}"
                                                      if g["stderr_K"] is not None else "")
                     + " K" for name, g in report["pooled"].items())


def _round(value, digits):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def store_dipoles(store: TrajectoryStore) -> dict[tuple[str, float], list[np.ndarray]]:
    """Production dipoles of every trajectory in an ``ir`` store, by (molecule, T)."""
    out: dict[tuple[str, float], list[np.ndarray]] = {}
    for key in store.keys():
        traj = store[key]
        dipoles = dipoles_of(traj)
        if dipoles is None:  # stopped before it produced
            continue
        attrs = traj.attrs
        out.setdefault((attrs["molecule"], float(attrs["temperature_K"])), []).append(dipoles)
    return out
