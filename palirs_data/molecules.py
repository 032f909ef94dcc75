"""The molecule catalogue: names, SMILES and 3D starting geometries.

:data:`TRAINING` is the paper's kind of training set: 24 small catalysis-relevant molecules of
H, C, N and O with at most two carbon atoms. :data:`TRANSFER` is held apart to test
transferability: 8 molecules that grow in size and vary in functional group. Users add their
own molecules by SMILES or by an XYZ file (``params.yaml``: ``molecules.custom``).

3D geometries come from RDKit (ETKDG embedding with a fixed seed, then MMFF94 relaxation); the
label source optimises them further in the ``sample`` stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from palirs_data.errors import PalirsInputError
from palirs_data.names import file_stem, group_name


@dataclass(frozen=True)
class Molecule:
    """A named molecule with a SMILES string or an XYZ file for its geometry."""

    name: str
    smiles: str | None = None
    xyz: Path | None = None
    charge_e: int = 0
    multiplicity: int = 1


TRAINING: tuple[Molecule, ...] = tuple(
    Molecule(name, smiles)
    for name, smiles in [
        ("water", "O"),
        ("ammonia", "N"),
        ("methane", "C"),
        ("carbon monoxide", "[C-]#[O+]"),
        ("carbon dioxide", "O=C=O"),
        ("hydrogen cyanide", "C#N"),
        ("hydrogen peroxide", "OO"),
        ("formaldehyde", "C=O"),
        ("methanol", "CO"),
        ("formic acid", "OC=O"),
        ("ethane", "CC"),
        ("ethene", "C=C"),
        ("ethyne", "C#C"),
        ("acetaldehyde", "CC=O"),
        ("ethanol", "CCO"),
        ("acetic acid", "CC(=O)O"),
        ("dimethyl ether", "COC"),
        ("ethylamine", "CCN"),
        ("formamide", "NC=O"),
        ("acetonitrile", "CC#N"),
        ("ethylene oxide", "C1CO1"),
        ("glycolaldehyde", "OCC=O"),
        ("methyl formate", "COC=O"),
        ("acetamide", "CC(N)=O"),
    ]
)

# Pyridine completes the set: an aromatic N heterocycle (a common ligand and base in catalysis)
# that no training molecule resembles, next to benzene's aromatic C-H modes.
TRANSFER: tuple[Molecule, ...] = tuple(
    Molecule(name, smiles)
    for name, smiles in [
        ("methylamine", "CN"),
        ("isopropyl alcohol", "CC(C)O"),
        ("acetone", "CC(C)=O"),
        ("1-pentanamine", "CCCCCN"),
        ("pentanoic acid", "CCCCC(=O)O"),
        ("1,3-butadiene", "C=CC=C"),
        ("benzene", "c1ccccc1"),
        ("pyridine", "c1ccncc1"),
    ]
)

CATALOGUE: dict[str, Molecule] = {m.name: m for m in TRAINING + TRANSFER}
GROUPS: dict[str, tuple[Molecule, ...]] = {"training": TRAINING, "transfer": TRANSFER}

# Names become identifiers in tables, trajectory groups and file names: keep them tame.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ,'()+_.-]{0,63}$")


def check_name(name: str, *, where: str) -> str:
    """Return ``name`` if it is a safe molecule name, else raise naming ``where``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        prefix = f"{where}: " if where else ""
        raise PalirsInputError(
            f"{prefix}invalid molecule name {name!r} (letters, digits, space and ,'()+_.- ; "
            "at most 64 characters, starting with a letter or digit)"
        )
    return name


def closest_hint(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``name``, else ``''``."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _rdkit_molecule(molecule: Molecule):
    """RDKit's molecule of ``molecule``'s SMILES, hydrogens explicit; a one-line error if RDKit
    rejects it."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(molecule.smiles or "")
    if mol is None or mol.GetNumAtoms() == 0:
        raise PalirsInputError(
            f"molecule '{molecule.name}': RDKit rejects SMILES {molecule.smiles!r}")
    return Chem.AddHs(mol)


def canonical_smiles(molecule: Molecule) -> str | None:
    """RDKit's canonical SMILES of ``molecule`` (None for an XYZ molecule)."""
    if molecule.smiles is None:
        return None
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(_rdkit_molecule(molecule)))


def elements(molecule: Molecule) -> set[str]:
    """The chemical symbols of ``molecule``, hydrogens included, without building 3D."""
    from ase.data import chemical_symbols

    if molecule.smiles is not None:
        return {a.GetSymbol() for a in _rdkit_molecule(molecule).GetAtoms()}
    return {chemical_symbols[int(z)] for z in _atoms_from_xyz(molecule).numbers}


def distinct(selected: list[Molecule], *, where: str) -> None:
    """Refuse two molecules that would share a trajectory, a file or a structure: names that
    normalise alike (trajectory groups, file names) or one SMILES under two names."""
    seen: dict[tuple[str, str], str] = {}
    for m in selected:
        for kind, key in (("trajectory group", group_name(m.name)),
                          ("file name", file_stem(m.name)),
                          ("molecule", canonical_smiles(m) or "")):
            if not key:
                continue
            other = seen.setdefault((kind, key), m.name)
            if other != m.name:
                what = (f"are the same molecule (SMILES {key})" if kind == "molecule"
                        else f"share the {kind} '{key}'")
                raise PalirsInputError(f"{where}: '{other}' and '{m.name}' {what}; "
                                       "rename or drop one")


