"""Batched committee molecular dynamics: many replicas, one graph, one model call per member.

Replicas (molecules × temperatures × trajectories) advance together. Every step each committee
member is evaluated once on the batch of all active replicas (:class:`Committee.evaluate`),
giving mean forces and the committee spread per replica; the optional dipole model is
evaluated on the frames that are written. Replicas can be stopped one by one (by a guard)
while the others go on.

Integrator: BAOAB Langevin splitting (Leimkuhler & Matthews, Appl. Math. Res. Express 2013,
34), per-replica temperature, friction γ (fs⁻¹) and seed:

    B: v += a dt/2;  A: x += v dt/2;  O: v = c1 v + sqrt((1 − c1²) kT/m) ξ, c1 = exp(−γ dt);
    A: x += v dt/2;  (new forces)  B: v += a dt/2.

With γ = 0 the O step is the identity and BAOAB is velocity Verlet, i.e. NVE. Forces are the
committee mean. Units: Å, Å/fs, amu, eV/Å, fs, K.

Frames (positions, velocities, committee energy and spread, time, and dipoles when a dipole
model is given) stream into a :class:`TrajectoryStore` in chunks; a run continues from the
last committed frame of each trajectory. Random numbers are a function of a replica's seed
and its step alone: the noise of step k is drawn from a Philox generator keyed by the seed at
counter k (:func:`step_noise`), the starting velocities from another counter. So the dynamics
do not depend on how often frames are written or how they are chunked, nor on the batch, and
a run killed and continued from any committed frame draws the same noise as one that was never
interrupted: it ends with the same frames (same batch, same device).
A replica stopped by a guard records ``stopped_at_time_fs`` and ``stop_reason`` in its
trajectory's attributes when it stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from palirs_data import units
from palirs_data.committee import CommitteeOutput, MolecularBatch, predict_dipoles
from palirs_data.errors import PalirsInputError
from palirs_data.trajectory import TrajectoryStore, dipole_array, energy_array

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameters and the values :func:`reuse_freed_memory` sets: blocks up to
#: 32 MiB come from the heap, and up to 256 MiB of freed heap stay with the process.
_MALLOPT = {"M_MMAP_THRESHOLD": (-3, 32 * 2**20), "M_TRIM_THRESHOLD": (-1, 256 * 2**20)}


def reuse_freed_memory() -> bool:
    """Let this process reuse the memory its MD steps free instead of returning it to the
    system (glibc ``mallopt``; False, and nothing changed, where the C library is not glibc).

    Every step allocates and frees the same tensors of a few MiB (the edge features of the
    batch). With glibc's defaults these come from fresh pages each step, and touching fresh
    pages was measured to cost some 10 % of a committee call (36 methanol replicas, float32,
    one thread: 30.6 ms per member, 27.8 with this; docs/method.md, "A faster edge tensor
    product"). Process-wide and lasting; called by :class:`BatchedMD` (``reuse_memory``).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT.values())


class ForceField(Protocol):
    """What :class:`BatchedMD` drives: the committee (:class:`~palirs_data.committee.Committee`)
    or the label source (:class:`palirs_data.reference_md.LabelerForceField`). Positions in,
    energies and forces out (and, for a committee, its spread) for a batch of replicas."""

    dtype: torch.dtype
    device: str
    labels: bool  # True: the label source (its energies are labels), False: a model

    def batch(self, numbers: Sequence[np.ndarray], device: str | None = None
              ) -> MolecularBatch:
        """The static topology of replicas with these atomic numbers."""

    def evaluate(self, batch: MolecularBatch, positions: torch.Tensor) -> CommitteeOutput:
        """Energies (per replica) and forces (per atom) at ``positions`` (Å)."""


@dataclass
class Replica:
    """One independent trajectory. ``velocities_A_fs`` None: Maxwell-Boltzmann at
    ``temperature_K`` (from ``seed``); a trajectory already in the store overrides both
    positions and velocities with its last frame."""

    key: str
    molecule: str
    numbers: np.ndarray
    positions_A: np.ndarray
    temperature_K: float
    friction_fs: float
    seed: int
    velocities_A_fs: np.ndarray | None = None
    time_fs: float = 0.0
    n_frames: int = 0  # frames committed to the store (before this run, then as written)
    stopped_at_step: int | None = None
    buffer: dict[str, list] = field(default_factory=dict, repr=False)
    step_index: int = 0  # steps since the trajectory began: round(time_fs / timestep)


def _philox(seed: int, step: int, stream: int) -> np.random.Generator:
    """Random numbers of replica ``seed`` at ``step`` in ``stream`` (0: thermostat noise,
    1: starting velocities): Philox keyed by the seed, its counter set by step and stream, so
    no two (step, stream) pairs share numbers (one step's draws advance only the lowest word)."""
    return np.random.Generator(np.random.Philox(key=int(seed), counter=[0, step, stream, 0]))


def step_noise(seed: int, step: int, n_atoms: int) -> np.ndarray:
    """The standard normal numbers (n_atoms, 3) of the thermostat in step ``step`` (1, 2, ...)
    of a replica seeded ``seed``: a function of these alone."""
    return _philox(seed, step, 0).standard_normal((n_atoms, 3))


def maxwell_boltzmann(numbers: np.ndarray, temperature_K: float,
                      generator: torch.Generator | np.random.Generator,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Velocities (Å/fs) drawn at ``temperature_K``, centre-of-mass motion removed: the
    kinetic energy then averages (3N−3)·kT/2 (3 degrees of freedom fewer)."""
    from ase.data import atomic_masses

    m = torch.as_tensor(atomic_masses[np.asarray(numbers)], dtype=dtype)[:, None]
    sigma = torch.sqrt(units.KB_EV_PER_K * temperature_K / m / units.AMU_A2_FS2_IN_EV)
    if isinstance(generator, np.random.Generator):
        xi = torch.as_tensor(generator.standard_normal((len(numbers), 3)), dtype=dtype)
    else:
        xi = torch.randn((len(numbers), 3), generator=generator, dtype=dtype)
    v = sigma * xi
    return v - (m * v).sum(0) / m.sum()


def kinetic_energy_eV(batch: MolecularBatch, velocities: torch.Tensor) -> torch.Tensor:
    """Kinetic energy per replica, eV."""
    ke_atom = 0.5 * batch.masses_amu * (velocities ** 2).sum(-1) * units.AMU_A2_FS2_IN_EV
    return torch.zeros(batch.n_graphs, dtype=ke_atom.dtype,
                       device=ke_atom.device).index_add_(0, batch.batch, ke_atom)


def kinetic_temperature_K(batch: MolecularBatch, velocities: torch.Tensor) -> torch.Tensor:
    """Instantaneous kinetic temperature per replica, K (3N degrees of freedom)."""
    dof = torch.as_tensor(3 * batch.n_atoms, dtype=velocities.dtype, device=velocities.device)
    return 2 * kinetic_energy_eV(batch, velocities) / (dof * units.KB_EV_PER_K)


#: sees the engine and a step's committee output; returns a mask over ``md.active`` of the
#: replicas to stop
Guard = Callable[["BatchedMD", CommitteeOutput], np.ndarray]


@dataclass
class MDReport:
    steps: int
    replica_steps: int
    frames_written: int
    stopped: list[str]
    seconds: float


class BatchedMD:
    """Committee-driven MD of many replicas at once (see module docstring). ``reuse_memory``
    calls :func:`reuse_freed_memory` for this process (off only to measure without it)."""

    def __init__(self, committee: ForceField, replicas: Sequence[Replica], *,
                 timestep_fs: float, store: TrajectoryStore | None = None,
                 dipole_model: torch.nn.Module | None = None, chunk_frames: int = 256,
                 model_names: Sequence[str] = (), reuse_memory: bool = True) -> None:
        if reuse_memory:
            reuse_freed_memory()
        self.committee = committee
        self.dt = float(timestep_fs)
        self.store = store
        self.dipole_model = dipole_model
        self.chunk_frames = chunk_frames
        self.dtype = committee.dtype
        self.device = committee.device  # the models' device: CPU or GPU
        self.replicas = list(replicas)
        twice = sorted(k for k, n in Counter(r.key for r in self.replicas).items() if n > 1)
        if twice:
            raise PalirsInputError(f"two runs share the trajectory '{twice[0]}' (molecule names "
                                   "that normalise alike, or a temperature listed twice)")
        # labels (the label source drives the run) and predictions never share a name
        self._energy = energy_array(getattr(committee, "labels", False))
        self._dipole = dipole_array(getattr(dipole_model, "labels", False))
        self._arrays = ["positions_A", "velocities_A_fs", self._energy,
                        "force_std_max_eVA", "force_rel_dev", "time_fs"]
        self._arrays += [self._dipole] if dipole_model else []
        positions, velocities = [], []
        for r in self.replicas:
            if store is not None:
                traj = store.open_or_create(
                    r.key, numbers=r.numbers, molecule=r.molecule, timestep_fs=self.dt,
                    temperature_K=r.temperature_K, arrays=self._arrays,
                    chunk_frames=chunk_frames, friction_fs=r.friction_fs, seed=r.seed,
                    models=list(model_names))
                r.n_frames = traj.n_frames
                if traj.n_frames:  # continue where the trajectory stopped
                    r.positions_A = traj.last("positions_A")
                    r.velocities_A_fs = traj.last("velocities_A_fs")
                    r.time_fs = float(traj.last("time_fs"))
            r.step_index = round(r.time_fs / self.dt)
            positions.append(torch.as_tensor(np.array(r.positions_A), dtype=self.dtype))
            velocities.append(
                torch.as_tensor(r.velocities_A_fs, dtype=self.dtype)
                if r.velocities_A_fs is not None
                else maxwell_boltzmann(r.numbers, r.temperature_K,
                                       _philox(r.seed, r.step_index, 1), self.dtype))
            r.buffer = {name: [] for name in self._arrays}
        self.active = list(range(len(self.replicas)))
        self._x = torch.cat(positions).to(self.device)
        self._v = torch.cat(velocities).to(self.device)
        self._rebuild()
        self.output = self._forces()

    def _rebuild(self) -> None:
        reps = [self.replicas[i] for i in self.active]
        self.batch = self.committee.batch([r.numbers for r in reps], device=self.device)
        m = self.batch.masses_amu[:, None]
        self._inv_m = units.ACCEL_EV_A_AMU_IN_A_FS2 / m
        kT = torch.as_tensor([units.KB_EV_PER_K * r.temperature_K for r in reps],
                             dtype=self.dtype, device=self.device)[self.batch.batch][:, None]
        gamma = torch.as_tensor([r.friction_fs for r in reps], dtype=self.dtype,
                                device=self.device)
        c1 = torch.exp(-gamma * self.dt)[self.batch.batch][:, None]
        self._c1 = c1
        self._c2 = torch.sqrt((1 - c1 ** 2) * kT / m / units.AMU_A2_FS2_IN_EV)
        self._thermostatted = bool((gamma > 0).any())

    def _forces(self) -> CommitteeOutput:
        return self.committee.evaluate(self.batch, self._x)

    def _noise(self) -> torch.Tensor:
        # per replica and step, on the CPU: a replica's noise depends on neither its batch
        # nor the frames written (module docstring)
        reps = [self.replicas[i] for i in self.active]
        xi = np.concatenate([step_noise(r.seed, r.step_index + 1, len(r.numbers))
                             for r in reps])
        return torch.as_tensor(xi, dtype=self.dtype).to(self.device)

    def step(self) -> CommitteeOutput:
        """One BAOAB step of every active replica."""
        half = 0.5 * self.dt
        self._v = self._v + half * self.output.forces_eVA * self._inv_m
        self._x = self._x + half * self._v
        if self._thermostatted:
            self._v = self._c1 * self._v + self._c2 * self._noise()
        self._x = self._x + half * self._v
        self.output = self._forces()
        self._v = self._v + half * self.output.forces_eVA * self._inv_m
        for i in self.active:
            self.replicas[i].time_fs += self.dt
            self.replicas[i].step_index += 1
        return self.output

    @property
    def coordinates(self) -> torch.Tensor:
        """Positions of all active replicas' atoms, (n_atoms, 3), Å, in batch order."""
        return self._x

    @property
    def positions(self) -> list[torch.Tensor]:
        return list(torch.split(self._x, self.batch.n_atoms.tolist()))

    @property
    def velocities(self) -> list[torch.Tensor]:
        return list(torch.split(self._v, self.batch.n_atoms.tolist()))

    def record(self) -> None:
        """Buffer the current frame of every active replica (written with the next chunk)."""
        self._record()

    def _record(self) -> None:
        out = self.output
        dip = None
        if self.dipole_model is not None:
            dip = predict_dipoles(self.dipole_model, self.batch, self._x)
        xs, vs = self.positions, self.velocities
        for k, i in enumerate(self.active):
            buf = self.replicas[i].buffer
            buf["positions_A"].append(xs[k].cpu().numpy().copy())
            buf["velocities_A_fs"].append(vs[k].cpu().numpy().copy())
            buf[self._energy].append(float(out.energy_eV[k]))
            buf["force_std_max_eVA"].append(float(out.force_std_max_eVA[k]))
            buf["force_rel_dev"].append(float(out.force_rel_dev[k]))
            buf["time_fs"].append(self.replicas[i].time_fs)
            if dip is not None:
                buf[self._dipole].append(dip[k].cpu().numpy().copy())

    def _flush(self, indices: Sequence[int] | None = None) -> int:
        written = 0
        for i in (indices if indices is not None else range(len(self.replicas))):
            r = self.replicas[i]
            n = len(r.buffer["time_fs"])
            if not n:
                continue
            if self.store is not None:
                self.store[r.key].append(**{k: np.asarray(v) for k, v in r.buffer.items()})
            r.buffer = {name: [] for name in self._arrays}
            r.n_frames += n
            written += n
        return written

    def stop(self, indices: Sequence[int], step: int) -> None:
        """Stop replicas (indices into ``self.replicas``); the others go on."""
        indices = [i for i in indices if i in self.active]
        if not indices:
            return
        keep = [k for k, i in enumerate(self.active) if i not in indices]
        xs, vs = self.positions, self.velocities
        for i in indices:
            self.replicas[i].stopped_at_step = step
        self._flush(indices)
        if self.store is not None:
            for i in indices:
                r = self.replicas[i]
                self.store[r.key].set_attrs(stopped_at_time_fs=r.time_fs,
                                            stop_reason=getattr(r, "stop_reason", None))
        self.active = [self.active[k] for k in keep]
        if self.active:
            self._x = torch.cat([xs[k] for k in keep])
            self._v = torch.cat([vs[k] for k in keep])
            self._rebuild()
            self.output = self._forces()

    def run(self, n_steps: int, *, write_every: int = 1, guard: Guard | None = None,
            progress: bool = False) -> MDReport:
        """Advance ``n_steps``, writing every ``write_every``-th frame. ``guard`` sees the
        engine and each step's committee output and returns a boolean mask over
        ``self.active`` of the replicas to stop; a stopped replica's offending frame is not
        written."""
        import time as _time

        from palirs_data.progress import make_progress

        start, replica_steps, written = _time.perf_counter(), 0, 0
        with make_progress() as bar:
            task = bar.add_task("md", total=n_steps, visible=progress)
            for step in range(1, n_steps + 1):
                if not self.active:
                    break
                out = self.step()
                replica_steps += len(self.active)
                if guard is not None:
                    stop = np.asarray(guard(self, out))
                    if stop.any():
                        self.stop([i for i, s in zip(self.active, stop) if s], step)
                        if not self.active:
                            break
                if step % write_every == 0:
                    self._record()
                    if len(self.replicas[self.active[0]].buffer["time_fs"]) >= self.chunk_frames:
                        written += self._flush(self.active)
                bar.advance(task)
        written += self._flush()
        stopped = [r.key for r in self.replicas if r.stopped_at_step is not None]
        return MDReport(step if n_steps else 0, replica_steps, written, stopped,
                        _time.perf_counter() - start)


def thermalise(committee: ForceField, replicas: Sequence[Replica], *, timestep_fs: float,
               steps: int, friction_fs: float, guard: Guard | None = None) -> list[str]:
    """Bring ``replicas`` to their temperature before any of their frames count.

    A replica that starts at a minimum with Maxwell-Boltzmann velocities at T shares its
    kinetic energy with the potential and sits near T/2; under the weak friction of the
    production runs (1/γ = 1 ps) it needs several ps to recover. Here each replica runs
    ``steps`` steps of Langevin MD with the stronger ``friction_fs`` (several relaxation times
    1/γ in all), writing nothing; it then starts from the final positions and velocities, its
    time still at 0. The noise comes from a seed derived from the replica's own, so the
    production noise does not replay it. Returns the keys of replicas the ``guard`` stopped
    (they keep their starting state).
    """
    if not replicas or steps <= 0:
        return []
    warm = [Replica(key=r.key, molecule=r.molecule, numbers=r.numbers,
                    positions_A=np.asarray(r.positions_A), temperature_K=r.temperature_K,
                    friction_fs=max(friction_fs, r.friction_fs),
                    seed=int(np.random.SeedSequence([r.seed, 1]).generate_state(1)[0]),
                    velocities_A_fs=r.velocities_A_fs) for r in replicas]
    md = BatchedMD(committee, warm, timestep_fs=timestep_fs)
    md.run(steps, write_every=steps + 1, guard=guard)
    for k, (x, v) in zip(md.active, zip(md.positions, md.velocities)):
        replicas[k].positions_A = x.cpu().numpy().astype(np.float64)
        replicas[k].velocities_A_fs = v.cpu().numpy().astype(np.float64)
    stopped = [warm[k].key for k in range(len(warm)) if k not in md.active]
    for k in range(len(warm)):  # the guard's reason, on the caller's replica
        if k not in md.active and getattr(warm[k], "stop_reason", None):
            replicas[k].stop_reason = warm[k].stop_reason  # type: ignore[attr-defined]
    if stopped:
        log.warning("thermalisation: the guard stopped %s (%s); they start from their "
                    "initial state", ", ".join(stopped),
                    "; ".join(sorted({getattr(r, "stop_reason", "?") for r in warm
                                      if r.key in stopped})))
    return stopped
