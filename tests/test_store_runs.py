"""Listing and deleting runs: deletion leaves exactly the graph of the remaining runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import clear_graph, graph_dump
from neurflow_graph.cli import cli
from neurflow_graph.errors import InputError
from neurflow_graph.store.ingest import ingest_circuit
from neurflow_graph.store.runs import delete_run, list_runs
from neurflow_graph.synthetic import synthetic_circuit


def small(index: int, name: str, **kw):
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def _without_latest(dump):
    """Node dump with Run.latest dropped (it legitimately depends on which runs exist)."""
    nodes, rels = dump
    out = []
    for line in nodes:
        d = json.loads(line)
        d.pop("latest", None)
        out.append(json.dumps(d, sort_keys=True))
    return sorted(out), rels


def test_delete_leaves_exactly_the_other_runs(store):
    cat, dog, cat2 = small(0, "cat"), small(1, "dog"), small(0, "cat", seed=4, created_at="2026-05-01T00:00:00+00:00")
    other = small(2, "bee", model_name="othernet")
    keep = [dog, cat2, other]
    for c in keep:
        ingest_circuit(store=store, circuit=c)
    expected = _without_latest(graph_dump(store))
    clear_graph(store)
    uids = {id(c): ingest_circuit(store=store, circuit=c) for c in [cat, *keep]}
    result = delete_run(store=store, uid=uids[id(cat)])
    assert _without_latest(graph_dump(store)) == expected
    assert result.deleted["SemanticGroup"] == sum(len(n.semantic_groups) for n in cat.neurons)
    assert result.deleted["NeuronGroup"] == len(cat.neuron_groups)


def test_deleting_every_run_empties_the_graph(store):
    circuits = [small(0, "cat"), small(1, "dog"), small(2, "bee", model_name="othernet")]
    uids = [ingest_circuit(store=store, circuit=c) for c in circuits]
    for u in uids[::-1]:
        delete_run(store=store, uid=u)
    assert store.read("MATCH (n) RETURN count(n) AS c") == [{"c": 0}]


def test_shared_nodes_survive_while_another_run_uses_them(store):
    a, b = small(0, "cat"), small(1, "dog")
    ua = ingest_circuit(store=store, circuit=a)
    ingest_circuit(store=store, circuit=b)
    shared = {(n.layer, n.index) for n in a.neurons} & {(n.layer, n.index) for n in b.neurons}
    assert shared, "the synthetic circuits should share neurons"
    delete_run(store=store, uid=ua)
    left = {(r["l"], r["i"]) for r in store.read("MATCH (n:Neuron) RETURN n.layer AS l, n.index AS i")}
    assert left == {(n.layer, n.index) for n in b.neurons}
    assert store.read("MATCH (c:Class) RETURN c.name AS n") == [{"n": "dog"}]
    assert store.read("MATCH (m:Model)-[:HAS_LAYER]->(l) RETURN count(l) AS c") == [{"c": len(b.model.layers)}]


def test_deletion_recomputes_latest(store):
    old = small(0, "cat", seed=1, created_at="2026-01-01T00:00:00+00:00")
    new = small(0, "cat", seed=2, created_at="2026-02-01T00:00:00+00:00")
    u_old, u_new = ingest_circuit(store=store, circuit=old), ingest_circuit(store=store, circuit=new)
    assert {r.uid: r.latest for r in list_runs(store=store)} == {u_old: False, u_new: True}
    delete_run(store=store, uid=u_new)
    assert {r.uid: r.latest for r in list_runs(store=store)} == {u_old: True}


def test_delete_unknown_run(store):
    with pytest.raises(InputError, match="no run"):
        delete_run(store=store, uid="0000000000000000")


def test_list_runs_reports_counts(store):
    c = small(0, "cat")
    uid = ingest_circuit(store=store, circuit=c)
    [info] = list_runs(store=store)
    assert (info.uid, info.model, info.class_name, info.class_index, info.status, info.latest, info.created_at) == \
        (uid, "synthnet@random", "cat", 0, "complete", True, c.created_at)
    assert info.counts["neurons"] == len(c.neurons)
    assert info.counts["edges"] == len(c.edges)
    assert info.counts["neuron_groups"] == len(c.neuron_groups)


def test_cli_runs_and_delete_run(embedded_dir, tmp_path):
    url = f"embedded:{embedded_dir}"
    for i, name in enumerate(["cat", "dog"]):
        small(i, name).save(tmp_path / "runs" / name)
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(tmp_path / "runs"), "--store", url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["runs", "--store", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.output)
    assert sorted(r["class_name"] for r in runs) == ["cat", "dog"] and all(r["status"] == "complete" for r in runs)
    table = runner.invoke(cli, ["runs", "--store", url])
    assert table.exit_code == 0 and all(r["uid"] in table.output for r in runs)
    lines = runner.invoke(cli, ["runs", "--store", url, "--format", "csv"]).output.strip().splitlines()
    assert lines[0].split(",")[:4] == ["uid", "model", "class", "status"]
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(r["uid"] for r in runs)
    cat = next(r["uid"] for r in runs if r["class_name"] == "cat")
    res = runner.invoke(cli, ["delete-run", cat, "--store", url])
    assert res.exit_code == 0 and cat in res.output
    res = runner.invoke(cli, ["runs", "--store", url, "--format", "json"])
    assert [r["class_name"] for r in json.loads(res.output)] == ["dog"]
    res = runner.invoke(cli, ["delete-run", cat, "--store", url])
    assert res.exit_code == 2 and res.output.startswith("Error: no run")
