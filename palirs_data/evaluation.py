"""Evaluation: harmonic frequencies of a model vs the reference, and errors on a test set.

Harmonic frequencies (the active-learning stopping signal): each reference minimum is
re-optimised with the committee-mean force field, and with each member alone, and analysed
exactly as the ``sample`` stage does with the label source (:mod:`palirs_data.harmonic`);
model modes are matched to the reference modes by eigenvector overlap. MAE and RMSE in cm⁻¹
per molecule and over all modes; the stop rule reads the committee mean's MAE, the members'
spread is its error bar.

Test set, built the paper's way: MD at 300 K driven by the first committee model for each
molecule, frames sampled uniformly, MBTR descriptors (dscribe), k-means into 5 clusters
(scikit-learn), 4 random frames per cluster, labelled by the label source. It is built once per
campaign, so errors of later models are measured on the same structures.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from ase import Atoms

from palirs_data import dynamics, harmonic, structures
from palirs_data.committee import (Committee, CommitteeCalculator, MolecularBatch, load_model,
                                   predict_dipoles)
from palirs_data.compute import Executor
from palirs_data.config import GuardConfig
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore
from palirs_data.units import DEBYE_EA

log = logging.getLogger(__name__)


# --- harmonic frequencies ----------------------------------------------------------------


def model_harmonics(committee: Committee, equilibrium: pa.Table, *, fmax_eVA: float,
                    max_steps: int, hessian_step_A: float) -> dict[str, harmonic.HarmonicResult]:
    """Harmonic analysis of each molecule with the mean force field of ``committee`` (a
    one-member committee: one model), from the reference minimum, exactly as the ``sample``
    stage analyses the label source."""
    out = {}
    for s in structures.from_table(equilibrium):
        out[s.molecule] = harmonic.harmonic_analysis(
            s.to_atoms(), CommitteeCalculator(committee, s.numbers), fmax_eVA=fmax_eVA,
            max_steps=max_steps, hessian_step_A=hessian_step_A, name=s.molecule,
            require_convergence=False)
    return out


def _reference_modes(reference: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    ref = reference.filter(pc.equal(reference.column("molecule"), name))
    order = np.argsort(ref.column("mode_index").to_numpy())
    freqs = ref.column("frequency_cm1").to_numpy()[order]
    vectors = np.array(ref.column("mode_vector").to_pylist(), dtype=np.float64)[order]
    return freqs, vectors


def frequency_errors(reference: pa.Table, model: dict[str, harmonic.HarmonicResult]) -> dict:
    """Model vs reference harmonic frequencies (cm⁻¹), per molecule and over all modes.

    Modes are matched by eigenvector overlap (:func:`palirs_data.harmonic.match_modes`):
    ``mae_cm1``/``rmse_cm1``; ``mae_sorted_cm1`` compares them in ascending order instead (a
    lower bound when modes cross); ``min_overlap`` is the worst matched pair's overlap. Each
    molecule also carries ``matched_cm1``, the model frequency of each reference mode.
    """
    per_molecule, diffs, sorted_diffs = {}, [], []
    for name in sorted(set(reference.column("molecule").to_pylist())):
        ref_freqs, ref_vectors = _reference_modes(reference, name)
        result = model[name]
        if len(result.frequencies_cm1) != len(ref_freqs):
            raise ValueError(f"molecule '{name}': {len(result.frequencies_cm1)} model modes vs "
                             f"{len(ref_freqs)} reference")
        match, overlap = harmonic.match_modes(ref_vectors, result.modes)
        matched = result.frequencies_cm1[match]
        d, ds = matched - ref_freqs, np.sort(result.frequencies_cm1) - np.sort(ref_freqs)
        diffs.append(d)
        sorted_diffs.append(ds)
        per_molecule[name] = {"mae_cm1": float(np.abs(d).mean()),
                              "rmse_cm1": float(np.sqrt((d ** 2).mean())),
                              "mae_sorted_cm1": float(np.abs(ds).mean()),
                              "min_overlap": float(overlap.min()),
                              "matched_cm1": matched.tolist()}
    d, ds = np.concatenate(diffs), np.concatenate(sorted_diffs)
    return {"mae_cm1": float(np.abs(d).mean()), "rmse_cm1": float(np.sqrt((d ** 2).mean())),
            "mae_sorted_cm1": float(np.abs(ds).mean()), "per_molecule": per_molecule}


@dataclass
class FrequencyReport:
    """Harmonic frequencies of the committee-mean force field and of every member against the
    reference: the stop rule reads ``committee["mae_cm1"]``; the spread of the members' MAEs
    is the learning curve's error bar."""

    committee: dict  # frequency_errors of the committee mean
    members: list[dict]  # frequency_errors of each member

    def metrics(self) -> dict:
        member_mae = [m["mae_cm1"] for m in self.members]
        per_molecule = {
            name: {**{k: v for k, v in errors.items() if k != "matched_cm1"},
                   "member_mae_cm1": [m["per_molecule"][name]["mae_cm1"] for m in self.members]}
            for name, errors in self.committee["per_molecule"].items()}
        return {
            "frequency_mae_cm1": self.committee["mae_cm1"],
            "frequency_rmse_cm1": self.committee["rmse_cm1"],
            "frequency_mae_sorted_cm1": self.committee["mae_sorted_cm1"],
            "frequency_member_mae_cm1": member_mae,
            "frequency_member_mae_mean_cm1": float(np.mean(member_mae)),
            "frequency_member_mae_std_cm1": float(np.std(member_mae)),
            "frequency_per_molecule": per_molecule,
        }


