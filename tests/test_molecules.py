"""The molecule catalogue and user molecules."""

from __future__ import annotations

import numpy as np
import pytest

from palirs_data import molecules
from palirs_data.errors import PalirsInputError


def test_training_set_is_small_hcno():
    assert len(molecules.TRAINING) == 24 and len(molecules.TRANSFER) == 8
    for mol in molecules.TRAINING:
        atoms = molecules.build_atoms(mol)
        symbols = set(atoms.get_chemical_symbols())
        assert symbols <= {"H", "C", "N", "O"}, mol.name
        assert atoms.get_chemical_symbols().count("C") <= 2, mol.name


def test_every_catalogue_geometry_is_sane():
    for mol in molecules.TRAINING + molecules.TRANSFER:
        atoms = molecules.build_atoms(mol)
        d = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
        assert d.min() > 0.9, mol.name  # no clashes (shortest bonds ~0.96-1.1 Å)
        molecules.check_name(mol.name, where="catalogue")


def test_transfer_set_grows_in_size():
    sizes = [len(molecules.build_atoms(m)) for m in molecules.TRANSFER]
    assert max(sizes) > 2 * min(sizes)
    assert not {m.name for m in molecules.TRANSFER} & {m.name for m in molecules.TRAINING}


def test_embedding_is_reproducible():
    mol = molecules.CATALOGUE["ethanol"]
    a, b = molecules.build_atoms(mol, seed=3), molecules.build_atoms(mol, seed=3)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_resolve_groups_custom_and_errors():
    custom = [molecules.Molecule("propanal", "CCC=O")]
    chosen = molecules.resolve(["transfer", "propanal", "water"], custom, where="p")
    assert len(chosen) == 10
    with pytest.raises(PalirsInputError, match="unknown molecule 'watr'"):
        molecules.resolve(["watr"], [], where="p")
    with pytest.raises(PalirsInputError, match="empty"):
        molecules.resolve([], [], where="p")
    with pytest.raises(PalirsInputError, match="RDKit rejects SMILES"):
        molecules.build_atoms(molecules.Molecule("bad", "C1CC(("))


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "x" * 80, "name\nwith newline",
                                  ".hidden"])
def test_unsafe_names_rejected(name):
    with pytest.raises(PalirsInputError, match="invalid molecule name"):
        molecules.check_name(name, where="p")


def test_a_charge_and_multiplicity_no_state_has_are_refused(tmp_path):
    """Electrons left after the unpaired ones must pair up: tblite computed a methyl radical
    as a singlet without complaint."""
    methyl = molecules.Molecule("methyl", "[CH3]")  # 9 electrons
    with pytest.raises(PalirsInputError, match=r"^molecules.custom: molecule 'methyl': 9 "
                       r"electrons \(charge 0\) cannot have multiplicity 1: give multiplicity "
                       r"2 \(doublet\), 4, \.\.\.$"):
        molecules.resolve(["methyl"], [methyl], where="molecules.custom")
    doublet = molecules.Molecule("methyl", "[CH3]", multiplicity=2)
    assert molecules.resolve(["methyl"], [doublet], where="p") == [doublet]
    assert len(molecules.build_atoms(doublet)) == 4
    with pytest.raises(PalirsInputError, match="9 electrons"):
        molecules.build_atoms(methyl)
    methoxide = molecules.Molecule("methoxide", "C[O-]", charge_e=-1)  # 18 electrons
    assert len(molecules.build_atoms(methoxide)) == 5
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO 0 0 0.12\nH 0 0.76 -0.47\nH 0 -0.76 -0.47\n")
    for charge, multiplicity, ok in ((0, 1, True), (0, 3, True), (0, 2, False), (1, 2, True),
                                     (1, 1, False), (10, 1, True), (10, 3, False)):
        water = molecules.Molecule("w", xyz=xyz, charge_e=charge, multiplicity=multiplicity)
        if ok:
            molecules.check_spin(water)
        else:
            with pytest.raises(PalirsInputError, match="cannot have multiplicity"):
                molecules.check_spin(water)
    with pytest.raises(PalirsInputError, match="charge 11 leaves -1 electrons"):
        molecules.check_spin(molecules.Molecule("w", xyz=xyz, charge_e=11))
