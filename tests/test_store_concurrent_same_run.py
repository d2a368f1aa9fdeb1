"""Two ingests of the same run at once, on both backends: both finish without error and the store is
the one a single ingest makes (no duplicate node or relationship).

The two ingests run in two threads with a connection each; a barrier holds both at the entry of the
create path (the write path of a run absent from the store), so both have read the run as absent
before either writes anything: the worst interleaving, every time. Not covered (and not safe, see
docs/graph-model.md, "Run status protocol"): an ingest that starts while the other is part-way.
"""

from __future__ import annotations

import os
import threading

import pytest

from conftest import clear_graph, graph_dump
from neurflow_graph.errors import QueryError, StoreError
from neurflow_graph.store import ingest as ing
from neurflow_graph.store.base import GraphStore
from neurflow_graph.store.ingest import ingest, ingest_circuit
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit


def _second_connection(store):
    if store.backend == "falkordb":
        from neurflow_graph.store.falkor import FalkorStore

        return FalkorStore(store.data_dir, graph=store._graph_name)
    from neurflow_graph.store.url import open_store

    return open_store(os.environ["NEO4J_URI"], database=os.environ.get("NEO4J_DATABASE"))


def test_two_concurrent_ingests_of_the_same_run_make_the_store_of_one(store, monkeypatch):
    circuit = synthetic_circuit(class_index=0, class_name="cat", widths=(10, 40, 40, 32), tau=8, k=16)
    ingest_circuit(store=store, circuit=synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16)))
    before = graph_dump(store)
    ingest_circuit(store=store, circuit=circuit)
    expected = graph_dump(store)
    clear_graph(store)
    ingest_circuit(store=store, circuit=synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16)))
    assert graph_dump(store) == before

    barrier = threading.Barrier(2, timeout=60)
    create_all = ing._create_all
    entered = []

    def both_at_once(s, rows, batch_size):
        entered.append(rows.uid)
        if len(entered) <= 2:
            barrier.wait()
        return create_all(s, rows, batch_size)

    monkeypatch.setattr(ing, "_create_all", both_at_once)
    await_other, waited = ing._await_other_ingest, []
    monkeypatch.setattr(ing, "_await_other_ingest", lambda *a: waited.append(a[2]) or await_other(*a))
    other = _second_connection(store)
    errors: list[BaseException] = []
    results = []

    def run(s):
        try:
            results.append(ingest(store=s, circuit=circuit))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in (store, other)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        other.close()
    assert errors == []
    assert len(entered) == 2  # both took the create path
    # the one that met the other's nodes (a uniqueness constraint of the server) waited for it to finish
    assert len(waited) == 1 and waited[0].duplicate, waited
    assert sorted(r.concurrent for r in results) == [False, True]
    assert "written by another ingest at the same time" in next(r.summary() for r in results if r.concurrent)
    assert sorted((r.class_name, r.status) for r in list_runs(store=store)) == [("cat", "complete"), ("dog", "complete")]
    assert graph_dump(store) == expected


class _StopsAtGroups:
    """The store, for a client that stops (an exception) at its first NeuronGroup write: its run is left
    with its SemanticGroups written, as a concurrent ingest that died there leaves it."""

    def __init__(self, store):
        self._store, self.backend = store, store.backend

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, query, params=None):
        if "[:HAS_GROUP]" in query:
            raise RuntimeError("the other client stopped here")
        return self._store.write(query, params)

    write_rows = GraphStore.write_rows


def test_waiting_for_a_concurrent_ingest_that_stopped_is_a_clear_error(store, monkeypatch):
    circuit = synthetic_circuit(class_index=0, class_name="cat", widths=(10, 24, 24, 16))
    with pytest.raises(RuntimeError, match="stopped here"):
        ingest_circuit(store=_StopsAtGroups(store), circuit=circuit)
    uid = ing.run_uid(circuit)
    assert store.read("MATCH (s:SemanticGroup {run: $u}) RETURN count(s) AS c", {"u": uid})[0]["c"] > 0
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 1.0)
    with pytest.raises(StoreError, match=f"run {uid} was being written by another ingest .* no progress for 1 s"):
        ing._await_other_ingest(store, uid, QueryError("met its nodes"))
    ingest_circuit(store=store, circuit=circuit)  # the next ingest finishes it...
    ing._await_other_ingest(store, uid, QueryError("met its nodes"))  # ...and a waiter then returns at once
