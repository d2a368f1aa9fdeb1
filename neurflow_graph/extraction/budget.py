"""Memory budgets by device, and the peak memory a run reached.

The budget bounds what the engine keeps beyond the model: layer maps cached between the scan and
integrated gradients, and the per-slot gradient tensors of a chunk. By default it is sized from
the device: on CUDA half the memory free when the run starts (rounded down to a power of two, so
small fluctuations do not change what is cached), on CPU a quarter of the machine's RAM
(``MemTotal``; deterministic per machine). ``parse_memory`` reads a user's ``--memory-budget``.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from neurflow_graph.errors import InputError

CPU_SHARE = 0.25
CUDA_SHARE = 0.5
# The per-slot gradient working set never exceeds this (more does not speed up CPU or GPU work: rows
# per forward are bounded by max_batch); it keeps the slot layout, hence the floats, as before.
GRAD_CAP_BYTES = 1 << 28
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str | int | float) -> int:
    """``"2GiB"``, ``"512MiB"``, ``"1.5GB"``, ``"800M"`` or a number of bytes -> bytes (InputError otherwise)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"--memory-budget {text!r} is not a size; give e.g. 2GiB, 512MiB, 1.5GB or bytes")
        value, unit = float(m.group(1)), m.group(2).lower()
    n = int(value * _UNITS[unit])
    if n < 1:
        raise InputError(f"--memory-budget must be positive, got {text!r}")
    return n


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def device_budget(device: torch.device) -> int:
    """The default budget in bytes for ``device`` (see the module doc)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        share = int(free * CUDA_SHARE)
        return 1 << max(share.bit_length() - 1, 20)
    total = _meminfo("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = 8 << 30
    return int(total * CPU_SHARE)


def grad_budget(budget: int) -> int:
    """The per-slot gradient working set for a run with ``budget`` bytes: an eighth, at most GRAD_CAP_BYTES."""
    return int(min(GRAD_CAP_BYTES, max(budget // 8, 1 << 20)))


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class PeakMemory:
    """Peak resident memory of the process (sampled every 10 ms) and, on CUDA, peak allocated device
    memory (``torch.cuda.max_memory_allocated``) while the ``with`` block runs; both in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_mib = 0.0
        self.cuda_mib: float | None = None

    def __enter__(self) -> "PeakMemory":
        self._peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss())

    def read(self) -> dict[str, float]:
        """The peaks so far: ``peak_rss_mib`` and, on CUDA, ``peak_cuda_mib``."""
        out = {"peak_rss_mib": round(max(self._peak, _rss()) / 2**20, 1)}
        if self.device.type == "cuda":
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return out

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        got = self.read()
        self.rss_mib = got["peak_rss_mib"]
        self.cuda_mib = got.get("peak_cuda_mib")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    with PeakMemory(device) as p:
        yield p
