"""Semantic groups of a neuron's concept (paper sec. 3.4, Algorithm 2).

The concept V_a (top-k patches) is split by clustering the patches' representative vectors
r(v) (eq. 3: channel means of the layer below, i.e. that layer's phi from the scan) with Ward
linkage, 2..max_groups clusters chosen by silhouette score. Fewer than three distinct vectors
(or too few patches) give a single group.
"""

from __future__ import annotations

import numpy as np

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.clustering import ward_by_silhouette


class SemanticGrouper:
    """scikit-learn style: ``SemanticGrouper(max_groups=5).fit(R)`` with R ``(k, d)`` the
    representative vectors of one concept's patches, in concept order.

    Attributes after fit: ``labels_`` (k,) group of each patch, numbered by first appearance (group 0
    holds the top patch); ``n_groups_``; ``silhouette_`` (None for a single group)."""

    def __init__(self, max_groups: int = 5) -> None:
        self.max_groups = max_groups

    def fit(self, x: np.ndarray) -> "SemanticGrouper":
        if isinstance(self.max_groups, bool) or not isinstance(self.max_groups, int) or self.max_groups < 1:
            raise InputError(f"max_groups must be an integer >= 1, got {self.max_groups!r}")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"SemanticGrouper.fit needs a non-empty (patches, features) array, got shape {x.shape}")
        self.labels_, self.silhouette_ = ward_by_silhouette(x, min_clusters=2, max_clusters=self.max_groups)
        self.n_groups_ = int(self.labels_.max()) + 1
        return self