def check_spin(molecule: Molecule, numbers=None, *, where: str = "") -> None:
    """Refuse a charge and multiplicity that no state of ``molecule`` has: the electrons left
    after the unpaired ones (multiplicity − 1) must pair up. GFN2-xTB (tblite) computes such a
    state without complaint (a methyl radical as a singlet, with fractional occupations), so a
    campaign would learn it. ``numbers``: the atomic numbers, if already built."""
    if numbers is None:
        numbers = ([a.GetAtomicNum() for a in _rdkit_molecule(molecule).GetAtoms()]
                   if molecule.smiles is not None else _atoms_from_xyz(molecule).numbers)
    electrons = int(np.sum(numbers)) - molecule.charge_e
    unpaired = molecule.multiplicity - 1
    prefix = f"{where}: " if where else ""
    if electrons < 0:
        raise PalirsInputError(f"{prefix}molecule '{molecule.name}': charge "
                               f"{molecule.charge_e} leaves {electrons} electrons")
    if unpaired > electrons or (electrons - unpaired) % 2:
        fits = "1 (singlet), 3, ..." if electrons % 2 == 0 else "2 (doublet), 4, ..."
        raise PalirsInputError(
            f"{prefix}molecule '{molecule.name}': {electrons} electrons (charge "
            f"{molecule.charge_e}) cannot have multiplicity {molecule.multiplicity}: give "
            f"multiplicity {fits}")


def resolve(names: list[str], custom: list[Molecule], *, where: str,
            allow_empty: bool = False) -> list[Molecule]:
    """Molecules selected by name: catalogue names, group names (``training``, ``transfer``),
    and the user's own ``custom`` molecules. Raises on an unknown or (unless ``allow_empty``)
    empty selection, on two custom molecules of one name, and on molecules that would share a
    trajectory, a file name or a structure (:func:`distinct`)."""
    own: dict[str, Molecule] = {}
    for m in custom:
        check_name(m.name, where=where)
        if m.name in CATALOGUE:
            raise PalirsInputError(f"{where}: custom molecule '{m.name}' shadows a catalogue name")
        if m.name in own:
            raise PalirsInputError(f"{where}: two entries of molecules.custom are named "
                                   f"'{m.name}'")
        own[m.name] = m
    selected: dict[str, Molecule] = {}
    for name in names:
        if name in GROUPS:
            selected.update({m.name: m for m in GROUPS[name]})
        elif name in own:
            selected[name] = own[name]
        elif name in CATALOGUE:
            selected[name] = CATALOGUE[name]
        else:
            hint = closest_hint(name, [*CATALOGUE, *GROUPS, *own])
            raise PalirsInputError(
                f"{where}: unknown molecule '{name}'{hint}; choose a catalogue name, a group "
                f"({', '.join(GROUPS)}) or add it under molecules.custom (the catalogue: "
                "palirs_data.molecules.CATALOGUE)" if hint else
                f"{where}: unknown molecule '{name}'; choose a catalogue name "
                f"({', '.join(sorted(CATALOGUE))}), a group ({', '.join(GROUPS)}) or add it "
                "under molecules.custom"
            )
    if not selected and not allow_empty:
        raise PalirsInputError(f"{where}: the molecule list is empty")
    result = list(selected.values())
    distinct(result, where=where)
    for m in own.values():
        if m.name in selected:
            check_spin(m, where=where)
    return result


def build_atoms(molecule: Molecule, *, seed: int = 0) -> Atoms:
    """3D geometry of ``molecule`` as ASE ``Atoms`` (Å), with charge and multiplicity in info."""
    if molecule.xyz is not None:
        atoms = _atoms_from_xyz(molecule)
    elif molecule.smiles is not None:
        atoms = _atoms_from_smiles(molecule, seed=seed)
    else:
        raise PalirsInputError(f"molecule '{molecule.name}': give a SMILES string or an XYZ file")
    check_spin(molecule, atoms.numbers)
    atoms.info.update(
        molecule=molecule.name, charge=molecule.charge_e, multiplicity=molecule.multiplicity
    )
    return atoms


def _atoms_from_smiles(molecule: Molecule, *, seed: int) -> Atoms:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = _rdkit_molecule(molecule)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if mol.GetNumAtoms() > 1 and AllChem.EmbedMolecule(mol, params) != 0:
        raise PalirsInputError(
            f"molecule '{molecule.name}': RDKit could not embed SMILES {molecule.smiles!r} in 3D"
        )
    if mol.GetNumAtoms() == 1:
        positions = np.zeros((1, 3))
    else:
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        positions = mol.GetConformer().GetPositions()
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    charge = Chem.GetFormalCharge(mol)
    if charge != molecule.charge_e:
        raise PalirsInputError(
            f"molecule '{molecule.name}': SMILES has total charge {charge}, "
            f"but charge_e is {molecule.charge_e}"
        )
    return Atoms(numbers=numbers, positions=positions)


def _atoms_from_xyz(molecule: Molecule) -> Atoms:
    from palirs_data.xyz import read_structures_file

    table = read_structures_file(molecule.xyz, molecule=molecule.name)  # type: ignore[arg-type]
    numbers = np.asarray(table.column("numbers")[0].as_py())
    positions = np.asarray(table.column("positions_A")[0].as_py())
    return Atoms(numbers=numbers, positions=positions)
