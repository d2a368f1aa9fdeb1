"""Directions in the graph on every backend: nodes, ALIGNED_WITH cosines and coverage checked
against numpy on the circuit itself, idempotent rewrites, and the two library queries."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import graph_dump
from directions_support import Planted, one_thread, world_images

from neurflow_graph.datasets.images import list_images
from neurflow_graph.directions.compute import compute_directions
from neurflow_graph.identity import model_uid, run_uid
from neurflow_graph.models.registry import LoadedModel, ModelSpec
from neurflow_graph.queries.library import run_query
from neurflow_graph.store.annotations import read_annotations
from neurflow_graph.store.directions import n_directions, write_directions
from neurflow_graph.store.ingest import ingest
from neurflow_graph.synthetic import synthetic_circuit

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
SHA = "cd" * 32


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    root = world_images(tmp_path_factory.mktemp("world") / "w", per_class=1, size=32)
    images = list_images(root)[0]
    model = Planted(seed=2).eval()
    spec = ModelSpec(name="planted", layers=["fc"], input_size=32, mean=None, std=None)
    loaded = LoadedModel(module=model, spec=spec, device=torch.device("cpu"), weights_sha256=SHA)
    return compute_directions(model=loaded, images=images, layers=["block", "planted"], samples=4000,
                              eval_images=8, n_exemplars=2, exemplar_directions=4)


@pytest.fixture(scope="module")
def circuit():
    return synthetic_circuit(class_index=1, class_name="lemon", model_name="planted", weights_sha256=SHA,
                             layers=("fc", "block", "planted"), widths=(8, 10, 12), tau=4, max_neuron_groups=3)


def test_write_link_and_query(store, result, circuit) -> None:
    ingest(store=store, circuit=circuit)
    wrote = write_directions(store=store, result=result)
    ruid, muid = run_uid(circuit), model_uid(circuit)
    assert muid == result.model_uid
    want_dirs = sum(n_directions(s) for s in result.sites)
    got = store.read("MATCH (:Model {uid: $m})-[:HAS_LAYER]->(:Layer)-[:HAS_BASIS]->(b:PCABasis)-[:HAS_DIRECTION]->"
                     "(d:Direction) RETURN b.site AS site, d.layer AS layer, d.index AS i, "
                     "d.explained_variance_ratio AS r", {"m": muid})
    assert len(got) == want_dirs == wrote.directions
    for row in got:
        assert row["r"] == pytest.approx(result.site(row["layer"], row["site"]).explained_variance_ratio[row["i"]])
    n_ex = store.read("MATCH (:Direction)-[e:EXEMPLAR]->(:Patch)-[:CROPPED_FROM]->(:Image) RETURN count(e) AS n")
    assert n_ex[0]["n"] == wrote.exemplars > 0

    # ALIGNED_WITH: recomputed here from the circuit's members and the PCs
    edges = store.read("MATCH (g:NeuronGroup)-[e:ALIGNED_WITH]->(d:Direction) RETURN g.layer AS layer, g.gid AS gid, "
                       "d.site AS site, d.index AS i, e.cosine AS cos, e.rank AS rank", {})
    expected = {}
    for g in circuit.neuron_groups:
        if g.layer not in ("block", "planted"):
            continue
        counts = Counter(idx for idx, _ in g.members)
        for s in (x for x in result.sites if x.layer == g.layer):
            comps = s.components[:n_directions(s)]
            c = np.zeros(s.dim)
            for i, n in counts.items():
                c[i] = n
            cos = comps @ (c / np.linalg.norm(c))
            for rank, i in enumerate(np.argsort(-np.abs(cos), kind="stable")[:3]):
                expected[(g.layer, g.id, s.site, rank + 1)] = (int(i), float(cos[i]))
    assert len(edges) == len(expected) == wrote.aligned
    for e in edges:
        i, cos = expected[(e["layer"], e["gid"], e["site"], e["rank"])]
        assert e["i"] == i and e["cos"] == pytest.approx(cos, abs=1e-9)

    # coverage: share of the variance in the span of the run's neurons at the layer
    for s in result.sites:
        neurons = sorted({n.index for n in circuit.neurons if n.layer == s.layer})
        fv = np.asarray(s.feature_variance)
        want = fv[neurons].sum() / fv.sum()
        rows = run_query(store=store, name="layer_completeness",
                         params={"model": muid, "layer": s.layer, "site": s.site, "run": ruid})
        assert len(rows) == 1 and rows[0]["coverage"] == pytest.approx(want)
        assert rows[0]["n_neurons"] == len(neurons) and rows[0]["pca_99"] == s.counts["pca"]["99"]
        assert rows[0]["pca_curve"] == pytest.approx(s.pca_curve)
        notes = read_annotations(store=store, target=ruid, key=f"directions.coverage:{s.layer}:{s.site}")
        assert len(notes) == 1 and notes[0].value == pytest.approx(want)

    rows = run_query(store=store, name="group_directions", params={"model": "planted", "class": "lemon"})
    assert len(rows) == len(expected)
    for r in rows:
        assert (r["direction"], pytest.approx(r["cosine"])) == \
            (expected[(r["layer"], r["group_id"], r["site"], r["rank"])][0],
             expected[(r["layer"], r["group_id"], r["site"], r["rank"])][1])
    one = run_query(store=store, name="group_directions",
                    params={"model": "planted", "class": "lemon", "layer": "block", "site": "pre", "gid": rows[0]["group_id"]
                            if rows[0]["layer"] == "block" else 0})
    assert all(r["layer"] == "block" and r["site"] == "pre" for r in one)

    # writing again changes nothing
    before = graph_dump(store)
    write_directions(store=store, result=result)
    after = graph_dump(store)
    strip = lambda dump: ([n for n in dump[0] if '"Annotation"' not in n], dump[1])  # noqa: E731 (created_at)
    assert strip(before) == strip(after)
