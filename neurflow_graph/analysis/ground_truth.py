"""Score neuron groups against a concept world's per-pixel ground truth.

A concept is *present* in a patch when it covers at least ``min_coverage`` of the patch's box.
For a neuron group G with concept V_G (the union of its members' patches):

* ``rate_G(c)``: share of V_G's patches where c is present;
* ``rate_D(c)``: the same share over every patch the circuit uses (the baseline);
* the group's concept is ``argmax_c rate_G(c) - rate_D(c)``, the concept most over-represented in G
  (plain argmax of ``rate_G`` would name the background of every large crop);
* the group's purity is ``rate_G`` of that concept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from neurflow_graph.circuit import Circuit, NeuronGroup
from neurflow_graph.datasets.concept_world import WorldGroundTruth
from neurflow_graph.errors import InputError


@dataclass(frozen=True)
class GroupScore:
    layer: str
    group: int
    concept: str
    purity: float
    baseline: float
    n_patches: int


def group_patches(circuit: Circuit, group: NeuronGroup) -> set[int]:
    """Patch ids of V_G: the union of the group's members' semantic groups."""
    sgs = {(n.index, g.id): g.patches for n in circuit.layer_neurons(group.layer) for g in n.semantic_groups}
    return {pid for idx, j in group.members for pid in sgs[(idx, j)]}


def _present(circuit: Circuit, truth: WorldGroundTruth, patch_ids: Iterable[int],
             min_coverage: float) -> dict[int, set[str]]:
    """patch id -> the concepts covering at least ``min_coverage`` of its box."""
    patches = {p.id: p for p in circuit.patches}
    images = {i.id: i for i in circuit.images}
    out = {}
    for pid in patch_ids:
        p = patches[pid]
        fractions = truth.fractions(image=images[p.image].sha256, box=p.box)
        out[pid] = {c for c, f in fractions.items() if f >= min_coverage}
    return out


def score_groups(*, circuit: Circuit, truth: WorldGroundTruth, min_coverage: float = 0.1) -> list[GroupScore]:
    """One :class:`GroupScore` per neuron group of ``circuit`` (images must belong to ``truth``)."""
    if not 0.0 < min_coverage <= 1.0:
        raise InputError(f"min_coverage must be in (0, 1], got {min_coverage}")
    used = sorted({pid for n in circuit.neurons for g in n.semantic_groups for pid in g.patches})
    present = _present(circuit, truth, used, min_coverage)
    concepts = sorted(set().union(*present.values())) if present else []
    base = {c: sum(c in s for s in present.values()) / len(present) for c in concepts}
    scores = []
    for g in circuit.neuron_groups:
        pids = sorted(group_patches(circuit, g))
        rate = {c: sum(c in present[p] for p in pids) / len(pids) for c in concepts}
        best = max(concepts, key=lambda c: (rate[c] - base[c], rate[c], c)) if concepts else "none"
        scores.append(GroupScore(layer=g.layer, group=g.id, concept=best, purity=rate.get(best, 0.0),
                                 baseline=base.get(best, 0.0), n_patches=len(pids)))
    return scores


def ground_truth_annotations(*, circuit: Circuit, truth: WorldGroundTruth, min_coverage: float = 0.1) -> list:
    """Every neuron group's ground-truth ``concept`` and ``purity`` as annotations (source
    ``ground_truth``; ``meta`` holds the baseline rate, the number of patches and ``min_coverage``).
    They target the groups of run ``identity.run_uid(circuit)`` and leave the circuit unchanged."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.identity import neuron_group_uid, run_uid

    uid = run_uid(circuit)
    out = []
    for s in score_groups(circuit=circuit, truth=truth, min_coverage=min_coverage):
        target = neuron_group_uid(uid, s.layer, s.group)
        meta = {"baseline": round(s.baseline, 6), "n_patches": s.n_patches, "min_coverage": min_coverage}
        out.append(make_annotation(target=target, target_label="NeuronGroup", key="concept", value=s.concept,
                                   source="ground_truth", meta=meta))
        out.append(make_annotation(target=target, target_label="NeuronGroup", key="purity",
                                   value=round(s.purity, 6), source="ground_truth", meta=meta))
    return out
