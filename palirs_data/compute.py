"""The compute layer: where fan-out work (single points, MD runs, training) runs.

The library never chooses: it receives an :class:`Executor` and submits task functions to it.
A stage makes one (:func:`executor`) for ``params.yaml: compute``; library calls without one
(tests, notebooks) get :meth:`Executor.local`, which runs each task at once in this process.
The same task functions run either way, so the work and its results have one code path.

A stage's executor wraps a Dask distributed ``Client`` (:func:`dask_client`), chosen by
``params.yaml: compute`` in this order:

1. an existing scheduler: ``compute.scheduler_address`` or the environment variable
   ``PALIRS_SCHEDULER_ADDRESS`` (which wins; addresses are often per session). Workers are
   whatever was started against it (``dask worker ADDRESS``, by hand or as batch jobs);
2. a dask-jobqueue cluster described by ``compute.jobqueue`` (SLURM or PBS; the scheduler runs
   in this process, the workers in batch jobs; ``pip install 'palirs-data[cluster]'``);
3. a local cluster of ``compute.n_workers`` processes × ``compute.threads_per_worker``, of
   which ``compute.local_gpu_workers`` (default 0; one per GPU on a machine with GPUs) carry
   the resource ``GPU=1`` and take the GPU work one task at a time, with
   ``compute.gpu_worker_threads`` OpenMP threads (default: every core). Without them, GPU
   work runs on any worker like the rest: on 2 cores, three committee members side by side
   on one thread each train 1.36x faster than one after the other on two threads, and MD
   divided over both 1-thread workers runs 1.56x one task's replica-steps/s (benchmarks/).

GPU work (training, committee MD) is submitted with :meth:`Executor.submit` and ``gpu=True``:
it carries the Dask resource annotation ``{"GPU": 1}`` so it lands only on workers started with
that resource (``dask worker ... --resources GPU=1``), one task per GPU at a time. With
``compute.gpu: auto`` (the default) the annotation is given only when some worker offers the
resource, so a cluster without GPUs still runs everything (on CPU) instead of waiting forever;
``required`` refuses to start without a GPU worker; ``never`` drops the annotation. Single
points carry no annotation and go anywhere.

Data move between workers as task arguments and results (bytes: structures, Arrow tables,
dipole series) or as files in a location every worker sees (models, trajectory stores): the
repository directory, which on a cluster must be on a shared file system.

Dask's nanny starts workers with ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS likewise), so the
OpenMP label codes do not oversubscribe the cores the workers share. A worker that dies (killed,
out of memory, node lost) has its tasks re-run on the others by the scheduler; results are
collected and checkpointed by the process that submitted them, so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from distributed import Client, SpecCluster

from palirs_data.config import ComputeConfig, JobqueueConfig
from palirs_data.errors import PalirsInputError

log = logging.getLogger(__name__)

ADDRESS_ENV = "PALIRS_SCHEDULER_ADDRESS"
GPU = "GPU"


def scheduler_address(config: ComputeConfig) -> str | None:
    """The scheduler to connect to: the environment variable wins over ``params.yaml``."""
    return os.environ.get(ADDRESS_ENV) or config.scheduler_address


def jobqueue_cluster(config: JobqueueConfig):
    """A dask-jobqueue cluster (not yet scaled) for ``config``."""
    try:
        import dask_jobqueue
    except ImportError:
        raise PalirsInputError("compute.jobqueue: dask-jobqueue is not installed "
                               "(pip install 'palirs-data[cluster]')") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[config.kind]
    options: dict[str, Any] = dict(
        cores=config.cores, processes=config.processes, memory=config.memory,
        walltime=config.walltime, job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=list(config.job_script_prologue),
        worker_extra_args=list(config.worker_extra_args))
    for key in ("queue", "account", "local_directory", "log_directory"):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    return cls(**options)


def local_gpus(n: int) -> list[str]:
    """The devices of ``n`` local GPU workers, one each: the first ``n`` of this process's
    ``CUDA_VISIBLE_DEVICES`` when it is set (a SLURM allocation, say ``2,3``), else ``0 ...
    n-1``. Asking for more workers than the visible devices is refused in one line."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = ([d.strip() for d in visible.split(",") if d.strip()] if visible is not None
               else [str(k) for k in range(n)])
    if n > len(devices):
        raise PalirsInputError(f"compute.local_gpu_workers: {n} GPU workers but "
                               f"CUDA_VISIBLE_DEVICES={visible!r} names {len(devices)} "
                               "device(s); one GPU per worker")
    return devices[:n]


