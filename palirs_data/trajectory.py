"""The trajectory store: MD trajectories in one Zarr (v3) store, one group per trajectory.

Layout of a store::

    store.zarr/
      <key>/                    group, one trajectory; key = "<molecule>/<T>K/<replica>"
        positions_A             (n_frames, n_atoms, 3) float64, Å
        velocities_A_fs         (n_frames, n_atoms, 3) float64, Å/fs
        model_dipole_eA         (n_frames, 3) float64, e·Å (the dipole model's prediction)
        model_energy_eV         (n_frames,) float64, eV (committee-mean potential energy)
        dipole_eA, energy_eV    the same from the label source (reference MD): labels
        force_std_max_eVA       (n_frames,) float64, eV/Å (max over atoms of |committee std|)
        force_rel_dev           (n_frames,) float64 (committee force std / force magnitude)
        time_fs                 (n_frames,) float64, fs
      attrs: n_frames (committed), numbers, molecule, timestep_fs, temperature_K, models, ...

Every array is chunked along frames and registered (:data:`ARRAYS`): its per-frame shape and
dtype are checked on each append. A trajectory holds the subset of arrays it was created with;
each append gives all of them for the same number of frames. The attribute ``n_frames`` is
written last, after every array has grown, so it is the commit point: a process killed in the
middle of an append leaves arrays longer than ``n_frames``, and reopening the store for writing
trims them back, so the store is always consistent and a run resumes from its last committed
frame.

Predictions and labels never share a name: an ML run stores ``model_energy_eV`` and
``model_dipole_eA``, a run of the label source ``energy_eV`` and ``dipole_eA``, as the structure
table names its labels. :func:`resume` is the one rule by which any MD protocol continues what a
killed attempt left in a store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from palirs_data.errors import PalirsInputError
from palirs_data.names import group_name


@dataclass(frozen=True)
class ArraySpec:
    """Per-frame shape (``"n_atoms"`` stands for the trajectory's atom count), dtype, unit."""

    frame_shape: tuple[int | str, ...]
    dtype: str
    unit: str


ARRAYS: dict[str, ArraySpec] = {
    "positions_A": ArraySpec(("n_atoms", 3), "float64", "Å"),
    "velocities_A_fs": ArraySpec(("n_atoms", 3), "float64", "Å/fs"),
    # the label source's (reference MD) and the models' (ML MD): never one name for both
    "dipole_eA": ArraySpec((3,), "float64", "e·Å"),
    "energy_eV": ArraySpec((), "float64", "eV"),
    "model_dipole_eA": ArraySpec((3,), "float64", "e·Å"),
    "model_energy_eV": ArraySpec((), "float64", "eV"),  # the committee mean
    "force_std_max_eVA": ArraySpec((), "float64", "eV/Å"),
    "force_rel_dev": ArraySpec((), "float64", "1"),
    "time_fs": ArraySpec((), "float64", "fs"),
}

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,+()-]{0,127}$")


def run_group(molecule: str, temperature_K: float) -> str:
    """The runs of one molecule at one temperature, e.g. ``carbon_monoxide/300K``."""
    return f"{group_name(molecule)}/{temperature_K:g}K"


def trajectory_key(molecule: str, temperature_K: float, replica: int) -> str:
    """Group key of a trajectory, e.g. ``carbon_monoxide/300K/0``."""
    return f"{run_group(molecule, temperature_K)}/{int(replica)}"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not parts or not all(_SEGMENT.match(p) and p not in {".", ".."} for p in parts):
        raise PalirsInputError(f"invalid trajectory key {key!r}")
    return key


