"""The compute layer: where fan-out work (single points, later MD and training) runs.

Everything goes through a Dask distributed ``Client``. By default an in-process-managed local
cluster of worker processes (``compute.n_workers`` × ``compute.threads_per_worker``); with
``compute.scheduler_address`` or the environment variable ``PALIRS_SCHEDULER_ADDRESS`` an
existing scheduler (``dask scheduler`` + ``dask worker`` on other machines, or a job-queue
cluster's scheduler).

Dask's nanny starts workers with ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS likewise), so the
OpenMP label codes do not oversubscribe the cores the workers share.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

from palirs_data.config import ComputeConfig
from palirs_data.errors import PalirsInputError

log = logging.getLogger(__name__)

ADDRESS_ENV = "PALIRS_SCHEDULER_ADDRESS"


def scheduler_address(config: ComputeConfig) -> str | None:
    """The scheduler to connect to: the environment variable wins over ``params.yaml``."""
    return os.environ.get(ADDRESS_ENV) or config.scheduler_address


@contextlib.contextmanager
def dask_client(config: ComputeConfig, *, connect_timeout_s: float = 30.0) -> Iterator[Client]:
    """A Dask client for ``config``; the local cluster, if any, is shut down on exit."""
    address = scheduler_address(config)
    if address:
        try:
            client = Client(address, timeout=connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise PalirsInputError(
                f"compute.scheduler_address: cannot reach Dask scheduler {address} ({exc})"
            ) from None
        log.info("Dask: connected to %s (%d workers)", address,
                 len(client.scheduler_info()["workers"]))
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=config.n_workers, threads_per_worker=config.threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        log.info("Dask: local cluster, %d workers x %d threads", config.n_workers,
                 config.threads_per_worker)
        yield client
