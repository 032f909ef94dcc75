"""Stages as a user runs them: bad input gets one line and no output; dvc.yaml agrees."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, run_stage, write_params
from palirs_data.config import Params, load_params

OUTPUTS = ["data/sample/normal_modes.parquet", "data/sample/equilibrium.parquet",
           "data/sample/frequencies.parquet"]


def _assert_clean_failure(result, tmp_path: Path, *expected: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.is_file()] \
        if (tmp_path / "data").exists() else []
    assert leftovers == []


def _xyz(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mol.xyz"
    path.write_text(text)
    return path


BAD_XYZ = {
    "malformed": ("2\n\nO 0 0\nH 0 0 0.96\n", "malformed XYZ file"),
    "short frame": ("3\n\nO 0 0 0\nH 0 0 0.96\n", "frame 0 declares 3 atoms but only 2"),
    "huge count": ("999999999\n\nO 0 0 0\n", "frame 0 declares 999999999 atoms"),
    "no count": ("O 0 0 0\n", "line 1: expected the atom count of frame 0"),
    "unknown element": ("2\n\nXx 0 0 0\nH 0 0 0.96\n", "unknown element 'Xx'"),
    "nan coordinates": ("2\n\nO 0 0 nan\nH 0 0 0.96\n", "NaN or infinite coordinates"),
}


@pytest.mark.parametrize("case", sorted(BAD_XYZ))
def test_bad_xyz_file(tmp_path, case):
    text, message = BAD_XYZ[case]
    xyz = _xyz(tmp_path, text)
    params = write_params(tmp_path / "params.yaml",
                          molecules={"names": ["mine"], "custom": [{"name": "mine",
                                                                    "xyz": str(xyz)}]})
    result = run_stage("sample", "--params", str(params), cwd=tmp_path)
    _assert_clean_failure(result, tmp_path, str(xyz), message)


BAD_PARAMS = {
    "rejected smiles": ({"molecules": {"names": ["bad"], "custom": [
        {"name": "bad", "smiles": "C1CC(("}]}}, "molecules.custom.0.smiles: RDKit rejects SMILES"),
    "empty molecule list": ({"molecules": {"names": []}},
                            "molecules.names: the molecule list is empty"),
    "unknown molecule": ({"molecules": {"names": ["unobtainium"]}},
                         "unknown molecule 'unobtainium'"),
    "unknown label method": ({"labeler": {"method": "xtbb"}},
                             "labeler.method: Input should be 'xtb', 'pyscf' or 'ase'"),
    "unknown key": ({"sample": {"fmax": 0.01}}, "sample.fmax: unknown key"),
    "unknown section": ({"sampel": {}}, "sampel: unknown key"),
    "wrong type": ({"sample": {"fmax_eVA": "tight"}},
                   "sample.fmax_eVA: Input should be a valid number"),
    "no frames": ({"sample": {"frames_per_mode": 0}}, "sample.frames_per_mode"),
    "unknown sampler": ({"sample": {"sampler": "wignr"}},
                        "sample.sampler: Input should be 'thermal', 'wigner' or 'ase'"),
    "negative sample temperature": ({"sample": {"temperature_K": -300}},
                                    "sample.temperature_K: Input should be greater than 0"),
    "negative acquire temperature": (
        {"active_learning": {"acquire": {"temperatures_K": [300, -500]}}},
        "active_learning.acquire.temperatures_K: temperatures must be positive (K), got -500"),
    "no acquisition runs": ({"active_learning": {"acquire": {"replicas": 0}}},
                            "active_learning.acquire.replicas"),
    "stage two of every epoch": ({"committee": {"training": {"stage_two_fraction": 1.0}}},
                                 "committee.training.stage_two_fraction: Input should be "
                                 "less than 1"),
    "unknown checkpoint choice": ({"committee": {"training": {"checkpoint": "first"}}},
                                  "committee.training.checkpoint: Input should be 'best' or "
                                  "'last'"),
    "negative min_iterations": ({"active_learning": {"min_iterations": -1}},
                                "active_learning.min_iterations: Input should be greater than "
                                "or equal to 0"),
    "negative ir temperature": ({"ir": {"temperatures_K": [-300]}},
                                "ir.temperatures_K: temperatures must be positive"),
    "unsafe name": ({"molecules": {"names": ["x"], "custom": [
        {"name": "../../x", "smiles": "C"}]}}, "invalid molecule name"),
    # refused at load, before any work: nothing mixed, dropped or substituted silently
    "names that normalise alike": (
        {"molecules": {"names": ["my mol", "my_mol"], "custom": [
            {"name": "my mol", "smiles": "CCO"}, {"name": "my_mol", "smiles": "COC"}]}},
        "molecules.names: 'my mol' and 'my_mol' share the trajectory group 'my_mol'"),
    "one custom name twice": (
        {"molecules": {"names": ["mine"], "custom": [
            {"name": "mine", "smiles": "CCO"}, {"name": "mine", "smiles": "COC"}]}},
        "molecules.names: two entries of molecules.custom are named 'mine'"),
    "one SMILES under two names": (
        {"molecules": {"names": ["ethanol", "etoh"], "custom": [
            {"name": "etoh", "smiles": "OCC"}]}},
        "molecules.names: 'ethanol' and 'etoh' are the same molecule (SMILES CCO)"),
    "element outside the committee": (
        {"molecules": {"names": ["methanethiol"], "custom": [
            {"name": "methanethiol", "smiles": "CS"}]}},
        "molecules.names: 'methanethiol' contains S, not in committee.elements"),
    "misspelt molecule": ({"molecules": {"names": ["methanl"]}},
                          "unknown molecule 'methanl' (did you mean 'methanol'?)"),
    "typo in an experiment key": (
        {"experiment": {"files": {"methanl": "my.jdx"}}},
        "experiment.files.methanl: not a molecule of this run (did you mean 'methanol'?)"),
    "a committee of one": ({"committee": {"seeds": [0]}},
                           "committee.seeds: a committee needs at least two seeds"),
    "acquire timestep too long": ({"active_learning": {"acquire": {"timestep_fs": 5}}},
                                  "active_learning.acquire.timestep_fs: timestep_fs must be in "
                                  "(0, 1] fs, got 5"),
    "ir timestep too long": ({"ir": {"timestep_fs": 2}}, "ir.timestep_fs: timestep_fs must be"),
    "a temperature twice": ({"active_learning": {"acquire": {"temperatures_K": [300, 300]}}},
                            "active_learning.acquire.temperatures_K: temperature 300 K is "
                            "listed twice"),
    "too few test candidates": (
        {"test_set": {"n_candidates": 10, "n_clusters": 5, "per_cluster": 4}},
        "test_set: n_candidates (10) is fewer than n_clusters × per_cluster (5 × 4)"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params(tmp_path, case):
    sections, message = BAD_PARAMS[case]
    params = write_params(tmp_path / "params.yaml", **sections)
    result = run_stage("sample", "--params", str(params), cwd=tmp_path)
    _assert_clean_failure(result, tmp_path, str(params), message)


def test_a_killed_stages_temporaries_do_not_make_stages_look_out_of_date():
    """``palirs_data.atomic`` writes outputs to ``.<name>.tmp-*`` siblings; a SIGKILL can leave
    one inside a directory another stage depends on (``data/campaign/iterK``): DVC ignores
    them, as git does."""
    root = REPO
    left = "data/campaign/iter1/.train.parquet.tmp-k2x9"
    dvc = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", left], cwd=root,
                         capture_output=True, text=True)
    assert dvc.returncode == 0 and dvc.stdout.strip() == left, dvc.stderr
    kept = subprocess.run([sys.executable, "-m", "dvc", "check-ignore",
                           "data/campaign/iter1/train.parquet"], cwd=root, capture_output=True)
    assert kept.returncode == 1
    git = subprocess.run(["git", "check-ignore", "-q", left], cwd=root)
    assert git.returncode == 0


def test_missing_and_unparsable_params(tmp_path):
    result = run_stage("sample", "--params", "absent.yaml", cwd=tmp_path)
    _assert_clean_failure(result, tmp_path, "absent.yaml: no such file")
    (tmp_path / "p.yaml").write_text("sample: [unclosed\n")
    result = run_stage("sample", "--params", "p.yaml", cwd=tmp_path)
    _assert_clean_failure(result, tmp_path, "p.yaml: not valid YAML")


def test_label_refuses_a_broken_table(tmp_path):
    import pyarrow as pa

    broken = tmp_path / "in.parquet"
    pq.write_table(pa.table({"structure_id": ["x"]}), broken)
    params = write_params(tmp_path / "params.yaml")
    result = run_stage("label", "--params", str(params), "--input", str(broken), cwd=tmp_path)
    _assert_clean_failure(result, tmp_path, str(broken), "missing column 'molecule'")


def test_sample_then_label_writes_labelled_tables(tmp_path):
    params = write_params(tmp_path / "params.yaml", molecules={"names": ["water"]},
                          compute={"n_workers": 1})
    sample = run_stage("sample", "--params", str(params), cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert "1 molecules, 3 reference frequencies, 30 samples" in sample.stdout
    label = run_stage("label", "--params", str(params), cwd=tmp_path)
    assert label.returncode == 0, label.stderr
    assert "30 computed, 0 failed" in label.stdout
    from palirs_data.structures import read_table

    table = read_table(tmp_path / "data/campaign/iter0/train.parquet")
    assert set(table.column("label_status").to_pylist()) == {"ok"}
    assert not [p for p in (tmp_path / "data").rglob(".*tmp*")]  # no temporaries left
    import json

    metrics = json.loads((tmp_path / "metrics/label.json").read_text())
    assert metrics["n_computed"] == 30 and metrics["n_failed"] == 0
    assert 0 < metrics["seconds_per_single_point"] < 1.0  # xTB on water: about a millisecond


# --- dvc.yaml, the stage scripts and params.yaml agree ----------------------------------

def _load_stage(script: str):
    name = Path(script).stem
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _interpolate(text: str, context: dict) -> str:
    """DVC's ${section.key} templating."""

    def value(match):
        node = context
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def _dvc_stages() -> dict:
    """dvc.yaml's stages as DVC resolves them: params interpolated, ``foreach`` expanded."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, stage in raw.items():
        if "foreach" not in stage:
            stages[name] = yaml.safe_load(_interpolate(yaml.safe_dump(stage), params))
            continue
        items = yaml.safe_load(_interpolate(stage["foreach"], params).replace("'", '"'))
        assert isinstance(items, dict) and items, name
        for key, item in items.items():
            context = dict(params, key=key, item=item)
            stages[f"{name}@{key}"] = yaml.safe_load(_interpolate(yaml.safe_dump(stage["do"]),
                                                                  context))
    return stages


def _script(stage: dict) -> str:
    return re.match(r"python (stages/\w+\.py)", stage["cmd"]).group(1)


def test_foreach_expansion_matches_dvc():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        names = {s.addressing for s in repo.index.stages}
    assert names == set(_dvc_stages())


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_dvc_yaml_matches_stage_script(name):
    stage = _dvc_stages()[name]
    script = _script(stage)
    module = _load_stage(script)
    # params: what DVC tracks is what the stage declares as result-determining
    declared = (module.TRANSFER_PARAMS if name.startswith("transfer-")
                and hasattr(module, "TRANSFER_PARAMS") else module.STAGE_PARAMS)
    assert sorted(stage["params"]) == sorted(declared)
    # every option in cmd is an option of the script, and every output option is an out
    options = dict(re.findall(r"--([\w-]+) (\S+)", stage["cmd"]))
    signature = inspect.signature(module.main).parameters
    assert set(options) <= {o.replace("_", "-") for o in signature}, set(options)
    assert script in stage["deps"]
    for option, value in options.items():
        parameter = signature[option.replace("-", "_")]
        if parameter.annotation not in ("Path", Path):
            continue  # not a file (e.g. an iteration name)
        default = parameter.default.default
        # foreach and transfer-*: the script is shared, its defaults are the other stage's
        if default not in (None, ...) and "@" not in name and not name.startswith("transfer-"):
            assert Path(value) == Path(default), (option, value, default)  # defaults = dvc
        help_text = parameter.default.help or ""
        metrics = [next(iter(m)) if isinstance(m, dict) else m
                   for m in stage.get("metrics", []) + stage.get("plots", [])]
        if help_text.startswith(("Output metrics", "Output plots")):
            assert value in metrics + stage.get("outs", []), (option, value)
        elif help_text.startswith("Output"):
            assert value in stage["outs"], (option, value)
        elif help_text.startswith("Scratch"):
            assert value.startswith("data/.work/"), (option, value)  # ignored, never an output
        elif option != "params":
            assert value in stage["deps"], (option, value)


def test_params_yaml_sections_are_all_used_and_valid():
    params = load_params(REPO / "params.yaml")
    # what a setting or `dvc exp run -S` writes back (YAML of the dumped model) loads as the
    # same parameters: no field that YAML cannot carry (tuples, paths, enums)
    again = yaml.safe_load(yaml.safe_dump(params.model_dump(mode="json")))
    assert Params(**again) == params
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    used = set()
    for stage in _dvc_stages().values():
        module = _load_stage(_script(stage))
        used |= {p.split(".")[0] for p in module.STAGE_PARAMS + module.RUNTIME_PARAMS}
    assert set(raw) == used == set(Params.model_fields)


def _palirs_imports(path: Path) -> set[str]:
    """The ``palirs_data`` modules a file imports, anywhere in it (function-level too)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("palirs_data.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "palirs_data":
                out |= {f"palirs_data.{a.name}" for a in node.names}
            elif node.module.startswith("palirs_data."):
                out.add(node.module)
    return out


def _code_closure(script: str) -> set[str]:
    """Every library file a stage script may run: its ``palirs_data`` imports, transitively."""
    seen, todo = set(), [REPO / script]
    while todo:
        for module in _palirs_imports(todo.pop()):
            path = f"{module.replace('.', '/')}.py"
            if path not in seen and (REPO / path).is_file():
                seen.add(path)
                todo.append(REPO / path)
    return seen | {"palirs_data/__init__.py"}


def test_code_closure_follows_imports():
    closure = _code_closure("stages/compare.py")
    assert {"palirs_data/compare.py", "palirs_data/spectra.py", "palirs_data/names.py"} \
        <= closure  # compare.py imports names only through experiment
    # the imports inside a function count too (the dipole check loads the model lazily)
    assert {"palirs_data/evaluation.py", "palirs_data/committee.py"} <= closure
    assert "palirs_data/committee.py" not in _code_closure("stages/experiment.py")


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_dvc_yaml_deps_cover_the_code_the_stage_runs(name):
    """A change to any library module a stage imports (transitively) reruns the stage."""
    stage = _dvc_stages()[name]
    deps = set(stage["deps"])
    missing = sorted(f for f in _code_closure(_script(stage))
                     if f not in deps and "palirs_data" not in deps and "palirs_data/" not in deps)
    assert not missing, f"{name}: dvc.yaml deps lack {missing}"


#: the stage scripts that read each kind of the user's own files (config.USER_FILES)
USER_FILE_READERS = {"molecules": "stages/sample.py", "experiment": "stages/experiment.py",
                     "models": ("stages/train_ensemble.py", "stages/dipole.py"),
                     "structures": "stages/label.py"}


def test_user_files_are_deps_of_the_stages_that_read_them():
    from palirs_data.config import USER_FILES

    assert set(USER_FILE_READERS) == set(USER_FILES)
    for kind, scripts in USER_FILE_READERS.items():
        scripts = (scripts,) if isinstance(scripts, str) else scripts
        stages = [n for n, s in _dvc_stages().items() if _script(s) in scripts]
        assert stages
        for name in stages:
            assert str(USER_FILES[kind]) in _dvc_stages()[name]["deps"], (name, kind)
        assert (REPO / USER_FILES[kind]).is_dir()


def test_a_user_file_dvc_cannot_see_is_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/user/experiment").mkdir(parents=True)
    for where in ("data/user/experiment/m.jdx", "elsewhere.jdx"):
        caplog.clear()
        path = write_params(tmp_path / "p.yaml", experiment={"files": {"methanol": where}})
        with caplog.at_level("WARNING", logger="palirs_data.config"):
            load_params(path)
        outside = "DVC does not track it" in caplog.text
        assert outside == (where == "elsewhere.jdx"), caplog.text
        assert not outside or "experiment.files.methanol: elsewhere.jdx" in caplog.text


@pytest.mark.parametrize("script", ["stages/compare.py", "stages/experiment.py",
                                    "stages/campaign.py", "stages/sample.py", "stages/label.py",
                                    "stages/e0s.py"])
def test_stages_that_run_no_model_start_without_torch(script):
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location("
            f"'s', {script!r}); m = importlib.util.module_from_spec(spec); "
            f"spec.loader.exec_module(m); print(sorted(k for k in ('torch', 'mace') "
            f"if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_stage_help_works():
    from concurrent.futures import ThreadPoolExecutor

    scripts = sorted({_script(stage) for stage in _dvc_stages().values()})
    with ThreadPoolExecutor(2) as pool:  # each start-up is one core's work
        results = list(pool.map(lambda s: run_stage(Path(s).stem, "--help", cwd=REPO), scripts))
    for script, result in zip(scripts, results):
        assert result.returncode == 0 and "--params" in result.stdout, script
