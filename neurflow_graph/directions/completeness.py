"""Completeness measure 1 (Dey et al. 2025): how much of a layer's variance the top-k basis
vectors explain, for principal components and for neurons (channels), both sorted by variance.

``curve[k-1]`` is the share of the total variance explained by the ``k`` highest-variance vectors:
for PCs the cumulative sum of the eigenvalues, for neurons the cumulative sum of the sorted channel
variances (the variance in the span of those channels' axes), each divided by the total variance
(the trace of the covariance, the same for both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS: tuple[float, ...] = (0.8, 0.99)


def cumulative_share(variances: np.ndarray, total: float) -> np.ndarray:
    """Cumulative explained share of ``variances`` sorted descending: ``(k,)`` in [0, 1]."""
    v = np.sort(np.asarray(variances, dtype=np.float64))[::-1]
    if total <= 0:
        return np.zeros_like(v)
    return np.minimum(np.cumsum(v) / total, 1.0)


def count_for(curve: np.ndarray, threshold: float) -> int | None:
    """Smallest ``k`` with ``curve[k-1] >= threshold`` (tolerating 1e-12 rounding); None if never."""
    hits = np.nonzero(np.asarray(curve) >= threshold - 1e-12)[0]
    return int(hits[0]) + 1 if hits.size else None


def counts(curve: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, int | None]:
    """``{"80": k, "99": k}`` for the default thresholds (key = percent as text)."""
    return {f"{round(t * 100):d}": count_for(curve, t) for t in thresholds}


def span_share(feature_variance: np.ndarray, channels: Sequence[int]) -> float:
    """Share of the total variance in the span of ``channels``' axes: ``sum var_i / sum var``."""
    fv = np.asarray(feature_variance, dtype=np.float64)
    total = float(fv.sum())
    if total <= 0 or not len(channels):
        return 0.0
    return float(fv[np.asarray(sorted(set(int(c) for c in channels)), dtype=np.int64)].sum() / total)
