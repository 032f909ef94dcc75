"""The dipole model's training threads, on a quiet machine and beside a busy process.

Run: python benchmarks/dipole_threads.py [--epochs 20] [--busy 0 1] [--threads 1 2]
     [--wait-policy default passive] [--repeats 1]

Trains the dipole model of params.yaml (its seed, model and training, ``--epochs`` epochs) on
the table the dipole stage trains on (data/labelled/final.parquet + dipole_md.parquet), as the
stage does (``palirs_data.training.train_dipole_model``: mace_run_train in a subprocess with
OMP_NUM_THREADS = ``dipole.training.threads``), for every thread count in ``--threads``, with
``--busy`` other processes each spinning one core the whole time (a CPU-bound job beside the
pipeline: another stage, a test run, a browser), and for every OpenMP ``--wait-policy``
(``default``: the environment's; ``passive``/``active``: OMP_WAIT_POLICY for the training
process, which inherits this one's environment). Variants run --repeats times, interleaved;
the best time is reported, with its ratio to the same thread count on the quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from palirs_data import structures
from palirs_data.config import load_params
from palirs_data.e0s import read_e0s
from palirs_data.training import train_dipole_model


@contextlib.contextmanager
def wait_policy(policy: str):
    """OMP_WAIT_POLICY set to ``policy`` for the block (``default``: as it was)."""
    old = os.environ.get("OMP_WAIT_POLICY")
    if policy != "default":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
        if old is not None:
            os.environ["OMP_WAIT_POLICY"] = old


@contextlib.contextmanager
def busy(n: int):
    """``n`` processes that keep one core each busy until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, nargs="+", default=[
        Path("data/labelled/final.parquet"), Path("data/labelled/dipole_md.parquet")])
    parser.add_argument("--e0s", type=Path, default=Path("data/reference/e0s.json"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--wait-policy", nargs="+", default=["default"],
                        choices=["default", "passive", "active"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    p = load_params(args.params)
    table = structures.concat_tables([structures.read_table(path) for path in args.data])
    e0s = read_e0s(args.e0s)
    best: dict[tuple[int, int, str], float] = {}
    variants = [(n_busy, threads, policy) for n_busy in args.busy for threads in args.threads
                for policy in args.wait_policy]
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for n_busy, threads, policy in variants:
                training = p.dipole.training.model_copy(
                    update={"max_num_epochs": args.epochs, "threads": threads})
                config = p.dipole.model_copy(update={"training": training})
                work = Path(tmp) / f"{k}-{n_busy}-{threads}-{policy}"
                with busy(n_busy), wait_policy(policy):
                    report = train_dipole_model(
                        table, e0s=e0s, elements=p.committee.elements, config=config,
                        out_file=work / "dipole.model", work_dir=work)
                key = (n_busy, threads, policy)
                best[key] = min(best.get(key, float("inf")), report.seconds)
                print(f"  repeat {k}: {n_busy} busy, {threads} thread(s), wait policy "
                      f"{policy}: {report.seconds:.1f} s", flush=True)
    print(f"dipole model, {args.epochs} epochs, {table.num_rows} structures, best of "
          f"{args.repeats}")
    print("| busy processes | threads | wait policy | seconds | x the quiet machine's |")
    print("|---|---|---|---|---|")
    for (n_busy, threads, policy), seconds in best.items():
        quiet = best.get((0, threads, policy))
        ratio = f"{seconds / quiet:.2f}" if quiet else "-"
        print(f"| {n_busy} | {threads} | {policy} | {seconds:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
