"""The paper's metric M (sec. 5, app. F): how confidently a neuron group sees its concept in an input.

    M(v, S, D) = exp( (1/|S|) sum_{s in S} log( |phi_s(v)| / max(phi_s, D) ) )

the geometric mean of the group's neurons' activations, each divided by its highest activation on
the patch set D. High only when every neuron of S is active; 0 as soon as one is silent (phi = 0
after a ReLU). The paper evaluates it on S'_G, the (at most) 5 members of the group G closest to
the group's centre, each member represented by r_{s,j}: the mean over its semantic group's patches
of the channel means of the layer below (the leaf layer: of its own layer), as the neuron groups
were clustered (sec. 3.5); distances are l2, the centre is the mean of the members' vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurflow_graph.errors import InputError

CORE_SUBSET_SIZE = 5


def nearest_members(vectors: np.ndarray, size: int = CORE_SUBSET_SIZE) -> np.ndarray:
    """Row ids of the ``size`` rows of ``vectors`` ``(m, d)`` closest (l2) to their mean, closest first
    (ties: lower row)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise InputError(f"member vectors must be a non-empty (members, features) array, got shape {v.shape}")
    d = np.linalg.norm(v - v.mean(0, keepdims=True), axis=1)
    return np.lexsort((np.arange(len(d)), d))[:size]


def core_subset(members: Sequence[tuple[int, int]], vectors: np.ndarray, size: int = CORE_SUBSET_SIZE) -> list[int]:
    """S'_G: the distinct neurons of the ``size`` members ``(neuron, j)`` nearest the group's centre
    (``vectors[i]`` = r of member i). A neuron met twice counts once; order: nearest first."""
    if len(members) != len(vectors):
        raise InputError(f"{len(members)} members but {len(vectors)} vectors")
    order = nearest_members(vectors, size=len(members))
    out: list[int] = []
    for i in order:
        n = int(members[int(i)][0])
        if n not in out:
            out.append(n)
        if len(out) == size:
            break
    return out


def group_metric(phi: np.ndarray, maxima: np.ndarray) -> np.ndarray:
    """M for each input: ``phi`` ``(N, |S|)`` the activations of the group's neurons S, ``maxima``
    ``(|S|,)`` their highest activations on D (> 0) -> ``(N,)`` in [0, inf) (<= 1 on D itself)."""
    phi = np.asarray(phi, dtype=np.float64)
    maxima = np.asarray(maxima, dtype=np.float64)
    if phi.ndim != 2 or maxima.shape != (phi.shape[1],) or phi.shape[1] == 0:
        raise InputError(f"phi must be (inputs, neurons) and maxima (neurons,), got {phi.shape} and {maxima.shape}")
    if not (maxima > 0).all():
        raise InputError("every neuron of the group needs a positive maximum activation on D")
    ratio = np.abs(phi) / maxima
    with np.errstate(divide="ignore"):
        return np.exp(np.log(ratio).mean(axis=1))
