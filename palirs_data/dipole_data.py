"""MD frames for the dipole model: the campaign's acquisition MD, sampled evenly and labelled.

The final table is mostly normal-mode samples plus the few most force-uncertain frames per
acquisition run; the dipole model sees little of what the IR MD visits. ``dipole.md_frames``
adds, per molecule and temperature, that many frames spread evenly over every acquisition run
of every iteration (``<campaign>/iter*/trajectories.zarr``; the first frame of a run, which
continues the previous iteration's last, is left out), labelled by the label source. They
train the dipole model only, never the committee; their table is the ``dipole`` stage's
``data/labelled/dipole_md.parquet`` (failed single points recorded there, not trained on).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from palirs_data import structures
from palirs_data.compute import Executor
from palirs_data.config import LabelConfig, LabelerConfig
from palirs_data.labeling import label_table
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore

log = logging.getLogger(__name__)

SOURCE = "dipole_md"


def acquisition_stores(campaign_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, store) of every ``iter<k>/trajectories.zarr`` under ``campaign_dir``."""
    found = []
    for path in Path(campaign_dir).glob("iter*/trajectories.zarr"):
        match = re.fullmatch(r"iter(\d+)", path.parent.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def md_frames(stores: list[tuple[int, Path]], per_temperature: int,
              known_ids: set[str]) -> list[Structure]:
    """``per_temperature`` frames per molecule and temperature, evenly spaced over the frames
    of all their runs (in iteration and key order), as pending rows; frames already in
    ``known_ids`` (structure ids) are left out, not replaced."""
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
            row = Structure(molecule=molecule, numbers=traj.numbers,
                            positions_A=traj.read("positions_A", frame, frame + 1)[0],
                            source=SOURCE, iteration=iteration, temperature_K=temperature)
            if row.structure_id not in known_ids:
                rows.append(row)
    return rows


@dataclass
class MdFrames:
    """The labelled MD frames (failed ones included) and the label checkpoint to clear once
    the stage has written them."""

    table: pa.Table
    checkpoint: Path | None = None

    @property
    def n_ok(self) -> int:
        return sum(s == "ok" for s in self.table.column("label_status").to_pylist())

    @property
    def n_failed(self) -> int:
        return self.table.num_rows - self.n_ok


def labelled_md_frames(final: pa.Table, campaign_dir: Path | None, per_temperature: int, *,
                       labeler_config: LabelerConfig, label_config: LabelConfig,
                       executor: Executor | None = None) -> MdFrames:
    """The labelled (or failed) :func:`md_frames` of the campaign's acquisition MD (none
    without a campaign directory or with ``per_temperature`` 0)."""
    if campaign_dir is None or per_temperature == 0:
        return MdFrames(structures.empty_table())
    stores = acquisition_stores(campaign_dir)
    rows = md_frames(stores, per_temperature, set(final.column("structure_id").to_pylist()))
    log.info("dipole: %d MD frames from %d acquisition stores (%d per molecule and "
             "temperature)", len(rows), len(stores), per_temperature)
    if not rows:
        return MdFrames(structures.empty_table())
    report = label_table(structures.to_table(rows), labeler_config=labeler_config,
                         config=label_config, executor=executor)
    return MdFrames(report.table, report.checkpoint)
