"""Labelling a table: fan-out, checkpoints, resume after SIGKILL, failure accounting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from conftest import run_stage, write_params
from palirs_data.compute import Executor
from palirs_data import structures
from palirs_data.config import ComputeConfig, LabelConfig, LabelerConfig
from palirs_data.errors import StageFailed
from palirs_data.labelers import make_labeler
from palirs_data.labeling import checkpoint_dir, label_table, load_checkpoint
from palirs_data.structures import Structure


def _water_table(n: int, *, broken: int = 0):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        if i < broken:
            atoms.positions[1] = atoms.positions[0]
        rows.append(Structure.from_atoms(atoms, molecule="water", source="normal_modes"))
    return structures.to_table(rows)


def test_in_process_labels_match_direct_single_points(tmp_path):
    table = _water_table(7)
    report = label_table(table, labeler_config=LabelerConfig(),
                         config=LabelConfig(chunk_size=3, checkpoint_dir=tmp_path))
    assert (report.n_pending, report.n_computed, report.n_failed) == (7, 7, 0)
    labeler = make_labeler(LabelerConfig())
    for s in structures.from_table(report.table):
        ref = labeler.label(s.to_atoms())
        assert s.label_status == "ok" and s.label_method == "xtb"
        assert s.energy_eV == pytest.approx(ref.energy_eV, abs=1e-9)
        assert json.loads(s.label_settings)["method"] == "GFN2-xTB"
    # the input order is kept
    assert report.table.column("structure_id").equals(table.column("structure_id"))


def test_checkpoint_is_reused_and_only_missing_structures_are_labelled(tmp_path):
    table = _water_table(6)
    config = LabelConfig(chunk_size=2, checkpoint_dir=tmp_path)
    first = label_table(table.slice(0, 4), labeler_config=LabelerConfig(), config=config)
    assert first.n_computed == 4
    second = label_table(table, labeler_config=LabelerConfig(), config=config)
    assert (second.n_resumed, second.n_computed) == (4, 2)
    # other settings never reuse these labels
    other = LabelerConfig(xtb={"accuracy": 0.5})
    assert checkpoint_dir(config, other) != checkpoint_dir(config, LabelerConfig())


def test_a_resumed_row_takes_only_its_labels_from_the_checkpoint(tmp_path):
    """The structure id covers the geometry only: a checkpointed row of the same geometry
    written for another purpose (here: another molecule name, source and iteration) gives
    its energy, forces and dipole, never its other columns."""
    import pyarrow as pa

    table = _water_table(3)
    config = LabelConfig(chunk_size=3, checkpoint_dir=tmp_path)
    first = label_table(table, labeler_config=LabelerConfig(), config=config)
    names = table.column_names
    again = table.set_column(names.index("molecule"), "molecule", pa.array(["h2o"] * 3))
    again = again.set_column(names.index("source"), "source", pa.array(["active_learning"] * 3))
    again = again.set_column(names.index("iteration"), "iteration",
                             pa.array([2] * 3, pa.int32()))
    second = label_table(again, labeler_config=LabelerConfig(), config=config)
    assert (second.n_resumed, second.n_computed) == (3, 0)
    assert second.table.column("molecule").to_pylist() == ["h2o"] * 3
    assert second.table.column("source").to_pylist() == ["active_learning"] * 3
    assert second.table.column("iteration").to_pylist() == [2] * 3
    assert second.table.column("energy_eV").equals(first.table.column("energy_eV"))
    assert second.table.column("forces_eVA").equals(first.table.column("forces_eVA"))


def test_failures_are_recorded_and_the_ratio_enforced(tmp_path):
    table = _water_table(4, broken=1)
    lenient = LabelConfig(chunk_size=2, checkpoint_dir=tmp_path / "a", max_failure_ratio=0.5)
    report = label_table(table, labeler_config=LabelerConfig(), config=lenient)
    rows = structures.from_table(report.table)
    assert report.n_failed == 1 and rows[0].label_status == "failed"
    assert "Too close" in rows[0].label_error
    assert all(r.label_status == "ok" for r in rows[1:])
    strict = LabelConfig(chunk_size=2, checkpoint_dir=tmp_path / "b", max_failure_ratio=0.1)
    with pytest.raises(StageFailed, match="1 of 4 single points failed"):
        label_table(table, labeler_config=LabelerConfig(), config=strict)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_real_scheduler_and_worker_processes_label_a_table(tmp_path):
    """A Dask scheduler and a worker started as separate processes on 127.0.0.1."""
    from palirs_data.compute import dask_client

    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(sched_file)],
                    tmp_path / "scheduler.log")]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(_start([dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                             "--no-dashboard", "--name", "outside-worker"],
                            tmp_path / "worker.log"))
        table = _water_table(9)
        with dask_client(ComputeConfig(scheduler_address=address)) as client:
            client.wait_for_workers(1, timeout=60)
            workers = client.scheduler_info()["workers"]
            assert [w["name"] for w in workers.values()] == ["outside-worker"]
            worker_pids = set(client.run(os.getpid).values())
            assert os.getpid() not in worker_pids  # the work ran in another process
            report = label_table(table, labeler_config=LabelerConfig(),
                                 config=LabelConfig(chunk_size=4, checkpoint_dir=tmp_path),
                                 executor=Executor(client))
        assert report.n_computed == 9 and report.n_failed == 0
        serial = label_table(table, labeler_config=LabelerConfig(),
                             config=LabelConfig(checkpoint_dir=tmp_path / "serial"))
        np.testing.assert_allclose(report.table.column("energy_eV").to_numpy(),
                                   serial.table.column("energy_eV").to_numpy(), atol=1e-9)
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


def test_label_stage_killed_and_rerun_resumes_without_relabelling(tmp_path):
    """SIGKILL the label stage mid-run; the re-run labels only what is missing."""
    slow = {"method": "ase", "ase": {"calculator": "slow_calc.SlowTBLite",
                                     "kwargs": {"delay_s": 0.04, "verbosity": 0}}}
    params = write_params(tmp_path / "params.yaml", molecules={"names": ["methanol"]},
                          labeler=slow, label={"chunk_size": 4},
                          compute={"n_workers": 1})
    out = run_stage("sample", "--params", str(params), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    samples = tmp_path / "data/sample/normal_modes.parquet"
    output = tmp_path / "data/campaign/iter0/train.parquet"
    ckpt = tmp_path / "data/.checkpoints"
    env = dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}")
    stage = Path(__file__).resolve().parents[1] / "stages/label.py"
    proc = subprocess.Popen([sys.executable, str(stage), "--params", str(params)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while len(list(ckpt.glob("*/chunk-*.parquet"))) < 5 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its Dask workers
    proc.wait()
    assert not output.exists()  # nothing half-written
    (directory,) = list(ckpt.iterdir())
    done = load_checkpoint(directory).num_rows
    assert 20 <= done < 120

    rerun = run_stage("label", "--params", str(params), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} from checkpoint, {120 - done} computed, 0 failed" in rerun.stdout
    table = structures.read_table(output)
    assert table.num_rows == 120
    assert set(table.column("label_status").to_pylist()) == {"ok"}
    # the resumed labels are the labels: equal to a fresh, uninterrupted labelling
    fresh = label_table(structures.read_table(samples), labeler_config=LabelerConfig(),
                        config=LabelConfig(checkpoint_dir=tmp_path / "fresh"))
    np.testing.assert_allclose(table.column("energy_eV").to_numpy(),
                               fresh.table.column("energy_eV").to_numpy(), atol=1e-8)
    assert not directory.exists()  # the checkpoint is cleared once the output is written


def test_chunks_balance_the_workers():
    from palirs_data.labeling import chunk_size

    assert chunk_size(120, 2, 50) == 15  # the demo: 8 tasks for 2 workers
    assert chunk_size(100_000, 2, 50) == 50
    assert chunk_size(3, 8, 50) == 1


def _faulty(table, **faults) -> tuple[LabelerConfig, list[float]]:
    """A label source that crashes / hangs / returns NaN on the rows named by index in
    ``faults``; its safer retry clears the NaN fault only."""
    x0 = [round(float(p[0][0]), 6) for p in table.column("positions_A").to_pylist()]
    kwargs = {"verbosity": 0, **{k: [x0[i] for i in v] for k, v in faults.items()}}
    safer = {"nan_at": []} if "nan_at" in faults else None
    return LabelerConfig(method="ase", ase={"calculator": "faulty_calc.FaultyTBLite",
                                            "kwargs": kwargs, "safer_kwargs": safer}), x0


def _abandoned_threads() -> int:
    import threading

    from palirs_data.watchdog import ABANDONED

    return sum(t.name == ABANDONED and t.is_alive() for t in threading.enumerate())


def test_a_hanging_single_point_times_out_and_is_recorded(tmp_path):
    """In process: the hung single point is abandoned after label.timeout_s, retried once
    (with safer settings, which hang too) and recorded as failed; the others are labelled."""
    table = _water_table(4)
    labeler, _ = _faulty(table, hang_at=[1], nan_at=[2])
    start = time.perf_counter()
    report = label_table(table, labeler_config=labeler, config=LabelConfig(
        chunk_size=4, checkpoint_dir=tmp_path, timeout_s=1.5, max_failure_ratio=0.5))
    assert time.perf_counter() - start < 30
    rows = structures.from_table(report.table)
    assert [r.label_status for r in rows] == ["ok", "failed", "ok", "ok"]
    assert rows[1].label_error.count("timeout:") == 2 and rows[1].label_attempts == 2
    assert rows[2].label_attempts == 2  # NaN first, then fine with the safer settings
    assert report.n_retried_ok == 1
    assert report.failure_causes == {"timeout": 1, "killed_worker": 0, "other": 0}


def test_crash_hang_and_nan_on_a_local_cluster_are_recorded_retried_and_reported(tmp_path,
                                                                                 caplog):
    """A label source that kills its worker process on one structure, hangs on another and
    returns NaN on a third, on a local Dask cluster (2 worker processes under nannies): every
    structure ends either labelled or failed with its cause, the crash costs only its own
    structure, the hung worker is restarted (or was already gone, if the crashing structure
    landed on it) so no abandoned thread survives, and a failure ratio above the threshold
    fails with a summary naming the causes."""
    import dask

    from palirs_data.compute import dask_client

    table = _water_table(8)
    labeler, _ = _faulty(table, crash_at=[2], hang_at=[5], nan_at=[6])
    config = LabelConfig(chunk_size=4, checkpoint_dir=tmp_path / "a", timeout_s=2.0,
                         max_failure_ratio=0.3)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with dask_client(ComputeConfig(n_workers=2)) as client:
            pids = set(client.run(os.getpid).values())
            with caplog.at_level("WARNING", logger="palirs_data.labeling"):
                report = label_table(table, labeler_config=labeler, config=config,
                                     executor=Executor(client))
            assert "timed-out single point" in caplog.text  # restarted, or found gone
            # crashed and hung workers were replaced by new processes: two workers again,
            # and no abandoned single point is left running on any of them
            client.wait_for_workers(2, timeout=60)
            assert set(client.run(os.getpid).values()) != pids
            assert sum(client.run(_abandoned_threads).values()) == 0
            strict = LabelConfig(chunk_size=4, checkpoint_dir=tmp_path / "b", timeout_s=2.0,
                                 max_failure_ratio=0.2)
            with pytest.raises(StageFailed, match=r"2 of 8 single points failed .*1 timed out, "
                                                  r"1 killed their worker, 0 other"):
                label_table(table, labeler_config=labeler, config=strict, executor=Executor(client))
    rows = structures.from_table(report.table)
    status = [r.label_status for r in rows]
    assert status == ["ok", "ok", "failed", "ok", "ok", "failed", "ok", "ok"]
    assert "killed its Dask worker" in rows[2].label_error
    assert "timeout:" in rows[5].label_error
    assert rows[6].label_attempts == 2 and np.isfinite(rows[6].energy_eV)
    assert report.failure_causes == {"timeout": 1, "killed_worker": 1, "other": 0}
    # each structure exactly once, in input order
    assert report.table.column("structure_id").equals(table.column("structure_id"))
