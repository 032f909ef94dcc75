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
energy_eV              float64 | null               reference energy, eV
forces_eVA             list<fixed 3 float64> | null reference forces (n,3), eV/Å
dipole_eA              fixed 3 float64 | null       reference dipole, e·Å
=====================  ===========================  ==========================================

Reference labels carry these names only; model predictions use other names (``pred_…``).
The table holds nothing that varies between identical runs (no timings), so DVC hashes of
re-computed tables are stable; label timings go to ``metrics/label.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from palirs_data.errors import PalirsInputError
from palirs_data.tables import STRUCTURE_SCHEMA, check_schema, read_parquet, write_parquet

LABEL_STATUSES = ("pending", "ok", "failed")
#: ``dipole_md``: acquisition-MD frames labelled for the dipole model only
#: (:mod:`palirs_data.dipole_data`)
SOURCES = ("equilibrium", "normal_modes", "active_learning", "test", "user", "dipole_md")
MAX_Z = len(chemical_symbols) - 1

#: no molecule of this pipeline reaches this far from the origin (Å); beyond it a coordinate
#: is an input error (and would overflow the rounding of :func:`structure_id`)
MAX_COORDINATE_A = 1.0e5


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
        row = {name: getattr(self, name) for name in _STRUCTURE_FIELDS}
        for key in ("numbers", "positions_A", "forces_eVA", "dipole_eA"):
            if row[key] is not None:
                row[key] = np.asarray(row[key]).tolist()
        return row


_STRUCTURE_FIELDS = tuple(f.name for f in fields(Structure))
assert set(_STRUCTURE_FIELDS) == set(STRUCTURE_SCHEMA.names), "Structure and schema disagree"


def to_table(structures: Iterable[Structure]) -> pa.Table:
    """Build a validated structure table from rows."""
    rows = [s.to_row() for s in structures]
    table = pa.Table.from_pylist(rows, schema=STRUCTURE_SCHEMA)
    return validate_table(table, where="<in memory>")


