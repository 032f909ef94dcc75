"""Committee MD divided into parts over the workers: balance, submit, watch, merge.

A stage's MD replicas (acquire, ir) are divided into as many parts as the executor has MD
slots (:meth:`palirs_data.compute.Executor.md_slots`: one per worker, or per GPU worker; one
in this process), of near-equal atoms (:func:`split_balanced`); each part is one GPU task that
writes its own trajectories into one store, which is also the progress shown while they run
(:func:`watch_store`); their reports become one (:func:`merge_md_reports`). Every replica
has its own seed, so the division does not change the trajectories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def md_in_parts(executor, replicas: Sequence, store, submit: Callable, *, total_frames: int,
                progress: bool) -> dict:
    """Run ``replicas`` (anything with ``numbers`` and ``key``) in parts: ``submit(k,
    part_replicas, task_progress)`` submits part ``k`` and returns its future (the task shows
    its own progress in this process; on workers the store is the progress). Returns the
    merged report."""
    parts = split_balanced([len(r.numbers) for r in replicas], executor.md_slots())
    store.require_parents([r.key for r in replicas])
    futures = [submit(k, [replicas[i] for i in part], progress and not executor.distributed)
               for k, part in enumerate(parts)]
    return merge_md_reports(watch_store(futures, store.path, total_frames=total_frames,
                                        label=f"md ({len(parts)} tasks)",
                                        progress=progress and executor.distributed))


def split_balanced(sizes: list[int], n_parts: int) -> list[list[int]]:
    """Indices of ``sizes`` (atoms per replica) divided into at most ``n_parts`` non-empty
    parts of near-equal total size (largest first, each to the lightest part), each part in
    index order. Deterministic: the same sizes and part count give the same parts."""
    n_parts = max(1, min(n_parts, len(sizes)))
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    totals = [0] * n_parts
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = min(range(n_parts), key=lambda k: (totals[k], k))
        parts[k].append(i)
        totals[k] += sizes[i]
    return [sorted(p) for p in parts if p]


def merge_md_reports(reports: list[dict]) -> dict:
    """One report for MD that ran as parts side by side: counts summed, times the longest
    part's (the parts ran at once), the workers listed."""
    workers = sorted({str(r["worker"]) for r in reports if r.get("worker") is not None})
    return {
        "thermalise_seconds": max(r.get("thermalise_seconds", 0.0) for r in reports),
        "produce_seconds": max(r.get("produce_seconds", 0.0) for r in reports),
        "md_seconds": max(r.get("md_seconds", r.get("thermalise_seconds", 0.0)
                              + r.get("produce_seconds", 0.0)) for r in reports),
        "replica_steps": sum(r["replica_steps"] for r in reports),
        "resumed_frames": sum(r.get("resumed_frames", 0) for r in reports),
        "stopped": sorted(k for r in reports for k in r.get("stopped", [])),
        "worker": (workers[0] if len(workers) == 1 else workers) if workers else None,
        "device": reports[0].get("device", "cpu"), "tasks": len(reports)}


def watch_store(futures, store_path, *, total_frames: int, label: str,
                progress: bool = False):
    """Wait for the MD tasks (a future or a list) that write a trajectory store, showing the
    frames committed so far (the store is the progress); returns their results (one result
    for one future, a list for a list)."""
    from distributed import wait

    from palirs_data.progress import make_progress
    from palirs_data.trajectory import TrajectoryStore

    single = not isinstance(futures, (list, tuple))
    futures = [futures] if single else list(futures)
    with make_progress() as bar:
        task = bar.add_task(label, total=total_frames, visible=progress)
        while not all(f.done() for f in futures):
            try:
                wait(futures, timeout=2.0)
            except TimeoutError:
                pass
            try:
                written = TrajectoryStore(store_path, mode="r")
                bar.update(task, completed=sum(written[k].n_frames for k in written.keys()))
            except Exception:  # the worker may not have created the store yet
                pass
        bar.update(task, completed=total_frames)
    results = [f.result() for f in futures]
    return results[0] if single else results
