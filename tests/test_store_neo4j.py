"""The Neo4j backend against a real Neo4j server (the session's local one, or the user's NEO4J_URI).

Schema on the server, server-enforced read-only transactions (library and ``neurflow-graph cypher``),
real failures (wrong password, a database that does not exist, the server SIGKILLed in the middle of
an ingest and restarted on the same data directory, two ingests at once), value conversion of real
nodes/relationships/paths/temporals, and that the password never appears in any message.
No fake driver is left: a real server produces every case here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner

from conftest import NEO4J_MARKS, clear_graph, graph_dump, local_neo4j
from neurflow_graph.cli import cli
from neurflow_graph.errors import QueryError, StoreConnectionError
from neurflow_graph.store import neo4j_store
from neurflow_graph.store.ingest import ingest_circuit
from neurflow_graph.store.runs import list_runs
from neurflow_graph.store.schema import INDEXED, LABELS
from neurflow_graph.store.url import open_store
from neurflow_graph.synthetic import synthetic_circuit

pytestmark = NEO4J_MARKS
ROOT = Path(__file__).resolve().parents[1]
SECRET = "Sup3r-s3cret!-not-the-password"


def _uri() -> str:
    return os.environ["NEO4J_URI"]


def _db_args() -> list[str]:
    return ["--database", os.environ["NEO4J_DATABASE"]] if os.environ.get("NEO4J_DATABASE") else []


@pytest.fixture
def n4j(neo4j_server):
    """An emptied, set-up Neo4j store (this project's labels deleted before and after)."""
    s = open_store(neo4j_server, database=os.environ.get("NEO4J_DATABASE"))
    clear_graph(s)
    s.setup()
    try:
        yield s
    finally:
        try:
            clear_graph(s)
        finally:
            s.close()


def small(index: int, name: str, **kw):
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


# ---- schema --------------------------------------------------------------------------------------

def test_setup_creates_the_declared_schema_on_the_server_idempotently(n4j):
    def catalogue():
        cons = {(r["labelsOrTypes"][0], tuple(r["properties"]), r["type"]) for r in n4j.read(
            "SHOW CONSTRAINTS YIELD labelsOrTypes, properties, type RETURN labelsOrTypes, properties, type")}
        idx = {(r["labelsOrTypes"][0], tuple(r["properties"])) for r in n4j.read(
            "SHOW INDEXES YIELD labelsOrTypes, properties, type, state WHERE type = 'RANGE' AND state = 'ONLINE' "
            "RETURN labelsOrTypes, properties")}
        return cons, idx

    cons, idx = catalogue()
    for label in LABELS:
        assert (label, ("uid",), "UNIQUENESS") in cons, label
        for prop in INDEXED.get(label, ()):
            assert (label, (prop,)) in idx, (label, prop)
    with open_store(_uri(), database=os.environ.get("NEO4J_DATABASE")) as again:
        again.setup()  # IF NOT EXISTS: a second setup changes nothing and does not fail
    assert catalogue() == (cons, idx)
    n4j.write("CREATE (:Neuron {uid: 'dup'})")
    with pytest.raises(QueryError, match="already exists"):
        n4j.write("CREATE (:Neuron {uid: 'dup'})")  # the server enforces the uniqueness constraint
    assert n4j.read("MATCH (n:Neuron {uid: 'dup'}) RETURN count(n) AS c") == [{"c": 1}]


# ---- read-only is enforced by the server -----------------------------------------------------------

def test_reads_run_in_read_transactions_that_the_server_enforces(n4j):
    # CALL db.createLabel writes (a token) without any writing clause: only the server can refuse it
    with pytest.raises(QueryError, match="read access mode"):
        n4j.read("CALL db.createLabel('NeurflowProbeLabel')")
    with pytest.raises(QueryError, match="read access mode"):
        n4j.read("CREATE (:Probe {uid: 'r'})")
    assert n4j.read("MATCH (p:Probe) RETURN count(p) AS c") == [{"c": 0}]
    n4j.write("CREATE (:Probe {uid: 'w'})")
    assert n4j.read("MATCH (p:Probe) RETURN p.uid AS uid") == [{"uid": "w"}]


def test_cli_cypher_without_write_is_refused_by_the_server(n4j, monkeypatch):
    store = ["--store", _uri(), *_db_args()]
    # a write the client-side clause check cannot see: the server's read transaction refuses it
    r = CliRunner().invoke(cli, ["cypher", "CALL db.createLabel($name)", "-p", "name=NeurflowProbe2", *store])
    assert "read-only" in _one_line_error(r) and "--write" in r.output
    # and with the client-side check switched off, an ordinary CREATE meets the same server refusal
    from neurflow_graph.queries import adhoc

    monkeypatch.setattr(adhoc, "write_clauses", lambda text: [])
    r = CliRunner().invoke(cli, ["cypher", "CREATE (:Probe {uid: $u})", "-p", "u=x", *store])
    assert "read-only" in _one_line_error(r)
    assert n4j.read("MATCH (p:Probe) RETURN count(p) AS c") == [{"c": 0}]
    monkeypatch.undo()
    r = CliRunner().invoke(cli, ["cypher", "CREATE (:Probe {uid: $u}) RETURN 1 AS ok", "-p", "u=x", "--write",
                                 "--format", "json", *store])
    assert r.exit_code == 0, r.output
    assert n4j.read("MATCH (p:Probe) RETURN p.uid AS uid") == [{"uid": "x"}]


# ---- real failures: one line, exit 2, no password ----------------------------------------------------

def test_wrong_password_is_a_real_auth_error(neo4j_server, monkeypatch):
    with pytest.raises(StoreConnectionError, match="refused the credentials") as info:
        open_store(neo4j_server, password=SECRET)
    causes = []
    e: BaseException | None = info.value
    while e is not None:
        causes.append(e)
        e = e.__cause__
    assert any(isinstance(c, neo4j.exceptions.AuthError) for c in causes)  # the server said no, not the client
    assert all(SECRET not in str(c) for c in causes)
    monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    r = CliRunner().invoke(cli, ["runs", "--store", neo4j_server, *_db_args()])
    assert "credentials" in _one_line_error(r) and SECRET not in r.output


def test_a_database_that_does_not_exist(neo4j_server):
    with pytest.raises(StoreConnectionError, match="database 'no_such_db' does not exist"):
        open_store(neo4j_server, database="no_such_db")
    r = CliRunner().invoke(cli, ["runs", "--store", neo4j_server, "--database", "no_such_db"])
    assert "no_such_db" in _one_line_error(r) and "does not exist" in r.output
    assert os.environ["NEO4J_PASSWORD"] not in r.output


def test_server_errors_are_scrubbed_of_the_password(n4j):
    password = os.environ["NEO4J_PASSWORD"]
    with pytest.raises(QueryError) as info:
        n4j.read(f"RETURN '{password}' +")  # Neo4j quotes the query text back in its syntax error
    assert password not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None  # the driver's error quoted the password: not chained
    assert password not in repr(n4j) and password not in n4j.display_url


# ---- values ----------------------------------------------------------------------------------------

def test_real_nodes_relationships_paths_and_temporals_become_plain_python(n4j):
    rows = n4j.write(
        "CREATE p = (a:Probe {uid: 'a', index: 3})-[r:PROBE_REL {weight: 0.5}]->(b:Probe:Extra {uid: 'b'}) "
        "RETURN a, r, p, [a, 1, null] AS l, {k: b} AS m, datetime('2026-01-02T03:04:05Z') AS t, "
        "date('2026-01-02') AS d, [1.5, 2.0] AS floats")
    (row,) = rows
    a = {"_labels": ["Probe"], "uid": "a", "index": 3}
    b = {"_labels": ["Extra", "Probe"], "uid": "b"}
    r = {"_type": "PROBE_REL", "weight": 0.5}
    assert row["a"] == a and row["r"] == r
    assert row["p"] == {"nodes": [a, b], "relationships": [r]}
    assert row["l"] == [a, 1, None] and row["m"] == {"k": b}
    assert row["t"].isoformat() == "2026-01-02T03:04:05+00:00" and row["d"].isoformat() == "2026-01-02"
    assert row["floats"] == [1.5, 2.0] and all(type(x) is float for x in row["floats"])
    assert type(row["a"]["index"]) is int


# ---- bulk writes (ingest's shared transactions) -------------------------------------------------------

def _probes(store) -> list[int]:
    return [r["i"] for r in store.read("MATCH (p:Probe) RETURN p.i AS i ORDER BY i")]


def test_bulk_commits_every_max_rows_and_rolls_back_only_the_open_transaction(n4j):
    q = "UNWIND $rows AS row CREATE (:Probe {i: row.i})"
    with n4j.bulk(max_rows=5) as w:
        w.write(q, {"rows": [{"i": i} for i in range(3)]})
        assert _probes(n4j) == []  # not committed yet: other sessions see nothing
        assert [r["n"] for r in w.read("MATCH (p:Probe) RETURN count(p) AS n")] == [3]  # the writer sees its own
        w.write(q, {"rows": [{"i": i} for i in range(3, 6)]})  # 6 rows >= 5: committed here
        assert _probes(n4j) == list(range(6))
    assert _probes(n4j) == list(range(6))
    # list items count as rows: one row carrying 9 items fills a transaction of 5
    with pytest.raises(RuntimeError, match="crash"):
        with n4j.bulk(max_rows=5) as w:
            w.write("UNWIND $rows AS row UNWIND row.js AS j CREATE (:Probe {i: j})", {"rows": [{"js": list(range(10, 19))}]})
            w.write(q, {"rows": [{"i": 99}]})  # open transaction
            raise RuntimeError("crash")
    assert _probes(n4j) == [*range(6), *range(10, 19)]  # the committed part stays, 99 is rolled back


def test_bulk_maps_server_errors_and_marks_transient_ones_retryable(n4j):
    with pytest.raises(QueryError, match="Neo4j rejected the query") as info:
        with n4j.bulk() as w:
            w.write("UNWIND $rows AS row CREATE (:Probe {i: row.i})", {"rows": [{"i": 1}]})
            w.write("RETURN 1/0 AS x")
    assert info.value.retryable is False  # a client error: retrying would fail the same way
    assert _probes(n4j) == []  # the open transaction was rolled back


def test_plan_once_prefixes_ingest_reads_and_writes_only_inside_the_block(n4j, monkeypatch):
    seen = []
    orig = neo4j_store._rows
    monkeypatch.setattr(neo4j_store, "_rows", lambda tx, q, p: seen.append(q) or orig(tx, q, p))
    with n4j.plan_once():
        n4j.write("UNWIND $rows AS row CREATE (:Probe {i: row.i})", {"rows": [{"i": 1}]})
        n4j.read("MATCH (p:Probe) RETURN p.i AS i")
        n4j.write("CALL db.awaitIndexes(10)")  # not a plannable query: left as it is
    n4j.read("MATCH (p:Probe) RETURN p.i AS i")
    assert [q.startswith("CYPHER replan=skip ") for q in seen] == [True, True, False, False]
    assert _probes(n4j) == [1]


# ---- the server killed mid-ingest, restarted on the same data directory ----------------------------------

def _kills_server_at(local, n):
    """Store.write and BulkWriter.write (ingest's shared transactions) that SIGKILL the server's JVM
    just before the ``n``-th write of either."""
    left = [n]

    def wrap(orig):
        def write(self, query, params=None):
            left[0] -= 1
            if left[0] == 0:
                local.kill()
            return orig(self, query, params)
        return write

    return wrap(neo4j_store.Neo4jStore.write), wrap(neo4j_store.BulkWriter.write)


@pytest.mark.parametrize("kill_at", [9])
def test_server_killed_mid_ingest_then_restarted_and_reingested(n4j, tmp_path, monkeypatch, kill_at):
    local = local_neo4j()
    if local is None:
        pytest.skip("kills the server: needs the session's local Neo4j (NEO4J_URI names the user's own server)")
    a, b = small(0, "cat"), small(1, "dog")
    b.save(tmp_path / "dog")
    ingest_circuit(store=n4j, circuit=a)
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "dog"), "--store", _uri(), *_db_args()])
    assert r.exit_code == 0, r.output
    expected = graph_dump(n4j)  # the clean reference, on this very server, by the same paths
    clear_graph(n4j)
    ingest_circuit(store=n4j, circuit=a)  # complete before the crash

    monkeypatch.setattr(neo4j_store.Neo4jStore, "max_transaction_retry_time", 1.0)
    store_write, bulk_write = _kills_server_at(local, kill_at)
    monkeypatch.setattr(neo4j_store.Neo4jStore, "write", store_write)
    monkeypatch.setattr(neo4j_store.BulkWriter, "write", bulk_write)
    monkeypatch.setattr(neo4j_store.BulkWriter, "read", bulk_write)
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "dog"), "--store", _uri(), *_db_args()])
    assert "Neo4j" in _one_line_error(r) and os.environ["NEO4J_PASSWORD"] not in r.output
    assert local.proc is None  # it really died
    monkeypatch.undo()

    local.start()  # same data directory, same port: Neo4j recovers from its transaction log
    with open_store(_uri(), database=os.environ.get("NEO4J_DATABASE")) as s:
        runs = {x.class_name: x.status for x in list_runs(store=s)}
        assert runs.get("cat") == "complete" and runs.get("dog") != "complete"
        r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "dog"), "--store", _uri(), *_db_args()])
        assert r.exit_code == 0, r.output
        assert graph_dump(s) == expected  # nothing duplicated, nothing missing
        assert sorted(x.status for x in list_runs(store=s)) == ["complete", "complete"]


# ---- two processes at once ----------------------------------------------------------------------------

def test_two_concurrent_ingests_of_different_runs_both_complete(n4j, tmp_path):
    circuits = [synthetic_circuit(class_index=i, class_name=n, widths=(10, 40, 40, 32), tau=8, k=16)
                for i, n in enumerate(["cat", "dog"])]
    for c in circuits:
        c.save(tmp_path / c.class_.name)
        r = CliRunner().invoke(cli, ["ingest", str(tmp_path / c.class_.name), "--store", _uri(), *_db_args()])
        assert r.exit_code == 0, r.output
    expected = graph_dump(n4j)  # the same ingests one after the other
    clear_graph(n4j)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # credentials travel in the environment, never in argv
    code = "import sys; from neurflow_graph.cli import main; main(sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, "ingest", str(tmp_path / c.class_.name),
                               "--store", _uri(), *_db_args()], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in circuits]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(r.status for r in list_runs(store=n4j)) == ["complete", "complete"]
    assert graph_dump(n4j) == expected
