"""Concepts, core-neuron ranking and edge weights (Def. 1, Alg. 1, eq. 4) on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from neurflow_graph.extraction.importance import core_neurons, edge_weights, rank_scores, top_k


def test_top_k_is_best_first_with_ties_to_the_lower_id():
    phi = np.array([0.5, 2.0, 1.0, 2.0, -1.0], dtype=np.float32)
    assert top_k(phi, 3).tolist() == [1, 3, 2]
    assert top_k(phi, 10).tolist() == [1, 3, 2, 0, 4]  # k > |D|: all of D


def test_abs_mean_and_abs_sum_rank_differently():
    # per-patch attributions of two channels over a concept of two patches
    attr = np.array([[1.0, 0.6],
                     [-1.0, 0.6]])
    abs_mean = rank_scores(abs_sum=np.abs(attr).sum(0), signed_sum=attr.sum(0), n_patches=2, rank_by="abs_mean")
    abs_sum = rank_scores(abs_sum=np.abs(attr).sum(0), signed_sum=attr.sum(0), n_patches=2, rank_by="abs_sum")
    np.testing.assert_allclose(abs_mean, [1.0, 0.6])   # reference: mean of |A| per patch
    np.testing.assert_allclose(abs_sum, [0.0, 1.2])    # paper: |sum of A| (cancels)
    assert core_neurons(abs_mean, 1).tolist() == [0]
    assert core_neurons(abs_sum, 1).tolist() == [1]


def test_core_neurons_skip_zero_scores_and_break_ties_by_index():
    scores = np.array([0.0, 3.0, 1.0, 3.0, 0.0])
    assert core_neurons(scores, 3).tolist() == [1, 3, 2]
    assert core_neurons(scores, 10).tolist() == [1, 3, 2]


def test_edge_weights_are_signed_and_normalised_per_group():
    t = np.array([[2.0, -1.0, 1.0],
                  [0.0, 0.0, 0.0]])
    w = edge_weights(t)
    np.testing.assert_allclose(w[0], [0.5, -0.25, 0.25])
    np.testing.assert_allclose(w[1], [0.0, 0.0, 0.0])
    assert np.abs(w[0]).sum() == pytest.approx(1.0)
