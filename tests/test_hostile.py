"""Hostile input, property-based (hypothesis): every reader of user input ends in a valid
result or in one line of :class:`PalirsInputError` naming the problem, never another exception
and never a partial output.

Readers: XYZ/extxyz files, SMILES, JCAMP-DX files, ``params.yaml`` values, Parquet structure
and spectrum tables; and molecule names, which become file and group names. The number of
examples is bounded (``settings`` below) so CI stays fast; ``derandomize`` makes a run
reproducible. With ``PALIRS_HOSTILE_REPORT=path`` the outcome counts per class go to a JSON file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palirs_data.errors import PalirsInputError

EXAMPLES = int(os.environ.get("PALIRS_HOSTILE_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])
OUTCOMES: dict[str, Counter] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("PALIRS_HOSTILE_REPORT")
    if path:
        previous = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        previous.update({k: dict(v) for k, v in OUTCOMES.items()})
        Path(path).write_text(json.dumps(previous, indent=2, sort_keys=True))


def _outcome(kind: str, fn, *, names: str | None = None):
    """Run ``fn``: a result, or a one-line PalirsInputError (naming ``names`` if given);
    anything else fails the test. Counts the outcome."""
    counter = OUTCOMES.setdefault(kind, Counter())
    try:
        result = fn()
    except PalirsInputError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        assert "Traceback" not in message
        if names is not None:
            assert names in message, (names, message)
        counter["error"] += 1
        return None
    counter["ok"] += 1
    return result


# --- XYZ / extxyz ---------------------------------------------------------------------------

SYMBOLS = st.sampled_from(["H", "C", "N", "O", "Cl", "X", "Xx", "h", "", "1", "Uuo", "Og"])
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "abc", "", "0x10", "1,5"]),
    st.floats(-5, 5).map(lambda x: f"{x:.6f}"))
COMMENT = st.one_of(
    st.just(""), st.text(max_size=40),
    st.sampled_from(['Properties=species:S:1:pos:R:3 energy=nan',
                     'REF_energy=1e400 REF_dipole="0 0 inf"', 'molecule=../../etc/passwd',
                     'Lattice="1 0 0 0 1 0 0 0 1" pbc="T T T"', 'molecule="a/b"',
                     'Properties=species:S:1:pos:R:3:forces:R:3']))


@st.composite
def xyz_text(draw):
    frames = []
    for _ in range(draw(st.integers(0, 3))):
        atoms = draw(st.lists(st.tuples(SYMBOLS, NUMBERS, NUMBERS, NUMBERS), max_size=5))
        count = draw(st.one_of(st.just(str(len(atoms))),
                               st.sampled_from(["-1", "0", "999999999", "two", ""]),
                               st.integers(0, 8).map(str)))
        lines = [count, draw(COMMENT)] + [" ".join(a) for a in atoms]
        frames.append("\n".join(lines))
    return "\n".join(frames) + draw(st.sampled_from(["", "\n", "\n\n", "garbage"]))


@SETTINGS
@given(text=xyz_text())
def test_xyz_files(text):
    from palirs_data.structures import validate_table
    from palirs_data.xyz import read_structures_file

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input.xyz"
        path.write_text(text, encoding="utf-8")
        table = _outcome("xyz", lambda: read_structures_file(path), names=str(path))
        if table is not None:
            validate_table(table, where="x")
            assert table.num_rows >= 1
            for row in table.column("positions_A").to_pylist():
                assert all(math.isfinite(v) for v in np.ravel(row))


# --- SMILES ---------------------------------------------------------------------------------

SMILES = st.one_of(
    st.text(alphabet="CNOcno()[]=#+-123456789@/\\.%H", max_size=16),
    st.text(max_size=12),
    st.sampled_from(["", " ", "C" * 200, "[Na+].[Cl-]", "c1ccccc1", "C1CC", "[C@@H]",
                     "[2H]O", "[U]", "*", "C.C", "[Xe]", "O=O", "[CH3]"]))


@settings(SETTINGS, max_examples=max(20, EXAMPLES // 2))
@given(smiles=SMILES, charge=st.integers(-2, 2))
def test_smiles(smiles, charge):
    from palirs_data.molecules import Molecule, build_atoms

    atoms = _outcome("smiles", lambda: build_atoms(Molecule("x", smiles=smiles,
                                                            charge_e=charge)))
    if atoms is not None:
        assert len(atoms) >= 1 and np.isfinite(atoms.positions).all()


# --- JCAMP-DX -------------------------------------------------------------------------------

@st.composite
def jcamp_text(draw):
    n = draw(st.integers(0, 40))
    x0 = draw(st.sampled_from([400.0, 4000.0, 2.5, 0.0, -10.0]))
    step = draw(st.sampled_from([10.0, -10.0, 0.1, 0.0]))
    ys = draw(st.lists(st.one_of(st.floats(-1, 120), st.sampled_from([float("nan"), 1e300])),
                       min_size=n, max_size=n))
    header = {"TITLE": "hostile", "JCAMP-DX": "4.24",
              "DATA TYPE": draw(st.sampled_from(["INFRARED SPECTRUM", "MASS SPECTRUM", "",
                                                  "infrared spectrum"])),
              "XUNITS": draw(st.sampled_from(["1/CM", "MICROMETERS", "NANOMETERS", "", "cm-1"])),
              "YUNITS": draw(st.sampled_from(["TRANSMITTANCE", "ABSORBANCE", "KUBELKA-MUNK",
                                              ""])),
              "XFACTOR": draw(st.sampled_from(["1.0", "0", "abc"])), "YFACTOR": "1.0",
              "FIRSTX": str(x0), "LASTX": str(x0 + step * max(n - 1, 0)), "NPOINTS": str(n),
              "DELTAX": str(step)}
    for key in draw(st.lists(st.sampled_from(sorted(header)), max_size=3)):
        header.pop(key, None)  # missing keys
    lines = [f"##{k}={v}" for k, v in header.items()] + ["##XYDATA=(X++(Y..Y))"]
    lines += [f"{x0 + step * i:.4f} {y!r}" for i, y in enumerate(ys)]
    if draw(st.booleans()):
        lines.append("##END=")
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=jcamp_text())
def test_jcamp_files(text):
    from palirs_data.experiment import read_jcamp

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input.jdx"
        path.write_text(text, encoding="utf-8")
        spectrum = _outcome("jcamp", lambda: read_jcamp(path), names=str(path))
        if spectrum is not None:
            assert np.all(np.diff(spectrum.wavenumber_cm1) >= 0)
            assert np.isfinite(spectrum.wavenumber_cm1).all()
            assert np.isfinite(spectrum.intensity).all()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(range(256))


@SETTINGS
@given(data=st.one_of(st.just(b""), st.sampled_from([b"\n\n", b"   ", PNG, b"\x00" * 64]),
                      st.binary(max_size=200),
                      st.binary(max_size=100).map(lambda b: b"##TITLE=x\n" + b)))
def test_empty_and_binary_jcamp_files(data):
    """Empty files, images and random bytes given as JCAMP-DX: a one-line error naming the
    file and what it is not, never the reader's own message about a missing DATA TYPE."""
    from palirs_data.experiment import read_jcamp

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input.jdx"
        path.write_bytes(data)
        _outcome("jcamp_empty_binary", lambda: read_jcamp(path), names=str(path))
        if not data.strip():
            with pytest.raises(PalirsInputError, match="empty file, not a JCAMP-DX spectrum"):
                read_jcamp(path)
        elif not data.lstrip().startswith(b"##") or b"\0" in data[:4096]:
            with pytest.raises(PalirsInputError, match="not a JCAMP-DX text file"):
                read_jcamp(path)


