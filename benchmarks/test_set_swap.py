"""Each run's final committee and dipole model on each run's test set.

The test set is drawn from the *first* committee's MD, so two campaigns that differ in their
first committee (e.g. ``committee.initial_epochs``) also differ in their test sets, and their
test errors cannot be compared directly. This scores every pair (test set of run A or B, models
of run A or B), with the 95 % intervals of ``errors_on_test_set``.

    python benchmarks/test_set_swap.py /path/to/clone_a /path/to/clone_b
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from palirs_data import structures
from palirs_data.committee import Committee, load_model
from palirs_data.evaluation import errors_on_test_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="clones that ran the demo")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'test set':<28} {'models':<28} {'E meV/atom [95 %]':<22} {'F meV/A [95 %]':<22} "
          "dipole mD [95 %]")
    for test_run in args.runs:
        test = structures.read_table(test_run / "data/test/test_set.parquet")
        for model_run in args.runs:
            committee = Committee.load(
                sorted((model_run / "data/models/committee").glob("model_*.model")))
            dipole = load_model(model_run / "data/models/dipole.model")
            o = errors_on_test_set(test, committee, dipole)

            def cell(key: str, digits: int) -> str:
                lo, hi = o[f"{key}_ci95"]
                return f"{o[key]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

            print(f"{str(test_run):<28} {str(model_run):<28} "
                  f"{cell('energy_rmse_meV_per_atom', 2):<22} {cell('force_rmse_meV_A', 1):<22} "
                  f"{cell('dipole_rmse_mD', 1)}", flush=True)


if __name__ == "__main__":
    main()
