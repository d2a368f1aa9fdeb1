"""The graph's schema, declared once for both backends (see docs/graph-model.md).

Every label has a unique ``uid``; ``INDEXED`` lists the other properties that queries filter
by. The backends turn these into DDL: Neo4j ``CREATE CONSTRAINT/INDEX ... IF NOT EXISTS``,
FalkorDB range indexes plus ``GRAPH.CONSTRAINT CREATE ... UNIQUE``.
"""

from __future__ import annotations

import re

LABELS: tuple[str, ...] = ("Model", "Layer", "Neuron", "Class", "Run", "SemanticGroup", "NeuronGroup", "Patch", "Image",
                           "Annotation", "PCABasis", "Direction")

# label -> properties with a (non-unique) range index, besides the constrained uid
INDEXED: dict[str, tuple[str, ...]] = {
    "Model": ("name",),
    "Layer": ("model", "name"),
    "Neuron": ("model", "layer", "index"),
    "Class": ("name",),
    "Run": ("status", "latest", "model", "class_name", "class_index", "created_at"),
    "SemanticGroup": ("run", "layer"),
    "NeuronGroup": ("run", "layer"),
    "Patch": ("image_sha256",),
    "Image": ("sha256",),
    # target, key and source are checked text (no control characters or edge whitespace)
    "Annotation": ("target", "target_label", "key", "source"),
    # directions (store/directions.py, docs/directions.md)
    "PCABasis": ("model", "layer", "site"),
    "Direction": ("model", "layer", "site", "index"),
}

RELATIONSHIP_TYPES: tuple[str, ...] = ("HAS_LAYER", "HAS_NEURON", "OF_MODEL", "EXPLAINS", "HAS_GROUP", "OF",
                                       "CONTRIBUTES", "HAS_MEMBER", "FEEDS", "EXEMPLAR", "CROPPED_FROM",
                                       "ANNOTATES", "HAS_BASIS", "HAS_DIRECTION", "ALIGNED_WITH", "COVERS",
                                       "SHARES_PATCHES")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def identifier(name: str) -> str:
    """``name`` if it is a plain Cypher identifier (safe to place in DDL text); ValueError otherwise."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name
