"""The backend-neutral graph store interface.

Two implementations: :mod:`neurflow_graph.store.falkor` (embedded FalkorDB, the default,
``backend = "falkordb"``) and :mod:`neurflow_graph.store.neo4j_store` (Neo4j server, cluster or
Aura, ``backend = "neo4j"``). Both speak openCypher; queries always take parameters, never
spliced text. Open one with :func:`neurflow_graph.store.url.open_store`.

Result values are plain Python on both backends (see :func:`plain_node`): numbers, strings,
booleans, ``None``, lists and dicts; a node becomes ``{"_labels": [...], **properties}``, a
relationship ``{"_type": TYPE, **properties}`` and a path ``{"nodes": [...], "relationships": [...]}``.
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

    def checkpoint(self) -> None:
        """Make everything written so far durable (embedded: an RDB snapshot). Default: nothing to do."""

    def write_rows(self, query: str, rows: Iterable[Mapping[str, Any]], *,
                   batch_size: int = DEFAULT_BATCH_SIZE, **params: Any) -> int:
        """Run ``query`` (which must start with ``UNWIND $rows AS row``) once per batch; return rows written."""
        n = 0
        for chunk in batched(rows, batch_size):
            self.write(query, {"rows": chunk, **params})
            n += len(chunk)
        return n

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plain_node(labels: Iterable[str], properties: Mapping[str, Any]) -> dict[str, Any]:
    """The plain form of a node: its properties plus ``_labels`` (sorted)."""
    return {"_labels": sorted(labels), **properties}


def plain_relationship(rel_type: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The plain form of a relationship: its properties plus ``_type``."""
    return {"_type": rel_type, **properties}


def plain_path(nodes: list[dict[str, Any]], relationships: list[dict[str, Any]]) -> dict[str, Any]:
    """The plain form of a path: its nodes and relationships in order."""
    return {"nodes": nodes, "relationships": relationships}