def _local_cluster(config: ComputeConfig) -> SpecCluster:
    import dask

    # no MALLOC_TRIM_THRESHOLD_ in the workers: Dask's default (65536) makes torch's large
    # allocations go to mmap/munmap every time (training ~1.3x slower); these clusters live
    # one stage long, so trimming memory buys nothing
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return _start_local_cluster(config)


def _start_local_cluster(config: ComputeConfig) -> SpecCluster:
    """A cluster of local worker processes, as ``LocalCluster`` would start them, plus the
    GPU workers (resource ``GPU: 1``, their own thread count): all declared up front in one
    ``SpecCluster`` specification (Dask's public way to mix kinds of workers)."""
    from distributed import Nanny, Scheduler

    def worker(**extra) -> dict:
        return {"cls": Nanny, "options": {"nthreads": config.threads_per_worker,
                                          "host": "127.0.0.1", "memory_limit": "auto",
                                          "dashboard": False, "dashboard_address": None,
                                          **extra}}

    workers = {k: worker() for k in range(config.n_workers - config.local_gpu_workers)}
    if config.local_gpu_workers:
        # torch and the training processes of GPU work use these threads when there is no
        # GPU: a GPU task (training, MD) has the machine's cores to itself
        threads = str(config.gpu_worker_threads or os.cpu_count() or 1)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        for k, gpu in enumerate(local_gpus(config.local_gpu_workers)):
            # each GPU worker sees one device of its own (torch's "cuda" is then that one)
            workers[f"gpu-{k}"] = worker(resources={GPU: 1},
                                         env={**env, "CUDA_VISIBLE_DEVICES": gpu})
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False,
                                               "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="palirs-local")


