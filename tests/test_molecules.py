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
