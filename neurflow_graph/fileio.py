"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from neurflow_graph.errors import os_error


def temp_pattern(name: str) -> str:
    """Glob pattern of the temp files :func:`atomic_write` leaves beside ``name`` if killed mid-write."""
    return f".{name}.*.tmp"


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike[str]) -> int:
    """Mode a rewritten ``path`` gets: the existing file's permissions, else ``0o666`` less the umask
    (what ``open(path, "w")`` would give, unlike ``mkstemp``'s 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, mode: str = "wb") -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    ``mode`` is ``"wb"`` or ``"w"``. The file gets the permissions of the file it replaces, else
    those the umask allows. On any error (or KeyboardInterrupt) the temp file is removed and
    ``path`` is left as it was; an OSError (disk full, permission denied, read-only folder) is
    raised as a :class:`~neurflow_graph.errors.FileSystemError` (or InputError for a wrong path)
    naming ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise os_error(e, action="cannot write", path=path) from e
    try:
        os.fchmod(fd, new_file_mode(path))
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise os_error(e, action="cannot write", path=path) from e
        raise
    return path