@contextlib.contextmanager
def dask_client(config: ComputeConfig, *, connect_timeout_s: float = 30.0) -> Iterator[Client]:
    """A Dask client for ``config`` (module docstring); a cluster it started is shut down on
    exit."""
    address = scheduler_address(config)
    if address:
        try:
            client = Client(address, timeout=connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise PalirsInputError(
                f"compute.scheduler_address: cannot reach Dask scheduler {address} ({exc})"
            ) from None
        log.info("Dask: connected to %s (%d workers, %d with a GPU)", address,
                 len(client.scheduler_info()["workers"]), len(gpu_workers(client)))
        try:
            _check_gpu(client, config)
            yield client
        finally:
            client.close()
        return
    if config.jobqueue is not None:
        with jobqueue_cluster(config.jobqueue) as cluster:
            cluster.scale(jobs=config.jobqueue.jobs)
            with Client(cluster) as client:
                log.info("Dask: %s cluster, %d jobs requested (%s)", config.jobqueue.kind,
                         config.jobqueue.jobs, cluster.scheduler_address)
                _check_gpu(client, config)
                yield client
        return
    with _local_cluster(config) as cluster, Client(cluster) as client:
        client.wait_for_workers(config.n_workers, timeout=connect_timeout_s)
        log.info("Dask: local cluster, %d workers x %d threads (%d with GPU=1)",
                 config.n_workers, config.threads_per_worker, config.local_gpu_workers)
        _check_gpu(client, config)
        yield client


@contextlib.contextmanager
def executor(config: ComputeConfig, *, connect_timeout_s: float = 30.0) -> Iterator[Executor]:
    """The stage's :class:`Executor` on the Dask client of ``config`` (:func:`dask_client`)."""
    with dask_client(config, connect_timeout_s=connect_timeout_s) as client:
        yield Executor(client, config)


class _Done:
    """A task of the local executor, run in this process when its result is first wanted
    (:meth:`result`, or its turn in :meth:`Executor.as_completed`), so that progress shown
    while iterating follows the work; the part of a Dask future's interface the library uses
    (``result``, ``done``, ``release``, ``key``)."""

    _count = 0

    def __init__(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        _Done._count += 1
        self.key = f"local-{_Done._count}"
        self._call = (fn, args, kwargs)
        self._value, self._error = None, None

    def _run(self) -> None:
        if self._call is None:
            return
        fn, args, kwargs = self._call
        self._call = None
        try:
            self._value = fn(*args, **kwargs)
        except Exception as exc:  # raised by result(), as a Dask future would
            self._error = exc

    def result(self):
        self._run()
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return True  # nothing to wait for: result() runs it

    def release(self) -> None:
        pass


class _InOrder:
    """``as_completed`` for tasks that ran in this process: submission order; ``add`` appends."""

    def __init__(self, futures) -> None:
        self._queue = list(futures)

    def add(self, future) -> None:
        self._queue.append(future)

    def __iter__(self):
        while self._queue:
            future = self._queue.pop(0)
            future._run()
            yield future


class Executor:
    """Where fan-out work runs. With a Dask ``client`` tasks go to its workers (GPU work with
    the resource annotation of :func:`gpu_resources`); without one (:meth:`local`) each task
    runs in this process when it is submitted. ``config`` is the stage's
    :class:`~palirs_data.config.ComputeConfig` (the GPU policy)."""

    def __init__(self, client: Client | None = None, config: ComputeConfig | None = None
                 ) -> None:
        self.client = client
        self.config = config or ComputeConfig()

    @classmethod
    def local(cls) -> Executor:
        return cls(None)

    @property
    def distributed(self) -> bool:
        """Whether tasks run on Dask workers (else in this process)."""
        return self.client is not None

    def workers(self) -> int:
        """How many workers take tasks (1 in this process)."""
        return len(self.client.scheduler_info()["workers"]) if self.client else 1

    def md_slots(self) -> int:
        """How many MD tasks run side by side (:func:`md_slots`; 1 in this process)."""
        return md_slots(self.client, self.config) if self.client else 1

    def submit(self, fn: Callable, *args: Any, gpu: bool = False, key: str | None = None,
               **kwargs: Any):
        """``fn(*args, **kwargs)`` as a task (never cached by key: a re-run recomputes);
        ``gpu``: GPU work (:func:`gpu_resources`). In this process it runs when its result
        is first wanted."""
        if self.client is None:
            return _Done(fn, args, kwargs)
        resources = gpu_resources(self.client, self.config) if gpu else None
        named = {"key": key} if key is not None else {}
        return self.client.submit(fn, *args, resources=resources, pure=False, **named,
                                  **kwargs)

    def as_completed(self, futures):
        """The tasks in completion order (submission order in this process); more may be
        added while iterating (``add``)."""
        if self.client is None:
            return _InOrder(futures)
        from distributed import as_completed

        return as_completed(futures)

    def restart_worker(self, address: str) -> bool:
        """Restart the worker at ``address`` if a nanny runs it; False when it could not be."""
        if self.client is None:
            return False
        try:
            self.client.restart_workers([address], timeout=120)
            return True
        except Exception:  # no nanny, or already gone
            return False


def gpu_workers(client: Client) -> list[str]:
    """Addresses of the workers that offer the resource ``GPU``."""
    workers = client.scheduler_info()["workers"]
    return sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(GPU, 0) > 0)


def _check_gpu(client: Client, config: ComputeConfig) -> None:
    if config.gpu == "required" and not gpu_workers(client):
        raise PalirsInputError("compute.gpu is 'required' but no Dask worker offers the "
                               "resource GPU (start one with: dask worker ADDRESS --resources "
                               "GPU=1)")


def gpu_resources(client: Client, config: ComputeConfig) -> dict[str, int] | None:
    """The resource annotation for GPU work on this client (module docstring)."""
    if config.gpu == "never":
        return None
    if config.gpu == "required" or gpu_workers(client):
        return {GPU: 1}
    return None


def device() -> str:
    """The torch device for GPU work on this worker: ``cuda:N`` (the current device; a local
    GPU worker sees only its own, :func:`local_gpus`) when there is one. On a CPU, torch gets
    the worker's OpenMP thread count back (``OMP_NUM_THREADS``; a label task on the same
    worker may have lowered the process's OpenMP limit)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    return "cpu"


def worker_name() -> str | None:
    """The name of the Dask worker running the current task (None outside a worker)."""
    from distributed import get_worker

    try:
        return str(get_worker().name)
    except ValueError:
        return None


def md_slots(client: Client, config: ComputeConfig) -> int:
    """How many MD tasks run side by side on ``client``: one per GPU worker when GPU work goes
    to GPU workers (:func:`gpu_resources`), else one per worker. Each task is a
    :class:`~palirs_data.dynamics.BatchedMD` batch on its worker's threads; on two 1-thread
    workers the ir runs divided in two run 1.56x the replica-steps/s of one task
    (benchmarks/ir_md_placement.py, docs/method.md "How fast the MD runs")."""
    if gpu_resources(client, config):
        return max(1, len(gpu_workers(client)))
    return max(1, len(client.scheduler_info()["workers"]))
