"""Chunking rows for ``UNWIND $rows AS row`` writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield consecutive lists of at most ``size`` rows; the last may be shorter, none is empty."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk
