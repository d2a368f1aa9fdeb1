"""Ingest's bulk transactions (Neo4jStore.bulk, ingest._in_bulk) against failures of a real Neo4j server.

* A real deadlock in the middle of a bulk block, after chunks holding run-owned nodes have committed:
  a second session holds the run's Run node (and many other nodes), the ingest's open transaction is
  made to hold the Model node (a ``SET`` added to it, rolled back with it), the second session asks
  for the Model node and the ingest's NeuronGroup write needs the Run node. The server detects the
  cycle and aborts the ingest's transaction (Forseti's default resolution aborts the one holding fewer
  locks) with ``Neo.TransientError.Transaction.DeadlockDetected``; the whole block is rerun after
  removing what it had committed. (The server's lock acquisition timeout, the other way to get a
  transient error, is not dynamic on Community: ``dbms.setConfigValue`` is Enterprise only.)
* The server SIGKILLed right after the first chunk holding run-owned nodes committed.

No fake: the server produces both failures; the hooks only choose the moment.
"""

from __future__ import annotations

import os
import threading

import neo4j
import pytest
from click.testing import CliRunner

from conftest import NEO4J_MARKS, clear_graph, graph_dump, local_neo4j
from neurflow_graph.cli import cli
from neurflow_graph.errors import StoreConnectionError
from neurflow_graph.queries.library import run_query
from neurflow_graph.queries.names import UnknownNameError
from neurflow_graph.store import ingest as ing
from neurflow_graph.store import neo4j_store
from neurflow_graph.store.ingest import ingest_circuit, run_uid
from neurflow_graph.store.runs import list_runs
from neurflow_graph.store.url import open_store
from test_store_neo4j import _db_args, _uri, n4j, small  # noqa: F401  (n4j: the emptied store fixture)

pytestmark = NEO4J_MARKS
CHUNK = 40  # rows per bulk transaction here: a small circuit spans many


def _reference(store, circuits) -> tuple[list[str], list[str]]:
    for c in circuits:
        ingest_circuit(store=store, circuit=c)
    out = graph_dump(store)
    clear_graph(store)
    return out


def _owned(store, uid: str) -> int:
    return store.read("MATCH (s:SemanticGroup {run: $u}) RETURN count(s) AS c", {"u": uid})[0]["c"]


def _hidden(store, uid: str, class_name: str) -> None:
    """``uid`` is not complete, and the library refuses to read it."""
    assert store.read("MATCH (r:Run {uid: $u}) RETURN r.status AS s", {"u": uid}) == [{"s": "ingesting"}]
    with pytest.raises(UnknownNameError):
        run_query(store=store, name="class_circuit", params={"model": "synthnet", "class": class_name})


def _after_first_owned_commit(monkeypatch, store, uid: str, action) -> list[int]:
    """Run ``action()`` right after the first bulk commit that holds some of run ``uid``'s own nodes
    (the list returned then holds how many SemanticGroups of it were committed)."""
    commit = neo4j_store.BulkWriter.commit
    done: list[int] = []

    def hook(self):
        commit(self)
        if not done and (n := _owned(store, uid)):
            done.append(n)
            action()

    monkeypatch.setattr(neo4j_store.BulkWriter, "commit", hook)
    return done


