"""Shared fixtures for tests that need a graph store.

Fixtures
--------
``embedded_dir``   a fresh, short data directory for an embedded store; whatever FalkorDB server
                   runs there is stopped at teardown, pass or fail.
``embedded_store`` a :class:`FalkorStore` on ``embedded_dir`` (its own server).
``store``          function-scoped and parametrised over backends: ``falkordb`` always; ``neo4j``
                   when ``NEO4J_URI`` is set, otherwise shown as skipped with the reason. Each test
                   gets an empty graph with constraints and indexes set up.
``module_store``   the same, shared by the tests of one module (empty when the module starts).
``falkor_graph``   an empty, set-up embedded graph (no Neo4j variant): a cheap reference graph.

Helpers (import from ``conftest``): :func:`graph_dump` (every node and relationship as plain
sorted data, for comparing two graphs), :func:`clear_graph` (empty a store between phases of a
test) and :func:`redis_pids_for` (live redis-server processes serving a directory).

``store``, ``module_store`` and ``falkor_graph`` share one session-wide embedded server and get a
graph each (FalkorDB graph = ``--database``), so they cost no server start; the session's end
stops that server. Neo4j tests use the database ``NEO4J_DATABASE`` (default ``neo4j``) at
``NEO4J_URI`` with ``NEO4J_USERNAME``/``NEO4J_PASSWORD`` and DELETE every node carrying one of
this project's labels (or ``:Probe``) there before and after each test: point them at a scratch
database. On Neo4j ``store`` and ``module_store`` share that database, so a module should use
one of the two.

Neo4j server: a user's ``NEO4J_URI`` wins. Otherwise, when ``java`` and ``mvn`` are present, this
file picks a free port and sets ``NEO4J_URI``/``NEO4J_USERNAME``/``NEO4J_PASSWORD`` (a random
password, never printed) in ``os.environ`` for the whole session at import, and starts ONE real
Neo4j Community server (``tools/neo4j-local``) in the background as soon as collection finds a
Neo4j test; the first Neo4j test waits for it (fixture ``neo4j_server``), the session's end stops
it, and the JVM dies with pytest (its stdin is a pipe from here). Without a JDK the Neo4j tests
are skipped with that reason. :func:`local_neo4j` gives the session's :class:`LocalNeo4j` (None
with a user's server), for tests that kill and restart it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neurflow_graph.store.schema import LABELS

# ---- Neo4j: the user's server, or one local server for the whole session (see the module doc) ----
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "neo4j-local"))
import neo4j_local  # noqa: E402  (tools/neo4j-local/neo4j_local.py)

_LOCAL: neo4j_local.LocalNeo4j | None = None
_LOCAL_START: dict[str, Any] = {}      # "thread", "error"
_LOCAL_DIR: str | None = None
if os.environ.get("NEO4J_URI"):
    NEO4J_SKIP_REASON = None
elif (NEO4J_SKIP_REASON := neo4j_local.missing_tools()) is None:
    with socket.socket() as _sock:  # a free port now, so the URI is known (and in os.environ) from the start
        _sock.bind(("127.0.0.1", 0))
        _port = _sock.getsockname()[1]
    _LOCAL_DIR = tempfile.mkdtemp(prefix="nfneo4j-")
    os.environ.update(NEO4J_URI=f"bolt://127.0.0.1:{_port}", NEO4J_USERNAME="neo4j",
                      NEO4J_PASSWORD=secrets.token_urlsafe(18))
    os.environ.pop("NEO4J_DATABASE", None)
    _LOCAL = neo4j_local.LocalNeo4j(Path(_LOCAL_DIR) / "db", password=os.environ["NEO4J_PASSWORD"], port=_port,
                                    heap="512m", pagecache="128m", fast_start=True,
                                    cds=not os.environ.get("CI"), auth_lock=False)
else:
    NEO4J_SKIP_REASON = f"no Neo4j for the Neo4j tests: NEO4J_URI is not set and {NEO4J_SKIP_REASON}"
NEO4J_URI = os.environ.get("NEO4J_URI")
# True when this session starts its own local Neo4j (no user NEO4J_URI, JDK and Maven present)
LOCAL_NEO4J_CONFIGURED = _LOCAL is not None
_skip_neo4j = pytest.mark.skipif(NEO4J_SKIP_REASON is not None, reason=NEO4J_SKIP_REASON or "")


def requires_neo4j(fn):
    """Decorator: a test that talks to the session's Neo4j (marked ``neo4j``; skipped without one)."""
    return pytest.mark.neo4j(_skip_neo4j(fn))


NEO4J_MARKS = [_skip_neo4j, pytest.mark.neo4j]  # ``pytestmark = NEO4J_MARKS`` for a Neo4j-only module
BACKENDS = [
    pytest.param("falkordb", id="falkordb"),
    pytest.param("neo4j", id="neo4j", marks=NEO4J_MARKS),
]


def local_neo4j() -> neo4j_local.LocalNeo4j | None:
    """The session's local Neo4j (started), or None when the tests use a user's ``NEO4J_URI``."""
    _wait_for_local()
    return _LOCAL


def _start_local() -> None:
    try:
        assert _LOCAL is not None
        _LOCAL.start(timeout=600)
    except BaseException as e:  # reported by the first test that needs the server
        _LOCAL_START["error"] = e


