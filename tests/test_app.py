"""The user's side: the ``palirs`` command, export and import in common formats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from palirs_data import exchange, structures, xyz
from palirs_data.app import app
from palirs_data.errors import PalirsInputError
from palirs_data.tables import SPECTRUM_SCHEMA, write_spectra

runner = CliRunner()

SUBCOMMANDS = [[], ["run"], ["status"], ["show"], ["spectrum"], ["import"], ["export"],
               ["export", "structures"], ["export", "spectra"], ["export", "trajectory"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "palirs")
def test_every_subcommand_has_help(words):
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("module", ["palirs_data.campaign", "palirs_data.spectrum"])
def test_help_of_the_library_entry_points(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower() and "error" not in proc.stdout.lower()


def _labelled_table(water, n=3):
    from palirs_data.structures import Structure

    rng = np.random.default_rng(7)
    rows = []
    for k in range(n):
        atoms = water.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        s = Structure.from_atoms(atoms, molecule="water", source="normal_modes")
        s.energy_eV = float(rng.normal(-140.0, 1.0))
        s.forces_eVA = rng.normal(size=(3, 3))
        s.dipole_eA = rng.normal(size=3)
        s.label_status, s.label_method = "ok", "PBE/def2-SVP"
        s.__post_init__()
        rows.append(s)
    return structures.to_table(rows)


def test_structures_export_and_import_keep_labels_bit_for_bit(water, tmp_path):
    """extxyz out (ASE's conventions: ase.io.read gives the energy, forces and dipole back as
    calculator results) and in again: every label and position bit for bit, the level of
    theory kept, and so the same structure ids."""
    from ase.io import read

    table = _labelled_table(water)
    path = tmp_path / "out.extxyz"
    assert xyz.write_structures(table, path) == 3
    first = read(path, index=0)
    assert first.get_potential_energy() == table.column("energy_eV")[0].as_py()
    assert first.info["label_method"] == "PBE/def2-SVP"
    back = xyz.import_structures(path)
    for name in ("energy_eV", "forces_eVA", "dipole_eA", "positions_A", "structure_id"):
        assert back.column(name).to_pylist() == table.column(name).to_pylist(), name
    assert set(back.column("label_method").to_pylist()) == {"PBE/def2-SVP"}
    assert set(back.column("source").to_pylist()) == {"user"}


def test_import_refuses_a_frame_without_a_label_naming_it(water, tmp_path):
    path = tmp_path / "set.extxyz"
    xyz.write_structures(_labelled_table(water), path)
    text = path.read_text().splitlines()
    # frame 1 (lines 5-9): its dipole removed
    text[6] = text[6].split(" dipole=")[0] + ' pbc="F F F"' \
        if " dipole=" in text[6] else text[6]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(PalirsInputError) as info:
        xyz.import_structures(path)
    message = str(info.value)
    assert message.startswith(f"{path}: frame 1 has no dipole") and "\n" not in message
    # a set with no level of theory at all is refused too (the command line names it)
    bare = tmp_path / "bare.extxyz"
    bare.write_text(path.read_text().replace('label_method="PBE/def2-SVP"', ""))
    result = runner.invoke(app, ["import", str(bare), "--out", str(tmp_path / "t.parquet")])
    assert result.exit_code == 1 and "frame 0: no level of theory" in result.output


def test_initial_data_must_share_the_label_source(water, tmp_path):
    from palirs_data.config import InitialData

    path = tmp_path / "set.extxyz"
    xyz.write_structures(_labelled_table(water), path)
    entry = InitialData(file=str(path), level_of_theory="PBE/def2-SVP")
    assert xyz.initial_data([entry], "PBE/def2-SVP").num_rows == 3
    with pytest.raises(PalirsInputError, match="never mixes levels of theory"):
        xyz.initial_data([entry], "GFN2-xTB")


def test_spectra_as_jcamp_dx_read_back_by_jcamp(tmp_path):
    import jcamp
    import pyarrow as pa

    grid = np.arange(400.0, 4000.5, 0.5)
    intensity = 3e-4 * (np.exp(-0.5 * ((grid - 1050) / 12) ** 2)
                        + 0.4 * np.exp(-0.5 * ((grid - 2950) / 20) ** 2))
    rows = {"molecule": ["methanol"] * len(grid), "temperature_K": [300.0] * len(grid),
            "wavenumber_cm1": grid, "intensity": intensity, "std": 0.1 * intensity,
            "n_runs": [12] * len(grid)}
    table = pa.Table.from_pydict(rows, schema=SPECTRUM_SCHEMA)
    write_spectra(table, tmp_path / "s.parquet")
    result = runner.invoke(app, ["export", "spectra", str(tmp_path / "s.parquet"),
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    spectrum = jcamp.readfile(str(tmp_path / "out/methanol_300K.jdx"))
    np.testing.assert_allclose(spectrum["x"], grid, atol=1e-6)
    np.testing.assert_allclose(spectrum["y"], intensity, rtol=0, atol=1e-8 * intensity.max())
    assert spectrum["xunits"].upper() == "1/CM"
    csv = np.loadtxt(tmp_path / "out/methanol_300K.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(csv[:, 1], intensity, rtol=1e-8)


def test_exports_and_import_refuse_an_output_they_cannot_or_must_not_write(water, tmp_path):
    """One line and exit 1, no traceback: a directory where a file is written, a file where a
    directory is, and the command's own input (an export over its source table)."""
    table = tmp_path / "t.parquet"
    structures.write_table(_labelled_table(water), table)
    (tmp_path / "d").mkdir()
    (tmp_path / "f.csv").write_text("x")
    before = table.read_bytes()
    cases = {
        ("export", "structures", str(table), str(tmp_path / "d")): "a directory; give the file",
        ("export", "structures", str(table), str(table)): "the input too",
        ("export", "spectra", str(table), str(tmp_path / "f.csv")): "a file, not a directory",
        ("import", str(tmp_path / "d"), "--out", str(tmp_path / "d")): "a directory; give",
    }
    for words, message in cases.items():
        result = runner.invoke(app, list(words))
        assert result.exit_code == 1, (words, result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (words, last)
        assert "Traceback" not in result.output
    assert table.read_bytes() == before
    assert list((tmp_path / "d").iterdir()) == []


def test_trajectory_export_keeps_predictions_apart_from_labels(tmp_path):
    from ase.io import read

    from palirs_data.trajectory import TrajectoryStore

    store = TrajectoryStore(tmp_path / "t.zarr")
    rng = np.random.default_rng(1)
    for key, names in (("w/300K/0", ["model_energy_eV", "model_dipole_eA"]),
                       ("w/300K/1", ["energy_eV", "dipole_eA"])):
        traj = store.create(key, numbers=[8, 1, 1], molecule="w", timestep_fs=0.5,
                            temperature_K=300.0,
                            arrays=["positions_A", "velocities_A_fs", "time_fs", *names])
        traj.append(positions_A=rng.normal(size=(4, 3, 3)),
                    velocities_A_fs=rng.normal(size=(4, 3, 3)) * 0.01,
                    time_fs=np.arange(4.0), **{names[0]: rng.normal(size=4),
                                                names[1]: rng.normal(size=(4, 3))})
    assert exchange.export_trajectory(store, "w/300K/0", tmp_path / "ml.extxyz") == 4
    ml = read(tmp_path / "ml.extxyz", index=":")
    assert ml[0].calc is None and "model_energy_eV" in ml[0].info
    np.testing.assert_allclose(ml[2].get_velocities() * 0.09822694788464063,
                               store["w/300K/0"].read("velocities_A_fs")[2], rtol=1e-6)
    assert exchange.export_trajectory(store, "w/300K/1", tmp_path / "ref.traj", every=2) == 2
    ref = read(tmp_path / "ref.traj", index=":")
    assert ref[1].get_potential_energy() == store["w/300K/1"].read("energy_eV")[2]
    with pytest.raises(PalirsInputError, match="no trajectory 'w/500K/0'"):
        exchange.export_trajectory(store, "w/500K/0", tmp_path / "x.extxyz")


def test_show_fits_a_terminal(tmp_path):
    """`palirs show` on the repository's own metrics: every line within 100 columns."""
    from pathlib import Path

    metrics = Path(__file__).resolve().parents[1] / "metrics"
    result = runner.invoke(app, ["show", "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    assert "freq MAE" in result.output and "PCC" in result.output
    assert "MD kinetic temperature" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 100
    missing = runner.invoke(app, ["show", "--metrics", str(tmp_path)])
    assert missing.exit_code == 1 and "error:" in missing.output


def test_show_puts_ml_and_reference_temperatures_side_by_side(tmp_path):
    """Each molecule and target's pooled kinetic temperature, ML and reference MD on one row,
    the transfer molecules' too; a side without the set shows a dash; no file, no block."""
    from palirs_data.app import temperature_text

    assert temperature_text(tmp_path) == ""

    def pooled(**sets):
        return json.dumps({"kinetic_temperature": {"pooled": {
            k: {"target_K": 300.0, "mean_K": t, "stderr_K": se, "runs": 12,
                "deviation_percent": round(100 * (t / 300.0 - 1), 1)}
            for k, (t, se) in sets.items()}}})

    (tmp_path / "ir.json").write_text(pooled(**{"water/300K": (291.0, 6.0),
                                                "ammonia/300K": (306.0, 5.0)}))
    (tmp_path / "reference_md.json").write_text(pooled(**{"water/300K": (303.0, 7.0)}))
    (tmp_path / "transfer_ir.json").write_text(pooled(**{"acetone/300K": (297.0, None)}))
    text = temperature_text(tmp_path).splitlines()
    title = text.index("transfer molecules (never trained on)")
    assert "acetone/300K" in text[title + 1]  # reported apart, after the training molecules
    rows = {line.split()[0]: line for line in text[2:] if "/" in line}
    assert set(rows) == {"water/300K", "ammonia/300K", "acetone/300K"}
    assert "291.0 ± 6.0 K (-3.0 %, 12 runs)" in rows["water/300K"]
    assert "303.0 ± 7.0 K (+1.0 %, 12 runs)" in rows["water/300K"]
    assert rows["ammonia/300K"].rstrip().endswith("-")
    assert "297.0 K (-1.0 %" in rows["acetone/300K"]


def test_run_refuses_a_detached_head_naming_the_way_back(tmp_path):
    from palirs_data.app import check_branch

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    check_branch(tmp_path)  # not a repository: nothing to check
    git("init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text("molecules: {}\n")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    check_branch(tmp_path)  # on a branch
    git("checkout", "-q", "--detach", "HEAD")
    with pytest.raises(PalirsInputError, match="detached.*git checkout"):
        check_branch(tmp_path)
    check_branch(tmp_path, detached_ok=True)
    result = runner.invoke(app, ["run", "--help"])
    assert "--detached-ok" in result.output
