"""The Neo4j backend's use of the driver, checked against a fake driver (no server needed):
read/write transaction functions, an explicit database on every session, DDL, value conversion,
and that the password never leaves the driver. Tests against a real server are the
``store``-parametrised ones elsewhere (run with NEO4J_URI set)."""

from __future__ import annotations

import neo4j
import pytest
from neo4j.graph import Graph, Node, Path

from neurflow_graph.errors import QueryError, StoreConnectionError
from neurflow_graph.store import neo4j_store
from neurflow_graph.store.schema import INDEXED, LABELS
from neurflow_graph.store.url import open_store

SECRET = "Sup3r-s3cret!"


class FakeResult:
    def __init__(self, rows):
        self._rows = rows

    def keys(self):
        return list(self._rows[0]) if self._rows else []

    def __iter__(self):
        return iter([FakeRecord(r) for r in self._rows])


class FakeRecord:
    def __init__(self, row):
        self._row = row

    def values(self):
        return list(self._row.values())


class FakeSession:
    def __init__(self, driver, **config):
        self.driver, self.config = driver, config

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _tx(self, kind, fn, *args, **kwargs):
        driver = self.driver
        test = self

        class Tx:
            def run(self, query, params=None):
                driver.calls.append((kind, test.config.get("database"), test.config.get("default_access_mode"),
                                     query, dict(params or {})))
                if driver.fail_with is not None:
                    raise driver.fail_with
                return FakeResult(driver.answers.pop(0) if driver.answers else [])

        return fn(Tx(), *args, **kwargs)

    def execute_read(self, fn, *args, **kwargs):
        return self._tx("read", fn, *args, **kwargs)

    def execute_write(self, fn, *args, **kwargs):
        return self._tx("write", fn, *args, **kwargs)

    def run(self, *a, **k):  # auto-commit transactions must not be used
        raise AssertionError("session.run used instead of a transaction function")


class FakeDriver:
    def __init__(self, uri, auth=None, **config):
        self.uri, self.auth, self.config = uri, auth, config
        self.calls, self.answers, self.fail_with, self.closed = [], [], None, False

    def verify_connectivity(self):
        return None

    def session(self, **config):
        return FakeSession(self, **config)

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    made = []

    def driver(uri, auth=None, **config):
        d = FakeDriver(uri, auth, **config)
        made.append(d)
        return d

    monkeypatch.setattr(neo4j.GraphDatabase, "driver", driver)
    return made


def test_reads_and_writes_use_transaction_functions_on_the_named_database(fake):
    s = open_store("neo4j+s://me:" + SECRET + "@db.example:7687", database="circuits")
    d = fake[0]
    assert d.uri == "neo4j+s://db.example:7687" and d.auth == ("me", SECRET)
    d.answers = [[{"x": 1}]]
    assert s.read("MATCH (n) WHERE n.a = $a RETURN 1 AS x", {"a": "v"}) == [{"x": 1}]
    s.write("UNWIND $rows AS row MERGE (n:Neuron {uid: row.uid})", {"rows": [{"uid": "u"}]})
    kinds = [(k, db, mode) for k, db, mode, _, _ in d.calls]
    assert kinds == [("read", "circuits", neo4j.READ_ACCESS), ("read", "circuits", neo4j.READ_ACCESS),
                     ("write", "circuits", neo4j.WRITE_ACCESS)]
    assert d.calls[1][4] == {"a": "v"}
    assert SECRET not in repr(s) and SECRET not in s.display_url
    s.close()
    assert d.closed


def test_default_database_is_explicit(fake):
    s = open_store("bolt://h:7687", password=SECRET)
    s.read("RETURN 1 AS x")
    assert {db for _, db, _, _, _ in fake[0].calls} == {"neo4j"}
    assert fake[0].auth == ("neo4j", SECRET)


def test_setup_creates_constraints_and_indexes_idempotently(fake):
    s = open_store("neo4j://h:7687")
    s.setup()
    ddl = [q for k, _, _, q, _ in fake[0].calls if k == "write"]
    for label in LABELS:
        assert f"CREATE CONSTRAINT neurflow_{label}_uid IF NOT EXISTS FOR (n:{label}) REQUIRE n.uid IS UNIQUE" in ddl
        for prop in INDEXED[label]:
            assert f"CREATE INDEX neurflow_{label}_{prop} IF NOT EXISTS FOR (n:{label}) ON (n.{prop})" in ddl
    assert all("IF NOT EXISTS" in q for q in ddl if q.startswith("CREATE"))
    assert ddl[-1].startswith("CALL db.awaitIndexes")


def test_server_errors_are_query_errors_without_the_password(fake):
    s = open_store("neo4j://h:7687", password=SECRET)
    err = neo4j.exceptions.CypherSyntaxError._hydrate_neo4j(
        code="Neo.ClientError.Statement.SyntaxError", message=f"bad input near '{SECRET}'")
    fake[0].fail_with = err
    with pytest.raises(QueryError) as info:
        s.read("RETURN")
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None  # the driver error quoted the password: not chained


def test_auth_failure_at_open(fake, monkeypatch):
    def refuse(self):
        raise neo4j.exceptions.AuthError._hydrate_neo4j(code="Neo.ClientError.Security.Unauthorized",
                                                        message="The client is unauthorized")

    monkeypatch.setattr(FakeDriver, "verify_connectivity", refuse)
    with pytest.raises(StoreConnectionError, match="refused the credentials") as info:
        open_store("neo4j://h:7687", username="bob", password=SECRET)
    assert SECRET not in str(info.value) and fake[0].closed


def test_values_become_plain_python():
    g = Graph()
    a = Node(g, "a", 1, ["Neuron"], {"uid": "n1", "index": 3})
    b = Node(g, "b", 2, ["SemanticGroup"], {"uid": "s1"})
    rel_type = g.relationship_type("CONTRIBUTES")
    r = rel_type(g, "r", 3, {"weight": 0.5})
    r._start_node, r._end_node = a, b
    p = Path(a, r)
    plain = neo4j_store._plain
    assert plain(a) == {"_labels": ["Neuron"], "uid": "n1", "index": 3}
    assert plain(r) == {"_type": "CONTRIBUTES", "weight": 0.5}
    assert plain(p) == {"nodes": [plain(a), plain(b)], "relationships": [plain(r)]}
    assert plain({"l": [a, 1, None]}) == {"l": [plain(a), 1, None]}
    assert plain(neo4j.time.DateTime(2026, 1, 2, 3, 4, 5)).isoformat() == "2026-01-02T03:04:05"
