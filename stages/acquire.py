"""acquire: one active-learning step: committee MD, the most uncertain frames, their labels.

Continues the trajectories of the previous iteration, stops runs the committee cannot be
trusted on, labels the chosen frames with the label source and appends them to the previous
iteration's table (see :mod:`palirs_data.acquisition`). After convergence the table passes
through unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.acquisition import acquire, summary_line
from palirs_data.atomic import atomic_path
from palirs_data.cli import run_stage
from palirs_data.compute import executor
from palirs_data.config import iteration_number, load_params
from palirs_data.errors import PalirsInputError
from palirs_data.labeling import clear_checkpoint
from palirs_data.reports import Acquisition
from palirs_data.trajectory import TrajectoryStore

#: label.*: the settings that change which single points fail (chunk size and checkpoint
#: directory only say how the work is cut and where it resumes)
STAGE_PARAMS = ("active_learning.stop_mae_cm1", "active_learning.min_iterations",
                "active_learning.acquire", "guard", "labeler",
                "label.max_failure_ratio", "label.retry_failed", "label.timeout_s")
RUNTIME_PARAMS = ("label", "compute")

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    iteration: str = typer.Option(..., help="Name of this iteration (iter1, iter2, ...)."),
    previous: Path = typer.Option(..., help="The previous iteration's directory (table, "
                                  "committee, trajectories, evaluation)."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Reference minima (where new runs start)."),
    output: Path = typer.Option(..., help="Output: the grown structure table."),
    trajectories: Path = typer.Option(..., help="Output: this iteration's trajectory store."),
    metrics: Path = typer.Option(..., help="Output metrics: what this iteration acquired."),
    work_dir: Path = typer.Option(Path("data/.work/acquire"),
                                  help="Scratch space: the MD runs here, so a killed run "
                                  "continues from the frames already written."),
) -> None:
    """Grow the training table with the frames the committee is least sure about."""

    def body() -> str:
        p = load_params(params)
        k = iteration_number(iteration)
        if iteration_number(previous.name) != k - 1:
            raise PalirsInputError(
                f"{previous}: iteration {iteration} continues iter{k - 1}, not {previous.name}")
        with executor(p.compute) as ex:
            result = acquire(iteration=k, previous_dir=previous,
                             equilibrium=structures.read_table(equilibrium),
                             config=p.active_learning, labeler_config=p.labeler,
                             label_config=p.label, work_dir=work_dir, guard=p.guard,
                             executor=ex, progress=True)
        with atomic_path(trajectories, directory=True) as tmp:
            if result.store is not None:  # the finished work store becomes the output
                shutil.copytree(result.store, tmp, dirs_exist_ok=True)
            else:  # converged: no MD, an empty store
                TrajectoryStore(tmp)
            structures.write_table(result.table, output)
            Acquisition.model_validate(result.metrics).write(metrics)
        if result.store is not None:
            shutil.rmtree(result.store.parent, ignore_errors=True)
        if result.checkpoint is not None:
            clear_checkpoint(result.checkpoint)
        return summary_line(result.metrics, previous=previous.name, output=output)

    run_stage("acquire", body)


if __name__ == "__main__":
    app()
