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
