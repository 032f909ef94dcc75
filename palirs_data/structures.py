"""The structure table: one Parquet schema for every set of structures the pipeline makes.

Initial normal-mode samples, actively learned frames and test sets all live in tables of
:data:`STRUCTURE_SCHEMA`. Every write and every read validates the table against it; a table
from an older run or a hand-edited file with a missing, extra or mistyped column is an error
that names the file and the column.

Columns (per row = one structure; ``n`` = number of atoms):

=====================  ===========================  ==========================================
column                 type                         meaning
=====================  ===========================  ==========================================
structure_id           string                       hash of species, positions, charge, spin
molecule               string                       catalogue or user name
numbers                list<int16> (n)              atomic numbers
positions_A            list<fixed 3 float64> (n,3)  Cartesian positions, Å
charge_e               int16                        total charge, e
multiplicity           int16                        spin multiplicity 2S+1
source                 string                       see :data:`SOURCES`
iteration              int32                        active-learning iteration (0 = initial)
temperature_K          float64 | null               sampling / MD temperature, K
mode_index             int32 | null                 normal mode a sample was displaced along
force_std_max_eVA      float64 | null               committee uncertainty: max over atoms of
                                                    the norm of the committee std of the force
force_rel_dev          float64 | null               committee force std / force magnitude
label_status           string                       ``pending`` | ``ok`` | ``failed``
label_method           string | null                label source (``xtb``, ``pyscf``, ``ase``)
label_settings         string | null                JSON of the settings actually used
label_error            string | null                error text of a failed single point
label_attempts         int16                        single-point attempts made so far
label_seconds          float64 | null               wall time of the successful attempt, s
energy_eV              float64 | null               reference energy, eV
forces_eVA             list<fixed 3 float64> | null reference forces (n,3), eV/Å
dipole_eA              fixed 3 float64 | null       reference dipole, e·Å
=====================  ===========================  ==========================================

Reference labels carry these names only; model predictions use other names (``pred_…``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError
from palirs_data.tables import check_schema, read_parquet, write_parquet

SCHEMA_VERSION = "1"
LABEL_STATUSES = ("pending", "ok", "failed")
SOURCES = ("equilibrium", "normal_modes", "active_learning", "test", "user")
MAX_Z = len(chemical_symbols) - 1

_VEC3 = pa.list_(pa.float64(), 3)

STRUCTURE_SCHEMA = pa.schema(
    [
        pa.field("structure_id", pa.string(), nullable=False),
        pa.field("molecule", pa.string(), nullable=False),
        pa.field("numbers", pa.list_(pa.int16()), nullable=False),
        pa.field("positions_A", pa.list_(_VEC3), nullable=False),
        pa.field("charge_e", pa.int16(), nullable=False),
        pa.field("multiplicity", pa.int16(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("temperature_K", pa.float64()),
        pa.field("mode_index", pa.int32()),
        pa.field("force_std_max_eVA", pa.float64()),
        pa.field("force_rel_dev", pa.float64()),
        pa.field("label_status", pa.string(), nullable=False),
        pa.field("label_method", pa.string()),
        pa.field("label_settings", pa.string()),
        pa.field("label_error", pa.string()),
        pa.field("label_attempts", pa.int16(), nullable=False),
        pa.field("label_seconds", pa.float64()),
        pa.field("energy_eV", pa.float64()),
        pa.field("forces_eVA", pa.list_(_VEC3)),
        pa.field("dipole_eA", _VEC3),
    ],
    metadata={b"palirs.table": b"structures", b"palirs.schema_version": SCHEMA_VERSION.encode()},
)


def structure_id(
    numbers: Sequence[int], positions_A: np.ndarray, charge_e: int = 0, multiplicity: int = 1
) -> str:
    """Stable identifier of a structure: SHA-256 of species, positions (rounded to 1e-6 Å),
    charge and multiplicity; 20 hex characters."""
    z = np.asarray(numbers, dtype=np.int16)
    pos = np.rint(np.asarray(positions_A, dtype=np.float64) * 1e6).astype(np.int64)
    h = hashlib.sha256()
    h.update(z.tobytes())
    h.update(pos.tobytes())
    h.update(np.asarray([charge_e, multiplicity], dtype=np.int16).tobytes())
    return h.hexdigest()[:20]


@dataclass
class Structure:
    """One row of the structure table (see the module docstring for units)."""

    molecule: str
    numbers: np.ndarray
    positions_A: np.ndarray
    source: str
    charge_e: int = 0
    multiplicity: int = 1
    iteration: int = 0
    temperature_K: float | None = None
    mode_index: int | None = None
    force_std_max_eVA: float | None = None
    force_rel_dev: float | None = None
    label_status: str = "pending"
    label_method: str | None = None
    label_settings: str | None = None
    label_error: str | None = None
    label_attempts: int = 0
    label_seconds: float | None = None
    energy_eV: float | None = None
    forces_eVA: np.ndarray | None = None
    dipole_eA: np.ndarray | None = None
    structure_id: str = field(default="")

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int16)
        self.positions_A = np.asarray(self.positions_A, dtype=np.float64).reshape(-1, 3)
        if self.forces_eVA is not None:
            self.forces_eVA = np.asarray(self.forces_eVA, dtype=np.float64).reshape(-1, 3)
        if self.dipole_eA is not None:
            self.dipole_eA = np.asarray(self.dipole_eA, dtype=np.float64).reshape(3)
        if not self.structure_id:
            self.structure_id = structure_id(
                self.numbers, self.positions_A, self.charge_e, self.multiplicity
            )

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def to_atoms(self) -> Atoms:
        """ASE ``Atoms``; reference labels, when present, as a ``SinglePointCalculator``."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions_A)
        atoms.info.update(
            structure_id=self.structure_id,
            molecule=self.molecule,
            source=self.source,
            iteration=self.iteration,
            charge=self.charge_e,
            multiplicity=self.multiplicity,
        )
        if self.temperature_K is not None:
            atoms.info["temperature_K"] = self.temperature_K
        if self.label_status == "ok":
            atoms.calc = SinglePointCalculator(
                atoms,
                energy=self.energy_eV,
                forces=np.array(self.forces_eVA),
                dipole=np.array(self.dipole_eA),
            )
        return atoms

    @classmethod
    def from_atoms(cls, atoms: Atoms, *, molecule: str, source: str, **kw: Any) -> Structure:
        """A pending (unlabelled) row from ASE ``Atoms``; charge and multiplicity are taken
        from ``atoms.info['charge']``/``['multiplicity']`` when present."""
        kw.setdefault("charge_e", int(atoms.info.get("charge", 0)))
        kw.setdefault("multiplicity", int(atoms.info.get("multiplicity", 1)))
        return cls(
            molecule=molecule,
            numbers=atoms.numbers.copy(),
            positions_A=atoms.positions.copy(),
            source=source,
            **kw,
        )

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("numbers", "positions_A", "forces_eVA", "dipole_eA"):
            if row[key] is not None:
                row[key] = np.asarray(row[key]).tolist()
        return row


