"""Typed, strict configuration: one pydantic model per ``params.yaml`` section.

Unknown keys are errors, wrong types are errors, and every error is one line naming the file
and the dotted key (``params.yaml: sample.fmax_eVA: Input should be a valid number``). Each stage
reads only its own sections (see ``STAGE_PARAMS`` in each stage script, checked against
``dvc.yaml`` by the tests).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from palirs_data.errors import PalirsInputError
from palirs_data.molecules import Molecule, check_name

log = logging.getLogger(__name__)

#: where a user's own files live, per kind: the stages that read them depend on the directory
#: (dvc.yaml), so a changed file reruns them; a file elsewhere is read but DVC cannot see it
USER_FILES = {"molecules": Path("data/user/molecules"), "experiment": Path("data/user/experiment"),
              "models": Path("data/user/models"), "structures": Path("data/user/structures")}


def _positive_temperatures(values: list[float]) -> list[float]:
    bad = [t for t in values if not t > 0]
    if bad:
        raise ValueError(f"temperatures must be positive (K), got {bad[0]:g}")
    twice = sorted({t for t in values if values.count(t) > 1})
    if twice:  # each temperature is one trajectory per replica: two would share it
        raise ValueError(f"temperature {twice[0]:g} K is listed twice")
    return values


#: the longest MD timestep accepted (fs). The fastest motions are X-H stretches (O-H near
#: 3700 cm⁻¹: period 9 fs). Measured with benchmarks/timestep_bound.py (demo committee,
#: methanol, 8 runs thermalised at 700 K, 500 fs NVE): total-energy fluctuation 0.3 % (0.5 fs),
#: 1.3 % (1 fs), 11 % (2 fs) of the kinetic energy, drift 0.08, 0.3, 34 % per ps; at 3 fs
#: every run flies apart.
MAX_TIMESTEP_FS = 1.0


def _md_timestep(value: float) -> float:
    if not 0 < value <= MAX_TIMESTEP_FS:
        raise ValueError(f"timestep_fs must be in (0, {MAX_TIMESTEP_FS:g}] fs, got {value:g}: "
                         "longer steps do not resolve X-H stretches (period ~9 fs) and "
                         "molecules fly apart")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomMolecule(Strict):
    """A user's molecule: a SMILES string or an XYZ file (path relative to the repository)."""

    name: str
    smiles: str | None = None
    xyz: Path | None = None
    charge_e: int = 0
    multiplicity: int = Field(1, ge=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v, where="")

    @field_validator("smiles")
    @classmethod
    def _parsable(cls, v: str | None) -> str | None:
        if v is not None:
            from rdkit import Chem, RDLogger

            RDLogger.DisableLog("rdApp.*")
            mol = Chem.MolFromSmiles(v)
            if mol is None or mol.GetNumAtoms() == 0:
                raise ValueError(f"RDKit rejects SMILES {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CustomMolecule:
        if (self.smiles is None) == (self.xyz is None):
            raise ValueError(f"'{self.name}': give exactly one of smiles or xyz")
        return self

    def molecule(self) -> Molecule:
        return Molecule(self.name, self.smiles, self.xyz, self.charge_e, self.multiplicity)


class MoleculesConfig(Strict):
    names: list[str] = Field(default_factory=lambda: ["methanol"])
    # never trained on: spectra from the final committee only (the transfer-* stages)
    transfer: list[str] = Field(default_factory=list)
    # the transfer molecules' harmonic analysis with the label source (reference frequencies,
    # data/transfer/frequencies.parquet). false: their minima only, which is all the transfer
    # stages use; with DFT labels it saves the Hessians (6N gradients of the largest molecules)
    transfer_harmonic: bool = True
    custom: list[CustomMolecule] = Field(default_factory=list)
    seed: int = 0  # RDKit embedding seed


class XtbSettings(Strict):
    """GFN-xTB through tblite (ASE calculator ``tblite.ase.TBLite``)."""

    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = "GFN2-xTB"
    accuracy: float = Field(1.0, gt=0)
    electronic_temperature_K: float = Field(300.0, ge=0)
    max_iterations: int = Field(250, ge=1)
    # OpenMP threads per process. 1 makes labels bitwise reproducible (threaded reductions
    # sum in varying order) and costs nothing for small molecules; parallelism comes from
    # the Dask workers.
    threads: int = Field(1, ge=1)


class PyscfSettings(Strict):
    """Kohn-Sham DFT with PySCF: analytic gradients, dipole from the density."""

    xc: str = "pbe"
    basis: str = "def2-svp"
    density_fit: bool = True
    auxbasis: str | None = None  # None: PySCF's default fitting basis for ``basis``
    grid_level: int = Field(3, ge=0, le=9)
    dispersion: Literal["d3bj", "d3zero", "d4"] | None = None
    conv_tol: float = Field(1e-9, gt=0)
    max_cycle: int = Field(100, ge=1)
    threads: int = Field(1, ge=1)


class AseSettings(Strict):
    """Any ASE calculator, by import path (``package.module.Class`` or ``package.module:Class``)
    and keyword arguments; it must implement energy, forces and dipole."""

    calculator: str = ""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    safer_kwargs: dict[str, Any] | None = None  # merged into kwargs for the one retry


class LabelerConfig(Strict):
    method: Literal["xtb", "pyscf", "ase"] = "xtb"
    xtb: XtbSettings = XtbSettings()
    pyscf: PyscfSettings = PyscfSettings()
    ase: AseSettings = AseSettings()

    @property
    def level_of_theory(self) -> str:
        """The label source as a chemist names it: GFN2-xTB, PBE/def2-SVP, PBE-D3(BJ)/def2-TZVP;
        an ASE calculator by its class."""
        if self.method == "xtb":
            return self.xtb.method
        if self.method == "pyscf":
            p = self.pyscf
            basis = p.basis.lower()
            basis = "def2-" + basis[5:].upper() if basis.startswith("def2-") else basis.upper()
            d = {"d3bj": "-D3(BJ)", "d3zero": "-D3(0)", "d4": "-D4"}.get(p.dispersion or "", "")
            return f"{p.xc.upper()}{d}/{basis}"
        return self.ase.calculator.replace(":", ".").rsplit(".", 1)[-1] or "ASE calculator"


class SampleConfig(Strict):
    """The initial data (:mod:`palirs_data.harmonic`): ``frames_per_mode`` × n_vib geometries
    per molecule, drawn by ``sampler`` at ``temperature_K``."""

    fmax_eVA: float = Field(0.001, gt=0)  # BFGS convergence: max force, eV/Å
    max_steps: int = Field(2000, ge=1)
    hessian_step_A: float = Field(0.01, gt=0, le=0.1)  # finite-difference displacement, Å
    sampler: Literal["thermal", "wigner", "ase"] = "thermal"
    temperature_K: float = Field(300.0, gt=0)  # temperature of the normal-mode samples
    frames_per_mode: int = Field(10, ge=1)
    seed: int = 0  # draws of the thermal and Wigner samplers


class InitialData(Strict):
    """A labelled extxyz set added to the initial training data (``palirs import`` reads
    the same files: :func:`palirs_data.xyz.import_structures`)."""

    file: str  # under data/user/structures/ (a DVC dep of the label stage)
    level_of_theory: str  # must be the label source's (LabelerConfig.level_of_theory)


class LabelConfig(Strict):
    # largest number of single points per Dask task and per checkpoint file; xTB single points
    # take about 1 ms, so large chunks amortise the scheduling (see benchmarks/)
    chunk_size: int = Field(50, ge=1)
    max_failure_ratio: float = Field(0.05, ge=0, le=1)
    retry_failed: bool = True  # retry a failed single point once with safer settings
    checkpoint_dir: Path = Path("data/.checkpoints")
    # a single point with no answer after this many seconds is abandoned and recorded as
    # timed out (then retried once with safer settings); null: wait forever
    timeout_s: float | None = Field(1800.0, gt=0)
    # the cost guard (palirs_data/cost.py): a stage whose single points are projected to take
    # more core-hours than this stops before the first one; null: no bound
    max_projected_hours: float | None = Field(24.0, gt=0)
    # labelled sets (extxyz: energy, forces, dipole per frame) added to iteration 0's table
    initial_data: list[InitialData] = Field(default_factory=list)


class JobqueueConfig(Strict):
    """A dask-jobqueue cluster (``pip install 'palirs-data[cluster]'``): each batch job runs
    ``processes`` Dask workers with ``cores`` cores and ``memory`` between them. The options
    are dask-jobqueue's own (``SLURMCluster``/``PBSCluster``); ``worker_extra_args`` such as
    ``["--resources", "GPU=1"]`` mark the workers of a GPU partition."""

    kind: Literal["slurm", "pbs"] = "slurm"
    jobs: int = Field(1, ge=0)  # batch jobs to keep running
    cores: int = Field(8, ge=1)
    processes: int = Field(1, ge=1)
    memory: str = "16GB"
    queue: str | None = None  # partition (SLURM) or queue (PBS)
    account: str | None = None
    walltime: str = "02:00:00"
    job_extra_directives: list[str] = Field(default_factory=list)  # e.g. ["--gres=gpu:1"]
    job_script_prologue: list[str] = Field(default_factory=list)  # e.g. ["module load cuda"]
    worker_extra_args: list[str] = Field(default_factory=list)
    local_directory: str | None = None  # node-local scratch for the workers
    log_directory: str | None = None


class ComputeConfig(Strict):
    """Where fan-out work runs (see :mod:`palirs_data.compute`): an existing Dask scheduler
    (``scheduler_address`` or env ``PALIRS_SCHEDULER_ADDRESS``), a dask-jobqueue cluster
    (``jobqueue``), or a local cluster of ``n_workers`` processes (the default). GPU work
    carries the Dask resource ``GPU: 1`` when a worker offers it (``gpu``: ``auto``), always
    (``required``: an error if no worker offers it), or never (``never``)."""

    scheduler_address: str | None = None
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    jobqueue: JobqueueConfig | None = None
    gpu: Literal["auto", "required", "never"] = "auto"
    # local workers started with the resource GPU=1 (on a machine with GPUs: one per GPU): they
    # take the GPU work (training, MD) one task at a time each, on CUDA when torch sees it,
    # with gpu_worker_threads OpenMP threads
    local_gpu_workers: int = Field(0, ge=0)
    gpu_worker_threads: int | None = Field(None, ge=1)  # None: every core of the machine

    @model_validator(mode="after")
    def _local_gpus(self) -> ComputeConfig:
        if self.local_gpu_workers > self.n_workers:
            raise ValueError(f"local_gpu_workers ({self.local_gpu_workers}) exceeds n_workers "
                             f"({self.n_workers})")
        return self


class MaceModelConfig(Strict):
    """MACE architecture (mace-torch). The paper's full setting: 128 channels, max_L 1,
    max_ell 3, r_max 3.0 Å, 2 interactions, correlation order 2; the demo uses fewer channels
    and max_ell 2."""

    num_channels: int = Field(16, ge=1)
    max_L: int = Field(1, ge=0, le=3)
    # highest l of the edges' spherical harmonics (mace-torch's --max_ell; its default, and
    # the method's, is 3). 2 costs ~2/3 of the time per epoch and per MD step (docs/method.md)
    max_ell: int = Field(3, ge=1, le=4)
    r_max_A: float = Field(3.0, gt=0)
    num_interactions: int = Field(2, ge=1)
    correlation: int = Field(2, ge=1)
    num_radial_basis: int = Field(8, ge=1)


class MaceTrainingConfig(Strict):
    """mace-torch training settings, passed to ``mace_run_train``."""

    max_num_epochs: int = Field(200, ge=1)
    batch_size: int = Field(10, ge=1)
    lr: float = Field(0.01, gt=0)
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(100.0, ge=0)
    patience: int = Field(50, ge=1)
    ema: bool = True
    default_dtype: Literal["float64", "float32"] = "float64"
    # torch threads per training process. 1: members train side by side, one per worker, and
    # two threads beside a busy process trained 11.7x slower (docs/benchmarks.md)
    threads: int = Field(1, ge=1)
    # a model to fine-tune: a local .model file (put it in data/user/models/), or a name
    # mace-torch knows (medium_off: MACE-OFF23, ASL licence; medium-mpa-0 ...), fetched once
    # into ~/.cache/mace (palirs_data.foundation.foundation_file)
    foundation_model: str | None = None
    # mace-torch's stage two (--swa; energy models only): the last stage_two_fraction of the
    # epochs weigh the energy stage_two_energy_weight (forces as before) at stage_two_lr, and
    # the model of that stage is the member; 0: none (the method)
    stage_two_fraction: float = Field(0.0, ge=0, lt=1)
    stage_two_energy_weight: float = Field(1000.0, ge=0)
    stage_two_lr: float = Field(1e-3, gt=0)
    # which weights the model keeps: best, those of the epoch of the lowest validation loss
    # (mace-torch's choice); last, those of the last epoch (with ema: the averaged weights),
    # which a few hot validation frames cannot send back to an early epoch (docs/method.md,
    # "Why seed 1 misses the energy target")
    checkpoint: Literal["best", "last"] = "best"
    # mace-torch validates (and checkpoints) after every eval_every-th epoch only; its LR
    # schedule reads that validation loss. The run is extended to the next validated epoch at
    # or past max_num_epochs (:attr:`mace_epochs`), so that the last epoch is the one kept;
    # the weights are those of eval_every 1 while the schedule does not act (docs/method.md)
    eval_every: int = Field(1, ge=1)
    extra_args: list[str] = Field(default_factory=list)  # further mace_run_train flags

    @property
    def mace_epochs(self) -> int:
        """The epochs mace-torch runs: ``max_num_epochs``, extended to the next epoch it
        validates (it validates after epochs 1, 1 + eval_every, 1 + 2 eval_every, ...)."""
        return self.max_num_epochs + (1 - self.max_num_epochs) % self.eval_every

    @property
    def stage_two_start(self) -> int | None:
        """The epoch stage two starts at (None: no stage two)."""
        if self.stage_two_fraction == 0:
            return None
        epochs = max(1, int(round(self.stage_two_fraction * self.max_num_epochs)))
        return max(0, self.max_num_epochs - epochs)


class CommitteeConfig(Strict):
    """The committee: one MACE model per seed on the same data. Each iteration retrains it
    from scratch (``retrain: scratch``, the method) or continues every member from the
    previous iteration's weights for ``continue_epochs`` epochs (``retrain: continue``)."""

    # one model per seed; a run needs at least two (check_run): the committee's spread is the
    # uncertainty that selects frames and stops runs
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    elements: list[str] = Field(default_factory=lambda: ["H", "C", "N", "O"], min_length=1)
    model: MaceModelConfig = MaceModelConfig()
    training: MaceTrainingConfig = MaceTrainingConfig()
    retrain: Literal["scratch", "continue"] = "scratch"
    continue_epochs: int = Field(50, ge=1)
    # the first committee (iteration 0, on the initial samples) trains at most this many
    # epochs; null: training.max_num_epochs. It drives the test-set and the first acquisition
    # MD; the stop rule reads it only from active_learning.min_iterations on
    initial_epochs: int | None = Field(None, ge=1)

    def initial(self) -> "CommitteeConfig":
        """The settings of the first committee: ``training.max_num_epochs`` capped at
        ``initial_epochs``."""
        if self.initial_epochs is None or self.initial_epochs >= self.training.max_num_epochs:
            return self
        return self.model_copy(update={"training": self.training.model_copy(
            update={"max_num_epochs": self.initial_epochs})})

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("committee seeds must differ")
        return v

    @field_validator("elements")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from ase.data import atomic_numbers

        unknown = [e for e in v if e not in atomic_numbers]
        if unknown:
            raise ValueError(f"unknown element {unknown[0]!r}")
        return v


class DipoleConfig(Strict):
    """The MACE dipole model (AtomicDipolesMACE) trained on the final labelled table."""

    seed: int = 0
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    # frames of the campaign's acquisition MD per molecule and temperature, labelled by the
    # label source, added to the dipole model's table only (palirs_data.dipole_data); 0: the
    # final table alone, as the method
    md_frames: int = Field(0, ge=0)
    model: MaceModelConfig = MaceModelConfig()
    training: MaceTrainingConfig = MaceTrainingConfig()


class TestSetConfig(Strict):
    """The paper's test set: first-model MD at 300 K, MBTR + k-means, 4 frames per cluster."""

    # the committee whose first model drives the test MD; a campaign pins this to its first
    # iteration's models so the test set is built once and never changes
    from_models: Path = Path("data/campaign/iter0/committee")
    temperature_K: float = Field(300.0, gt=0)
    duration_fs: float = Field(2000.0, gt=0)  # full setting: 100 ps
    timestep_fs: float = Field(0.5, gt=0)
    # Langevin γ, fs⁻¹: a sampling run, not a spectrum, so coupled strongly (1/γ = 100 fs) to
    # stay at temperature_K, as the demo's acquisition runs are
    friction_fs: float = Field(0.01, ge=0)
    n_candidates: int = Field(200, ge=1)  # frames sampled uniformly from each run
    n_clusters: int = Field(5, ge=1)
    per_cluster: int = Field(4, ge=1)
    seed: int = 0

    @field_validator("timestep_fs")
    @classmethod
    def _timestep(cls, v: float) -> float:
        return _md_timestep(v)

    @model_validator(mode="after")
    def _enough_candidates(self) -> TestSetConfig:
        if self.n_candidates < self.n_clusters * self.per_cluster:
            raise ValueError(f"n_candidates ({self.n_candidates}) is fewer than n_clusters × "
                             f"per_cluster ({self.n_clusters} × {self.per_cluster})")
        return self


class EvaluateConfig(Strict):
    """Harmonic analysis with the first committee model (as ``sample`` does with the labels)."""

    fmax_eVA: float = Field(0.001, gt=0)
    max_steps: int = Field(2000, ge=1)
    hessian_step_A: float = Field(0.01, gt=0, le=0.1)


#: the torch precision an MD stage runs its models in (:func:`torch_dtype`)
MdDtype = Literal["float64", "float32"]


def torch_dtype(name: MdDtype):
    """The torch dtype named ``name`` (``float64`` or ``float32``)."""
    import torch

    return {"float64": torch.float64, "float32": torch.float32}[name]


class GuardConfig(Strict):
    """Every MD run of the pipeline (acquisition, test set, IR, reference MD) stops at once at a
    frame that is not finite or beyond these bounds (:mod:`palirs_data.guard`)."""

    min_distance_A: float = Field(0.5, gt=0)  # atoms closer than this: collapsed
    max_distance_A: float = Field(20.0, gt=0)  # atoms farther apart than this: exploded
    # a bond of the minimum longer than this × its length there: the molecule comes apart
    # (guard.MAX_BOND_STRETCH says how it was chosen)
    max_bond_stretch: float = Field(1.5, gt=1)


class AcquireConfig(Strict):
    """Committee MD of every molecule at each temperature, then the most uncertain frames.

    ``friction_fs`` is in fs⁻¹; the paper's ASE 3.22 setting ``friction=0.01`` is in ASE time
    units (1 ≈ 10.18 fs), i.e. about 0.001 fs⁻¹, the default here: weak enough not to damp the
    dynamics, and a 5 ps run still spans five thermostat relaxation times.
    """

    temperatures_K: list[float] = Field(default_factory=lambda: [300.0, 500.0, 700.0],
                                        min_length=1)

    @field_validator("temperatures_K")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        return _positive_temperatures(v)
    duration_fs: float = Field(5000.0, gt=0)  # per iteration; each run continues the last
    timestep_fs: float = Field(0.5, gt=0)
    @field_validator("timestep_fs")
    @classmethod
    def _timestep(cls, v: float) -> float:
        return _md_timestep(v)
    friction_fs: float = Field(0.001, ge=0)  # Langevin γ, fs⁻¹
    # a run that starts at a minimum is first thermalised this long under this friction
    # (several 1/γ), writing nothing
    thermalise_fs: float = Field(250.0, ge=0)
    thermalise_friction_fs: float = Field(0.02, gt=0)
    write_every: int = Field(2, ge=1)  # frames kept (candidates, continuation) every N steps
    # independent runs per molecule and temperature (own seeds, each continued across
    # iterations): more candidates per selection, and a pooled kinetic temperature that one
    # short run of a small molecule is too noisy to give
    replicas: int = Field(1, ge=1)
    per_temperature: int = Field(5, ge=1)  # frames selected per molecule and temperature
    min_spacing_fs: float = Field(25.0, ge=0)  # least time between two selected frames
    uncertainty: Literal["force_std_max_eVA", "force_rel_dev"] = "force_std_max_eVA"
    # the committee disagrees: a run stops at once above this relative force deviation (the
    # other bounds of the guard, for every MD, are the ``guard`` section)
    max_force_rel_dev: float = Field(0.5, gt=0)
    seed: int = 0
    # precision of the committee (and its integration) in the MD; frames are stored in float64
    dtype: MdDtype = "float64"

    @model_validator(mode="after")
    def _whole_frames(self) -> AcquireConfig:
        steps = self.duration_fs / self.timestep_fs
        if abs(steps - round(steps)) > 1e-9 or round(steps) % self.write_every:
            raise ValueError(f"duration_fs / timestep_fs ({steps:g} steps) must be a whole "
                             f"multiple of write_every ({self.write_every})")
        return self

    @property
    def n_steps(self) -> int:
        return int(round(self.duration_fs / self.timestep_fs))

    @property
    def thermalise_steps(self) -> int:
        return int(round(self.thermalise_fs / self.timestep_fs))


_ITERATION = re.compile(r"^iter([0-9]+)$")


class ActiveLearningConfig(Strict):
    """The campaign: iterations, each continuing from the one named as its value
    (``iter0``: the normal-mode data and the first committee), and the stopping rule."""

    iterations: dict[str, str] = Field(
        default_factory=lambda: {"iter1": "iter0", "iter2": "iter1", "iter3": "iter2"})
    stop_mae_cm1: float = Field(5.0, gt=0)  # converged below this harmonic-frequency MAE
    # the stop rule holds from this iteration on (0: the method; 1: the committee has been
    # trained on frames of its own MD at least once, as the spectra need; docs/method.md)
    min_iterations: int = Field(0, ge=0)
    acquire: AcquireConfig = AcquireConfig()

    @field_validator("iterations")
    @classmethod
    def _chain(cls, v: dict[str, str]) -> dict[str, str]:
        for k, (name, previous) in enumerate(v.items(), start=1):
            if name != f"iter{k}" or previous != f"iter{k - 1}":
                raise ValueError(f"entry {k} must be 'iter{k}: iter{k - 1}', got "
                                 f"'{name}: {previous}' (iterations run in order, each "
                                 f"continuing the one before)")
        return v

    def stop_rule_holds(self, iteration: int, mae_cm1: float) -> bool:
        """The stop rule for one molecule after iteration ``iteration``: its committee-mean
        harmonic-frequency MAE is below ``stop_mae_cm1`` and at least ``min_iterations``
        acquisitions have added frames of the committee's own MD."""
        return iteration >= self.min_iterations and mae_cm1 < self.stop_mae_cm1


def iteration_number(name: str) -> int:
    """``iter3`` -> 3."""
    match = _ITERATION.match(name)
    if not match:
        raise PalirsInputError(f"'{name}' is not an iteration name (iter0, iter1, ...)")
    return int(match.group(1))


class IrConfig(Strict):
    """IR spectra from committee MD (see :mod:`palirs_data.ir`). A friction γ broadens every
    line by about γ/(2πc): 0.01 fs⁻¹ adds some 50 cm⁻¹, the default 0.001 fs⁻¹ about 5."""

    temperatures_K: list[float] = Field(default_factory=lambda: [300.0], min_length=1)

    @field_validator("temperatures_K")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        return _positive_temperatures(v)
    trajectories: int = Field(3, ge=1)  # independent runs per molecule and temperature
    timestep_fs: float = Field(0.5, gt=0)
    @field_validator("timestep_fs")
    @classmethod
    def _timestep(cls, v: float) -> float:
        return _md_timestep(v)
    friction_fs: float = Field(0.001, ge=0)
    thermalise_fs: float = Field(5000.0, ge=0)
    # the thermalisation's friction: several 1/γ in thermalise_fs bring a run from the
    # minimum to T (under friction_fs alone a run needs several ps)
    thermalise_friction_fs: float = Field(0.02, gt=0)
    produce_fs: float = Field(50000.0, gt=0)
    write_every: int = Field(1, ge=1)  # dipole every N steps
    max_correlation_fs: float = Field(1000.0, gt=0)  # correlation depth of the spectrum
    zero_padding: int = Field(4, ge=1)
    max_wavenumber_cm1: float = Field(4500.0, gt=0)  # spectra are stored up to here
    seed: int = 0
    # precision of the committee, the dipole model and the integration in the ML MD (the
    # reference MD is the label source's, float64); frames are stored in float64
    dtype: MdDtype = "float64"

    @model_validator(mode="after")
    def _long_enough(self) -> IrConfig:
        if self.produce_fs < 2 * self.max_correlation_fs:
            raise ValueError(f"produce_fs ({self.produce_fs:g}) must be at least twice "
                             f"max_correlation_fs ({self.max_correlation_fs:g})")
        return self

    @property
    def thermalise_steps(self) -> int:
        return int(round(self.thermalise_fs / self.timestep_fs))

    @property
    def produce_steps(self) -> int:
        return int(round(self.produce_fs / self.timestep_fs))


class ReferenceMdConfig(Strict):
    """MD driven by the label source with the ``ir`` protocol itself: the same runs, lengths,
    friction, thermalisation, timestep and seeds, so that ML and reference spectra differ in
    their force fields only (cheap for xTB; for DFT it is the expensive run the method avoids,
    so it can be switched off)."""

    enabled: bool = True


class ExperimentConfig(Strict):
    """Experimental gas-phase IR spectra (JCAMP-DX). By default the files shipped in the source
    distribution of the ``jcamp`` package (obtained with ``pip download``); ``files`` maps a
    molecule name to a JCAMP-DX file of your own, which takes precedence."""

    jcamp_version: str = Field("1.3.2", pattern=r"^[0-9][0-9A-Za-z.+-]*$")
    files: dict[str, str] = Field(default_factory=dict)
    # bands above this absorbance are flagged as saturated (sources.json, the figures): beyond
    # it less than a tenth of the light passes and stray light and the slit make a grating
    # spectrum's band heights nonlinear in concentration
    saturation_absorbance: float = Field(1.0, gt=0)


class CompareConfig(Strict):
    """How spectra are compared (see :func:`palirs_data.spectra.compare_spectra`)."""

    window_cm1: tuple[float, float] = (500.0, 4000.0)
    step_cm1: float = Field(1.0, gt=0)
    temperature_K: float = Field(300.0, gt=0)  # the MD temperature compared with experiment
    # the experiment's baseline (experiment.baseline_of, pybaselines): asls or arpls
    baseline_method: Literal["asls", "arpls"] = "asls"
    baseline_smoothness: float = Field(1.0e7, gt=0)
    baseline_asymmetry: float = Field(0.001, gt=0, lt=0.5)
    baseline_floor: float = Field(0.01, ge=0, lt=1)  # of the highest band: set to zero below
    # the experiment convolved with the MD line shape (Hann lag window of ir's correlation
    # depth) before it is compared: like with like (spectra.convolve_to_md)
    convolve_experiment: bool = True
    # confidence intervals (compare.py): the percentile bootstrap over whole runs, or the
    # jackknife over runs, per score; chosen by the scatter of reruns on real MD
    # (docs/method.md, "Do the intervals hold on real MD?")
    pcc_interval: Literal["jackknife", "bootstrap"] = "bootstrap"
    wd_interval: Literal["jackknife", "bootstrap"] = "bootstrap"
    bootstrap_samples: int = Field(1000, ge=0)  # 0: no bootstrap intervals
    bootstrap_blocks: bool = False  # also draw each drawn run's time blocks (wider)
    block_fs: float = Field(1000.0, gt=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _window(self) -> CompareConfig:
        lo, hi = self.window_cm1
        if not 0 <= lo < hi:
            raise ValueError(f"window_cm1 must be [low, high] with 0 <= low < high, "
                             f"got {list(self.window_cm1)}")
        if self.step_cm1 > (hi - lo) / 10:
            raise ValueError(f"step_cm1 ({self.step_cm1:g}) is too coarse for the window")
        return self


class Params(Strict):
    molecules: MoleculesConfig = MoleculesConfig()
    labeler: LabelerConfig = LabelerConfig()
    sample: SampleConfig = SampleConfig()
    label: LabelConfig = LabelConfig()
    compute: ComputeConfig = ComputeConfig()
    committee: CommitteeConfig = CommitteeConfig()
    dipole: DipoleConfig = DipoleConfig()
    test_set: TestSetConfig = TestSetConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    active_learning: ActiveLearningConfig = ActiveLearningConfig()
    guard: GuardConfig = GuardConfig()
    ir: IrConfig = IrConfig()
    reference_md: ReferenceMdConfig = ReferenceMdConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    compare: CompareConfig = CompareConfig()

    @model_validator(mode="after")
    def _compare_temperature(self) -> Params:
        if self.compare.temperature_K not in self.ir.temperatures_K:
            raise ValueError(f"compare.temperature_K ({self.compare.temperature_K:g}) is not "
                             f"one of ir.temperatures_K {self.ir.temperatures_K}")
        return self


def _format_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{path}: {key}: {msg}"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``; one-line :class:`PalirsInputError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PalirsInputError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PalirsInputError(f"{path}: expected a mapping of sections at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise PalirsInputError(_format_error(path, exc)) from None
    check_run(params, where=str(path))
    return params


#: the two sets of molecules a run knows: the campaign's (``molecules.names``: sampled,
#: labelled, trained on, spectra) and the transfer set (``molecules.transfer``: spectra from
#: the final committee only, never in a training table)
MOLECULE_SETS = ("campaign", "transfer")


def run_molecules(params: Params, *, where: str = "params.yaml",
                  which: str = "campaign") -> list[Molecule]:
    """The molecules of one set of a run (:data:`MOLECULE_SETS`;
    :func:`palirs_data.molecules.resolve`). The transfer set may be empty."""
    from palirs_data.molecules import resolve

    if which not in MOLECULE_SETS:
        raise PalirsInputError(f"unknown molecule set '{which}' (one of: "
                               f"{', '.join(MOLECULE_SETS)})")
    key = "names" if which == "campaign" else "transfer"
    return resolve(getattr(params.molecules, key),
                   [c.molecule() for c in params.molecules.custom],
                   where=f"{where}: molecules.{key}", allow_empty=which == "transfer")


def check_run(params: Params, *, where: str = "params.yaml") -> None:
    """What a run needs and one section cannot check alone, before any work starts: a
    committee of at least two models; the molecules of both sets resolve, are distinct
    (:func:`palirs_data.molecules.resolve`; no transfer molecule in the campaign) and contain
    only the committee's elements; every ``experiment.files`` key is one of them."""
    from palirs_data.molecules import closest_hint, distinct, elements

    if len(params.committee.seeds) < 2:
        raise PalirsInputError(f"{where}: committee.seeds: a committee needs at least two "
                               "seeds (one model has no spread: no uncertainty to select "
                               "frames by, no guard)")
    selected = run_molecules(params, where=where)
    transfer = run_molecules(params, where=where, which="transfer")
    trained = {m.name for m in selected}
    for m in transfer:
        if m.name in trained:
            raise PalirsInputError(f"{where}: molecules.transfer: '{m.name}' is also in "
                                   "molecules.names; a transfer molecule is never trained on")
    distinct([*selected, *transfer], where=f"{where}: molecules.names + molecules.transfer")
    allowed = set(params.committee.elements)
    for key, group in (("names", selected), ("transfer", transfer)):
        for m in group:
            extra = sorted(elements(m) - allowed)
            if extra:
                raise PalirsInputError(f"{where}: molecules.{key}: '{m.name}' contains "
                                       f"{', '.join(extra)}, "
                                       f"not in committee.elements {params.committee.elements}")
    selected = [*selected, *transfer]
    names = [m.name for m in selected]
    for key in params.experiment.files:
        if key not in names:
            raise PalirsInputError(f"{where}: experiment.files.{key}: not a molecule of this "
                                   f"run{closest_hint(key, names)} (the run has: "
                                   f"{', '.join(names)})")
    for key, kind, path in user_files(params):
        if not _inside(path, USER_FILES[kind]):
            log.warning("%s: %s: %s is outside %s/: DVC does not track it, so a change to it "
                        "reruns nothing; move it there", where, key, path, USER_FILES[kind])


def is_model_file(value: str) -> bool:
    """Whether a ``foundation_model`` setting names a file (a path, or a ``.model``) rather
    than a model mace-torch fetches by name."""
    return "/" in value or "\\" in value or value.endswith((".model", ".pt"))


def user_files(params: Params) -> list[tuple[str, str, Path]]:
    """The user's own files named in ``params`` as (dotted key, kind of :data:`USER_FILES`,
    path): custom molecules' XYZ files, experimental spectra, foundation models."""
    out = [(f"molecules.custom.{c.name}.xyz", "molecules", Path(c.xyz))
           for c in params.molecules.custom if c.xyz is not None]
    out += [(f"experiment.files.{k}", "experiment", Path(v))
            for k, v in params.experiment.files.items()]
    out += [(f"label.initial_data.{k}", "structures", Path(d.file))
            for k, d in enumerate(params.label.initial_data)]
    out += [(f"{section}.training.foundation_model", "models", Path(model))
            for section, model in (("committee", params.committee.training.foundation_model),
                                   ("dipole", params.dipole.training.foundation_model))
            if model is not None and is_model_file(model)]
    return out


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` (relative to the repository, the working directory) lies in
    ``directory``."""
    try:
        return Path(path).resolve().is_relative_to(directory.resolve())
    except (OSError, ValueError):
        return False