# --- params.yaml ----------------------------------------------------------------------------

VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
SECTIONS = st.sampled_from(["molecules", "labeler", "sample", "label", "compute", "committee",
                            "dipole", "test_set", "evaluate", "active_learning", "ir",
                            "reference_md", "experiment", "compare", "unknown"])


@st.composite
def params_text(draw):
    from palirs_data.config import Params

    base = Params().model_dump(mode="json")
    for _ in range(draw(st.integers(1, 3))):
        section = draw(SECTIONS)
        if section not in base or not isinstance(base[section], dict) or draw(st.booleans()):
            base[section] = draw(VALUES)
            continue
        keys = sorted(base[section]) + ["not_a_key"]
        base[section][draw(st.sampled_from(keys))] = draw(VALUES)
    text = yaml.safe_dump(base, sort_keys=False)
    return draw(st.sampled_from([text, text[: len(text) // 2], text + "\n: :\n", "", "[1, 2",
                                 "- a\n- b\n"])) if draw(st.integers(0, 9)) == 0 else text


@SETTINGS
@given(text=params_text())
def test_params_yaml(text):
    from palirs_data.config import Params, load_params

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.yaml"
        path.write_text(text, encoding="utf-8")
        params = _outcome("params", lambda: load_params(path), names=str(path))
        if params is not None:
            assert isinstance(params, Params)


# --- Parquet tables -------------------------------------------------------------------------

def _valid_structure_table() -> pa.Table:
    from ase.build import molecule

    from palirs_data.structures import Structure, to_table

    rows = []
    for k in range(3):
        atoms = molecule("H2O")
        atoms.positions += 0.01 * k
        s = Structure.from_atoms(atoms, molecule="water", source="user")
        s.label_status, s.label_method, s.energy_eV = "ok", "xtb", -5.0 - k
        s.forces_eVA, s.dipole_eA = np.zeros((3, 3)), np.zeros(3)
        rows.append(s)
    return to_table(rows)


BAD_FLOATS = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 0.0])


