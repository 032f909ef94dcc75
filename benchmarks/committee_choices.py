"""What a whole committee gains from one change: cutoff, split, hot frames, schedule, warm start.

Run: python benchmarks/committee_choices.py [--variants r3 r4 ...] [--seeds 0 1 2]
     [--table data/campaign/iter3/train.parquet] [--parallel 2]

Every variant trains a committee (one member per seed, ``training.train_member`` with
params.yaml's ``committee`` settings and the changes of the variant, 1 thread each, --parallel
side by side) on the same labelled table, by default the demo campaign's last training table
(``dvc pull`` or the README's main command makes it), and measures what the pipeline
measures: the committee-mean harmonic-frequency MAE against the reference (modes matched by
overlap, ``evaluation.committee_frequencies``), each member's MAE, and the test-set errors of
the committee mean (``data/test/test_set.parquet``). A single member moves by 2-3 cm-1 between
seeds, so compare committees, and read a difference smaller than the members' spread as none.

The figures of docs/method.md were measured on the 165-structure iter3 table of the lock at commit
ee67ec5 (``git checkout ee67ec5 -- dvc.lock && dvc checkout``); ``r3_continue`` starts from
that lock's iteration-0 committee (r_max 3 Å), so take both from one lock.

Printed per variant: the committee-mean MAE, its bias (mean signed error: an error the members
share, which their spread cannot show), each member's MAE, the test RMSEs, the training time,
and the force RMSE's difference to the first variant listed, paired over the same test
structures (95 % bootstrap interval). ``--measure-only`` measures the committees already in
``--work`` without training them again.

``--dipole`` trains the dipole-model variants instead (one model each; mDebye: the test RMSE
with its 95 % bootstrap interval, and the RMSE along the label source's own MD,
``data/reference/md_trajectories.zarr``, every 50th frame of every run).
docs/method.md ("What makes the committee converge") quotes this script's output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: name: (changes to committee.model, to committee.training, other settings)
VARIANTS = {
    "r3": ({"r_max_A": 3.0}, {}, {}),  # the settings before this table
    "r3_split1": ({"r_max_A": 3.0}, {}, {"split_seed": 1}),
    "r3_no_hot": ({"r_max_A": 3.0}, {}, {"max_temperature_K": 300.0}),
    "r3_exp_lr": ({"r_max_A": 3.0}, {"extra_args": ["--scheduler", "ExponentialLR",
                                                    "--lr_scheduler_gamma", "0.975"]}, {}),
    # fine-tuning iteration 0's members for 50 epochs (retrain: continue, in one step)
    "r3_continue": ({"r_max_A": 3.0}, {"max_num_epochs": 50},
                    {"continue_from": "data/campaign/iter0/committee"}),
    "r4": ({"r_max_A": 4.0}, {}, {}),
    "r5": ({"r_max_A": 5.0}, {}, {}),
    # the params.yaml settings trained three times as long: is the shared bias under-training?
    "r4_e240": ({"r_max_A": 4.0}, {"max_num_epochs": 240}, {}),
    "r4_e360": ({"r_max_A": 4.0}, {"max_num_epochs": 360}, {}),
    # stage two over the last fifth (epoch 288 on): energy weight 1000, lr 1e-3
    "r4_e360_stage2": ({"r_max_A": 4.0}, {"max_num_epochs": 360, "stage_two_fraction": 0.2},
                       {}),
    "r4_e360_ew10": ({"r_max_A": 4.0}, {"max_num_epochs": 360, "energy_weight": 10.0}, {}),
    # without the frames labelled more than 25 kT (k x their run's target T) above the
    # molecule's lowest labelled energy: configurations no run at T visits
    "r4_e360_ceiling": ({"r_max_A": 4.0}, {"max_num_epochs": 360}, {"max_excess_kT": 25.0}),
    # the last epoch's model instead of the lowest validation loss's (checkpoint: last)
    "r4_e360_last": ({"r_max_A": 4.0}, {"max_num_epochs": 360, "checkpoint": "last"}, {}),
    # the params.yaml settings trained in single precision: faster, and as accurate?
    "r4_e360_f32": ({"r_max_A": 4.0}, {"max_num_epochs": 360, "default_dtype": "float32"}, {}),
    # the spherical harmonics of the edges up to l = 2 or 1 instead of mace-torch's 3: fewer
    # components in every edge tensor product (training and MD time), and as accurate?
    "r4_ell2": ({"r_max_A": 4.0}, {"extra_args": ["--max_ell", "2"]}, {}),
    "r4_ell1": ({"r_max_A": 4.0}, {"extra_args": ["--max_ell", "1"]}, {}),
    # l = 2 for the training time of l = 3 at 300 epochs: same cost, more epochs
    "r4_ell2_e450": ({"r_max_A": 4.0}, {"max_num_epochs": 450,
                                        "extra_args": ["--max_ell", "2"]}, {}),
}
#: name: (changes to dipole.model, to dipole.training[, dipole.seed])
DIPOLE_VARIANTS = {
    "d_r3_bs10_e100": ({"r_max_A": 3.0}, {"batch_size": 10, "max_num_epochs": 100}),
    "d_r5_bs10_e100": ({"r_max_A": 5.0}, {"batch_size": 10, "max_num_epochs": 100}),
    "d_r5_32ch_bs5_e100": ({"r_max_A": 5.0, "num_channels": 32},
                           {"batch_size": 5, "max_num_epochs": 100}),
    "d_r5_bs5_e200": ({"r_max_A": 5.0}, {"batch_size": 5, "max_num_epochs": 200}),
    "d_r5_bs5_e200_seed1": ({"r_max_A": 5.0}, {"batch_size": 5, "max_num_epochs": 200}, 1),
    "d_r5_bs5_e300": ({"r_max_A": 5.0}, {"batch_size": 5, "max_num_epochs": 300}),
    "d_r5_32ch_bs5_e200": ({"r_max_A": 5.0, "num_channels": 32},
                           {"batch_size": 5, "max_num_epochs": 200}),
    "d_r5_bs5_e200_f32": ({"r_max_A": 5.0}, {"batch_size": 5, "max_num_epochs": 200,
                                             "default_dtype": "float32"}),
    "d_r5_bs5_e200_last": ({"r_max_A": 5.0}, {"batch_size": 5, "max_num_epochs": 200,
                                              "checkpoint": "last"}),
    "d_r5_32ch_bs5_e200_f32": ({"r_max_A": 5.0, "num_channels": 32},
                               {"batch_size": 5, "max_num_epochs": 200,
                                "default_dtype": "float32"}),
    "d_r5_64ch_bs5_e200_f32": ({"r_max_A": 5.0, "num_channels": 64},
                               {"batch_size": 5, "max_num_epochs": 200,
                                "default_dtype": "float32"}),
}


def _table(path: Path, settings: dict):
    import pyarrow.compute as pc

    from palirs_data import structures

    table = structures.read_table(path)
    if "max_temperature_K" in settings:  # only the frames at or below this temperature
        table = table.filter(pc.less_equal(table.column("temperature_K"),
                                           settings["max_temperature_K"]))
    if "max_excess_kT" in settings:
        import numpy as np
        import pyarrow as pa

        from palirs_data.units import KB_EV_PER_K

        e = np.asarray(table.column("energy_eV").to_pylist(), dtype=float)
        kt = KB_EV_PER_K * np.asarray(table.column("temperature_K").to_pylist(), dtype=float)
        names = np.asarray(table.column("molecule").to_pylist(), dtype=object)
        floor = {n: np.nanmin(e[names == n]) for n in set(names)}
        excess = (e - np.array([floor[n] for n in names])) / kt
        table = table.filter(pa.array(~(excess > settings["max_excess_kT"])))
    return table


def _e0s(path: Path) -> dict[int, float]:
    from ase.data import atomic_numbers

    return {atomic_numbers[el]: e for el, e in json.loads(path.read_text())["e0s_eV"].items()}


def train_one(name: str, seed: int, args) -> dict:
    """One member of variant ``name`` (in this process); the model goes to the work dir."""
    from palirs_data.training import train_member, write_split
    from palirs_data.config import load_params

    model, training, settings = VARIANTS[name]
    config = load_params(args.params).committee
    out = args.work / name
    train, valid, n_train, _ = write_split(
        _table(args.table, settings), elements=config.elements,
        valid_fraction=config.valid_fraction,
        split_seed=settings.get("split_seed", config.split_seed), data_dir=out / f"data{seed}")
    training = {"threads": 1, **training}
    if "continue_from" in settings:
        training["foundation_model"] = Path(settings["continue_from"]).resolve() / \
            f"model_{seed}.model"
    start = time.perf_counter()
    report = train_member(name=f"model_{seed}", train_file=train, valid_file=valid,
                          e0s=_e0s(args.e0s), elements=config.elements,
                          model=config.model.model_copy(update=model),
                          training=config.training.model_copy(update=training), seed=seed,
                          work_dir=out / f"member{seed}")
    (out / f"model_{seed}.model").write_bytes(Path(report.model).read_bytes())
    return {"variant": name, "seed": seed, "n_train": n_train,
            "seconds": round(time.perf_counter() - start, 1),
            "valid_rmse_f_meV_A": round(report.valid_rmse_f_meV_A, 1)}


def measure(name: str, args) -> dict:
    """The committee of variant ``name`` measured as the evaluate stage measures."""
    from palirs_data import harmonic, structures
    from palirs_data.committee import Committee
    from palirs_data.evaluation import committee_frequencies, errors_on_test_set

    paths = [args.work / name / f"model_{s}.model" for s in args.seeds]
    reference = harmonic.read_frequencies(args.sample / "frequencies.parquet")
    full = committee_frequencies(
        paths, structures.read_table(args.sample / "equilibrium.parquet"), reference,
        fmax_eVA=1e-3, max_steps=2000, hessian_step_A=0.01)
    report = full.metrics()
    committee = Committee.load(paths)
    table = structures.read_table(args.test)
    test = errors_on_test_set(table, committee)
    return {"variant": name, "mae": report["frequency_mae_cm1"],
            "members": report["frequency_member_mae_cm1"], "bias": _bias(reference, full),
            "e_rmse": test["energy_rmse_meV_per_atom"], "f_rmse": test["force_rmse_meV_A"],
            "f_sq": _force_squares(committee, table)}


def _force_squares(committee, table):
    """Per test structure: the sum of squared force-component errors of the committee mean
    (meV²/Å²) and the number of components, for a paired comparison of two variants."""
    import numpy as np

    from palirs_data import structures

    rows = [s for s in structures.from_table(table) if s.label_status == "ok"]
    pred = committee.predict_table(structures.to_table(rows))
    sq = np.array([(((p - s.forces_eVA) * 1e3) ** 2).sum()
                   for p, s in zip(pred["pred_forces_eVA"], rows)])
    return sq, np.array([s.forces_eVA.size for s in rows])


def paired_force_difference(a, b, draws: int = 2000, seed: int = 0):
    """RMSE(b) - RMSE(a) over the same test structures, meV/Å, with a 95 % interval from
    resampling the structures (the same draw for both): is b's force error different from
    a's beyond the choice of test structures?"""
    import numpy as np

    (sq_a, n), (sq_b, _) = a, b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(draws, len(n)))
    diff = np.sqrt(sq_b[idx].sum(1) / n[idx].sum(1)) - np.sqrt(sq_a[idx].sum(1) / n[idx].sum(1))
    point = np.sqrt(sq_b.sum() / n.sum()) - np.sqrt(sq_a.sum() / n.sum())
    return float(point), [float(x) for x in np.percentile(diff, [2.5, 97.5])]