def test_a_real_deadlock_mid_bulk_reruns_the_block_after_removing_what_it_committed(n4j, monkeypatch):  # noqa: F811
    a, b = small(0, "cat"), small(1, "dog")
    expected = _reference(n4j, [a, b])
    ingest_circuit(store=n4j, circuit=a)
    uid, muid = run_uid(b), ing.model_uid(b)
    monkeypatch.setattr(neo4j_store, "BULK_MAX_ROWS", CHUNK)
    driver = neo4j.GraphDatabase.driver(_uri(), auth=(os.environ.get("NEO4J_USERNAME", "neo4j"),
                                                      os.environ["NEO4J_PASSWORD"]))
    other = driver.session(database=os.environ.get("NEO4J_DATABASE", "neo4j"))
    seen: dict[str, object] = {"codes": [], "creates": 0, "removals": 0, "complete_early": [], "other": []}
    create_all, delete_remains, bulk_write = ing._create_all, ing._delete_remains, neo4j_store.BulkWriter.write
    touch = "MATCH (x) WHERE x.uid IN $uids SET x.probe = 1 RETURN count(x) AS n"

    def other_waits_for_model(tx):
        try:
            tx.run(touch, uids=[muid]).consume()  # waits for the ingest's transaction, which holds it
        except neo4j.exceptions.Neo4jError as e:
            seen["other"].append(e.code)
        finally:
            tx.rollback()  # leaves no trace, frees the Run node for the rerun

    def write_into_a_deadlock(self, query, params=None):
        """Before the first NeuronGroup write: the other transaction holds the Run node (and many more
        locks), the ingest's transaction the Model node, and the other one asks for the Model node; the
        ingest's transaction then needs the Run node (its HAS_GROUP relationships): a deadlock."""
        if "[:HAS_GROUP]" in query and "tx" not in seen:
            self.commit()  # what the block wrote so far (the run's SemanticGroups...) is committed
            seen["owned_before"] = _owned(n4j, uid)
            tx2 = seen["tx"] = other.begin_transaction()
            # the Run node, and many more locks than the ingest's transaction will hold: the server's
            # deadlock resolution (Forseti, ABORT_YOUNG) aborts the transaction with the fewest locks
            many = [r["uid"] for r in n4j.read("MATCH (x) WHERE x:Neuron OR x:Patch RETURN x.uid AS uid")]
            assert tx2.run(touch, uids=[uid, *many]).single()["n"] == 1 + len(many)
            self._tx = self._session.begin_transaction()
            assert self._tx.run(touch, uids=[muid]).single()["n"] == 1
            waiter = seen["waiter"] = threading.Thread(target=other_waits_for_model, args=(tx2,), daemon=True)
            waiter.start()
        try:
            return bulk_write(self, query, params)
        except neo4j.exceptions.Neo4jError as e:
            seen["codes"].append(e.code)
            raise

    def create_counted(store, rows, batch_size):
        seen["creates"] += 1
        return create_all(store, rows, batch_size)

    def removal_checked(store, run, claim):
        seen["removals"] += 1
        # what other sessions see between the failure and the rerun: chunks of it committed, all hidden
        seen["owned_at_failure"] = _owned(n4j, run)
        _hidden(n4j, run, "dog")
        return delete_remains(store, run, claim)  # only while this ingest holds the run's claim

    stop = threading.Event()

    def watch():  # nobody ever sees the run complete with less than all of it
        want = len({(n.layer, n.index, g.id) for n in b.neurons for g in n.semantic_groups})
        while not stop.is_set():
            st = n4j.read("MATCH (r:Run {uid: $u}) RETURN r.status AS s", {"u": uid})
            if st and st[0]["s"] == "complete" and _owned(n4j, uid) != want:
                seen["complete_early"].append(_owned(n4j, uid))
            stop.wait(0.05)

    monkeypatch.setattr(ing, "_create_all", create_counted)
    monkeypatch.setattr(ing, "_delete_remains", removal_checked)
    monkeypatch.setattr(neo4j_store.BulkWriter, "write", write_into_a_deadlock)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ingest_circuit(store=n4j, circuit=b)
    finally:
        stop.set()
        watcher.join()
        if "waiter" in seen:
            seen["waiter"].join(30)
        other.close()
        driver.close()
    assert seen["codes"] == ["Neo.TransientError.Transaction.DeadlockDetected"], seen
    assert seen["other"] == []  # the server chose the ingest's transaction, and the other one went on
    assert seen["creates"] == 2 and seen["removals"] == 1  # the whole block ran again, once, after the removal
    assert seen["owned_at_failure"] == seen["owned_before"] > 0  # its committed chunks were still there
    assert seen["complete_early"] == []
    assert graph_dump(n4j) == expected  # the rerun left nothing twice and nothing of the failed attempt


def test_server_killed_after_the_first_bulk_chunk_then_reingested(n4j, tmp_path, monkeypatch):  # noqa: F811
    local = local_neo4j()
    if local is None:
        pytest.skip("kills the server: needs the session's local Neo4j (NEO4J_URI names the user's own server)")
    a, b = small(0, "cat"), small(1, "dog")
    expected = _reference(n4j, [a, b])
    b.save(tmp_path / "dog")
    ingest_circuit(store=n4j, circuit=a)  # complete before the crash
    uid = run_uid(b)
    monkeypatch.setattr(neo4j_store, "BULK_MAX_ROWS", CHUNK)
    monkeypatch.setattr(neo4j_store.Neo4jStore, "max_transaction_retry_time", 1.0)
    commits = _after_first_owned_commit(monkeypatch, n4j, uid, local.kill)
    with pytest.raises(StoreConnectionError, match="Neo4j"):
        ingest_circuit(store=n4j, circuit=b)
    assert commits and local.proc is None  # it died right after that commit
    monkeypatch.undo()

    local.start()  # same data directory: Neo4j recovers its committed transactions
    with open_store(_uri(), database=os.environ.get("NEO4J_DATABASE")) as s:
        assert _owned(s, uid) == commits[0]  # the committed chunk survived the crash...
        _hidden(s, uid, "dog")  # ...and is not visible as a run
        assert {x.class_name: x.status for x in list_runs(store=s)} == {"cat": "complete", "dog": "ingesting"}
        r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "dog"), "--store", _uri(), *_db_args()])
        assert r.exit_code == 0, r.output
        s.write("MATCH (r:Run {uid: $u}) REMOVE r.run_dir", {"u": uid})  # the reference was ingested without one
        assert graph_dump(s) == expected
