"""Does averaging dipole models of several seeds beat one? Trains the ``dipole`` stage's model
(params.yaml's settings, one thread each, ``--parallel`` side by side) with each of
``--seeds`` on one table, and scores every model and the mean of their dipoles as the stage
does: RMSE (mDebye, per Cartesian component) on the test set with its 95 % bootstrap interval
over structures, and along the label source's own MD (a frame every 25 fs of every run).

    python benchmarks/dipole_ensemble.py --seeds 0 1 2 --table data/labelled/final.parquet

Prints one row per seed, the mean over single models, and the averaged model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


class MeanDipole(torch.nn.Module):
    """The mean dipole of several mace-torch dipole models with one cutoff and one element
    table (what :func:`palirs_data.committee.predict_dipoles` needs of a model)."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.r_max = models[0].r_max
        self.atomic_numbers = models[0].atomic_numbers

    def forward(self, data: dict, training: bool = False, compute_force: bool = False) -> dict:
        dipoles = [m(dict(data), training=training, compute_force=compute_force)["dipole"]
                   for m in self.members]
        return {"dipole": torch.stack(dipoles).mean(dim=0)}


def train(seed: int, args) -> dict:
    from palirs_data import structures
    from palirs_data.config import load_params
    from palirs_data.e0s import read_e0s
    from palirs_data.training import train_dipole_model

    params = load_params(args.params)
    config = params.dipole.model_copy(update={
        "seed": seed, "training": params.dipole.training.model_copy(update={"threads": 1})})
    start = time.perf_counter()
    report = train_dipole_model(structures.read_table(args.table), e0s=read_e0s(args.e0s),
                                elements=params.committee.elements, config=config,
                                out_file=args.work / f"seed{seed}" / "dipole.model",
                                work_dir=args.work / f"seed{seed}" / "work")
    return {"seed": seed, "model": str(report.model), "valid_mD": report.valid_rmse_mu_mD,
            "seconds": time.perf_counter() - start}


def score(model: torch.nn.Module, args) -> dict:
    from palirs_data import structures
    from palirs_data.evaluation import dipole_errors, dipole_errors_along_md

    test = dipole_errors(structures.read_table(args.test), model)
    along = dipole_errors_along_md(args.reference_md, model)
    return {"test": test["dipole_rmse_mD"], "ci": test["dipole_rmse_mD_ci95"],
            "md": {k: v["dipole_rmse_mD"] for k, v in along.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table", type=Path, default=Path("data/labelled/final.parquet"))
    parser.add_argument("--test", type=Path, default=Path("data/test/test_set.parquet"))
    parser.add_argument("--e0s", type=Path, default=Path("data/reference/e0s.json"))
    parser.add_argument("--reference-md", type=Path,
                        default=Path("data/reference/md_trajectories.zarr"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/palirs-dipole-ensemble"))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # a child process: JSON on stdout's last line
        print(json.dumps(train(args.one, args)))
        return
    from palirs_data.committee import load_model

    trained = []
    for k in range(0, len(args.seeds), args.parallel):
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", str(s)],
                                  stdout=subprocess.PIPE, text=True)
                 for s in args.seeds[k:k + args.parallel]]
        trained += [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    models = [load_model(t["model"]) for t in trained]
    rows = [(f"seed {t['seed']}", score(m, args), t) for t, m in zip(trained, models)]
    print(f"{'model':<22} {'test RMSE mD [95 %]':>22} {'along the MD':>13} {'valid':>6} {'s':>5}")
    for name, r, t in rows:
        md = ", ".join(f"{v:.1f}" for v in r["md"].values())
        print(f"{name:<22} {r['test']:7.1f} [{r['ci'][0]:5.1f}, {r['ci'][1]:5.1f}] {md:>13} "
              f"{t['valid_mD']:6.1f} {t['seconds']:5.0f}")
    single = [r for _, r, _ in rows]
    mean_test = sum(r["test"] for r in single) / len(single)
    mean_md = {k: sum(r["md"][k] for r in single) / len(single) for k in single[0]["md"]}
    print(f"{'mean of single models':<22} {mean_test:7.1f} {'':>14} "
          f"{', '.join(f'{v:.1f}' for v in mean_md.values()):>13}")
    avg = score(MeanDipole(models), args)
    print(f"{'averaged dipoles':<22} {avg['test']:7.1f} [{avg['ci'][0]:5.1f}, {avg['ci'][1]:5.1f}] "
          f"{', '.join(f'{v:.1f}' for v in avg['md'].values()):>13}")


if __name__ == "__main__":
    main()
