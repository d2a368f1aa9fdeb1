"""A NeoDash dashboard (file format 2.4) whose reports are the query library, verbatim.

One page per theme, one table report per library query; each report's ``query`` is the query's
Neo4j text (its ``.neo4j.cypher`` variant where one exists) exactly as the library holds it.
Library queries take ``$model``, ``$class``, ... : the dashboard's ``settings.parameters`` hold a value
for every parameter (the header's default, or a value from ``values``), which NeoDash passes to
every report; edit them in NeoDash's dashboard settings (docs/dashboard.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

NEODASH_VERSION = "2.4"
PAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Runs", ("dashboard_summary",)),
    ("Class circuit", ("class_circuit", "circuit_groups", "top_groups_per_layer", "concept_paths_to_logit")),
    ("Two classes", ("shared_neurons_by_layer", "shared_groups", "classes_sharing_group")),
    ("Two models", ("compare_models", "hub_neurons", "polysemantic_neurons")),
)


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"neurflow-graph/neodash/{name}"))


def build_dashboard(*, values: Mapping[str, Any] | None = None, title: str = "neurflow-graph") -> dict[str, Any]:
    """The dashboard as a dict (JSON-able). ``values`` overrides parameter values (e.g. model, class)."""
    from neurflow_graph.queries.library import list_queries

    library = {q.name: q for q in list_queries()}
    placed = {n for _, names in PAGES for n in names}
    pages_spec = [*PAGES, ("More queries", tuple(sorted(set(library) - placed)))]
    parameters: dict[str, Any] = {}
    pages = []
    for page_title, names in pages_spec:
        reports = []
        for i, name in enumerate(n for n in names if n in library):
            q = library[name]
            for p in q.params:
                parameters.setdefault(p.name, p.default)
            reports.append({
                "id": _id(name), "title": f"{name}: {q.purpose}", "query": q.text_for("neo4j"),
                "width": 12, "height": 4, "x": 0, "y": 4 * i, "type": "table", "selection": {},
                "settings": {"refreshButtonEnabled": True},
            })
        if reports:
            pages.append({"title": page_title, "reports": reports})
    parameters.update(values or {})
    return {"uuid": _id(title), "title": title, "version": NEODASH_VERSION,
            "settings": {"pagenumber": 0, "editable": True, "fullscreenEnabled": False, "parameters": parameters},
            "pages": pages, "parameters": {}, "extensions": {}}
