"""Labelling a structure table: fan-out, checkpoints, retries and failure accounting.

:func:`label_table` labels every ``pending`` row of a structure table with the configured label
source. Single points are grouped in chunks (at most ``label.chunk_size``, fewer when needed so
that each worker gets at least 4); each chunk is one Dask task,
or runs in-process when no client is given. Each finished chunk is checkpointed at once as a
small Parquet table in a directory keyed by the label settings, so a killed run, re-run with
the same settings, labels only what is missing and never labels a structure twice.

A single point that fails (exception, SCF not converged, non-finite result, or no answer
within ``label.timeout_s``) is retried once with the label source's safer settings (when it has
them) and otherwise recorded as ``failed`` with its error; it never stops the other structures.
If the failed fraction exceeds ``label.max_failure_ratio`` the result is refused with a summary
(:class:`StageFailed`).

Faults of the label source itself:

- **hang**: each single point runs in a watchdog thread (:mod:`palirs_data.watchdog`); past
  ``label.timeout_s`` it is abandoned and recorded as timed out (then retried once with safer
  settings). A thread stuck in native code cannot be stopped from Python, so the chunk reports
  it and the process that collects results restarts that Dask worker
  (``Client.restart_workers``; workers under a nanny, the default) once the chunk is in,
  freeing the core it would otherwise burn.
- **crash** (segfault, ``os._exit``, out of memory): the worker process dies with the chunk.
  Dask re-runs the chunk on another worker up to ``distributed.scheduler.allowed-failures``
  times (Dask's default 3), then gives up on it (``KilledWorker``); the chunk is then split into
  one task per structure, run one at a time (a death counts against every task the dying
  worker held, so a crashing structure in flight beside an innocent one could take it down),
  so only the structure that kills its worker is recorded as failed ("killed its Dask worker",
  after Dask gave up on it alone :data:`SOLO_TRIES` times) and the others are labelled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from palirs_data import structures
from palirs_data.compute import Executor
from palirs_data.config import LabelConfig, LabelerConfig
from palirs_data.cost import check_cost
from palirs_data.errors import StageFailed
from palirs_data.labelers import Labeler, make_labeler
from palirs_data.progress import make_progress
from palirs_data.structures import Structure
from palirs_data.watchdog import LabelTimeout, call_with_timeout

log = logging.getLogger(__name__)


def label_one(labeler: Labeler, s: Structure, *, retry: bool, timeout_s: float | None = None
              ) -> tuple[Structure, float]:
    """Label one structure; a failure is recorded in the returned row, never raised.

    Returns the row and the seconds spent in the label source (all attempts); every attempt
    builds its own calculator, so one abandoned after a timeout is never reused."""
    seconds = 0.0
    attempts = [False, True] if retry and labeler.has_safer() else [False]
    errors: list[str] = []
    for safer in attempts:
        settings = structures.settings_json(labeler.settings(safer=safer))
        try:
            lab = call_with_timeout(
                lambda: labeler.label(s.to_atoms(), charge_e=s.charge_e,
                                      multiplicity=s.multiplicity, safer=safer), timeout_s)
            seconds += lab.seconds
        except LabelTimeout as exc:
            errors.append(f"{'safer' if safer else 'default'} settings: timeout: {exc}")
            seconds += timeout_s or 0.0
            continue
        except Exception as exc:  # any failure of the QM code is data, not a crash
            first = str(exc).splitlines()[0] if str(exc) else ""
            errors.append(f"{'safer' if safer else 'default'} settings: "
                          f"{type(exc).__name__}: {first}"[:500])
            continue
        return replace(s, label_status="ok", label_method=labeler.method,
                       label_settings=settings, label_error=None,
                       label_attempts=s.label_attempts + len(errors) + 1,
                       energy_eV=lab.energy_eV, forces_eVA=lab.forces_eVA,
                       dipole_eA=lab.dipole_eA), seconds
    return replace(s, label_status="failed", label_method=labeler.method,
                   label_settings=settings, label_error="; ".join(errors),
                   label_attempts=s.label_attempts + len(errors),
                   energy_eV=None, forces_eVA=None, dipole_eA=None), seconds


@dataclass
class ChunkResult:
    """What a chunk task returns: a validated structure table (built on the worker, so the
    collecting process only concatenates Arrow tables), the seconds spent in the label source,
    and whether a timed-out single point left a thread running on the worker (its address)."""

    table: pa.Table
    seconds: float
    hung_worker: str | None = None
    timed_out: int = 0


def label_chunk(rows: list[Structure], config: LabelerConfig, retry: bool,
                timeout_s: float | None = None) -> ChunkResult:
    """Label a chunk of structures (the unit of work sent to a Dask worker)."""
    labeler = make_labeler(config)
    results, timed_out = [], 0
    for s in rows:
        row, seconds = label_one(labeler, s, retry=retry, timeout_s=timeout_s)
        if row.label_error and "timeout:" in row.label_error:
            timed_out += 1
        results.append((row, seconds))
    hung = None
    if timed_out:
        hung = _worker_address() or "<this process>"
        log.warning("label: %d single point(s) timed out; their threads may still run on %s",
                    timed_out, hung)
    return ChunkResult(structures.to_table([r for r, _ in results]),
                       sum(t for _, t in results), hung, timed_out)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def killed_worker_row(s: Structure, config: LabelerConfig, error: str) -> Structure:
    """The failed row of a structure whose single point kept killing its Dask worker."""
    labeler = make_labeler(config)
    return replace(s, label_status="failed", label_method=labeler.method,
                   label_settings=structures.settings_json(labeler.settings()),
                   label_error=f"the label source killed its Dask worker: {error}"[:500],
                   label_attempts=s.label_attempts + 1, energy_eV=None, forces_eVA=None,
                   dipole_eA=None)


def checkpoint_dir(config: LabelConfig, labeler_config: LabelerConfig) -> Path:
    """Checkpoint directory, keyed by the label source's settings (so settings changes never
    reuse stale labels)."""
    labeler = make_labeler(labeler_config)
    key = structures.settings_json({"method": labeler.method,
                                    "settings": labeler.settings(),
                                    "safer": labeler.settings(safer=True)})
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return config.checkpoint_dir / f"label-{labeler.method}-{digest}"


def load_checkpoint(directory: Path) -> pa.Table:
    """Labelled rows already checkpointed in ``directory`` (one structure table)."""
    tables = [structures.read_table(p) for p in sorted(directory.glob("chunk-*.parquet"))]
    if not tables:
        return structures.empty_table()
    table = pa.concat_tables(tables)
    # a chunk re-run after a crash may repeat rows of a chunk file written just before it
    _, first = np.unique(table.column("structure_id").to_numpy(zero_copy_only=False),
                         return_index=True)
    return table.take(np.sort(first))


def _write_chunk(directory: Path, table: pa.Table) -> None:
    ids = "".join(table.column("structure_id").to_pylist())
    digest = hashlib.sha256(ids.encode()).hexdigest()[:16]
    structures.write_table(table, directory / f"chunk-{digest}.parquet")


@dataclass
class LabelReport:
    table: pa.Table
    n_pending: int  # rows that needed a label
    n_resumed: int  # taken from the checkpoint
    n_computed: int  # labelled in this run
    n_failed: int
    n_retried_ok: int  # succeeded only with safer settings
    checkpoint: Path
    label_seconds: float  # time spent in the label source by this run's single points
    wall_seconds: float  # wall time of this run's labelling
    failure_causes: dict[str, int] = field(default_factory=dict)  # timeout/killed_worker/other

    def metrics(self) -> dict[str, float | int]:
        """Figures for ``metrics/label.json`` (timings vary between runs; tables do not)."""
        per_point = self.label_seconds / self.n_computed if self.n_computed else None
        return {"n_pending": self.n_pending, "n_resumed": self.n_resumed,
                "n_computed": self.n_computed, "n_failed": self.n_failed,
                "n_retried_ok": self.n_retried_ok, "failure_causes": self.failure_causes,
                "seconds_per_single_point": per_point,
                "single_points_per_second": (self.n_computed / self.wall_seconds
                                             if self.n_computed and self.wall_seconds else None)}

    def summary(self) -> str:
        causes = ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in
                           self.failure_causes.items() if n)
        return (f"{self.n_pending} to label: {self.n_resumed} from checkpoint, "
                f"{self.n_computed} computed, {self.n_failed} failed"
                f"{f' ({causes})' if causes else ''}, "
                f"{self.n_retried_ok} needed the safer retry")


def chunk_size(n_todo: int, n_workers: int, largest: int) -> int:
    """Single points per task: at most ``largest``, and small enough that every worker gets
    at least 4 tasks (load balance; a slow structure cannot hold up a whole worker's share)."""
    return max(1, min(largest, math.ceil(n_todo / (4 * max(1, n_workers)))))


def _ids(table: pa.Table) -> np.ndarray:
    return table.column("structure_id").to_numpy(zero_copy_only=False)


#: what a single point gives a row; the rest of a row (molecule name, source, iteration,
#: temperature, uncertainty) is the caller's and never taken from a checkpoint
LABEL_COLUMNS = ("label_status", "label_method", "label_settings", "label_error",
                 "label_attempts", "energy_eV", "forces_eVA", "dipole_eA")


def _resume(pending: pa.Table, checkpoint: pa.Table) -> pa.Table:
    """The ``pending`` rows the checkpoint has labels for, with those labels: the structure id
    covers atoms, positions, charge and multiplicity only, so a checkpointed row of the same
    geometry written for another purpose gives its labels, not its other columns."""
    done = checkpoint.filter(pc.is_in(checkpoint.column("structure_id"),
                                      value_set=pending.column("structure_id")))
    rows = pending.filter(pc.is_in(pending.column("structure_id"),
                                   value_set=done.column("structure_id")))
    where = {sid: i for i, sid in enumerate(_ids(done))}
    labels = done.take(pa.array([where[sid] for sid in _ids(rows)], type=pa.int64()))
    for name in LABEL_COLUMNS:
        index = rows.schema.get_field_index(name)
        rows = rows.set_column(index, rows.schema.field(index), labels.column(name))
    return rows


def label_table(table: pa.Table, *, labeler_config: LabelerConfig, config: LabelConfig,
                executor: Executor | None = None) -> LabelReport:
    """Label all pending rows of ``table`` (see module docstring), in chunks over the
    ``executor``'s workers (default: in this process). Returns the full table (all rows,
    input order) with labels filled in.
    """
    executor = executor or Executor.local()
    is_pending = pc.equal(table.column("label_status"), "pending")
    pending = table.filter(is_pending)
    ckpt = checkpoint_dir(config, labeler_config)
    ckpt.mkdir(parents=True, exist_ok=True)
    resumed = _resume(pending, load_checkpoint(ckpt))
    todo_table = pending.filter(pc.invert(pc.is_in(pending.column("structure_id"),
                                                   value_set=resumed.column("structure_id"))))
    todo = structures.from_table(todo_table)
    check_cost(f"labelling {len(todo)} structures", labeler_config,
               [(n, atoms) for atoms, n in Counter(len(s.numbers) for s in todo).items()],
               max_hours=config.max_projected_hours)
    size = chunk_size(len(todo), executor.workers(), config.chunk_size)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    log.info("label: %d pending, %d from checkpoint %s, %d in %d chunks", pending.num_rows,
             resumed.num_rows, ckpt, len(todo), len(chunks))
    labelled = [resumed]
    spent = 0.0
    start = time.perf_counter()
    with make_progress() as bar:
        task = bar.add_task("label", total=pending.num_rows, completed=resumed.num_rows)
        for result in _run_chunks(chunks, labeler_config, config, executor):
            _write_chunk(ckpt, result.table)
            labelled.append(result.table)
            spent += result.seconds
            bar.advance(task, result.table.num_rows)
    wall = time.perf_counter() - start
    new = pa.concat_tables(labelled)
    merged = pa.concat_tables([table.filter(pc.invert(is_pending)), new])
    position = {sid: i for i, sid in enumerate(_ids(merged))}
    merged = merged.take(pa.array([position[sid] for sid in _ids(table)],
                                   type=pa.int64()))  # input order
    out = structures.validate_table(merged, where="<labelled>")
    failed = pc.equal(new.column("label_status"), "failed")
    n_failed = pc.sum(failed).as_py() or 0
    retried = pc.and_(pc.equal(new.column("label_status"), "ok"),
                      pc.greater(new.column("label_attempts"), 1))
    errors = [e or "" for e in new.filter(failed).column("label_error").to_pylist()]
    causes = {"timeout": sum("timeout:" in e for e in errors),
              "killed_worker": sum("killed its Dask worker" in e for e in errors)}
    causes["other"] = n_failed - sum(causes.values())
    report = LabelReport(out, pending.num_rows, resumed.num_rows, len(todo), n_failed,
                         pc.sum(retried).as_py() or 0, ckpt, spent, wall, causes)
    if pending.num_rows and n_failed / pending.num_rows > config.max_failure_ratio:
        worst = new.filter(failed).slice(0, 1).to_pylist()[0]
        raise StageFailed(
            f"label: {n_failed} of {pending.num_rows} single points failed "
            f"(> label.max_failure_ratio {config.max_failure_ratio}; "
            f"{causes['timeout']} timed out, {causes['killed_worker']} killed their worker, "
            f"{causes['other']} other); first: molecule "
            f"'{worst['molecule']}' structure {worst['structure_id']}: {worst['label_error']}")
    return report


#: how many times Dask may give up (KilledWorker) on a structure submitted alone before it is
#: recorded as failed; more than once, since a death counts against queued tasks too
SOLO_TRIES = 2


def _run_chunks(chunks, labeler_config: LabelerConfig, config: LabelConfig,
                executor: Executor):
    """Yield a :class:`ChunkResult` per chunk, in completion order (module docstring: a chunk
    that keeps killing its worker is split; a single structure that does is recorded failed)."""
    from distributed.scheduler import KilledWorker

    retry, timeout_s = config.retry_failed, config.timeout_s

    def submit(chunk):
        return executor.submit(label_chunk, chunk, labeler_config, retry, timeout_s)

    rows = {}
    futures = []
    for chunk in chunks:
        futures.append(submit(chunk))
        rows[futures[-1].key] = chunk
    pending = executor.as_completed(futures)
    alone: dict[str, int] = {}  # structure id -> times Dask gave up on it as a task of its own
    # structures of a chunk that killed its workers, labelled one at a time: Dask counts a
    # death against every task the dying worker held, so two of them in flight at once would
    # let the one that crashes its worker take the innocent one down with it
    quarantine: list[Structure] = []
    in_quarantine: set[str] = set()  # keys of the quarantined task in flight (0 or 1)

    def release() -> None:
        if quarantine and not in_quarantine:
            structure = quarantine.pop(0)
            f = submit([structure])
            rows[f.key] = [structure]
            in_quarantine.add(f.key)
            pending.add(f)

    for future in pending:
        chunk = rows.pop(future.key)
        in_quarantine.discard(future.key)
        try:
            result = future.result()
        except KilledWorker as exc:
            # a chunk is split into single structures, and a single structure is recorded as
            # failed only once Dask has given up on it SOLO_TRIES times as a task of its own
            if len(chunk) == 1:
                sid = chunk[0].structure_id
                alone[sid] = alone.get(sid, 0) + 1
            if len(chunk) > 1 or alone[sid] < SOLO_TRIES:
                if len(chunk) > 1:
                    log.warning("label: a chunk of %d structures killed its workers (%s); "
                                "labelling them one at a time", len(chunk), exc)
                quarantine.extend(chunk)
                release()
                continue
            log.warning("label: structure %s killed its workers %d times; recorded as failed",
                        sid, alone[sid])
            result = ChunkResult(structures.to_table(
                [killed_worker_row(chunk[0], labeler_config, str(exc))]), 0.0)
        finally:
            future.release()
            release()
        if result.hung_worker is not None:
            _restart(executor, result.hung_worker)
        yield result


def _restart(executor: Executor, address: str) -> None:
    """Restart a worker left with an abandoned (hung) single point, if a nanny runs it."""
    if executor.restart_worker(address):
        log.warning("label: restarted worker %s (a timed-out single point kept running)",
                    address)
    else:  # no nanny, or already gone: the thread dies with its process
        log.warning("label: could not restart worker %s; its timed-out single point may "
                    "keep a core busy", address)


def clear_checkpoint(directory: Path) -> None:
    """Remove a checkpoint once its labels are safely in the stage's output."""
    shutil.rmtree(directory, ignore_errors=True)
