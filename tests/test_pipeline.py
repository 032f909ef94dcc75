"""The demo pipeline end to end through DVC, in a fresh clone, with tiny settings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO


@pytest.mark.slow
def test_demo_pipeline_runs_through_dvc(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["committee"]["training"]["max_num_epochs"] = 3
    params["committee"]["model"]["num_channels"] = 8
    params["dipole"]["training"]["max_num_epochs"] = 3
    params["dipole"]["model"]["num_channels"] = 8
    params["test_set"].update(duration_fs=100.0, n_candidates=40)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PALIRS_SCHEDULER_ADDRESS", None)
    dvc = str(Path(sys.executable).parent / "dvc")
    run = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("sample", "label", "e0s", "train-ensemble", "dipole", "test-set", "evaluate"):
        assert f"Running stage '{stage}'" in run.stdout, stage
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert math.isfinite(evaluate["frequency_mae_cm1"]) and evaluate["frequency_mae_cm1"] > 0
    assert evaluate["test"]["n_test"] == 20
    assert math.isfinite(evaluate["test"]["dipole_rmse_mD"])
    status = subprocess.run([dvc, "status"], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout
    shown = subprocess.run([dvc, "metrics", "show"], cwd=repo, env=env, capture_output=True,
                           text=True)
    assert "frequency_mae_cm1" in shown.stdout and "test.force_rmse_meV_A" in shown.stdout
