"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_pattern(name: str) -> str:
    """Glob pattern of the temp files :func:`atomic_write` leaves beside ``name`` if killed mid-write."""
    return f".{name}.*.tmp"


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, mode: str = "wb") -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    ``mode`` is ``"wb"`` or ``"w"``. On any error (or KeyboardInterrupt) the temp file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
