"""Does the dipole model need more MD frames? Adds to the final table ``--md-frames`` frames
per molecule and temperature of the campaign's acquisition MD, picked and labelled as the
``dipole`` stage does (``dipole.md_frames``, :mod:`palirs_data.dipole_data`), and trains and
scores the stage's model with each count, for several seeds (``benchmarks/dipole_ensemble.py``
does the training and scoring).

    python benchmarks/dipole_data.py --md-frames 0 15 30 60 --seeds 0 1 2

Prints, per setting, dipole_ensemble's table (test RMSE with its 95 % interval, along the
reference MD, validation, seconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def augmented_table(args, n: int) -> Path:
    from palirs_data import structures
    from palirs_data.campaign import iteration_names
    from palirs_data.compute import executor
    from palirs_data.config import load_params
    from palirs_data.dipole_data import md_frames_table
    from palirs_data.labeling import label_table

    out = args.work / f"table_{n}.parquet"
    if n == 0:
        return args.table
    if out.exists():
        return out
    params = load_params(args.params)
    table = structures.read_table(args.table)
    pending = md_frames_table(args.campaign, iteration_names(params.active_learning), n, table)
    label = params.label.model_copy(update={"checkpoint_dir": args.work / "ckpt"})
    start = time.perf_counter()
    with executor(params.compute) as ex:
        labelled = label_table(pending, labeler_config=params.labeler, config=label,
                               executor=ex).table
    print(f"{n} frames per molecule and temperature: {labelled.num_rows} labelled in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    structures.write_table(structures.concat_tables([table, labelled]), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--md-frames", type=int, nargs="+", default=[0, 15, 30, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table", type=Path, default=Path("data/labelled/final.parquet"))
    parser.add_argument("--campaign", type=Path, default=Path("data/campaign"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/palirs-dipole-md"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for n in args.md_frames:
        table = augmented_table(args, n)
        print(f"\n== {n} MD frames per molecule and temperature: {table}", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("dipole_ensemble.py")),
                        "--seeds", *map(str, args.seeds), "--table", str(table),
                        "--params", str(args.params),
                        "--work", str(args.work / f"models_{n}")], check=True)


if __name__ == "__main__":
    main()
