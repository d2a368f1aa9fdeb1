"""Layered layout of a :class:`~neurflow_graph.viz.graph.CircuitGraph`: igraph's Sugiyama layout.

Layers are fixed by depth (the logit layer on top, y = 0; depth d at y = d); igraph orders the groups
within each layer with the barycenter heuristic to reduce edge crossings (Sugiyama, Tagawa & Toda
1981) and spaces them at least one unit apart. Edges only join adjacent layers, so no dummy
vertices arise. :func:`count_crossings` is a plain-Python check of the result.
"""

from __future__ import annotations

from collections.abc import Iterable

from neurflow_graph.viz.graph import CircuitGraph, NodeKey

MAX_ITER = 200


def layered_layout(graph: CircuitGraph, *, maxiter: int = MAX_ITER) -> dict[NodeKey, tuple[float, float]]:
    """``{(layer, gid): (x, y)}``; y is the depth, x >= 0 with gaps >= 1 within a layer."""
    import igraph

    keys = sorted(graph.nodes, key=lambda k: (graph.nodes[k].depth, k[1]))
    index = {k: i for i, k in enumerate(keys)}
    g = igraph.Graph(n=len(keys), edges=[(index[e.parent], index[e.child]) for e in graph.edges], directed=True)
    g.es["weight"] = [abs(e.weight) for e in graph.edges]
    layers = [graph.nodes[k].depth for k in keys]
    layout = g.layout_sugiyama(layers=layers, hgap=1, vgap=1, maxiter=maxiter)
    x = {k: float(layout.coords[i][0]) for k, i in index.items()}
    # centre every layer on the widest one (a shift per layer keeps the order igraph chose)
    spans: dict[int, list[float]] = {}
    for k, v in x.items():
        spans.setdefault(graph.nodes[k].depth, []).append(v)
    middle = {d: (min(v) + max(v)) / 2 for d, v in spans.items()}
    widest = max(spans, key=lambda d: (max(spans[d]) - min(spans[d]), -d)) if spans else 0
    return {k: (v - middle[graph.nodes[k].depth] + middle.get(widest, 0.0), float(graph.nodes[k].depth))
            for k, v in x.items()}


def count_crossings(edges: Iterable[tuple[NodeKey, NodeKey]], x: dict[NodeKey, float]) -> int:
    """Pairs of (child, parent) edges between the same two layers that cross, given x positions."""
    by_layers: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for child, parent in edges:
        by_layers.setdefault((child[0], parent[0]), []).append((x[child], x[parent]))
    n = 0
    for segs in by_layers.values():
        for i in range(len(segs)):
            for j in range(i + 1, len(segs)):
                (a0, a1), (b0, b1) = segs[i], segs[j]
                if (a0 - b0) * (a1 - b1) < 0:
                    n += 1
    return n
