"""Several molecules at once: the per-molecule stop rule, per-molecule campaign figures, the
transfer set kept out of training, and the one-molecule spectrum command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml

from palirs_data import molecules, structures
from palirs_data.errors import PalirsInputError

from conftest import REPO, write_evaluation


@pytest.fixture(scope="module")
def two_minima(methanol_data):
    """Methanol's xTB minimum and water's RDKit geometry (MD needs no minimum of the label
    source; the tiny committee knows H, C, N, O)."""
    water = structures.Structure.from_atoms(
        molecules.build_atoms(molecules.CATALOGUE["water"]), molecule="water",
        source="equilibrium")
    return structures.concat_tables([methanol_data["result"].equilibrium,
                                     structures.to_table([water])])


def _previous(tmp_path, methanol_data, tiny_committee, per_molecule: dict[str, float]):
    previous = tmp_path / "iter1"
    (previous / "committee").mkdir(parents=True)
    for k, path in enumerate(tiny_committee["paths"]):
        shutil.copyfile(path, previous / "committee" / f"model_{k}.model")
    structures.write_table(methanol_data["labelled"], previous / "train.parquet")
    overall = float(np.mean(list(per_molecule.values())))
    write_evaluation(previous, overall, per_molecule)
    return previous


def _acquire(previous, minima, tmp_path, min_iterations=0):
    from palirs_data.acquisition import acquire
    from palirs_data.config import (AcquireConfig, ActiveLearningConfig, LabelConfig,
                                    LabelerConfig)

    config = ActiveLearningConfig(stop_mae_cm1=5.0, min_iterations=min_iterations,
                                  acquire=AcquireConfig(
        temperatures_K=[300.0], duration_fs=10.0, thermalise_fs=5.0, write_every=2,
        per_temperature=2, min_spacing_fs=1.0, max_force_rel_dev=1e9, replicas=1))
    return acquire(iteration=2, previous_dir=previous, equilibrium=minima, config=config,
                   labeler_config=LabelerConfig(),
                   label_config=LabelConfig(checkpoint_dir=tmp_path / "ckpt"),
                   work_dir=tmp_path / "work")


def test_a_converged_molecule_stops_acquiring_while_the_other_goes_on(
        methanol_data, tiny_committee, two_minima, tmp_path):
    from palirs_data.trajectory import TrajectoryStore

    previous = _previous(tmp_path, methanol_data, tiny_committee,
                         {"methanol": 3.0, "water": 12.0})
    result = _acquire(previous, two_minima, tmp_path)
    m = result.metrics
    assert not m["converged"]
    assert m["converged_molecules"] == ["methanol"] and m["acquiring_molecules"] == ["water"]
    assert m["previous_frequency_mae_per_molecule_cm1"] == {"methanol": 3.0, "water": 12.0}
    # only water ran MD, and only water frames were added (labelled by xTB)
    store = TrajectoryStore(result.store, mode="r")
    assert sorted(store.keys()) == ["water/300K/0"]
    assert {r["molecule"] for r in m["runs"]} == {"water"}
    assert m["added_per_molecule"] == {"water": 2}
    new = result.table.filter(pc.equal(result.table.column("source"), "active_learning"))
    assert set(new.column("molecule").to_pylist()) == {"water"}
    water = new.filter(pc.equal(new.column("molecule"), "water"))
    assert all(len(n) == 3 for n in water.column("numbers").to_pylist())  # never mixed
    assert m["labels_per_molecule"]["methanol"] == methanol_data["labelled"].num_rows


def test_the_campaign_converges_when_every_molecule_has(methanol_data, tiny_committee,
                                                        two_minima, tmp_path):
    # overall 4.5 < 5 would have stopped the old rule; water at 6.0 keeps acquiring
    previous = _previous(tmp_path, methanol_data, tiny_committee,
                         {"methanol": 3.0, "water": 6.0})
    assert not _acquire(previous, two_minima, tmp_path / "a").metrics["converged"]
    previous = _previous(tmp_path / "b", methanol_data, tiny_committee,
                         {"methanol": 3.0, "water": 4.9})
    result = _acquire(previous, two_minima, tmp_path / "b")
    assert result.metrics["converged"] and result.store is None
    assert result.table.equals(methanol_data["labelled"])
    # the same MAEs after iteration 1, with min_iterations 2: the rule cannot hold yet, both
    # molecules acquire
    result = _acquire(previous, two_minima, tmp_path / "c", min_iterations=2)
    assert not result.metrics["converged"] and result.metrics["converged_molecules"] == []
    assert result.metrics["added_per_molecule"] == {"methanol": 2, "water": 2}


def _row(iteration, maes, labels, overall=None):
    return {"iteration": iteration,
            "frequency_mae_cm1": (overall if overall is not None
                                  else float(np.mean(list(maes.values())))),
            "molecules": {n: {"frequency_mae_cm1": v, "frequency_member_mae_std_cm1": 0.5,
                              "labels": labels[n]} for n, v in maes.items()}}


def test_campaign_figures_per_molecule_and_their_mean(tmp_path):
    from palirs_data.campaign import _all_below, molecule_curve_csv, molecule_mean, molecule_summary
    from palirs_data.config import ActiveLearningConfig
    from palirs_data.figures import learning_curve_figure

    rows = [_row(0, {"water": 9.0, "methanol": 7.0}, {"water": 30, "methanol": 120}),
            _row(1, {"water": 4.0, "methanol": 6.0}, {"water": 45, "methanol": 135}),
            _row(2, {"water": 4.5, "methanol": 4.0}, {"water": 45, "methanol": 150})]
    rule = ActiveLearningConfig(stop_mae_cm1=5.0)
    summary = molecule_summary(rows, rule)
    assert summary["water"]["converged_at"] == 1 and summary["water"]["labels_at_stop"] == 45
    assert summary["methanol"]["converged_at"] == 2
    assert summary["methanol"]["labels_at_stop"] == 150
    assert [_all_below(r, rule) for r in rows] == [False, False, True]
    mean = molecule_mean(rows[-1])
    assert mean["frequency_mae_molecule_mean_cm1"] == pytest.approx(4.25)
    assert mean["frequency_mae_molecule_std_cm1"] == pytest.approx(np.std([4.5, 4.0], ddof=1),
                                                                   abs=1e-3)
    # the overall MAE alone (all modes pooled) would have stopped at iteration 1 (5.0 ≥ 5 no;
    # 4.9 yes): the rule is per molecule
    assert not _all_below(_row(1, {"water": 4.0, "methanol": 6.0}, {"water": 1, "methanol": 1},
                               overall=4.9), rule)
    lines = molecule_curve_csv(rows, rule).splitlines()
    assert lines[0].startswith("iteration,molecule,labels,frequency_mae_cm1")
    assert len(lines) == 1 + 6 and lines[3] == '1,"methanol",135,6.0000,0.5000,0'
    learning_curve_figure(rows, 5.0, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000


def test_the_stop_rule_waits_for_min_iterations():
    from palirs_data.campaign import _all_below, molecule_curve_csv, molecule_summary
    from palirs_data.config import ActiveLearningConfig

    # water is below the rule from iteration 0, methanol from iteration 2
    rows = [_row(0, {"water": 4.0, "methanol": 4.5}, {"water": 30, "methanol": 120}),
            _row(1, {"water": 4.0, "methanol": 6.0}, {"water": 45, "methanol": 135}),
            _row(2, {"water": 4.5, "methanol": 4.0}, {"water": 45, "methanol": 150})]
    method = ActiveLearningConfig(stop_mae_cm1=5.0)
    assert [_all_below(r, method) for r in rows] == [True, False, True]
    assert molecule_summary(rows, method)["water"]["converged_at"] == 0
    waits = ActiveLearningConfig(stop_mae_cm1=5.0, min_iterations=1)
    assert [_all_below(r, waits) for r in rows] == [False, False, True]
    summary = molecule_summary(rows, waits)
    assert summary["water"]["converged_at"] == 1 and summary["water"]["labels_at_stop"] == 45
    assert summary["methanol"]["converged_at"] == 2
    below = [line.rsplit(",", 1)[1] for line in molecule_curve_csv(rows, waits).splitlines()[1:]]
    assert below == ["0", "0", "0", "1", "1", "1"]  # sorted by name: methanol, water
    assert not waits.stop_rule_holds(0, 0.1) and waits.stop_rule_holds(1, 4.99)
    assert not waits.stop_rule_holds(5, 5.0)


def _params(**molecule_section):
    from palirs_data.config import Params

    return Params.model_validate({"molecules": molecule_section})


def test_the_transfer_set_is_never_in_the_campaign():
    from palirs_data.config import check_run, run_molecules

    p = _params(names=["methanol", "water"], transfer=["acetone", "benzene"])
    check_run(p)
    assert [m.name for m in run_molecules(p)] == ["methanol", "water"]
    assert [m.name for m in run_molecules(p, which="transfer")] == ["acetone", "benzene"]
    assert run_molecules(_params(names=["methanol"]), which="transfer") == []
    with pytest.raises(PalirsInputError, match="molecules.transfer: 'water' is also in"):
        check_run(_params(names=["methanol", "water"], transfer=["water"]))
    with pytest.raises(PalirsInputError, match="'acetone' and 'propanone' are the same"):
        check_run(_params(names=["methanol"], transfer=["acetone", "propanone"],
                          custom=[{"name": "propanone", "smiles": "CC(=O)C"}]))
    with pytest.raises(PalirsInputError, match="'my mol' and 'my_mol' share"):
        check_run(_params(names=["my mol"], transfer=["my_mol"],
                          custom=[{"name": "my mol", "smiles": "CCO"},
                                  {"name": "my_mol", "smiles": "CCCO"}]))
    with pytest.raises(PalirsInputError, match="molecules.transfer: 'thiophene' contains S"):
        check_run(_params(names=["methanol"], transfer=["thiophene"],
                          custom=[{"name": "thiophene", "smiles": "c1ccsc1"}]))
    with pytest.raises(PalirsInputError, match="molecules.transfer: unknown molecule 'acetne'"
                                               ".*did you mean 'acetone'"):
        check_run(_params(names=["methanol"], transfer=["acetne"]))


def test_transfer_stages_read_the_final_models_and_write_only_their_own_outputs():
    """The transfer-* stages take the final committee and dipole model as inputs and write
    under data/transfer and their own metrics: nothing of the training side (tables,
    models, trajectories of the campaign) is ever their output."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    transfer = {n: s for n, s in stages.items() if n.startswith("transfer-")}
    assert set(transfer) == {"transfer-sample", "transfer-ir", "transfer-reference-md",
                             "transfer-compare"}
    for name, stage in transfer.items():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        assert all(o.startswith("data/transfer/") for o in outs), (name, outs)
    ir_deps = transfer["transfer-ir"]["deps"]
    assert "data/models/committee" in ir_deps and "data/models/dipole.model" in ir_deps
    training_side = [n for n, s in stages.items() if not n.startswith("transfer-")
                     and any("data/transfer" in str(d) for d in s.get("deps", []))]
    assert training_side == []
    assert "molecules.transfer" in transfer["transfer-sample"]["params"]
    assert "molecules.transfer" not in stages["sample"]["params"]