def _wait_for_local() -> None:
    if _LOCAL is None:
        return
    if "thread" not in _LOCAL_START:
        _begin_local()
    _LOCAL_START["thread"].join()
    if "error" in _LOCAL_START:
        pytest.fail(f"the session's Neo4j did not start: {_LOCAL_START['error']}", pytrace=False)


def _begin_local() -> None:
    t = threading.Thread(target=_start_local, name="neo4j-local-start", daemon=True)
    _LOCAL_START["thread"] = t
    t.start()


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the local Neo4j in the background while the tests before the first Neo4j test run."""
    if _LOCAL is not None and "thread" not in _LOCAL_START and any(i.get_closest_marker("neo4j") for i in items):
        _begin_local()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LOCAL is not None and "thread" in _LOCAL_START:
        _LOCAL_START["thread"].join()
        _LOCAL.stop()
    if _LOCAL_DIR is not None:
        shutil.rmtree(_LOCAL_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def neo4j_server() -> str:
    """The Neo4j URI for this session's Neo4j tests (waits for the local server when there is one)."""
    _wait_for_local()
    return os.environ["NEO4J_URI"]


@pytest.fixture(autouse=True)
def _neo4j_ready(request: pytest.FixtureRequest) -> None:
    """Every test marked ``neo4j`` waits for the session's server first."""
    if request.node.get_closest_marker("neo4j") is not None and NEO4J_SKIP_REASON is None:
        request.getfixturevalue("neo4j_server")
_graph_ids = itertools.count()


def redis_pids_for(data_dir: str | os.PathLike[str]) -> list[int]:
    """Live (non-zombie) redis-server processes whose command line names ``data_dir``."""
    needle = os.fsencode(str(Path(data_dir).absolute()))
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"redis-server" in cmdline and needle in cmdline:
            pids.append(int(proc.name))
    return pids


def graph_dump(store: Any) -> tuple[list[str], list[str]]:
    """Every node (labels + properties) and relationship (type, end uids, properties), sorted JSON lines."""
    nodes = sorted(json.dumps(r["n"], sort_keys=True) for r in store.read("MATCH (n) RETURN n"))
    rels = sorted(json.dumps(r, sort_keys=True) for r in store.read(
        "MATCH (a)-[e]->(b) RETURN a.uid AS a, type(e) AS type, properties(e) AS props, b.uid AS b"))
    return nodes, rels


def clear_graph(store: Any) -> None:
    """Delete this project's nodes (and the tests' ``:Probe`` nodes) with their relationships."""
    store.write("MATCH (n) WHERE any(l IN labels(n) WHERE l IN $labels) DETACH DELETE n",
                {"labels": [*LABELS, "Probe"]})



@pytest.fixture(scope="session", autouse=True)
def _no_orphan_servers() -> Iterator[None]:
    """Safety net: kill any embedded server this test process started and did not stop."""
    yield
    from neurflow_graph.store import falkor

    for pid, proc in list(falkor._CHILDREN.items()):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        falkor._CHILDREN.pop(pid, None)


@pytest.fixture(scope="session")
def _session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedded server for the session's ``store``/``module_store`` graphs; stopped at the end."""
    from neurflow_graph.store.falkor import FalkorStore, stop_server

    d = tmp_path_factory.mktemp("srv")
    holder = None
    try:
        holder = FalkorStore(d)  # holds the server up between tests
        yield d
    finally:
        if holder is not None:
            holder.close()
        stop_server(d)


@pytest.fixture
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh data directory (short path: Unix sockets allow ~100 bytes); its server is stopped at teardown."""
    from neurflow_graph.store.falkor import stop_server

    d = tmp_path_factory.mktemp("db")
    try:
        yield d
    finally:
        stop_server(d)


@pytest.fixture
def embedded_store(embedded_dir: Path) -> Iterator[Any]:
    """A FalkorStore with its own server in ``embedded_dir`` (closed and stopped at teardown)."""
    from neurflow_graph.store.falkor import FalkorStore

    s = FalkorStore(embedded_dir)
    try:
        yield s
    finally:
        s.close()


@contextlib.contextmanager
def _graph(backend: str, server_dir: Path) -> Iterator[Any]:
    """An empty, set-up graph on ``backend``: a fresh FalkorDB graph, or the cleared Neo4j database."""
    if backend == "falkordb":
        from neurflow_graph.store.falkor import FalkorStore

        s = FalkorStore(server_dir, graph=f"t{next(_graph_ids)}")
    else:
        from neurflow_graph.store.url import open_store

        _wait_for_local()
        s = open_store(NEO4J_URI or "", database=os.environ.get("NEO4J_DATABASE"))
        clear_graph(s)
    try:
        s.setup()
        yield s
    finally:
        try:
            if s.backend == "falkordb":
                s.delete_graph()
            else:
                clear_graph(s)
        finally:
            s.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, _session_server: Path) -> Iterator[Any]:
    """An empty, set-up graph on each backend (see the module doc)."""
    with _graph(request.param, _session_server) as s:
        yield s


@pytest.fixture(scope="module", params=BACKENDS)
def module_store(request: pytest.FixtureRequest, _session_server: Path) -> Iterator[Any]:
    """Like ``store`` but shared by one module's tests."""
    with _graph(request.param, _session_server) as s:
        yield s


@pytest.fixture
def falkor_graph(_session_server: Path) -> Iterator[Any]:
    """An empty, set-up graph on the embedded backend only (e.g. to build a reference graph)."""
    with _graph("falkordb", _session_server) as s:
        yield s
