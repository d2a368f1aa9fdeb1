"""Semantic and neuron grouping: Ward + silhouette, checked against a direct scikit-learn loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.neuron_groups import NeuronGrouper, group_vectors
from neurflow_graph.extraction.semantic_groups import SemanticGrouper


def _oracle(x: np.ndarray, max_clusters: int) -> np.ndarray:
    """Algorithm 2 written out: best silhouette over 2..max_clusters, first best on ties."""
    best, best_score = None, -np.inf
    for n in range(2, max_clusters + 1):
        labels = AgglomerativeClustering(n_clusters=n, linkage="ward").fit_predict(x)
        score = silhouette_score(x, labels)
        if score > best_score:
            best, best_score = labels, score
    return best


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    def parts(x: np.ndarray) -> set[tuple]:
        return {tuple(np.flatnonzero(x == v)) for v in np.unique(x)}

    return parts(a) == parts(b)


def test_separated_blobs_are_found():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, size=(3, 6))
    truth = np.repeat([2, 0, 1], 10)
    x = centers[truth] + rng.normal(0, 0.3, size=(30, 6))
    g = SemanticGrouper(max_groups=5).fit(x)
    assert g.n_groups_ == 3
    assert _same_partition(g.labels_, truth)
    assert g.labels_[0] == 0 and g.silhouette_ == pytest.approx(silhouette_score(x, truth))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_direct_sklearn_loop(seed):
    x = np.random.default_rng(seed).gamma(1.0, size=(50, 8))  # channel means are non-negative and skewed
    g = SemanticGrouper(max_groups=5).fit(x)
    assert _same_partition(g.labels_, _oracle(x, 5))
    # labels are numbered by first appearance
    firsts = [int(np.flatnonzero(g.labels_ == v)[0]) for v in range(g.n_groups_)]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize("x", [
    np.ones((10, 3)),                                   # one distinct vector
    np.repeat([[0.0, 1.0], [1.0, 0.0]], 5, axis=0),     # two distinct vectors
    np.array([[1.0, 2.0]]),                             # one patch
    np.array([[1.0, 2.0], [3.0, 4.0]]),                 # two patches
])
def test_degenerate_concepts_are_one_group(x):
    g = SemanticGrouper(max_groups=5).fit(x)
    assert g.n_groups_ == 1 and set(g.labels_) == {0} and g.silhouette_ is None


def test_max_groups_one_and_bad_input():
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert SemanticGrouper(max_groups=1).fit(x).n_groups_ == 1
    with pytest.raises(InputError):
        SemanticGrouper(max_groups=0).fit(x)
    with pytest.raises(InputError):
        NeuronGrouper().fit(np.zeros((0, 3)))


def test_neuron_groups_are_capped_by_the_number_of_semantic_groups():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    g = NeuronGrouper(max_groups=8).fit(x)
    assert g.n_groups_ <= 3 and _same_partition(g.labels_, _oracle(x, 3))
    x = np.random.default_rng(4).normal(size=(40, 5))
    assert _same_partition(NeuronGrouper(max_groups=8).fit(x).labels_, _oracle(x, 8))


def test_group_vectors_are_means_over_member_patches():
    r = np.arange(12, dtype=np.float32).reshape(6, 2)
    v = group_vectors(r, [np.array([0, 2]), np.array([5])])
    np.testing.assert_allclose(v, [[2.0, 3.0], [10.0, 11.0]])
