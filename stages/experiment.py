"""experiment: the experimental gas-phase IR spectra (JCAMP-DX) of the selected molecules.

By default from the source distribution of the ``jcamp`` package, obtained with
``pip download --no-binary :all: --no-deps jcamp==<experiment.jcamp_version>``; a user's own
file per molecule with ``experiment.files`` (see :mod:`palirs_data.experiment`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from palirs_data.atomic import atomic_path
from palirs_data.cli import run_stage
from palirs_data.config import load_params, run_molecules
from palirs_data.experiment import collect

STAGE_PARAMS = ("molecules", "experiment")
RUNTIME_PARAMS: tuple[str, ...] = ()

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    output: Path = typer.Option(Path("data/experiment"),
                                help="Output: one JCAMP-DX file per molecule and "
                                     "sources.json."),
    work_dir: Path = typer.Option(Path("data/.work/experiment"),
                                  help="Scratch space for the downloaded archive."),
) -> None:
    """Collect the experimental IR spectrum of every molecule of the run (campaign and
    transfer set) that has one."""

    def body() -> str:
        p = load_params(params)
        mols = [*run_molecules(p, where=str(params)),
                *run_molecules(p, where=str(params), which="transfer")]
        with atomic_path(output, directory=True) as tmp:
            record = collect([m.name for m in mols], p.experiment, tmp, work_dir=work_dir)
        found = ", ".join(record["molecules"]) or "none"
        missing = f"; none for {', '.join(record['missing'])}" if record["missing"] else ""
        return f"experimental spectra of {found}{missing} -> {output}"

    run_stage("experiment", body)


if __name__ == "__main__":
    app()
