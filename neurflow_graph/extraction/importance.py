"""Concepts (Def. 1), core concept neurons (Alg. 1) and edge weights (eq. 4) from IG scores."""

from __future__ import annotations

import numpy as np


def top_k(phi: np.ndarray, k: int) -> np.ndarray:
    """Concept V_a: ids of the ``k`` patches with the largest ``phi`` (``(P,)``), best first; ties
    go to the lower patch id."""
    phi = np.asarray(phi, dtype=np.float64)
    order = np.lexsort((np.arange(phi.shape[0]), -phi))
    return order[: min(k, phi.shape[0])].astype(np.int64)


def rank_scores(*, abs_sum: np.ndarray, signed_sum: np.ndarray, n_patches: int, rank_by: str) -> np.ndarray:
    """Ranking score of every lower-layer channel (``(C,)``).

    ``abs_mean``: mean over V_a of each patch's |attribution| (the published reference);
    ``abs_sum``: |T(a, s, V_a)|, the absolute value of the summed attribution (the paper's Alg. 1)."""
    if rank_by == "abs_mean":
        return np.asarray(abs_sum, dtype=np.float64) / max(n_patches, 1)
    if rank_by == "abs_sum":
        return np.abs(np.asarray(signed_sum, dtype=np.float64))
    raise ValueError(f"unknown rank_by {rank_by!r}")


def core_neurons(scores: np.ndarray, tau: int) -> np.ndarray:
    """S_a: the ``tau`` channels with the highest score, best first (ties: lower index). Channels
    scoring exactly 0 (no influence at all) are never core neurons."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((np.arange(scores.shape[0]), -scores))[:tau]
    return order[scores[order] > 0].astype(np.int64)


def edge_weights(group_scores: np.ndarray) -> np.ndarray:
    """Eq. 4: ``w[j, i] = T[j, i] / sum_i |T[j, i]|`` for ``group_scores`` T ``(groups, cores)``;
    a group whose scores are all 0 gets weights 0."""
    t = np.asarray(group_scores, dtype=np.float64)
    norm = np.abs(t).sum(axis=1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 0)