def _bias(reference, report) -> float:
    """Mean signed error of the committee mean's matched frequencies, cm⁻¹ (all molecules):
    an error the members share (a softer or stiffer surface) shows here and not in their
    spread."""
    import numpy as np

    from palirs_data.evaluation import _reference_modes

    diffs = []
    for name, errors in report.committee["per_molecule"].items():
        ref, _ = _reference_modes(reference, name)
        diffs.append(np.asarray(errors["matched_cm1"]) - ref)
    return float(np.concatenate(diffs).mean())


def train_dipole(name: str, args) -> dict:
    from palirs_data import structures
    from palirs_data.committee import load_model
    from palirs_data.training import train_dipole_model
    from palirs_data.config import load_params
    from palirs_data.evaluation import dipole_errors, dipole_errors_along_md

    model, training, *seed = DIPOLE_VARIANTS[name]
    params = load_params(args.params)
    config = params.dipole.model_copy(update={**({"seed": seed[0]} if seed else {}),
        "model": params.dipole.model.model_copy(update=model),
        "training": params.dipole.training.model_copy(update={"threads": 1, **training})})
    start = time.perf_counter()
    report = train_dipole_model(_table(args.table, {}), e0s=_e0s(args.e0s),
                                elements=params.committee.elements, config=config,
                                out_file=args.work / name / "dipole.model",
                                work_dir=args.work / name / "work")
    trained = load_model(report.model)
    errors = dipole_errors(structures.read_table(args.test), trained)
    along = dipole_errors_along_md(args.reference_md, trained) if args.reference_md.exists() \
        else {}
    return {"variant": name, "seconds": round(time.perf_counter() - start, 1),
            "valid_mD": round(report.valid_rmse_mu_mD, 1),
            "test_rmse_mD": round(errors["dipole_rmse_mD"], 1),
            "test_ci95": [round(x, 1) for x in errors["dipole_rmse_mD_ci95"]],
            "md_rmse_mD": {k: round(v["dipole_rmse_mD"], 1) for k, v in along.items()}}