@st.composite
def mutated_table(draw):
    table = _valid_structure_table()
    action = draw(st.sampled_from(["drop", "extra", "float", "positions", "numbers", "empty",
                                   "status", "retype", "duplicate", "molecule", "none"]))
    names = table.column_names
    if action == "drop":
        table = table.drop([draw(st.sampled_from(names))])
    elif action == "extra":
        table = table.append_column("surprise", pa.array([1, 2, 3]))
    elif action == "float":
        table = table.set_column(names.index("energy_eV"), "energy_eV",
                                 pa.array([draw(BAD_FLOATS)] * 3, pa.float64()))
    elif action == "positions":
        value = draw(BAD_FLOATS)
        rows = table.column("positions_A").to_pylist()
        row = rows[draw(st.integers(0, 2))]
        if isinstance(row[0], list):
            row[0][draw(st.integers(0, 2))] = value
        else:
            row[0] = value
        table = table.set_column(names.index("positions_A"), "positions_A",
                                 pa.array(rows, table.schema.field("positions_A").type))
    elif action == "numbers":
        rows = table.column("numbers").to_pylist()
        rows[0][0] = draw(st.sampled_from([0, -1, 119, 30000]))
        table = table.set_column(names.index("numbers"), "numbers",
                                 pa.array(rows, table.schema.field("numbers").type))
    elif action == "empty":
        table = table.slice(0, 0)
    elif action == "status":
        table = table.set_column(names.index("label_status"), "label_status",
                                 pa.array([draw(st.text(max_size=5))] * 3))
    elif action == "retype":
        column = draw(st.sampled_from(names))
        table = table.set_column(names.index(column), column, pa.array(["x", "y", "z"]))
    elif action == "duplicate":
        table = pa.concat_tables([table, table.slice(0, 1)])
    elif action == "molecule":
        table = table.set_column(names.index("molecule"), "molecule",
                                 pa.array([draw(st.sampled_from(["../x", "", "a/b", "\x00",
                                                                 "ok name"]))] * 3))
    return table


@SETTINGS
@given(table=mutated_table(), garbage=st.booleans())
def test_structure_tables(table, garbage):
    from palirs_data.structures import read_table, validate_table

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "table.parquet"
        if garbage:
            path.write_bytes(b"PAR1 not really")
        else:
            pq.write_table(table, path)
        result = _outcome("parquet", lambda: read_table(path), names=str(path))
        if result is not None:
            validate_table(result, where="x")


@SETTINGS
@given(value=BAD_FLOATS, column=st.sampled_from(["wavenumber_cm1", "intensity", "std",
                                                  "temperature_K"]),
       drop=st.booleans())
def test_spectrum_tables(value, column, drop):
    from palirs_data.tables import SPECTRUM_SCHEMA, read_spectra

    data = {"molecule": ["m"] * 3, "temperature_K": [300.0] * 3,
            "wavenumber_cm1": [0.0, 1.0, 2.0], "intensity": [1.0, 2.0, 3.0],
            "std": [0.0] * 3, "n_runs": [3] * 3}
    data[column] = [value] * 3
    table = pa.Table.from_pydict(data, schema=SPECTRUM_SCHEMA)
    if drop:
        table = table.drop([column])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spectra.parquet"
        pq.write_table(table, path)
        _outcome("spectra", lambda: read_spectra(path), names=str(path))


# --- names that become paths ----------------------------------------------------------------

@SETTINGS
@given(name=st.one_of(st.text(max_size=70), st.sampled_from(
    ["..", "../../etc", "a/../../b", "/abs", "~root", "C:\\x", "con", ".", "\x00", " x"])))
