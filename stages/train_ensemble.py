"""train-ensemble: train the MACE committee from scratch on the labelled table (mace-torch).

Writes the members (``model_<k>.model``) and a training summary into one model directory,
atomically; training curves go to a DVC plots file and validation errors to a metrics file.
With ``--reuse`` (the previous iteration's committee), a committee whose training fingerprint
(data, E0s, settings) equals this one's is copied instead of retrained: that is what happens
after the campaign has converged and the table no longer grows.
Without ``--reuse`` it trains the first committee (iteration 0): at most
``committee.initial_epochs`` epochs (``CommitteeConfig.initial``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.atomic import atomic_path, write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.training import train_committee, training_fingerprint
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.e0s import read_e0s
from palirs_data.reports import Training

STAGE_PARAMS = ("committee",)
#: read but result-neutral: where the members train (not tracked by DVC).
RUNTIME_PARAMS = ("compute",)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    data: Path = typer.Option(Path("data/campaign/iter0/train.parquet"),
                              help="Labelled structure table to train on."),
    e0s: Path = typer.Option(Path("data/reference/e0s.json"), help="Isolated-atom energies."),
    models: Path = typer.Option(Path("data/campaign/iter0/committee"),
                                help="Output: directory of the committee's models."),
    metrics: Path = typer.Option(Path("data/campaign/iter0/train_ensemble.json"),
                                 help="Output metrics: validation errors and timings."),
    curves: Path = typer.Option(Path("data/campaign/iter0/training_curves.csv"),
                                help="Output plots: validation curves of every member."),
    work_dir: Path = typer.Option(Path("data/.work/train-ensemble/iter0"),
                                  help="Scratch space for mace-torch (logs, checkpoints)."),
    reuse: Path = typer.Option(None, help="The previous committee: copied instead of "
                               "retrained when its training fingerprint is the same; with "
                               "committee.retrain: continue, every member's starting point."),
) -> None:
    """Train every committee member from scratch on DATA."""

    def body() -> str:
        p = load_params(params)
        # without a previous committee this is the first one (iteration 0): at most
        # committee.initial_epochs
        config = p.committee if reuse is not None else p.committee.initial()
        table = structures.read_table(data)
        energies = read_e0s(e0s)
        fingerprint = training_fingerprint(table, e0s=energies, config=config)
        if reuse is not None and _fingerprint(reuse) == fingerprint:
            with atomic_path(models, directory=True) as tmp:
                shutil.copytree(reuse, tmp, dirs_exist_ok=True)
            summary = json.loads((models / "training.json").read_text())
            Training(reused_from=str(reuse), n_train=summary["n_train"],
                     n_valid=summary["n_valid"], committee_training_seconds=0.0,
                     committee_wall_seconds=0.0).write(metrics)
            write_text_atomic(curves, "member,epoch,loss,rmse_e_meV_per_atom,rmse_f_meV_A\n")
            return f"same data and settings as {reuse}: committee copied, not retrained"
        with atomic_path(models, directory=True) as tmp, executor(p.compute) as ex:
            report = train_committee(table, e0s=energies, config=config, out_dir=tmp,
                                     work_dir=work_dir, executor=ex,
                                     previous=reuse)
            summary = report.summary()
            summary["e0s_eV"] = {str(z): e for z, e in sorted(energies.items())}
            summary["fingerprint"] = fingerprint
            (tmp / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
            for m in report.members:
                m.model = models / m.model.name
        Training.model_validate(report.metrics()).write(metrics)
        write_text_atomic(curves, report.curves_csv())
        shutil.rmtree(work_dir, ignore_errors=True)
        seconds = report.metrics()["committee_wall_seconds"]
        return (f"{len(report.members)} models on {report.n_train} structures "
                f"({report.n_valid} validation) in {seconds:.0f} s -> {models}")

    run_stage("train-ensemble", body)


def _fingerprint(directory: Path) -> str | None:
    try:
        return json.loads((directory / "training.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


if __name__ == "__main__":
    app()
