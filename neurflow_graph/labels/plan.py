"""Which questions labelling a circuit asks (Sec. 5.2): plain data in, requests out, no I/O.

* **caption**: one request per neuron group with a mosaic;
* **formation**: one request per neuron group that has children at the layer below: Group 1 is
  the group, Groups 2..N are its ``children`` strongest children, ranked by the group weight
  W(child, group) of Sec. 3.5 (signed, highest first; ties by gid). Walking every layer covers
  the whole circuit, from the logit group down to the leaf layer's parents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from neurflow_graph.circuit import Circuit
from neurflow_graph.errors import InputError
from neurflow_graph.labels.requests import ChatRequest, Image, caption_request, formation_request

DEFAULT_CHILDREN = 3


@dataclass
class Plan:
    requests: list[ChatRequest] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per group left out, and why


def strongest_children(circuit: Circuit, *, layer: str, gid: int, limit: int) -> list[tuple[str, int, float]]:
    """``(child_layer, child_gid, W)`` of group ``layer/gid`` at the layer below, strongest first."""
    layers = circuit.model.layers
    pos = layers.index(layer)
    if pos + 1 >= len(layers):
        return []
    below = layers[pos + 1]
    rows = [(e.child_layer, e.child_group, e.weight) for e in circuit.group_edges
            if e.parent_layer == layer and e.parent_group == gid and e.child_layer == below]
    rows.sort(key=lambda r: (-r[2], r[1]))
    return rows[:limit]


def select_layers(circuit: Circuit, layers: Sequence[str] | None) -> list[str]:
    """``layers`` checked against the circuit (all of them when empty), in circuit order."""
    known = list(circuit.model.layers)
    if not layers:
        return known
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise InputError(f"layer {unknown[0]!r} is not in this run's circuit; its layers: {', '.join(known)}")
    return [name for name in known if name in set(layers)]


def plan_labels(*, circuit: Circuit, mosaics: Mapping[tuple[str, int], Image], model: str,
                layers: Sequence[str] | None = None, children: int = DEFAULT_CHILDREN,
                caption: bool = True, formation: bool = True) -> Plan:
    """Caption and formation requests for the neuron groups of ``layers`` (all by default)."""
    if children < 1:
        raise InputError(f"--children must be at least 1, got {children}")
    plan = Plan()
    chosen = set(select_layers(circuit, layers))
    groups = [g for layer in circuit.model.layers if layer in chosen
              for g in sorted((g for g in circuit.neuron_groups if g.layer == layer), key=lambda g: g.id)]
    for g in groups:
        mosaic = mosaics.get((g.layer, g.id))
        if mosaic is None:
            plan.skipped.append(f"{g.layer}/{g.id}: no exemplar mosaic")
            continue
        if caption:
            plan.requests.append(caption_request(model=model, layer=g.layer, gid=g.id, mosaic=mosaic))
        if not formation:
            continue
        kids = strongest_children(circuit, layer=g.layer, gid=g.id, limit=len(circuit.neuron_groups))
        with_mosaic = [(cl, cg, w, mosaics[(cl, cg)]) for cl, cg, w in kids if (cl, cg) in mosaics][:children]
        if kids and not with_mosaic:
            plan.skipped.append(f"{g.layer}/{g.id}: formation left out, no child group has a mosaic")
        if with_mosaic:
            plan.requests.append(formation_request(model=model, layer=g.layer, gid=g.id, mosaic=mosaic,
                                                   children=with_mosaic))
    return plan
