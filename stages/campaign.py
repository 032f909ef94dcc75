"""campaign: the learning curve over all iterations, and the campaign's final table and models.

Reads every iteration named in ``active_learning.iterations`` (see
:mod:`palirs_data.campaign`), writes one record per iteration for ``dvc plots``, the last
iteration's figures for ``dvc exp show``, copies the last iteration's table and committee
to the paths the later stages (dipole, ir) read, and picks ``dipole.md_frames`` frames of the
campaign's acquisition MD for the dipole model (:mod:`palirs_data.dipole_data`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.atomic import atomic_path, write_text_atomic
from palirs_data.campaign import (curve_csv, iteration_names, iterations_phrase,
                                  molecule_curve_csv, summarise)
from palirs_data.cli import run_stage
from palirs_data.config import load_params
from palirs_data.dipole_data import md_frames_table
from palirs_data.figures import learning_curve_figure

STAGE_PARAMS = ("active_learning.iterations", "active_learning.stop_mae_cm1",
                "active_learning.min_iterations", "dipole.md_frames")
RUNTIME_PARAMS: tuple[str, ...] = ()

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    campaign: Path = typer.Option(Path("data/campaign"), help="The iterations' directories."),
    table: Path = typer.Option(Path("data/labelled/final.parquet"),
                               help="Output: the last iteration's training table."),
    md_frames: Path = typer.Option(
        Path("data/labelled/md_frames.parquet"),
        help="Output: acquisition-MD frames for the dipole model (unlabelled)."),
    models: Path = typer.Option(Path("data/models/committee"),
                                help="Output: the last iteration's committee."),
    metrics: Path = typer.Option(Path("metrics/campaign.json"),
                                 help="Output metrics: the last iteration's figures."),
    curve: Path = typer.Option(Path("metrics/campaign.csv"),
                               help="Output plots: the learning curve, one row per iteration."),
    frequencies: Path = typer.Option(Path("metrics/frequencies.csv"),
                                     help="Output plots: the last committee's frequencies."),
    molecule_curve: Path = typer.Option(Path("metrics/campaign_molecules.csv"),
                                        help="Output plots: the learning curve per molecule."),
    figures: Path = typer.Option(Path("metrics/figures/campaign"),
                                 help="Output plots: MAE vs labels, one line per molecule."),
) -> None:
    """Summarise the campaign and publish its final table and committee."""

    def body() -> str:
        p = load_params(params)
        rows, summary = summarise(campaign, p.active_learning)
        last = campaign / iteration_names(p.active_learning)[-1]
        with atomic_path(table) as tmp:
            shutil.copyfile(last / "train.parquet", tmp)
        picked = md_frames_table(campaign, iteration_names(p.active_learning),
                                 p.dipole.md_frames, structures.read_table(last / "train.parquet"))
        structures.write_table(picked, md_frames)
        with atomic_path(models, directory=True) as tmp:
            shutil.copytree(last / "committee", tmp, dirs_exist_ok=True)
        with atomic_path(frequencies) as tmp:
            shutil.copyfile(last / "frequencies.csv", tmp)
        write_text_atomic(metrics, json.dumps(summary, indent=2) + "\n")
        write_text_atomic(curve, curve_csv(rows))
        write_text_atomic(molecule_curve, molecule_curve_csv(rows, p.active_learning))
        with atomic_path(figures, directory=True) as fig_dir:
            learning_curve_figure(rows, p.active_learning.stop_mae_cm1,
                                  fig_dir / "learning_curve.png")
        mae = " -> ".join(f"{r['frequency_mae_cm1']:.1f}" for r in rows)
        state = (f"converged at iteration {summary['converged_at']}" if summary["converged"]
                 else "not converged")
        per = "; ".join(f"{n} {m['frequency_mae_cm1']:.1f} cm-1, {m['labels']} labels"
                        for n, m in summary["molecules"].items()) if len(
                            summary["molecules"]) > 1 else ""
        return (f"{iterations_phrase(summary)}, {summary['n_train']} labelled "
                f"structures, {picked.num_rows} MD frames for the dipole model; frequency MAE "
                f"{mae} cm-1 ({state})"
                + (f"; per molecule: {per}" if per else ""))

    run_stage("campaign", body)


if __name__ == "__main__":
    app()
