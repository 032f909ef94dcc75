"""A real GFN2-xTB calculator slowed down, so a test can kill a label run mid-way.

Used through the generic ``ase`` label source: ``calculator: slow_calc.SlowTBLite``.
"""

from __future__ import annotations

import time

from tblite.ase import TBLite


class SlowTBLite(TBLite):
    def __init__(self, *, delay_s: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def calculate(self, *args, **kwargs):
        time.sleep(self.delay_s)
        super().calculate(*args, **kwargs)
