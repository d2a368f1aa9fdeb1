"""Ingestion: the data model, idempotency, the run status protocol and the write discipline.

Expected graphs are computed from Circuit objects with plain Python (``oracle``), never by the
ingestion code under test.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
import re
from collections import Counter

import pytest

from conftest import clear_graph, graph_dump
from neurflow_graph.circuit import Circuit
from neurflow_graph.errors import RunFormatError
from neurflow_graph.store.base import GraphStore
from neurflow_graph.store.ingest import circuit_rows, ingest, ingest_circuit, run_uid
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit

LABELS = ("Model", "Layer", "Neuron", "Class", "Run", "SemanticGroup", "NeuronGroup", "Patch", "Image")
TYPES = ("HAS_LAYER", "HAS_NEURON", "OF_MODEL", "EXPLAINS", "HAS_GROUP", "OF", "CONTRIBUTES", "HAS_MEMBER",
         "FEEDS", "EXEMPLAR", "CROPPED_FROM", "SHARES_PATCHES")


def small(index: int, name: str, **kw) -> Circuit:
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def oracle(circuits: list[Circuit]) -> tuple[Counter, Counter]:
    """Node counts per label and relationship counts per type for ``circuits`` ingested together."""
    nodes: dict[str, set] = {lb: set() for lb in LABELS}
    rels: dict[str, set] = {t: set() for t in TYPES}
    for c in circuits:
        m = (c.model.name, c.model.weights_sha256)
        run = json.dumps(c.to_dict(), sort_keys=True)
        nodes["Model"].add(m)
        nodes["Class"].add(c.class_.name)
        nodes["Run"].add(run)
        rels["OF_MODEL"].add((run, m))
        rels["EXPLAINS"].add((run, c.class_.name))
        for layer in c.model.layers:
            nodes["Layer"].add((m, layer))
            rels["HAS_LAYER"].add((m, layer))
        sha = {im.id: im.sha256 for im in c.images}
        box = {}
        for p in c.patches:
            box[p.id] = (sha[p.image], tuple(p.box))
            nodes["Patch"].add(box[p.id])
            nodes["Image"].add(sha[p.image])
            rels["CROPPED_FROM"].add((box[p.id], sha[p.image]))
        for n in c.neurons:
            neuron = (m, n.layer, n.index)
            nodes["Neuron"].add(neuron)
            rels["HAS_NEURON"].add(((m, n.layer), neuron))
            for g in n.semantic_groups:
                sg = (run, n.layer, n.index, g.id)
                nodes["SemanticGroup"].add(sg)
                rels["OF"].add((sg, neuron))
                for pid in g.patches:
                    rels["EXEMPLAR"].add((sg, box[pid]))
        for e in c.edges:
            rels["CONTRIBUTES"].add(((m, e.child_layer, e.child_index), (run, e.parent_layer, e.parent_index, e.parent_group)))
        for g in c.neuron_groups:
            nodes["NeuronGroup"].add((run, g.layer, g.id))
            rels["HAS_GROUP"].add((run, (run, g.layer, g.id)))
            for idx, j in g.members:
                rels["HAS_MEMBER"].add(((run, g.layer, g.id), (run, g.layer, idx, j)))
        for e in c.group_edges:
            rels["FEEDS"].add(((run, e.child_layer, e.child_group), (run, e.parent_layer, e.parent_group)))
    # SHARES_PATCHES: ordered pairs of groups of runs of one class (a run with itself included) whose
    # members' exemplar patches intersect
    patches: dict[tuple, set] = {}
    for c in circuits:
        run = json.dumps(c.to_dict(), sort_keys=True)
        sha = {im.id: im.sha256 for im in c.images}
        box = {p.id: (sha[p.image], tuple(p.box)) for p in c.patches}
        sg = {(n.layer, n.index, g.id): {box[p] for p in g.patches} for n in c.neurons for g in n.semantic_groups}
        for g in c.neuron_groups:
            patches[(c.class_.name, run, g.layer, g.id)] = set().union(*(sg[(g.layer, i, j)] for i, j in g.members))
    for a, pa in patches.items():
        for b, pb in patches.items():
            if a[0] == b[0] and pa & pb:
                rels["SHARES_PATCHES"].add((a, b))
    return Counter({k: len(v) for k, v in nodes.items()}), Counter({k: len(v) for k, v in rels.items()})


def observed(store) -> tuple[Counter, Counter]:
    nodes = Counter({lb: store.read(f"MATCH (n:{lb}) RETURN count(n) AS c")[0]["c"] for lb in LABELS})
    rels = Counter({t: store.read(f"MATCH ()-[e:{t}]->() RETURN count(e) AS c")[0]["c"] for t in TYPES})
    assert sum(nodes.values()) == store.read("MATCH (n) RETURN count(n) AS c")[0]["c"], "nodes outside the model"
    assert sum(rels.values()) == store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"], "unknown relationships"
    return nodes, rels


class Crash(Exception):
    """A simulated crash in the middle of an ingest."""


class Recorder:
    """A store wrapper that records every query it runs and can die after ``die_after`` writes."""

    def __init__(self, store, die_after: int | None = None):
        self._store, self.die_after = store, die_after
        self.backend, self.writes, self.reads = store.backend, [], []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read(self, query, params=None):
        self.reads.append(query)
        return self._store.read(query, params)

    def write(self, query, params=None):
        if self.die_after is not None and len(self.writes) >= self.die_after:
            raise Crash(f"died after {self.die_after} writes")
        self.writes.append(query)
        return self._store.write(query, params)

    def write_rows(self, query, rows, **kw):
        return GraphStore.write_rows(self, query, rows, **kw)

    @contextmanager
    def bulk(self, **kw):
        """The wrapped store's bulk writer (Neo4j: shared explicit transactions), recorded and
        dying like the store itself: a crash inside it rolls back its open transaction."""
        if not callable(getattr(type(self._store), "bulk", None)):
            yield self
            return
        with self._store.bulk(**kw) as inner:
            tap = Recorder(inner, self.die_after)
            tap.writes, tap.reads = self.writes, self.reads
            yield tap


# ---- the data model ---------------------------------------------------------------------------------

def test_graph_matches_the_circuits(store):
    circuits = [small(0, "cat"), small(1, "dog"), small(2, "bee", model_name="othernet")]
    for c in circuits:
        ingest_circuit(store=store, circuit=c)
    assert observed(store) == oracle(circuits)
    # shared neurons exist: the union is smaller than the sum
    assert oracle(circuits)[0]["Neuron"] < sum(oracle([c])[0]["Neuron"] for c in circuits)


def test_properties_match_the_circuit(store):
    c = small(3, "cat")
    uid = ingest_circuit(store=store, circuit=c)
    got = {(r["cl"], r["ci"], r["pl"], r["pi"], r["j"]): (r["w"], r["s"], r["run"]) for r in store.read(
        "MATCH (n:Neuron)-[e:CONTRIBUTES]->(g:SemanticGroup)-[:OF]->(p:Neuron) RETURN n.layer AS cl, n.index AS ci, "
        "p.layer AS pl, p.index AS pi, g.j AS j, e.weight AS w, e.score AS s, e.run AS run")}
    # FalkorDB stores doubles exactly but prints them with 15 significant digits
    assert got == {(e.child_layer, e.child_index, e.parent_layer, e.parent_index, e.parent_group):
                   (pytest.approx(e.weight, rel=1e-14), pytest.approx(e.score, rel=1e-14), uid) for e in c.edges}
    feeds = {(r["cl"], r["cg"], r["pl"], r["pg"]): r["w"] for r in store.read(
        "MATCH (a:NeuronGroup)-[f:FEEDS]->(b:NeuronGroup) RETURN a.layer AS cl, a.gid AS cg, b.layer AS pl, b.gid AS pg, f.weight AS w")}
    assert feeds == {(e.child_layer, e.child_group, e.parent_layer, e.parent_group): pytest.approx(e.weight, rel=1e-14)
                     for e in c.group_edges}
    layers = {r["name"]: r["depth"] for r in store.read("MATCH (:Model {name: 'synthnet'})-[:HAS_LAYER]->(l:Layer) "
                                                        "RETURN l.name AS name, l.depth AS depth")}
    assert layers == {name: d for d, name in enumerate(c.model.layers)}
    run = store.read("MATCH (r:Run {uid: $uid})-[:OF_MODEL]->(m:Model), (r)-[:EXPLAINS]->(k:Class) "
                     "RETURN r.status AS status, r.latest AS latest, r.class_index AS ci, r.params AS params, "
                     "r.created_at AS created, m.uid AS m, k.name AS k", {"uid": uid})
    assert run == [{"status": "complete", "latest": True, "ci": 3, "params": json.dumps(c.params, sort_keys=True),
                    "created": c.created_at, "m": "synthnet@random", "k": "cat"}]
    ranks = store.read("MATCH (g:SemanticGroup)-[e:EXEMPLAR]->(p:Patch) WHERE g.layer = $l AND g.neuron_index = $i "
                       "AND g.j = 0 RETURN e.rank AS rank, p.x0 AS x0, p.y0 AS y0, p.x1 AS x1, p.y1 AS y1 ORDER BY rank",
                       {"l": c.neurons[0].layer, "i": c.neurons[0].index})
    boxes = {p.id: p.box for p in c.patches}
    assert [[r["x0"], r["y0"], r["x1"], r["y1"]] for r in ranks] == [boxes[p] for p in c.neurons[0].semantic_groups[0].patches]


def test_run_uid_is_content_hash():
    # the full rule is tested in test_identity.py; here: ingest names runs by identity.run_uid
    c = small(0, "cat")
    assert run_uid(small(0, "cat")) == run_uid(c) != run_uid(small(0, "cat", seed=1))
    assert circuit_rows(c).uid == run_uid(c)


def test_awkward_names_get_safe_uids_and_keep_their_names(store):
    # FalkorDB string indexes trim edge whitespace and its unique constraint crashes on it: uids escape it
    c = small(0, " cat\t%\n", model_name="my net ")
    ingest_circuit(store=store, circuit=c)
    rows = store.read("MATCH (k:Class)<-[:EXPLAINS]-(r:Run)-[:OF_MODEL]->(m:Model) "
                      "RETURN k.uid AS k, k.name AS name, r.class_name AS cn, m.uid AS m, m.name AS mn")
    assert rows == [{"k": "%20cat%09%25%0A", "name": " cat\t%\n", "cn": " cat\t%\n",
                     "m": "my net%20@random", "mn": "my net "}]


def test_empty_class_name_is_refused(store):
    c = small(0, "x")
    c.class_.name = ""
    with pytest.raises(RunFormatError, match="class.name"):
        ingest_circuit(store=store, circuit=c)


# ---- idempotency and the status protocol --------------------------------------------------------------

def test_ingest_twice_changes_nothing(store):
    a, b = small(0, "cat"), small(1, "dog")
    ingest_circuit(store=store, circuit=a)
    ingest_circuit(store=store, circuit=b)
    first = graph_dump(store)
    assert ingest(store=store, circuit=a).skipped
    res = ingest(store=store, circuit=b, force=True)
    assert not res.skipped and res.relationships > 0
    assert graph_dump(store) == first


def test_every_write_is_unwind_and_merges_only_on_uid(store):
    rec = Recorder(store)
    ingest_circuit(store=rec, circuit=small(0, "cat"))
    assert rec.writes and all(q.startswith("UNWIND $rows AS row ") for q in rec.writes)
    for q in rec.writes:
        for merge in re.findall(r"MERGE \([^)]*\)(?:-\[[^\]]*\]->\([^)]*\))?", q):
            assert re.fullmatch(r"MERGE \(\w+:\w+ \{uid: row\.uid\}\)|MERGE \(a\)-\[r:\w+\]->\(b\)", merge), merge
    # one query per label / relationship type and batch: a small circuit needs few writes, plus at most
    # one heartbeat of the run's claim before each (store/ingest.py, BEAT_QUERY)
    from neurflow_graph.store.ingest import BEAT_QUERY

    data = [q for q in rec.writes if q != BEAT_QUERY]
    assert len(data) <= 25 and len(rec.writes) - len(data) <= len(data)


def test_big_batches_and_small_batches_give_the_same_graph(store):
    c = small(0, "cat")
    ingest(store=store, circuit=c, batch_size=7)
    small_batches = graph_dump(store)
    clear_graph(store)
    ingest(store=store, circuit=c, batch_size=100_000)
    assert graph_dump(store) == small_batches


@pytest.mark.parametrize("die_after", [1, 3, 9, 17])
def test_interrupted_ingest_stays_invisible_then_finishes(store, die_after, monkeypatch):
    # The crashed writer cannot release its claim (its store raises), as a killed process cannot: the
    # next ingest takes the run over once the claim is stale; a 1 s threshold keeps that wait short.
    from neurflow_graph.store import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "AWAIT_SECONDS", 1.0)
    old = small(1, "dog", created_at="2025-01-01T00:00:00+00:00")
    new = small(1, "dog", seed=7, created_at="2026-06-01T00:00:00+00:00")
    old_uid = ingest_circuit(store=store, circuit=old)
    with pytest.raises(Crash):
        ingest_circuit(store=Recorder(store, die_after=die_after), circuit=new)
    runs = {r.uid: r for r in list_runs(store=store)}
    assert runs[old_uid].latest and runs[old_uid].status == "complete"
    assert [r.status for u, r in runs.items() if u != old_uid] == ["ingesting"]
    assert store.read("MATCH (r:Run {status: 'complete'}) RETURN r.uid AS u") == [{"u": old_uid}]
    new_uid = ingest_circuit(store=store, circuit=new)
    assert observed(store) == oracle([old, new])
    runs = {r.uid: r for r in list_runs(store=store)}
    assert runs[new_uid].status == "complete" and runs[new_uid].latest and not runs[old_uid].latest


def test_latest_is_the_newest_complete_run(store):
    jan = small(0, "cat", seed=1, created_at="2026-01-01T00:00:00+00:00")
    mar = small(0, "cat", seed=2, created_at="2026-03-01T00:00:00+00:00")
    feb = small(0, "cat", seed=3, created_at="2026-02-01T00:00:00+00:00")
    other = small(1, "dog")
    uids = {k: ingest_circuit(store=store, circuit=c) for k, c in (("jan", jan), ("mar", mar), ("feb", feb), ("dog", other))}
    latest = {r.uid for r in list_runs(store=store) if r.latest}
    assert latest == {uids["mar"], uids["dog"]}


def test_summary_line(store):
    res = ingest(store=store, circuit=small(0, "cat"))
    line = res.summary()
    assert res.uid in line and f"{res.nodes} nodes" in line and f"{res.relationships} relationships" in line
    assert "rel/s" in line and "\n" not in line
    expected_nodes, expected_rels = oracle([small(0, "cat")])
    assert (res.nodes, res.relationships) == (sum(expected_nodes.values()), sum(expected_rels.values()))


def test_rows_are_deduplicated():
    c = small(0, "cat")
    c.edges.append(c.edges[0])  # a repeated edge must not become two relationships
    rows = circuit_rows(c)
    assert len(rows.rels["CONTRIBUTES"]) == len({(e.child_layer, e.child_index, e.parent_layer, e.parent_index,
                                                   e.parent_group) for e in c.edges})


def test_names_differing_only_in_edge_whitespace_stay_apart(store):
    # FalkorDB's string index trims edge whitespace; such properties must not be indexed there
    names = ["cat", " cat", "cat\n"]
    for i, name in enumerate(names):
        ingest_circuit(store=store, circuit=small(i, name))
    for name in names:
        assert store.read("MATCH (r:Run) WHERE r.class_name = $c RETURN r.class_name AS c", {"c": name}) == [{"c": name}]
        assert store.read("MATCH (k:Class {name: $c})<-[:EXPLAINS]-(r:Run) RETURN r.class_name AS c", {"c": name}) == [{"c": name}]
    assert store.read("MATCH (k:Class) RETURN count(DISTINCT k.uid) AS n") == [{"n": 3}]


def test_non_finite_numbers_are_refused_before_any_write(store):
    c = small(0, "cat")
    c.edges[3].weight = float("nan")
    with pytest.raises(RunFormatError, match="NaN or infinite"):
        ingest_circuit(store=store, circuit=c)
    assert store.read("MATCH (n) RETURN count(n) AS c") == [{"c": 0}]


def test_setup_is_idempotent_and_uids_are_unique(store):
    from neurflow_graph.errors import QueryError
    from neurflow_graph.store.schema import LABELS as SCHEMA_LABELS

    store._setup_done = False
    store.setup()  # a second time on a set-up graph: no error, nothing duplicated
    for label in SCHEMA_LABELS:
        store.write(f"CREATE (:{label} {{uid: 'dup'}})")
        with pytest.raises(QueryError):
            store.write(f"CREATE (:{label} {{uid: 'dup'}})")
    assert store.read("MATCH (n {uid: 'dup'}) RETURN count(n) AS c") == [{"c": len(SCHEMA_LABELS)}]