def committee_frequencies(model_paths, equilibrium: pa.Table, reference: pa.Table, *,
                          fmax_eVA: float, max_steps: int, hessian_step_A: float
                          ) -> FrequencyReport:
    """:class:`FrequencyReport` of the committee whose members are ``model_paths``."""
    models = [load_model(p) for p in model_paths]
    kwargs = dict(fmax_eVA=fmax_eVA, max_steps=max_steps, hessian_step_A=hessian_step_A)
    mean = frequency_errors(reference, model_harmonics(Committee(models), equilibrium,
                                                       **kwargs))
    members = [frequency_errors(reference, model_harmonics(Committee([m]), equilibrium,
                                                           **kwargs)) for m in models]
    return FrequencyReport(mean, members)


def frequencies_csv(reference: pa.Table, report: FrequencyReport) -> str:
    """Reference and committee-mean frequency of every mode (matched by overlap) and each
    member's, for DVC plots."""
    lines = ["molecule,mode_index,reference_cm1,model_cm1,member_min_cm1,member_max_cm1"]
    for name, errors in report.committee["per_molecule"].items():
        ref_freqs, _ = _reference_modes(reference, name)
        members = np.array([m["per_molecule"][name]["matched_cm1"] for m in report.members])
        for k, (r, p) in enumerate(zip(ref_freqs, errors["matched_cm1"])):
            lines.append(f'"{name}",{k},{r},{p},{members[:, k].min()},{members[:, k].max()}')
    return "\n".join(lines) + "\n"


# --- test set -------------------------------------------------------------------------------


def _install_dscribe_ase_compat() -> None:
    """dscribe 2.1 builds its ``System`` by passing ASE ``Atoms`` arguments positionally;
    ASE >= 3.26 reordered them (``info`` lands in ``velocities``). Build it by keyword."""
    from dscribe.core import system as dsys

    if getattr(dsys.System, "_palirs_compat", False):
        return

    def from_atoms(atoms: Atoms):
        new = dsys.System.__new__(dsys.System)
        Atoms.__init__(new, numbers=atoms.numbers, positions=atoms.positions,
                       cell=atoms.cell, pbc=atoms.pbc)
        new.wyckoff_positions = None
        new.equivalent_atoms = None
        new._cell_inverse = None
        new._displacement_tensor = None
        new._distance_matrix = None
        new._inverse_distance_matrix = None
        return new

    dsys.System.from_atoms = staticmethod(from_atoms)
    dsys.System._palirs_compat = True


