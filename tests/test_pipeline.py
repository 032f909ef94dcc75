"""The demo pipeline end to end through DVC, in a fresh clone, with tiny settings: the whole
campaign as one ``dvc exp run`` per iteration, then push to the local remote and pull into a
second clone."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from conftest import REPO
from palirs_data.structures import read_table


def _run(cmd, cwd, env, timeout=1500):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (cmd, result.stdout[-4000:], result.stderr[-4000:])
    return result


def _experiments(shown) -> dict:
    """{experiment name: its metrics/campaign.json} from ``dvc exp show --json``."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if node.get("name") and isinstance(data, dict) and "metrics" in data:
                campaign = (data["metrics"] or {}).get("metrics/campaign.json", {})
                found[node["name"]] = campaign.get("data", {})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_demo_campaign_through_dvc_experiments_push_and_pull(tmp_path):
    repo = tmp_path / "repo"
    # a fresh machine: no git identity (the campaign runner must cope), no global config
    (tmp_path / "home").mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HOME=str(tmp_path / "home"), GIT_CONFIG_NOSYSTEM="1", COLUMNS="200")
    for key in ("PALIRS_SCHEDULER_ADDRESS", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
                "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_CONFIG_GLOBAL"):
        env.pop(key, None)
    dvc = str(Path(sys.executable).parent / "dvc")
    git = ["git", "-c", "user.name=palirs test", "-c", "user.email=test@palirs.invalid"]
    _run(["git", "clone", "-q", str(REPO), str(repo)], tmp_path, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["committee"]["training"].update(max_num_epochs=3, batch_size=10)
    params["committee"]["seeds"] = [0, 1]  # one member per worker: 3 trainings ~30 s sooner
    params["committee"]["model"]["num_channels"] = 8
    params["dipole"]["training"].update(max_num_epochs=3, batch_size=10)
    params["dipole"]["model"]["num_channels"] = 8
    params["test_set"].update(duration_fs=100.0, n_candidates=40, per_cluster=4)
    params["active_learning"]["iterations"] = {"iter1": "iter0", "iter2": "iter1"}
    params["active_learning"]["acquire"].update(
        duration_fs=40.0, min_spacing_fs=2.0, thermalise_fs=20.0,
        max_force_rel_dev=1e9)  # 3-epoch models would trip the guard at once (tested apart)
    params["ir"].update(thermalise_fs=20.0, produce_fs=200.0, max_correlation_fs=50.0,
                        trajectories=3)
    params["compare"].update(bootstrap_samples=50)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([*git, "commit", "-qam", "tiny settings"], repo, env)

    # the campaign: one experiment per iteration, as the README's `palirs run` does it
    run = _run([sys.executable, "-m", "palirs_data.app", "run"], repo, env)
    out = run.stdout + run.stderr
    assert "experiments: iter1, iter2" in out
    assert "freq MAE cm-1" in run.stdout and "ML vs reference MD" in run.stdout  # the table
    assert "git has no user name/email" in out  # experiment refs got a placeholder identity
    for stage in ("sample", "label", "e0s", "train-ensemble", "test-set", "evaluate",
                  "acquire@iter1", "retrain@iter1", "reevaluate@iter1", "acquire@iter2",
                  "retrain@iter2", "reevaluate@iter2", "campaign", "dipole", "ir",
                  "reference-md", "experiment", "compare"):
        assert f"Running stage '{stage}'" in out, stage
    # the second experiment restored iteration 1 instead of recomputing it
    assert out.count("Running stage 'acquire@iter1'") == 1

    # the table grows by exactly 3 temperatures x 5 frames per iteration
    tables = [read_table(repo / f"data/campaign/iter{k}/train.parquet") for k in range(3)]
    n0 = tables[0].num_rows
    assert [t.num_rows for t in tables] == [n0, n0 + 15, n0 + 30]
    for k in (1, 2):
        new = tables[k].filter(pc.equal(tables[k].column("iteration"), k))
        assert new.num_rows == 15
        assert set(new.column("label_status").to_pylist()) == {"ok"}
        assert sorted(set(new.column("temperature_K").to_pylist())) == [300.0, 500.0, 700.0]
    assert _sha(repo / "data/labelled/final.parquet") == _sha(
        repo / "data/campaign/iter2/train.parquet")

    campaign = json.loads((repo / "metrics/campaign.json").read_text())
    assert campaign["iterations"] == 2 and campaign["n_train"] == n0 + 30
    assert campaign["labels_per_molecule"] == {"methanol": n0 + 30}
    assert math.isfinite(campaign["frequency_mae_cm1"]) and campaign["frequency_mae_cm1"] > 0
    curve = (repo / "metrics/campaign.csv").read_text().splitlines()
    assert len(curve) == 4 and curve[0].startswith("iteration,n_train")
    dipole = json.loads((repo / "metrics/dipole.json").read_text())
    # acquisition-MD frames labelled for the dipole model, never in the committee's table
    picked = read_table(repo / "data/labelled/md_frames.parquet")  # by the campaign stage
    md_frames = read_table(repo / "data/labelled/dipole_md.parquet")  # labelled by dipole
    assert picked.column("structure_id").to_pylist() == md_frames.column(
        "structure_id").to_pylist()
    assert 0 < dipole["n_md_frames"] == md_frames.num_rows <= 3 * params["dipole"]["md_frames"]
    assert set(md_frames.column("source").to_pylist()) == {"dipole_md"}
    assert dipole["n_structures"] == n0 + 30 + dipole["n_md_frames"]
    assert "dipole_md" not in tables[2].column("source").to_pylist()
    assert math.isfinite(dipole["test_rmse_dipole_mD"])
    lo, hi = dipole["test_rmse_dipole_mD_ci95"]
    assert lo <= dipole["test_rmse_dipole_mD"] <= hi
    along = dipole["reference_md"]["methanol/300K"]  # every run of the reference MD
    assert along["frames"] > 20 and math.isfinite(along["dipole_rmse_mD"])
    evaluation = json.loads((repo / "data/campaign/iter2/evaluate.json").read_text())
    assert evaluation["test"]["n_test"] == 20

    # the spectra: ML (3 runs) against reference MD and the experimental methanol spectrum
    compared = json.loads((repo / "metrics/compare.json").read_text())["molecules"]["methanol"]
    for pair in ("ml_vs_reference", "ml_vs_experiment", "reference_vs_experiment"):
        assert -1 <= compared[pair]["pcc"] <= 1 and compared[pair]["wasserstein_cm1"] > 0
        assert len(compared[pair]["pcc_ci"]) == 2 and compared[pair]["wasserstein"] > 0
    assert compared["convergence"][-1]["runs"] == 3
    assert (repo / "metrics/figures/compare/methanol.png").stat().st_size > 10_000
    ir = json.loads((repo / "metrics/ir.json").read_text())
    assert ir["runs"] == 3 and ir["stopped"] == []
    assert ir["kinetic_temperature"]["pooled"]["methanol/300K"]["runs"] == 3
    # the reference MD ran once: the second experiment restored it from the run cache
    assert out.count("Running stage 'reference-md'") == 1

    shown = _experiments(json.loads(_run([dvc, "exp", "show", "--json"], repo, env).stdout))
    assert shown["iter1"]["n_train"] == n0 + 15 and shown["iter2"]["n_train"] == n0 + 30
    assert "up to date" in _run([dvc, "status"], repo, env).stdout

    # share: push to the configured local remote, clone again, pull: nothing to reproduce
    _run(["git", "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "campaign"], repo, env)
    _run([dvc, "push"], repo, env)
    assert (tmp_path / "palirs-dvc-remote").is_dir()  # the demo remote: ../palirs-dvc-remote
    other = tmp_path / "other"
    _run(["git", "clone", "-q", str(repo), str(other)], tmp_path, env)
    _run([dvc, "pull"], other, env)
    assert "up to date" in _run([dvc, "status"], other, env).stdout
    for path in ("data/labelled/final.parquet", "data/models/dipole.model",
                 "data/models/committee/model_0.model",
                 "data/campaign/iter2/trajectories.zarr/zarr.json",
                 "data/ir/spectra.parquet", "data/experiment/methanol.jdx"):
        assert _sha(other / path) == _sha(repo / path), path
