"""dipole: train the MACE dipole model (AtomicDipolesMACE, mace-torch) on the labelled table,
with the campaign's acquisition-MD frames (``dipole.md_frames``) labelled and added."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import typer

from palirs_data import structures
from palirs_data.atomic import atomic_path, write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.committee import load_model
from palirs_data.training import train_dipole_model
from palirs_data.evaluation import dipole_errors, dipole_errors_along_md
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.labeling import clear_checkpoint, label_table
from palirs_data.e0s import read_e0s

STAGE_PARAMS = ("dipole", "committee.elements", "labeler", "label")
RUNTIME_PARAMS = ("compute",)  # where it trains (not tracked by DVC)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    data: Path = typer.Option(Path("data/labelled/final.parquet"),
                              help="Labelled structure table to train on."),
    e0s: Path = typer.Option(Path("data/reference/e0s.json"), help="Isolated-atom energies."),
    md_frames: Path | None = typer.Option(
        None, help="Acquisition-MD frames picked by the campaign stage: labelled and added."),
    md_table: Path = typer.Option(Path("data/labelled/dipole_md.parquet"),
                                  help="Output: the labelled acquisition-MD frames."),
    test: Path = typer.Option(Path("data/test/test_set.parquet"),
                              help="Labelled test set, for the test-set dipole error."),
    reference_trajectories: Path | None = typer.Option(
        None, help="The label source's MD (reference-md stage): the dipole error along it."),
    model: Path = typer.Option(Path("data/models/dipole.model"),
                               help="Output: the dipole model."),
    metrics: Path = typer.Option(Path("metrics/dipole.json"),
                                 help="Output metrics: validation and test dipole errors."),
    work_dir: Path = typer.Option(Path("data/.work/dipole"),
                                  help="Scratch space for mace-torch (logs, checkpoints)."),
) -> None:
    """Train the dipole model on DATA."""

    def body() -> str:
        p = load_params(params)
        final = structures.read_table(data)
        with executor(p.compute) as ex:
            pending = (structures.read_table(md_frames) if md_frames is not None
                       else structures.empty_table())
            labelled = (label_table(pending, labeler_config=p.labeler, config=p.label,
                                    executor=ex) if pending.num_rows else None)
            extra = labelled.table if labelled is not None else pending
            table = structures.concat_tables([final, extra])
            with atomic_path(model) as tmp:
                report = train_dipole_model(table, e0s=read_e0s(e0s),
                                            elements=p.committee.elements, config=p.dipole,
                                            out_file=tmp, work_dir=work_dir, executor=ex)
        structures.write_table(extra, md_table)  # atomic
        if labelled is not None:
            clear_checkpoint(labelled.checkpoint)
        n_ok = extra.filter(pc.equal(extra.column("label_status"), "ok")).num_rows
        trained = load_model(model)
        tested = dipole_errors(structures.read_table(test), trained)
        along = (dipole_errors_along_md(reference_trajectories, trained)
                 if reference_trajectories is not None else {})
        write_text_atomic(metrics, json.dumps({
            "n_structures": final.num_rows + n_ok, "n_md_frames": n_ok,
            "n_md_frames_failed": extra.num_rows - n_ok,
            "valid_rmse_dipole_mD": report.valid_rmse_mu_mD,
            "test_mae_dipole_mD": tested["dipole_mae_mD"],
            "test_rmse_dipole_mD": tested["dipole_rmse_mD"],
            "test_rmse_dipole_mD_ci95": tested["dipole_rmse_mD_ci95"],
            "reference_md": along, "epochs": report.epochs,
            "training_seconds": round(report.seconds, 1)}, indent=2) + "\n")
        shutil.rmtree(work_dir, ignore_errors=True)
        lo, hi = tested["dipole_rmse_mD_ci95"]
        md = "".join(f", along the reference MD ({k}, {v['frames']} frames) "
                     f"{v['dipole_rmse_mD']:.1f}" for k, v in along.items())
        return (f"{final.num_rows} + {n_ok} MD frames, {report.epochs} epochs in "
                f"{report.seconds:.0f} s, dipole RMSE validation {report.valid_rmse_mu_mD:.1f}, "
                f"test {tested['dipole_rmse_mD']:.1f} [{lo:.1f}, {hi:.1f}]{md} mDebye -> {model}")

    run_stage("dipole", body)


if __name__ == "__main__":
    app()
