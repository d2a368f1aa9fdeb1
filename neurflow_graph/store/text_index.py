"""The full-text index over annotation text that ``cypher/groups_by_label*.cypher`` searches.

Neo4j: a FULLTEXT index ``neurflow_annotation_text`` on ``Annotation.value`` with Lucene's
``english`` analyzer (so "striped" finds "stripes", as on FalkorDB). FalkorDB: a RediSearch
full-text index on ``(:Annotation).value`` (English stemming by default). Both index string
values only; numbers and lists are skipped. Idempotent; :func:`ensure_text_index` runs before every
annotation write (``store.annotations.write_annotations``), so any label or caption, from a model or a
user, is searchable.
"""

from __future__ import annotations

from typing import Any

from neurflow_graph.errors import NeurflowError

INDEX_NAME = "neurflow_annotation_text"
NEO4J_DDL = (f"CREATE FULLTEXT INDEX {INDEX_NAME} IF NOT EXISTS FOR (n:Annotation) ON EACH [n.value] "
             "OPTIONS {indexConfig: {`fulltext.analyzer`: 'english'}}")
FALKOR_DDL = "CALL db.idx.fulltext.createNodeIndex('Annotation', 'value')"


def _falkor_has_index(store: Any) -> bool:
    for row in store.read("CALL db.indexes()"):
        if row.get("label") == "Annotation" and "FULLTEXT" in ((row.get("types") or {}).get("value") or []):
            return True
    return False


def ensure_text_index(store: Any) -> None:
    """Create the annotation full-text index on ``store`` if it is missing."""
    if store.backend == "neo4j":
        store.write(NEO4J_DDL)
        store.write("CALL db.awaitIndexes(300)")
        return
    if _falkor_has_index(store):
        return
    try:
        store.write(FALKOR_DDL)
    except NeurflowError as e:
        if "already indexed" not in str(e):
            raise
