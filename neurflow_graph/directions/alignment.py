"""How a neuron group sits among a layer's principal directions, and how much of the layer a
circuit's neurons cover.

*Representative vector* of a neuron group ``G`` at a layer with ``C`` channels: the normalised
mean of the one-hot vectors of its member semantic groups' neurons,
``r_G = c / ||c||`` with ``c_i`` = number of the group's semantic groups that belong to neuron ``i``.
It is the direction in activation space along which "the group fires": moving along ``r_G``
raises exactly the group's neurons, each in proportion to how many of its concepts it carries.
Its cosine with a unit principal component ``u`` is ``sum_i c_i u_i / ||c||`` (signed, under the
stored sign of ``u``). Because a PC's sign is a convention, groups are ranked by ``|cosine|``.
``span_cosine`` is sign-free: ``||P_G u||``, the cosine between ``u`` and its projection onto the
span of the group's neurons (1 when ``u`` lies inside that span).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from neurflow_graph.errors import InputError


def representative_vector(member_neurons: Sequence[int], dim: int) -> np.ndarray:
    """``r_G`` ``(dim,)`` from the neuron index of each member semantic group (repeats count)."""
    if not member_neurons:
        raise InputError("a neuron group without members has no representative vector")
    c = np.zeros(dim)
    for i, n in Counter(int(m) for m in member_neurons).items():
        if not 0 <= i < dim:
            raise InputError(f"neuron {i} is out of range for a layer of {dim} channels")
        c[i] = n
    return c / np.linalg.norm(c)


def group_alignment(*, components: np.ndarray, member_neurons: Sequence[int], top: int = 3) -> list[dict[str, float]]:
    """The ``top`` directions (rows of ``components`` ``(k, C)``, unit norm) with the largest
    ``|cosine|`` to the group's representative vector: ``[{index, cosine, abs_cosine, span_cosine, rank}]``."""
    comps = np.asarray(components, dtype=np.float64)
    r = representative_vector(member_neurons, comps.shape[1])
    cos = comps @ r
    neurons = sorted(set(int(m) for m in member_neurons))
    span = np.sqrt(np.sum(comps[:, neurons] ** 2, axis=1))
    order = np.lexsort((np.arange(len(cos)), -np.abs(cos)))[:top]
    return [{"index": int(i), "cosine": float(cos[i]), "abs_cosine": float(abs(cos[i])),
             "span_cosine": float(span[i]), "rank": rank + 1} for rank, i in enumerate(order)]
