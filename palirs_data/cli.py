"""What every stage script shares: logging set-up and turning bad input into one line.

A stage's body runs inside :func:`run_stage`. A :class:`PalirsInputError` or
:class:`StageFailed` becomes ``error: <one line>`` on stderr and exit status 1; outputs are
written atomically by the body, so nothing half-written is left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import typer
from rich.logging import RichHandler

from palirs_data.errors import PalirsInputError, StageFailed

log = logging.getLogger("palirs_data")


def setup_logging(level: int = logging.INFO) -> None:
    """The stage's own log at ``level``; Dask's at warnings only, here and in the worker
    processes a local cluster starts (they read ``DASK_LOGGING__DISTRIBUTED``): its start-up
    chatter would bury the stage's lines."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s",
                        force=True)
    logging.getLogger("palirs_data").setLevel(level)
    logging.getLogger("stages").setLevel(level)


def run_stage(name: str, body: Callable[[], str]) -> None:
    """Run a stage body; print its summary line, or one error line and exit 1."""
    setup_logging()
    start = time.perf_counter()
    try:
        summary = body()
    except (PalirsInputError, StageFailed) as exc:
        typer.echo(f"error: {name}: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        typer.echo(f"error: {name}: interrupted; outputs were not written", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(f"{name}: {summary} [{time.perf_counter() - start:.1f} s]")
    sys.stdout.flush()
