"""A spectrum for any molecule: the trained committee and dipole model on one new molecule.

What a chemist runs after a campaign::

    palirs spectrum --smiles "CC(C)=O" --name acetone --out results/acetone
    palirs spectrum --xyz my.xyz --name my-mol --out results/my-mol

The molecule's minimum is found with the committee-mean force field (no label source needed:
with DFT as the label source that is the point), then the ``ir`` stage's own code runs the
committee MD with dipoles (:func:`palirs_data.ir.ml_ir`, the ``ir`` section of
``params.yaml``: runs, lengths, friction, seeds) and writes, under ``--out``:

- ``spectrum.parquet``: mean and standard deviation over the runs (the ir stage's table);
- ``harmonic.parquet``: the committee's double-harmonic modes and intensities;
- ``trajectories.zarr``: the runs, with the committee's force spread per frame;
- ``summary.json``: the run report with ``committee_spread`` (median, 95th percentile and
  largest force disagreement along the runs, eV/Å): compare it with the training molecules'
  (``metrics/compare.json``); well above theirs, the spectrum is an extrapolation;
- ``spectrum.png``: the spectrum with its band of ± one standard deviation over runs.

A molecule with an element the committee was not trained on is refused with one line, and so
is an ``--out`` whose replacement would delete anything but an earlier output of this command
(:func:`check_out`), before any work starts.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import typer

from palirs_data import harmonic, molecules, structures
from palirs_data.compute import Executor
from palirs_data.config import GuardConfig, IrConfig
from palirs_data.errors import PalirsInputError, StageFailed


@dataclass
class PredictedSpectrum:
    minimum: pa.Table  # structure table: the committee's minimum (unlabelled)
    spectra: pa.Table  # palirs_data.ir.SPECTRUM_SCHEMA
    harmonic: pa.Table  # palirs_data.ir.HARMONIC_IR_SCHEMA
    metrics: dict  # the ir report (runs, kinetic temperatures, committee spread)


def committee_minimum(molecule: molecules.Molecule, committee_dir: Path, *, seed: int = 0,
                      fmax_eVA: float = 0.001, max_steps: int = 2000) -> pa.Table:
    """``molecule``'s 3D geometry (:func:`palirs_data.molecules.build_atoms`) optimised on the
    committee-mean surface, as a one-row structure table (source ``equilibrium``, not
    labelled). Raises naming the element when the committee does not know one."""
    from ase.data import chemical_symbols

    from palirs_data.committee import Committee, CommitteeCalculator

    paths = sorted(Path(committee_dir).glob("model_*.model"))
    if not paths:
        raise PalirsInputError(f"{committee_dir}: no committee models (model_*.model)")
    committee = Committee.load(paths)
    atoms = molecules.build_atoms(molecule, seed=seed)
    unknown = sorted({chemical_symbols[z] for z in atoms.numbers} -
                     {chemical_symbols[z] for z in committee.z_table})
    if unknown:
        raise PalirsInputError(
            f"{molecule.name}: contains {', '.join(unknown)}, which the committee in "
            f"{committee_dir} was not trained on (it knows "
            f"{', '.join(chemical_symbols[z] for z in committee.z_table)})")
    optimised, _ = harmonic.optimise(atoms, CommitteeCalculator(committee, atoms.numbers),
                                     fmax_eVA=fmax_eVA, max_steps=max_steps, name=molecule.name,
                                     require_convergence=False)
    row = structures.Structure.from_atoms(
        optimised, molecule=molecule.name, source="equilibrium", charge_e=molecule.charge_e,
        multiplicity=molecule.multiplicity)
    return structures.to_table([row])


def predict(minimum: pa.Table, committee_dir: Path, dipole_path: Path, config: IrConfig,
            work_dir: Path, *, guard: GuardConfig = GuardConfig(),
            executor: Executor | None = None,
            progress: bool = False) -> tuple[PredictedSpectrum, Path]:
    """The ``ir`` stage's MD and spectra (:func:`palirs_data.ir.ml_ir`) from ``minimum``
    (:func:`committee_minimum`); returns the result and the trajectory store it wrote (under
    ``work_dir``)."""
    from palirs_data.ir import ir_work_store, ml_ir

    store = ir_work_store(work_dir, committee_dir, dipole_path, minimum, config, guard=guard)
    result = ml_ir(committee_dir, dipole_path, minimum, config, store, guard=guard,
                   executor=executor, progress=progress)
    return PredictedSpectrum(minimum, result.spectra, result.harmonic, result.metrics), store.path


#: Files every output of this command holds: an existing ``--out`` is replaced only with them.
OUTPUT_FILES = ("spectrum.parquet", "summary.json")


def check_out(out: Path, keep: dict[str, Path] | None = None) -> None:
    """Refuse an output directory that :func:`write` would replace at a loss, in one line.

    ``--out`` is replaced as a whole, so it must be new, empty or an earlier output of this
    command (it holds :data:`OUTPUT_FILES`); and it must be neither the working directory nor
    any path of ``keep`` (option name: path, e.g. the models), nor hold one: a slip such as
    ``--out data`` or ``--out .`` would otherwise delete the campaign after the MD had run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PalirsInputError(f"--out {out}: a file, not a directory")
    target = out.resolve()
    for what, path in {"the working directory": Path.cwd(),
                       **{f"the {k} path": Path(v) for k, v in (keep or {}).items()}}.items():
        resolved = path.resolve()
        if resolved == target:
            raise PalirsInputError(f"--out {out}: is {what} ({path}): give a new directory")
        if target in resolved.parents:
            raise PalirsInputError(f"--out {out}: holds {what} ({path}), which replacing it "
                                   f"would delete: give a new directory")
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present and not all((out / name).is_file() for name in OUTPUT_FILES):
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise PalirsInputError(
                f"--out {out}: holds {shown} and is not an earlier output of palirs spectrum "
                f"(no {' and '.join(OUTPUT_FILES)}); it would be replaced as a whole: give a "
                f"new or empty directory")


