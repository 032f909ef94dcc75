"""Data in and out in common formats: ``palirs export`` and ``palirs import``.

- Structures go out and come in as extxyz through :mod:`palirs_data.xyz` (the one writer
  and reader: ASE's conventions, 17 digits, labelled sets with their level of theory).
- Spectra go out as CSV (``wavenumber_cm1, intensity, std``) and JCAMP-DX (readable by the
  ``jcamp`` package and by spectroscopy software), one file per molecule and temperature.
- Trajectories go out as extxyz or ASE ``.traj`` (by suffix): positions, velocities (ASE
  units), time, and the energies and dipoles under their own names: a label-source run's as
  calculator results, a model's in ``atoms.info`` as ``model_energy_eV``/``model_dipole_eA``
  (predictions are never passed off as labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError
from palirs_data.names import file_stem

# --- spectra ----------------------------------------------------------------------------------

def _spectrum_rows(table: pa.Table) -> dict[tuple[str, float], dict[str, np.ndarray]]:
    out: dict[tuple[str, float], dict[str, list]] = {}
    for row in table.to_pylist():
        entry = out.setdefault((row["molecule"], row["temperature_K"]),
                               {"wavenumber_cm1": [], "intensity": [], "std": []})
        for name in entry:
            entry[name].append(row[name])
    return {key: {name: np.asarray(v) for name, v in entry.items()}
            for key, entry in out.items()}


def export_spectra(table: pa.Table, out_dir: Path, *, formats: Sequence[str] = ("csv", "jdx"),
                   title: str = "palirs-data ML IR spectrum") -> list[Path]:
    """One file per molecule, temperature and format (``csv``, ``jdx``) of a spectrum table,
    named ``<molecule>_<T>K.<format>`` (:func:`jcamp_text`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (molecule, temperature), s in sorted(_spectrum_rows(table).items()):
        stem = out_dir / f"{file_stem(molecule)}_{temperature:g}K"
        if "csv" in formats:
            path = stem.with_suffix(".csv")
            lines = ["wavenumber_cm1,intensity,std"] + [
                f"{x:.6f},{y:.9g},{e:.9g}" for x, y, e in
                zip(s["wavenumber_cm1"], s["intensity"], s["std"])]
            with atomic_path(path) as tmp:
                Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
            written.append(path)
        if "jdx" in formats:
            path = stem.with_suffix(".jdx")
            text = jcamp_text(f"{title}: {molecule}, {temperature:g} K", s["wavenumber_cm1"],
                              s["intensity"], molecule=molecule)
            with atomic_path(path) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
            written.append(path)
    return written


def jcamp_text(title: str, x: np.ndarray, y: np.ndarray, *, molecule: str,
               per_line: int = 10) -> str:
    """A JCAMP-DX 4.24 infrared spectrum (``##XYDATA=(X++(Y..Y))``, AFFN): the intensities
    as integers times ``##YFACTOR`` (a billionth of the highest), so that a reader recovers
    them to nine digits."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    factor = (float(np.max(np.abs(y))) or 1.0) / 1e9
    ints = np.rint(y / factor).astype(np.int64)
    head = {"TITLE": title, "JCAMP-DX": "4.24", "DATA TYPE": "INFRARED SPECTRUM",
            "ORIGIN": "palirs-data (ML molecular dynamics)", "OWNER": "see the run's params",
            "MOLFORM": molecule, "XUNITS": "1/CM", "YUNITS": "ARBITRARY UNITS",
            "XFACTOR": "1", "YFACTOR": f"{factor:.9e}", "FIRSTX": f"{x[0]:.6f}",
            "LASTX": f"{x[-1]:.6f}", "DELTAX": f"{(x[-1] - x[0]) / max(len(x) - 1, 1):.6f}",
            "FIRSTY": f"{y[0]:.9e}", "MAXY": f"{y.max():.9e}", "MINY": f"{y.min():.9e}",
            "NPOINTS": str(len(x)), "XYDATA": "(X++(Y..Y))"}
    lines = [f"##{k}={v}" for k, v in head.items()]
    for i in range(0, len(x), per_line):
        lines.append(f"{x[i]:.6f} " + " ".join(str(v) for v in ints[i:i + per_line]))
    return "\n".join([*lines, "##END="]) + "\n"


# --- trajectories -----------------------------------------------------------------------------

def trajectory_frames(traj, *, every: int = 1) -> list:
    """The frames of one stored trajectory as ASE ``Atoms`` (module docstring)."""
    from ase import Atoms, units
    from ase.calculators.singlepoint import SinglePointCalculator

    from palirs_data.trajectory import dipole_array, energy_array

    names = traj.array_names
    labels = energy_array(True) in names or dipole_array(True) in names
    energy, dipole = energy_array(labels), dipole_array(labels)
    read = {n: traj.read(n) for n in ("positions_A", "velocities_A_fs", "time_fs", energy,
                                      dipole) if n in names}
    frames = []
    for i in range(0, traj.n_frames, every):
        atoms = Atoms(numbers=traj.numbers, positions=read["positions_A"][i])
        if "velocities_A_fs" in read:
            atoms.set_velocities(read["velocities_A_fs"][i] / units.fs)  # Å/fs -> ASE units
        atoms.info.update(molecule=traj.attrs.get("molecule"), key=traj.key,
                          temperature_K=traj.attrs.get("temperature_K"))
        if "time_fs" in read:
            atoms.info["time_fs"] = float(read["time_fs"][i])
        values = {k: read[n][i] for k, n in (("energy", energy), ("dipole", dipole))
                  if n in read}
        if labels and values:
            atoms.calc = SinglePointCalculator(atoms, **{k: (float(v) if k == "energy"
                                                             else np.asarray(v))
                                                         for k, v in values.items()})
        else:
            for k, v in values.items():
                atoms.info[energy if k == "energy" else dipole] = (
                    float(v) if k == "energy" else np.asarray(v))
        frames.append(atoms)
    return frames


def export_trajectory(store, key: str, path: Path, *, every: int = 1) -> int:
    """Write one trajectory of a store as extxyz, or as an ASE trajectory when ``path`` ends
    in ``.traj``; returns the frames written."""
    from ase.io import write

    if key not in store:
        keys = store.keys()
        raise PalirsInputError(f"{store.path}: no trajectory '{key}' (there are: "
                               f"{', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''})")
    frames = trajectory_frames(store[key], every=every)
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp, frames, format="traj" if path.suffix == ".traj" else "extxyz")
    return len(frames)
