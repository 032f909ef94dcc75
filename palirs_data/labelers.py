"""Label sources: quantum-chemistry single points behind one small contract.

A :class:`Labeler` takes ASE ``Atoms`` and returns a :class:`Label` (energy in eV, forces in
eV/Å, dipole in e·Å). It also hands out an ASE calculator of the same level of theory, which
the ``sample`` stage uses for geometry optimisation and the harmonic analysis, and reference MD
later. Three sources plug in:

- ``xtb``: GFN2-xTB (or GFN1/IPEA1) through tblite, the default;
- ``pyscf``: Kohn-Sham DFT with PySCF (default PBE/def2-SVP with density fitting), analytic
  gradients, dipole from the SCF density, optional D3/D4 dispersion;
- ``ase``: any ASE calculator by import path and keyword arguments (FHI-aims, ORCA, ...).

Each has "safer" settings for the one retry a failed single point gets (more SCF iterations
and damping for xTB, a second-order SCF solver for PySCF, user-given ``safer_kwargs`` for a
generic ASE calculator). The settings actually used are recorded with every label.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, all_changes

from palirs_data import units
from palirs_data.config import AseSettings, LabelerConfig, PyscfSettings, XtbSettings
from palirs_data.errors import PalirsInputError


@dataclass(frozen=True)
class Label:
    """Reference label of one structure."""

    energy_eV: float
    forces_eVA: np.ndarray  # (n_atoms, 3)
    dipole_eA: np.ndarray  # (3,)
    seconds: float


class Labeler(Protocol):
    """The contract every label source satisfies."""

    method: str

    def settings(self, *, safer: bool = False) -> dict[str, Any]:
        """The settings a label is computed with (recorded in ``label_settings``)."""

    def has_safer(self) -> bool:
        """Whether a retry with safer settings differs from the first attempt."""

    def calculator(self, *, charge_e: int = 0, multiplicity: int = 1, safer: bool = False
                   ) -> Calculator:
        """An ASE calculator at this level of theory (energy, forces, dipole)."""

    def label(self, atoms: Atoms, *, charge_e: int = 0, multiplicity: int = 1,
              safer: bool = False) -> Label:
        """Single point: energy, forces and dipole of ``atoms``; raises on failure."""


@functools.cache
def _version(package: str) -> str:
    """Installed version of ``package`` (cached: the metadata lookup costs about 0.5 ms)."""
    return importlib.metadata.version(package)


_openmp_limit = threading.local()


def _limit_openmp_threads(threads: int) -> None:
    """Set the OpenMP thread count of the calling thread (tblite's libgomp must be loaded
    first: OpenMP reads OMP_NUM_THREADS only once, so the limit is set through threadpoolctl).
    OpenMP keeps the count per thread, so every thread that labels sets it; once per thread
    (threadpoolctl's library scan costs milliseconds)."""
    if getattr(_openmp_limit, "threads", None) == threads:
        return
    import tblite.interface  # noqa: F401  (loads libtblite and its OpenMP runtime)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="openmp")
    _openmp_limit.threads = threads


class _CalculatorLabeler:
    """Shared single-point logic: run the calculator, check the results are finite."""

    method = ""

    def settings(self, *, safer: bool = False) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def has_safer(self) -> bool:
        return self.settings(safer=True) != self.settings(safer=False)

    def calculator(self, *, charge_e: int = 0, multiplicity: int = 1, safer: bool = False
                   ) -> Calculator:  # pragma: no cover
        raise NotImplementedError

    def label(self, atoms: Atoms, *, charge_e: int = 0, multiplicity: int = 1,
              safer: bool = False) -> Label:
        work = Atoms(numbers=atoms.numbers, positions=atoms.positions)
        calc = self.calculator(charge_e=charge_e, multiplicity=multiplicity, safer=safer)
        work.calc = calc
        start = time.perf_counter()
        # one calculate() for all three properties: a fresh calculator has nothing cached, and
        # ASE's per-property getters would compare the atoms three times (~0.3 ms for xTB)
        calc.calculate(work, ["energy", "forces", "dipole"], all_changes)
        missing = {"energy", "forces", "dipole"} - set(calc.results)
        if missing:
            raise CalculationFailed(f"{self.method}: calculator gave no {sorted(missing)}")
        energy = float(calc.results["energy"])
        forces = np.array(calc.results["forces"], dtype=np.float64)
        dipole = np.array(calc.results["dipole"], dtype=np.float64).reshape(3)
        seconds = time.perf_counter() - start
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(dipole).all()):
            raise CalculationFailed(f"{self.method}: non-finite energy, forces or dipole")
        return Label(energy, forces, dipole, seconds)


