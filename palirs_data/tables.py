"""Generic Parquet tables with a fixed pyarrow schema: checked on every write and read.

Each table kind (structures, reference frequencies, ...) defines its schema once in its own
module and calls :func:`write_parquet` / :func:`read_parquet` with a row-level validator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from palirs_data.atomic import atomic_path
from palirs_data.errors import PalirsInputError

Validator = Callable[[pa.Table, str], pa.Table]


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