def test_molecule_names_never_leave_their_directory(name):
    from palirs_data.names import file_stem
    from palirs_data.molecules import check_name
    from palirs_data.trajectory import _check_key, trajectory_key

    accepted = _outcome("names", lambda: check_name(name, where="molecules.names"))
    stem = file_stem(name)  # any name: a plain file name inside its directory
    assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
    root = Path("/data/experiment")
    assert (root / f"{stem}.jdx").resolve().parent == root
    if accepted is not None:  # a name the catalogue accepts: a safe trajectory group
        key = _check_key(trajectory_key(name, 300.0, 0))
        assert key.split("/")[0] not in {".", ".."} and len(key.split("/")) == 3


# --- whole runs: names that collide, temperatures twice, keys that name nothing -------------

NAMES = st.sampled_from(["my mol", "my_mol", "My Mol", "my-mol", "mymol", "ethanol", "etoh",
                         "methanol", "methanl", "water"])
SMILES = st.sampled_from(["CCO", "OCC", "COC", "CO", "O", "CS", "C[Si](C)C"])


@st.composite
def run_params(draw):
    """params.yaml that each section accepts alone, with what only the whole run can refuse:
    custom molecules whose names normalise alike or repeat, one SMILES twice, elements the
    committee lacks, a temperature twice, experiment keys that name no molecule of the run."""
    custom = [{"name": draw(NAMES), "smiles": draw(SMILES)}
              for _ in range(draw(st.integers(0, 3)))]
    custom = [c for c in custom if c["name"] not in {"ethanol", "methanol", "water"}]
    names = draw(st.lists(st.sampled_from([c["name"] for c in custom] or ["methanol"])
                          | NAMES, min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:  # two custom molecules whose names may normalise alike
        pair = draw(st.lists(st.sampled_from(["my mol", "my_mol", "My Mol", "my-mol"]),
                             min_size=2, max_size=2, unique=True))
        custom = [{"name": n, "smiles": draw(SMILES)} for n in pair]
        names = pair
    temperatures = draw(st.lists(st.sampled_from([300.0, 500.0, 700.0]), min_size=1,
                                 max_size=3))
    files = {draw(NAMES): "spectrum.jdx" for _ in range(draw(st.integers(0, 1)))}
    return {"molecules": {"names": names, "custom": custom},
            "active_learning": {"acquire": {"temperatures_K": temperatures}},
            "experiment": {"files": files}}


REFUSALS = {"share the trajectory group": "colliding_names", "share the file name":
            "colliding_names", "two entries of molecules.custom": "custom_name_twice",
            "are the same molecule": "same_smiles", "not in committee.elements": "element",
            "experiment.files.": "typo_key", "listed twice": "temperature_twice",
            "unknown molecule": "unknown_name", "cannot have multiplicity": "spin"}


@SETTINGS
@given(params=run_params())
def test_run_level_params(params):
    """Each run either loads, with molecules that share no trajectory, file or structure, no
    temperature twice and every experiment key one of its molecules, or is refused in one
    line naming the file and one of the known reasons (counted per reason)."""
    from palirs_data.config import load_params, run_molecules
    from palirs_data.names import file_stem
    from palirs_data.molecules import canonical_smiles, check_spin, elements
    from palirs_data.trajectory import trajectory_key

    counter = OUTCOMES.setdefault("run_params", Counter())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.yaml"
        path.write_text(yaml.safe_dump(params), encoding="utf-8")
        try:
            loaded = load_params(path)
        except PalirsInputError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(path)), message
            reasons = [r for text, r in REFUSALS.items() if text in message]
            assert reasons, message
            counter[f"error: {reasons[0]}"] += 1
            return
    counter["ok"] += 1
    custom = [c["name"] for c in params["molecules"]["custom"]]
    assert len(set(custom)) == len(custom)
    temperatures = params["active_learning"]["acquire"]["temperatures_K"]
    assert len(set(temperatures)) == len(temperatures)
    mols = run_molecules(loaded)
    for key in (lambda m: trajectory_key(m.name, 300, 0), lambda m: file_stem(m.name),
                canonical_smiles):
        values = [key(m) for m in mols]
        assert len(set(values)) == len(values), values
    assert all(elements(m) <= set(loaded.committee.elements) for m in mols)
    for m in mols:  # every molecule that loads has a state (electrons pair up)
        check_spin(m)
    assert set(loaded.experiment.files) <= {m.name for m in mols}
