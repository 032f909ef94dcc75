"""sample: optimise each molecule with the label source, harmonic analysis, normal-mode samples.

Writes three tables together (atomically): the unlabelled normal-mode samples, the labelled
optimised minima and the reference harmonic frequencies. For the transfer set with
``molecules.transfer_harmonic: false`` only the minima (the other two tables empty).
"""

from __future__ import annotations

from pathlib import Path

import typer

from palirs_data import harmonic, structures
from palirs_data.atomic import atomic_outputs
from palirs_data.cli import run_stage
from palirs_data.config import load_params, run_molecules
from palirs_data.labelers import make_labeler
from palirs_data.sampling import executor_for, sample_molecules

#: params.yaml sections that determine this stage's result (dvc.yaml lists the same), for the
#: campaign's molecules (the ``sample`` stage) ...
STAGE_PARAMS = ("molecules.names", "molecules.custom", "molecules.seed", "labeler", "sample")
#: ... and for the transfer set (``transfer-sample``)
TRANSFER_PARAMS = ("molecules.transfer", "molecules.transfer_harmonic", "molecules.custom",
                   "molecules.seed", "labeler", "sample")
#: read but result-neutral: where the work runs (not tracked by DVC).
RUNTIME_PARAMS = ("compute",)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    samples: Path = typer.Option(Path("data/sample/normal_modes.parquet"),
                                 help="Output: normal-mode samples (structure table, unlabelled)."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Output: optimised minima (structure table, labelled)."),
    frequencies: Path = typer.Option(Path("data/sample/frequencies.parquet"),
                                     help="Output: reference harmonic frequencies (cm-1)."),
    molecules: str = typer.Option("campaign",
                                  help="Which molecules: campaign (molecules.names) or "
                                  "transfer (molecules.transfer; may be empty)."),
) -> None:
    """Optimise, analyse and sample every selected molecule with the label source."""

    def body() -> str:
        p = load_params(params)
        mols = run_molecules(p, where=str(params), which=molecules)
        with executor_for(p.compute, n_molecules=len(mols)) as ex:
            result = sample_molecules(
                mols, make_labeler(p.labeler), p.sample, seed=p.molecules.seed, executor=ex,
                with_harmonic=molecules == "campaign" or p.molecules.transfer_harmonic)
        with atomic_outputs(samples, equilibrium, frequencies) as (t_s, t_e, t_f):
            structures.write_table(result.samples, t_s)
            structures.write_table(result.equilibrium, t_e)
            harmonic.write_frequencies(result.frequencies, t_f)
        return (f"{len(mols)} molecules, {result.frequencies.num_rows} reference frequencies, "
                f"{result.samples.num_rows} samples -> {samples}")

    run_stage("sample", body)


if __name__ == "__main__":
    app()