_STRUCTURE_FIELDS = tuple(f.name for f in fields(Structure))
assert set(_STRUCTURE_FIELDS) == set(STRUCTURE_SCHEMA.names), "Structure and schema disagree"


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def to_table(structures: Iterable[Structure]) -> pa.Table:
    """Build a validated structure table from rows."""
    rows = [s.to_row() for s in structures]
    table = pa.Table.from_pylist(rows, schema=STRUCTURE_SCHEMA)
    return validate_table(table, where="<in memory>")


def from_table(table: pa.Table) -> list[Structure]:
    """Rows of a (validated) structure table as :class:`Structure` objects."""
    out = []
    for row in table.to_pylist():
        for key in ("temperature_K", "force_std_max_eVA", "force_rel_dev", "energy_eV"):
            row[key] = _none_if_nan(row[key])
        out.append(Structure(**row))
    return out


def empty_table() -> pa.Table:
    return STRUCTURE_SCHEMA.empty_table()


def _fail(where: str, row: int, sid: str, what: str) -> None:
    raise PalirsInputError(f"{where}: row {row} (structure {sid}): {what}")


def validate_table(table: pa.Table, *, where: str) -> pa.Table:
    """Validate a structure table: schema, then per-row physics sanity.

    Checks: positions and labels finite and of matching shapes, atomic numbers known, status
    values allowed, labelled rows complete, structure ids unique and consistent with the
    structure they name. Returns the table in schema column order.
    """
    table = check_schema(table, STRUCTURE_SCHEMA, where=where)
    cols = table.to_pydict()
    seen: set[str] = set()
    for i in range(table.num_rows):
        sid = cols["structure_id"][i]
        z = np.asarray(cols["numbers"][i], dtype=np.int64)
        pos = np.asarray(cols["positions_A"][i], dtype=np.float64)
        if z.size == 0:
            _fail(where, i, sid, "has no atoms")
        if ((z < 1) | (z > MAX_Z)).any():
            _fail(where, i, sid, f"unknown atomic number {int(z[(z < 1) | (z > MAX_Z)][0])}")
        if pos.shape != (z.size, 3):
            _fail(where, i, sid, f"positions_A has shape {pos.shape}, expected ({z.size}, 3)")
        if not np.isfinite(pos).all():
            _fail(where, i, sid, "positions_A contains NaN or infinite values")
        expected_id = structure_id(z, pos, cols["charge_e"][i], cols["multiplicity"][i])
        if sid != expected_id:
            _fail(where, i, sid, "structure_id does not match its species and positions")
        if sid in seen:
            _fail(where, i, sid, "duplicate structure_id")
        seen.add(sid)
        if cols["multiplicity"][i] < 1:
            _fail(where, i, sid, "multiplicity must be >= 1")
        if cols["source"][i] not in SOURCES:
            _fail(where, i, sid, f"unknown source '{cols['source'][i]}'; one of {SOURCES}")
        status = cols["label_status"][i]
        if status not in LABEL_STATUSES:
            _fail(where, i, sid, f"label_status '{status}' is not one of {LABEL_STATUSES}")
        if status == "ok":
            energy = cols["energy_eV"][i]
            forces, dipole = cols["forces_eVA"][i], cols["dipole_eA"][i]
            if energy is None or forces is None or dipole is None or not cols["label_method"][i]:
                _fail(where, i, sid, "label_status is 'ok' but a label or the method is missing")
            if not math.isfinite(energy):
                _fail(where, i, sid, "energy_eV is not finite")
            f = np.asarray(forces, dtype=np.float64)
            if f.shape != (z.size, 3) or not np.isfinite(f).all():
                _fail(where, i, sid, "forces_eVA has the wrong shape or non-finite values")
            if not np.isfinite(np.asarray(dipole, dtype=np.float64)).all():
                _fail(where, i, sid, "dipole_eA is not finite")
        elif status == "failed" and not cols["label_error"][i]:
            _fail(where, i, sid, "label_status is 'failed' but label_error is empty")
    return table


