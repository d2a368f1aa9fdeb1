"""The N strongest group paths to the logit, by dynamic programming over layers (k-best Viterbi).

**Normalised flow.** A FEEDS edge carries the paper's group weight W(G_child, G_parent) (Section 3.5),
an unnormalised sum that grows with the sizes of the groups. For paths we use the *flow*

    f(C -> P) = W(C, P) / Σ_{C'} |W(C', P)|          (the sum over every child group C' feeding P)

so each parent group's incoming |f| sums to 1, as eq. 4 does for neurons. The **strength** of a
path G_d -> ... -> G_1 -> G_logit is the product of the f along it: a signed number in [-1, 1],
comparable across paths, classes and models. |strength| is the fraction of the logit's inflow
(by magnitude) that passes through exactly this chain, so over every path from one layer the
|strength| sum to at most 1 (exactly 1 when every group above the layer has a child group).

**Signs.** The sign of a strength is the product of the signs of its hops: +1 when the path has an
even number of inhibiting (negative) hops (net excitatory), -1 when odd (net inhibitory), 0 when a
hop's W is exactly 0. Paths are ranked by |strength| (an inhibiting chain matters as much as an
exciting one), ties broken by the path's group ids (bottom -> top), so the order is deterministic.

**Cost.** Since |product| = product of |f|, the N best paths from a group are the N best of
{|f(G -> P)| x (a best path from P)} over its parents P: one pass from the logit down, O(E · N log N)
for E group edges, instead of enumerating every path (their number grows exponentially with depth).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neurflow_graph.circuit import Circuit, GroupEdge

DEFAULT_PATHS_PER_GROUP = 32

GroupKey = tuple[str, int]  # (layer, group id)


@dataclass(frozen=True)
class BestPath:
    """One path from a start group to the logit group; lists run bottom -> top."""

    groups: tuple[GroupKey, ...]   # (layer, gid) from the start group to the logit group
    flows: tuple[float, ...]       # f of each hop (len(groups) - 1), signed
    strength: float                # product of flows, in [-1, 1]

    @property
    def sign(self) -> int:
        return (self.strength > 0) - (self.strength < 0)


def normalised_flows(group_edges: Sequence[GroupEdge]) -> dict[tuple[GroupKey, GroupKey], float]:
    """f(child -> parent) = W / Σ|W| into the parent; a parent with Σ|W| = 0 gives 0 on its edges."""
    inflow: dict[GroupKey, float] = defaultdict(float)
    for e in group_edges:
        inflow[(e.parent_layer, e.parent_group)] += abs(e.weight)
    out = {}
    for e in group_edges:
        parent = (e.parent_layer, e.parent_group)
        total = inflow[parent]
        out[((e.child_layer, e.child_group), parent)] = e.weight / total if total > 0 else 0.0
    return out


def best_paths(*, circuit: Circuit, n: int = DEFAULT_PATHS_PER_GROUP) -> dict[GroupKey, list[BestPath]]:
    """For every neuron group of ``circuit``, its ``n`` strongest paths to the logit group (see module doc).

    Groups with no path to the logit get an empty list; the logit group itself gets one path of
    length 0 and strength 1.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return _best_paths(layers=list(circuit.model.layers), groups=[(g.layer, g.id) for g in circuit.neuron_groups],
                       flows=normalised_flows(circuit.group_edges), n=n)


def _best_paths(*, layers: list[str], groups: list[GroupKey], flows: dict[tuple[GroupKey, GroupKey], float],
                n: int) -> dict[GroupKey, list[BestPath]]:
    depth = {layer: d for d, layer in enumerate(layers)}
    parents: dict[GroupKey, list[tuple[GroupKey, float]]] = defaultdict(list)
    for (child, parent), f in flows.items():
        parents[child].append((parent, f))
    best: dict[GroupKey, list[BestPath]] = {}
    for g in sorted(groups, key=lambda g: (depth[g[0]], g[1])):  # the logit layer first, then downwards
        if depth[g[0]] == 0:
            best[g] = [BestPath(groups=(g,), flows=(), strength=1.0)]
            continue
        candidates = ((abs(f * p.strength), g, parent, f, p) for parent, f in parents.get(g, ())
                      for p in best.get(parent, ()))
        top = heapq.nsmallest(n, candidates, key=lambda c: (-c[0], _gids(c[4].groups, first=c[1])))
        best[g] = [BestPath(groups=(g, *p.groups), flows=(f, *p.flows), strength=f * p.strength)
                   for _, _, _, f, p in top]
    return best


def _gids(groups: tuple[GroupKey, ...], *, first: GroupKey) -> tuple[int, ...]:
    return (first[1], *(gid for _, gid in groups))
