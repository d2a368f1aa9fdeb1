"""Semantic groups of a neuron's concept (paper sec. 3.4, Algorithm 2).

The concept V_a (top-k patches) is split by clustering the patches' representative vectors
r(v) (eq. 3: channel means of the layer below, i.e. that layer's phi from the scan) with Ward
linkage, 2..max_groups clusters chosen by silhouette score. Fewer than three distinct vectors
(or too few patches) give a single group.
"""

from __future__ import annotations

from neurflow_graph.extraction.clustering import WardGrouper


class SemanticGrouper(WardGrouper):
    """scikit-learn style: ``SemanticGrouper(max_groups=5).fit(R)`` with R ``(k, d)`` the
    representative vectors of one concept's patches, in concept order.

    Attributes after fit: ``labels_`` (k,) group of each patch, numbered by first appearance (group 0
    holds the top patch); ``n_groups_``; ``silhouette_`` (None for a single group)."""

    rows = "patches"

    def __init__(self, max_groups: int = 5) -> None:
        super().__init__(max_groups)
