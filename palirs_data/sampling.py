"""The initial dataset: optimised minima, reference frequencies and normal-mode samples.

:func:`sample_molecules` is the ``sample`` stage's one library call. For every molecule it
builds a 3D geometry, optimises it with the label source, runs the harmonic analysis and
draws displaced geometries with ``sample.sampler``. The minima are labelled on the spot (they
are needed as the reference for the model's harmonic analysis); the samples are left for the
``label`` stage.

Samples (:func:`normal_mode_samples`), ``frames_per_mode`` × n_vib geometries per molecule:

  - ``thermal`` (default): classical Boltzmann sampling of the harmonic well at T, every mode
    displaced at once, normal coordinate Q_k ~ N(0, kT/ω_k²); the harmonic potential energy of
    a sample then averages (3N−6)·kT/2, the potential energy MD at T visits.
  - ``wigner``: the harmonic Wigner distribution at T, variance (ħω/2)·coth(ħω/2kT)/ω² per
    mode (zero-point motion included; the classical limit is ``thermal``).
  - ``ase``: the method's original samples, one mode at a time as ASE animates it
    (as ``VibrationsData.iter_animated_mode``: the Cartesian mode times sqrt(kT/|ħω|) times
    sin(2πk/3F)), the first F of 3F frames, one-sided, minimum included. Its amplitude is
    3-10× the classical thermal one at 300 K (not a physical distribution).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from ase import Atoms

from palirs_data import harmonic, molecules, structures, units
from palirs_data.compute import Executor, executor, scheduler_address
from palirs_data.config import ComputeConfig, SampleConfig
from palirs_data.labelers import Labeler
from palirs_data.progress import progress
from palirs_data.structures import Structure

log = logging.getLogger(__name__)


@dataclass
class SampleResult:
    samples: pa.Table  # structure table, source=normal_modes, pending labels
    equilibrium: pa.Table  # structure table, source=equilibrium, labelled
    frequencies: pa.Table  # harmonic.FREQUENCY_SCHEMA


@contextlib.contextmanager
def executor_for(config: ComputeConfig, *, n_molecules: int) -> Iterator[Executor]:
    """The sample stage's :func:`~palirs_data.compute.executor`, except that one molecule on a
    local cluster is sampled in this process: starting a cluster costs seconds and buys
    nothing for a lone task. A scheduler address or a job-queue cluster always gets the work
    (the stage may run on a login node)."""
    if n_molecules <= 1 and not scheduler_address(config) and config.jobqueue is None:
        yield Executor.local()
        return
    with executor(config) as ex:
        yield ex


@dataclass
class _Sampled:
    """One molecule's share of :class:`SampleResult` (a task's result)."""

    minimum: Structure
    frequency_rows: list[dict]
    samples: list[Structure]
    summary: str  # logged by the stage's process (a worker's log is not the stage's)


def _labelled_minimum(mol: molecules.Molecule, atoms: Atoms, labeler: Labeler,
                      settings: str) -> Structure:
    label = labeler.label(atoms, charge_e=mol.charge_e, multiplicity=mol.multiplicity)
    return Structure.from_atoms(
        atoms, molecule=mol.name, source="equilibrium",
        charge_e=mol.charge_e, multiplicity=mol.multiplicity,
        label_status="ok", label_method=labeler.method, label_settings=settings,
        label_attempts=1, energy_eV=label.energy_eV,
        forces_eVA=label.forces_eVA, dipole_eA=label.dipole_eA)


def _minimum_only(mol: molecules.Molecule, atoms: Atoms, labeler: Labeler,
                  config: SampleConfig) -> _Sampled:
    """Optimise and label the minimum of one molecule; no harmonic analysis, no samples."""
    settings = structures.settings_json(labeler.settings())
    calc = labeler.calculator(charge_e=mol.charge_e, multiplicity=mol.multiplicity)
    optimised, steps = harmonic.optimise(atoms, calc, fmax_eVA=config.fmax_eVA,
                                         max_steps=config.max_steps, name=mol.name)
    return _Sampled(_labelled_minimum(mol, optimised, labeler, settings), [], [],
                    f"{mol.name}: {len(atoms)} atoms, {steps} BFGS steps, minimum only")


def _sample_one(mol: molecules.Molecule, atoms: Atoms, labeler: Labeler, config: SampleConfig,
                index: int, with_harmonic: bool = True) -> _Sampled:
    """Optimise, analyse, label the minimum of and sample one molecule (the ``index``-th of
    the stage: its sampler's random stream); without ``with_harmonic``, the minimum only."""
    if not with_harmonic:
        return _minimum_only(mol, atoms, labeler, config)
    settings = structures.settings_json(labeler.settings())
    calc = labeler.calculator(charge_e=mol.charge_e, multiplicity=mol.multiplicity)
    result = harmonic.harmonic_analysis(
        atoms, calc, fmax_eVA=config.fmax_eVA, max_steps=config.max_steps,
        hessian_step_A=config.hessian_step_A, name=mol.name)
    minimum = _labelled_minimum(mol, result.atoms, labeler, settings)
    freq_rows = [dict(molecule=mol.name, mode_index=k, frequency_cm1=float(freq),
                      structure_id=minimum.structure_id, label_method=labeler.method,
                      label_settings=settings, mode_vector=result.modes[k].tolist())
                 for k, freq in enumerate(result.frequencies_cm1)]
    displaced = normal_mode_samples(
        result, temperature_K=config.temperature_K, frames_per_mode=config.frames_per_mode,
        sampler=config.sampler, rng=np.random.default_rng([config.seed, index]))
    samples = [Structure.from_atoms(
        frame, molecule=mol.name, source="normal_modes", charge_e=mol.charge_e,
        multiplicity=mol.multiplicity, temperature_K=config.temperature_K,
        mode_index=mode_index) for mode_index, frame in displaced]
    summary = (f"{mol.name}: {len(atoms)} atoms, {result.optimisation_steps} BFGS steps, "
               f"{len(result.frequencies_cm1)} modes ({result.frequencies_cm1.min():.0f}-"
               f"{result.frequencies_cm1.max():.0f} cm-1), {len(displaced)} {config.sampler} "
               f"samples at {config.temperature_K:g} K")
    return _Sampled(minimum, freq_rows, samples, summary)


def sample_molecules(mols: list[molecules.Molecule], labeler: Labeler, config: SampleConfig,
                     *, seed: int = 0, executor: Executor | None = None,
                     with_harmonic: bool = True) -> SampleResult:
    """Optimise, analyse and sample every molecule with ``labeler`` (see module docstring);
    without ``with_harmonic`` only the labelled minima (the frequency and sample tables empty).

    With a distributed ``executor`` each molecule is one task, the largest submitted first
    so that the longest optimisation and Hessian start at once (with DFT labels the stage
    is hours of single points of one thread each); the tables are assembled in the order of
    ``mols`` and every molecule keeps its own random stream, so where a molecule ran does not
    change the result (xTB: byte for byte, a test; PySCF moves the last bits)."""
    executor = executor or Executor.local()
    built = [molecules.build_atoms(mol, seed=seed) for mol in mols]
    order = sorted(range(len(mols)), key=lambda i: -len(built[i]))
    futures = {executor.submit(_sample_one, mols[i], built[i], labeler, config, i,
                               with_harmonic): i
               for i in order}
    done: dict[int, _Sampled] = {}
    for future in progress(executor.as_completed(list(futures)), description="sample",
                           total=len(mols)):
        done[futures[future]] = future.result()
        log.info("%s", done[futures[future]].summary)
        future.release()
    parts = [done[i] for i in range(len(mols))]
    freqs = pa.Table.from_pylist([row for part in parts for row in part.frequency_rows],
                                 schema=harmonic.FREQUENCY_SCHEMA)
    samples = [s for part in parts for s in part.samples]
    # ase's one-sided frames all start at the minimum: keep it once
    return SampleResult(structures.to_table(structures.dedupe(samples)),
                        structures.to_table([part.minimum for part in parts]), freqs)


#: normal-mode samplers (module docstring)
SAMPLERS = ("thermal", "wigner", "ase")


def mode_variances(result: harmonic.HarmonicResult, *, temperature_K: float,
                   sampler: str) -> np.ndarray:
    """Variance of each vibrational normal coordinate, Å² amu: kT/ω² (``thermal``) or
    (ħω/2)·coth(ħω/2kT)/ω² (``wigner``); |ω²| for an imaginary mode."""
    kT = units.KB_EV_PER_K * temperature_K
    lam = np.abs(result.eigenvalues)
    if sampler == "thermal":
        return kT / lam
    if sampler == "wigner":
        hw = np.abs(result.frequencies_cm1) * units.INVCM_EV  # ħω, eV
        return 0.5 * hw / np.tanh(hw / (2 * kT)) / lam
    raise ValueError(f"no variance for sampler {sampler!r}; choose one of: thermal, wigner")


def normal_mode_samples(result: harmonic.HarmonicResult, *, temperature_K: float,
                        frames_per_mode: int, sampler: str = "thermal",
                        rng: np.random.Generator | None = None
                        ) -> list[tuple[int | None, Atoms]]:
    """``frames_per_mode`` × n_vib displaced geometries of the minimum in ``result``.

    Returns ``(mode_index, atoms)`` pairs; ``mode_index`` counts vibrational modes in ascending
    frequency (as in the frequency table) for ``ase`` samples, which displace one mode each,
    and is None for ``thermal`` and ``wigner`` samples, which displace all modes at once
    (module docstring). ``rng`` draws the normal coordinates of those two.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if sampler == "ase":
        # ASE's VibrationsData.iter_animated_mode: the Cartesian mode times sqrt(kT/|ħω|)
        # times sin(2πk/3F), k < F (the first F of 3F frames)
        kT = units.KB_EV_PER_K * temperature_K
        hw = np.abs(result.frequencies_cm1) * units.INVCM_EV
        phases = np.sin(2 * np.pi * np.arange(frames_per_mode) / (3 * frames_per_mode))
        x0 = result.atoms.positions
        samples: list[tuple[int | None, Atoms]] = []
        for k, mode in enumerate(result.normal.displacements):
            amplitude = mode.reshape(x0.shape) * np.sqrt(kT / hw[k])
            samples += [(k, Atoms(numbers=result.atoms.numbers, positions=x0 + p * amplitude))
                        for p in phases]
        return samples
    rng = rng if rng is not None else np.random.default_rng(0)
    sigma = np.sqrt(mode_variances(result, temperature_K=temperature_K, sampler=sampler))
    n_samples = frames_per_mode * len(sigma)
    q = rng.standard_normal((n_samples, len(sigma))) * sigma  # normal coordinates, Å amu^½
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(result.atoms.get_masses(), 3))
    displacements = (q @ result.modes) * inv_sqrt_m  # (n_samples, 3N), Å
    x0 = result.atoms.positions
    return [(None, Atoms(numbers=result.atoms.numbers, positions=x0 + d.reshape(x0.shape)))
            for d in displacements]
