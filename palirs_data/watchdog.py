"""Single points with a time limit: a watchdog thread per calling thread.

A label source can hang (an SCF that never converges, a deadlock in native code). Each single
point runs on a long-lived runner thread and is waited on for at most ``label.timeout_s``
seconds (:func:`call_with_timeout`); past it, :class:`LabelTimeout` is raised and the runner is
abandoned under the name :data:`ABANDONED` (a Python thread cannot be stopped: it runs on until
the call returns or the process ends, so the labelling code restarts the Dask worker that holds
it; tests find it by that name).
"""

from __future__ import annotations

import queue
import threading


class LabelTimeout(Exception):
    """A single point gave no answer within ``label.timeout_s``."""


class _Runner:
    """One long-lived daemon thread that runs calls for one calling thread. Long-lived, so
    the label code's per-thread state (its OpenMP thread team and limit) is set up once, not
    per single point (a new thread per point made xTB labelling 5.6x slower)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="palirs-single-point",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            fn, box, done = self._calls.get()
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            done.set()

    def call(self, fn, timeout_s: float):
        box: dict = {}
        done = threading.Event()
        self._calls.put((fn, box, done))
        if not done.wait(timeout_s):
            raise LabelTimeout(f"no result within label.timeout_s = {timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]


_runners = threading.local()
#: the name a runner thread gets when it is abandoned after a timeout
ABANDONED = "palirs-abandoned-single-point"


def call_with_timeout(fn, timeout_s: float | None):
    """``fn()`` on this thread's runner thread, waited on for at most ``timeout_s`` seconds
    (None: called directly). Raises :class:`LabelTimeout` when it does not finish in time;
    the runner is then abandoned (a thread cannot be stopped: it runs on until ``fn``
    returns or its process ends) and the next call starts a new one."""
    if timeout_s is None:
        return fn()
    runner = getattr(_runners, "runner", None)
    if runner is None:
        runner = _runners.runner = _Runner()
    try:
        return runner.call(fn, timeout_s)
    except LabelTimeout:
        runner.thread.name = ABANDONED  # found by its name while it is still alive
        _runners.runner = None
        raise
