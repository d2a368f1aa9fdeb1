"""A run's circuit, read back from the store, as a networkx graph (GraphML or node-link JSON).

Nodes are keyed by their store ``uid`` and carry ``kind`` (``Neuron``, ``SemanticGroup``,
``NeuronGroup``) plus their properties; edges carry ``kind`` (``OF``, ``CONTRIBUTES``,
``HAS_MEMBER``, ``FEEDS``) and, where the graph has them, ``weight`` / ``score``. Graph
attributes name the run, model and class. Properties that are null are left out (GraphML has
no null).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurflow_graph.fileio import atomic_write
from neurflow_graph.errors import InputError, QueryError
from neurflow_graph.queries.library import run_read

if TYPE_CHECKING:
    import networkx as nx

    from neurflow_graph.store.base import GraphStore

EXPORT_FORMATS = ("graphml", "json")

_RUN = """
MATCH (r:Run {uid: $run})
OPTIONAL MATCH (r)-[:OF_MODEL]->(m:Model)
RETURN r.status AS status, r.class_name AS class_name, r.class_index AS class_index,
       r.created_at AS created_at, m.uid AS model_uid, m.name AS model
"""
_SEMANTIC = """
MATCH (s:SemanticGroup {run: $run})-[:OF]->(n:Neuron)
RETURN s.uid AS s_uid, s.layer AS layer, s.neuron_index AS neuron_index, s.j AS j, s.size AS size,
       s.mean_activation AS mean_activation, n.uid AS n_uid, n.layer AS n_layer, n.index AS n_index
"""
_CONTRIBUTES = """
MATCH (s:SemanticGroup {run: $run})<-[c:CONTRIBUTES]-(n:Neuron)
RETURN n.uid AS n_uid, s.uid AS s_uid, c.weight AS weight, c.score AS score
"""
_GROUPS = """
MATCH (r:Run {uid: $run})-[:HAS_GROUP]->(g:NeuronGroup)
OPTIONAL MATCH (g)-[:HAS_MEMBER]->(s:SemanticGroup)
RETURN g.uid AS g_uid, g.layer AS layer, g.gid AS gid, g.size AS size, g.concept AS concept,
       g.purity AS purity, g.label AS label, g.caption AS caption, collect(s.uid) AS members
"""
_FEEDS = """
MATCH (r:Run {uid: $run})-[:HAS_GROUP]->(g:NeuronGroup)-[f:FEEDS]->(p:NeuronGroup)
RETURN g.uid AS child, p.uid AS parent, f.weight AS weight
"""


def _clean(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if v is not None}


def run_graph(*, store: GraphStore, run_uid: str) -> nx.DiGraph:
    """The circuit of complete run ``run_uid`` as a DiGraph read from ``store``; QueryError if absent."""
    import networkx as nx

    params = {"run": run_uid}
    info = run_read(store=store, text=_RUN, params=params)
    if not info:
        raise QueryError(f"no run {run_uid!r} in the store; list runs with `neurflow-graph runs`")
    run = info[0]
    if run.get("status") != "complete":
        raise QueryError(f"run {run_uid} is not complete (status {run.get('status')!r}); ingest it again")
    g = nx.DiGraph()
    g.graph.update(_clean({"run": run_uid, "model": run.get("model"), "model_uid": run.get("model_uid"),
                           "class_name": run.get("class_name"), "class_index": run.get("class_index"),
                           "created_at": run.get("created_at")}))
    for row in run_read(store=store, text=_SEMANTIC, params=params):
        g.add_node(row["n_uid"], kind="Neuron", layer=row["n_layer"], index=row["n_index"])
        g.add_node(row["s_uid"], **_clean({"kind": "SemanticGroup", "layer": row["layer"],
                                           "neuron_index": row["neuron_index"], "j": row["j"],
                                           "size": row["size"], "mean_activation": row["mean_activation"]}))
        g.add_edge(row["s_uid"], row["n_uid"], kind="OF")
    for row in run_read(store=store, text=_CONTRIBUTES, params=params):
        g.add_edge(row["n_uid"], row["s_uid"], **_clean({"kind": "CONTRIBUTES", "weight": row["weight"],
                                                         "score": row["score"]}))
    for row in run_read(store=store, text=_GROUPS, params=params):
        g.add_node(row["g_uid"], **_clean({"kind": "NeuronGroup", "layer": row["layer"], "gid": row["gid"],
                                           "size": row["size"], "concept": row["concept"],
                                           "purity": row["purity"], "label": row["label"],
                                           "caption": row["caption"]}))
        for s_uid in row["members"]:
            g.add_edge(row["g_uid"], s_uid, kind="HAS_MEMBER")
    for row in run_read(store=store, text=_FEEDS, params=params):
        g.add_edge(row["child"], row["parent"], **_clean({"kind": "FEEDS", "weight": row["weight"]}))
    return g


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


def write_graph(*, graph: nx.DiGraph, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``graph`` as GraphML or node-link JSON to ``path``; return the path."""
    import networkx as nx

    _check_format(fmt)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InputError(f"the folder {path.parent} does not exist; create it first")
    try:
        if fmt == "graphml":
            atomic_write(path, lambda f: nx.write_graphml(graph, f))
        else:
            atomic_write(path, lambda f: json.dump(nx.node_link_data(graph, edges="edges"), f, indent=1), mode="w")
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from e
    return path


def graph_bytes(*, graph: nx.DiGraph, fmt: str) -> bytes:
    """``graph`` serialised as GraphML or node-link JSON (what :func:`write_graph` writes)."""
    import io

    import networkx as nx

    _check_format(fmt)
    if fmt == "graphml":
        buf = io.BytesIO()
        nx.write_graphml(graph, buf)
        return buf.getvalue()
    return json.dumps(nx.node_link_data(graph, edges="edges"), indent=1).encode()


def export_run(*, store: GraphStore, run_uid: str, path: str | os.PathLike[str] | None, fmt: str) -> nx.DiGraph:
    """Read run ``run_uid`` (a uid or unique prefix) from ``store`` and write it to ``path`` in ``fmt``
    (``path`` None: write nothing); return the graph."""
    from neurflow_graph.queries.names import resolve_run

    _check_format(fmt)  # before reading the store
    graph = run_graph(store=store, run_uid=resolve_run(store, run_uid))
    if path is not None:
        write_graph(graph=graph, path=path, fmt=fmt)
    return graph
