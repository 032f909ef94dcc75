"""palirs-data: machine-learned IR spectra with active learning, as a reproducible pipeline.

The library holds all logic; the scripts in ``stages/`` are thin Typer doors onto it.
Units everywhere inside the library: Å, eV, fs, K, e·Å (dipoles), cm⁻¹ (spectra).
"""

__version__ = "0.1.0"
