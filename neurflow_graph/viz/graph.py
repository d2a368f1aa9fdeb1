"""A class circuit as plain data for pictures: neuron groups (nodes) and FEEDS weights (edges).

Built from the rows of the library query ``circuit_groups`` (one row per group: label, concept,
purity, size, weighted parent groups, mosaic reference), so a drawing shows exactly what the store holds. :func:`prune` keeps edges by ``|weight|`` and top-N per parent, then the groups
that still reach the logit group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

NodeKey = tuple[str, int]  # (layer, group id)


@dataclass(frozen=True)
class GroupNode:
    layer: str
    depth: int
    gid: int
    label: str | None = None
    concept: str | None = None
    purity: float | None = None
    label_source: str | None = None
    concept_source: str | None = None
    n_members: int = 0
    mosaic: str | None = None
    mosaic_sha256: str | None = None

    @property
    def key(self) -> NodeKey:
        return (self.layer, self.gid)

    def caption(self, *, top_depth: int | None = None) -> str:
        """The text a picture writes under the group: its label; else its ground-truth concept marked as
        such, ``gt flower 0.80`` (``gt`` + purity), or another source's concept; else ``group``. A
        ground-truth concept is what the group's exemplar patches contain, measured on the concept world:
        it is never shown as the meaning of the logit group (depth ``top_depth``), whose meaning is its class."""
        if self.label:
            return self.label
        if top_depth is not None and self.depth == top_depth:
            return "logit"
        if self.concept:
            short = str(self.concept).split(":", 1)[-1]
            if self.concept_source == "ground_truth" or self.concept_source is None:
                return f"gt {short}" + (f" {self.purity:.2f}" if self.purity is not None else "")
            return short
        return "group"

    @property
    def name(self) -> str:
        """What a picture calls the group: its label, else its concept (prefix ``kind:`` dropped), else ``layer/gid``."""
        if self.label:
            return self.label
        if self.concept:
            return str(self.concept).split(":", 1)[-1]
        return f"{self.layer}/{self.gid}"


@dataclass(frozen=True)
class GroupEdge:
    child: NodeKey
    parent: NodeKey
    weight: float


@dataclass
class CircuitGraph:
    run: str
    model: str
    class_name: str
    layers: list[str]  # top (logit) -> bottom, the layers that hold groups
    nodes: dict[NodeKey, GroupNode] = field(default_factory=dict)
    edges: list[GroupEdge] = field(default_factory=list)

    def layer_of_depth(self) -> dict[str, int]:
        return {n.layer: n.depth for n in self.nodes.values()}


def parse_parent(text: str) -> NodeKey:
    """``'layer/gid'`` (class_circuit's ``parents``) -> ``(layer, gid)``."""
    layer, _, gid = str(text).rpartition("/")
    return layer, int(gid)


def from_rows(rows: Sequence[Mapping[str, Any]]) -> CircuitGraph:
    """The graph of one run from its ``circuit_groups`` rows (one per group: label, concept, purity,
    size, parents and weights, mosaic)."""
    if not rows:
        raise ValueError("no groups: the run holds no neuron group")
    first = rows[0]
    nodes: dict[NodeKey, GroupNode] = {}
    edges: list[GroupEdge] = []
    for r in rows:
        key = (r["layer"], int(r["group_id"]))
        nodes[key] = GroupNode(layer=r["layer"], depth=int(r["depth"]), gid=int(r["group_id"]), label=r.get("label"),
                               label_source=r.get("label_source"), concept_source=r.get("concept_source"),
                               concept=r.get("concept"), purity=r.get("purity"), n_members=int(r.get("n_members") or 0),
                               mosaic=r.get("mosaic"), mosaic_sha256=r.get("mosaic_sha256"))
        for parent, w in zip(r.get("parents") or [], r.get("weights") or []):
            edges.append(GroupEdge(child=key, parent=parse_parent(parent), weight=float(w)))
    layers = [layer for layer, _ in sorted({(n.layer, n.depth) for n in nodes.values()}, key=lambda t: t[1])]
    return CircuitGraph(run=first["run"], model=first["model"], class_name=first["class_name"], layers=layers,
                        nodes=nodes, edges=edges)


def prune(graph: CircuitGraph, *, min_weight: float = 0.0, top: int | None = None) -> CircuitGraph:
    """Edges with ``|weight| >= min_weight``, at most ``top`` per parent group (largest ``|weight|``;
    ties by child key); then only the groups with a path to the logit layer's groups."""
    if min_weight < 0:
        raise ValueError(f"min_weight must be >= 0, got {min_weight}")
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    kept = [e for e in graph.edges if abs(e.weight) >= min_weight]
    if top is not None:
        by_parent: dict[NodeKey, list[GroupEdge]] = {}
        for e in kept:
            by_parent.setdefault(e.parent, []).append(e)
        kept = [e for es in by_parent.values() for e in sorted(es, key=lambda e: (-abs(e.weight), e.child))[:top]]
    top_layer = graph.layers[0]
    reach = {k for k in graph.nodes if k[0] == top_layer}
    for layer in graph.layers[1:]:  # edges join adjacent layers: one pass top-down suffices
        reach |= {e.child for e in kept if e.child[0] == layer and e.parent in reach}
    edges = [e for e in kept if e.child in reach and e.parent in reach]
    edges.sort(key=lambda e: (graph.nodes[e.parent].depth, e.parent[1], e.child[1]))
    return replace(graph, nodes={k: v for k, v in graph.nodes.items() if k in reach}, edges=edges)
