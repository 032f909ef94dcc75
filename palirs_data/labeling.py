"""Labelling a structure table: fan-out, checkpoints, retries and failure accounting.

:func:`label_table` labels every ``pending`` row of a structure table with the configured label
source. Single points are grouped in chunks (``label.chunk_size``); each chunk is one Dask task,
or runs in-process when no client is given. Each finished chunk is checkpointed at once as a
small Parquet table in a directory keyed by the label settings, so a killed run, re-run with
the same settings, labels only what is missing and never labels a structure twice.

A single point that fails (exception, SCF not converged, non-finite result) is retried once
with the label source's safer settings (when it has them) and otherwise recorded as ``failed``
with its error; it never stops the other structures. If the failed fraction exceeds
``label.max_failure_ratio`` the result is refused with a summary (:class:`StageFailed`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from palirs_data import structures
from palirs_data.config import LabelConfig, LabelerConfig
from palirs_data.errors import StageFailed
from palirs_data.labelers import Labeler, make_labeler
from palirs_data.progress import make_progress
from palirs_data.structures import Structure

log = logging.getLogger(__name__)


def label_one(labeler: Labeler, s: Structure, *, retry: bool) -> Structure:
    """Label one structure; a failure is recorded in the returned row, never raised."""
    attempts = [False, True] if retry and labeler.has_safer() else [False]
    errors: list[str] = []
    for safer in attempts:
        settings = structures.settings_json(labeler.settings(safer=safer))
        try:
            lab = labeler.label(s.to_atoms(), charge_e=s.charge_e, multiplicity=s.multiplicity,
                                safer=safer)
        except Exception as exc:  # any failure of the QM code is data, not a crash
            first = str(exc).splitlines()[0] if str(exc) else ""
            errors.append(f"{'safer' if safer else 'default'} settings: "
                          f"{type(exc).__name__}: {first}"[:500])
            continue
        return replace(s, label_status="ok", label_method=labeler.method,
                       label_settings=settings, label_error=None,
                       label_attempts=s.label_attempts + len(errors) + 1,
                       label_seconds=lab.seconds, energy_eV=lab.energy_eV,
                       forces_eVA=lab.forces_eVA, dipole_eA=lab.dipole_eA)
    return replace(s, label_status="failed", label_method=labeler.method,
                   label_settings=settings, label_error="; ".join(errors),
                   label_attempts=s.label_attempts + len(errors), label_seconds=None,
                   energy_eV=None, forces_eVA=None, dipole_eA=None)


def label_chunk(rows: list[Structure], config: LabelerConfig, retry: bool) -> list[Structure]:
    """Label a chunk of structures (the unit of work sent to a Dask worker)."""
    labeler = make_labeler(config)
    return [label_one(labeler, s, retry=retry) for s in rows]


def checkpoint_dir(config: LabelConfig, labeler_config: LabelerConfig) -> Path:
    """Checkpoint directory, keyed by the label source's settings (so settings changes never
    reuse stale labels)."""
    labeler = make_labeler(labeler_config)
    key = structures.settings_json({"method": labeler.method,
                                    "settings": labeler.settings(),
                                    "safer": labeler.settings(safer=True)})
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return config.checkpoint_dir / f"label-{labeler.method}-{digest}"


def load_checkpoint(directory: Path) -> dict[str, Structure]:
    """Labelled rows already checkpointed in ``directory``, by structure id."""
    done: dict[str, Structure] = {}
    for path in sorted(directory.glob("chunk-*.parquet")):
        for s in structures.from_table(structures.read_table(path)):
            done[s.structure_id] = s
    return done


def _write_chunk(directory: Path, rows: list[Structure]) -> None:
    digest = hashlib.sha256("".join(s.structure_id for s in rows).encode()).hexdigest()[:16]
    structures.write_table(structures.to_table(rows), directory / f"chunk-{digest}.parquet")


@dataclass
class LabelReport:
    table: pa.Table
    n_pending: int  # rows that needed a label
    n_resumed: int  # taken from the checkpoint
    n_computed: int  # labelled in this run
    n_failed: int
    n_retried_ok: int  # succeeded only with safer settings
    checkpoint: Path

    def summary(self) -> str:
        return (f"{self.n_pending} to label: {self.n_resumed} from checkpoint, "
                f"{self.n_computed} computed, {self.n_failed} failed "
                f"({self.n_retried_ok} needed the safer retry)")


def label_table(table: pa.Table, *, labeler_config: LabelerConfig, config: LabelConfig,
                client=None) -> LabelReport:
    """Label all pending rows of ``table`` (see module docstring).

    ``client``: a ``distributed.Client`` to fan out over, or None to run in this process.
    Returns the full table (all rows, input order) with labels filled in.
    """
    rows = structures.from_table(table)
    pending = [s for s in rows if s.label_status == "pending"]
    ckpt = checkpoint_dir(config, labeler_config)
    ckpt.mkdir(parents=True, exist_ok=True)
    wanted = {s.structure_id for s in pending}
    done = {k: v for k, v in load_checkpoint(ckpt).items() if k in wanted}
    n_resumed = len(done)
    todo = [s for s in pending if s.structure_id not in done]
    chunks = [todo[i:i + config.chunk_size] for i in range(0, len(todo), config.chunk_size)]
    log.info("label: %d pending, %d from checkpoint %s, %d in %d chunks", len(pending),
             n_resumed, ckpt, len(todo), len(chunks))
    with make_progress() as bar:
        task = bar.add_task("label", total=len(pending), completed=n_resumed)
        for result in _run_chunks(chunks, labeler_config, config.retry_failed, client):
            _write_chunk(ckpt, result)
            done.update((s.structure_id, s) for s in result)
            bar.advance(task, len(result))
    out = [done.get(s.structure_id, s) for s in rows]
    labelled = [done[sid] for sid in wanted]
    n_failed = sum(s.label_status == "failed" for s in labelled)
    n_retried = sum(s.label_status == "ok" and s.label_attempts > 1 for s in labelled)
    report = LabelReport(structures.to_table(out), len(pending), n_resumed, len(todo),
                         n_failed, n_retried, ckpt)
    if pending and n_failed / len(pending) > config.max_failure_ratio:
        worst = next(s for s in labelled if s.label_status == "failed")
        raise StageFailed(
            f"label: {n_failed} of {len(pending)} single points failed "
            f"(> label.max_failure_ratio {config.max_failure_ratio}); first: molecule "
            f"'{worst.molecule}' structure {worst.structure_id}: {worst.label_error}")
    return report


def _run_chunks(chunks, labeler_config, retry, client):
    if client is None:
        for chunk in chunks:
            yield label_chunk(chunk, labeler_config, retry)
        return
    from distributed import as_completed

    futures = [client.submit(label_chunk, chunk, labeler_config, retry, pure=False)
               for chunk in chunks]
    for future in as_completed(futures):
        yield future.result()
        future.release()


def clear_checkpoint(directory: Path) -> None:
    """Remove a checkpoint once its labels are safely in the stage's output."""
    shutil.rmtree(directory, ignore_errors=True)
