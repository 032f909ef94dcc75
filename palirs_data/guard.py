"""The MD guard: one rule that stops a run at a frame not to be trusted, for every MD of the
pipeline (acquisition, test set, IR and reference MD).

A run stops at once when its frame has non-finite energy, forces or positions; when two atoms
come closer than ``guard.min_distance_A`` (collapse) or farther apart than
``guard.max_distance_A`` (explosion); when a bond of the molecule's minimum (a pair closer
than 1.25 × the sum of covalent radii there) is longer than ``guard.max_bond_stretch`` × its
length there (the molecule comes apart); and, in the acquisition only, when the committee's
relative force deviation exceeds ``active_learning.acquire.max_force_rel_dev``
(:data:`~palirs_data.committee.REL_DEV_EPS_EVA`). The offending frame is never written
(:meth:`palirs_data.dynamics.BatchedMD.run`), so a store holds only frames before a blow-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from palirs_data.committee import CommitteeOutput, segment_reduce
from palirs_data.config import GuardConfig
from palirs_data.dynamics import BatchedMD, Replica
from palirs_data.structures import Structure

#: a bond (a pair closer than 1.25 × the sum of covalent radii at the minimum) is broken when
#: it is longer than this multiple of its length at the minimum. Measured on the demo's
#: trajectories (methanol, GFN2-xTB and committee MD): the longest bond reaches 1.14 × its
#: minimum length at 300 K and 1.29 × at 700 K; 1.5 × is a C-H bond 0.55 Å long, some 2 eV up.
MAX_BOND_STRETCH = 1.5  # the default of guard.max_bond_stretch
_BONDED_RADII = 1.25


def bonds(numbers: np.ndarray, positions_A: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """The bonded pairs ``i < j`` of a molecule at ``positions_A`` (closer than 1.25 × the sum
    of their covalent radii) and their lengths, Å."""
    from ase.data import covalent_radii

    z = np.asarray(numbers, dtype=np.int64)
    x = np.asarray(positions_A, dtype=np.float64)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    limit = _BONDED_RADII * (covalent_radii[z][:, None] + covalent_radii[z][None])
    i, j = np.nonzero(np.triu(d < limit, 1))
    return i, j, d[i, j]


class Guard:
    """Stops a replica whose frame is not to be trusted (see the module docstring); the reason
    is kept on the replica (``stop_reason``). The bounds come from ``config`` (the ``guard``
    section of the parameters); ``max_force_rel_dev`` is the committee's disagreement limit
    of the acquisition (infinite elsewhere: there the run is the measurement). ``minima``
    (one structure per molecule, or runs that start at their minimum) give the bonds whose
    stretch is watched: a measure of coming apart that does not depend on the molecule's size,
    unlike ``max_distance_A`` (a last bound on any pair)."""

    def __init__(self, config: GuardConfig, *,
                 minima: Sequence[Structure] | Sequence[Replica] = (),
                 max_force_rel_dev: float = float("inf")) -> None:
        self.max_force_rel_dev = max_force_rel_dev
        self.min_distance_A = config.min_distance_A
        self.max_distance_A = config.max_distance_A
        self.max_bond_stretch = config.max_bond_stretch
        self._bonds = {s.molecule: bonds(s.numbers, s.positions_A) for s in minima}
        self._cache: tuple[tuple, tuple] | None = None

    def _stretch(self, md: BatchedMD, x: torch.Tensor, n: int) -> torch.Tensor:
        """Per active replica, the largest ratio of a bond's length to its minimum's (0: no
        bonds known)."""
        key = tuple(md.active)
        if self._cache is None or self._cache[0] != key:
            i, j, d0, owner = [], [], [], []
            for k, (start, replica) in enumerate(zip(md.batch.ptr[:-1].tolist(),
                                                     (md.replicas[a] for a in md.active))):
                if replica.molecule not in self._bonds:
                    continue
                bi, bj, bd = self._bonds[replica.molecule]
                if len(bi) and max(bi.max(), bj.max()) >= len(replica.numbers):
                    raise ValueError(f"the minimum of '{replica.molecule}' has other atoms")
                i.append(bi + start), j.append(bj + start), d0.append(bd)
                owner.append(np.full(len(bi), k))
            as_tensor = [torch.as_tensor(np.concatenate(a) if a else np.zeros(0),
                                         device=x.device) for a in (i, j, d0, owner)]
            self._cache = (key, (as_tensor[0].long(), as_tensor[1].long(),
                                 as_tensor[2].to(x.dtype), as_tensor[3].long()))
        bi, bj, bd, owner = self._cache[1]
        if not len(bi):
            return torch.zeros(n, dtype=x.dtype, device=x.device)
        ratio = torch.linalg.vector_norm(x[bi] - x[bj], dim=1) / bd
        out = torch.zeros(n, dtype=x.dtype, device=x.device)
        return out.scatter_reduce(0, owner, torch.nan_to_num(ratio, nan=torch.inf),
                                  reduce="amax", include_self=True)

    def __call__(self, md: BatchedMD, out: CommitteeOutput) -> np.ndarray:
        batch, x = md.batch, md.coordinates
        n = batch.n_graphs
        s, r = batch.pairs
        d = torch.linalg.vector_norm(x[r] - x[s], dim=1)
        owner = batch.batch[s]
        has_pairs = torch.zeros(n, dtype=torch.bool, device=x.device).index_fill_(0, owner, True)
        d_min = torch.where(has_pairs, segment_reduce(d, owner, n, "amin"), torch.inf)
        d_max = torch.where(has_pairs, segment_reduce(d, owner, n, "amax"), 0.0)
        stretch = self._stretch(md, x, n)
        finite = (torch.isfinite(out.energy_eV)
                  & segment_reduce(torch.isfinite(out.forces_eVA).all(-1).to(x.dtype),
                                    batch.batch, n, "amin").bool()
                  & segment_reduce(torch.isfinite(x).all(-1).to(x.dtype), batch.batch, n,
                                    "amin").bool())
        rel = out.force_rel_dev
        checks = [
            (~finite, lambda k: "non-finite energy, forces or positions"),
            (rel > self.max_force_rel_dev,
             lambda k: f"force_rel_dev {float(rel[k]):.3g} > {self.max_force_rel_dev:g}"),
            (d_min < self.min_distance_A,
             lambda k: f"atoms {float(d_min[k]):.2f} Å apart (< {self.min_distance_A:g} Å)"),
            (stretch > self.max_bond_stretch,
             lambda k: f"a bond at {float(stretch[k]):.2f} × its length at the minimum "
                       f"(> {self.max_bond_stretch:g})"),
            (d_max > self.max_distance_A,
             lambda k: f"atoms {float(d_max[k]):.1f} Å apart (> {self.max_distance_A:g} Å)"),
        ]
        stop = np.zeros(n, dtype=bool)
        for mask, reason in checks:
            for k in np.flatnonzero(mask.cpu().numpy()):
                if not stop[k]:
                    stop[k] = True
                    md.replicas[md.active[k]].stop_reason = reason(k)  # type: ignore[attr-defined]
        return stop
