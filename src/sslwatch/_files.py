"""Crash-safe file writes shared by every layer that writes files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path next to ``target``; renamed onto ``target`` when the block succeeds.

    The block writes the whole file to the yielded path. On success the file gets
    ``mode`` (what a plain ``open`` gives under the usual umask; ``mkstemp`` makes 0600)
    and replaces ``target`` in one ``os.replace``, so a reader or a crash never sees half
    a file; on any exception the temporary file is removed and ``target`` is untouched.
    Missing parent directories are created.
    """
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
