"""compare: the ML spectra against reference MD and against experiment (PCC, Wasserstein).

Per molecule and averaged over molecules, with one figure per molecule and a summary figure
(see :mod:`palirs_data.compare`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from palirs_data.atomic import atomic_path, write_text_atomic
from palirs_data.cli import run_stage
from palirs_data.compare import (DIPOLE_CHECK, add_committee_spread, add_dipole_model_check,
                                 compare, md_runs, spectra_by_key, summary_csv)
from palirs_data.config import load_params, torch_dtype
from palirs_data.experiment import experimental_spectra
from palirs_data.figures import (comparison_figure, convergence_figure, empty_figure,
                                 figure_name, molecules_figure, summary_figure,
                                 temperature_figure, temperature_series_figure)
from palirs_data.names import file_stem
from palirs_data.tables import read_harmonic, read_spectra
from palirs_data.trajectory import TrajectoryStore

STAGE_PARAMS = ("compare", "ir", "labeler")
RUNTIME_PARAMS: tuple[str, ...] = ()

app = typer.Typer(add_completion=False)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
    ml: Path = typer.Option(Path("data/ir/spectra.parquet"), help="The ML spectra."),
    harmonic: Path = typer.Option(Path("data/ir/harmonic.parquet"),
                                  help="The double-harmonic modes (drawn as lines)."),
    reference: Path = typer.Option(Path("data/reference/md_spectra.parquet"),
                                   help="The reference-MD spectra (may be empty)."),
    ml_trajectories: Path = typer.Option(Path("data/ir/trajectories.zarr"),
                                         help="The ML runs (dipoles: the bootstrap)."),
    reference_trajectories: Path = typer.Option(
        Path("data/reference/md_trajectories.zarr"),
        help="The reference runs (dipoles: the bootstrap; may be empty)."),
    experiment: Path = typer.Option(Path("data/experiment"),
                                    help="The experimental spectra (JCAMP-DX, sources.json)."),
    metrics: Path = typer.Option(Path("metrics/compare.json"),
                                 help="Output metrics: PCC and Wasserstein distance."),
    table: Path = typer.Option(Path("metrics/compare.csv"),
                               help="Output metrics: one row per molecule and comparison."),
    figures: Path = typer.Option(Path("metrics/figures/compare"),
                                 help="Output plots: one figure per molecule and a summary."),
    dipole_model: Path | None = typer.Option(
        None, help="The dipole model (data/models/dipole.model): its spectrum along the "
        "reference runs against theirs, the intensity error the ML spectrum carries."),
    spread_baseline: Path | None = typer.Option(
        None, help="The campaign's ML runs (data/ir/trajectories.zarr), when comparing the "
        "transfer set: each molecule's committee spread is also given relative to theirs."),
) -> None:
    """Compare the ML spectra with reference MD and experiment."""

    def body() -> str:
        p = load_params(params)
        cfg = p.compare
        ml_table = read_spectra(ml)
        ref_table = read_spectra(reference)
        exp = experimental_spectra(experiment, cfg, p.ir)
        ml_store = TrajectoryStore(ml_trajectories, mode="r")
        ml_runs = md_runs(ml_store, p.ir, cfg)
        ref_store = TrajectoryStore(reference_trajectories, mode="r")
        ref_runs = md_runs(ref_store, p.ir, cfg)
        baseline = (TrajectoryStore(spread_baseline, mode="r") if spread_baseline is not None
                    else None)
        result = add_committee_spread(compare(ml_runs, ref_runs, exp, cfg, p.ir), ml_store,
                                      baseline)
        if dipole_model is not None and ref_runs:
            from palirs_data.committee import load_model
            from palirs_data.evaluation import model_dipoles

            model = load_model(dipole_model, dtype=torch_dtype(p.ir.dtype))
            along = md_runs(ref_store, p.ir, cfg, dipoles=lambda traj: model_dipoles(
                model, traj.numbers, traj.read("positions_A")))
            add_dipole_model_check(result, along, ref_runs, cfg)
        modes = read_harmonic(harmonic).to_pydict()
        ml_by, ref_by = spectra_by_key(ml_table), spectra_by_key(ref_table)
        t = float(cfg.temperature_K)
        source = p.labeler.level_of_theory
        with atomic_path(figures, directory=True) as fig_dir:
            for molecule in result["molecules"]:
                rows = [i for i, m in enumerate(modes["molecule"]) if m == molecule]
                comparison_figure(
                    molecule, result, ml_by.get((molecule, t)), ref_by.get((molecule, t)),
                    exp.get(molecule), np.asarray(modes["frequency_cm1"])[rows],
                    np.asarray(modes["intensity_km_mol"])[rows], cfg,
                    fig_dir / figure_name(molecule), label_source=source)
                entry = result["molecules"][molecule]
                if entry.get("convergence"):
                    convergence_figure(molecule, entry["convergence"],
                                       fig_dir / f"{file_stem(molecule)}_convergence.png")
                series = {t: s for (m, t), s in ml_by.items() if m == molecule}
                if len(series) > 1:
                    temperature_figure(molecule, series, cfg.window_cm1,
                                       fig_dir / f"{file_stem(molecule)}_ml_spectra.png")
                if len(entry.get("ml_vs_reference_by_temperature", {})) > 1:
                    temperature_series_figure(
                        molecule, entry["ml_vs_reference_by_temperature"],
                        fig_dir / f"{file_stem(molecule)}_temperatures.png")
            if result["molecules"]:
                summary_figure(result, fig_dir / "summary.png")
                molecules_figure(result, ml_by, ref_by, exp, cfg, fig_dir / "molecules.png",
                                 label_source=source)
            else:
                empty_figure(fig_dir / "summary.png", f"no molecules in {ml} (an empty set)")
            write_text_atomic(table, summary_csv(result))
            write_text_atomic(metrics, json.dumps(result, indent=2) + "\n")
        parts = []
        for pair, label in (("ml_vs_reference", "ML vs reference MD"),
                            ("ml_vs_experiment", "ML vs experiment"),
                            (DIPOLE_CHECK, "dipole model along the reference MD")):
            if pair in result["mean"]:
                s = result["mean"][pair]
                parts.append(f"{label}: PCC {s['pcc']:.3f}, WD {s['wasserstein_cm1']:.1f} cm-1 "
                             f"({s['wasserstein']:.4f}), shift {s['centroid_shift_cm1']:+.1f}")
        return (f"{len(result['molecules'])} molecules at {t:g} K; "
                + ("; ".join(parts) or "nothing to compare") + f" -> {metrics}")

    run_stage("compare", body)


if __name__ == "__main__":
    app()
