"""Parquet tables with a fixed pyarrow schema: every table kind's schema, checked on every
write and read.

Each kind carries its tag and schema version in the file's metadata (``palirs.table``,
``palirs.schema_version``); a file of another kind, or of another version, is refused on read
with one line naming both. A file without the tag (written by another tool) is checked by its
columns alone. The row-level validators live with the modules that own the rows
(:mod:`palirs_data.structures`, :mod:`palirs_data.harmonic`); the spectrum tables have none
beyond their columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError

Validator = Callable[[pa.Table, str], pa.Table]


def _tag(kind: str, version: str) -> dict[bytes, bytes]:
    return {b"palirs.table": kind.encode(), b"palirs.schema_version": version.encode()}


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
        pa.field("energy_eV", pa.float64()),
        pa.field("forces_eVA", pa.list_(_VEC3)),
        pa.field("dipole_eA", _VEC3),
    ],
    metadata=_tag("structures", "1"),
)


#: Reference harmonic frequencies, one row per vibrational mode of each molecule.
FREQUENCY_SCHEMA = pa.schema(
    [
        pa.field("molecule", pa.string(), nullable=False),
        pa.field("mode_index", pa.int32(), nullable=False),  # 0..n_vib-1, ascending frequency
        pa.field("frequency_cm1", pa.float64(), nullable=False),  # negative = imaginary
        pa.field("structure_id", pa.string(), nullable=False),  # the optimised minimum
        pa.field("label_method", pa.string(), nullable=False),
        pa.field("label_settings", pa.string(), nullable=False),
        # the mode's unit eigenvector of the mass-weighted Hessian, (3N,) flattened atom-major
        pa.field("mode_vector", pa.list_(pa.float64()), nullable=False),
    ],
    metadata=_tag("frequencies", "2"),
)



#: ML or reference-MD spectra, one row per molecule, temperature and wavenumber
SPECTRUM_SCHEMA = pa.schema([
    pa.field("molecule", pa.string(), nullable=False),
    pa.field("temperature_K", pa.float64(), nullable=False),
    pa.field("wavenumber_cm1", pa.float64(), nullable=False),
    pa.field("intensity", pa.float64(), nullable=False),  # mean over runs, arbitrary units
    pa.field("std", pa.float64(), nullable=False),  # standard deviation over runs
    pa.field("n_runs", pa.int32(), nullable=False),
], metadata=_tag("spectra", "1"))

#: the committee's double-harmonic IR, one row per vibrational mode
HARMONIC_IR_SCHEMA = pa.schema([
    pa.field("molecule", pa.string(), nullable=False),
    pa.field("mode", pa.int32(), nullable=False),
    pa.field("frequency_cm1", pa.float64(), nullable=False),  # negative: imaginary
    pa.field("intensity_km_mol", pa.float64(), nullable=False),
], metadata=_tag("harmonic_ir", "1"))


def check_schema(table: pa.Table, schema: pa.Schema, *, where: str) -> pa.Table:
    """Check column names, types and non-null columns against ``schema``.

    Returns the table with columns in schema order and the schema's metadata. Raises a
    one-line :class:`PalirsInputError` naming ``where`` and the first offending column.
    """
    have = {f.name: f for f in table.schema}
    for expected in schema:
        if expected.name not in have:
            raise PalirsInputError(f"{where}: missing column '{expected.name}'")
        got = have[expected.name].type
        if not got.equals(expected.type):
            raise PalirsInputError(
                f"{where}: column '{expected.name}' has type {got}, expected {expected.type}"
            )
        if not expected.nullable and table.column(expected.name).null_count:
            raise PalirsInputError(f"{where}: column '{expected.name}' has missing values")
    extra = [name for name in have if name not in schema.names]
    if extra:
        raise PalirsInputError(f"{where}: unexpected column '{extra[0]}'")
    return table.select(schema.names).cast(schema)


def write_parquet(table: pa.Table, path: str | Path, *, validate: Validator) -> None:
    """Validate ``table`` and write it to ``path`` atomically (zstd-compressed Parquet)."""
    path = Path(path)
    table = validate(table, str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | Path, *, schema: pa.Schema, validate: Validator) -> pa.Table:
    """Read ``path`` and validate it; every problem is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PalirsInputError(f"{path}: not a readable Parquet file ({exc})") from None
    meta = schema.metadata or {}
    have = table.schema.metadata or {}
    for key in (b"palirs.table", b"palirs.schema_version"):
        if key in have and key in meta and have[key] != meta[key]:
            raise PalirsInputError(
                f"{path}: {key.decode()} is {have[key].decode()!r}, expected {meta[key].decode()!r}"
            )
    return validate(table, str(path))


def _columns_only(schema: pa.Schema) -> Validator:
    return lambda table, where: check_schema(table, schema, where=where)


def read_spectra(path) -> pa.Table:
    """A spectrum table (:data:`SPECTRUM_SCHEMA`)."""
    return read_parquet(path, schema=SPECTRUM_SCHEMA, validate=_columns_only(SPECTRUM_SCHEMA))


def write_spectra(table: pa.Table, path) -> None:
    write_parquet(table, path, validate=_columns_only(SPECTRUM_SCHEMA))


def read_harmonic(path) -> pa.Table:
    """A double-harmonic IR table (:data:`HARMONIC_IR_SCHEMA`)."""
    return read_parquet(path, schema=HARMONIC_IR_SCHEMA,
                        validate=_columns_only(HARMONIC_IR_SCHEMA))


def write_harmonic(table: pa.Table, path) -> None:
    write_parquet(table, path, validate=_columns_only(HARMONIC_IR_SCHEMA))
