"""k-best Viterbi over layers (analysis/best_paths.py) against networkx enumeration of every path."""

from __future__ import annotations

import math
from collections import defaultdict

import networkx as nx
import pytest

from neurflow_graph.analysis.best_paths import best_paths
from neurflow_graph.circuit import GroupEdge
from neurflow_graph.synthetic import synthetic_circuit


def _enumerated(c):
    """Every path of every group to the logit, strength = product of W / Σ|W| into each parent (plain networkx)."""
    inflow = defaultdict(float)
    for e in c.group_edges:
        inflow[(e.parent_layer, e.parent_group)] += abs(e.weight)
    g = nx.DiGraph()
    g.add_nodes_from((x.layer, x.id) for x in c.neuron_groups)
    for e in c.group_edges:
        p = (e.parent_layer, e.parent_group)
        g.add_edge((e.child_layer, e.child_group), p, f=e.weight / inflow[p])
    logit = [n for n in g if n[0] == c.model.layers[0]]
    out = {}
    for s in g:
        paths = [p for t in logit for p in nx.all_simple_paths(g, s, t)] if s not in logit else [[s]]
        scored = [(tuple(p), math.prod(g.edges[u, v]["f"] for u, v in zip(p, p[1:]))) for p in paths]
        out[s] = sorted(scored, key=lambda x: (-abs(x[1]), [gid for _, gid in x[0]]))
    return out


@pytest.mark.parametrize("seed, n", [(0, 1), (1, 3), (2, 8), (3, 1000)])
def test_k_best_equals_the_top_of_full_enumeration(seed, n):
    c = synthetic_circuit(class_index=1, class_name="x", seed=seed, widths=(4, 16, 16, 12, 12),
                          layers=("fc", "b4", "b3", "b2", "b1"), max_neuron_groups=5)
    assert any(e.weight < 0 for e in c.group_edges), "negative weights should be exercised"
    got, want = best_paths(circuit=c, n=n), _enumerated(c)
    assert set(got) == set(want)
    for key, paths in want.items():
        top = paths[:n]
        assert [p.groups for p in got[key]] == [p for p, _ in top], key
        for p, (_, s) in zip(got[key], top):
            assert math.isclose(p.strength, s, rel_tol=1e-12) and -1 <= p.strength <= 1
            assert math.isclose(math.prod(p.flows), p.strength, rel_tol=1e-12)
            assert p.sign == (s > 0) - (s < 0)
    if n == 1000:  # everything kept: |strength| over a layer's paths is the logit's whole inflow (<= 1)
        for depth, layer in enumerate(c.model.layers[1:], start=1):
            total = sum(abs(p.strength) for k, ps in got.items() if k[0] == layer for p in ps)
            assert total <= 1 + 1e-9 and (depth > 1 or math.isclose(total, 1.0, rel_tol=1e-9))


def test_signs_multiply_and_weights_are_normalised_per_parent():
    # logit group T fed by A (W = -3) and B (W = +1); A fed by C (W = 10) and D (W = -10); B fed by C (W = 2)
    c = synthetic_circuit(class_index=0, class_name="x", widths=(2, 4, 4), layers=("fc", "b2", "b1"))
    edges = [GroupEdge("fc", 0, "b2", 0, -3.0), GroupEdge("fc", 0, "b2", 1, 1.0),
             GroupEdge("b2", 0, "b1", 0, 10.0), GroupEdge("b2", 0, "b1", 1, -10.0), GroupEdge("b2", 1, "b1", 0, 2.0)]
    from dataclasses import replace

    from neurflow_graph.circuit import NeuronGroup

    groups = [NeuronGroup("fc", 0, [[0, 0]]), NeuronGroup("b2", 0, [[0, 0]]), NeuronGroup("b2", 1, [[1, 0]]),
              NeuronGroup("b1", 0, [[0, 0]]), NeuronGroup("b1", 1, [[1, 0]])]
    c = replace(c, group_edges=edges, neuron_groups=groups)
    got = best_paths(circuit=c, n=5)
    # C -> A -> T: (10/20) * (-3/4) = -0.375 (inhibiting); C -> B -> T: (2/2) * (1/4) = +0.25
    assert [(p.groups, p.strength, p.sign) for p in got[("b1", 0)]] == [
        ((("b1", 0), ("b2", 0), ("fc", 0)), -0.375, -1), ((("b1", 0), ("b2", 1), ("fc", 0)), 0.25, 1)]
    # D -> A -> T: (-10/20) * (-3/4) = +0.375: two inhibiting hops make an exciting path
    assert [(p.strength, p.sign) for p in got[("b1", 1)]] == [(0.375, 1)]