def _ragged(column: pa.ChunkedArray, width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Flattened values and per-row lengths of a list column (null rows have length 0).

    ``width`` 3 flattens a list of fixed-size-3 lists into (total, 3).
    """
    arr = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    values = arr.flatten()
    if width > 1:
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False)
    return (flat.reshape(-1, width) if width > 1 else flat), lengths.astype(np.int64)


def _fixed3(column: pa.ChunkedArray) -> np.ndarray:
    """(n_rows, 3) float64 of a fixed-size-3 column; null rows are NaN."""
    arr = column.combine_chunks()
    out = np.full((len(arr), 3), np.nan)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        out[valid] = arr.filter(arr.is_valid()).flatten().to_numpy(
            zero_copy_only=False).reshape(-1, 3)
    return out


def _split(values: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []


def from_table(table: pa.Table) -> list[Structure]:
    """Rows of a (validated) structure table as :class:`Structure` objects."""
    z_flat, n_atoms = _ragged(table.column("numbers"))
    pos_flat, _ = _ragged(table.column("positions_A"), 3)
    f_flat, f_len = _ragged(table.column("forces_eVA"), 3)
    dipoles = _fixed3(table.column("dipole_eA"))
    has_dipole = table.column("dipole_eA").is_valid().to_numpy(zero_copy_only=False)
    scalars = {name: table.column(name).to_pylist() for name in STRUCTURE_SCHEMA.names
               if name not in ("numbers", "positions_A", "forces_eVA", "dipole_eA")}
    forces = _split(f_flat, f_len)
    out = []
    for i, (z, pos) in enumerate(zip(_split(z_flat, n_atoms), _split(pos_flat, n_atoms))):
        row = {name: values[i] for name, values in scalars.items()}
        out.append(Structure(numbers=z, positions_A=pos,
                             forces_eVA=forces[i] if f_len[i] else None,
                             dipole_eA=dipoles[i] if has_dipole[i] else None, **row))
    return out


def empty_table() -> pa.Table:
    return STRUCTURE_SCHEMA.empty_table()


def _first(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


class _RowCheck:
    """Raises the one-line error naming the table and the first offending row."""

    def __init__(self, where: str, ids: list[str]) -> None:
        self.where, self.ids = where, ids

    def fail(self, row: int, what: str) -> None:
        raise PalirsInputError(f"{self.where}: row {row} (structure {self.ids[row]}): {what}")

    def __call__(self, mask: np.ndarray, what: str) -> None:
        row = _first(mask)
        if row is not None:
            self.fail(row, what)


def _check_geometry(table: pa.Table, check: _RowCheck) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Atoms, atomic numbers and positions; returns (numbers, positions, atoms per row)."""
    n = table.num_rows
    z_flat, n_atoms = _ragged(table.column("numbers"))
    pos_flat, n_pos = _ragged(table.column("positions_A"), 3)
    row_of_atom = np.repeat(np.arange(n), n_atoms)
    check(n_atoms == 0, "has no atoms")
    bad_z = (z_flat < 1) | (z_flat > MAX_Z)
    if bad_z.any():
        i = int(np.flatnonzero(bad_z)[0])
        check.fail(int(row_of_atom[i]), f"unknown atomic number {int(z_flat[i])}")
    check(n_pos != n_atoms, "positions_A has a different number of atoms than numbers")
    check(np.bincount(row_of_atom, weights=~np.isfinite(pos_flat).all(axis=1),
                      minlength=n) > 0, "positions_A contains NaN or infinite values")
    with np.errstate(invalid="ignore"):
        far = ~(np.abs(pos_flat) <= MAX_COORDINATE_A).all(axis=1)
    check(np.bincount(row_of_atom, weights=far, minlength=n) > 0,
          f"positions_A has a coordinate beyond {MAX_COORDINATE_A:g} Å")
    return z_flat, pos_flat, n_atoms


def _check_identity(table: pa.Table, check: _RowCheck, z_flat: np.ndarray,
                    pos_flat: np.ndarray, n_atoms: np.ndarray) -> None:
    """Charge, multiplicity, structure ids (consistent, unique) and source."""
    ids = check.ids
    charges = table.column("charge_e").to_numpy()
    mults = table.column("multiplicity").to_numpy()
    check(mults < 1, "multiplicity must be >= 1")
    for i, (z, pos) in enumerate(zip(_split(z_flat, n_atoms), _split(pos_flat, n_atoms))):
        if ids[i] != structure_id(z, pos, int(charges[i]), int(mults[i])):
            check.fail(i, "structure_id does not match its species and positions")
    _, first, counts = np.unique(np.asarray(ids), return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.sort(np.flatnonzero(counts > 1))
        check.fail(int(np.sort(first[dup])[0]), "duplicate structure_id")
    source = table.column("source")
    check(~pc.is_in(source, value_set=pa.array(SOURCES)).to_numpy(zero_copy_only=False),
          f"unknown source; one of {SOURCES}")


def _check_labels(table: pa.Table, check: _RowCheck, n_atoms: np.ndarray) -> None:
    """Label status, and complete, finite labels of the right shapes on every 'ok' row."""
    n = table.num_rows
    status = np.asarray(table.column("label_status").to_pylist(), dtype=object)
    bad = _first(~np.isin(status, LABEL_STATUSES))
    if bad is not None:
        check.fail(bad, f"label_status '{status[bad]}' is not one of {LABEL_STATUSES}")
    ok = status == "ok"
    energy = table.column("energy_eV").to_numpy(zero_copy_only=False).astype(np.float64)
    method = table.column("label_method").to_pylist()
    has_labels = (table.column("energy_eV").is_valid().to_numpy(zero_copy_only=False)
                  & table.column("forces_eVA").is_valid().to_numpy(zero_copy_only=False)
                  & table.column("dipole_eA").is_valid().to_numpy(zero_copy_only=False)
                  & np.array([bool(m) for m in method]))
    check(ok & ~has_labels, "label_status is 'ok' but a label or the method is missing")
    check(ok & ~np.isfinite(energy), "energy_eV is not finite")
    f_flat, f_len = _ragged(table.column("forces_eVA"), 3)
    check(ok & (f_len != n_atoms), "forces_eVA has the wrong shape")
    f_bad = np.bincount(np.repeat(np.arange(n), f_len),
                        weights=~np.isfinite(f_flat).all(axis=1), minlength=n) > 0
    check(ok & f_bad, "forces_eVA has non-finite values")
    check(ok & ~np.isfinite(_fixed3(table.column("dipole_eA"))).all(axis=1),
          "dipole_eA is not finite")
    errors = table.column("label_error").to_pylist()
    check((status == "failed") & ~np.array([bool(e) for e in errors]),
          "label_status is 'failed' but label_error is empty")


def validate_table(table: pa.Table, *, where: str) -> pa.Table:
    """Validate a structure table: schema, then per-row physics sanity.

    Checks: positions and labels finite and of matching shapes, atomic numbers known, status
    values allowed, labelled rows complete, structure ids unique and consistent with the
    structure they name. Returns the table in schema column order. Vectorised over rows (the
    id check hashes each row's arrays); the first offending row is named.
    """
    table = check_schema(table, STRUCTURE_SCHEMA, where=where)
    if table.num_rows == 0:
        return table
    check = _RowCheck(where, table.column("structure_id").to_pylist())
    z_flat, pos_flat, n_atoms = _check_geometry(table, check)
    _check_identity(table, check, z_flat, pos_flat, n_atoms)
    _check_labels(table, check, n_atoms)
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


def dedupe(rows: list[Structure]) -> list[Structure]:
    """Rows with distinct structure ids, first occurrence kept, order kept."""
    seen: dict[str, Structure] = {}
    for s in rows:
        seen.setdefault(s.structure_id, s)
    return list(seen.values())


def settings_json(settings: dict[str, Any]) -> str:
    """Canonical JSON of label settings (sorted keys) for the ``label_settings`` column."""
    return json.dumps(settings, sort_keys=True, default=str)
