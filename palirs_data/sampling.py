"""The initial dataset: optimised minima, reference frequencies and normal-mode samples.

:func:`sample_molecules` is the ``sample`` stage's one library call. For every molecule it
builds a 3D geometry, optimises it with the label source, runs the harmonic analysis and
draws ``frames_per_mode`` × n_vib displaced geometries with ``sample.sampler`` (thermal,
Wigner or ASE's animation; see :mod:`palirs_data.harmonic`). The minima are labelled on the spot (they are needed as the
reference for the model's harmonic analysis); the samples are left for the ``label`` stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from palirs_data import harmonic, molecules, structures
from palirs_data.config import SampleConfig
from palirs_data.labelers import Labeler
from palirs_data.progress import progress
from palirs_data.structures import Structure

log = logging.getLogger(__name__)


@dataclass
class SampleResult:
    samples: pa.Table  # structure table, source=normal_modes, pending labels
    equilibrium: pa.Table  # structure table, source=equilibrium, labelled
    frequencies: pa.Table  # harmonic.FREQUENCY_SCHEMA


def sample_molecules(mols: list[molecules.Molecule], labeler: Labeler, config: SampleConfig,
                     *, seed: int = 0) -> SampleResult:
    """Optimise, analyse and sample every molecule with ``labeler`` (see module docstring)."""
    sample_rows: list[Structure] = []
    minima: list[Structure] = []
    freq_rows: list[dict] = []
    settings = structures.settings_json(labeler.settings())
    for index, mol in enumerate(progress(mols, description="sample")):
        atoms = molecules.build_atoms(mol, seed=seed)
        calc = labeler.calculator(charge_e=mol.charge_e, multiplicity=mol.multiplicity)
        result = harmonic.harmonic_analysis(
            atoms, calc, fmax_eVA=config.fmax_eVA, max_steps=config.max_steps,
            hessian_step_A=config.hessian_step_A, name=mol.name)
        label = labeler.label(result.atoms, charge_e=mol.charge_e,
                              multiplicity=mol.multiplicity)
        minimum = Structure.from_atoms(
            result.atoms, molecule=mol.name, source="equilibrium",
            charge_e=mol.charge_e, multiplicity=mol.multiplicity,
            label_status="ok", label_method=labeler.method, label_settings=settings,
            label_attempts=1, energy_eV=label.energy_eV,
            forces_eVA=label.forces_eVA, dipole_eA=label.dipole_eA)
        minima.append(minimum)
        for k, freq in enumerate(result.frequencies_cm1):
            freq_rows.append(dict(molecule=mol.name, mode_index=k, frequency_cm1=float(freq),
                                  structure_id=minimum.structure_id,
                                  label_method=labeler.method, label_settings=settings,
                                  mode_vector=result.modes[k].tolist()))
        displaced = harmonic.normal_mode_samples(
            result, temperature_K=config.temperature_K, frames_per_mode=config.frames_per_mode,
            sampler=config.sampler, rng=np.random.default_rng([config.seed, index]))
        for mode_index, frame in displaced:
            sample_rows.append(Structure.from_atoms(
                frame, molecule=mol.name, source="normal_modes", charge_e=mol.charge_e,
                multiplicity=mol.multiplicity, temperature_K=config.temperature_K,
                mode_index=mode_index))
        log.info("%s: %d atoms, %d BFGS steps, %d modes (%.0f-%.0f cm-1), %d %s samples at "
                 "%g K", mol.name, len(atoms), result.optimisation_steps,
                 len(result.frequencies_cm1), result.frequencies_cm1.min(),
                 result.frequencies_cm1.max(), len(displaced), config.sampler,
                 config.temperature_K)
    freqs = pa.Table.from_pylist(freq_rows, schema=harmonic.FREQUENCY_SCHEMA)
    # ase's one-sided frames all start at the minimum: keep it once
    return SampleResult(structures.to_table(structures.dedupe(sample_rows)), structures.to_table(minima), freqs)
