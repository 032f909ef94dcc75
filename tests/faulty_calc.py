"""A real GFN2-xTB calculator that misbehaves on chosen structures, to test fault handling.

Used through the generic ``ase`` label source: ``calculator: faulty_calc.FaultyTBLite``. A
structure is picked by the x coordinate of its first atom, rounded to 6 decimals:
``crash_at`` kills the process (as a segfault or the OOM killer would), ``hang_at`` never
answers (sleeps), ``nan_at`` returns a NaN energy. ``safer_kwargs`` may clear a fault, which is
how a retry with safer settings succeeds.
"""

from __future__ import annotations

import os
import time

from tblite.ase import TBLite


class FaultyTBLite(TBLite):
    def __init__(self, *, crash_at=(), hang_at=(), nan_at=(), **kwargs):
        super().__init__(**kwargs)
        self.faults = ({round(float(x), 6): "crash" for x in crash_at}
                       | {round(float(x), 6): "hang" for x in hang_at}
                       | {round(float(x), 6): "nan" for x in nan_at})

    def calculate(self, atoms=None, *args, **kwargs):
        fault = self.faults.get(round(float(atoms.positions[0, 0]), 6))
        if fault == "crash":
            os._exit(139)
        if fault == "hang":
            time.sleep(3600)
        super().calculate(atoms, *args, **kwargs)
        if fault == "nan":
            self.results["energy"] = float("nan")
