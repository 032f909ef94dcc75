"""Shared fixtures: small real molecules, params files, running stage scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import molecule

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def water() -> Atoms:
    """Water, slightly distorted from ASE's geometry so that forces are not zero."""
    atoms = molecule("H2O")
    atoms.positions += np.array([[0.0, 0.0, 0.02], [0.0, 0.03, -0.01], [0.0, -0.01, 0.0]])
    return atoms


def write_params(path: Path, **sections) -> Path:
    """Write a params.yaml with the given sections (others take their defaults)."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return path


def write_evaluation(directory: Path, mae_cm1: float,
                     per_molecule: dict[str, float] | None = None) -> Path:
    """An ``evaluate.json`` in ``directory`` with the given committee-mean MAEs (overall and
    per molecule); the other figures are placeholders (what the stop rule does not read)."""
    from palirs_data.reports import Evaluation

    def errors(mae):
        return {"mae_cm1": mae, "rmse_cm1": mae, "mae_sorted_cm1": mae, "min_overlap": 1.0,
                "member_mae_cm1": [mae, mae]}

    path = Path(directory) / "evaluate.json"
    Evaluation(frequency_mae_cm1=mae_cm1, frequency_rmse_cm1=mae_cm1,
               frequency_mae_sorted_cm1=mae_cm1, frequency_member_mae_cm1=[mae_cm1, mae_cm1],
               frequency_member_mae_mean_cm1=mae_cm1, frequency_member_mae_std_cm1=0.0,
               frequency_per_molecule={n: errors(v) for n, v in (per_molecule or {}).items()},
               test={"n_test": 0}).write(path)
    return path


def run_stage(stage: str, *args: str, cwd: Path, env: dict | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``stages/<stage>.py`` as a user would, in ``cwd``."""
    full_env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    COLUMNS="200")
    full_env.pop(  # a test must not reach a scheduler configured outside it
        "PALIRS_SCHEDULER_ADDRESS", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), *args],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


TINY_MODEL = {"num_channels": 8, "max_L": 1, "r_max_A": 3.0, "num_interactions": 2,
              "correlation": 2, "num_radial_basis": 6}


def _tiny_committee_config():
    from palirs_data.config import CommitteeConfig

    return CommitteeConfig(model=TINY_MODEL, training={"max_num_epochs": 6, "lr": 0.01,
                                                       "threads": 1})


TINY_COMMITTEE = _tiny_committee_config()  # three seeds, trained in-process: tiny_committee


@pytest.fixture(scope="session")
def methanol_data(tmp_path_factory):
    """Methanol with GFN2-xTB: minimum, 120 labelled normal-mode samples, E0s."""
    from palirs_data import molecules
    from palirs_data.config import LabelConfig, LabelerConfig, SampleConfig
    from palirs_data.e0s import isolated_atom_energies
    from palirs_data.labelers import make_labeler
    from palirs_data.labeling import label_table
    from palirs_data.sampling import sample_molecules

    tmp = tmp_path_factory.mktemp("methanol")
    labeler = make_labeler(LabelerConfig())
    result = sample_molecules(molecules.resolve(["methanol"], [], where="test"), labeler,
                              SampleConfig())
    labelled = label_table(result.samples, labeler_config=LabelerConfig(),
                           config=LabelConfig(checkpoint_dir=tmp / "ckpt")).table
    e0s = isolated_atom_energies(labeler, ["H", "C", "N", "O"])
    return {"result": result, "labelled": labelled, "e0s": e0s}


@pytest.fixture(scope="session")
def tiny_committee(tmp_path_factory, methanol_data):
    """Three tiny MACE models trained by mace-torch on the methanol samples (a few epochs)."""
    from palirs_data.committee import Committee
    from palirs_data.training import train_committee

    tmp = tmp_path_factory.mktemp("committee")
    report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                             config=TINY_COMMITTEE, out_dir=tmp / "models",
                             work_dir=tmp / "work")
    return {"report": report, "committee": Committee.load([m.model for m in report.members]),
            "paths": [m.model for m in report.members]}


@pytest.fixture(scope="session")
def tiny_dipole_model(tmp_path_factory, methanol_data):
    """A tiny AtomicDipolesMACE trained by mace-torch on the methanol samples."""
    from palirs_data.committee import load_model
    from palirs_data.training import train_dipole_model
    from palirs_data.config import DipoleConfig

    tmp = tmp_path_factory.mktemp("dipole")
    report = train_dipole_model(methanol_data["labelled"], e0s=methanol_data["e0s"],
                                elements=["H", "C", "N", "O"],
                                config=DipoleConfig(model=TINY_MODEL,
                                                    training={"max_num_epochs": 4}),
                                out_file=tmp / "dipole.model", work_dir=tmp / "work")
    return {"report": report, "model": load_model(report.model)}