class XtbLabeler(_CalculatorLabeler):
    """GFN-xTB through tblite's ASE calculator."""

    method = "xtb"

    def __init__(self, settings: XtbSettings) -> None:
        self._s = settings
        _limit_openmp_threads(settings.threads)

    def label(self, atoms: Atoms, *, charge_e: int = 0, multiplicity: int = 1,
              safer: bool = False) -> Label:
        _limit_openmp_threads(self._s.threads)  # in whichever thread labels
        return super().label(atoms, charge_e=charge_e, multiplicity=multiplicity,
                             safer=safer)

    def settings(self, *, safer: bool = False) -> dict[str, Any]:
        s = {
            "program": f"tblite {_version('tblite')}",
            "method": self._s.method,
            "accuracy": self._s.accuracy,
            "electronic_temperature_K": self._s.electronic_temperature_K,
            "max_iterations": self._s.max_iterations,
            "mixer_damping": 0.4,
            "threads": self._s.threads,
        }
        if safer:
            s["max_iterations"] = max(1000, 4 * self._s.max_iterations)
            s["mixer_damping"] = 0.2
        return s

    def calculator(self, *, charge_e: int = 0, multiplicity: int = 1, safer: bool = False
                   ) -> Calculator:
        from tblite.ase import TBLite

        s = self.settings(safer=safer)
        return TBLite(
            method=s["method"],
            accuracy=s["accuracy"],
            electronic_temperature=s["electronic_temperature_K"],
            max_iterations=s["max_iterations"],
            mixer_damping=s["mixer_damping"],
            charge=float(charge_e),
            multiplicity=int(multiplicity),
            verbosity=0,
        )


class PyscfCalculator(Calculator):
    """ASE calculator around PySCF Kohn-Sham DFT for molecules (no periodic cell).

    Energy in eV, forces (analytic nuclear gradients) in eV/Å, dipole of the SCF density plus
    nuclei in e·Å about the origin. Restricted KS for singlets, unrestricted otherwise.
    """

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, settings: PyscfSettings, *, charge_e: int = 0, multiplicity: int = 1,
                 second_order: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.charge_e = charge_e
        self.multiplicity = multiplicity
        self.second_order = second_order

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        from threadpoolctl import threadpool_limits

        super().calculate(atoms, properties or ["energy"], system_changes)
        # BLAS threads too: lib.num_threads sets PySCF's OpenMP only, and numpy's OpenBLAS
        # otherwise takes every core in a stage's own process but one on a Dask worker, which
        # moved methanol's PBE energy and forces by up to 9e-12 between the two placements
        # (docs/dft.md, "Same bits on every placement")
        with threadpool_limits(limits=self.settings.threads, user_api="blas"):
            self._calculate()

    def _calculate(self) -> None:
        from pyscf import dft, gto, lib

        s = self.settings
        lib.num_threads(s.threads)
        mol = gto.M(
            atom=[(sym, tuple(p)) for sym, p in zip(self.atoms.get_chemical_symbols(),
                                                     self.atoms.positions)],
            unit="Angstrom",
            basis=s.basis,
            charge=self.charge_e,
            spin=self.multiplicity - 1,
            verbose=0,
        )
        mf = dft.RKS(mol) if self.multiplicity == 1 else dft.UKS(mol)
        mf.xc = s.xc
        mf.grids.level = s.grid_level
        mf.conv_tol = s.conv_tol
        mf.max_cycle = s.max_cycle
        if s.dispersion:
            mf.disp = s.dispersion
        if s.density_fit:
            mf = mf.density_fit(auxbasis=s.auxbasis)
        if self.second_order:
            mf = mf.newton()
            mf.max_cycle = 2 * s.max_cycle
        energy = mf.kernel()
        if not mf.converged:
            raise CalculationFailed(f"pyscf: SCF not converged in {mf.max_cycle} cycles")
        grad = mf.nuc_grad_method().kernel()
        dipole_au = mf.dip_moment(unit="AU", verbose=0)
        self.results["energy"] = float(energy) * units.HARTREE_EV
        self.results["forces"] = -np.asarray(grad) * units.HARTREE_PER_BOHR_EVA
        self.results["dipole"] = np.asarray(dipole_au) * units.EBOHR_EA