def _validate(table: pa.Table, where: str) -> pa.Table:
    return validate_table(table, where=where)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Validate and write a structure table to Parquet atomically."""
    write_parquet(table, path, validate=_validate)


def read_table(path: str | Path) -> pa.Table:
    """Read and validate a structure table; every problem is a one-line error naming ``path``."""
    return read_parquet(path, schema=STRUCTURE_SCHEMA, validate=_validate)


def concat_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate structure tables (validated again: ids must stay unique)."""
    if not tables:
        return empty_table()
    return validate_table(pa.concat_tables(tables), where="<concatenated>")


# --- extxyz -------------------------------------------------------------------------------

#: Keys under which extxyz files carry reference labels (mace-torch's ``--energy_key`` etc.).
EXTXYZ_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "dipole": "REF_dipole"}


def write_extxyz(table: pa.Table, path: str | Path, *, only_labelled: bool = True) -> int:
    """Write structures as extxyz with labels under :data:`EXTXYZ_KEYS` (mace-torch's keys).

    Returns the number of structures written.
    """
    from ase.io import write

    images = []
    for s in from_table(table):
        if only_labelled and s.label_status != "ok":
            continue
        atoms = Atoms(numbers=s.numbers, positions=s.positions_A)
        atoms.info.update(
            structure_id=s.structure_id,
            molecule=s.molecule,
            config_type=s.molecule,
            charge=s.charge_e,
            multiplicity=s.multiplicity,
        )
        if s.label_status == "ok":
            atoms.info[EXTXYZ_KEYS["energy"]] = s.energy_eV
            atoms.info[EXTXYZ_KEYS["dipole"]] = np.asarray(s.dipole_eA)
            atoms.arrays[EXTXYZ_KEYS["forces"]] = np.asarray(s.forces_eVA)
        images.append(atoms)
    with atomic_path(path) as tmp:
        write(tmp, images, format="extxyz")
    return len(images)


