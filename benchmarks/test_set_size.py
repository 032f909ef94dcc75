"""How many test structures does a test RMSE need? The same models on test sets of several sizes.

Run: python benchmarks/test_set_size.py [--sizes 5x4 5x8 10x4 10x8 5x16]
     [--test-models data/campaign/iter0/committee] [--committee data/campaign/iter1/committee]
     [--dipole data/models/dipole.model]

The test-set stage's candidate frames are made once, exactly as the stage makes them
(``evaluation.test_set_md``: the first model of ``--test-models``, params.yaml's ``test_set``
protocol and seed); then, for every size ``n_clusters x per_cluster``, the stage's selection
(MBTR + k-means, ``per_cluster`` random members of each cluster, the seed of params.yaml) is
labelled with the label source, and the committee (``--committee``, its mean) and the dipole
model are scored as ``evaluate`` and ``dipole`` score them: RMSE with its 95 % bootstrap
interval over structures. The row of params.yaml's own size reproduces ``metrics/dipole.json``.
The first molecule of ``data/sample/equilibrium.parquet`` is used. Labels are checkpointed
under ``--work``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from palirs_data import structures
from palirs_data.committee import Committee, load_model
from palirs_data.config import load_params
from palirs_data.evaluation import (dipole_errors, errors_on_test_set, mbtr_descriptors,
                                    select_by_clusters, test_set_md)
from palirs_data.labeling import label_table
from palirs_data.structures import Structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["5x4", "5x8", "10x4", "10x8", "5x16"])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--test-models", type=Path, default=Path("data/campaign/iter0/committee"))
    parser.add_argument("--committee", type=Path, default=Path("data/campaign/iter1/committee"))
    parser.add_argument("--dipole", type=Path, default=Path("data/models/dipole.model"))
    parser.add_argument("--equilibrium", type=Path,
                        default=Path("data/sample/equilibrium.parquet"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/palirs-test-set-size"))
    args = parser.parse_args()
    p = load_params(args.params)
    c = p.test_set
    minima = structures.from_table(structures.read_table(args.equilibrium))[:1]
    first = sorted(args.test_models.glob("model_*.model"))[0]
    frames, seconds, _, _ = test_set_md(
        str(first.resolve()), minima, temperature_K=c.temperature_K, duration_fs=c.duration_fs,
        timestep_fs=c.timestep_fs, friction_fs=c.friction_fs, n_candidates=c.n_candidates,
        seed=c.seed, guard=p.guard)
    s, traj = minima[0], frames[0]
    print(f"{s.molecule}: {len(traj)} candidate frames ({seconds:.0f} s of MD); params.yaml: "
          f"{c.n_clusters}x{c.per_cluster}")
    descriptors = mbtr_descriptors([Atoms(numbers=s.numbers, positions=x) for x in traj],
                                   p.committee.elements)
    committee = Committee.load(sorted(args.committee.glob("model_*.model")))
    dipole = load_model(args.dipole)

    def cell(d: dict, key: str) -> str:
        lo, hi = d[f"{key}_ci95"]
        return f"{d[key]:6.2f} [{lo:.2f}, {hi:.2f}]"

    print(f"{'size':>6} {'n':>4} {'dipole RMSE mD [95 %]':>24} {'E RMSE meV/atom':>22} "
          f"{'F RMSE meV/A':>24}")
    for size in args.sizes:
        n_clusters, per_cluster = (int(x) for x in size.split("x"))
        # the stage's generator: the same seed, drawn first by k-means, then by the members
        idx, _ = select_by_clusters(descriptors, n_clusters=n_clusters, per_cluster=per_cluster,
                                    rng=np.random.default_rng(c.seed))
        rows = [Structure(molecule=s.molecule, numbers=s.numbers, positions_A=traj[i],
                          source="test", temperature_K=c.temperature_K, charge_e=s.charge_e,
                          multiplicity=s.multiplicity) for i in sorted(idx)]
        config = p.label.model_copy(update={"checkpoint_dir": args.work / size})
        table = label_table(structures.to_table(structures.dedupe(rows)),
                            labeler_config=p.labeler, config=config).table
        d = dipole_errors(table, dipole)
        e = errors_on_test_set(table, committee)
        print(f"{size:>6} {table.num_rows:>4} {cell(d, 'dipole_rmse_mD'):>24} "
              f"{cell(e, 'energy_rmse_meV_per_atom'):>22} {cell(e, 'force_rmse_meV_A'):>24}",
              flush=True)
        print(json.dumps({"size": size, "n": table.num_rows, **d, **e}), flush=True)


if __name__ == "__main__":
    main()
