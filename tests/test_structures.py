"""The structure table: round trips, identifiers, and a broken table is refused by column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ase.build import molecule

from palirs_data import structures
from palirs_data.errors import PalirsInputError
from palirs_data.structures import STRUCTURE_SCHEMA, Structure


def _labelled(name="methanol", shift=0.0) -> Structure:
    atoms = molecule("CH3OH")
    atoms.positions[0, 0] += shift
    n = len(atoms)
    rng = np.random.default_rng(0)
    return Structure.from_atoms(atoms, molecule=name, source="normal_modes",
                                label_status="ok", label_method="xtb", label_settings="{}",
                                label_attempts=1, energy_eV=-123.4,
                                forces_eVA=rng.normal(size=(n, 3)), dipole_eA=[0.1, 0.2, 0.3])


def _table(k=3) -> pa.Table:
    return structures.to_table([_labelled(shift=0.01 * i) for i in range(k)])


def test_write_read_round_trip(tmp_path):
    table = _table()
    path = tmp_path / "t.parquet"
    structures.write_table(table, path)
    back = structures.read_table(path)
    assert back.equals(table)
    rows = structures.from_table(back)
    np.testing.assert_array_equal(rows[1].positions_A, structures.from_table(table)[1].positions_A)
    assert rows[0].dipole_eA.shape == (3,) and rows[0].forces_eVA.shape == (6, 3)


def test_structure_id_is_stable_and_sensitive():
    a, b = _labelled(), _labelled()
    assert a.structure_id == b.structure_id
    assert _labelled(shift=1e-4).structure_id != a.structure_id
    # rounding to 1e-6 Å: float noise below that does not change the id
    assert _labelled(shift=1e-9).structure_id == a.structure_id
    heavier = Structure.from_atoms(molecule("CH3OH"), molecule="m", source="user", charge_e=1,
                                   multiplicity=2)
    assert heavier.structure_id != Structure.from_atoms(molecule("CH3OH"), molecule="m",
                                                        source="user").structure_id


def test_atoms_round_trip_carries_labels():
    s = _labelled()
    atoms = s.to_atoms()
    assert atoms.get_potential_energy() == pytest.approx(-123.4)
    np.testing.assert_allclose(atoms.get_forces(), s.forces_eVA)
    np.testing.assert_allclose(atoms.calc.results["dipole"], s.dipole_eA)
    assert atoms.info["structure_id"] == s.structure_id


def test_extxyz_round_trip_with_mace_keys(tmp_path):
    """The training files mace-torch reads: labels under REF_* keys, read back bit for bit
    (by our reader and by ASE's, as mace-torch reads them)."""
    from ase.io import read

    from palirs_data import xyz

    table = _table()
    path = tmp_path / "train.extxyz"
    assert xyz.write_structures(table, path, keys=xyz.MACE_KEYS) == 3
    text = path.read_text()
    assert "REF_energy" in text and "REF_forces" in text and "REF_dipole" in text
    assert "energy=" not in text.replace("REF_energy=", "")
    back = xyz.read_structures_file(path)
    assert back.column("structure_id").to_pylist() == table.column("structure_id").to_pylist()
    a, b = structures.from_table(back), structures.from_table(table)
    for x, y, atoms in zip(a, b, read(path, index=":")):
        assert x.label_status == "ok" and x.energy_eV == y.energy_eV
        assert atoms.info["REF_energy"] == y.energy_eV and atoms.info["config_type"] == y.molecule
        np.testing.assert_array_equal(atoms.arrays["REF_forces"], y.forces_eVA)
        np.testing.assert_array_equal(x.forces_eVA, y.forces_eVA)
        np.testing.assert_array_equal(x.dipole_eA, y.dipole_eA)


def _broken(tmp_path, table: pa.Table) -> str:
    path = tmp_path / "broken.parquet"
    pq.write_table(table, path)
    with pytest.raises(PalirsInputError) as err:
        structures.read_table(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_column_is_named(tmp_path):
    table = _table().drop_columns(["energy_eV"])
    assert "missing column 'energy_eV'" in _broken(tmp_path, table)


def test_mistyped_column_is_named(tmp_path):
    table = _table()
    i = table.schema.get_field_index("iteration")
    table = table.set_column(i, "iteration", pa.array(["0", "1", "2"]))
    assert "column 'iteration' has type string" in _broken(tmp_path, table)


def test_extra_column_is_named(tmp_path):
    table = _table().append_column("pred_energy_eV", pa.array([1.0, 2.0, 3.0]))
    assert "unexpected column 'pred_energy_eV'" in _broken(tmp_path, table)


def _replace(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, STRUCTURE_SCHEMA.field(name),
                            pa.array(values, type=STRUCTURE_SCHEMA.field(name).type))


def test_nan_positions_refused(tmp_path):
    table = _table()
    pos = table.column("positions_A").to_pylist()
    pos[1][0][0] = float("nan")
    assert "NaN" in _broken(tmp_path, _replace(table, "positions_A", pos))


def test_hand_edited_positions_break_the_id(tmp_path):
    table = _table()
    pos = table.column("positions_A").to_pylist()
    pos[2][0][0] += 0.5
    assert "structure_id does not match" in _broken(tmp_path, _replace(table, "positions_A", pos))


def test_duplicates_and_bad_status_refused(tmp_path):
    table = _table()
    dup = pa.concat_tables([table, table.slice(0, 1)])
    assert "duplicate structure_id" in _broken(tmp_path, dup)
    status = _replace(table, "label_status", ["ok", "done", "ok"])
    assert "label_status 'done'" in _broken(tmp_path, status)
    energies = _replace(table, "energy_eV", [1.0, None, 2.0])
    assert "label" in _broken(tmp_path, energies)


def test_forces_of_wrong_shape_refused(tmp_path):
    table = _table()
    forces = table.column("forces_eVA").to_pylist()
    forces[0] = forces[0][:-1]
    assert "forces_eVA" in _broken(tmp_path, _replace(table, "forces_eVA", forces))


def test_not_parquet_and_missing_file(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(PalirsInputError, match="not a readable Parquet file"):
        structures.read_table(junk)
    with pytest.raises(PalirsInputError, match="no such file"):
        structures.read_table(tmp_path / "absent.parquet")


def test_other_table_kind_refused(tmp_path):
    from palirs_data.harmonic import FREQUENCY_SCHEMA

    path = tmp_path / "freq.parquet"
    pq.write_table(FREQUENCY_SCHEMA.empty_table(), path)
    with pytest.raises(PalirsInputError, match="palirs.table is 'frequencies'"):
        structures.read_table(path)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    bad = _table().drop_columns(["dipole_eA"])
    with pytest.raises(PalirsInputError):
        structures.write_table(bad, path)
    assert list(tmp_path.iterdir()) == []
