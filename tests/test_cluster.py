"""The compute layer on a real Dask cluster: a scheduler and two workers started as separate
processes on 127.0.0.1, one offering the resource GPU=1. GPU-annotated work (committee
training, the MD of acquire, test-set and ir) runs only there; single points go anywhere; a
worker killed while labelling has its tasks re-run on the other and every structure ends
labelled exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import write_evaluation
from palirs_data import structures
from palirs_data.compute import Executor, dask_client, gpu_resources, gpu_workers, worker_name
from palirs_data.config import ComputeConfig, IrConfig, LabelConfig, LabelerConfig
from palirs_data.errors import PalirsInputError
from palirs_data.labeling import label_table
from palirs_data.trajectory import TrajectoryStore
from test_labeling import _water_table

TESTS = Path(__file__).parent


def _start(cmd, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    """(address, {name: process}) of a scheduler, 'gpu-worker' (GPU=1, with a nanny) and
    'cpu-worker' (no nanny: killing its process removes the worker)."""
    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = {"scheduler": _start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(sched_file)],
                                 tmp_path / "scheduler.log")}
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        common = [dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                  "--no-dashboard"]
        procs["gpu-worker"] = _start([*common, "--name", "gpu-worker", "--resources", "GPU=1"],
                                     tmp_path / "gpu-worker.log")
        procs["cpu-worker"] = _start([*common, "--name", "cpu-worker", "--no-nanny"],
                                     tmp_path / "cpu-worker.log")
        yield address, procs
    finally:
        for p in reversed(list(procs.values())):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


@pytest.mark.slow  # end to end on a two-process cluster (47-62 s): CI runs it with -m slow
def test_gpu_work_lands_on_the_gpu_worker_and_a_killed_worker_loses_nothing(
        cluster, tmp_path, tiny_committee, tiny_dipole_model, methanol_data):
    from palirs_data.ir import ml_ir

    address, procs = cluster
    config = ComputeConfig(scheduler_address=address)
    with dask_client(config) as client:
        client.wait_for_workers(2, timeout=60)
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        assert sorted(names.values()) == ["cpu-worker", "gpu-worker"]
        assert [names[a] for a in gpu_workers(client)] == ["gpu-worker"]
        assert gpu_resources(client, config) == {"GPU": 1}

        # annotated tasks only on the GPU worker; plain ones anywhere (both get some)
        gpu = client.gather([Executor(client, config).submit(worker_name, gpu=True)
                             for _ in range(8)])
        assert set(gpu) == {"gpu-worker"}
        plain = client.gather([Executor(client, config).submit(_slow_name) for _ in range(16)])
        assert set(plain) == {"gpu-worker", "cpu-worker"}

        # the ir stage's committee MD: one GPU task, trajectories in the shared store
        store = TrajectoryStore(tmp_path / "ir.zarr")
        ir = IrConfig(trajectories=2, thermalise_fs=5.0, produce_fs=40.0,
                      max_correlation_fs=20.0)
        committee_dir = tiny_committee["paths"][0].parent
        result = ml_ir(committee_dir, tiny_dipole_model["report"].model,
                       methanol_data["result"].equilibrium, ir, store,
                       executor=Executor(client, config))
        assert result.metrics["md_worker"] == "gpu-worker"
        assert result.metrics["md_device"] == "cpu" or result.metrics["md_device"].startswith(
            "cuda:")
        assert sorted(TrajectoryStore(tmp_path / "ir.zarr", mode="r").keys()) == [
            "methanol/300K/0", "methanol/300K/1"]
        assert set(result.spectra.column("n_runs").to_pylist()) == {2}

        # training: every member is a GPU task
        from palirs_data.committee import Committee
        from palirs_data.training import train_committee
        from palirs_data.config import CommitteeConfig

        from conftest import TINY_MODEL

        trained = train_committee(
            methanol_data["labelled"], e0s=methanol_data["e0s"],
            config=CommitteeConfig(seeds=[0, 1], model=TINY_MODEL,
                                   training={"max_num_epochs": 2, "threads": 1}),
            out_dir=tmp_path / "committee", work_dir=tmp_path / "train-work",
            executor=Executor(client, config))
        assert {m.worker for m in trained.members} == {"gpu-worker"}
        assert len(Committee.load([m.model for m in trained.members]).models) == 2

        # one acquisition step: its MD on the GPU worker, its single points anywhere
        import shutil

        from palirs_data.acquisition import acquire
        from palirs_data.config import AcquireConfig, ActiveLearningConfig

        previous = tmp_path / "iter0"
        (previous / "committee").mkdir(parents=True)
        for p in tiny_committee["paths"]:
            shutil.copy(p, previous / "committee" / Path(p).name)
        structures.write_table(methanol_data["labelled"], previous / "train.parquet")
        write_evaluation(previous, 50.0)
        step = acquire(iteration=1, previous_dir=previous,
                       equilibrium=methanol_data["result"].equilibrium,
                       config=ActiveLearningConfig(acquire=AcquireConfig(
                           temperatures_K=[300.0], duration_fs=10.0, per_temperature=2,
                           min_spacing_fs=1.0, max_force_rel_dev=1e9)),
                       labeler_config=LabelerConfig(),
                       label_config=LabelConfig(checkpoint_dir=tmp_path / "acq-ckpt"),
                       work_dir=tmp_path / "acq-work", executor=Executor(client, config))
        assert step.metrics["md_worker"] == "gpu-worker"
        assert step.metrics["n_labelled"] == 2 and step.metrics["n_failed"] == 0
        assert TrajectoryStore(step.store, mode="r")["methanol/300K/0"].n_frames == 11

        # the test set's MD too
        from palirs_data.evaluation import build_test_set

        test = build_test_set(tiny_committee["paths"], methanol_data["result"].equilibrium,
                              species=["H", "C", "N", "O"], temperature_K=300.0,
                              duration_fs=20.0, timestep_fs=0.5, friction_fs=0.01,
                              n_candidates=20, n_clusters=2, per_cluster=2, seed=0,
                              executor=Executor(client, config))
        assert test.md_worker == "gpu-worker" and test.table.num_rows == 4

        # label through both workers; SIGKILL the CPU worker while it holds a task
        slow = LabelerConfig(method="ase", ase={"calculator": "slow_calc.SlowTBLite",
                                                "kwargs": {"delay_s": 0.15, "verbosity": 0}})
        table = _water_table(32)
        ckpt = tmp_path / "ckpt"
        killed = threading.Event()

        def kill_when_busy():
            cpu = next(a for a, n in names.items() if n == "cpu-worker")
            deadline = time.time() + 120
            while time.time() < deadline:
                done = list(ckpt.glob("*/chunk-*.parquet"))
                if done and client.processing().get(cpu):
                    os.kill(procs["cpu-worker"].pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        report = label_table(table, labeler_config=slow,
                             config=LabelConfig(chunk_size=2, checkpoint_dir=ckpt),
                             executor=Executor(client))
        killer.join()
        assert killed.is_set(), "the CPU worker was never caught holding a label task"
        assert procs["cpu-worker"].wait(timeout=10) == -signal.SIGKILL
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == [
            "gpu-worker"]

    # every structure labelled exactly once, in input order, none failed
    assert report.n_computed == 32 and report.n_failed == 0
    out = report.table
    assert out.column("structure_id").to_pylist() == table.column("structure_id").to_pylist()
    assert set(out.column("label_status").to_pylist()) == {"ok"}
    chunk_ids = []
    for path in (ckpt).glob("*/chunk-*.parquet"):
        chunk_ids += structures.read_table(path).column("structure_id").to_pylist()
    assert sorted(chunk_ids) == sorted(table.column("structure_id").to_pylist())
    assert pc.all(pc.is_finite(out.column("energy_eV"))).as_py()
    direct = label_table(table.slice(0, 4), labeler_config=LabelerConfig(),
                         config=LabelConfig(checkpoint_dir=tmp_path / "direct"))
    np.testing.assert_allclose(out.column("energy_eV").to_numpy()[:4],
                               direct.table.column("energy_eV").to_numpy(), atol=1e-8)


def _slow_name():
    time.sleep(0.2)
    return worker_name()


def _torch_threads():
    import torch

    from palirs_data.compute import device

    if device() == "cpu":
        return worker_name(), torch.get_num_threads()
    return worker_name(), "cuda"


def test_gpu_annotation_policy_without_gpu_workers():
    """No worker offers a GPU: ``auto`` runs GPU work unannotated (on CPU) instead of waiting
    forever; ``required`` refuses at once; a local GPU worker gets the annotated work."""
    none = ComputeConfig(n_workers=1, local_gpu_workers=0)
    with dask_client(none) as client:
        assert gpu_workers(client) == []
        assert gpu_resources(client, none) is None
        assert client.submit(worker_name, pure=False).result() is not None
    with pytest.raises(PalirsInputError, match="compute.gpu is 'required'"):
        with dask_client(none.model_copy(update={"gpu": "required"})):
            pass
    config = ComputeConfig(n_workers=2, local_gpu_workers=1, gpu_worker_threads=2)
    with dask_client(config) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        (gpu,) = gpu_workers(client)
        ran = client.gather([Executor(client, config).submit(_torch_threads, gpu=True)
                             for _ in range(4)])
        # GPU work only on the GPU slot, with its own thread count (no GPU here: CPU threads)
        assert set(ran) == {(client.scheduler_info()["workers"][gpu]["name"], 2)}
        plain = client.gather([Executor(client, config).submit(_torch_threads)
                               for _ in range(8)])
        assert {t for name, t in plain if name != "gpu-0"} == {1}
        # the policy: with a GPU worker GPU work is annotated, with gpu 'never' it is not and
        # runs anywhere (both workers)
        assert gpu_resources(client, config) == {"GPU": 1}
        never = config.model_copy(update={"gpu": "never"})
        assert gpu_resources(client, never) is None
        anywhere = client.gather([Executor(client, never).submit(worker_name, gpu=True)
                                  for _ in range(16)])
        assert len(set(anywhere)) == 2


def test_jobqueue_cluster_renders_the_batch_script():
    """A SLURM GPU partition described in params.yaml: the job script dask-jobqueue would
    submit (nothing is submitted: jobs 0)."""
    pytest.importorskip("dask_jobqueue")
    from palirs_data.compute import jobqueue_cluster
    from palirs_data.config import JobqueueConfig

    config = JobqueueConfig(kind="slurm", jobs=0, cores=4, memory="8GB", queue="gpu",
                            account="chem", walltime="01:00:00",
                            job_extra_directives=["--gres=gpu:1"],
                            job_script_prologue=["module load cuda"],
                            worker_extra_args=["--resources", "GPU=1"])
    with jobqueue_cluster(config) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A chem", "#SBATCH -t 01:00:00",
                 "#SBATCH --gres=gpu:1", "module load cuda", "--resources GPU=1",
                 "--nthreads 4", "--memory-limit 7.45GiB"):
        assert line in script, (line, script)


def test_replicas_are_divided_into_balanced_deterministic_parts():
    from palirs_data.md_parts import split_balanced

    assert split_balanced([6] * 12, 2) == [list(range(0, 12, 2)), list(range(1, 12, 2))]
    parts = split_balanced([12, 3, 3, 3, 3, 6, 6], 2)
    sizes = [12, 3, 3, 3, 3, 6, 6]
    totals = sorted(sum(sizes[i] for i in p) for p in parts)
    assert totals == [18, 18] and sorted(i for p in parts for i in p) == list(range(7))
    assert split_balanced([5, 5], 8) == [[0], [1]]  # never an empty part
    assert split_balanced([5, 5, 5], 1) == [[0, 1, 2]]


def _visible_devices(dask_worker):
    return dask_worker.name, os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("parent", [None, "2,5,7"])
def test_each_local_gpu_worker_sees_its_own_device(parent, monkeypatch):
    """Local GPU workers are pinned one device each (CUDA_VISIBLE_DEVICES in the worker's
    environment): 0, 1, ... or, inside an allocation that set the variable, its devices in
    order. More workers than devices is refused in one line. (Fake devices: the variable is
    what torch reads; no GPU is needed to see it.)"""
    from palirs_data.compute import local_gpus

    if parent is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", parent)
    config = ComputeConfig(n_workers=3, local_gpu_workers=2, gpu_worker_threads=1)
    with dask_client(config) as client:
        seen = {str(name): v for name, v in client.run(_visible_devices).values()}
    expected = ["0", "1"] if parent is None else ["2", "5"]
    assert {k: v for k, v in seen.items() if k.startswith("gpu-")} == {
        "gpu-0": expected[0], "gpu-1": expected[1]}
    assert [v for k, v in seen.items() if not k.startswith("gpu-")] == [parent]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(PalirsInputError, match="2 GPU workers but CUDA_VISIBLE_DEVICES='3'"):
        local_gpus(2)
