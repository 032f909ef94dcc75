"""Training the MACE committee and the dipole model with mace-torch.

The labelled rows of a structure table are split once 80:20 (``committee.valid_fraction``,
seed ``committee.split_seed``) into training and validation sets written as extxyz
(:func:`write_split`); each member is trained from scratch by mace-torch's own
``mace_run_train`` in a subprocess (it sets global torch state and logging), differing from the
others only in its ``--seed`` (:func:`train_committee`). Atomic reference energies (E0s) come
from the ``e0s`` stage. The element set is fixed by ``committee.elements`` so models of every
iteration share it. Evaluating the trained models is :mod:`palirs_data.committee`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ase.data import atomic_numbers

from palirs_data import foundation, xyz
from palirs_data.compute import Executor
from palirs_data.config import (CommitteeConfig, DipoleConfig, MaceModelConfig,
                                MaceTrainingConfig)
from palirs_data.errors import PalirsInputError, StageFailed
from palirs_data.units import DEBYE_EA

log = logging.getLogger(__name__)


def split_indices(structure_ids: Sequence[str], iterations: Sequence[int],
                  valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation split (sorted row indices), ``valid_fraction`` of each iteration's rows
    in validation, stable as the table grows.

    The rows of each active-learning iteration are split on their own, in structure-id order
    shuffled by a generator seeded with (``seed``, iteration): rows added by a later iteration
    never move earlier rows between the sets, so every iteration's committee trains on what the
    previous one trained on plus new frames, and validation errors stay comparable.
    """
    ids = np.asarray(structure_ids, dtype=object)
    its = np.asarray(iterations, dtype=np.int64)
    train: list[int] = []
    valid: list[int] = []
    for it in np.unique(its):
        rows = np.flatnonzero(its == it)
        rows = rows[np.argsort(ids[rows].astype(str), kind="stable")]
        order = np.random.default_rng([seed, int(it)]).permutation(len(rows))
        n_valid = int(round(valid_fraction * len(rows)))
        valid += rows[order[:n_valid]].tolist()
        train += rows[order[n_valid:]].tolist()
    if not valid and len(train) > 1:  # tiny tables: at least one structure to validate on
        valid.append(train.pop())
    if not valid or not train:
        raise PalirsInputError(f"committee: {len(ids)} labelled structures are too few to split")
    return np.sort(np.array(train)), np.sort(np.array(valid))


#: What a mace-torch job fits: an energy/forces MACE, or an AtomicDipolesMACE dipole model.
KIND_FLAGS = {
    "energy": ["--model", "MACE", "--error_table", "PerAtomRMSE"],
    "dipole": ["--model", "AtomicDipolesMACE", "--loss", "dipole", "--error_table",
               "DipoleRMSE"],
}


