"""label: single points (energy, forces, dipole) for every unlabelled structure of a table.

Fans out over Dask (local cluster, or an existing scheduler); checkpoints each finished chunk,
so a killed run resumes without relabelling; writes the labelled table atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.atomic import write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.xyz import initial_data
from palirs_data.labeling import clear_checkpoint, label_table

STAGE_PARAMS = ("labeler", "label")
#: read but result-neutral: where the work runs (not tracked by DVC).
RUNTIME_PARAMS = ("compute",)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    input: Path = typer.Option(Path("data/sample/normal_modes.parquet"),
                               help="Structure table to label."),
    output: Path = typer.Option(Path("data/campaign/iter0/train.parquet"),
                                help="Output: the same table with labels."),
    metrics: Path = typer.Option(Path("metrics/label.json"),
                                 help="Output metrics: counts and timings of this run."),
) -> None:
    """Label every pending structure of INPUT with the configured label source."""

    def body() -> str:
        p = load_params(params)
        table = structures.read_table(input)
        with executor(p.compute) as ex:
            report = label_table(table, labeler_config=p.labeler, config=p.label, executor=ex)
        imported = initial_data(p.label.initial_data, p.labeler.level_of_theory)
        structures.write_table(structures.concat_tables([report.table, imported]), output)
        write_text_atomic(metrics, json.dumps(report.metrics(), indent=2) + "\n")
        clear_checkpoint(report.checkpoint)
        extra = f" + {imported.num_rows} imported" if imported.num_rows else ""
        return f"{report.summary()}{extra} -> {output}"

    run_stage("label", body)


if __name__ == "__main__":
    app()
