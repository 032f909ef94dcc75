"""The ``palirs`` command: the pipeline and the library behind one entry point.

    palirs run                     the campaign (one `dvc exp run` per iteration), spectra,
                                   comparison; then `palirs show`
    palirs status                  what DVC would rerun, and where the campaign stands
    palirs show                    iterations and spectra in one compact table
    palirs spectrum --name ...     the IR spectrum of any molecule with the trained models
    palirs export structures|spectra|trajectory ...
    palirs import FILE --level-of-theory ... --out TABLE

Every subcommand has ``--help``; bad input ends in one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import typer

from palirs_data import spectrum
from palirs_data.errors import PalirsInputError, StageFailed
from palirs_data.settings import SETTINGS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="palirs-data: IR spectra from machine-learned molecular dynamics, "
                       "with the training data chosen by active learning.")
export = typer.Typer(add_completion=False, no_args_is_help=True,
                     help="Write structures, spectra or trajectories in common formats.")
app.add_typer(export, name="export")
app.command("spectrum")(spectrum.command)


def _guarded(fn: Callable[[], str]) -> None:
    """Run ``fn``; print what it returns, or one error line and exit 1."""
    try:
        typer.echo(fn())
    except (PalirsInputError, StageFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def output_path(out: Path, *inputs: Path, directory: bool = False) -> Path:
    """``out``, the file (or with ``directory``, the directory) a command writes, refused in one
    line where writing it would fail half-way or destroy an input: a directory where a file is
    asked for or the other way round, or one of the command's own ``inputs`` (an export over
    its source table)."""
    out = Path(out)
    if directory and out.exists() and not out.is_dir():
        raise PalirsInputError(f"{out}: a file, not a directory")
    if not directory and out.is_dir():
        raise PalirsInputError(f"{out}: a directory; give the file to write")
    for source in inputs:
        if out.resolve() == Path(source).resolve():
            raise PalirsInputError(f"{out}: the input too; give another file to write")
    return out


def check_branch(repo: Path = Path("."), *, detached_ok: bool = False) -> None:
    """Refuse to start experiments on a detached git HEAD (unless ``detached_ok``).

    A `dvc exp run` that is killed (Ctrl-C twice, a lost session) leaves the repository on the
    detached commit it had checked out; experiments and commits made after that land off the
    branch. Outside a git repository nothing is checked."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=repo,
                            capture_output=True, text=True)
    if inside.returncode != 0 or detached_ok:
        return
    branch = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=repo,
                            capture_output=True, text=True)
    if branch.returncode != 0:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                              capture_output=True, text=True).stdout.strip()
        raise PalirsInputError(
            f"git HEAD is detached (at {head or 'no commit'}), as an interrupted `dvc exp run` "
            "leaves it: return to your branch (git checkout <branch>; `git reflog` shows "
            "where you were) or pass --detached-ok")


@app.command()
def run(params: Path = typer.Option(Path("params.yaml"), help="Parameter file."),
        setting: str | None = typer.Option(None, help="A named setting applied to the "
                                           "parameters (palirs_data/settings.py: "
                                           f"{', '.join(SETTINGS)})."),
        prefix: str = typer.Option("iter", help="Experiment names: <prefix><k>."),
        detached_ok: bool = typer.Option(False, "--detached-ok",
                                         help="Run on a detached git HEAD (e.g. a checked-out "
                                         "tag) instead of refusing.")) -> None:
    """Run the pipeline: the campaign, the spectra, the comparison.

    One `dvc exp run` per campaign iteration (earlier iterations come from DVC's cache), the
    IR spectra of the final models and their comparison; then the table of `palirs show`.
    Refuses to start on a detached git HEAD (see :func:`check_branch`)."""
    from palirs_data.campaign import run_experiments
    from palirs_data.cli import setup_logging

    setup_logging()

    def body() -> str:
        check_branch(detached_ok=detached_ok)
        try:
            names = run_experiments(params, prefix=prefix, setting=setting)
        except subprocess.CalledProcessError as exc:
            raise StageFailed(f"{' '.join(exc.cmd)} failed with status {exc.returncode}") \
                from None
        return f"experiments: {', '.join(names)}\n\n{show_text(Path('metrics'))}"

    _guarded(body)


