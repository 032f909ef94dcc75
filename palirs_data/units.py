"""Units and conversions, defined once.

Inside palirs-data every quantity is in Å, eV, fs, K, e·Å (dipoles) and cm⁻¹ (wavenumbers).
Conversions happen at the edges (a label source's native units, a user's file) and use the
constants below, which all derive from :mod:`ase.units` (CODATA 2014 in ASE).
"""

from __future__ import annotations

from ase import units as _u

#: Hartree in eV.
HARTREE_EV: float = _u.Hartree
#: Bohr radius in Å.
BOHR_A: float = _u.Bohr
#: Forces: Hartree/Bohr in eV/Å.
HARTREE_PER_BOHR_EVA: float = _u.Hartree / _u.Bohr
#: Dipoles: e·Bohr (atomic unit) in e·Å.
EBOHR_EA: float = _u.Bohr
#: Dipoles: one Debye in e·Å (ase.units.Debye is expressed in e·Å).
DEBYE_EA: float = _u.Debye
#: Boltzmann constant in eV/K.
KB_EV_PER_K: float = _u.kB
#: One femtosecond in ASE's internal time unit (Å·sqrt(amu/eV)).
FS_ASE: float = _u.fs
#: A mode energy ħω in eV divided by this gives the wavenumber in cm⁻¹.
INVCM_EV: float = _u.invcm
#: An acceleration F/m in eV/(Å·amu) expressed in Å/fs².
ACCEL_EV_A_AMU_IN_A_FS2: float = _u.fs**2
#: A kinetic energy m·v² with m in amu and v in Å/fs, expressed in eV.
AMU_A2_FS2_IN_EV: float = 1.0 / _u.fs**2
#: Speed of light in cm/fs (exact, the SI definition; wavenumber ν̃ = ω / (2π c)).
SPEED_OF_LIGHT_CM_FS: float = 2.99792458e-5
#: IR intensity: 1 Debye² Å⁻² amu⁻¹ in km/mol (the factor of ASE's infrared module).
KM_MOL_PER_D2_A2_AMU: float = 42.2561
