"""Ward agglomerative clustering with the number of clusters chosen by silhouette score.

Shared by semantic groups (Alg. 2) and neuron groups (sec. 3.5). Labels are renumbered by first
appearance so that the result depends only on the data and its order.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from neurflow_graph.errors import InputError


def first_appearance_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0, 1, ... in order of first appearance."""
    mapping: dict[int, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(np.asarray(labels).tolist()):
        out[i] = mapping.setdefault(int(lab), len(mapping))
    return out


def ward_by_silhouette(x: np.ndarray, *, min_clusters: int, max_clusters: int) -> tuple[np.ndarray, float | None]:
    """Cluster rows of ``x`` (``(n, d)``) with Ward linkage into n in [min_clusters, max_clusters]
    clusters, n maximising the silhouette score (first best on ties).

    Degenerate inputs (fewer than 3 distinct rows, or no admissible n) give one cluster and a
    silhouette of None. ``max_clusters`` is capped at (distinct rows) and (rows - 1)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    distinct = len(np.unique(x, axis=0)) if n else 0
    upper = min(max_clusters, distinct, n - 1)
    if distinct < 3 or upper < max(min_clusters, 2):
        return np.zeros(n, dtype=np.int64), None
    best_labels, best_score = None, -np.inf
    for k in range(max(min_clusters, 2), upper + 1):
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        if len(np.unique(labels)) < 2:
            continue
        score = float(silhouette_score(x, labels))
        if score > best_score:
            best_labels, best_score = labels, score
    if best_labels is None:
        return np.zeros(n, dtype=np.int64), None
    return first_appearance_labels(best_labels), best_score


class WardGrouper:
    """scikit-learn style base of the groupers: ``fit(X)`` with X ``(n, d)`` clusters its rows with
    :func:`ward_by_silhouette` into 1..max_groups groups.

    Attributes after fit: ``labels_`` (n,) group of each row, numbered by first appearance;
    ``n_groups_``; ``silhouette_`` (None for a single group). Subclasses set the default
    ``max_groups`` in ``__init__`` and ``rows``, what a row is (named in the error message)."""

    rows = "rows"

    def __init__(self, max_groups: int) -> None:
        self.max_groups = max_groups

    def fit(self, x: np.ndarray) -> Self:
        if isinstance(self.max_groups, bool) or not isinstance(self.max_groups, int) or self.max_groups < 1:
            raise InputError(f"max_groups must be an integer >= 1, got {self.max_groups!r}")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"{type(self).__name__}.fit needs a non-empty ({self.rows}, features) array, "
                             f"got shape {x.shape}")
        self.labels_, self.silhouette_ = ward_by_silhouette(x, min_clusters=2, max_clusters=self.max_groups)
        self.n_groups_ = int(self.labels_.max()) + 1
        return self
