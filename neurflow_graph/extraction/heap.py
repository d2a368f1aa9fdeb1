"""Keep freed tensor memory in the process heap while an extraction runs (glibc on Linux).

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back with ``free``. glibc
serves a block above its mmap threshold (at most 32 MiB, adapted at run time) with a fresh
``mmap`` and returns it with ``munmap``; the next forward pass then page-faults every page of its
activations back in, zeroed by the kernel. A ResNet50 forward over 256 patches at 224 px allocates
tensors of up to 800 MiB per layer, so on CPU the kernel time of those faults equalled the
arithmetic (measured: a scan of 590 patches, batch 256, spent 63 s user and 66 s system CPU time,
31 M minor page faults). Inside :func:`retained_heap` no block is mmapped (``M_MMAP_MAX`` 0: big
blocks come from the heap) and freed memory stays in the heap for the next batch
(``M_TRIM_THRESHOLD`` raised). Setting either ends glibc's adaptive thresholds for the process
(glibc has no call to turn them back on), so on exit ``M_MMAP_MAX`` gets glibc's default back and
the mmap and trim thresholds are set to where the adaptive ones settle after big frees (32 MiB,
glibc's ceiling, and twice that): blocks of a few MiB keep being reused from the heap afterwards,
as in an untouched process. ``malloc_trim(0)`` then returns the retained memory to the system. Resident memory during the run is
what the largest forward needs plus the heap's fragmentation (a ResNet50 forward at batch 48 on
224 px: 1.8 GiB held vs 1.2 GiB peak re-faulted); it is held for the run instead of re-faulted.
(Raising ``M_MMAP_THRESHOLD`` instead fragments more: 2.4 GiB in the same case.)

Elsewhere (another C library, macOS, Windows) this is a no-op, and so it is when the user tuned
malloc (any ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``MALLOC_ARENA_MAX`` in the environment: their settings win) or set ``NEURFLOW_RETAIN_HEAP=0``
(the memory-lean choice: re-faulted pages instead of held ones). The resident memory this holds
is not counted against ``--memory-budget``, which sizes the engine's own caches and batches.
Numbers computed are unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_MMAP_THRESHOLD = -3
_MMAP_MAX_DEFAULT = 65536   # glibc's DEFAULT_MMAP_MAX
_TRIM_AFTER = 64 << 20      # twice glibc's adaptive mmap threshold's ceiling, as glibc sets it when it adapts
_RETAIN = 2**31 - 1         # the largest value mallopt's int takes: the heap is never trimmed
_MMAP_AFTER = 32 << 20      # glibc's DEFAULT_MMAP_THRESHOLD_MAX (64-bit): where the adaptive threshold ends
OPT_OUT_ENV = "NEURFLOW_RETAIN_HEAP"
USER_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
                   "GLIBC_TUNABLES")

_lock = threading.Lock()
_depth = 0


def _wanted() -> bool:
    """False when the user opted out or tuned malloc themselves (their settings win)."""
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not any(os.environ.get(name) for name in USER_MALLOC_ENV)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None  # not glibc (musl has no gnu_get_libc_version): nothing to tune


@contextmanager
def retained_heap() -> Iterator[bool]:
    """Freed memory stays in the heap for the duration (nested uses share one setting); yields
    whether the setting took effect (glibc only, and not opted out; see the module docstring)."""
    global _depth
    libc = _libc() if _wanted() else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        ok = True
        if _depth == 1:
            ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN))
    try:
        yield ok
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
                libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_AFTER)
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                libc.malloc_trim(0)
