"""Label sources: forces are minus the energy gradient, dipoles are physical, failures retry."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from palirs_data import units
from palirs_data.config import AseSettings, LabelerConfig, PyscfSettings, XtbSettings
from palirs_data.errors import PalirsInputError
from palirs_data.labelers import make_labeler
from palirs_data.labeling import label_one
from palirs_data.structures import Structure

XTB_TIGHT = LabelerConfig(method="xtb", xtb=XtbSettings(accuracy=0.01))
PYSCF = LabelerConfig(method="pyscf", pyscf=PyscfSettings(conv_tol=1e-11))


def _fd_forces(labeler, atoms: Atoms, components, h: float = 1e-3) -> np.ndarray:
    """Central finite-difference forces (eV/Å) for the given (atom, axis) components."""
    out = []
    for a, k in components:
        energies = []
        for sign in (+1, -1):
            displaced = atoms.copy()
            displaced.positions[a, k] += sign * h
            energies.append(labeler.label(displaced).energy_eV)
        out.append(-(energies[0] - energies[1]) / (2 * h))
    return np.array(out)


ALL_COMPONENTS = [(a, k) for a in range(3) for k in range(3)]


def test_xtb_forces_are_minus_energy_gradient(water):
    labeler = make_labeler(XTB_TIGHT)
    forces = labeler.label(water).forces_eVA
    fd = _fd_forces(labeler, water, ALL_COMPONENTS)
    analytic = np.array([forces[a, k] for a, k in ALL_COMPONENTS])
    assert np.abs(forces).max() > 0.1  # a distorted geometry: a real test
    np.testing.assert_allclose(analytic, fd, atol=2e-4)


def test_pyscf_forces_are_minus_energy_gradient(water):
    labeler = make_labeler(PYSCF)
    forces = labeler.label(water).forces_eVA
    comps = [(0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]  # in-plane components (x is normal)
    fd = _fd_forces(labeler, water, comps)
    analytic = np.array([forces[a, k] for a, k in comps])
    assert np.abs(analytic).max() > 0.1
    # analytic DFT gradients omit the grid-weight response: allow a few meV/Å
    np.testing.assert_allclose(analytic, fd, atol=5e-3)


def _bisector_toward_h(atoms: Atoms) -> np.ndarray:
    o, h1, h2 = atoms.positions
    b = (h1 - o) / np.linalg.norm(h1 - o) + (h2 - o) / np.linalg.norm(h2 - o)
    return b / np.linalg.norm(b)


@pytest.mark.parametrize("config, low_D, high_D", [
    (LabelerConfig(method="xtb"), 2.0, 2.7),     # GFN2-xTB: about 2.3 D
    (LabelerConfig(method="pyscf"), 1.7, 2.3),   # PBE/def2-SVP: about 2.0 D (exp. 1.85 D)
])
def test_water_dipole_along_symmetry_axis(config, low_D, high_D):
    from ase.build import molecule

    water = molecule("H2O")  # symmetric C2v geometry
    dipole = make_labeler(config).label(water).dipole_eA
    axis = _bisector_toward_h(water)
    magnitude_D = np.linalg.norm(dipole) / units.DEBYE_EA
    assert low_D < magnitude_D < high_D
    # parallel to the C2 axis, pointing from O towards the hydrogens (negative to positive)
    assert np.dot(dipole, axis) / np.linalg.norm(dipole) > 0.9999


def test_dipole_is_invariant_under_translation_and_rotates_with_molecule(water):
    labeler = make_labeler(LabelerConfig(method="xtb"))
    ref = labeler.label(water)
    moved = water.copy()
    moved.positions += [3.0, -2.0, 1.0]
    rotated = water.copy()
    rotated.rotate(90, "z", center=(0, 0, 0))
    np.testing.assert_allclose(labeler.label(moved).dipole_eA, ref.dipole_eA, atol=1e-6)
    rot = labeler.label(rotated)
    R = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(rot.dipole_eA, R @ ref.dipole_eA, atol=1e-6)
    np.testing.assert_allclose(rot.forces_eVA, ref.forces_eVA @ R.T, atol=1e-6)
    assert rot.energy_eV == pytest.approx(ref.energy_eV, abs=1e-7)


def test_ase_labeler_reproduces_xtb_through_an_import_path(water):
    generic = make_labeler(LabelerConfig(method="ase", ase=AseSettings(
        calculator="tblite.ase.TBLite", kwargs={"method": "GFN2-xTB", "verbosity": 0})))
    direct = make_labeler(LabelerConfig(method="xtb"))
    a, b = generic.label(water), direct.label(water)
    assert a.energy_eV == pytest.approx(b.energy_eV, abs=1e-8)
    np.testing.assert_allclose(a.forces_eVA, b.forces_eVA, atol=1e-8)
    np.testing.assert_allclose(a.dipole_eA, b.dipole_eA, atol=1e-8)


def test_ase_labeler_rejects_bad_import_path():
    with pytest.raises(PalirsInputError, match="labeler.ase.calculator: cannot import"):
        make_labeler(LabelerConfig(method="ase", ase=AseSettings(calculator="nope.Missing")))


def test_scf_failure_is_retried_with_safer_settings(water):
    # 2 SCF iterations cannot converge; the safer retry (1000 iterations, more damping) can.
    labeler = make_labeler(LabelerConfig(method="xtb", xtb=XtbSettings(max_iterations=2)))
    row, _ = label_one(labeler, Structure.from_atoms(water, molecule="water", source="user"),
                       retry=True)
    assert row.label_status == "ok"
    assert row.label_attempts == 2
    assert '"max_iterations": 1000' in row.label_settings
    reference = make_labeler(LabelerConfig(method="xtb")).label(water)
    assert row.energy_eV == pytest.approx(reference.energy_eV, abs=1e-6)


def test_failed_single_point_is_recorded_not_raised(water):
    broken = water.copy()
    broken.positions[1] = broken.positions[0]  # two atoms on top of each other
    labeler = make_labeler(LabelerConfig(method="xtb"))
    row, _ = label_one(labeler, Structure.from_atoms(broken, molecule="water", source="user"),
                       retry=True)
    assert row.label_status == "failed"
    assert row.label_attempts == 2
    assert "default settings" in row.label_error and "safer settings" in row.label_error
    assert row.energy_eV is None and row.forces_eVA is None


_LABEL_BITS = """
import sys
from ase.build import molecule
from palirs_data.config import LabelerConfig
from palirs_data.labelers import make_labeler
label = make_labeler(LabelerConfig(method="pyscf")).label(molecule("H2O"))
print(repr(label.energy_eV), label.forces_eVA.tobytes().hex(), label.dipole_eA.tobytes().hex())
"""


def test_pyscf_labels_have_the_same_bits_whatever_the_blas_threads():
    """A stage's own process has every core's BLAS threads, a Dask worker one: PBE water moved
    by 4.5e-13 eV between the two until the calculator limited BLAS to its own thread count."""
    import os
    import subprocess
    import sys

    out = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", _LABEL_BITS], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out.append(run.stdout.strip().splitlines()[-1])
    assert out[0] == out[1]
