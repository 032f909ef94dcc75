"""test-set: the paper's test set, built once: first-model MD, MBTR + k-means, then labelled."""

from __future__ import annotations

from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.cli import run_stage
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.errors import PalirsInputError
from palirs_data.evaluation import build_test_set
from palirs_data.labeling import clear_checkpoint, label_table

STAGE_PARAMS = ("test_set", "guard", "labeler", "label.max_failure_ratio", "label.retry_failed",
                "label.timeout_s", "committee.elements")
RUNTIME_PARAMS = ("label", "compute")

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    models: Path = typer.Option(None, help="Committee directory whose first model drives "
                                "the MD (default: params test_set.from_models)."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Reference minima (MD starting points)."),
    output: Path = typer.Option(Path("data/test/test_set.parquet"),
                                help="Output: the labelled test set (structure table)."),
) -> None:
    """Select and label the test structures of every molecule."""

    def body() -> str:
        p = load_params(params)
        c = p.test_set
        source = models if models is not None else c.from_models
        paths = sorted(Path(source).glob("model_*.model"))
        if not paths:
            raise PalirsInputError(f"{source}: no committee models (model_*.model)")
        with executor(p.compute) as ex:
            report = build_test_set(
                paths, structures.read_table(equilibrium), species=p.committee.elements,
                temperature_K=c.temperature_K, duration_fs=c.duration_fs,
                timestep_fs=c.timestep_fs, friction_fs=c.friction_fs,
                n_candidates=c.n_candidates, n_clusters=c.n_clusters,
                per_cluster=c.per_cluster, seed=c.seed, guard=p.guard, executor=ex)
            labelled = label_table(report.table, labeler_config=p.labeler, config=p.label,
                                   executor=ex)
        structures.write_table(labelled.table, output)
        clear_checkpoint(labelled.checkpoint)
        return (f"{labelled.table.num_rows} test structures from "
                f"{len(report.frames_per_molecule)} molecules (MD {report.md_seconds:.0f} s); "
                f"{labelled.summary()} -> {output}")

    run_stage("test-set", body)


if __name__ == "__main__":
    app()
