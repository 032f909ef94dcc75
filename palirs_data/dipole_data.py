"""MD frames for the dipole model: the campaign's acquisition MD, sampled evenly and labelled.

The final table is mostly normal-mode samples plus the few most force-uncertain frames per
acquisition run; the dipole model sees little of what the IR MD visits. ``dipole.md_frames``
adds, per molecule and temperature, that many frames spread evenly over every acquisition run
of every iteration of the campaign (``<campaign>/<iteration>/trajectories.zarr``; the first
frame of a run, which continues the previous iteration's last, is left out), labelled by the
label source. The ``campaign`` stage picks them (``data/labelled/md_frames.parquet``, pending:
it changes only when the campaign's MD does), the ``dipole`` stage labels them
(``data/labelled/dipole_md.parquet``, failed single points recorded there, not trained on).
They train the dipole model only, never the committee.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from palirs_data import structures
from palirs_data.config import iteration_number
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore

log = logging.getLogger(__name__)

SOURCE = "dipole_md"


def acquisition_stores(campaign_dir: Path, names: list[str]) -> list[tuple[int, Path]]:
    """(iteration, store) of the iterations ``names`` (in order) that ran acquisition MD."""
    found = []
    for name in names:
        path = Path(campaign_dir) / name / "trajectories.zarr"
        if path.exists():
            found.append((iteration_number(name), path))
    return found


def md_frames(stores: list[tuple[int, Path]], per_temperature: int, known_ids: set[str],
              states: dict[str, tuple[int, int]] | None = None) -> list[Structure]:
    """``per_temperature`` frames per molecule and temperature, evenly spaced over the frames
    of all their runs (in iteration and key order), as pending rows; frames already in
    ``known_ids`` (structure ids) are left out, not replaced. ``states``: (charge,
    multiplicity) per molecule (default neutral singlet)."""
    states = states or {}
    runs: dict[tuple[str, float], list[tuple[int, object]]] = defaultdict(list)
    for iteration, path in stores:
        store = TrajectoryStore(path, mode="r")
        for key in sorted(store.keys()):
            traj = store[key]
            if traj.n_frames > 1:
                attrs = traj.attrs
                runs[(attrs["molecule"], float(attrs["temperature_K"]))].append(
                    (iteration, traj))
    rows = []
    for (molecule, temperature), group in sorted(runs.items()):
        sizes = np.array([traj.n_frames - 1 for _, traj in group])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        picks = np.unique(np.linspace(0, offsets[-1] - 1, per_temperature).round().astype(int))
        for pick in picks:
            run = int(np.searchsorted(offsets, pick, side="right") - 1)
            iteration, traj = group[run]
            frame = int(pick - offsets[run]) + 1
            charge, multiplicity = states.get(molecule, (0, 1))
            row = Structure(molecule=molecule, numbers=traj.numbers,
                            positions_A=traj.read("positions_A", frame, frame + 1)[0],
                            charge_e=charge, multiplicity=multiplicity, source=SOURCE,
                            iteration=iteration, temperature_K=temperature)
            if row.structure_id not in known_ids:
                rows.append(row)
    return rows


def md_frames_table(campaign_dir: Path, names: list[str], per_temperature: int,
                    final: pa.Table) -> pa.Table:
    """:func:`md_frames` of the campaign's iterations ``names`` as a pending table, each
    molecule with its charge and multiplicity in ``final``; frames ``final`` already holds
    are left out."""
    if per_temperature == 0:
        return structures.empty_table()
    stores = acquisition_stores(campaign_dir, names)
    states = {m: (int(c), int(k)) for m, c, k in zip(*(final.column(name).to_pylist() for name
                                                     in ("molecule", "charge_e", "multiplicity")))}
    rows = md_frames(stores, per_temperature, set(final.column("structure_id").to_pylist()),
                     states)
    log.info("%d MD frames for the dipole model from %d acquisition stores (%d per molecule "
             "and temperature)", len(rows), len(stores), per_temperature)
    return structures.to_table(rows) if rows else structures.empty_table()
