"""The cost guard: a stage whose label-source single points are projected to take longer than
``label.max_projected_hours`` stops before the first one, with one line giving the estimate
and the key that allows it.

The projection is the number of single points times the seconds one takes on one core, from
this project's measurements on its development machine (two cores of a shared VM, 2026):

============  =======================================  ======================================
method        measured (one single point, one core)    model: s = s6 × (atoms / 6) ** p
============  =======================================  ======================================
xtb           2.0 ms methanol (metrics/label.json)      s6 = 0.002, p = 1.5
pyscf         1.1 s water, 4.5-5.3 s methanol and       s6 = 5.0, p = 2.2 (fits all three
(PBE/def2-SVP) acetonitrile, 11-13 s ethanol            sizes within 15 %)
              (benchmarks/label_source_ceiling.py)
============  =======================================  ======================================

A larger basis, a hybrid functional or another code costs more than these rates: the guard
is then a lower bound, and says so. Any other ASE calculator has no measured rate and is
not projected (logged). The point of the guard is the case docs/dft.md warns about: switching
``labeler.method`` to DFT with ``reference_md.enabled`` left on queues some 3 × 21,000 DFT
gradients per molecule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from palirs_data.config import LabelerConfig
from palirs_data.errors import PalirsInputError

log = logging.getLogger(__name__)

KEY = "label.max_projected_hours"

#: seconds per single point of a 6-atom molecule on one core, and the power of the atom count
RATES: dict[str, tuple[float, float]] = {"xtb": (0.002, 1.5), "pyscf": (5.0, 2.2)}


def seconds_per_point(method: str, n_atoms: int) -> float | None:
    """The projected seconds of one single point (None: no measured rate for ``method``)."""
    if method not in RATES:
        return None
    s6, power = RATES[method]
    return s6 * (max(n_atoms, 1) / 6) ** power


def projected_hours(method: str, atoms_per_point: Sequence[tuple[int, int]]) -> float | None:
    """Core-hours of ``(count, atoms)`` single points (None: not projected)."""
    if method not in RATES:
        return None
    return sum(n * seconds_per_point(method, atoms) for n, atoms in atoms_per_point) / 3600


def check_cost(what: str, labeler: LabelerConfig, atoms_per_point: Sequence[tuple[int, int]],
               *, max_hours: float | None, advice: str = "") -> float | None:
    """Stop ``what`` before it starts when its single points (``(count, atoms)`` pairs) are
    projected to take more than ``max_hours`` core-hours (None: no bound). Returns the
    projection (None where the method has no measured rate)."""
    points = sum(n for n, _ in atoms_per_point)
    hours = projected_hours(labeler.method, atoms_per_point)
    if hours is None:
        log.info("%s: %d single points of %s (no measured rate: cost not projected)", what,
                 points, labeler.level_of_theory)
        return None
    bound = "" if labeler.method == "xtb" else " (a lower bound for larger bases)"
    if max_hours is not None and hours > max_hours:
        shown = f"{hours:,.0f}" if hours >= 10 else f"{hours:.2g}"
        raise PalirsInputError(
            f"{what}: {points:,} {labeler.level_of_theory} single points, projected "
            f"{shown} core-hours at this project's measured rates{bound}, over "
            f"{KEY} = {max_hours:g}; raise {KEY} to allow it{advice}")
    log.info("%s: %d single points of %s, projected %.2f core-hours", what, points,
             labeler.level_of_theory, hours)
    return hours