def mbtr_descriptors(frames: list[Atoms], species: list[str]) -> np.ndarray:
    """k=2 MBTR (inverse distances, exponential weighting, l2-normalised), one row per frame."""
    from dscribe.descriptors import MBTR

    _install_dscribe_ase_compat()
    mbtr = MBTR(species=species, geometry={"function": "inverse_distance"},
                grid={"min": 0.0, "max": 1.2, "n": 100, "sigma": 0.02},
                weighting={"function": "exp", "scale": 0.5, "threshold": 1e-3},
                periodic=False, normalization="l2")
    return np.asarray(mbtr.create(frames, n_jobs=1))


def select_by_clusters(descriptors: np.ndarray, *, n_clusters: int, per_cluster: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means on ``descriptors``; ``per_cluster`` random members of each cluster.

    A cluster smaller than ``per_cluster`` gives all its members and the shortfall is drawn
    from the remaining frames, so exactly ``n_clusters × per_cluster`` indices come back (when
    there are that many frames). Returns (indices, cluster label of each index).
    """
    from sklearn.cluster import KMeans

    n_want = n_clusters * per_cluster
    if len(descriptors) < n_want:
        raise ValueError(f"{len(descriptors)} frames cannot give {n_want} test structures")
    labels = KMeans(n_clusters=n_clusters, n_init=10,
                    random_state=int(rng.integers(2**31))).fit_predict(descriptors)
    chosen: list[int] = []
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        take = min(per_cluster, len(members))
        chosen += rng.choice(members, size=take, replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(descriptors)), chosen)
    if len(chosen) < n_want:
        chosen += rng.choice(rest, size=n_want - len(chosen), replace=False).tolist()
    idx = np.array(chosen)
    return idx, labels[idx]


@dataclass
class TestSetReport:
    table: pa.Table  # pending structure table, source="test"
    frames_per_molecule: dict[str, int]
    md_seconds: float
    md_worker: str | None = None
    md_device: str = "cpu"


def test_set_md(model_path: str, minima: list[Structure], *, temperature_K: float,
                duration_fs: float, timestep_fs: float, friction_fs: float, n_candidates: int,
                seed: int, indices: list[int] | None = None,
                guard: GuardConfig = GuardConfig()
                ) -> tuple[list[np.ndarray], float, str | None, str]:
    """The test set's candidate frames: MD of the minima ``indices`` (None: all) with one
    model (a unit of GPU work: the model is loaded from its file onto this process's device;
    molecule k's seed is ``seed + k`` whichever task runs it). Returns the positions
    (n_frames, n_atoms, 3) per molecule run, as arrays (they travel back as bytes), the MD
    seconds, the Dask worker (None outside one) and the device."""
    from palirs_data.compute import device, worker_name
    from palirs_data.guard import Guard

    dev = device()
    first = Committee.load([model_path], device=dev)
    indices = list(range(len(minima))) if indices is None else indices
    replicas = [dynamics.Replica(key=f"test/{k}", molecule=minima[k].molecule,
                                 numbers=minima[k].numbers, positions_A=minima[k].positions_A,
                                 temperature_K=temperature_K, friction_fs=friction_fs,
                                 seed=seed + k)
                for k in indices]
    n_steps = int(round(duration_fs / timestep_fs))
    write_every = max(1, n_steps // n_candidates)

    # one model, no spread: stop a run that has gone wrong (non-finite, collapsed, a bond of
    # its minimum broken), so that no frame of a molecule coming apart is labelled
    sane = Guard(guard, minima=[minima[k] for k in indices])

    with tempfile.TemporaryDirectory(prefix="palirs-test-md-") as tmp:
        store = TrajectoryStore(Path(tmp) / "md.zarr")
        md = dynamics.BatchedMD(first, replicas, timestep_fs=timestep_fs, store=store)
        report = md.run(write_every * (n_steps // write_every), write_every=write_every,
                        guard=sane)
        frames = [store[r.key].read("positions_A") for r in replicas]
    return frames, report.seconds, worker_name(), dev


def build_test_set(model_paths, equilibrium: pa.Table, *, species: list[str],
                   temperature_K: float, duration_fs: float, timestep_fs: float,
                   friction_fs: float, n_candidates: int, n_clusters: int, per_cluster: int,
                   seed: int, guard: GuardConfig = GuardConfig(),
                   executor: Executor | None = None) -> TestSetReport:
    """Test structures for every molecule (see the module docstring); unlabelled. The MD uses
    the first of ``model_paths``; the molecules are divided over the ``executor``'s MD slots
    (:func:`palirs_data.compute.md_slots`; one in this process), one GPU task
    (:func:`test_set_md`) each (one molecule: one task)."""
    from palirs_data.md_parts import split_balanced

    executor = executor or Executor.local()
    minima = structures.from_table(equilibrium)
    rng = np.random.default_rng(seed)
    args = (str(Path(sorted(model_paths)[0]).resolve()), minima)
    kwargs = dict(temperature_K=temperature_K, duration_fs=duration_fs,
                  timestep_fs=timestep_fs, friction_fs=friction_fs, n_candidates=n_candidates,
                  seed=seed, guard=guard)
    parts = split_balanced([len(s.numbers) for s in minima], executor.md_slots())
    futures = [executor.submit(test_set_md, *args, gpu=True, indices=part, **kwargs)
               for part in parts]
    frames = [None] * len(minima)
    seconds, workers, dev = 0.0, [], "cpu"
    for part, future in zip(parts, futures):
        part_frames, part_seconds, worker, dev = future.result()
        for k, f in zip(part, part_frames):
            frames[k] = f
        seconds = max(seconds, part_seconds)
        workers.append(worker)
    worker = ", ".join(sorted({str(w) for w in workers if w is not None})) or None
    log.info("test-set MD: %.1f s on %s (%s)", seconds, dev, worker or "this process")
    rows: list[Structure] = []
    counts = {}
    for s, traj in zip(minima, frames):
        atoms = [Atoms(numbers=s.numbers, positions=x) for x in traj]
        idx, _ = select_by_clusters(mbtr_descriptors(atoms, species), n_clusters=n_clusters,
                                    per_cluster=per_cluster, rng=rng)
        counts[s.molecule] = len(traj)
        for i in sorted(idx):
            rows.append(Structure(molecule=s.molecule, numbers=s.numbers,
                                  positions_A=traj[i], source="test",
                                  temperature_K=temperature_K, charge_e=s.charge_e,
                                  multiplicity=s.multiplicity))
    return TestSetReport(structures.to_table(structures.dedupe(rows)), counts, seconds,
                         worker, dev)


# --- errors on the test set -------------------------------------------------------------------


def _mae_rmse(d: np.ndarray) -> tuple[float, float]:
    return float(np.abs(d).mean()), float(np.sqrt((d ** 2).mean()))


def energy_offsets(error_per_atom: np.ndarray,
                   molecules: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    """Split per-structure energy errors (any unit, per atom) into each molecule's mean, the
    offset of its whole energy surface (its atomisation energy), and what is left: the RMSE of
    the errors with each molecule's offset removed, i.e. of the energies relative to one
    another within a molecule, which are all its MD and spectra feel. None for the RMSE when no
    molecule has two structures."""
    err = np.asarray(error_per_atom, dtype=float)
    names = np.asarray(list(molecules), dtype=object)
    offsets, rest = {}, []
    for name in sorted(set(names.tolist())):
        x = err[names == name]
        offsets[str(name)] = float(x.mean())
        if x.size > 1:
            rest.append(x - x.mean())
    rmse = float(np.sqrt(np.mean(np.square(np.concatenate(rest))))) if rest else None
    return rmse, offsets


def rmse_interval(errors: Sequence[np.ndarray], *, level: float = 0.95, n_boot: int = 2000,
                  seed: int = 0) -> list[float]:
    """Bootstrap interval of an RMSE over structures: ``errors`` holds each structure's
    errors (any shape); the structures are resampled with replacement ``n_boot`` times and the
    percentile interval of the RMSE returned. A test set of 20 structures, one of them far
    from the rest, gives an RMSE whose interval spans a factor of two or more."""
    sq = np.array([float(np.sum(np.square(e))) for e in errors])
    n = np.array([np.size(e) for e in errors], dtype=float)
    if sq.size < 2:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, sq.size, size=(n_boot, sq.size))
    rmse = np.sqrt(sq[idx].sum(axis=1) / n[idx].sum(axis=1))
    tail = 50 * (1 - level)
    return [float(x) for x in np.percentile(rmse, [tail, 100 - tail])]


def uncertainty_correlation(uncertainty: np.ndarray, error: np.ndarray) -> dict:
    """Spearman (rank) and Pearson correlation of a per-structure uncertainty with the
    per-structure error: near 1 when the committee's spread ranks structures as their errors
    do (None with fewer than 3 structures or a constant input)."""
    from scipy.stats import pearsonr, spearmanr

    u, e = np.asarray(uncertainty, dtype=float), np.asarray(error, dtype=float)
    if u.size < 3 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return {"force_std_error_spearman": None, "force_std_error_pearson": None}
    return {"force_std_error_spearman": float(spearmanr(u, e).statistic),
            "force_std_error_pearson": float(pearsonr(u, e).statistic)}


def errors_on_test_set(test: pa.Table, committee: Committee,
                       dipole_model: torch.nn.Module | None = None) -> dict:
    """Energy (meV and meV/atom) and force (meV/Å, per component) MAE and RMSE of the
    committee mean on the labelled rows, the energy's offset per molecule and its RMSE without
    them (:func:`energy_offsets`), the correlation of the committee's force spread with
    its force error per structure (:func:`uncertainty_correlation`), and the dipole model's
    errors when one is given."""
    rows = [s for s in structures.from_table(test) if s.label_status == "ok"]
    pred = committee.predict_table(structures.to_table(rows))
    e_ref = np.array([s.energy_eV for s in rows])
    n_atoms = np.array([s.n_atoms for s in rows])
    de = (pred["pred_energy_eV"] - e_ref) * 1e3
    df = np.concatenate([p - s.forces_eVA for p, s in zip(pred["pred_forces_eVA"], rows)]) * 1e3
    out = {"n_test": len(rows)}
    out["energy_mae_meV"], out["energy_rmse_meV"] = _mae_rmse(de)
    out["energy_mae_meV_per_atom"], out["energy_rmse_meV_per_atom"] = _mae_rmse(de / n_atoms)
    out["force_mae_meV_A"], out["force_rmse_meV_A"] = _mae_rmse(df.ravel())
    # an energy error that is one constant per molecule moves no force, frequency or spectrum
    (out["energy_rmse_within_molecule_meV_per_atom"],
     out["energy_offset_meV_per_atom"]) = energy_offsets(de / n_atoms, [s.molecule for s in rows])
    # 95 % bootstrap intervals over the test structures
    out["energy_rmse_meV_per_atom_ci95"] = rmse_interval(list(de / n_atoms))
    out["force_rmse_meV_A_ci95"] = rmse_interval(
        [(p - s.forces_eVA) * 1e3 for p, s in zip(pred["pred_forces_eVA"], rows)])
    # does the committee's spread flag its errors? per structure: largest atomic force error
    # of the committee mean vs the largest atomic force std (what acquisition selects by)
    err_max = np.array([np.linalg.norm(p - s.forces_eVA, axis=1).max()
                        for p, s in zip(pred["pred_forces_eVA"], rows)])
    out.update(uncertainty_correlation(pred["pred_force_std_max_eVA"], err_max))
    if dipole_model is not None:
        out.update(dipole_errors(test, dipole_model))
    return out


def dipole_errors(test: pa.Table, dipole_model: torch.nn.Module) -> dict:
    """Dipole MAE and RMSE (mDebye, per Cartesian component) on the labelled rows."""
    rows = [s for s in structures.from_table(test) if s.label_status == "ok"]
    dtype = next(dipole_model.parameters()).dtype
    device = next(dipole_model.parameters()).device
    batch = MolecularBatch([s.numbers for s in rows],
                           [int(z) for z in dipole_model.atomic_numbers], dtype=dtype,
                           device=str(device))
    pos = torch.as_tensor(np.concatenate([s.positions_A for s in rows]), dtype=dtype,
                          device=device)
    mu = predict_dipoles(dipole_model, batch, pos).cpu().numpy()
    dmu = (mu - np.array([s.dipole_eA for s in rows])) / DEBYE_EA * 1e3
    out = {"n_test": len(rows)}
    out["dipole_mae_mD"], out["dipole_rmse_mD"] = _mae_rmse(dmu.ravel())
    out["dipole_rmse_mD_ci95"] = rmse_interval(list(dmu))
    return out


def _frame_spacing_fs(traj) -> float:
    """The time between a run's recorded frames: from its ``time_fs``, else its MD step."""
    if "time_fs" in traj.array_names and traj.n_frames >= 2:
        t = traj.read("time_fs", 0, 2)
        return float(t[1] - t[0])
    return float(traj.attrs["timestep_fs"])


def model_dipoles(dipole_model: torch.nn.Module, numbers, positions_A: np.ndarray, *,
                  batch_frames: int = 500) -> np.ndarray:
    """The dipole model's dipoles (e·Å, float64) of frames ``positions_A`` (n, atoms, 3) of one
    molecule, ``batch_frames`` frames per call, in the model's dtype and on its device."""
    dtype = next(dipole_model.parameters()).dtype
    device = next(dipole_model.parameters()).device
    z_table = [int(z) for z in dipole_model.atomic_numbers]
    out = [np.zeros((0, 3))]
    for start in range(0, len(positions_A), batch_frames):
        pos = positions_A[start:start + batch_frames]
        batch = MolecularBatch([numbers] * len(pos), z_table, dtype=dtype, device=str(device))
        mu = predict_dipoles(dipole_model, batch, torch.as_tensor(
            pos.reshape(-1, 3), dtype=dtype, device=device))
        out.append(mu.detach().cpu().numpy().astype(np.float64))
    return np.concatenate(out)


def dipole_errors_along_md(store_path: Path, dipole_model: torch.nn.Module, *,
                           every_fs: float = 25.0) -> dict:
    """The dipole model against the label source's own dipoles along the label source's MD
    (the ``reference-md`` stage's trajectories), a frame every ``every_fs`` of every run
    (nearly independent; the nearest whole number of recorded frames, at least one): per
    molecule and temperature the RMSE and MAE (mDebye, per Cartesian component), the frames,
    and the lowest and highest RMSE of a run. Where the test set rests on tens of structures,
    this rests on every run of the dynamics the spectra come from (1500 frames in the demo:
    12 runs of 3 ps, frames 2 fs apart, every 12th)."""
    store = TrajectoryStore(store_path, mode="r")
    runs: dict[str, list[np.ndarray]] = {}
    for key in store.keys():
        traj = store[key]
        if traj.n_frames == 0 or "dipole_eA" not in traj.array_names:
            continue
        every = max(1, int(round(every_fs / _frame_spacing_fs(traj))))
        pos = traj.read("positions_A")[::every]
        ref = traj.read("dipole_eA")[::every]
        mu = model_dipoles(dipole_model, traj.numbers, pos, batch_frames=max(1, len(pos)))
        runs.setdefault(key.rsplit("/", 1)[0], []).append((mu - ref) / DEBYE_EA * 1e3)
    out = {}
    for group, errors in sorted(runs.items()):
        mae, rmse = _mae_rmse(np.concatenate(errors).ravel())
        per_run = [float(np.sqrt(np.mean(np.square(e)))) for e in errors]
        out[group] = {"frames": int(sum(len(e) for e in errors)), "runs": len(errors),
                      "dipole_mae_mD": mae, "dipole_rmse_mD": rmse,
                      "run_rmse_range_mD": [min(per_run), max(per_run)]}
    return out