@app.command()
def status() -> None:
    """What would rerun, and where the campaign stands.

    The stages whose code, parameters or inputs changed (dvc status), and the campaign's
    iterations, convergence and frequency MAE."""

    def body() -> str:
        proc = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr or proc.stdout).strip()[:200]
            raise StageFailed(f"dvc status failed: {reason}")
        changed = json.loads(proc.stdout or "{}")
        lines = (["pipeline: up to date"] if not changed else
                 [f"pipeline: {len(changed)} stage(s) would rerun: "
                  + ", ".join(sorted(changed))])
        campaign = Path("metrics/campaign.json")
        if campaign.is_file():
            c = json.loads(campaign.read_text())
            state = (f"converged at iteration {c['converged_at']}" if c.get("converged")
                     else "not converged")
            from palirs_data.campaign import iterations_phrase

            lines.append(f"campaign: {iterations_phrase(c)}, {state}; frequency MAE "
                         f"{c['frequency_mae_cm1']:.2f} cm-1 over {c['n_train']} labels")
        else:
            lines.append("campaign: not run yet (palirs run)")
        return "\n".join(lines)

    _guarded(body)


def _cell(value, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value in (None, "") else f"{float(value):>{width}{fmt}}"


def show_text(metrics: Path) -> str:
    """The compact table of ``palirs show`` (fits 100 columns)."""
    import csv

    curve = metrics / "campaign.csv"
    if not curve.is_file():
        raise PalirsInputError(f"{curve}: no campaign metrics (run `palirs run`)")
    rows = list(csv.DictReader(curve.open()))
    lines = ["campaign: per iteration (frequency MAE: committee mean ± spread over members;",
             "  within mol.: test E with each molecule's constant offset removed)",
             f"{'iter':>4} {'labels':>7} {'added':>6} {'freq MAE cm-1':>15} "
             f"{'test E meV/atom':>16} {'within mol.':>12} {'test F meV/Å':>13} "
             f"{'max F spread eV/Å':>18}"]
    for r in rows:
        mae = (f"{float(r['frequency_mae_cm1']):.2f} ± "
               f"{float(r['frequency_member_mae_std_cm1']):.2f}")
        lines.append(f"{r['iteration']:>4} {r['n_train']:>7} {r['added']:>6} {mae:>15} "
                     f"{_cell(r['test_energy_rmse_meV_per_atom'], '.2f', 16)} "
                     # with each molecule's energy offset removed (older files lack it)
                     f"{_cell(r.get('test_energy_rmse_within_molecule_meV_per_atom'), '.2f', 12)} "
                     f"{_cell(r['test_force_rmse_meV_A'], '.1f', 13)} "
                     f"{_cell(r['max_force_std_max_eVA'], '.3f', 18)}")
    if (metrics / "compare.json").is_file():
        lines += ["", spectra_text(metrics / "compare.json",
                                   metrics / "figures" / "compare")]
    temperatures = temperature_text(metrics)
    if temperatures:
        lines += ["", temperatures]
    return "\n".join(lines)


def temperature_text(metrics: Path) -> str:
    """The spectra's MD at its temperature: the pooled kinetic temperature of the production
    runs of each molecule and target, ML and reference MD side by side (and the transfer
    molecules'), from the ``kinetic_temperature`` of ``ir.json`` and ``reference_md.json``
    (and their ``transfer_`` files); empty when none has one. One set of a dozen short runs
    scatters by a few per cent: docs/method.md, "One sample, however many locks"."""
    sources = [("", "ir.json", "reference_md.json"),
               ("transfer molecules (never trained on)", "transfer_ir.json",
                "transfer_reference_md.json")]

    def cell(v: dict | None) -> str:
        if not v:
            return "-"
        se = f" ± {v['stderr_K']:.1f}" if v.get("stderr_K") is not None else ""
        return f"{v['mean_K']:.1f}{se} K ({v['deviation_percent']:+.1f} %, {v['runs']} runs)"

    lines = []
    for title, ml_name, ref_name in sources:
        sets: dict[str, dict] = {}
        for side, name in (("ml", ml_name), ("ref", ref_name)):
            try:
                pooled = json.loads((metrics / name).read_text(encoding="utf-8"))[
                    "kinetic_temperature"]["pooled"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for key, v in pooled.items():
                sets.setdefault(key, {})[side] = v
        if sets and title:
            lines.append(title)
        for key, v in sorted(sets.items()):
            lines.append(f"{key[:24]:<24} {cell(v.get('ml')):>34} {cell(v.get('ref')):>34}")
    if not lines:
        return ""
    lines[:0] = ["MD kinetic temperature, pooled over each set's production runs (mean ± "
                 "standard error)",
                 f"{'molecule / target':<24} {'ML MD':>34} {'reference MD':>34}"]
    return "\n".join(lines)


def spectra_text(compare_json: Path, figures: Path | None = None) -> str:
    """The spectra's scores of a ``compare.json`` as a table (fits 100 columns): PCC and WD
    (cm⁻¹, and over the window's width, the published comparison's unit) and the centroid
    shift per molecule and comparison, with their intervals; then where the figures are."""
    from palirs_data.compare import LABELS, TABLE_ROWS

    try:
        m = json.loads(Path(compare_json).read_text(encoding="utf-8"))
        m["molecules"], m["temperature_K"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PalirsInputError(f"{compare_json}: no comparison metrics (run the compare "
                               "stage)") from None
    confidence = int(round(100 * m.get("confidence", 0.95)))
    ways = m.get("intervals") or {"pcc": "bootstrap", "wasserstein": "bootstrap"}  # earlier
    lines = [f"spectra at {m['temperature_K']:g} K: Pearson correlation PCC (higher is better), "
             f"Wasserstein distance WD",
             "(lower is better; cm-1 and over the window's width), centroid shift (cm-1; "
             "first minus second,",
             f"< 0: the first lies lower); [{confidence} % interval: PCC {ways.get('pcc')}, "
             f"WD {ways.get('wasserstein')}, shift "
             f"{ways.get('centroid_shift', ways.get('wasserstein'))}]",
             f"{'molecule':<14} {'comparison':<26} {'PCC':>18} {'WD, cm-1':>14} {'WD':>6} "
             f"{'shift, cm-1':>17}"]
    rows = [(mol, p, e[p]) for mol, e in m["molecules"].items() for p in TABLE_ROWS if p in e]
    rows += [("mean", p, v) for p, v in m.get("mean", {}).items()]

    def shift(s: dict) -> str:
        if s.get("centroid_shift_cm1") is None:  # a compare.json of before the shift
            return "-"
        ci = s.get("centroid_shift_cm1_ci")
        return f"{s['centroid_shift_cm1']:+.0f}" + (
            f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci and all(map(math.isfinite, ci)) else "")

    for molecule, pair, s in rows:
        pcc = f"{s['pcc']:.3f}" + (f" [{s['pcc_ci'][0]:.2f}, {s['pcc_ci'][1]:.2f}]"
                                   if s.get("pcc_ci") else "")
        wd = f"{s['wasserstein_cm1']:.0f}" + (
            f" [{s['wasserstein_cm1_ci'][0]:.0f}, {s['wasserstein_cm1_ci'][1]:.0f}]"
            if s.get("wasserstein_cm1_ci") else "")
        lines.append(f"{molecule[:14]:<14} {LABELS[pair]:<26} {pcc:>18} {wd:>14} "
                     f"{s.get('wasserstein', float('nan')):>6.4f} {shift(s):>17}")
    pictures = sorted(Path(figures).glob("*.png")) if figures is not None else []
    if pictures:
        import textwrap

        lines += [f"figures (PNG and SVG) in {figures}/:",
                  *textwrap.wrap(", ".join(p.stem for p in pictures), width=98,
                                 initial_indent="  ", subsequent_indent="  ")]
    return "\n".join(lines)


@app.command()
def show(metrics: Path = typer.Option(Path("metrics"), help="The metrics directory.")) -> None:
    """The results in one table: iterations, spectra and their MD's temperature.

    The campaign per iteration (labels, frequency MAE, test errors, committee spread), the
    spectra's scores (PCC and Wasserstein distance with their intervals) and the pooled
    kinetic temperature of the ML and reference MD, in 100 columns."""
    _guarded(lambda: show_text(metrics))


@export.command("structures")
def export_structures(
        table: Path = typer.Argument(..., help="A structure table (.parquet), e.g. "
                                     "data/campaign/iter3/train.parquet."),
        out: Path = typer.Argument(..., help="The extxyz file to write."),
        all_rows: bool = typer.Option(False, "--all", help="Unlabelled rows too (as bare "
                                      "geometries).")) -> None:
    """Structures as extxyz (ASE conventions).

    Energy (eV), forces (eV/Å) and dipole (e·Å) as ASE SinglePointCalculator results, the
    level of theory in each frame's info (label_method)."""
    from palirs_data import structures, xyz

    def body() -> str:
        output_path(out, table)
        n = xyz.write_structures(structures.read_table(table), out, only_labelled=not all_rows)
        return f"{n} structures -> {out}"

    _guarded(body)


@export.command("spectra")
def export_spectra(
        table: Path = typer.Argument(..., help="A spectrum table, e.g. data/ir/spectra.parquet "
                                     "or data/reference/md_spectra.parquet."),
        out_dir: Path = typer.Argument(..., help="Directory for <molecule>_<T>K.csv/.jdx."),
        formats: list[str] = typer.Option(["csv", "jdx"], "--format",
                                          help="csv and/or jdx (JCAMP-DX).")) -> None:
    """Spectra as CSV and JCAMP-DX.

    One file per molecule and temperature: CSV (wavenumber_cm1, intensity, std) and JCAMP-DX
    4.24 (readable by the jcamp package and spectroscopy software)."""
    from palirs_data import exchange
    from palirs_data.tables import read_spectra

    def body() -> str:
        bad = sorted(set(formats) - {"csv", "jdx"})
        if bad:
            raise PalirsInputError(f"--format {bad[0]}: not one of csv, jdx")
        output_path(out_dir, directory=True)
        written = exchange.export_spectra(read_spectra(table), out_dir, formats=formats)
        return f"{len(written)} files -> {out_dir}"

    _guarded(body)


@export.command("trajectory")
def export_trajectory(
        store: Path = typer.Argument(..., help="A trajectory store, e.g. "
                                     "data/ir/trajectories.zarr."),
        key: str = typer.Argument(..., help="The trajectory, <molecule>/<T>K/<run>."),
        out: Path = typer.Argument(..., help="extxyz file, or an ASE trajectory (.traj)."),
        every: int = typer.Option(1, min=1, help="Every Nth frame.")) -> None:
    """One trajectory as extxyz or ASE .traj.

    Positions, velocities, time, energies and dipoles (a model's under their own names,
    never as labels)."""
    from palirs_data import exchange
    from palirs_data.trajectory import TrajectoryStore

    def body() -> str:
        if not Path(store).is_dir():
            raise PalirsInputError(f"{store}: no such trajectory store")
        output_path(out, store)
        n = exchange.export_trajectory(TrajectoryStore(store, mode="r"), key, out, every=every)
        return f"{n} frames -> {out}"

    _guarded(body)


@app.command("import")
def import_structures(
        file: Path = typer.Argument(..., help="An extxyz file with energy, forces and dipole "
                                    "per frame."),
        out: Path = typer.Option(..., help="The structure table to write (.parquet)."),
        level_of_theory: str | None = typer.Option(
            None, help="e.g. 'PBE/def2-SVP' (default: each frame's label_method)."),
        molecule: str | None = typer.Option(None, help="Molecule name (default: the frame's "
                                            "'molecule' info, or its formula)."),
        energy_key: str | None = typer.Option(None, help="Where the energy sits (eV)."),
        forces_key: str | None = typer.Option(None, help="Where the forces sit (eV/Å)."),
        dipole_key: str | None = typer.Option(None, help="Where the dipole sits (e·Å).")) -> None:
    """Bring a labelled extxyz set in as a structure table.

    Its level of theory is recorded; a frame without an energy, forces or a dipole is refused,
    naming the frame. To train on it, put the file under data/user/structures/ and name it in
    label.initial_data."""
    from palirs_data import structures, xyz

    def body() -> str:
        output_path(out, file)
        keys = {k: v for k, v in (("energy", energy_key), ("forces", forces_key),
                                  ("dipole", dipole_key)) if v}
        table = xyz.import_structures(file, level_of_theory=level_of_theory,
                                      molecule=molecule, keys=keys)
        structures.write_table(table, out)
        methods = sorted(set(table.column("label_method").to_pylist()))
        return f"{table.num_rows} labelled structures ({', '.join(methods)}) -> {out}"

    _guarded(body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
