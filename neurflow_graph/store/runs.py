"""Listing and deleting runs, and the ``Run.latest`` flag.

``latest`` is true on exactly one run per (model, class): the newest *complete* one by
``created_at`` (ties broken by uid). It is recomputed when a run completes and when one is
deleted.

Deleting a run (:func:`delete_run`) hides it first (``status = 'deleting'``, ``latest = false``),
removes the annotations of the run and of its own nodes, its own nodes (SemanticGroup,
NeuronGroup) with their relationships, then the shared nodes it used that no other run uses any
more (Patch, Image, Neuron, Layer, Model, Class) and annotations left pointing at nothing, and
removes the Run node last: an interrupted deletion can simply be run again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from neurflow_graph.errors import InputError
from neurflow_graph.store.batching import batched
from neurflow_graph.store.ingest import COUNT_KEYS

LATEST_QUERY = (
    "UNWIND $rows AS row "
    "MATCH (r:Run) WHERE r.model = row.model AND r.class_name = row.class_name "
    "SET r.latest = false "
    "WITH DISTINCT row "
    "MATCH (r:Run) WHERE r.model = row.model AND r.class_name = row.class_name AND r.status = 'complete' "
    "WITH row, r ORDER BY r.created_at DESC, r.uid DESC "
    "WITH row, collect(r) AS runs "
    "WITH runs[0] AS top "
    "SET top.latest = true"
)

_LIST_QUERY = ("MATCH (r:Run) RETURN r.uid AS uid, r.model AS model, r.class_name AS class_name, "
               "r.class_index AS class_index, r.status AS status, r.latest AS latest, r.created_at AS created_at, "
               + ", ".join(f"r.{k} AS {k}" for k in COUNT_KEYS)
               + " ORDER BY model, class_name, created_at, uid")

_READ_BATCH = 10_000
_DELETE_BATCH = 5_000


def recompute_latest(*, store: Any, pairs: Iterable[tuple[str, str]]) -> None:
    """Set ``latest`` for each (model uid, class name) in ``pairs`` (see the module doc)."""
    rows = [{"model": m, "class_name": c} for m, c in dict.fromkeys(pairs)]
    if rows:
        store.write_rows(LATEST_QUERY, rows, batch_size=1)


@dataclass
class RunInfo:
    """One row of ``neurflow-graph runs``."""

    uid: str
    model: str | None
    class_name: str | None
    class_index: int | None
    status: str | None
    latest: bool
    created_at: str | None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_runs(*, store: Any) -> list[RunInfo]:
    """Every Run node, complete or not, ordered by model, class, created_at."""
    out = []
    for r in store.read(_LIST_QUERY):
        counts = {k.removeprefix("n_"): int(r[k]) for k in COUNT_KEYS if r.get(k) is not None}
        out.append(RunInfo(uid=r["uid"], model=r["model"], class_name=r["class_name"], class_index=r["class_index"],
                           status=r["status"], latest=bool(r["latest"]), created_at=r["created_at"], counts=counts))
    return out


@dataclass
class DeleteResult:
    """What :func:`delete_run` removed (node counts per label)."""

    uid: str
    deleted: dict[str, int]

    def summary(self) -> str:
        parts = ", ".join(f"{n} {label}" for label, n in self.deleted.items() if n)
        return f"deleted run {self.uid}: {parts or 'nothing else'}"


def _uids(store: Any, query: str, params: dict[str, Any]) -> list[str]:
    return sorted({r["uid"] for r in store.read(query, params) if r["uid"] is not None})


def _uids_for(store: Any, query: str, uids: Sequence[str], **params: Any) -> list[str]:
    """Run ``query`` (``UNWIND $uids AS u ...`` returning ``uid``) over ``uids`` in batches."""
    out: set[str] = set()
    for chunk in batched(uids, _READ_BATCH):
        out.update(r["uid"] for r in store.read(query, {"uids": chunk, **params}) if r["uid"] is not None)
    return sorted(out)


def _delete(store: Any, label: str, uids: Sequence[str]) -> int:
    if uids:
        store.write_rows(f"UNWIND $rows AS row MATCH (n:{label} {{uid: row.uid}}) DETACH DELETE n",
                         ({"uid": u} for u in uids), batch_size=_DELETE_BATCH)
    return len(uids)


def delete_run(*, store: Any, uid: str) -> DeleteResult:
    """Remove run ``uid``: its own nodes and relationships, and every shared node no other run uses."""
    found = store.read("MATCH (r:Run {uid: $uid}) RETURN r.model AS model, r.class_name AS class_name", {"uid": uid})
    if not found:
        raise InputError(f"no run {uid!r} in {store.display_url}; list the runs with `neurflow-graph runs`")
    model, class_name = found[0]["model"], found[0]["class_name"]
    store.write_rows("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET r.status = 'deleting', r.latest = false",
                     [{"uid": uid}], batch_size=1)
    recompute_latest(store=store, pairs=[(model, class_name)])
    p = {"run": uid}
    neurons = _uids(store, "MATCH (s:SemanticGroup {run: $run})-[:OF]->(n:Neuron) RETURN DISTINCT n.uid AS uid "
                           "UNION MATCH (n:Neuron)-[:CONTRIBUTES]->(s:SemanticGroup {run: $run}) RETURN DISTINCT n.uid AS uid", p)
    patches = _uids(store, "MATCH (s:SemanticGroup {run: $run})-[:EXEMPLAR]->(x:Patch) RETURN DISTINCT x.uid AS uid", p)
    images = _uids_for(store, "UNWIND $uids AS u MATCH (:Patch {uid: u})-[:CROPPED_FROM]->(i:Image) "
                              "RETURN DISTINCT i.uid AS uid", patches)
    deleted: dict[str, int] = {}
    # annotations of the run and of its own nodes go with them (the run directory's file keeps them)
    deleted["Annotation"] = _delete(store, "Annotation", _uids(
        store, "MATCH (a:Annotation)-[:ANNOTATES]->(:Run {uid: $run}) RETURN a.uid AS uid "
               "UNION MATCH (a:Annotation)-[:ANNOTATES]->(:NeuronGroup {run: $run}) RETURN a.uid AS uid "
               "UNION MATCH (a:Annotation)-[:ANNOTATES]->(:SemanticGroup {run: $run}) RETURN a.uid AS uid", p))
    deleted["SemanticGroup"] = _delete(store, "SemanticGroup",
                                       _uids(store, "MATCH (s:SemanticGroup {run: $run}) RETURN s.uid AS uid", p))
    deleted["NeuronGroup"] = _delete(store, "NeuronGroup",
                                     _uids(store, "MATCH (g:NeuronGroup {run: $run}) RETURN g.uid AS uid", p))
    # shared nodes, leaves first; "used" means linked from another run's nodes, or named by another Run
    deleted["Patch"] = _delete(store, "Patch", _uids_for(
        store, "UNWIND $uids AS u MATCH (x:Patch {uid: u}) WHERE NOT ()-[:EXEMPLAR]->(x) RETURN x.uid AS uid", patches))
    deleted["Image"] = _delete(store, "Image", _uids_for(
        store, "UNWIND $uids AS u MATCH (i:Image {uid: u}) WHERE NOT ()-[:CROPPED_FROM]->(i) RETURN i.uid AS uid", images))
    deleted["Neuron"] = _delete(store, "Neuron", _uids_for(
        store, "UNWIND $uids AS u MATCH (n:Neuron {uid: u}) WHERE NOT ()-[:OF]->(n) AND NOT (n)-[:CONTRIBUTES]->() "
               "RETURN n.uid AS uid", neurons))
    other_runs = "MATCH (r:Run) WHERE r.uid <> $run AND r.model = $model "
    if not store.read(other_runs + "RETURN r.uid AS uid LIMIT 1", {"run": uid, "model": model}):
        layers = _uids(store, "MATCH (m:Model {uid: $model})-[:HAS_LAYER]->(l:Layer) RETURN l.uid AS uid", {"model": model})
        deleted["Layer"] = _delete(store, "Layer", layers)
        deleted["Model"] = _delete(store, "Model", [model] if model else [])
    else:
        names = {n for r in store.read(other_runs + "RETURN r.layers AS layers", {"run": uid, "model": model})
                 for n in (r["layers"] or [])}
        unused = store.read("MATCH (m:Model {uid: $model})-[:HAS_LAYER]->(l:Layer) WHERE NOT (l)-[:HAS_NEURON]->() "
                            "RETURN l.uid AS uid, l.name AS name", {"model": model})
        deleted["Layer"] = _delete(store, "Layer", sorted(r["uid"] for r in unused if r["name"] not in names))
    if not store.read("MATCH (r:Run) WHERE r.uid <> $run AND r.class_name = $cls RETURN r.uid AS uid LIMIT 1",
                      {"run": uid, "cls": class_name}):
        deleted["Class"] = _delete(store, "Class", _uids(store, "MATCH (c:Class) WHERE c.name = $cls RETURN c.uid AS uid",
                                                           {"cls": class_name}))
    # annotations of shared nodes this deletion removed (e.g. a Neuron no other run uses)
    deleted["Annotation"] += _delete(store, "Annotation", _uids(
        store, "MATCH (a:Annotation) WHERE NOT (a)-[:ANNOTATES]->() RETURN a.uid AS uid", {}))
    _delete(store, "Run", [uid])
    store.checkpoint()
    return DeleteResult(uid=uid, deleted=deleted)
