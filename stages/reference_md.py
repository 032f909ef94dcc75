"""reference-md: MD driven by the label source, the reference the ML spectrum is judged by.

The ``ir`` protocol itself (runs, lengths, thermalisation, friction, timestep, seeds, spectrum
settings) driven by the label source through the same integrator; one Dask task per run (see
:func:`palirs_data.reference_md.reference_ir`).
Cheap for GFN2-xTB, expensive for DFT: ``reference_md.enabled: false`` skips it (the outputs
are then empty and ``compare`` reports experiment only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from palirs_data import structures
from palirs_data.atomic import atomic_path, write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.compute import executor
from palirs_data.config import load_params
from palirs_data.reference_md import reference_ir, reference_work_store
from palirs_data.md_analysis import temperature_summary
from palirs_data.tables import SPECTRUM_SCHEMA, write_spectra
from palirs_data.trajectory import TrajectoryStore

STAGE_PARAMS = ("reference_md", "ir", "guard", "labeler")
RUNTIME_PARAMS = ("compute", "label.max_projected_hours")

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Reference minima (where the runs start)."),
    spectra: Path = typer.Option(Path("data/reference/md_spectra.parquet"),
                                 help="Output: spectrum per molecule and temperature."),
    trajectories: Path = typer.Option(Path("data/reference/md_trajectories.zarr"),
                                      help="Output: the runs (positions, velocities, dipoles)."),
    metrics: Path = typer.Option(Path("metrics/reference_md.json"),
                                 help="Output metrics: runs, cost per step, kinetic temperatures."),
    work_dir: Path = typer.Option(Path("data/.work/reference-md"),
                                  help="Scratch: every run's checkpoint until the stage ends."),
) -> None:
    """Run MD with the label source and compute its IR spectra."""

    def body() -> str:
        p = load_params(params)
        with atomic_path(trajectories, directory=True) as tmp:
            store = TrajectoryStore(tmp)
            if not p.reference_md.enabled:
                table = SPECTRUM_SCHEMA.empty_table()
                report = {"enabled": False}
            else:
                table_in = structures.read_table(equilibrium)
                work = reference_work_store(work_dir, table_in, p.ir, p.labeler,
                                            guard=p.guard)
                with executor(p.compute) as ex:
                    table, report = reference_ir(table_in, p.ir, p.labeler, store,
                                                 executor=ex, progress=True, work=work,
                                                 guard=p.guard, max_projected_hours=(
                                                     p.label.max_projected_hours))
                report = {"enabled": True, "method": p.labeler.method, **report}
            write_spectra(table, spectra)
            write_text_atomic(metrics, json.dumps(report, indent=2) + "\n")
        shutil.rmtree(work_dir, ignore_errors=True)  # the runs are in the output now
        if not report["enabled"]:
            return f"disabled (reference_md.enabled: false): empty -> {spectra}"
        if not report["runs"]:
            return f"no molecules in {equilibrium}: empty -> {spectra}"
        stops = f", stopped: {', '.join(report['stopped'])}" if report["stopped"] else ""
        return (f"{report['runs']} runs x {report['steps_per_run']} steps with "
                f"{p.labeler.method} ({report['ms_per_step']:.2f} ms/step){stops}; kinetic T "
                f"{temperature_summary(report['kinetic_temperature'])} -> {spectra}")

    run_stage("reference-md", body)


if __name__ == "__main__":
    app()
