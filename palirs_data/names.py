"""Molecule names as identifiers: the file name and the trajectory group a name becomes.

Two molecules whose names map to the same identifier would overwrite each other's files or
trajectories; :func:`palirs_data.molecules.distinct` refuses them with both names.
"""

from __future__ import annotations

import re


def file_stem(molecule: str) -> str:
    """A file name for a molecule: lower case, anything but letters and digits -> '-'."""
    return re.sub(r"[^a-z0-9]+", "-", molecule.lower()).strip("-") or "molecule"


def group_name(molecule: str) -> str:
    """The trajectory group of a molecule, e.g. ``carbon_monoxide``."""
    return re.sub(r"[^A-Za-z0-9_.,+()-]", "_", molecule.replace(" ", "_"))
