"""Neuron groups of a layer (paper sec. 3.5) and the weights between them.

All semantic groups of a layer's neurons are clustered by their representative vectors (the
mean of r(v) over the group's patches) with Ward linkage, 2..min(max_groups, #groups - 1)
clusters chosen by silhouette score; too few groups give one neuron group. A neuron group's
concept is the union of its members' patches. The logit layer has one group holding the root's
semantic groups. Group-to-group weights are :func:`neurflow_graph.circuit.derive_group_edges`.
"""

from __future__ import annotations

import numpy as np

from neurflow_graph.extraction.clustering import WardGrouper


class NeuronGrouper(WardGrouper):
    """scikit-learn style: ``NeuronGrouper(max_groups=8).fit(X)`` with X ``(m, d)`` the
    representative vectors of one layer's semantic groups, in a fixed order.

    Attributes after fit: ``labels_`` (m,) neuron group of each semantic group, numbered by first
    appearance; ``n_groups_``; ``silhouette_`` (None for a single group)."""

    rows = "groups"

    def __init__(self, max_groups: int = 8) -> None:
        super().__init__(max_groups)


def group_vectors(r: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Representative vector of each semantic group: mean of ``r`` (``(P, d)``) over its patch ids."""
    return np.stack([r[np.asarray(m, dtype=np.int64)].astype(np.float64).mean(0) for m in members])
