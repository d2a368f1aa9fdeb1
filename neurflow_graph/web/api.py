"""What the dashboard's pages ask for, answered from a store through the query library only.

:class:`DashboardApi` is transport-free: ``serve`` (:mod:`.server`) puts it behind HTTP and ``report``
(:mod:`.report`) calls it ahead of time to write a static site. Every panel is a library query,
bound and name-checked exactly as ``neurflow-graph query`` does it (:func:`~neurflow_graph.queries.library.execute`);
the one extra answer is the layered layout of a run's circuit (igraph, :mod:`neurflow_graph.viz.layout`).
Mosaics are served from the run directories the store references, after checking their sha256.

Caching (runs are immutable once complete, docs/graph-model.md): the layout and ``group_members`` answers
are kept per run uid, and ``circuit_groups`` per run uid and the run's annotation stamp (how many
annotations its groups and edges have and the newest one's time), so a label written while the server
runs shows on the next page load. Every cached answer is served only after a check that the run is still
in the store and complete (one indexed lookup; a deleted run answers 400 as before). Other queries are not
cached: their answers depend on which runs are latest.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurflow_graph.errors import InputError, NeurflowError

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ApiError(Exception):
    """An answer other than 200: ``status`` (400 bad input, 404 unknown) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class DashboardApi:
    """Read-only answers over ``store`` (a GraphStore); one store call at a time (a lock)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._mosaics: dict[str, str] = {}  # sha256 -> path, learnt from circuit_groups answers
        self._cache: dict[tuple, dict[str, Any]] = {}  # (what, run uid, params..., stamp) -> answer
        self.cache_hits = 0

    def warm(self) -> "DashboardApi":
        """Import what the first answers need (igraph for the layout: seconds on a cold, loaded machine)
        before the first page asks; no store I/O."""
        import neurflow_graph.queries.library  # noqa: F401
        import neurflow_graph.viz.fetch  # noqa: F401
        import neurflow_graph.viz.layout  # noqa: F401
        try:
            import igraph  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency; layout() reports it
            pass
        return self

    # ---------------------------------------------------------------- cache
    _STAMP = ("MATCH (r:Run {uid: $run}) WHERE r.status = 'complete' "
              "OPTIONAL MATCH (r)-[:HAS_GROUP]->(:NeuronGroup)<-[:ANNOTATES]-(a:Annotation) "
              "RETURN r.uid AS run, count(a) AS n, max(a.created_at) AS newest")

    def _run_stamp(self, run: str) -> tuple | None:
        """``(n, newest)`` of the annotations of complete run ``run`` (a full uid), or None when the store
        holds no complete run with exactly that uid (then nothing is cached or served from the cache)."""
        rows = self.store.read(self._STAMP, {"run": run})
        if not rows or rows[0]["run"] != run:
            return None
        return (rows[0]["n"], rows[0]["newest"])

    CACHE_ENTRIES = 4096

    def clear_cache(self) -> None:
        """Forget every cached answer (benchmarks measure the uncached path with it)."""
        with self._lock:
            self._cache.clear()

    def _keep(self, key: tuple | None, answer: dict[str, Any]) -> None:
        if key is None:
            return
        with self._lock:
            if len(self._cache) >= self.CACHE_ENTRIES:
                self._cache.clear()  # a crude bound: answers are cheap to recompute
            self._cache[key] = answer

    def _cache_key(self, name: str, raw: Mapping[str, str]) -> tuple | None:
        """The cache key of a cacheable answer (under the lock), None for the others."""
        if name not in ("circuit_groups", "group_members", "layout") or not raw.get("run"):
            return None
        stamp = self._run_stamp(raw["run"])
        if stamp is None:
            return None
        return (name, tuple(sorted(raw.items())), stamp if name == "circuit_groups" else None)

    # ---------------------------------------------------------------- queries
    def query(self, name: str, raw: Mapping[str, str]) -> dict[str, Any]:
        """``{"query", "columns", "params", "rows"}`` of library query ``name`` with CLI-style string params."""
        from neurflow_graph.queries.library import execute, get_query

        try:
            q = get_query(name)
        except NeurflowError as e:
            raise ApiError(404, str(e)) from e
        try:
            with self._lock:
                key = self._cache_key(name, raw)
                if key is not None and key in self._cache:
                    self.cache_hits += 1
                    return self._cache[key]
            bound = q.bind(dict(raw))
            with self._lock:
                rows = execute(store=self.store, query=q, params=bound)
        except InputError as e:
            raise ApiError(400, str(e)) from e
        except NeurflowError as e:
            raise ApiError(400, str(e)) from e
        if name in ("circuit_groups", "group_members"):
            for r in rows:
                if r.get("mosaic_sha256") and r.get("mosaic"):
                    self._mosaics[r["mosaic_sha256"]] = r["mosaic"]
            rows = [{**r, "mosaic": None} for r in rows]  # the page asks by hash; paths stay on the server
        answer = {"query": name, "columns": list(q.columns), "params": _json_safe(bound), "rows": _json_safe(rows)}
        self._keep(key, answer)
        return answer

    # ---------------------------------------------------------------- layout
    def layout(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """``{"run", "positions": {"layer/gid": [x, depth]}}``: the igraph Sugiyama layout of the whole circuit."""
        from neurflow_graph.viz.graph import from_rows
        from neurflow_graph.viz.layout import layered_layout
        from neurflow_graph.queries.names import resolve_run

        unknown = sorted(set(raw) - {"run"})
        if unknown or not raw.get("run"):
            raise ApiError(400, "layout takes one parameter, run=RUN_UID")
        try:
            with self._lock:
                key = self._cache_key("layout", raw)
                if key is not None and key in self._cache:
                    self.cache_hits += 1
                    return self._cache[key]
                run = resolve_run(self.store, raw["run"])
            # the same circuit_groups answer the page asks for (cached): the layout does not query it again
            rows = self.query("circuit_groups", {"run": run})["rows"]
            if not rows:
                raise InputError(f"run {run} has no neuron groups in the store (is it complete? see `neurflow-graph runs`)")
            graph = from_rows(rows)
        except NeurflowError as e:
            raise ApiError(400, str(e)) from e
        pos = layered_layout(graph)
        answer = {"run": run, "positions": {f"{k[0]}/{k[1]}": [round(x, 4), y] for k, (x, y) in pos.items()}}
        self._keep(key, answer)
        return answer

    # ---------------------------------------------------------------- mosaics
    def mosaic(self, sha: str) -> bytes:
        """The PNG bytes of the mosaic with content hash ``sha``, read from its run directory."""
        if not SHA_RE.match(sha):
            raise ApiError(404, "mosaics are named by their sha256")
        path = self._mosaics.get(sha)
        if path is None:
            with self._lock:
                rows = self.store.read("MATCH (g:NeuronGroup) WHERE g.mosaic_sha256 = $sha "
                                       "RETURN g.mosaic AS path LIMIT 1", {"sha": sha})
            if not rows:
                raise ApiError(404, f"no group in the store has the mosaic {sha[:16]}")
            path = rows[0]["path"]
            self._mosaics[sha] = path
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ApiError(404, f"the mosaic {path} is unreadable ({e.strerror}); rebuild it with "
                                "`neurflow-graph exemplars RUN_DIR` and ingest again") from e
        if hashlib.sha256(data).hexdigest() != sha:
            raise ApiError(404, f"the mosaic {path} changed since ingest; ingest its run directory again")
        return data
