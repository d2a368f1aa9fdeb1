"""Neuron groups of a layer (paper sec. 3.5) and the weights between them.

All semantic groups of a layer's neurons are clustered by their representative vectors (the
mean of r(v) over the group's patches) with Ward linkage, 2..min(max_groups, #groups - 1)
clusters chosen by silhouette score; too few groups give one neuron group. A neuron group's
concept is the union of its members' patches. The logit layer has one group holding the root's
semantic groups. Group-to-group weights are :func:`neurflow_graph.circuit.derive_group_edges`.
"""

from __future__ import annotations

import numpy as np

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.clustering import ward_by_silhouette


class NeuronGrouper:
    """scikit-learn style: ``NeuronGrouper(max_groups=8).fit(X)`` with X ``(m, d)`` the
    representative vectors of one layer's semantic groups, in a fixed order.

    Attributes after fit: ``labels_`` (m,) neuron group of each semantic group, numbered by first
    appearance; ``n_groups_``; ``silhouette_`` (None for a single group)."""

    def __init__(self, max_groups: int = 8) -> None:
        self.max_groups = max_groups

    def fit(self, x: np.ndarray) -> "NeuronGrouper":
        if isinstance(self.max_groups, bool) or not isinstance(self.max_groups, int) or self.max_groups < 1:
            raise InputError(f"max_groups must be an integer >= 1, got {self.max_groups!r}")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"NeuronGrouper.fit needs a non-empty (groups, features) array, got shape {x.shape}")
        self.labels_, self.silhouette_ = ward_by_silhouette(x, min_clusters=2, max_clusters=self.max_groups)
        self.n_groups_ = int(self.labels_.max()) + 1
        return self


def group_vectors(r: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Representative vector of each semantic group: mean of ``r`` (``(P, d)``) over its patch ids."""
    return np.stack([r[np.asarray(m, dtype=np.int64)].astype(np.float64).mean(0) for m in members])