def _children(jobs: list[list[str]], args) -> list[dict]:
    results = []
    for k in range(0, len(jobs), args.parallel):
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", *job],
                                  stdout=subprocess.PIPE, text=True)
                 for job in jobs[k:k + args.parallel]]
        results += [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+")
    parser.add_argument("--dipole", action="store_true", help="the dipole-model variants")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table", type=Path, default=Path("data/campaign/iter3/train.parquet"))
    parser.add_argument("--sample", type=Path, default=Path("data/sample"))
    parser.add_argument("--test", type=Path, default=Path("data/test/test_set.parquet"))
    parser.add_argument("--e0s", type=Path, default=Path("data/reference/e0s.json"))
    parser.add_argument("--reference-md", type=Path,
                        default=Path("data/reference/md_trajectories.zarr"),
                        help="the label source's MD: the dipole variants' error along it")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/palirs-committee-choices"))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--measure-only", action="store_true",
                        help="measure the committees already in --work (no training; s/member 0)")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: JSON on stdout's last line
        if args.dipole:
            print(json.dumps(train_dipole(args.one[0], args)))
        else:
            print(json.dumps(train_one(args.one[0], int(args.one[1]), args)))
        return
    if args.dipole:
        names = args.variants or list(DIPOLE_VARIANTS)
        print(f"{'dipole variant':<24} {'test RMSE mD [95 %]':>20} {'valid':>6} "
              f"{'reference MD':>13} {'s':>5}")
        for r in _children([[n] for n in names], args):
            lo, hi = r["test_ci95"]
            md = ", ".join(f"{v:.1f}" for v in r["md_rmse_mD"].values()) or "-"
            print(f"{r['variant']:<24} {r['test_rmse_mD']:6.1f} [{lo:5.1f}, {hi:5.1f}] "
                  f"{r['valid_mD']:6.1f} {md:>13} {r['seconds']:5.0f}")
        return
    names = args.variants or list(VARIANTS)
    trained = [] if args.measure_only else \
        _children([[n, str(s)] for n in names for s in args.seeds], args)
    print(f"{'variant':<12} {'MAE cm-1':>8} {'bias':>6}  {'members':<20} {'E meV/at':>8} "
          f"{'F meV/Å':>8} {'s/member':>8}  F RMSE minus the first variant's [95 %]")
    first = None
    for name in names:
        r = measure(name, args)
        secs = [t["seconds"] for t in trained if t["variant"] == name]
        paired = ""
        if first is None:
            first = r["f_sq"]
        else:
            d, (lo, hi) = paired_force_difference(first, r["f_sq"])
            paired = f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        per_member = sum(secs) / max(1, len(secs))
        print(f"{name:<12} {r['mae']:8.2f} {r['bias']:6.2f}  "
              f"{', '.join(f'{m:.1f}' for m in r['members']):<20} "
              f"{r['e_rmse']:8.2f} {r['f_rmse']:8.1f} {per_member:8.0f}  {paired}")


if __name__ == "__main__":
    main()
