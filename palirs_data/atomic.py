"""Atomic writes: an output either appears whole or not at all.

Everything is written to a temporary sibling (same directory, so the final ``os.replace`` is an
atomic rename on POSIX file systems) and renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file or directory is removed and ``path`` is untouched.
    With ``directory=True`` the temporary path is an (empty) directory, e.g. for Zarr stores or
    model folders; an existing directory at ``path`` is replaced.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and final.is_dir():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for several outputs that appear together: all are renamed into place
    only after the block succeeds, none if it raises."""
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_path(p)) for p in paths)


def keyed_work_dir(root: str | os.PathLike[str], name: str, *, files=(), parts=()) -> Path:
    """A scratch directory ``root/<name>-<digest>`` named by everything a computation depends
    on (the bytes of ``files``, the ``parts`` as bytes or text): work left there by a killed
    run is found again, and only by the same computation."""
    import hashlib

    from palirs_data.errors import PalirsInputError

    h = hashlib.sha256()
    for f in files:
        try:
            h.update(Path(f).read_bytes())
        except FileNotFoundError:
            raise PalirsInputError(f"{f}: no such file") from None
        except IsADirectoryError:
            raise PalirsInputError(f"{f}: a directory, not a file") from None
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return Path(root) / f"{name}-{h.hexdigest()[:16]}"
