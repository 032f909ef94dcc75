"""Geometry optimisation, harmonic (normal-mode) analysis and normal-mode sampling.

The ``sample`` stage runs this with the label source; the ``evaluate`` stage runs the same
functions with a trained model, so that model and reference frequencies are computed in exactly
the same way.

- Optimisation: ASE BFGS to ``fmax`` (eV/Å).
- Hessian: central finite differences of the forces (ASE ``Vibrations``, ``nfree=2``).
- Vibrational modes: all 3N modes of the Hessian minus the 6 (5 for a linear molecule) of
  smallest magnitude, which are the translations and rotations. Imaginary frequencies are
  stored as negative numbers.
- Samples: displacements along each vibrational mode as ASE animates a mode at temperature T
  (``VibrationsData.iter_animated_mode``: the mode vector scaled by sqrt(kT/|ħω|) times
  sin(phase)). ASE's phases 2πk/F include 0 and π, which give the undisplaced minimum, and pairs
  with equal sine, which give identical geometries; we take ASE's animation with 4F frames and
  keep frames 1, 5, 9, ..., i.e. phases 2π(k + 1/4)/F, which for even F are F distinct
  geometries spanning the same amplitude range.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS
from ase.vibrations import Vibrations, VibrationsData

from palirs_data import units
from palirs_data.errors import StageFailed
from palirs_data.tables import check_schema, read_parquet, write_parquet

log = logging.getLogger(__name__)

#: Reference harmonic frequencies, one row per vibrational mode of each molecule.
FREQUENCY_SCHEMA = pa.schema(
    [
        pa.field("molecule", pa.string(), nullable=False),
        pa.field("mode_index", pa.int32(), nullable=False),  # 0..n_vib-1, ascending frequency
        pa.field("frequency_cm1", pa.float64(), nullable=False),  # negative = imaginary
        pa.field("structure_id", pa.string(), nullable=False),  # the optimised minimum
        pa.field("label_method", pa.string(), nullable=False),
        pa.field("label_settings", pa.string(), nullable=False),
    ],
    metadata={b"palirs.table": b"frequencies", b"palirs.schema_version": b"1"},
)


def _validate_frequencies(table: pa.Table, where: str) -> pa.Table:
    from palirs_data.errors import PalirsInputError

    table = check_schema(table, FREQUENCY_SCHEMA, where=where)
    freqs = table.column("frequency_cm1").to_numpy()
    if not np.isfinite(freqs).all():
        raise PalirsInputError(f"{where}: column 'frequency_cm1' has non-finite values")
    return table


def write_frequencies(table: pa.Table, path) -> None:
    write_parquet(table, path, validate=_validate_frequencies)


def read_frequencies(path) -> pa.Table:
    return read_parquet(path, schema=FREQUENCY_SCHEMA, validate=_validate_frequencies)


@dataclass
class HarmonicResult:
    """Optimised geometry and its harmonic analysis.

    ``frequencies_cm1`` (n_vib,) ascending, negative = imaginary; ``mode_indices`` (n_vib,)
    index each vibrational mode in ``vibrations`` (ASE's full 3N list); ``energy_eV`` of the
    optimised geometry; ``optimisation_steps`` taken by BFGS.
    """

    atoms: Atoms
    energy_eV: float
    frequencies_cm1: np.ndarray
    mode_indices: np.ndarray
    vibrations: VibrationsData
    optimisation_steps: int
    dropped_max_cm1: float  # largest |frequency| among the dropped translations/rotations


def is_linear(atoms: Atoms, *, tol: float = 1e-3) -> bool:
    """Linear if the smallest principal moment of inertia is ~0 relative to the largest."""
    if len(atoms) < 3:
        return True
    moments = np.sort(atoms.get_moments_of_inertia())
    return bool(moments[0] < tol * moments[-1])


def n_vibrational_modes(atoms: Atoms) -> int:
    """3N-6, or 3N-5 for a linear molecule."""
    return 3 * len(atoms) - (5 if is_linear(atoms) else 6)


def optimise(atoms: Atoms, calc: Calculator, *, fmax_eVA: float, max_steps: int,
             name: str, require_convergence: bool = True) -> tuple[Atoms, int]:
    """BFGS minimisation to ``fmax_eVA``. Not converged: :class:`StageFailed`, or with
    ``require_convergence=False`` a warning (a half-trained model's surface may be rough)."""
    work = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    work.calc = calc
    opt = BFGS(work, logfile=None)
    converged = opt.run(fmax=fmax_eVA, steps=max_steps)
    fmax = float(np.linalg.norm(work.get_forces(), axis=1).max())
    if not converged and not require_convergence:
        log.warning("molecule '%s': optimisation stopped at fmax %.2e eV/Å after %d steps",
                    name, fmax, max_steps)
    elif not converged:
        raise StageFailed(
            f"molecule '{name}': optimisation did not reach fmax {fmax_eVA} eV/Å in "
            f"{max_steps} steps (last {fmax:.2e} eV/Å)"
        )
    return work, int(opt.nsteps)


def harmonic_analysis(atoms: Atoms, calc: Calculator, *, fmax_eVA: float, max_steps: int,
                      hessian_step_A: float, name: str,
                      require_convergence: bool = True) -> HarmonicResult:
    """Optimise ``atoms`` with ``calc`` and compute its harmonic frequencies and modes."""
    opt_atoms, steps = optimise(atoms, calc, fmax_eVA=fmax_eVA, max_steps=max_steps, name=name,
                                require_convergence=require_convergence)
    energy = float(opt_atoms.get_potential_energy())
    with tempfile.TemporaryDirectory(prefix="palirs-vib-") as tmp:
        vib = Vibrations(opt_atoms, name=f"{tmp}/vib", delta=hessian_step_A, nfree=2)
        vib.run()
        data = vib.get_vibrations()
    mode_energies = data.get_energies()  # complex, eV; imaginary part for negative curvature
    signed = np.where(np.abs(mode_energies.imag) > np.abs(mode_energies.real),
                      -np.abs(mode_energies.imag), mode_energies.real) / units.INVCM_EV
    n_vib = n_vibrational_modes(opt_atoms)
    order = np.argsort(np.abs(signed))
    keep = np.sort(order[len(signed) - n_vib:])
    dropped = order[: len(signed) - n_vib]
    dropped_max = float(np.abs(signed[dropped]).max()) if dropped.size else 0.0
    keep = keep[np.argsort(signed[keep])]
    freqs = signed[keep]
    if dropped_max > 50.0:
        log.warning("molecule '%s': translations/rotations reach %.1f cm-1 (loose optimisation?)",
                    name, dropped_max)
    if (freqs < 0).any():
        log.warning("molecule '%s': %d imaginary frequencies; not a minimum", name,
                    int((freqs < 0).sum()))
    return HarmonicResult(opt_atoms, energy, freqs, keep, data, steps, dropped_max)


def normal_mode_samples(result: HarmonicResult, *, temperature_K: float,
                        frames_per_mode: int) -> list[tuple[int, Atoms]]:
    """Displaced geometries along every vibrational mode: ``frames_per_mode`` each.

    Returns ``(mode_index, atoms)`` pairs, ``mode_index`` counting vibrational modes in
    ascending frequency (as in the frequency table). See the module docstring for the phases.
    """
    if frames_per_mode % 2:
        raise ValueError("frames_per_mode must be even for distinct sinusoidal phases")
    kT = units.KB_EV_PER_K * temperature_K
    samples = []
    for vib_index, full_index in enumerate(result.mode_indices):
        frames = list(result.vibrations.iter_animated_mode(
            int(full_index), temperature=kT, frames=4 * frames_per_mode))
        for frame in frames[1::4]:
            samples.append((vib_index, Atoms(numbers=frame.numbers, positions=frame.positions)))
    return samples
