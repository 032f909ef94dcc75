"""The active-learning campaign as a whole: per-iteration records, the summary, experiments.

A campaign lives in ``data/campaign/``, one directory per iteration::

    data/campaign/iter0/    train.parquet (the labelled normal modes), committee/,
                            evaluate.json, frequencies.csv, train_ensemble.json, ...
    data/campaign/iterK/    the same, plus trajectories.zarr and acquire.json

Each directory is written by DVC stages (``dvc.yaml``: ``label``, ``train-ensemble`` and
``evaluate`` for ``iter0``; ``acquire@iterK``, ``retrain@iterK`` and ``reevaluate@iterK``
after it). :func:`summarise` reads the iterations named in ``params.yaml`` and gives one
record per iteration (the learning curve) and a summary of the last one (for
``dvc exp show``). :func:`run_experiments` runs the campaign as one ``dvc exp run`` per
iteration, so that ``dvc exp show`` lists the iterations side by side.

Run as ``python -m palirs_data.campaign experiments`` (``plan N`` prints the iterations mapping
for N iterations, to paste into ``params.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from palirs_data import structures
from palirs_data.config import ActiveLearningConfig, iteration_number, load_params
from palirs_data.errors import PalirsInputError
from palirs_data.reports import Acquisition, Evaluation
from palirs_data.settings import SETTINGS

log = logging.getLogger("palirs_data.campaign")  # also when run as __main__

#: columns of the per-iteration learning curve (``metrics/campaign.csv``)
CURVE_COLUMNS = ("iteration", "n_train", "labels_per_molecule_min", "added",
                 "frequency_mae_cm1", "frequency_member_mae_std_cm1",
                 "frequency_mae_sorted_cm1", "frequency_rmse_cm1",
                 "test_energy_rmse_meV_per_atom", "test_energy_rmse_within_molecule_meV_per_atom",
                 "test_force_rmse_meV_A", "test_force_std_error_spearman",
                 "max_force_std_max_eVA", "guard_stops")


def iteration_names(config: ActiveLearningConfig) -> list[str]:
    """``iter0`` and every iteration of the campaign, in order."""
    return ["iter0", *config.iterations]


def iteration_record(directory: Path) -> dict:
    """One row of the learning curve from a finished iteration directory."""
    k = iteration_number(directory.name)
    table = structures.read_table(directory / "train.parquet")
    ok = table.filter(pc.equal(table.column("label_status"), "ok"))
    molecules, counts = np.unique(np.asarray(ok.column("molecule").to_pylist(), dtype=object),
                                  return_counts=True)
    evaluation = Evaluation.read(directory / "evaluate.json")
    acquired = Acquisition.read(directory / "acquire.json") if k else None
    counts_by = dict(zip(molecules, counts))
    return {
        "iteration": k, "n_train": ok.num_rows,
        "labels_per_molecule_min": int(counts.min()) if len(counts) else 0,
        "labels_per_molecule": {str(m): int(c) for m, c in zip(molecules, counts)},
        "added": acquired.n_labelled if acquired else ok.num_rows,
        "converged_before": bool(acquired and acquired.converged),
        "frequency_mae_cm1": evaluation.frequency_mae_cm1,
        "frequency_rmse_cm1": evaluation.frequency_rmse_cm1,
        "frequency_mae_sorted_cm1": evaluation.frequency_mae_sorted_cm1,
        "frequency_member_mae_mean_cm1": evaluation.frequency_member_mae_mean_cm1,
        "frequency_member_mae_std_cm1": evaluation.frequency_member_mae_std_cm1,
        # per molecule: committee-mean MAE and the spread of the members' MAEs (cm-1)
        "molecules": {
            str(name): {"frequency_mae_cm1": e.mae_cm1,
                        "frequency_member_mae_std_cm1": (
                            float(np.std(e.member_mae_cm1)) if e.member_mae_cm1 else None),
                        "labels": int(counts_by.get(name, 0))}
            for name, e in evaluation.frequency_per_molecule.items()},
        "converged_molecules": acquired.converged_molecules if acquired else [],
        "runs": [r.model_dump() for r in acquired.runs] if acquired else [],
        "test_energy_rmse_meV_per_atom": evaluation.test.energy_rmse_meV_per_atom,
        # the same without each molecule's constant offset (evaluation.energy_offsets)
        "test_energy_rmse_within_molecule_meV_per_atom":
            evaluation.test.energy_rmse_within_molecule_meV_per_atom,
        "test_energy_offset_meV_per_atom": evaluation.test.energy_offset_meV_per_atom,
        "test_force_rmse_meV_A": evaluation.test.force_rmse_meV_A,
        "test_energy_rmse_meV_per_atom_ci95": evaluation.test.energy_rmse_meV_per_atom_ci95,
        "test_force_rmse_meV_A_ci95": evaluation.test.force_rmse_meV_A_ci95,
        "test_force_std_error_spearman": evaluation.test.force_std_error_spearman,
        "max_force_std_max_eVA": acquired.max_force_std_max_eVA if acquired else None,
        "guard_stops": acquired.guard_stops if acquired else 0,
        "acquire_seconds": acquired.seconds if acquired else 0.0,
    }


def summarise(campaign_dir: Path, config: ActiveLearningConfig) -> tuple[list[dict], dict]:
    """Records of every iteration and the campaign summary: the last iteration's figures (what
    ``dvc exp show`` lists per experiment), whether and where the stop rule first held
    (:meth:`~palirs_data.config.ActiveLearningConfig.stop_rule_holds`).

    Iterations after the campaign converged pass its table and committee through unchanged
    (``converged_before``); they are left out of the records, so that the learning curve ends
    where the campaign stopped. ``iterations`` is the last iteration that ran,
    ``iterations_planned`` the last one ``params.yaml`` names."""
    every = [iteration_record(campaign_dir / name) for name in iteration_names(config)]
    rows = [r for r in every if not r["converged_before"]]
    below = [r["iteration"] for r in rows if _all_below(r, config)]
    last = rows[-1]
    summary = {
        "iterations": last["iteration"], "iterations_planned": every[-1]["iteration"],
        "converged": bool(below),
        "converged_at": below[0] if below else None,
        "molecules": molecule_summary(rows, config),
        **molecule_mean(last),
        **{k: last[k] for k in ("n_train", "labels_per_molecule", "frequency_mae_cm1",
                                "frequency_member_mae_std_cm1", "frequency_mae_sorted_cm1",
                                "frequency_rmse_cm1", "test_energy_rmse_meV_per_atom",
                                "test_energy_rmse_within_molecule_meV_per_atom",
                                "test_energy_offset_meV_per_atom", "test_force_rmse_meV_A",
                                "test_energy_rmse_meV_per_atom_ci95", "test_force_rmse_meV_A_ci95",
                                "test_force_std_error_spearman")},
        # this iteration's acquisition: labels added, largest committee spread, guard stops
        "added": last["added"], "max_force_std_max_eVA": last["max_force_std_max_eVA"],
        "guard_stops": last["guard_stops"],
        "guard_stops_total": sum(r["guard_stops"] for r in rows),
        "kinetic_temperature_K": pooled_kinetic_temperatures(rows),
    }
    return rows, summary


def iterations_phrase(summary: dict) -> str:
    """'1 of 3 iterations' when the campaign stopped before the last planned iteration, else
    '2 iterations' (summaries written before ``iterations_planned`` existed read as planned)."""
    n = summary["iterations"]
    planned = summary.get("iterations_planned", n)
    return (f"{n} of {planned} iterations" if n != planned
            else f"{n} iteration{'' if n == 1 else 's'}")


def _all_below(row: dict, config: ActiveLearningConfig) -> bool:
    """The campaign's stop rule on one iteration: it holds for every molecule (for the overall
    MAE where the evaluation has no per-molecule figures)."""
    maes = ([m["frequency_mae_cm1"] for m in row["molecules"].values()] if row["molecules"]
            else [row["frequency_mae_cm1"]])
    return all(config.stop_rule_holds(row["iteration"], mae) for mae in maes)


def molecule_summary(rows: list[dict], config: ActiveLearningConfig) -> dict[str, dict]:
    """Per molecule: its last MAE (with the members' spread), its labels, the first iteration
    at which it met the stop rule and its labels then (``labels_at_stop``; None: not yet)."""
    out: dict[str, dict] = {}
    for name, last in rows[-1]["molecules"].items():
        hit = next((r for r in rows if name in r["molecules"] and config.stop_rule_holds(
                    r["iteration"], r["molecules"][name]["frequency_mae_cm1"])), None)
        out[name] = {"frequency_mae_cm1": round(last["frequency_mae_cm1"], 3),
                     "frequency_member_mae_std_cm1": (
                         None if last["frequency_member_mae_std_cm1"] is None
                         else round(last["frequency_member_mae_std_cm1"], 3)),
                     "labels": last["labels"],
                     "converged_at": hit["iteration"] if hit else None,
                     "labels_at_stop": hit["molecules"][name]["labels"] if hit else None}
    return out


def molecule_mean(row: dict) -> dict:
    """Mean and standard deviation over molecules of their MAEs (each molecule counts once,
    however many modes it has; the overall ``frequency_mae_cm1`` is over all modes)."""
    values = [m["frequency_mae_cm1"] for m in row["molecules"].values()]
    if not values:
        return {}
    return {"frequency_mae_molecule_mean_cm1": round(float(np.mean(values)), 3),
            "frequency_mae_molecule_std_cm1": (round(float(np.std(values, ddof=1)), 3)
                                               if len(values) > 1 else None)}


def molecule_curve_csv(rows: list[dict], config: ActiveLearningConfig) -> str:
    """The learning curve per molecule (long format: one row per iteration and molecule;
    ``below_stop``: the stop rule holds for the molecule after this iteration, so the next one
    adds no data for it)."""
    lines = ["iteration,molecule,labels,frequency_mae_cm1,frequency_member_mae_std_cm1,"
             "below_stop"]
    for r in rows:
        for name, m in sorted(r["molecules"].items()):
            std = m["frequency_member_mae_std_cm1"]
            holds = config.stop_rule_holds(r["iteration"], m["frequency_mae_cm1"])
            lines.append(f'{r["iteration"]},"{name}",{m["labels"]},'
                         f'{m["frequency_mae_cm1"]:.4f},{"" if std is None else f"{std:.4f}"},'
                         f'{int(holds)}')
    return "\n".join(lines) + "\n"


def pooled_kinetic_temperatures(rows: list[dict]) -> dict[str, dict]:
    """Mean kinetic temperature of the acquisition MD per molecule and target temperature,
    pooled over the runs of every iteration (frame-weighted; a short run of a small molecule
    fluctuates too much to say alone), with its standard error and relative deviation from
    the target."""
    pooled: dict[str, dict] = {}
    for row in rows:
        for run in row["runs"]:
            n = run.get("kinetic_frames", 0)
            if not n:
                continue
            key = f"{run['molecule']}/{run['temperature_K']:g}K"
            p = pooled.setdefault(key, {"target_K": run["temperature_K"], "frames": 0,
                                        "sum": 0.0, "var_sum": 0.0})
            p["frames"] += n
            p["sum"] += n * run["kinetic_temperature_K"]
            se = run.get("kinetic_temperature_se_K")
            p["var_sum"] += (n * se) ** 2 if se is not None and np.isfinite(se) else 0.0
    out = {}
    for key, p in pooled.items():
        mean = p["sum"] / p["frames"]
        out[key] = {"mean_K": round(mean, 1), "se_K": round(np.sqrt(p["var_sum"]) / p["frames"], 1),
                    "target_K": p["target_K"], "frames": p["frames"],
                    "rel_dev": round(mean / p["target_K"] - 1, 4)}
    return out


def curve_csv(rows: list[dict]) -> str:
    """The learning curve, one row per iteration, for ``dvc plots``."""
    lines = [",".join(CURVE_COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else str(r[c]) for c in CURVE_COLUMNS))
    return "\n".join(lines) + "\n"


# --- one experiment per iteration ---------------------------------------------------------


#: who commits the experiment refs when git has no identity configured (DVC needs one)
PLACEHOLDER_IDENTITY = {"GIT_AUTHOR_NAME": "palirs-data campaign",
                        "GIT_AUTHOR_EMAIL": "campaign@palirs-data.invalid"}


def _experiment_env() -> dict[str, str]:
    env = dict(os.environ)
    known = [subprocess.run(["git", "config", key], capture_output=True, text=True).stdout.strip()
             for key in ("user.name", "user.email")]
    if not all(known) and not all(k in env for k in PLACEHOLDER_IDENTITY):
        log.info("git has no user name/email: experiments are committed (as refs, not on a "
                 "branch) by %s <%s>", PLACEHOLDER_IDENTITY["GIT_AUTHOR_NAME"],
                 PLACEHOLDER_IDENTITY["GIT_AUTHOR_EMAIL"])
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", PLACEHOLDER_IDENTITY["GIT_AUTHOR_NAME"])
            env.setdefault(f"GIT_{role}_EMAIL", PLACEHOLDER_IDENTITY["GIT_AUTHOR_EMAIL"])
    return env


def run_experiments(params_path: Path = Path("params.yaml"), *, prefix: str = "iter",
                    dvc: str = "dvc", setting: str | None = None) -> list[str]:
    """``dvc exp run`` the campaign up to iteration 1, 2, ..., N (N from ``params.yaml``),
    each experiment named ``<prefix><k>``; earlier iterations come from DVC's cache. All but
    the last reproduce only :data:`INTERMEDIATE_TARGETS`; the last runs the whole pipeline
    (IR spectra and comparison). After the first experiment whose campaign has converged, one
    more, ``<prefix><k>-spectra``, runs the whole pipeline with every iteration of
    ``params.yaml`` (the later ones add no data and copy the converged committee, so the
    lock matches ``params.yaml``) and the loop stops. ``params.yaml`` is left
    as it was. With ``setting`` (:data:`palirs_data.settings.SETTINGS`) every experiment runs
    with that setting applied to ``params.yaml`` (and records it). Returns the experiment
    names."""
    from palirs_data.settings import apply

    saved = params_path.read_text()
    original = apply(params_path, setting) if setting else saved
    params_path.write_text(original)
    try:
        config = load_params(params_path).active_learning
    finally:
        params_path.write_text(saved)
    names = list(config.iterations)
    env = _experiment_env()
    done = []

    def run(name: str, drop: list[str], targets: list[str]) -> None:
        cmd = [dvc, "exp", "run", "-n", name]
        for d in drop:
            cmd += ["-S", d]
        cmd += targets
        log.info("experiment %s: %s", name, " ".join(cmd))
        params_path.write_text(original)
        subprocess.run(cmd, check=True, env=env)
        done.append(name)

    try:
        for k in range(1, len(names) + 1):
            drop = [f"~active_learning.iterations.{n}" for n in names[k:]]
            last = k == len(names)
            # the spectra (ir, reference-md, compare) belong to the final models only
            run(f"{prefix}{k}", drop, [] if last else list(INTERMEDIATE_TARGETS))
            summary = json.loads(Path("metrics/campaign.json").read_text())
            if summary["converged"] and not last:
                log.info("converged at iteration %s; later iterations add nothing (they "
                         "copy its committee)", summary["converged_at"])
                # with every iteration of params.yaml, so that dvc.lock matches it
                run(f"{prefix}{k}-spectra", [], [])
                break
    finally:
        params_path.write_text(saved)
    return done


#: what an intermediate experiment reproduces: the campaign up to its iteration and the dipole
#: model (its test error per iteration); the IR stages run once, on the final models
INTERMEDIATE_TARGETS = ("campaign", "dipole")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from palirs_data.cli import setup_logging

    parser = argparse.ArgumentParser(prog="python -m palirs_data.campaign",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("experiments", help="one `dvc exp run` per iteration")
    exp.add_argument("--params", type=Path, default=Path("params.yaml"))
    exp.add_argument("--prefix", default="iter", help="experiment names: <prefix><k>")
    exp.add_argument("--setting", default=None,
                     help="run with a named setting applied to params.yaml "
                          f"(palirs_data/settings.py: {', '.join(SETTINGS)})")
    plan = sub.add_parser("plan", help="print active_learning.iterations for N iterations")
    plan.add_argument("n", type=int)
    args = parser.parse_args(argv)
    if args.command == "plan":
        if args.n < 1:
            print("error: plan: the number of iterations must be at least 1", file=sys.stderr)
            return 1
        print("iterations: {" + ", ".join(f"iter{k}: iter{k - 1}"
                                          for k in range(1, args.n + 1)) + "}")
        return 0
    setup_logging()
    try:
        names = run_experiments(args.params, prefix=args.prefix, setting=args.setting)
    except PalirsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(exc.cmd)} failed with status {exc.returncode}",
              file=sys.stderr)
        return 1
    print(f"experiments: {', '.join(names)} (compare them with `dvc exp show`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