class Trajectory:
    """One trajectory group: checked appends, committed frame count, reads."""

    def __init__(self, group: zarr.Group, key: str) -> None:
        self._g = group
        self.key = key

    @property
    def attrs(self) -> Mapping[str, Any]:
        return dict(self._g.attrs)

    @property
    def n_frames(self) -> int:
        return int(self._g.attrs["n_frames"])

    @property
    def numbers(self) -> np.ndarray:
        return np.asarray(self._g.attrs["numbers"], dtype=np.int16)

    @property
    def array_names(self) -> list[str]:
        return list(self._g.attrs["arrays"])

    def _frame_shape(self, name: str) -> tuple[int, ...]:
        n = len(self._g.attrs["numbers"])
        return tuple(n if d == "n_atoms" else int(d) for d in ARRAYS[name].frame_shape)

    def append(self, **arrays: np.ndarray) -> int:
        """Append frames: every registered array of this trajectory, same frame count.

        Returns the new committed frame count.
        """
        names = set(self.array_names)
        if set(arrays) != names:
            missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
            raise ValueError(f"trajectory {self.key}: append needs exactly {sorted(names)} "
                             f"(missing {missing}, unexpected {extra})")
        n_new = None
        checked = {}
        for name, value in arrays.items():
            spec = ARRAYS[name]
            data = np.asarray(value, dtype=spec.dtype)
            expected = self._frame_shape(name)
            if data.shape[1:] != expected:
                raise ValueError(f"trajectory {self.key}: array '{name}' frames have shape "
                                 f"{data.shape[1:]}, expected {expected}")
            if n_new is None:
                n_new = data.shape[0]
            elif data.shape[0] != n_new:
                raise ValueError(f"trajectory {self.key}: arrays disagree on the number of "
                                 f"frames ({name} has {data.shape[0]}, others {n_new})")
            checked[name] = data
        if not n_new:
            return self.n_frames
        start = self.n_frames
        for name, data in checked.items():
            arr = self._g[name]
            arr.resize((start + n_new, *arr.shape[1:]))
            arr[start:start + n_new] = data
        self._g.attrs["n_frames"] = start + n_new  # commit point
        return start + n_new

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Committed frames ``[start:stop]`` of array ``name``."""
        if name not in self.array_names:
            raise KeyError(f"trajectory {self.key} has no array '{name}'")
        s = slice(start, stop).indices(self.n_frames)
        return np.asarray(self._g[name][s[0]:s[1]])

    def last(self, name: str) -> np.ndarray:
        """The last committed frame of array ``name``."""
        if self.n_frames == 0:
            raise IndexError(f"trajectory {self.key} is empty")
        return self.read(name, self.n_frames - 1)[0]

    def truncate(self, n_frames: int) -> None:
        """Drop frames after ``n_frames`` (e.g. those after a guard stopped a run)."""
        n_frames = max(0, min(int(n_frames), self.n_frames))
        self._g.attrs["n_frames"] = n_frames
        self._trim()

    def _trim(self) -> None:
        n = self.n_frames
        for name in self.array_names:
            arr = self._g[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))

    def set_attrs(self, **attrs: Any) -> None:
        self._g.attrs.update(attrs)


class TrajectoryStore:
    """A Zarr v3 store of trajectories (see the module docstring for the layout)."""

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        self.path = Path(path)
        if mode == "r" and not self.path.exists():
            raise PalirsInputError(f"{self.path}: no such trajectory store")
        try:
            self._root = zarr.open_group(store=str(self.path), mode=mode, zarr_format=3)
        except Exception as exc:
            raise PalirsInputError(f"{self.path}: not a Zarr v3 trajectory store ({exc})") from None
        self._writable = mode != "r"

    def keys(self) -> list[str]:
        """Keys of all trajectories in the store."""
        out = []

        def walk(group: zarr.Group, prefix: str) -> None:
            for name, child in group.groups():
                key = f"{prefix}{name}"
                if "n_frames" in child.attrs:
                    out.append(key)
                else:
                    walk(child, f"{key}/")

        walk(self._root, "")
        return sorted(out)

    def __contains__(self, key: str) -> bool:
        # a direct lookup, not a walk of the store: MD tasks on other workers may be creating
        # their own trajectories in it at the same time
        try:
            group = self._root[_check_key(key)]
        except (KeyError, PalirsInputError):
            return False
        return isinstance(group, zarr.Group) and "n_frames" in group.attrs

    def require_parents(self, keys: Iterable[str]) -> None:
        """Create the parent groups of ``keys`` (e.g. ``methanol/300K``), so that tasks
        writing different trajectories of one store at the same time each create only their
        own group."""
        for key in keys:
            parent = _check_key(key).rsplit("/", 1)[0]
            if parent != key:
                self._root.require_group(parent)

    def __getitem__(self, key: str) -> Trajectory:
        _check_key(key)
        try:
            group = self._root[key]
        except KeyError:
            raise KeyError(f"{self.path}: no trajectory '{key}'") from None
        traj = Trajectory(group, key)
        if self._writable:
            traj._trim()  # drop frames of an interrupted append
        return traj

    def create(self, key: str, *, numbers: Sequence[int], molecule: str, timestep_fs: float,
               temperature_K: float | None, arrays: Iterable[str],
               chunk_frames: int = 256, **attrs: Any) -> Trajectory:
        """Create an empty trajectory holding ``arrays``; ``attrs`` are stored too (e.g.
        ``models``, ``seed``). A trajectory holds the label source's energies and dipoles or
        a model's, never both."""
        _check_key(key)
        arrays = list(arrays)
        unknown = [a for a in arrays if a not in ARRAYS]
        if unknown:
            raise ValueError(f"unknown trajectory arrays {unknown}; choose from {list(ARRAYS)}")
        labels, predictions = ({f(flag) for f in (energy_array, dipole_array)} & set(arrays)
                               for flag in (True, False))
        if labels and predictions:
            raise ValueError(f"trajectory '{key}': labels and predictions in one run "
                             f"({sorted(labels)}, {sorted(predictions)})")
        if key in self:
            raise ValueError(f"{self.path}: trajectory '{key}' exists already")
        group = self._root.require_group(key)
        n_atoms = len(numbers)
        for name in arrays:
            frame = tuple(n_atoms if d == "n_atoms" else int(d)
                          for d in ARRAYS[name].frame_shape)
            arr = group.create_array(name, shape=(0, *frame), chunks=(chunk_frames, *frame),
                                     dtype=ARRAYS[name].dtype, fill_value=np.nan)
            arr.attrs["unit"] = ARRAYS[name].unit
        group.attrs.update(dict(
            attrs, numbers=[int(z) for z in numbers], molecule=molecule,
            timestep_fs=float(timestep_fs),
            temperature_K=None if temperature_K is None else float(temperature_K),
            arrays=arrays, n_frames=0))
        return Trajectory(group, key)

    def open_or_create(self, key: str, **kwargs: Any) -> Trajectory:
        """The existing trajectory ``key`` (to continue it) or a new one. An existing one must
        hold the same molecule (name and atomic numbers) and temperature: a run never
        continues another molecule's trajectory."""
        if key not in self:
            return self.create(key, **kwargs)
        traj = self[key]
        stored = dict(traj.attrs)
        theirs = {k: kwargs[k] for k in ("molecule", "numbers", "temperature_K") if k in kwargs}
        if "numbers" in theirs:
            theirs["numbers"] = [int(z) for z in theirs["numbers"]]
        for name, value in theirs.items():
            mine = stored.get(name)
            same = (mine == value if name != "temperature_K" or None in (mine, value)
                    else abs(float(mine) - float(value)) < 1e-9)
            if not same:
                raise PalirsInputError(f"{self.path}: trajectory '{key}' holds {name} {mine!r}, "
                                       f"not {value!r}: two runs would share one trajectory")
        return traj