def mace_train_args(*, name: str, train_file: Path, valid_file: Path, e0s: dict[int, float],
                    elements: Sequence[str], model: MaceModelConfig,
                    training: MaceTrainingConfig, seed: int, work_dir: Path,
                    kind: str = "energy", device: str = "cpu") -> list[str]:
    """Command-line flags for ``mace_run_train`` (mace-torch's own training)."""
    m, t = model, training
    z = sorted(atomic_numbers[e] for e in elements)
    missing = [e for e in elements if atomic_numbers[e] not in e0s]
    if missing:
        raise PalirsInputError(f"committee.elements: no E0 for {missing[0]} (re-run the e0s stage)")
    args = [
        "--name", name, "--seed", str(seed), "--work_dir", str(work_dir),
        "--train_file", str(train_file), "--valid_file", str(valid_file),
        "--E0s", repr({zz: e0s[zz] for zz in z}), "--atomic_numbers", repr(z),
        "--energy_key", xyz.MACE_KEYS["energy"],
        "--forces_key", xyz.MACE_KEYS["forces"],
        "--dipole_key", xyz.MACE_KEYS["dipole"], *KIND_FLAGS[kind],
        "--num_channels", str(m.num_channels), "--max_L", str(m.max_L),
        "--max_ell", str(m.max_ell),
        "--r_max", str(m.r_max_A), "--num_interactions", str(m.num_interactions),
        "--correlation", str(m.correlation), "--num_radial_basis", str(m.num_radial_basis),
        "--max_num_epochs", str(t.mace_epochs), "--batch_size", str(t.batch_size),
        "--valid_batch_size", str(t.batch_size), "--lr", str(t.lr),
        "--energy_weight", str(t.energy_weight), "--forces_weight", str(t.forces_weight),
        "--patience", str(t.patience), "--default_dtype", t.default_dtype, "--device", device,
        "--eval_interval", str(t.eval_every), "--save_cpu", "--keep_checkpoints",
    ]
    if t.ema:
        args += ["--ema", "--ema_decay", "0.99"]
    if t.checkpoint == "last":  # a checkpoint every epoch: mace-torch keeps the newest
        args += ["--save_all_checkpoints"]
    if kind == "energy" and t.stage_two_start is not None:
        args += ["--swa", "--start_swa", str(t.stage_two_start),
                 "--swa_energy_weight", str(t.stage_two_energy_weight),
                 "--swa_forces_weight", str(t.forces_weight), "--swa_lr", str(t.stage_two_lr)]
    if t.foundation_model is not None:  # a local file (foundation.with_foundation_file)
        if not Path(t.foundation_model).is_file():
            raise PalirsInputError(f"committee.training.foundation_model: "
                                   f"{t.foundation_model}: no such file")
        args += ["--foundation_model", str(Path(t.foundation_model).resolve())]
    return args + list(t.extra_args)


@dataclass
class MemberReport:
    seed: int
    model: Path
    seconds: float
    epochs: int
    valid_rmse_e_meV_per_atom: float
    valid_rmse_f_meV_A: float
    curve: list[dict]  # mace-torch's evaluation records, one per epoch
    valid_rmse_mu_mD: float = float("nan")  # dipole models: validation dipole RMSE, mDebye
    device: str = "cpu"  # where it was trained
    worker: str | None = None  # the Dask worker that trained it (None: this process)


_CURVE_KEYS = ("epoch", "loss", "rmse_e_per_atom", "rmse_f", "rmse_mu")


