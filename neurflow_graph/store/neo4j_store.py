"""Neo4j backend through the official driver: a server, a cluster, or Aura.

* Every session names its database explicitly (``--database``, default ``neo4j``).
* Reads run in managed read transactions (``session.execute_read``), writes in managed write
  transactions (``session.execute_write``); the driver retries transient failures (deadlocks,
  leader switches), which is safe because every write here is idempotent (MERGE on uid).
* Ingest writes a run through :meth:`Neo4jStore.bulk`: one session and a few large explicit
  transactions (about ``BULK_MAX_ROWS`` rows each) instead of a transaction per batch, so a run
  costs a handful of commits (each a log flush to disk) rather than dozens.
* The password is handed to the driver and kept nowhere else; messages, ``display_url`` and
  ``repr`` never contain it (driver messages are scrubbed before they are wrapped).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from neurflow_graph.errors import QueryError, StoreConnectionError, StoreError
from neurflow_graph.store.base import GraphStore, plain_node, plain_path, plain_relationship
from neurflow_graph.store.schema import INDEXED, LABELS, identifier
from neurflow_graph.store.text_index import INDEX_NAME as TEXT_INDEX_NAME, NEO4J_DDL as TEXT_INDEX_DDL

DEFAULT_DATABASE = "neo4j"
DEFAULT_USERNAME = "neo4j"

# The driver logs retries as warnings; without a handler Python would print them on stderr.
logging.getLogger("neo4j").addHandler(logging.NullHandler())


_SCALARS = (str, int, float, bool, type(None))


def _plain(v: Any) -> Any:
    # fast path for the cells most results are made of (big reads decode ~10^5 of them)
    if type(v) in _SCALARS:
        return v
    if type(v) is list:
        return [x if type(x) in _SCALARS else _plain(x) for x in v]
    return _plain_graph_value(v)


def _plain_graph_value(v: Any) -> Any:
    from neo4j.graph import Node, Path, Relationship

    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, Node):
        return plain_node(v.labels, {k: _plain(x) for k, x in v.items()})
    if isinstance(v, Relationship):
        return plain_relationship(v.type, {k: _plain(x) for k, x in v.items()})
    if isinstance(v, Path):
        return plain_path([_plain(n) for n in v.nodes], [_plain(r) for r in v.relationships])
    to_native = getattr(v, "to_native", None)  # neo4j.time types
    if callable(to_native):
        return to_native()
    return v


BULK_MAX_ROWS = 50_000  # rows (list items included) per transaction of Neo4jStore.bulk
# Bulk writes keep their first plan (index and id seeks, whatever the statistics): while a store
# grows during an ingest, Neo4j would otherwise plan each ingest query again every time the
# statistics moved by more than dbms.cypher.statistics_divergence_threshold.
BULK_PREFIX = "CYPHER replan=skip "
_PLANNABLE = re.compile(r"\s*(UNWIND|MATCH|MERGE|OPTIONAL|WITH)\b", re.IGNORECASE)  # not DDL, SHOW, CALL


def plan_fixed(query: str) -> str:
    """``query`` with ``BULK_PREFIX`` when it is plannable (not DDL, SHOW or CALL), else unchanged."""
    return BULK_PREFIX + query if _PLANNABLE.match(query) else query


def _rows(tx: Any, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    result = tx.run(query, dict(params))
    keys = list(result.keys())
    return [{k: _plain(v) for k, v in zip(keys, record.values())} for record in result]


class Neo4jStore(GraphStore):
    """A Neo4j database reached with the official driver (``neo4j://``, ``neo4j+s://``, ``bolt://``...)."""

    backend = "neo4j"
    #: seconds the driver keeps retrying a transaction after a transient failure (deadlock, lost
    #: server, leader switch) before giving up; tests that kill the server lower it
    max_transaction_retry_time = 30.0

    def __init__(self, uri: str, *, database: str | None = None, username: str | None = None,
                 password: str | None = None, connection_timeout: float = 10.0) -> None:
        import neo4j
        from neo4j.exceptions import AuthError, ConfigurationError, DriverError, Neo4jError, ServiceUnavailable

        self._uri = uri
        self._database = database or DEFAULT_DATABASE
        self._username = username or DEFAULT_USERNAME
        self._secret = password  # used only to scrub messages; never shown
        self._plan_once = threading.local()  # per thread: one store may serve several threads
        self._driver = None
        auth = (self._username, password) if password is not None else None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                uri, auth=auth, connection_timeout=connection_timeout,
                connection_acquisition_timeout=max(connection_timeout, 1.0) * 2,
                max_transaction_retry_time=self.max_transaction_retry_time, user_agent="neurflow-graph")
            self._driver.verify_connectivity()
            with self._driver.session(database=self._database, default_access_mode=neo4j.READ_ACCESS) as session:
                session.execute_read(_rows, "RETURN 1 AS ok", {})
        except AuthError as e:
            self._close_driver()
            raise StoreConnectionError(
                f"{self.display_url} refused the credentials of user {self._username!r}: "
                "set NEO4J_USERNAME/NEO4J_PASSWORD or pass --username/--password") from self._cause(e)
        except (ServiceUnavailable, OSError) as e:
            self._close_driver()
            raise StoreConnectionError(
                f"cannot reach Neo4j at {self.display_url} ({self._scrub(e)}): is the server running "
                "(`make neo4j-up`) and the URL right?") from self._cause(e)
        except ConfigurationError as e:
            self._close_driver()
            raise StoreConnectionError(f"cannot use {self.display_url}: {self._scrub(e)}") from self._cause(e)
        except Neo4jError as e:
            self._close_driver()
            if "DatabaseNotFound" in (e.code or ""):
                raise StoreConnectionError(f"{self.display_url}: database {self._database!r} does not exist; "
                                           "pick one with --database") from self._cause(e)
            raise StoreConnectionError(f"{self.display_url}: {self._scrub(e)}") from self._cause(e)
        except DriverError as e:
            self._close_driver()
            raise StoreConnectionError(f"cannot use {self.display_url}: {self._scrub(e)}") from self._cause(e)

    def _cause(self, e: BaseException) -> BaseException | None:
        """``e`` to chain as ``__cause__``, or None when its text quotes the password (tracebacks get logged)."""
        if self._secret and (self._secret in str(e) or self._secret in repr(e.args)):
            return None
        return e

    @property
    def display_url(self) -> str:
        db = "" if self._database == DEFAULT_DATABASE else f" (database {self._database})"
        return f"{self._uri}{db}"

    def _scrub(self, e: BaseException) -> str:
        # a server error's own message; str() of driver 6 errors appends GQL status blocks
        text = getattr(e, "message", None) if isinstance(getattr(e, "message", None), str) else None
        msg = " ".join((text or str(e)).split()) or type(e).__name__
        if self._secret:
            msg = msg.replace(self._secret, "***")
        return msg

    def _close_driver(self) -> None:
        if self._driver is not None:
            try:
                self._driver.close()
            finally:
                self._driver = None

    def _session(self, access_mode: str):
        if self._driver is None:
            raise StoreError(f"the store {self.display_url} is closed")
        return self._driver.session(database=self._database, default_access_mode=access_mode)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver exceptions raised in the block as project errors (one line, password scrubbed).
        ``retryable`` on the error: a transient server failure (deadlock, lock timeout) that a
        caller may retry as a whole; lost connections are not marked. ``duplicate``: a write met a
        uniqueness constraint (a node with that uid exists already)."""
        from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable, SessionExpired

        try:
            yield
        except AuthError as e:
            raise StoreConnectionError(f"{self.display_url} refused the credentials of user {self._username!r}") from self._cause(e)
        except (ServiceUnavailable, SessionExpired) as e:
            raise StoreConnectionError(f"lost Neo4j at {self.display_url} ({self._scrub(e)})") from self._cause(e)
        except Neo4jError as e:
            err = QueryError(f"Neo4j rejected the query: {self._scrub(e)}")
            err.retryable = bool(e.is_retryable())  # type: ignore[attr-defined]
            err.duplicate = e.code == "Neo.ClientError.Schema.ConstraintValidationFailed"  # type: ignore[attr-defined]
            raise err from self._cause(e)
        except DriverError as e:
            raise StoreError(f"{self.display_url}: {self._scrub(e)}") from self._cause(e)

    @contextmanager
    def plan_once(self) -> Iterator[None]:
        """In the block, reads and writes keep their first plan (``BULK_PREFIX``): for ingest, whose
        queries plan to uid and run index seeks even on an empty store (checked with EXPLAIN)."""
        local = self._plan_once
        prev, local.on = getattr(local, "on", False), True
        try:
            yield
        finally:
            local.on = prev

    def _run(self, query: str, params: Mapping[str, Any] | None, *, write: bool) -> list[dict[str, Any]]:
        import neo4j

        if getattr(self._plan_once, "on", False):
            query = plan_fixed(query)
        with self._errors(), self._session(neo4j.WRITE_ACCESS if write else neo4j.READ_ACCESS) as session:
            run = session.execute_write if write else session.execute_read
            return run(_rows, query, params or {})

    @contextmanager
    def bulk(self, *, max_rows: int | None = None) -> Iterator["BulkWriter"]:
        """A writer whose writes share explicit transactions of about ``max_rows`` rows each (default
        ``BULK_MAX_ROWS``, read at each call; one session, one commit per transaction instead of one
        per write); the last is committed when the block ends, the open one rolled back when it raises. Not retried by the driver: a
        caller retries the whole block when the error is ``retryable`` (see :meth:`_errors`)."""
        import neo4j

        with self._errors(), self._session(neo4j.WRITE_ACCESS) as session:
            writer = BulkWriter(self, session, BULK_MAX_ROWS if max_rows is None else max_rows)
            try:
                yield writer
                writer.commit()
            finally:
                writer.close()

    def read(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(query, params, write=False)

    def write(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(query, params, write=True)

    def setup(self) -> None:
        """Uniqueness constraints on ``uid``, range indexes on ``INDEXED`` and the annotation full-text index
        (``IF NOT EXISTS``), then wait until they are online."""
        if getattr(self, "_setup_done", False):
            return
        ddl: dict[str, str] = {}
        for label in LABELS:
            lb = identifier(label)
            ddl[f"neurflow_{lb}_uid"] = (f"CREATE CONSTRAINT neurflow_{lb}_uid IF NOT EXISTS "
                                         f"FOR (n:{lb}) REQUIRE n.uid IS UNIQUE")
            for prop in INDEXED.get(label, ()):
                p = identifier(prop)
                ddl[f"neurflow_{lb}_{p}"] = f"CREATE INDEX neurflow_{lb}_{p} IF NOT EXISTS FOR (n:{lb}) ON (n.{p})"
        # groups_by_label searches it: a store without annotations yet answers no rows, not an error
        ddl[TEXT_INDEX_NAME] = TEXT_INDEX_DDL
        # one read when everything is there already (every write command calls setup); a
        # constraint's backing index carries the constraint's name
        state = {r["name"]: r["state"] for r in self.read("SHOW INDEXES YIELD name, state RETURN name, state")}
        missing = [q for name, q in ddl.items() if name not in state]
        for q in missing:
            self.write(q)
        if missing or any(state.get(name) != "ONLINE" for name in ddl):
            self.write("CALL db.awaitIndexes(300)")
        self._setup_done = True

    def close(self) -> None:
        self._close_driver()
        self._secret = None


def _weight(params: Mapping[str, Any]) -> int:
    """How much a write adds to its transaction: its rows, each with the items of its list values."""
    rows = params.get("rows")
    if not isinstance(rows, list):
        return 1
    return sum(1 + sum(len(v) for v in r.values() if isinstance(v, list)) for r in rows if isinstance(r, dict))


class BulkWriter:
    """The store-like writer of :meth:`Neo4jStore.bulk`: ``read``/``write``/``write_rows`` run in the
    current explicit transaction (reads see its writes), committed once it holds ``max_rows`` rows."""

    backend = "neo4j"

    def __init__(self, store: Neo4jStore, session: Any, max_rows: int) -> None:
        self._store, self._session, self._max = store, session, max_rows
        self._tx: Any = None
        self._n = 0

    @property
    def display_url(self) -> str:
        return self._store.display_url

    def write(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        params = params or {}
        if self._tx is None:
            self._tx = self._session.begin_transaction()
        out = _rows(self._tx, plan_fixed(query), params)
        self._n += _weight(params)
        if self._n >= self._max:
            self.commit()
        return out

    read = write

    write_rows = GraphStore.write_rows  # the same UNWIND batching, through this writer's write()

    def commit(self) -> None:
        if self._tx is not None:
            tx, self._tx, self._n = self._tx, None, 0
            tx.commit()

    def close(self) -> None:
        """Roll back the open transaction, if any (after an error)."""
        if self._tx is not None:
            tx, self._tx = self._tx, None
            try:
                tx.close()
            except Exception:  # the connection is gone; the error that got here matters more
                pass
