"""The backend-neutral graph store interface.

Two implementations: :mod:`neurflow_graph.store.falkor` (embedded FalkorDB, the default)
and :mod:`neurflow_graph.store.neo4j_store` (Neo4j server, cluster or Aura).
Both speak openCypher; queries always take parameters, never spliced text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from neurflow_graph.store.batching import batched

DEFAULT_BATCH_SIZE = 5000


class GraphStore(ABC):
    """A connection to one graph (a Neo4j database or a FalkorDB graph)."""

    backend: str = "abstract"

    @property
    @abstractmethod
    def display_url(self) -> str:
        """The store URL with any password removed: safe to print and log."""

    @abstractmethod
    def setup(self) -> None:
        """Create uniqueness constraints and indexes if they do not exist (idempotent)."""

    @abstractmethod
    def read(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run ``query`` read-only; return rows as dicts keyed by the RETURN column names."""

    @abstractmethod
    def write(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run ``query`` in a write transaction; return its rows."""

    @abstractmethod
    def close(self) -> None: ...

    def write_rows(self, query: str, rows: Iterable[Mapping[str, Any]], *,
                   batch_size: int = DEFAULT_BATCH_SIZE, **params: Any) -> int:
        """Run ``query`` (which must start with ``UNWIND $rows AS row``) once per batch; return rows written."""
        n = 0
        for chunk in batched(rows, batch_size):
            self.write(query, {"rows": chunk, **params})
            n += len(chunk)
        return n

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