def read_structures_file(
    path: str | Path, *, molecule: str | None = None, source: str = "user"
) -> pa.Table:
    """Read an XYZ/extxyz file (one or many frames) into a structure table.

    Labels are taken from :data:`EXTXYZ_KEYS` or from plain ``energy``/``forces``/``dipole``
    properties when all three are present. The molecule name comes from ``molecule``, the
    frame's ``molecule`` info key, or the chemical formula, in that order.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file")
    try:
        images = read(path, index=":", format="extxyz")
    except KeyError as exc:  # ASE's symbol lookup
        raise PalirsInputError(f"{path}: unknown element {exc.args[0]!r}") from None
    except Exception as exc:  # ASE raises many types for malformed files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PalirsInputError(f"{path}: malformed XYZ file ({reason})") from None
    if not images:
        raise PalirsInputError(f"{path}: contains no structures")
    rows = []
    for k, atoms in enumerate(images):
        if len(atoms) == 0:
            raise PalirsInputError(f"{path}: frame {k} has no atoms")
        if (atoms.numbers < 1).any():
            raise PalirsInputError(f"{path}: frame {k} has an unknown element")
        if not np.isfinite(atoms.positions).all():
            raise PalirsInputError(f"{path}: frame {k} has NaN or infinite coordinates")
        name = molecule or atoms.info.get("molecule") or atoms.get_chemical_formula()
        s = Structure.from_atoms(atoms, molecule=str(name), source=source)
        labels = _labels_from_atoms(atoms)
        if labels is not None:
            s.energy_eV, s.forces_eVA, s.dipole_eA = labels
            s.label_status, s.label_method = "ok", str(atoms.info.get("label_method", "user"))
            s.__post_init__()
        rows.append(s)
    return to_table(_dedupe(rows))


def _labels_from_atoms(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray] | None:
    info, arrays = atoms.info, atoms.arrays
    keys = EXTXYZ_KEYS
    if keys["energy"] in info and keys["forces"] in arrays and keys["dipole"] in info:
        return float(info[keys["energy"]]), arrays[keys["forces"]], np.asarray(info[keys["dipole"]])
    calc = atoms.calc
    if calc is not None and {"energy", "forces", "dipole"} <= set(calc.results):
        return float(calc.results["energy"]), calc.results["forces"], calc.results["dipole"]
    return None


def _dedupe(rows: list[Structure]) -> list[Structure]:
    seen: dict[str, Structure] = {}
    for s in rows:
        seen.setdefault(s.structure_id, s)
    return list(seen.values())


def settings_json(settings: dict[str, Any]) -> str:
    """Canonical JSON of label settings (sorted keys) for the ``label_settings`` column."""
    return json.dumps(settings, sort_keys=True, default=str)
