"""Stage reports are typed: written and read through one model, kind and version checked."""

from __future__ import annotations

import json

import pytest

from conftest import write_evaluation
from palirs_data.errors import PalirsInputError
from palirs_data.reports import Acquisition, Evaluation, Training


def test_evaluation_round_trip_and_per_molecule_maes(tmp_path):
    path = write_evaluation(tmp_path, 7.5, {"water": 3.0, "methanol": 12.0})
    raw = json.loads(path.read_text())
    assert raw["report"] == "evaluation" and raw["version"] == Evaluation.VERSION
    read = Evaluation.read(path)
    assert read.frequency_mae_cm1 == 7.5
    # a molecule without its own figure takes the overall one
    assert read.molecule_maes(["water", "methanol", "ethanol"]) == {
        "water": 3.0, "methanol": 12.0, "ethanol": 7.5}


def _rewrite(path, change):
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(report="acquisition"), "report 'acquisition', expected 'evaluation'"),
    (lambda r: r.pop("report"), "not a stage report (no 'report' field"),
    (lambda r: r.update(version=0), "evaluation report version 0, this code reads version 1"),
    (lambda r: r.pop("frequency_mae_cm1"), "frequency_mae_cm1: Field required"),
    (lambda r: r["frequency_per_molecule"]["water"].update(mae_cm1="low"),
     "frequency_per_molecule.water.mae_cm1: Input should be a valid number"),
    (lambda r: r.update(frequency_mae=1.0), "frequency_mae: Extra inputs are not permitted"),
])
def test_a_wrong_report_is_one_line_naming_file_and_field(tmp_path, change, message):
    path = write_evaluation(tmp_path, 7.5, {"water": 3.0})
    _rewrite(path, change)
    with pytest.raises(PalirsInputError) as err:
        Evaluation.read(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(PalirsInputError, match="no such file"):
        Acquisition.read(tmp_path / "acquire.json")
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(PalirsInputError, match="not valid JSON"):
        Training.read(tmp_path / "t.json")


def test_a_reused_committee_report_has_no_errors(tmp_path):
    Training(reused_from="data/campaign/iter1/committee", n_train=10, n_valid=2,
             committee_training_seconds=0.0, committee_wall_seconds=0.0).write(tmp_path / "t.json")
    read = Training.read(tmp_path / "t.json")
    assert read.reused_from and read.valid_rmse_f_meV_A == {}