def energy_array(labels: bool) -> str:
    """The name of the potential energy an MD ran on: the label source's or the committee's."""
    return "energy_eV" if labels else "model_energy_eV"


def dipole_array(labels: bool) -> str:
    """The name of the dipoles recorded along an MD: the label source's or the model's."""
    return "dipole_eA" if labels else "model_dipole_eA"


def dipoles_of(traj: Trajectory) -> np.ndarray | None:
    """The dipole series of a trajectory (e·Å), whichever produced it; None when it has none
    (a run stopped before it produced)."""
    for name in (dipole_array(False), dipole_array(True)):
        if name in traj.array_names:
            return traj.read(name)
    return None


@dataclass
class Resumed:
    """What :func:`resume` found: the runs the guard stopped (they stay stopped), those that
    go on, and the frames each of these keeps (0: they start from their beginning)."""

    stopped: list[str]
    going: list[str]
    frames: int
    kept_frames: int  # frames of the killed attempt kept in all (stopped runs' included)


def resume(store: TrajectoryStore, keys: Sequence[str]) -> Resumed:
    """The one rule by which a protocol continues what a killed attempt at the same computation
    left in ``store`` (the store is keyed by everything the runs depend on): a run the guard
    stopped stays stopped; the others are cut back to the shortest of them (an append the kill
    interrupted between trajectories; a run with no frame yet cuts all of them back to 0) and
    continue from there. Every replica's noise is a function of its seed and step
    (:mod:`palirs_data.dynamics`), so the continued runs end where uninterrupted ones would."""
    stopped = [k for k in keys
               if k in store and store[k].attrs.get("stopped_at_time_fs") is not None]
    going = [k for k in keys if k not in set(stopped)]
    frames = min((store[k].n_frames if k in store else 0 for k in going), default=0)
    for k in going:
        if k in store and store[k].n_frames > frames:
            store[k].truncate(frames)
    kept = sum(store[k].n_frames for k in keys if k in store)
    return Resumed(stopped, going, frames, kept)
