"""e0s: isolated-atom reference energies of the label source, for the MACE models."""

from __future__ import annotations

from pathlib import Path

import typer

from palirs_data.cli import run_stage
from palirs_data.config import load_params
from palirs_data.e0s import isolated_atom_energies, write_e0s
from palirs_data.labelers import make_labeler

STAGE_PARAMS = ("labeler", "committee.elements")
RUNTIME_PARAMS: tuple[str, ...] = ()

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    output: Path = typer.Option(Path("data/reference/e0s.json"),
                                help="Output: E0s in eV by element, with the label settings."),
) -> None:
    """Compute the energy of each isolated atom with the label source."""

    def body() -> str:
        p = load_params(params)
        labeler = make_labeler(p.labeler)
        e0s = isolated_atom_energies(labeler, p.committee.elements)
        write_e0s(output, e0s, labeler)
        return f"{len(e0s)} elements ({', '.join(p.committee.elements)}) -> {output}"

    run_stage("e0s", body)


if __name__ == "__main__":
    app()
