"""The experiments runner: which ``dvc exp run`` commands a campaign becomes (a stand-in dvc
records them; the real one runs in the slow end-to-end test)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import write_params
from palirs_data.campaign import INTERMEDIATE_TARGETS, run_experiments

FAKE_DVC = """#!{python}
import json, os, sys
with open("calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
n = sum(1 for _ in open("calls.jsonl"))
os.makedirs("metrics", exist_ok=True)
converged_at = int(os.environ.get("FAKE_CONVERGED_AT", "0"))
json.dump({{"converged": bool(converged_at) and n >= converged_at, "converged_at": converged_at}},
          open("metrics/campaign.json", "w"))
"""


@pytest.mark.parametrize("converged_at", [0, 2])
def test_intermediate_experiments_stop_at_the_dipole_model(tmp_path, monkeypatch, converged_at):
    fake = tmp_path / "dvc"
    fake.write_text(FAKE_DVC.format(python=sys.executable))
    fake.chmod(0o755)
    params = write_params(tmp_path / "params.yaml", active_learning={
        "iterations": {"iter1": "iter0", "iter2": "iter1", "iter3": "iter2"}})
    before = params.read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_CONVERGED_AT", str(converged_at))
    names = run_experiments(params, dvc=str(fake))
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    drop = "~active_learning.iterations."
    if converged_at == 0:
        assert names == ["iter1", "iter2", "iter3"]
        assert calls == [
            ["exp", "run", "-n", "iter1", "-S", drop + "iter2", "-S", drop + "iter3",
             *INTERMEDIATE_TARGETS],
            ["exp", "run", "-n", "iter2", "-S", drop + "iter3", *INTERMEDIATE_TARGETS],
            ["exp", "run", "-n", "iter3"]]  # the whole pipeline, spectra included
    else:  # converged after iteration 2: the whole pipeline with params.yaml as it is, stop
        assert names == ["iter1", "iter2", "iter2-spectra"]
        assert calls[-1] == ["exp", "run", "-n", "iter2-spectra"]
    assert params.read_text() == before
    assert os.getcwd() == str(tmp_path)