def _read_curve(results_dir: Path) -> list[dict]:
    records = []
    for path in sorted(results_dir.glob("*_train.txt")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("mode") == "eval" and rec.get("epoch") is not None:
                records.append({k: rec[k] for k in _CURVE_KEYS if k in rec})
    return records


def _stage_two_switch(log_text: str) -> int | None:
    """The last epoch of stage one in a mace_run_train log (None: no stage two): the last
    ``Epoch N:`` line before mace-torch changes to the stage-two loss (at ``--start_swa``, or
    earlier when its patience runs out)."""
    epoch = None
    for line in log_text.splitlines():
        if "Changing loss based on Stage Two Weights" in line:
            return epoch
        found = re.search(r"INFO: Epoch (\d+):", line)
        if found:
            epoch = int(found.group(1))
    return None


def _keep_newest_checkpoint(directory: Path) -> None:
    """Delete all but the newest checkpoint of each stage (``checkpoint: last`` saves one per
    epoch, 3 MB each for the demo's members)."""
    for pattern in ("*_epoch-*_swa.pt", "*_epoch-*[0-9].pt"):
        files = sorted(directory.glob(pattern),
                       key=lambda f: int(re.search(r"_epoch-(\d+)", f.name).group(1)))
        for old in files[:-1]:
            old.unlink()


def train_member(*, name: str, train_file: Path, valid_file: Path, e0s: dict[int, float],
                 elements: Sequence[str], model: MaceModelConfig,
                 training: MaceTrainingConfig, seed: int, work_dir: Path,
                 kind: str = "energy", device: str = "cpu") -> MemberReport:
    """Train one MACE model from scratch with ``mace_run_train`` in a subprocess.

    ``work_dir`` is emptied first: mace-torch would otherwise resume from, and append to, the
    files of an earlier run.
    """
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    args = mace_train_args(name=name, train_file=train_file, valid_file=valid_file, e0s=e0s,
                           elements=elements, model=model, training=training, seed=seed,
                           work_dir=work_dir, kind=kind, device=device)
    env = dict(os.environ, OMP_NUM_THREADS=str(training.threads),
               MKL_NUM_THREADS=str(training.threads))
    # Dask's nanny sets a low glibc trim threshold in its workers; inherited, it makes
    # training about 1.3x slower (large allocations go to mmap/munmap every time)
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mace.cli.run_train", *args], cwd=work_dir,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (work_dir / "mace_run_train.log").write_text(proc.stdout + proc.stderr)
    model = work_dir / f"{name}.model"
    if (work_dir / f"{name}_stagetwo.model").is_file():  # stage two ran: its model is the final
        model = work_dir / f"{name}_stagetwo.model"
    if proc.returncode != 0 or not model.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StageFailed(f"mace_run_train for {name} (seed {seed}) failed: {tail[0]} "
                          f"(log: {work_dir / 'mace_run_train.log'})")
    curve = _read_curve(work_dir / "results")
    # the member's validation errors: those of its checkpoint, the lowest loss of the last stage
    # (a stage two's loss weighs the energy more: not comparable with stage one's)
    switch = _stage_two_switch(proc.stdout + proc.stderr) if model.stem.endswith(
        "_stagetwo") else None
    last = [r for r in curve if switch is None or r["epoch"] > switch] or curve
    if training.checkpoint == "last":  # the model is the last epoch's
        best = max(last, key=lambda r: r["epoch"]) if last else {}
        _keep_newest_checkpoint(work_dir / "checkpoints")
    else:
        best = min(last, key=lambda r: r["loss"]) if last else {}
    return MemberReport(seed, model, seconds, 1 + max((r["epoch"] for r in curve), default=-1),
                        1e3 * best.get("rmse_e_per_atom", float("nan")),
                        1e3 * best.get("rmse_f", float("nan")), curve,
                        1e3 * best.get("rmse_mu", float("nan")) / DEBYE_EA, device)


def train_member_task(jobs: list[dict]) -> list[MemberReport]:
    """:func:`train_member` for each of ``jobs`` as one unit of GPU work on a Dask worker, on
    this worker's device: on a GPU one after the other, on a CPU side by side (one process
    each, :func:`train_members`). Data and the trained models travel as files under each
    job's ``work_dir``, which must be on a file system the worker and the submitting process
    share."""
    from concurrent.futures import ThreadPoolExecutor

    from palirs_data.compute import device, worker_name

    where, name = device(), worker_name()

    def one(job: dict) -> MemberReport:
        report = train_member(**job, device=where)
        report.worker = name
        return report

    if where != "cpu" or len(jobs) == 1:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:  # each thread waits on its subprocess
        return list(pool.map(one, jobs))


def train_members(jobs: list[dict], executor: Executor | None = None) -> list[MemberReport]:
    """Train the models of ``jobs`` (keyword arguments of :func:`train_member`) as GPU tasks
    of the ``executor`` (default: one after the other in this process): side by side on as
    many workers as offer the resource (or any worker, ``compute.gpu: auto`` without GPU
    workers). With more models than CPU workers, each worker takes its share at once (3 on
    two one-thread workers: 2 + 1 processes), so no core idles while the last one trains:
    on two cores a committee of 3 took 216 s instead of 266 s one model per worker at a
    time, the same models bit for bit (docs/method.md)."""
    from palirs_data.compute import gpu_resources
    from palirs_data.progress import make_progress

    executor = executor or Executor.local()
    slots = executor.md_slots()
    on_gpus = executor.distributed and gpu_resources(executor.client, executor.config)
    if executor.distributed and not on_gpus and len(jobs) > slots:
        groups = [jobs[i::slots] for i in range(slots)]
    else:
        groups = [[job] for job in jobs]
    futures = [executor.submit(train_member_task, group, gpu=True) for group in groups]
    sizes = {id(future): len(group) for future, group in zip(futures, groups)}
    with make_progress() as bar:
        task = bar.add_task("train", total=len(jobs))
        for future in executor.as_completed(futures):
            bar.advance(task, sizes[id(future)])
    reports: list[MemberReport | None] = [None] * len(jobs)
    for group, future in enumerate(futures):  # raises the first StageFailed, if any
        for j, report in enumerate(future.result()):
            reports[group + j * len(groups)] = report
    return reports


@dataclass
class CommitteeReport:
    members: list[MemberReport]
    n_train: int
    n_valid: int
    split_seed: int
    wall_seconds: float = float("nan")  # the whole committee (members may train side by side)

    def metrics(self) -> dict:
        """Validation errors and timings for the ``train_ensemble.json`` of an iteration."""
        return {
            "n_train": self.n_train, "n_valid": self.n_valid,
            "committee_training_seconds": round(sum(m.seconds for m in self.members), 1),
            "committee_wall_seconds": round(self.wall_seconds, 1),
            "trained_on": {m.model.stem: {"worker": m.worker, "device": m.device}
                           for m in self.members},
            "valid_rmse_e_meV_per_atom": {m.model.stem: m.valid_rmse_e_meV_per_atom
                                          for m in self.members},
            "valid_rmse_f_meV_A": {m.model.stem: m.valid_rmse_f_meV_A for m in self.members},
        }

    def curves_csv(self) -> str:
        """Validation curves of every member (one row per member and epoch), for DVC plots."""
        lines = ["member,epoch,loss,rmse_e_meV_per_atom,rmse_f_meV_A"]
        for m in self.members:
            lines += [f"{m.model.stem},{r['epoch']},{r['loss']},{1e3 * r['rmse_e_per_atom']},"
                      f"{1e3 * r['rmse_f']}" for r in m.curve]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict:
        return {
            "n_train": self.n_train, "n_valid": self.n_valid, "split_seed": self.split_seed,
            "members": [{"seed": m.seed, "model": m.model.name, "seconds": round(m.seconds, 2),
                         "epochs": m.epochs,
                         "valid_rmse_e_meV_per_atom": m.valid_rmse_e_meV_per_atom,
                         "valid_rmse_f_meV_A": m.valid_rmse_f_meV_A} for m in self.members],
        }


def write_split(table: pa.Table, *, elements: Sequence[str], valid_fraction: float,
                split_seed: int, data_dir: Path) -> tuple[Path, Path, int, int]:
    """Labelled rows of ``table`` split into ``train.extxyz`` and ``valid.extxyz``."""
    labelled = table.filter(pc.equal(table.column("label_status"), "ok"))
    known = {atomic_numbers[e] for e in elements}
    present = set(pc.unique(pc.list_flatten(labelled.column("numbers"))).to_pylist())
    if present - known:
        raise PalirsInputError(f"committee.elements: the data contain element(s) "
                               f"{sorted(present - known)} not in {list(elements)}")
    train_idx, valid_idx = split_indices(labelled.column("structure_id").to_pylist(),
                                         labelled.column("iteration").to_pylist(),
                                         valid_fraction, split_seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, valid_file = data_dir / "train.extxyz", data_dir / "valid.extxyz"
    xyz.write_structures(labelled.take(train_idx), train_file, keys=xyz.MACE_KEYS)
    xyz.write_structures(labelled.take(valid_idx), valid_file, keys=xyz.MACE_KEYS)
    return train_file, valid_file, len(train_idx), len(valid_idx)


def member_training(config: CommitteeConfig, k: int, previous: Path | None
                    ) -> MaceTrainingConfig:
    """Training settings of member ``k``: ``config.training``, or with ``retrain: continue``
    and a previous committee holding ``model_<k>.model``, that model's weights as the
    starting point for ``continue_epochs`` epochs (mace-torch's fine-tuning from a local
    model file)."""
    if config.retrain == "continue" and previous is not None:
        start = previous / f"model_{k}.model"
        if start.is_file():
            return config.training.model_copy(update={"foundation_model": str(start),
                                                      "max_num_epochs": config.continue_epochs})
    return foundation.with_foundation_file(config.training,
                                           "committee.training.foundation_model")


def train_committee(table: pa.Table, *, e0s: dict[int, float], config: CommitteeConfig,
                    out_dir: Path, work_dir: Path, executor: Executor | None = None,
                    previous: Path | None = None) -> CommitteeReport:
    """Train every committee member on the labelled rows of ``table``.

    Models are written to ``out_dir/model_<k>.model``; mace-torch's working files (logs,
    checkpoints, curves) stay under ``work_dir``. The members train as GPU tasks of the
    ``executor``, side by side on a Dask cluster (:func:`train_members`).
    ``previous``: the last iteration's committee directory, the starting point of every
    member with ``retrain: continue`` (:func:`member_training`).
    """
    work_dir = work_dir.resolve()  # mace-torch runs with its own working directory
    train_file, valid_file, n_train, n_valid = write_split(
        table, elements=config.elements, valid_fraction=config.valid_fraction,
        split_seed=config.split_seed, data_dir=work_dir / "data")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("training %d committee members (seeds %s) on %d structures", len(config.seeds),
             list(config.seeds), n_train)
    jobs = [dict(name=f"model_{k}", train_file=train_file, valid_file=valid_file, e0s=e0s,
                 elements=list(config.elements), model=config.model,
                 training=member_training(config, k, previous), seed=seed,
                 work_dir=work_dir / f"m{k}") for k, seed in enumerate(config.seeds)]
    start = time.perf_counter()
    members = train_members(jobs, executor)
    wall = time.perf_counter() - start
    for k, report in enumerate(members):
        target = out_dir / f"model_{k}.model"
        shutil.copyfile(report.model, target)
        report.model = target
        log.info("member %d: %d epochs in %.1f s on %s (%s), valid RMSE E %.2f meV/atom, "
                 "F %.1f meV/Å", k, report.epochs, report.seconds, report.device,
                 report.worker or "this process", report.valid_rmse_e_meV_per_atom,
                 report.valid_rmse_f_meV_A)
    return CommitteeReport(members, n_train, n_valid, config.split_seed, wall)


def training_fingerprint(table: pa.Table, *, e0s: dict[int, float],
                         config: CommitteeConfig) -> str:
    """SHA-256 of what determines a committee: the table's content (Arrow IPC bytes), the E0s
    and the committee settings. Equal fingerprints: retraining would give the same models."""
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    digest.update(sink.getvalue().to_pybytes())
    digest.update(json.dumps({str(z): e for z, e in sorted(e0s.items())}).encode())
    digest.update(config.model_dump_json().encode())
    return digest.hexdigest()


def train_dipole_model(table: pa.Table, *, e0s: dict[int, float], elements: Sequence[str],
                       config: DipoleConfig, out_file: Path, work_dir: Path,
                       executor: Executor | None = None) -> MemberReport:
    """Train a MACE dipole model (mace-torch's AtomicDipolesMACE) on the labelled rows, as
    one GPU task of the ``executor`` (:func:`train_members`)."""
    work_dir = work_dir.resolve()
    train_file, valid_file, n_train, _ = write_split(
        table, elements=elements, valid_fraction=config.valid_fraction,
        split_seed=config.split_seed, data_dir=work_dir / "data")
    log.info("training the dipole model (seed %d) on %d structures", config.seed, n_train)
    (report,) = train_members([dict(
        name="dipole", train_file=train_file, valid_file=valid_file, e0s=e0s,
        elements=list(elements), model=config.model,
        training=foundation.with_foundation_file(config.training,
                                                 "dipole.training.foundation_model"),
        seed=config.seed, work_dir=work_dir / "dipole", kind="dipole")], executor)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report.model, out_file)
    report.model = out_file
    log.info("dipole model: %d epochs in %.1f s on %s (%s), valid RMSE %.1f mDebye",
             report.epochs, report.seconds, report.device, report.worker or "this process",
             report.valid_rmse_mu_mD)
    return report


