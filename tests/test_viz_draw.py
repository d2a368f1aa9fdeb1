"""Circuit pictures: pruning against plain Python, igraph's layered layout against a crossing count,
the draw command end to end on a store; the NeoDash export against the query library's text."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.cli import cli
from neurflow_graph.synthetic import synthetic_circuit
from neurflow_graph.viz.graph import CircuitGraph, GroupEdge, GroupNode, prune
from neurflow_graph.viz.layout import count_crossings, layered_layout


def _graph(circuit) -> CircuitGraph:
    depth = {name: d for d, name in enumerate(circuit.model.layers)}
    nodes = {(g.layer, g.id): GroupNode(layer=g.layer, depth=depth[g.layer], gid=g.id) for g in circuit.neuron_groups}
    edges = [GroupEdge(child=(e.child_layer, e.child_group), parent=(e.parent_layer, e.parent_group), weight=e.weight)
             for e in circuit.group_edges]
    return CircuitGraph(run="r", model="m", class_name="c", layers=list(circuit.model.layers), nodes=nodes, edges=edges)


@pytest.fixture
def graph():
    return _graph(synthetic_circuit(class_index=2, class_name="bee", tau=6, max_neuron_groups=6, seed=3))


def test_prune_keeps_edges_by_weight_and_top_n_then_what_reaches_the_logit(graph):
    w = sorted(abs(e.weight) for e in graph.edges)[len(graph.edges) // 2]
    pruned = prune(graph, min_weight=w, top=2)
    # oracle: plain Python, written differently
    kept = []
    for parent in {e.parent for e in graph.edges}:
        mine = [e for e in graph.edges if e.parent == parent and abs(e.weight) >= w]
        kept += sorted(mine, key=lambda e: -abs(e.weight))[:2]
    alive = {k for k in graph.nodes if k[0] == graph.layers[0]}
    changed = True
    while changed:
        changed = False
        for e in kept:
            if e.parent in alive and e.child not in alive:
                alive.add(e.child)
                changed = True
    assert {(e.child, e.parent) for e in pruned.edges} == {(e.child, e.parent) for e in kept
                                                          if e.child in alive and e.parent in alive}
    assert set(pruned.nodes) == alive
    assert all(abs(e.weight) >= w for e in pruned.edges)
    assert prune(graph).edges and len(prune(graph).edges) == len(graph.edges)


def test_layered_layout_puts_layers_in_rows_and_reduces_crossings(graph):
    pos = layered_layout(graph)
    assert set(pos) == set(graph.nodes)
    for key, (x, y) in pos.items():
        assert y == graph.nodes[key].depth
    for d in {n.depth for n in graph.nodes.values()}:
        xs = sorted(x for k, (x, y) in pos.items() if y == d)
        assert all(b - a >= 1 - 1e-9 for a, b in zip(xs, xs[1:]))
    pairs = [(e.child, e.parent) for e in graph.edges]
    laid = count_crossings(pairs, {k: p[0] for k, p in pos.items()})
    naive = count_crossings(pairs, {k: float(k[1]) for k in graph.nodes})  # groups in id order
    assert naive > 0 and laid <= naive


def test_count_crossings_matches_a_brute_force_geometric_check():
    rng = np.random.default_rng(0)
    a = [("L1", i) for i in range(5)]
    b = [("L0", i) for i in range(4)]
    x = {k: float(v) for k, v in zip(a, rng.permutation(5))} | {k: float(v) for k, v in zip(b, rng.permutation(4))}
    edges = [(c, p) for c in a for p in b if rng.random() < 0.5]

    def cross(e, f):  # segments (x_c, 1) -> (x_p, 0) intersect strictly between the rows
        (c1, p1), (c2, p2) = e, f
        d0, d1 = x[c1] - x[c2], x[p1] - x[p2]
        return d0 * d1 < 0

    assert count_crossings(edges, x) == sum(cross(e, f) for e, f in itertools.combinations(edges, 2))


def test_draw_command_writes_png_and_svg_and_rejects_bad_input(tmp_path, falkor_graph):
    from neurflow_graph.store.ingest import ingest_runs, load_runs
    from neurflow_graph.viz.exemplars import write_exemplars
    from test_viz_exemplars import _images

    store = falkor_graph
    circuit = synthetic_circuit(class_index=1, class_name="bee", k=20)
    run_dir = tmp_path / "run"
    _images(run_dir, circuit)
    circuit.save(run_dir)
    write_exemplars(circuit=circuit, run_dir=run_dir)
    [res] = ingest_runs(store=store, runs=load_runs([run_dir]))
    from neurflow_graph.viz.draw import draw_run

    png, drawn = draw_run(store=store, run=res.uid[:8], out=tmp_path / "c.png", min_weight=0.0)
    assert len(drawn.nodes) == len(circuit.neuron_groups) and len(drawn.edges) == len(circuit.group_edges)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 500
    svg, _ = draw_run(store=store, run=res.uid, out=tmp_path / "c.svg", top=1)
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "image" in text  # mosaics embedded
    bad = CliRunner().invoke(cli, ["draw", "--run", res.uid, "--out", str(tmp_path / "c.gif")])
    assert bad.exit_code == 2 and "png or .svg" in bad.output and "Traceback" not in bad.output


def test_neodash_reports_are_the_library_queries_verbatim(tmp_path):
    from neurflow_graph.queries.library import list_queries

    out = tmp_path / "dashboard.json"
    res = CliRunner().invoke(cli, ["neodash", "--out", str(out), "-p", "class=bee"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.4" and doc["pages"]
    reports = [r for p in doc["pages"] for r in p["reports"]]
    library = {q.name: q for q in list_queries()}
    by_name = {r["title"].split(":", 1)[0]: r for r in reports}
    assert set(by_name) == set(library)
    for name, q in library.items():
        assert by_name[name]["query"] == q.text_for("neo4j")
        assert {p.name for p in q.params} <= set(doc["settings"]["parameters"])
    assert doc["settings"]["parameters"]["class"] == "bee"
    assert len({r["id"] for r in reports}) == len(reports)
    bad = CliRunner().invoke(cli, ["neodash", "--out", str(out), "-p", "klass=bee"])
    assert bad.exit_code == 2 and "klass" in bad.output


def test_picture_names_mark_ground_truth_and_never_name_the_logit_by_it():
    """A label names a group; a ground-truth concept is written as such ("gt", with its purity); the logit
    group (top depth) is never called by its ground-truth concept; another source's concept is unmarked."""
    logit = GroupNode(layer="fc", depth=0, gid=0, concept="object:flower", purity=0.8, concept_source="ground_truth")
    assert logit.caption(top_depth=0) == "logit"
    assert "flower" not in logit.caption(top_depth=0)
    low = GroupNode(layer="conv3", depth=2, gid=1, concept="object:flower", purity=0.8, concept_source="ground_truth")
    assert low.caption(top_depth=0) == "gt flower 0.80"
    labelled = GroupNode(layer="fc", depth=0, gid=0, label="yellow stripes", label_source="mllm:gpt-4o",
                         concept="object:flower", purity=0.8, concept_source="ground_truth")
    assert labelled.caption(top_depth=0) == "yellow stripes"
    mine = GroupNode(layer="conv3", depth=2, gid=1, concept="wing", concept_source="user")
    assert mine.caption(top_depth=0) == "wing"
    assert GroupNode(layer="conv3", depth=2, gid=1).caption(top_depth=0) == "group"
