"""Data in and out in common formats: ``palirs export`` and ``palirs import``.

- Structures go out as extxyz in ASE's conventions: each labelled frame carries a
  ``SinglePointCalculator`` (``energy`` eV, ``forces`` eV/Å, ``dipole`` e·Å, what
  ``ase.io.read`` gives back as ``atoms.get_potential_energy()``...), with the molecule,
  structure id, source, iteration, charge, multiplicity and level of theory
  (``label_method``) in ``atoms.info``. Unlabelled rows go out as bare geometries (with
  ``--all``).
- A labelled extxyz set comes in (:func:`import_structures`) as a structure table with its
  level of theory recorded in ``label_method``; every frame must carry an energy, forces and a
  dipole (as calculator results, mace-torch's ``REF_*`` keys, or keys you name), and a frame
  without one is refused in one line naming the frame. ``label.initial_data`` adds such a set
  to the initial training data (:func:`initial_data`).
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

from palirs_data import structures
from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError
from palirs_data.names import file_stem
from palirs_data.structures import Structure

#: where an imported frame's labels may sit, tried in order (calculator results come first)
LABEL_KEYS = {"energy": ("energy", "REF_energy"), "forces": ("forces", "REF_forces"),
              "dipole": ("dipole", "REF_dipole")}


# --- structures -------------------------------------------------------------------------------

def _number(x: float) -> str:
    return f"{float(x):.17g}"  # float64 written so that it reads back bit for bit


def _text(value) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def extxyz_frame(s: Structure) -> str:
    """One row as an extxyz frame in ASE's conventions (``energy``, ``dipole`` and per-atom
    ``forces``, which ``ase.io.read`` turns into ``SinglePointCalculator`` results), every
    number with 17 significant digits: ASE's own writer keeps 8 decimals of the per-atom
    arrays, which is not a round trip."""
    from ase.data import chemical_symbols

    labelled = s.label_status == "ok"
    info = {"molecule": _text(s.molecule), "structure_id": _text(s.structure_id),
            "source": _text(s.source), "iteration": str(int(s.iteration)),
            "charge": str(int(s.charge_e)), "multiplicity": str(int(s.multiplicity)),
            "label_status": _text(s.label_status),
            "label_method": _text(s.label_method or "")}
    if s.temperature_K is not None:
        info["temperature_K"] = _number(s.temperature_K)
    properties = "species:S:1:pos:R:3"
    if labelled:
        info["energy"] = _number(s.energy_eV)
        info["dipole"] = '"' + " ".join(_number(v) for v in s.dipole_eA) + '"'
        properties += ":forces:R:3"
    header = " ".join([f"Properties={properties}", *(f"{k}={v}" for k, v in info.items()),
                       'pbc="F F F"'])
    lines = [str(len(s.numbers)), header]
    forces = np.asarray(s.forces_eVA) if labelled else None
    for k, (z, x) in enumerate(zip(s.numbers, np.asarray(s.positions_A))):
        row = [chemical_symbols[int(z)], *map(_number, x)]
        if forces is not None:
            row += map(_number, forces[k])
        lines.append(" ".join(row))
    return "\n".join(lines) + "\n"


def export_structures(table: pa.Table, path: Path, *, only_labelled: bool = True) -> int:
    """Write the rows of a structure table as extxyz (:func:`extxyz_frame`); returns how
    many."""
    frames = [extxyz_frame(s) for s in structures.from_table(table)
              if s.label_status == "ok" or not only_labelled]
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text("".join(frames), encoding="utf-8")
    return len(frames)


def _label(atoms, name: str, keys: Sequence[str]):
    results = atoms.calc.results if atoms.calc is not None else {}
    for key in keys:
        for where in (results, atoms.info, atoms.arrays):
            if key in where:
                return where[key]
    return None


def import_structures(path: Path, *, level_of_theory: str | None = None,
                      molecule: str | None = None,
                      keys: dict[str, str] | None = None) -> pa.Table:
    """A labelled extxyz set as a structure table (source ``user``). ``level_of_theory`` is
    recorded in ``label_method`` (default: each frame's ``label_method`` or
    ``level_of_theory`` info; one of the two is required). ``keys`` names where a property
    sits when not under :data:`LABEL_KEYS` (e.g. ``{"energy": "DFT_energy"}``). Units: eV,
    eV/Å and e·Å (ASE's). Every frame must carry all three labels."""
    from ase.io import read

    path = Path(path)
    structures.check_xyz_file(path)
    try:
        images = read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PalirsInputError(f"{path}: malformed extxyz file ({reason})") from None
    lookup = {name: ((keys or {})[name],) if name in (keys or {}) else default
              for name, default in LABEL_KEYS.items()}
    rows = []
    for k, atoms in enumerate(images):
        structures.check_frame(path, k, atoms)
        labels = {name: _label(atoms, name, where) for name, where in lookup.items()}
        missing = [name for name, value in labels.items() if value is None]
        if missing:
            raise PalirsInputError(
                f"{path}: frame {k} has no {missing[0]} (looked for "
                f"{', '.join(lookup[missing[0]])}); every imported frame needs an energy, "
                "forces and a dipole")
        method = level_of_theory or atoms.info.get("label_method") \
            or atoms.info.get("level_of_theory")
        if not method:
            raise PalirsInputError(f"{path}: frame {k}: no level of theory (give "
                                   "--level-of-theory, or label_method in the frame)")
        name = molecule or atoms.info.get("molecule") or atoms.get_chemical_formula()
        s = Structure.from_atoms(atoms, molecule=str(name), source="user")
        s.energy_eV = float(np.asarray(labels["energy"]).reshape(()))
        s.forces_eVA = np.asarray(labels["forces"], dtype=np.float64)
        s.dipole_eA = np.asarray(labels["dipole"], dtype=np.float64).reshape(3)
        s.label_status, s.label_method = "ok", str(method)
        s.__post_init__()
        rows.append(s)
    return structures.validate_table(structures.to_table(structures.dedupe(rows)),
                                     where=str(path))


def initial_data(entries, label_source: str) -> pa.Table:
    """The labelled sets of ``label.initial_data`` as one table. Each set's level of theory
    must be the label source's: one training set never mixes two."""
    tables = []
    for entry in entries:
        if entry.level_of_theory != label_source:
            raise PalirsInputError(
                f"label.initial_data: {entry.file} is {entry.level_of_theory} but the label "
                f"source is {label_source}: one training set never mixes levels of theory")
        tables.append(import_structures(Path(entry.file),
                                        level_of_theory=entry.level_of_theory))
    return structures.concat_tables(tables) if tables else structures.empty_table()


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
