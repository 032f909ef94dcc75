"""evaluate: harmonic-frequency error of the committee mean and of each member, and test-set
errors."""

from __future__ import annotations

from pathlib import Path

import typer

from palirs_data import harmonic, structures
from palirs_data.atomic import write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.committee import Committee, load_model
from palirs_data.config import load_params
from palirs_data.evaluation import committee_frequencies, errors_on_test_set, frequencies_csv
from palirs_data.reports import Evaluation

STAGE_PARAMS = ("evaluate",)
RUNTIME_PARAMS: tuple[str, ...] = ()

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    models: Path = typer.Option(Path("data/campaign/iter0/committee"), help="Committee directory."),
    dipole: Path = typer.Option(None, help="Dipole model, for the test-set dipole error."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Reference minima."),
    frequencies: Path = typer.Option(Path("data/sample/frequencies.parquet"),
                                     help="Reference harmonic frequencies."),
    test: Path = typer.Option(Path("data/test/test_set.parquet"), help="Labelled test set."),
    metrics: Path = typer.Option(Path("data/campaign/iter0/evaluate.json"),
                                 help="Output metrics: frequency and test-set errors."),
    plot: Path = typer.Option(Path("data/campaign/iter0/frequencies.csv"),
                              help="Output plots: model vs reference frequency per mode."),
) -> None:
    """Compare the models with the label source."""

    def body() -> str:
        p = load_params(params)
        paths = sorted(models.glob("model_*.model"))
        reference = harmonic.read_frequencies(frequencies)
        report = committee_frequencies(paths, structures.read_table(equilibrium), reference,
                                       fmax_eVA=p.evaluate.fmax_eVA,
                                       max_steps=p.evaluate.max_steps,
                                       hessian_step_A=p.evaluate.hessian_step_A)
        freq = report.metrics()
        errors = errors_on_test_set(structures.read_table(test), Committee.load(paths),
                                    load_model(dipole) if dipole is not None else None)
        Evaluation.model_validate({**freq, "test": errors}).write(metrics)
        write_text_atomic(plot, frequencies_csv(reference, report))
        return (f"frequency MAE {freq['frequency_mae_cm1']:.1f} cm-1 (committee mean; members "
                f"{freq['frequency_member_mae_mean_cm1']:.1f} ± "
                f"{freq['frequency_member_mae_std_cm1']:.1f}); "
                f"test RMSE E {errors['energy_rmse_meV_per_atom']:.1f} meV/atom, "
                f"F {errors['force_rmse_meV_A']:.0f} meV/Å -> {metrics}")

    run_stage("evaluate", body)


if __name__ == "__main__":
    app()