def test_the_spectrum_command_refuses_an_element_the_committee_never_saw(tiny_committee,
                                                                         tmp_path):
    models = tmp_path / "committee"
    models.mkdir()
    for k, path in enumerate(tiny_committee["paths"]):
        shutil.copyfile(path, models / f"model_{k}.model")
    result = subprocess.run(
        [sys.executable, "-m", "palirs_data.spectrum", "--name", "methanethiol", "--smiles",
         "CS", "--models", str(models), "--dipole", str(tmp_path / "none.model"),
         "--params", str(REPO / "params.yaml"), "--out", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("error: spectrum: methanethiol: contains S, which the committee in "
                         f"{models} was not trained on (it knows H, C, N, O)")
    assert not (tmp_path / "out").exists()


def test_the_spectrum_command_replaces_only_its_own_output(tmp_path, monkeypatch):
    """--out is replaced as a whole: a new, empty or earlier output directory is taken; one
    holding other files, the working directory or an input is refused in one line."""
    from palirs_data.spectrum import OUTPUT_FILES, check_out

    monkeypatch.chdir(tmp_path)
    models = tmp_path / "data" / "models" / "committee"
    models.mkdir(parents=True)
    (models / "model_0.model").write_bytes(b"weights")
    earlier = tmp_path / "results" / "acetone"
    earlier.mkdir(parents=True)
    for name in (*OUTPUT_FILES, "spectrum.png"):
        (earlier / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    for fine in (tmp_path / "results" / "new", tmp_path / "empty", earlier):
        check_out(fine, {"--models": models})
    refused = {
        models: "holds model_0.model and is not an earlier output of palirs spectrum",
        tmp_path / "data": "holds the --models path (data/models/committee), which replacing",
        tmp_path / "data/models/committee": "is the --models path (data/models/committee)",
        Path("."): f"--out .: is the working directory ({tmp_path})",
        tmp_path.parent: f"holds the working directory ({tmp_path})",
        earlier / "spectrum.png": "a file, not a directory",
    }
    for out, message in refused.items():
        with pytest.raises(PalirsInputError, match=re.escape(message)):
            check_out(out, {"--models": Path("data/models/committee")})
    (earlier / "summary.json").unlink()  # half an output: not this command's
    with pytest.raises(PalirsInputError, match="no spectrum.parquet and summary.json"):
        check_out(earlier)


def test_the_spectrum_command_refuses_to_replace_the_models(tiny_committee, tmp_path):
    """A slip of --out onto the committee's directory is refused before any work, in one line,
    and the models stay."""
    models = tmp_path / "committee"
    models.mkdir()
    for k, path in enumerate(tiny_committee["paths"]):
        shutil.copyfile(path, models / f"model_{k}.model")
    before = sorted(p.name for p in models.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "palirs_data.spectrum", "--name", "water", "--models",
         str(models), "--dipole", str(tmp_path / "none.model"), "--params",
         str(REPO / "params.yaml"), "--out", str(models)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: spectrum: --out {models}: is the --models path ({models}): give a new "
        f"directory")
    assert sorted(p.name for p in models.iterdir()) == before


@pytest.mark.parametrize("option, value, message", [
    ("--trajectories", "0", "--trajectories: Input should be greater than or equal to 1"),
    ("--produce-fs", "-5", "--produce-fs: Input should be greater than 0")])
def test_the_spectrum_command_names_a_bad_override(tmp_path, option, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "palirs_data.spectrum", "--name", "water", "--params",
         str(REPO / "params.yaml"), "--out", str(tmp_path / "out"), option, value],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: spectrum: {message}"]


def test_the_spectrum_command_takes_a_radical_with_its_multiplicity():
    """The spin check applies to the command's molecule, and the command has the option the
    refusal asks for."""
    from palirs_data.spectrum import _molecule

    with pytest.raises(PalirsInputError, match="9 electrons .* give multiplicity 2"):
        molecules.build_atoms(_molecule("methyl", "[CH3]", None))
    methyl = _molecule("methyl", "[CH3]", None, multiplicity=2)
    assert len(molecules.build_atoms(methyl)) == 4
    cation = _molecule("methanol", None, None, charge=1, multiplicity=2)  # catalogue SMILES
    assert cation.smiles == "CO"
    with pytest.raises(PalirsInputError, match="SMILES has total charge 0, but charge_e is 1"):
        molecules.build_atoms(cation)


def test_the_spectrum_command_predicts_with_the_stages_code(tiny_committee, tiny_dipole_model,
                                                            tmp_path):
    """Water with the tiny methanol committee: the committee's minimum, two short runs
    through ml_ir, the spectrum table, the spread along the runs."""
    from palirs_data.config import IrConfig
    from palirs_data.tables import read_spectra
    from palirs_data.spectrum import committee_minimum, predict, write

    models = tmp_path / "committee"
    models.mkdir()
    for k, path in enumerate(tiny_committee["paths"]):
        shutil.copyfile(path, models / f"model_{k}.model")
    config = IrConfig(trajectories=2, thermalise_fs=20.0, produce_fs=400.0,
                      max_correlation_fs=100.0, dtype="float64")
    minimum = committee_minimum(molecules.CATALOGUE["water"], models)
    assert minimum.num_rows == 1 and minimum.column("molecule").to_pylist() == ["water"]
    result, store = predict(minimum, models, tiny_dipole_model["report"].model, config,
                            tmp_path / "work")
    write(result, store, tmp_path / "out", (500.0, 4000.0))
    spectra = read_spectra(tmp_path / "out" / "spectrum.parquet")
    assert set(spectra.column("molecule").to_pylist()) == {"water"}
    assert set(spectra.column("n_runs").to_pylist()) == {2}
    spread = result.metrics["committee_spread"]["water/300K"]
    assert 0 < spread["median_eVA"] <= spread["p95_eVA"] <= spread["max_eVA"]
    assert spread["frames"] == 2 * 800
    assert (tmp_path / "out" / "spectrum.png").exists()


def test_an_empty_transfer_set_runs_through_every_transfer_stage(tmp_path):
    """The default (molecules.transfer: []): each transfer stage writes its empty outputs in
    seconds, so the pipeline's graph is the same whether or not a transfer set is given."""
    from conftest import run_stage, write_params

    from palirs_data.tables import read_spectra

    params = write_params(tmp_path / "params.yaml")
    out = run_stage("sample", "--params", str(params), "--molecules", "transfer",
                    "--samples", "t/normal_modes.parquet",
                    "--equilibrium", "t/equilibrium.parquet",
                    "--frequencies", "t/frequencies.parquet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert structures.read_table(tmp_path / "t/equilibrium.parquet").num_rows == 0
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model_0.model").write_bytes(b"never loaded: no molecules")
    (tmp_path / "none.model").write_bytes(b"never loaded: no molecules")
    out = run_stage("ir", "--params", str(params), "--models", "models",
                    "--dipole", "none.model", "--equilibrium", "t/equilibrium.parquet",
                    "--spectra", "t/spectra.parquet", "--harmonic", "t/harmonic.parquet",
                    "--trajectories", "t/trajectories.zarr", "--metrics", "m/ir.json",
                    "--work-dir", "w/ir", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no molecules" in out.stdout
    out = run_stage("reference_md", "--params", str(params),
                    "--equilibrium", "t/equilibrium.parquet", "--spectra", "t/md.parquet",
                    "--trajectories", "t/md.zarr", "--metrics", "m/ref.json",
                    "--work-dir", "w/ref", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert read_spectra(tmp_path / "t/md.parquet").num_rows == 0
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment/sources.json").write_text('{"molecules": {}, "missing": []}')
    out = run_stage("compare", "--params", str(params), "--ml", "t/spectra.parquet",
                    "--harmonic", "t/harmonic.parquet", "--reference", "t/md.parquet",
                    "--ml-trajectories", "t/trajectories.zarr",
                    "--reference-trajectories", "t/md.zarr", "--experiment", "experiment",
                    "--spread-baseline", "t/trajectories.zarr", "--metrics", "m/transfer.json",
                    "--table", "m/transfer.csv", "--figures", "m/fig", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "m/transfer.json").read_text())
    assert metrics["molecules"] == {} and metrics["mean"] == {}
    # a plots directory is never empty (git would not keep it; DVC would call it deleted)
    assert sorted(p.suffix for p in (tmp_path / "m/fig").iterdir()) == [".png", ".svg"]


def test_transfer_minima_without_their_hessians_are_the_minima_with_them(tmp_path):
    """molecules.transfer_harmonic: false skips the transfer molecules' Hessians and samples
    (with DFT labels the largest cost of the transfer set) and writes the same labelled minima
    that the harmonic analysis starts from, bit for bit."""
    import pyarrow.parquet as pq
    from conftest import run_stage, write_params

    from palirs_data.config import LabelerConfig, SampleConfig
    from palirs_data.labelers import make_labeler
    from palirs_data.sampling import sample_molecules

    params = write_params(tmp_path / "params.yaml",
                          molecules={"transfer": ["water"], "transfer_harmonic": False})
    out = run_stage("sample", "--params", str(params), "--molecules", "transfer",
                    "--samples", "t/normal_modes.parquet",
                    "--equilibrium", "t/equilibrium.parquet",
                    "--frequencies", "t/frequencies.parquet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "minimum only" in out.stderr + out.stdout
    minimum = structures.read_table(tmp_path / "t/equilibrium.parquet")
    assert structures.read_table(tmp_path / "t/normal_modes.parquet").num_rows == 0
    assert pq.read_metadata(tmp_path / "t/frequencies.parquet").num_rows == 0
    full = sample_molecules(molecules.resolve(["water"], [], where="test"),
                            make_labeler(LabelerConfig()), SampleConfig())
    assert full.frequencies.num_rows == 3 and full.samples.num_rows == 30
    assert minimum.equals(full.equilibrium)
    assert minimum.column("label_status").to_pylist() == ["ok"]


def test_named_settings_make_valid_runs_and_replace_the_iterations(tmp_path):
    from palirs_data.config import Params
    from palirs_data.settings import SETTINGS, apply, merged

    for name in SETTINGS:
        run = Params.model_validate(yaml.safe_load(apply(REPO / "params.yaml", name)))
        assert len(run.molecules.names) >= 1
    multi = Params.model_validate(yaml.safe_load(apply(REPO / "params.yaml", "multi-molecule")))
    base_initial = yaml.safe_load((REPO / "params.yaml").read_text())["committee"][
        "initial_epochs"]
    assert len(multi.molecules.names) >= 6 and len(multi.molecules.transfer) >= 2
    assert list(multi.active_learning.iterations) == ["iter1", "iter2"]  # replaced, not merged
    assert multi.committee.seeds == [0, 1, 2]  # untouched sections stay
    # the demo's short first committee was measured on methanol only: the settings train it
    # as long as the others
    assert multi.committee.initial_epochs is None and base_initial == 180
    full = Params.model_validate(yaml.safe_load(apply(REPO / "params.yaml", "full")))
    assert full.committee.initial_epochs is None
    # and the architecture and epochs they were measured (and costed) with, whatever the
    # demo's: max_ell 3 (the method's), the multi-molecule 180 epochs, the full setting 300
    base = Params.model_validate(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert base.committee.model.max_ell == 2
    for run, epochs in ((multi, 180), (full, 300)):
        assert run.committee.model.max_ell == 3
        assert run.committee.training.max_num_epochs == epochs
    dft = Params.model_validate(
        yaml.safe_load(apply(REPO / "params.yaml", "multi-molecule-dft")))
    assert dft.labeler.method == "pyscf" and not dft.reference_md.enabled
    assert dft.molecules.names == multi.molecules.names and dft.molecules.transfer == []
    assert list(dft.active_learning.iterations) == ["iter1"]
    assert dft.committee == multi.committee and dft.ir == multi.ir  # the rest is the setting's
    base = Params.model_validate(yaml.safe_load((REPO / "params.yaml").read_text()))
    converged = Params.model_validate(
        yaml.safe_load(apply(REPO / "params.yaml", "converged-spectra")))
    assert converged.ir.trajectories == 96 > base.ir.trajectories  # measured (docs/method.md)
    assert converged.model_copy(update={"ir": base.ir}) == base  # only the IR runs change
    assert merged({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(PalirsInputError, match="unknown setting 'multi' .one of: multi-molecule"):
        apply(REPO / "params.yaml", "multi")


def test_acquire_summary_names_a_run_stopped_before_its_first_frame():
    """Found by the first multi-molecule run: water at 500 K stopped while thermalising (no
    frame, no kinetic temperature) crashed the acquire stage's summary after its MD and
    labels were done."""
    from palirs_data.acquisition import summary_line

    runs = [{"molecule": "water", "temperature_K": 500.0, "kinetic_temperature_K": None},
            {"molecule": "methanol", "temperature_K": 300.0, "kinetic_temperature_K": 297.4}]
    m = {"converged": False, "converged_molecules": ["ethanol"], "runs": runs, "md_tasks": 2,
         "md_replica_steps_per_s": 120.0, "guard_stops": 1, "n_selected": 4, "n_labelled": 4,
         "n_failed": 0, "n_train": 154}
    line = summary_line(m, previous="iter0", output="t.parquet")
    assert "water 500->stopped, methanol 300->297" in line
    assert "converged, no new data: ethanol" in line


def test_the_learning_curve_ends_where_the_campaign_stopped(tmp_path, monkeypatch):
    """Iterations after convergence pass the table and committee through: they are not rows of
    the curve, and the summary says how many iterations ran of those planned."""
    from palirs_data import campaign
    from palirs_data.config import ActiveLearningConfig

    def record(iteration, maes, labels, converged_before):
        row = _row(iteration, maes, labels)
        row.update({k: 0.0 for k in campaign.CURVE_COLUMNS if k not in row},
                   n_train=sum(labels.values()), converged_before=converged_before,
                   labels_per_molecule=labels, runs=[], guard_stops=0,
                   max_force_std_max_eVA=None, test_energy_offset_meV_per_atom={},
                   test_energy_rmse_meV_per_atom_ci95=None, test_force_rmse_meV_A_ci95=None)
        return row

    records = {"iter0": record(0, {"water": 9.0}, {"water": 30}, False),
               "iter1": record(1, {"water": 4.0}, {"water": 45}, False),
               # iteration 2 and 3 found the campaign converged: nothing acquired or trained
               "iter2": record(2, {"water": 4.0}, {"water": 45}, True),
               "iter3": record(3, {"water": 4.0}, {"water": 45}, True)}
    monkeypatch.setattr(campaign, "iteration_record", lambda d: records[d.name])
    config = ActiveLearningConfig(stop_mae_cm1=5.0, iterations={
        "iter1": "iter0", "iter2": "iter1", "iter3": "iter2"})
    rows, summary = campaign.summarise(tmp_path, config)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert summary["iterations"] == 1 and summary["iterations_planned"] == 3
    assert campaign.iterations_phrase(summary) == "1 of 3 iterations"
    assert campaign.iterations_phrase({"iterations": 1}) == "1 iteration"  # an older summary
    assert summary["converged"] and summary["converged_at"] == 1
    assert len(campaign.curve_csv(rows).splitlines()) == 1 + 2
    # a campaign that has not converged runs every planned iteration
    records["iter2"]["converged_before"] = records["iter3"]["converged_before"] = False
    records["iter3"]["molecules"]["water"]["frequency_mae_cm1"] = 6.0
    records["iter2"]["molecules"]["water"]["frequency_mae_cm1"] = 7.0
    records["iter1"]["molecules"]["water"]["frequency_mae_cm1"] = 8.0
    rows, summary = campaign.summarise(tmp_path, config)
    assert len(rows) == 4 and summary["iterations"] == summary["iterations_planned"] == 3
    assert not summary["converged"]
