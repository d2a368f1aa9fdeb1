"""Parity: the same circuits in the embedded store and in Neo4j give the same rows for every library query.

Both stores get the conformance world (tests/test_queries_conformance.py: two models, an older run, a
run whose ingestion died before completing, a class name full of Cypher, annotations); each library
query then runs with the same parameters on both, and the row lists must be equal after a canonical
ordering (rows sorted by their JSON; floats compared to 12 significant digits, as FalkorDB sends
doubles as 15-digit text). Only full-text relevance scores are left out (``ENGINE_SPECIFIC``).
A query without parameters here fails the test: add them.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from conftest import NEO4J_MARKS, clear_graph
from neurflow_graph.queries.library import list_queries, run_query
from neurflow_graph.store.url import open_store
from test_queries_conformance import NASTY, World, _build_world

pytestmark = NEO4J_MARKS
# columns whose values belong to the engine, not to the data: full-text relevance (Lucene on Neo4j,
# RediSearch on FalkorDB) scores the same matches differently; the rows must still be the same
ENGINE_SPECIFIC = {"groups_by_label": ("score",)}


def _params(w: World) -> dict[str, list[dict]]:
    cat, dog = w.latest[("synthnet", "cat")], w.latest[("synthnet", "dog")]
    low, mid = cat.model.layers[-1], cat.model.layers[1]
    return {
        "class_circuit": [{"model": "synthnet", "class": "cat"}, {"model": "othernet", "class": "cat"},
                          {"model": "synthnet", "class": NASTY}, {"model": "synthnet", "class": "cat",
                                                                  "run": w.uid(w.old)},
                          {"model": "synthnet", "class": "cat", "source": "ground_truth"}],
        "shared_neurons_by_layer": [{"model": "synthnet", "class_a": "cat", "class_b": "dog"},
                                    {"model": "synthnet", "class_a": "bee", "class_b": NASTY}],
        "shared_groups": [{"model": "synthnet", "class_a": "cat", "class_b": "dog", "limit": 1000},
                          {"model": "synthnet", "class_a": "bee", "class_b": "dog", "min_shared": 2, "limit": 5}],
        "concept_paths_to_logit": [{"model": "synthnet", "class": "cat", "layer": low, "limit": 32},
                                   {"model": "synthnet", "class": "dog", "layer": mid, "group": 0}],
        "top_groups_per_layer": [{"model": "synthnet", "class": "cat"}, {"model": "synthnet", "class": NASTY,
                                                                         "top": 100}],
        "hub_neurons": [{"model": "synthnet", "limit": 10000}, {"model": "synthnet", "min_classes": 3}],
        "classes_sharing_group": [{"model": "synthnet", "class": "cat", "layer": mid, "group": 0},
                                  {"model": "synthnet", "class": "dog", "layer": low, "group": 1, "min_shared": 2}],
        "compare_models": [{"model_a": "synthnet", "model_b": "othernet", "class": "cat", "limit": 10000}],
        "polysemantic_neurons": [{"model": "synthnet", "limit": 10000}],
        "dashboard_summary": [{}, {"model": "othernet"}],
        "circuit_groups": [{"run": w.uid(cat)}, {"run": w.uid(dog)}],
        "group_members": [{"run": w.uid(cat), "layer": mid, "group": 0}, {"run": w.uid(dog), "layer": low, "group": 1}],
        "group_members": [{"run": w.uid(cat), "layer": mid, "group": 0}, {"run": w.uid(dog), "layer": low, "group": 1}],
        "groups_by_label": [{"text": "cat"}, {"text": "block1"}, {"text": "cat", "latest": False, "limit": 1000}],
        "group_directions": [{"model": "synthnet", "class": "cat"}],
        "layer_completeness": [{"model": "synthnet"}],
    }


def _canon(v):
    if isinstance(v, float):
        return float(f"{v:.12g}") if math.isfinite(v) else repr(v)
    if isinstance(v, list):
        return [_canon(x) for x in v]
    if isinstance(v, dict):
        return {k: _canon(x) for k, x in v.items()}
    return v


def _canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(_canon(r), sort_keys=True) for r in rows)


@pytest.fixture(scope="module")
def worlds(_session_server, neo4j_server):
    from conftest import _graph

    with _graph("falkordb", _session_server) as falkor:
        neo = open_store(neo4j_server, database=os.environ.get("NEO4J_DATABASE"))
        try:
            clear_graph(neo)
            neo.setup()
            yield _build_world(falkor), _build_world(neo)
        finally:
            try:
                clear_graph(neo)
            finally:
                neo.close()


def test_every_library_query_gives_the_same_rows_on_both_backends(worlds):
    wf, wn = worlds
    assert wf.run_uid.values() and sorted(wf.run_uid.values()) == sorted(wn.run_uid.values())
    params = _params(wf)
    missing = [q.name for q in list_queries() if q.name not in params]
    non_empty, differ = 0, []
    for name, cases in params.items():
        drop = ENGINE_SPECIFIC.get(name, ())
        for p in cases:
            a = [{k: v for k, v in r.items() if k not in drop} for r in run_query(store=wf.store, name=name, params=p)]
            b = [{k: v for k, v in r.items() if k not in drop} for r in run_query(store=wn.store, name=name, params=p)]
            if _canonical(a) != _canonical(b):
                only_a = sorted(set(_canonical(a)) - set(_canonical(b)))[:2]
                only_b = sorted(set(_canonical(b)) - set(_canonical(a)))[:2]
                differ.append(f"{name} {p}: {len(a)} vs {len(b)} rows; embedded only {only_a}; Neo4j only {only_b}")
            non_empty += bool(a)
    assert not differ, "embedded and Neo4j rows differ:\n" + "\n".join(differ)
    assert non_empty >= 20, "the parity cases should mostly return rows"
    assert not missing, f"a library query has no parity case: add parameters for {missing} in tests/test_store_parity.py"
