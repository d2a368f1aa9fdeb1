"""The project's exception hierarchy and the CLI's exit codes.

Every error a user can cause derives from :class:`NeurflowError`. The CLI turns any of them
into one line on stderr and the class's ``exit_code``; library callers can catch the narrower
classes. Driver and OS errors are wrapped with ``raise ... from e`` so the cause stays attached
for debugging. Exit codes (documented in docs/errors.md):

===  ===========================================================================================
0    success
1    a bug in neurflow-graph (a traceback is printed: please report it)
2    :data:`EXIT_INPUT`: bad input the user can fix (argument, option, file, name, query)
3    :data:`EXIT_ENVIRONMENT`: the machine, not the input: disk full, permission denied,
     read-only folder, device out of memory (a store that cannot be reached is 2: the URL
     or the server's state is the user's to fix)
4    :data:`EXIT_PARTIAL`: a command over many items (``extract`` of several classes, ``ingest``
     of a parent folder) finished some and not others; the message names those it did not
130  :data:`EXIT_INTERRUPTED`: interrupted (Ctrl-C); the message says how to continue
===  ===========================================================================================
"""

from __future__ import annotations

import errno
import os

EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_PARTIAL = 4
EXIT_INTERRUPTED = 130


class NeurflowError(Exception):
    """Base class: a problem the user can fix. ``str(e)`` is the one-line message."""

    exit_code = EXIT_INPUT


class InputError(NeurflowError):
    """A bad argument, option or file given by the user."""


class ModelError(InputError):
    """Unknown model, bad factory, or a layer name that does not exist."""


class WeightsError(ModelError):
    """Weights that cannot be obtained or do not fit the architecture."""


class UnsafeWeightsError(WeightsError):
    """A weights file the safe (tensors-only) loader refuses; it loads only with ``--trust-pickle``."""


class ImageError(InputError):
    """An image folder that is missing, empty, or has no image of the asked class."""


class RunFormatError(InputError):
    """A run directory / circuit.json that is missing, partial or malformed."""


class RunDirError(InputError):
    """An ``--out`` run directory that would be overwritten, or holds an unfinished run."""


class ExtractionError(NeurflowError):
    """The extraction engine cannot proceed with the given inputs."""


class StoreError(NeurflowError):
    """Base class for graph-store problems."""


class StoreConnectionError(StoreError):
    """The store cannot be reached or refused the credentials."""


class StoreNotFoundError(StoreError):
    """A read found no store at the given ``--store`` (reads never create one)."""


class StoreURLError(StoreError, InputError):
    """A ``--store`` URL that is not understood."""


class QueryError(StoreError):
    """Unknown library query, bad parameters, or a query the store rejected."""


class EnvironmentFailure(NeurflowError):
    """The machine, not the input, stopped the command (exit code 3)."""

    exit_code = EXIT_ENVIRONMENT


class FileSystemError(EnvironmentFailure):
    """Disk full, permission denied, read-only folder, ... while reading or writing a named file.

    ``errno`` and ``filename`` are those of the OSError it wraps (``__cause__``)."""

    def __init__(self, message: str, *, errno_: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno_
        self.filename = filename


class DeviceMemoryError(EnvironmentFailure):
    """The device (GPU, or the host for the CPU) ran out of memory."""


class PartialFailure(NeurflowError):
    """Some items of a many-item command failed; the others are complete (exit code 4)."""

    exit_code = EXIT_PARTIAL


class Interrupted(NeurflowError):
    """Ctrl-C (SIGINT): the message says how to continue; exit code 130."""

    exit_code = EXIT_INTERRUPTED


# errno values that name a wrong path the user typed (exit 2); any other OSError is the environment (exit 3).
_INPUT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EEXIST,
                           errno.ENOTEMPTY, errno.ELOOP})
_HINTS: dict[int, str] = {
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "free space within your quota or write somewhere else",
    errno.EACCES: "check the permissions of that path or choose another location",
    errno.EPERM: "check the permissions of that path or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EIO: "the disk reported an I/O error: check the device, then rerun",
    errno.EMFILE: "too many open files: raise `ulimit -n` and rerun",
    errno.ENFILE: "too many open files on the system: close some programs and rerun",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "that is a folder: give a file path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def os_error(e: OSError, *, action: str = "cannot use", path: str | os.PathLike[str] | None = None
             ) -> NeurflowError:
    """A one-line project error for ``e``, naming the file (``path`` or ``e.filename``) and what to do.

    Wrong paths (no such file, not a folder, ...) are :class:`InputError` (exit 2); everything
    else (no space, permission, read-only, I/O) is :class:`FileSystemError` (exit 3)."""
    if isinstance(e, NeurflowError):
        return e
    name = path if path is not None else e.filename
    where = f" {os.fsdecode(name)}" if name is not None else ""
    if e.filename2 is not None and path is None:
        where += f" -> {os.fsdecode(e.filename2)}"
    reason = e.strerror or str(e) or type(e).__name__
    hint = _HINTS.get(e.errno or -1, "")
    message = f"{action}{where}: {reason}" + (f"; {hint}" if hint else "")
    if e.errno in _INPUT_ERRNOS:
        return InputError(message)
    return FileSystemError(message, errno_=e.errno, filename=os.fsdecode(name) if name is not None else None)


def device_memory_error(e: BaseException, *, device: str | None = None, hint: str | None = None
                        ) -> DeviceMemoryError | None:
    """A one-line :class:`DeviceMemoryError` when ``e`` is an out-of-memory error, else None.

    Recognises ``torch.cuda.OutOfMemoryError`` (and its MPS / HIP messages) without importing
    torch, and Python's own MemoryError (the host). ``device`` names the device when known;
    ``hint`` replaces the default advice (a smaller ``--max-batch``, or ``--device cpu``)."""
    if isinstance(e, DeviceMemoryError):
        return e
    names = {c.__name__ for c in type(e).__mro__}
    text = " ".join(str(e).split())
    gpu = "OutOfMemoryError" in names or (isinstance(e, RuntimeError) and "out of memory" in text.lower())
    if not gpu and not isinstance(e, MemoryError):
        return None
    if device is None:
        import re

        m = re.search(r"GPU (\d+)", text)
        device = (f"cuda:{m.group(1)}" if m else "the GPU") if gpu else "the host (cpu)"
    detail = text.split(". ")[0] if text else type(e).__name__
    hint = hint or ("rerun with a smaller --max-batch (e.g. half), free the device of other jobs, "
                    "or use --device cpu")
    return DeviceMemoryError(f"out of memory on {device} ({detail[:120]}); {hint}")