def write(result: PredictedSpectrum, store_path: Path, out: Path, window_cm1) -> None:
    """The files of the module docstring, into ``out`` (atomically, as a whole)."""
    from palirs_data.atomic import atomic_path
    from palirs_data.compare import spectra_by_key
    from palirs_data.figures import temperature_figure
    from palirs_data.tables import write_harmonic, write_spectra

    with atomic_path(out, directory=True) as tmp:
        write_spectra(result.spectra, tmp / "spectrum.parquet")
        write_harmonic(result.harmonic, tmp / "harmonic.parquet")
        structures.write_table(result.minimum, tmp / "minimum.parquet")
        shutil.copytree(store_path, tmp / "trajectories.zarr")
        (tmp / "summary.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        by_t = spectra_by_key(result.spectra)
        if by_t:
            name = next(iter(by_t))[0]
            temperature_figure(name, {t: s for (_, t), s in by_t.items()}, window_cm1,
                               tmp / "spectrum.png")


def command(
    out: Path = typer.Option(..., help="Output directory, replaced as a whole: new, empty "
                             "or an earlier output of this command."),
    name: str = typer.Option(..., help="The molecule's name (a catalogue name alone "
                             "is enough: its SMILES is known)."),
    smiles: str | None = typer.Option(None, help="SMILES of the molecule."),
    xyz: Path | None = typer.Option(None, help="An XYZ file with its geometry instead."),
    charge: int = typer.Option(0, help="Total charge, e (recorded with the minimum and "
                               "checked against the SMILES; the models know no charge)."),
    multiplicity: int = typer.Option(1, min=1, help="Spin multiplicity (checked against the "
                                     "electron count; the models know no spin)."),
    models: Path = typer.Option(Path("data/models/committee"), help="The committee."),
    dipole: Path = typer.Option(Path("data/models/dipole.model"), help="The dipole model."),
    params: Path = typer.Option(Path("params.yaml"), help="Parameter file: its ir "
                                "section sets the runs; compute the workers."),
    trajectories: int | None = typer.Option(None, help="Override ir.trajectories."),
    produce_fs: float | None = typer.Option(None, help="Override ir.produce_fs."),
    work_dir: Path = typer.Option(Path("data/.work/spectrum"),
                                  help="Scratch space: a killed run continues here."),
) -> None:
    """Predict the IR spectrum of any molecule with the trained models.

    The committee's own minimum of the molecule, then the ir stage's committee MD with the
    dipole model; a molecule outside the training data shows in the committee's spread."""
    from pydantic import ValidationError

    from palirs_data.cli import run_stage
    from palirs_data.compute import executor as make_executor
    from palirs_data.config import load_params

    def body() -> str:
        check_out(out, {"--models": models, "--dipole": dipole, "--params": params,
                        "--work-dir": work_dir, **({"--xyz": xyz} if xyz else {})})
        p = load_params(params)
        molecule = _molecule(name, smiles, xyz, charge, multiplicity)
        overrides = {k: v for k, v in (("trajectories", trajectories),
                                       ("produce_fs", produce_fs)) if v is not None}
        try:
            config = IrConfig(**{**p.ir.model_dump(), **overrides})
        except ValidationError as exc:  # only an override can be wrong: params.yaml passed
            err = exc.errors()[0]
            raise PalirsInputError(f"--{str(err['loc'][0]).replace('_', '-')}: "
                                   f"{err['msg'].removeprefix('Value error, ')}") from None
        minimum = committee_minimum(molecule, models, seed=p.molecules.seed)
        with make_executor(p.compute) as ex:
            result, store = predict(minimum, models, dipole, config, work_dir,
                                    guard=p.guard, executor=ex, progress=True)
        write(result, store, out, p.compare.window_cm1)
        shutil.rmtree(store.parent, ignore_errors=True)
        if not result.spectra.num_rows:
            reasons = sorted({a.get("stop_reason", "?") for a in _stopped(out)})
            raise StageFailed(
                f"{molecule.name}: no spectrum: every run was stopped by the guard "
                f"({'; '.join(reasons)}): the committee cannot be trusted on this "
                f"molecule (outside its training data); the report is in {out}")
        spread = "; ".join(f"{g}: median {s['median_eVA']:.3f}, max {s['max_eVA']:.3f}"
                           for g, s in result.metrics["committee_spread"].items())
        return (f"{molecule.name}: {result.metrics['runs']} runs, committee force spread "
                f"(eV/Å) {spread} -> {out}")

    run_stage("spectrum", body)


def _stopped(out: Path) -> list[dict]:
    from palirs_data.trajectory import TrajectoryStore

    store = TrajectoryStore(out / "trajectories.zarr", mode="r")
    return [store[k].attrs for k in store.keys() if "stop_reason" in store[k].attrs]


def _molecule(name: str, smiles: str | None, xyz: Path | None, charge: int = 0,
              multiplicity: int = 1) -> molecules.Molecule:
    """The molecule of the command line: SMILES, an XYZ file, or a catalogue name alone."""
    import dataclasses

    molecules.check_name(name, where="--name")
    if smiles and xyz:
        raise PalirsInputError("give --smiles or --xyz, not both")
    if smiles or xyz:
        return molecules.Molecule(name, smiles=smiles, xyz=xyz, charge_e=charge,
                                  multiplicity=multiplicity)
    if name in molecules.CATALOGUE:
        return dataclasses.replace(molecules.CATALOGUE[name], charge_e=charge,
                                   multiplicity=multiplicity)
    raise PalirsInputError(f"--name: '{name}' is not a catalogue molecule"
                           f"{molecules.closest_hint(name, molecules.CATALOGUE)}; "
                           "give its --smiles or --xyz")


if __name__ == "__main__":
    typer.run(command)
