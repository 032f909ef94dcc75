"""The MACE committee: batched evaluation of all members, its statistics and its ASE
calculator (training is :mod:`palirs_data.training`).

All members are evaluated on one batched graph of many molecules at once (:class:`Committee`).
Molecules have no periodic cell, so the graph is every ordered pair of atoms of the same
molecule closer than the models' cutoff, built with torch operations.

Committee statistics, per atom ``i`` and member ``k`` (K members), with F̄_i the mean force:

- ``force_std_eVA[i] = sqrt(1/K Σ_k |F_ik − F̄_i|²)``: the population standard deviation of
  the force vector (root of the summed component variances), eV/Å;
- per frame, ``force_std_max_eVA`` = max over atoms of ``force_std_eVA`` (the acquisition
  metric) and ``force_rel_dev`` = sqrt(mean_i force_std_eVA²) / (sqrt(mean_i |F̄_i|²) + ε), the
  relative disagreement the acquisition guard compares with 0.5 (ε = 0.05 eV/Å keeps it finite
  near a minimum where forces vanish);
- ``energy_std_eV``: population standard deviation of the members' energies.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_masses

from palirs_data import structures
from palirs_data.errors import PalirsInputError
from palirs_data.tensor_product import accelerate

log = logging.getLogger(__name__)

#: Regulariser of the relative force deviation, eV/Å.
REL_DEV_EPS_EVA = 0.05


def import_mace() -> None:
    """Import mace-torch once per process, without its two import-time notices.

    mace-torch sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` when imported, so e3nn's own
    ``torch.load`` of its constants, imported next, warns about it; and it prints that
    cuequivariance (a GPU library) is missing. Both came once per process, in every stage's
    output and from every Dask worker: eleven in the demo, noise a user can do nothing about.
    The warning is ignored here only, and the notice goes to the debug log.
    """
    if "mace.modules" in sys.modules:
        return
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
                                category=UserWarning)
        importlib.import_module("mace.modules")
    if printed.getvalue().strip():
        log.debug("mace-torch on import: %s", printed.getvalue().strip())


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float64,
               device: str = "cpu", fast_kernels: bool | None = None) -> torch.nn.Module:
    """A trained mace-torch model, in evaluation mode, gradients of weights off.

    ``fast_kernels`` swaps in the kernels of :mod:`palirs_data.tensor_product` (each checked
    against the module it replaces: the same maps, other rounding): the fused channelwise
    convolution (or the channelwise edge product alone) and the symmetric contraction with
    each element's weights folded in; by default in float32, the MD's precision, where they
    were measured faster, and not in float64, where the edge product was not.
    """
    path = Path(path)
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such model file")
    import_mace()
    model = torch.load(path, map_location=device, weights_only=False)
    model = model.to(dtype=dtype, device=device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if fast_kernels if fast_kernels is not None else dtype == torch.float32:
        accelerate(model)
    return model


class MolecularBatch:
    """Static topology of a batch of molecules (replicas): species, masses, graph candidates.

    ``numbers`` is a list with one array of atomic numbers per molecule. Positions change every
    MD step; the atoms do not, so one-hot species, the batch index and the candidate pairs
    (all ordered pairs within a molecule) are built once.
    """

    def __init__(self, numbers: Sequence[np.ndarray], z_table: Sequence[int], *,
                 dtype: torch.dtype = torch.float64, device: str = "cpu") -> None:
        self.n_atoms = np.array([len(z) for z in numbers], dtype=np.int64)
        z_all = np.concatenate([np.asarray(z, dtype=np.int64) for z in numbers])
        index = {int(z): i for i, z in enumerate(z_table)}
        unknown = sorted({int(z) for z in z_all} - set(index))
        if unknown:
            raise PalirsInputError(f"the models know elements {list(z_table)}, not {unknown}")
        self.numbers = torch.as_tensor(z_all, device=device)
        self.node_attrs = torch.nn.functional.one_hot(
            torch.as_tensor([index[int(z)] for z in z_all], device=device),
            num_classes=len(z_table)).to(dtype)
        self.masses_amu = torch.as_tensor(atomic_masses[z_all], dtype=dtype, device=device)
        counts = torch.as_tensor(self.n_atoms, device=device)
        self.batch = torch.repeat_interleave(torch.arange(len(numbers), device=device), counts)
        self.ptr = torch.cat([torch.zeros(1, dtype=torch.int64, device=device),
                              torch.cumsum(counts, 0)])
        senders, receivers = [], []
        for start, n in zip(self.ptr[:-1].tolist(), self.n_atoms.tolist()):
            i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            keep = i != j
            senders.append(start + i[keep])
            receivers.append(start + j[keep])
        self.pairs = torch.as_tensor(np.stack([np.concatenate(senders),
                                               np.concatenate(receivers)]), device=device)
        self.n_graphs = len(numbers)
        self.dtype, self.device = dtype, device

    def graph(self, positions: torch.Tensor, r_max: float) -> dict[str, torch.Tensor]:
        """The input dictionary of a mace-torch model for these positions (Å)."""
        s, r = self.pairs
        keep = torch.linalg.vector_norm(positions[r] - positions[s], dim=1) < r_max
        edge_index = self.pairs[:, keep]
        n_edges = edge_index.shape[1]
        zeros = torch.zeros((n_edges, 3), dtype=self.dtype, device=self.device)
        return {
            "positions": positions, "node_attrs": self.node_attrs, "edge_index": edge_index,
            "shifts": zeros, "unit_shifts": zeros.clone(), "batch": self.batch, "ptr": self.ptr,
            "cell": torch.zeros((3 * self.n_graphs, 3), dtype=self.dtype, device=self.device),
            # fixed atomic charges of the dipole models' baseline: neutral atoms
            "charges": torch.zeros(len(self.batch), dtype=self.dtype, device=self.device),
        }


@dataclass
class CommitteeOutput:
    """Committee prediction for a batch (see the module docstring for the statistics)."""

    energy_eV: torch.Tensor  # (n_graphs,) mean over members
    energy_std_eV: torch.Tensor  # (n_graphs,)
    forces_eVA: torch.Tensor  # (n_atoms, 3) mean over members
    force_std_eVA: torch.Tensor  # (n_atoms,)
    force_std_max_eVA: torch.Tensor  # (n_graphs,)
    force_rel_dev: torch.Tensor  # (n_graphs,)
    member_energies_eV: torch.Tensor  # (n_members, n_graphs)
    member_forces_eVA: torch.Tensor  # (n_members, n_atoms, 3)


def segment_reduce(values: torch.Tensor, batch: torch.Tensor, n: int, reduce: str
                   ) -> torch.Tensor:
    """Reduce per-atom ``values`` to one value per molecule (``reduce``: sum, amax, amin, ...);
    ``batch`` gives each atom's molecule."""
    out = torch.zeros(n, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, batch, values, reduce=reduce, include_self=False)


class Committee:
    """All members of a MACE committee, evaluated together on batches of molecules."""

    labels = False  # a model: what it gives are predictions (:class:`dynamics.ForceField`)

    def __init__(self, models: Sequence[torch.nn.Module]) -> None:
        if not models:
            raise ValueError("a committee needs at least one model")
        self.models = list(models)
        first = self.models[0]
        self.r_max = float(first.r_max)
        self.z_table = [int(z) for z in first.atomic_numbers]
        for m in self.models[1:]:
            if float(m.r_max) != self.r_max or [int(z) for z in m.atomic_numbers] != self.z_table:
                raise PalirsInputError("committee members disagree on cutoff or elements")
        self.dtype = next(first.parameters()).dtype
        self.device = str(next(first.parameters()).device)

    @classmethod
    def load(cls, paths: Sequence[str | Path], *, dtype: torch.dtype = torch.float64,
             device: str = "cpu", fast_kernels: bool | None = None) -> Committee:
        """The members in ``paths`` (:func:`load_model`)."""
        return cls([load_model(p, dtype=dtype, device=device, fast_kernels=fast_kernels)
                    for p in paths])

    def batch(self, numbers: Sequence[np.ndarray], device: str | None = None) -> MolecularBatch:
        return MolecularBatch(numbers, self.z_table, dtype=self.dtype,
                              device=device or self.device)

    def evaluate(self, batch: MolecularBatch, positions: torch.Tensor) -> CommitteeOutput:
        """Energies and forces of every member on ``positions`` (n_atoms, 3), Å."""
        energies, forces = [], []
        graph = batch.graph(positions.detach().clone(), self.r_max)  # same edges for all
        for model in self.models:
            out = model(dict(graph), training=False, compute_force=True)
            energies.append(out["energy"].detach())
            forces.append(out["forces"].detach())
        e = torch.stack(energies)
        f = torch.stack(forces)
        f_mean = f.mean(0)
        f_std = torch.sqrt(((f - f_mean) ** 2).sum(-1).mean(0))
        n = batch.n_graphs
        counts = torch.as_tensor(batch.n_atoms, dtype=f.dtype, device=f.device)
        msd = segment_reduce(f_std ** 2, batch.batch, n, "sum") / counts
        msf = segment_reduce((f_mean ** 2).sum(-1), batch.batch, n, "sum") / counts
        return CommitteeOutput(
            energy_eV=e.mean(0), energy_std_eV=e.std(0, unbiased=False), forces_eVA=f_mean,
            force_std_eVA=f_std,
            force_std_max_eVA=segment_reduce(f_std, batch.batch, n, "amax"),
            force_rel_dev=torch.sqrt(msd) / (torch.sqrt(msf) + REL_DEV_EPS_EVA),
            member_energies_eV=e, member_forces_eVA=f)

    def predict_table(self, table: pa.Table, *, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Committee predictions for every row of a structure table (``pred_*`` arrays)."""
        rows = structures.from_table(table)
        out: dict[str, list] = {"pred_energy_eV": [], "pred_energy_std_eV": [],
                                "pred_forces_eVA": [], "pred_force_std_max_eVA": [],
                                "pred_force_rel_dev": []}
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = self.batch([s.numbers for s in chunk])
            pos = torch.as_tensor(np.concatenate([s.positions_A for s in chunk]),
                                  dtype=self.dtype, device=self.device)
            res = self.evaluate(batch, pos)
            out["pred_energy_eV"] += res.energy_eV.tolist()
            out["pred_energy_std_eV"] += res.energy_std_eV.tolist()
            out["pred_force_std_max_eVA"] += res.force_std_max_eVA.tolist()
            out["pred_force_rel_dev"] += res.force_rel_dev.tolist()
            out["pred_forces_eVA"] += list(torch.split(res.forces_eVA,
                                                       batch.n_atoms.tolist()))
        return {k: (np.asarray(v) if k != "pred_forces_eVA" else [x.cpu().numpy() for x in v])
                for k, v in out.items()}


def predict_dipoles(model: torch.nn.Module, batch: MolecularBatch,
                    positions: torch.Tensor) -> torch.Tensor:
    """Dipoles (n_graphs, 3), e·Å, of a mace-torch dipole model on a batch of molecules."""
    data = batch.graph(positions.detach().clone(), float(model.r_max))
    return model(data, training=False, compute_force=False)["dipole"].detach()


class CommitteeCalculator(Calculator):
    """An ASE calculator for one molecule: committee-mean energy and forces (harmonic
    analyses of the committee-mean force field; a one-member committee gives one model's)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, committee: Committee, numbers: np.ndarray) -> None:
        super().__init__()
        self.committee = committee
        self.molecular_batch = committee.batch([np.asarray(numbers)])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        c = self.committee
        out = c.evaluate(self.molecular_batch,
                         torch.as_tensor(self.atoms.positions, dtype=c.dtype, device=c.device))
        self.results = {"energy": float(out.energy_eV[0]),
                        "forces": out.forces_eVA.cpu().numpy().astype(np.float64)}
