"""The methanol campaign with GFN2-xTB under several campaign seeds: is the learning curve
reproducible, and how many labels reach the stop rule?

Run: python benchmarks/learning_curve.py [--seeds 0 1 2] [--iterations 4]
     [-S committee.retrain=continue ...] [--keep DIR]

For each seed s the campaign (sample -> label -> train -> test set -> evaluate -> acquire ...,
up to the ``campaign`` stage; no dipole or spectra) runs with ``dvc repro campaign`` in a fresh
clone of this repository (the committed code and params.yaml) with

    sample.seed = s, committee.seeds = [3s, 3s+1, 3s+2], active_learning.acquire.seed = s,
    test_set.seed = s

and any further ``-S key=value`` overrides (as ``dvc exp run -S``). It prints, per seed and
iteration, the labels per molecule, the committee-mean harmonic-frequency MAE (cm⁻¹) with the
members' spread, the test-set errors, the pooled acquisition temperatures, the iteration at
which the stop rule (MAE < active_learning.stop_mae_cm1, from iteration
active_learning.min_iterations on) first holds and the wall time; then
mean ± std over seeds of the final MAE. The clones are deleted unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def _set(params: dict, dotted: str, value) -> None:
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def run_seed(seed: int, *, iterations: int, overrides: list[str], root: Path) -> dict:
    """One campaign in a fresh clone under ``root``; returns its records and wall time."""
    clone = root / f"seed{seed}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    _set(params, "sample.seed", seed)
    _set(params, "committee.seeds", [3 * seed, 3 * seed + 1, 3 * seed + 2])
    _set(params, "active_learning.acquire.seed", seed)
    _set(params, "test_set.seed", seed)
    _set(params, "active_learning.iterations",
         {f"iter{k}": f"iter{k - 1}" for k in range(1, iterations + 1)})
    for item in overrides:
        key, value = item.split("=", 1)
        _set(params, key, yaml.safe_load(value))
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "PALIRS_SCHEDULER_ADDRESS"}
    env["PYTHONPATH"] = str(clone)  # the clone's library, not an editable install elsewhere
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "campaign"], cwd=clone,
                   check=True, env=env)
    wall = time.perf_counter() - start
    from palirs_data.campaign import summarise
    from palirs_data.config import load_params

    rows, summary = summarise(clone / "data/campaign", load_params(params_path).active_learning)
    return {"seed": seed, "rows": rows, "summary": summary, "wall_s": wall}


def report(results: list[dict]) -> None:
    print(f"{'seed':>4} {'iter':>4} {'labels':>6} {'MAE':>6} {'members':>13} {'sorted':>6} "
          f"{'E RMSE':>7} {'F RMSE':>7}")
    print(f"{'':>4} {'':>4} {'/mol':>6} {'cm-1':>6} {'mean ± std':>13} {'cm-1':>6} "
          f"{'meV/at':>7} {'meV/Å':>7}")
    for res in results:
        for r in res["rows"]:
            labels = min(r["labels_per_molecule"].values())
            members = (f"{r.get('frequency_member_mae_mean_cm1', float('nan')):5.1f} ± "
                       f"{r.get('frequency_member_mae_std_cm1') or float('nan'):4.1f}")
            print(f"{res['seed']:>4} {r['iteration']:>4} {labels:>6} "
                  f"{r['frequency_mae_cm1']:6.1f} {members:>13} "
                  f"{r['frequency_mae_sorted_cm1'] or float('nan'):6.1f} "
                  f"{r['test_energy_rmse_meV_per_atom']:7.1f} {r['test_force_rmse_meV_A']:7.1f}")
    print()
    for res in results:
        s = res["summary"]
        reached = (res["rows"][s["converged_at"]] if s["converged"] else None)
        where = (f"stop rule at iteration {reached['iteration']} with "
                 f"{min(reached['labels_per_molecule'].values())} labels/molecule"
                 if reached else "stop rule not reached")
        temps = ", ".join(f"{k} {v['mean_K']:.0f}±{v['se_K']:.0f} K"
                          for k, v in s.get("kinetic_temperature_K", {}).items())
        print(f"seed {res['seed']}: {where}; wall {res['wall_s'] / 60:.1f} min; "
              f"acquisition MD {temps}")
    final = np.array([res["rows"][-1]["frequency_mae_cm1"] for res in results])
    print(f"final committee-mean MAE over {len(final)} seeds: {final.mean():.2f} ± "
          f"{final.std(ddof=1) if len(final) > 1 else float('nan'):.2f} cm-1 "
          f"(range {final.max() - final.min():.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("-S", dest="overrides", action="append", default=[],
                        help="a params.yaml override key=value (YAML value), repeatable")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the clones in this directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="palirs-learning-curve-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [run_seed(s, iterations=args.iterations, overrides=args.overrides, root=root)
                   for s in args.seeds]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