class PyscfLabeler(_CalculatorLabeler):
    """Kohn-Sham DFT with PySCF."""

    method = "pyscf"

    def __init__(self, settings: PyscfSettings) -> None:
        if settings.dispersion:
            try:
                importlib.import_module("pyscf.dispersion")
            except ImportError:
                raise PalirsInputError(
                    f"labeler.pyscf.dispersion: '{settings.dispersion}' needs the package "
                    "pyscf-dispersion (pip install 'palirs-data[d3]')"
                ) from None
        self._s = settings

    def settings(self, *, safer: bool = False) -> dict[str, Any]:
        s: dict[str, Any] = {"program": f"pyscf {_version('pyscf')}", **self._s.model_dump()}
        s["scf_solver"] = "newton" if safer else "diis"
        return s

    def calculator(self, *, charge_e: int = 0, multiplicity: int = 1, safer: bool = False
                   ) -> Calculator:
        return PyscfCalculator(self._s, charge_e=charge_e, multiplicity=multiplicity,
                               second_order=safer)


def import_object(path: str, *, where: str) -> Any:
    """Import ``package.module.Name`` or ``package.module:Name``; one-line error otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PalirsInputError(f"{where}: '{path}' is not an import path like package.module.Class")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PalirsInputError(f"{where}: cannot import '{path}' ({exc})") from None


class AseLabeler(_CalculatorLabeler):
    """Any ASE calculator class, constructed with the given keyword arguments."""

    method = "ase"

    def __init__(self, settings: AseSettings) -> None:
        if not settings.calculator:
            raise PalirsInputError("labeler.ase.calculator: give the calculator's import path")
        self._cls = import_object(settings.calculator, where="labeler.ase.calculator")
        self._s = settings

    def settings(self, *, safer: bool = False) -> dict[str, Any]:
        kwargs = dict(self._s.kwargs)
        if safer:
            kwargs.update(self._s.safer_kwargs or {})
        return {"calculator": self._s.calculator, "kwargs": kwargs}

    def calculator(self, *, charge_e: int = 0, multiplicity: int = 1, safer: bool = False
                   ) -> Calculator:
        return self._cls(**self.settings(safer=safer)["kwargs"])


def make_labeler(config: LabelerConfig) -> Labeler:
    """The labeler ``config.method`` names, with its settings."""
    if config.method == "xtb":
        return XtbLabeler(config.xtb)
    if config.method == "pyscf":
        return PyscfLabeler(config.pyscf)
    if config.method == "ase":
        return AseLabeler(config.ase)
    raise PalirsInputError(  # unreachable through LabelerConfig, kept for direct callers
        f"unknown labeler '{config.method}'; choose one of: xtb, pyscf, ase"
    )
