"""ir: IR spectra from committee MD with the dipole model (mean and std over runs).

Thermalise, then produce, all molecules x temperatures x runs as one batch; the spectrum of each
run from its dipole series, the mean and standard deviation over runs; plus the double-harmonic
spectrum of the committee (see :mod:`palirs_data.ir`). The figures of the spectra are drawn
by ``compare``, so that a plot setting never reruns the MD.
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
from palirs_data.ir import ir_work_store, ml_ir
from palirs_data.md_analysis import temperature_summary
from palirs_data.tables import write_harmonic, write_spectra

STAGE_PARAMS = ("ir", "guard")
RUNTIME_PARAMS = ("compute",)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    models: Path = typer.Option(Path("data/models/committee"), help="The committee."),
    dipole: Path = typer.Option(Path("data/models/dipole.model"), help="The dipole model."),
    equilibrium: Path = typer.Option(Path("data/sample/equilibrium.parquet"),
                                     help="Reference minima (where the runs start)."),
    spectra: Path = typer.Option(Path("data/ir/spectra.parquet"),
                                 help="Output: spectrum per molecule and temperature."),
    harmonic: Path = typer.Option(Path("data/ir/harmonic.parquet"),
                                  help="Output: the double-harmonic modes and intensities."),
    trajectories: Path = typer.Option(Path("data/ir/trajectories.zarr"),
                                      help="Output: positions, dipoles, committee spread."),
    metrics: Path = typer.Option(Path("metrics/ir.json"),
                                 help="Output metrics: runs, timings, stops."),
    work_dir: Path = typer.Option(Path("data/.work/ir"),
                                  help="Scratch space: the MD runs here, so a killed run "
                                  "continues from the frames already written."),
) -> None:
    """Run committee MD with dipoles and compute the IR spectra."""

    def body() -> str:
        p = load_params(params)
        table = structures.read_table(equilibrium)
        store = ir_work_store(work_dir, models, dipole, table, p.ir, guard=p.guard)
        with executor(p.compute) as ex:  # the MD is GPU work (compute.gpu)
            result = ml_ir(models, dipole, table, p.ir, store, guard=p.guard, executor=ex,
                           progress=True)
        with atomic_path(trajectories, directory=True) as tmp:
            shutil.copytree(store.path, tmp, dirs_exist_ok=True)
            write_spectra(result.spectra, spectra)
            write_harmonic(result.harmonic, harmonic)
            write_text_atomic(metrics, json.dumps(result.metrics, indent=2) + "\n")
        shutil.rmtree(store.path.parent, ignore_errors=True)
        m = result.metrics
        if not m["runs"]:
            return f"no molecules in {equilibrium}: empty -> {spectra}"
        stops = f", stopped: {', '.join(m['stopped'])}" if m["stopped"] else ""
        return (f"{m['runs']} runs x {m['steps_per_run']} steps in {m['md_tasks']} task(s) "
                f"({m['md_device']}, {m['md_stage_replica_steps_per_s']:.0f} replica-steps/s)"
                f"{stops}; "
                f"kinetic T {temperature_summary(m['kinetic_temperature'])} -> {spectra}")

    run_stage("ir", body)


if __name__ == "__main__":
    app()
