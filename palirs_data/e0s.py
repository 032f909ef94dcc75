"""Isolated-atom reference energies (E0s) from the label source.

MACE models predict energies relative to a sum of atomic reference energies. We compute them
with the label source itself, for each element in its ground-state spin multiplicity (Hund's
rule), once per label source (the ``e0s`` stage, cached by DVC), and store them with the
method and settings used.
"""

from __future__ import annotations

import json
from pathlib import Path

from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from palirs_data import structures
from palirs_data.atomic import write_text_atomic
from palirs_data.errors import PalirsInputError
from palirs_data.labelers import Labeler

#: Ground-state spin multiplicity of free atoms, H to Ar.
GROUND_STATE_MULTIPLICITY = {
    1: 2, 2: 1, 3: 2, 4: 1, 5: 2, 6: 3, 7: 4, 8: 3, 9: 2, 10: 1,
    11: 2, 12: 1, 13: 2, 14: 3, 15: 4, 16: 3, 17: 2, 18: 1,
}


def isolated_atom_energies(labeler: Labeler, elements: list[str]) -> dict[int, float]:
    """Energy (eV) of each isolated atom with ``labeler``, keyed by atomic number."""
    out = {}
    for symbol in elements:
        z = atomic_numbers[symbol]
        if z not in GROUND_STATE_MULTIPLICITY:
            raise PalirsInputError(f"committee.elements: no ground-state multiplicity for {symbol}")
        atom = Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]])
        out[z] = labeler.label(atom, multiplicity=GROUND_STATE_MULTIPLICITY[z]).energy_eV
    return out


def write_e0s(path: str | Path, e0s: dict[int, float], labeler: Labeler) -> None:
    doc = {"label_method": labeler.method,
           "label_settings": structures.settings_json(labeler.settings()),
           "e0s_eV": {chemical_symbols[z]: e for z, e in sorted(e0s.items())}}
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def read_e0s(path: str | Path) -> dict[int, float]:
    """E0s by atomic number; a one-line error names the file if it is missing or malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {atomic_numbers[s]: float(e) for s, e in doc["e0s_eV"].items()}
    except FileNotFoundError:
        raise PalirsInputError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PalirsInputError(f"{path}: not an E0s file ({type(exc).__name__}: {exc})") from None
