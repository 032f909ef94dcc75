"""The reports one stage hands to another, typed: written and read only through these models.

``evaluate.json`` (read by ``acquire``'s stop rule and the ``campaign`` summary),
``acquire.json`` and ``train_ensemble.json`` (read by the ``campaign`` summary and the cost
model). Each file carries its kind and version (``"report"``, ``"version"``); reading a file of
another kind, another version or with a missing or mistyped field is a one-line
:class:`~palirs_data.errors.PalirsInputError` naming the file and the field. A field added or
renamed raises the version, so an old file is refused instead of misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from palirs_data.atomic import write_text_atomic
from palirs_data.errors import PalirsInputError


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Report(_Fields):
    """A stage's report: :meth:`write` and :meth:`read` with the kind and version checked."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def write(self, path: str | Path) -> None:
        """Write atomically, with the kind and version first."""
        body = {"report": self.KIND, "version": self.VERSION, **self.model_dump(mode="json")}
        write_text_atomic(Path(path), json.dumps(body, indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path):
        """The report in ``path``; one-line errors (module docstring)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PalirsInputError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PalirsInputError(f"{path}: not valid JSON ({exc})") from None
        kind = raw.get("report") if isinstance(raw, dict) else None
        if kind is None:
            raise PalirsInputError(f"{path}: not a stage report (no 'report' field; expected "
                                   f"'{cls.KIND}')")
        if kind != cls.KIND:
            raise PalirsInputError(f"{path}: report '{kind}', expected '{cls.KIND}'")
        if raw.get("version") != cls.VERSION:
            raise PalirsInputError(f"{path}: {cls.KIND} report version {raw.get('version')}, "
                                   f"this code reads version {cls.VERSION}: rerun its stage")
        body = {k: v for k, v in raw.items() if k not in ("report", "version")}
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise PalirsInputError(f"{path}: {where}: {err['msg']}") from None


# --- evaluate.json ------------------------------------------------------------------------------

class MoleculeFrequencyErrors(_Fields):
    """One molecule's harmonic frequencies, committee mean against the reference (cm⁻¹)."""

    mae_cm1: float
    rmse_cm1: float
    mae_sorted_cm1: float  # modes matched in sorted order (a lower bound when modes cross)
    min_overlap: float | None  # the worst overlap of matched mode vectors
    member_mae_cm1: list[float]  # each committee member's own MAE


class TestSetErrors(_Fields):
    """The committee mean (and the dipole model) on the labelled test set; None: no test set
    or too few structures for the figure."""

    n_test: int
    energy_mae_meV: float | None = None
    energy_rmse_meV: float | None = None
    energy_mae_meV_per_atom: float | None = None
    energy_rmse_meV_per_atom: float | None = None
    # the same with each molecule's mean error (its offset, listed) removed
    energy_rmse_within_molecule_meV_per_atom: float | None = None
    energy_offset_meV_per_atom: dict[str, float] | None = None
    force_mae_meV_A: float | None = None
    force_rmse_meV_A: float | None = None
    force_std_error_spearman: float | None = None
    force_std_error_pearson: float | None = None
    dipole_mae_mD: float | None = None
    dipole_rmse_mD: float | None = None
    # 95 % bootstrap intervals over the test structures (evaluation.rmse_interval)
    energy_rmse_meV_per_atom_ci95: list[float] | None = None
    force_rmse_meV_A_ci95: list[float] | None = None
    dipole_rmse_mD_ci95: list[float] | None = None


class Evaluation(Report):
    """``evaluate.json``: harmonic-frequency errors of the committee and test-set errors."""

    KIND: ClassVar[str] = "evaluation"

    frequency_mae_cm1: float  # committee mean, all modes of all molecules
    frequency_rmse_cm1: float
    frequency_mae_sorted_cm1: float
    frequency_member_mae_cm1: list[float]
    frequency_member_mae_mean_cm1: float
    frequency_member_mae_std_cm1: float
    frequency_per_molecule: dict[str, MoleculeFrequencyErrors]
    test: TestSetErrors

    def molecule_maes(self, molecules: list[str]) -> dict[str, float]:
        """Each molecule's committee-mean MAE (cm⁻¹): what the per-molecule stop rule reads.
        A molecule without its own figure takes the overall one."""
        return {name: (self.frequency_per_molecule[name].mae_cm1
                       if name in self.frequency_per_molecule else self.frequency_mae_cm1)
                for name in molecules}


# --- acquire.json -------------------------------------------------------------------------------

class AcquiredRun(_Fields):
    """One acquisition MD run: its span, why it stopped, its uncertainty and temperature."""

    key: str
    molecule: str
    temperature_K: float
    frames: int
    start_time_fs: float
    end_time_fs: float
    stopped_at_step: int | None
    stop_reason: str | None
    max_force_std_max_eVA: float | None
    max_force_rel_dev: float | None
    kinetic_temperature_K: float | None  # None: stopped at its first frame
    kinetic_temperature_se_K: float | None
    kinetic_frames: int
    selected: int


class Acquisition(Report):
    """``acquire.json``: what an iteration's acquisition did. The MD fields are absent
    (None) when every molecule had converged and no MD ran."""

    KIND: ClassVar[str] = "acquisition"

    iteration: int
    previous_frequency_mae_cm1: float
    previous_frequency_mae_per_molecule_cm1: dict[str, float]
    converged_molecules: list[str]
    acquiring_molecules: list[str]
    selected_by: str
    converged: bool
    n_selected: int
    n_labelled: int
    n_failed: int
    n_train: int
    labels_per_molecule: dict[str, int]
    added_per_molecule: dict[str, int]
    max_force_std_max_eVA: float | None
    max_force_rel_dev: float | None
    guard_stops: int
    runs: list[AcquiredRun]
    md_seconds: float
    md_replica_steps_per_s: float | None = None
    md_tasks: int | None = None
    md_worker: str | list[str] | None = None
    md_device: str | None = None
    md_resumed_frames: int = 0
    label_seconds: float
    seconds: float


# --- train_ensemble.json ------------------------------------------------------------------------

class MemberPlacement(_Fields):
    worker: str | None
    device: str


class Training(Report):
    """``train_ensemble.json``: the committee's validation errors and timings; ``reused_from``
    when an identical committee was copied instead of trained (no errors then)."""

    KIND: ClassVar[str] = "training"

    n_train: int
    n_valid: int
    committee_training_seconds: float  # summed over members
    committee_wall_seconds: float  # the whole committee (members may train side by side)
    trained_on: dict[str, MemberPlacement] = {}
    valid_rmse_e_meV_per_atom: dict[str, float | None] = {}
    valid_rmse_f_meV_A: dict[str, float | None] = {}
    reused_from: str | None = None
