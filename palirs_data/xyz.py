"""Structures in and out as extxyz: the one writer and the one reader.

- Written (:func:`write_structures`): every number with 17 significant digits, so a file read
  back gives the table's float64 values bit for bit (ASE's own writer keeps 8 decimals of the
  per-atom arrays). Labels go under :data:`ASE_KEYS` (``energy``, ``forces``, ``dipole``:
  what ``ase.io.read`` turns into ``SinglePointCalculator`` results, for ``palirs export``) or
  under :data:`MACE_KEYS` (``REF_*``: the training files of mace-torch, which reads them with
  ``--energy_key`` etc.). Each frame carries the molecule (also as ``config_type``), structure
  id, source, iteration, charge, multiplicity, label status and level of theory
  (``label_method``) in its info line.
- Read (:func:`read_frames`): the file is checked before ASE parses it (atom counts that the
  lines can hold), every frame after (atoms, known elements, finite and bounded coordinates);
  a malformed file is one line naming the file and the frame.
- A geometry file (:func:`read_structures_file`: a user's molecule, labels optional) and a
  labelled set (:func:`import_structures`, ``palirs import`` and ``label.initial_data``:
  every frame must carry an energy, forces and a dipole, and a level of theory) both go
  through that reader and one label lookup (:data:`LABEL_KEYS`). Units: eV, eV/Å, e·Å.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from ase import Atoms

from palirs_data import structures
from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError
from palirs_data.structures import MAX_COORDINATE_A, Structure

#: ASE's conventions: read back as calculator results
ASE_KEYS = {"energy": "energy", "forces": "forces", "dipole": "dipole"}
#: mace-torch's reference keys (``--energy_key``, ``--forces_key``, ``--dipole_key``)
MACE_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "dipole": "REF_dipole"}
#: where a frame's labels may sit when read, tried in order (calculator results come first)
LABEL_KEYS = {name: (ASE_KEYS[name], MACE_KEYS[name]) for name in ASE_KEYS}


# --- writing ------------------------------------------------------------------------------

def _number(x: float) -> str:
    return f"{float(x):.17g}"  # float64 written so that it reads back bit for bit


def _text(value) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def extxyz_frame(s: Structure, keys: dict[str, str] = ASE_KEYS) -> str:
    """One row as an extxyz frame, its labels (if labelled) under ``keys``."""
    from ase.data import chemical_symbols

    labelled = s.label_status == "ok"
    info = {"molecule": _text(s.molecule), "config_type": _text(s.molecule),
            "structure_id": _text(s.structure_id), "source": _text(s.source),
            "iteration": str(int(s.iteration)), "charge": str(int(s.charge_e)),
            "multiplicity": str(int(s.multiplicity)), "label_status": _text(s.label_status),
            "label_method": _text(s.label_method or "")}
    if s.temperature_K is not None:
        info["temperature_K"] = _number(s.temperature_K)
    properties = "species:S:1:pos:R:3"
    if labelled:
        info[keys["energy"]] = _number(s.energy_eV)
        info[keys["dipole"]] = '"' + " ".join(_number(v) for v in s.dipole_eA) + '"'
        properties += f":{keys['forces']}:R:3"
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


def write_structures(table: pa.Table, path: Path, *, only_labelled: bool = True,
                     keys: dict[str, str] = ASE_KEYS) -> int:
    """Write the rows of a structure table as extxyz (:func:`extxyz_frame`), atomically;
    unlabelled rows only with ``only_labelled=False``. Returns how many were written."""
    frames = [extxyz_frame(s, keys) for s in structures.from_table(table)
              if s.label_status == "ok" or not only_labelled]
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text("".join(frames), encoding="utf-8")
    return len(frames)


# --- reading ------------------------------------------------------------------------------

def check_xyz_file(path: Path) -> None:
    """Check an XYZ file before ASE reads it: it exists, and every frame starts with a
    positive atom count that the lines after it can hold (a count of a billion would otherwise
    have the reader allocate for it)."""
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PalirsInputError(f"{path}: not a text file (XYZ is text)") from None
    while lines and not lines[-1].strip():
        lines.pop()
    i, frame = 0, 0
    while i < len(lines):
        head = lines[i].strip()
        try:
            n = int(head)
        except ValueError:
            raise PalirsInputError(f"{path}: line {i + 1}: expected the atom count of frame "
                                   f"{frame}, got {head[:40]!r}") from None
        if n < 1:
            raise PalirsInputError(f"{path}: frame {frame} has no atoms (count {n})")
        if i + 2 + n > len(lines):  # count line, comment line, n atom lines
            raise PalirsInputError(f"{path}: frame {frame} declares {n} atoms but only "
                                   f"{max(0, len(lines) - i - 2)} atom lines follow")
        i += 2 + n
        frame += 1


def check_frame(path: Path, k: int, atoms: Atoms) -> None:
    """Frame ``k`` of an XYZ file: atoms, known elements, finite and bounded coordinates."""
    if len(atoms) == 0:
        raise PalirsInputError(f"{path}: frame {k} has no atoms")
    if (atoms.numbers < 1).any():
        raise PalirsInputError(f"{path}: frame {k} has an unknown element")
    if not np.isfinite(atoms.positions).all():
        raise PalirsInputError(f"{path}: frame {k} has NaN or infinite coordinates")
    if (np.abs(atoms.positions) > MAX_COORDINATE_A).any():
        raise PalirsInputError(f"{path}: frame {k} has a coordinate beyond "
                               f"{MAX_COORDINATE_A:g} Å")


def read_frames(path: Path) -> list[Atoms]:
    """Every frame of an XYZ/extxyz file, checked (module docstring)."""
    from ase.io import read

    path = Path(path)
    check_xyz_file(path)
    try:
        images = read(path, index=":", format="extxyz")
    except KeyError as exc:  # ASE's symbol lookup
        raise PalirsInputError(f"{path}: unknown element {exc.args[0]!r}") from None
    except Exception as exc:  # ASE raises many types for malformed files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PalirsInputError(f"{path}: malformed XYZ file ({reason})") from None
    if not images:
        raise PalirsInputError(f"{path}: contains no structures")
    for k, atoms in enumerate(images):
        check_frame(path, k, atoms)
    return images


def _label(atoms: Atoms, keys: Sequence[str]):
    results = atoms.calc.results if atoms.calc is not None else {}
    for key in keys:
        for where in (results, atoms.info, atoms.arrays):
            if key in where:
                return where[key]
    return None


def frame_labels(atoms: Atoms, lookup: dict[str, Sequence[str]] = LABEL_KEYS
                 ) -> dict[str, object | None]:
    """The energy, forces and dipole of a frame found under ``lookup`` (None where absent)."""
    return {name: _label(atoms, where) for name, where in lookup.items()}


def _structure(atoms: Atoms, labels: dict, *, molecule: str | None, source: str,
               method: str | None) -> Structure:
    name = molecule or atoms.info.get("molecule") or atoms.get_chemical_formula()
    s = Structure.from_atoms(atoms, molecule=str(name), source=source)
    if all(value is not None for value in labels.values()):
        s.energy_eV = float(np.asarray(labels["energy"]).reshape(()))
        s.forces_eVA = np.asarray(labels["forces"], dtype=np.float64)
        s.dipole_eA = np.asarray(labels["dipole"], dtype=np.float64).reshape(3)
        s.label_status = "ok"
        s.label_method = str(method or atoms.info.get("label_method") or "user")
        s.__post_init__()
    return s


def read_structures_file(path: str | Path, *, molecule: str | None = None,
                         source: str = "user") -> pa.Table:
    """An XYZ/extxyz file (one or many frames) as a structure table; a frame carrying all
    three labels (:data:`LABEL_KEYS`) comes in labelled. The molecule name comes from
    ``molecule``, the frame's ``molecule`` info key, or the chemical formula, in that order."""
    rows = [_structure(atoms, frame_labels(atoms), molecule=molecule, source=source,
                       method=None) for atoms in read_frames(Path(path))]
    return structures.to_table(structures.dedupe(rows))


def import_structures(path: Path, *, level_of_theory: str | None = None,
                      molecule: str | None = None,
                      keys: dict[str, str] | None = None) -> pa.Table:
    """A labelled extxyz set as a structure table (source ``user``). ``level_of_theory`` is
    recorded in ``label_method`` (default: each frame's ``label_method`` or
    ``level_of_theory`` info; one of the two is required). ``keys`` names where a property
    sits when not under :data:`LABEL_KEYS` (e.g. ``{"energy": "DFT_energy"}``). Every frame
    must carry all three labels."""
    path = Path(path)
    lookup = {name: ((keys or {})[name],) if name in (keys or {}) else default
              for name, default in LABEL_KEYS.items()}
    rows = []
    for k, atoms in enumerate(read_frames(path)):
        labels = frame_labels(atoms, lookup)
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
        rows.append(_structure(atoms, labels, molecule=molecule, source="user", method=method))
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
