"""Annotations in the graph: ``(:Annotation)-[:ANNOTATES]->(target)`` (docs/graph-model.md, "Annotations").

An Annotation node holds ``uid`` (identity.annotation_uid of target, key, source: constrained, so
writing again replaces the value), ``target``, ``target_label``, ``key``, ``value`` (the value itself
when it is text, a number or a boolean; absent otherwise), ``value_json`` (the value as JSON text,
always), ``meta_json``, ``source`` and ``created_at``. It points at its target node with
``ANNOTATES``. A FEEDS edge cannot be pointed at: its annotation points at the edge's child
NeuronGroup and ``target`` is the edge's ``uid`` property (identity.feeds_uid), so
``MATCH (a:Annotation {target_label: 'FEEDS'})-[:ANNOTATES]->(:NeuronGroup)-[f:FEEDS]->() WHERE f.uid = a.target``
finds the edge.

Writes are ``UNWIND $rows`` batches with ``MERGE`` on the constrained uid only; annotations never
touch the nodes they annotate, so no run uid changes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from neurflow_graph.annotations import TARGET_LABELS, Annotation, latest_per_key
from neurflow_graph.errors import InputError
from neurflow_graph.identity import annotation_uid
from neurflow_graph.store.batching import batched
from neurflow_graph.store.schema import identifier

ANNOTATION_BATCH = 5_000

_SET = ("a.target = row.target, a.target_label = row.target_label, a.key = row.key, a.value = row.value, "
        "a.value_json = row.value_json, a.meta_json = row.meta_json, a.source = row.source, "
        "a.created_at = row.created_at")


def _node_write(label: str) -> str:
    return (f"UNWIND $rows AS row MATCH (t:{identifier(label)} {{uid: row.target}}) "
            f"MERGE (a:Annotation {{uid: row.uid}}) SET {_SET} MERGE (a)-[:ANNOTATES]->(t)")


_FEEDS_WRITE = ("UNWIND $rows AS row MATCH (t:NeuronGroup {run: row.run})-[f:FEEDS]->(:NeuronGroup) "
                "WHERE f.uid = row.target WITH row, t "
                f"MERGE (a:Annotation {{uid: row.uid}}) SET {_SET} MERGE (a)-[:ANNOTATES]->(t)")


def _node_exists(label: str) -> str:
    return f"UNWIND $uids AS u MATCH (t:{identifier(label)} {{uid: u}}) RETURN t.uid AS uid"


_FEEDS_EXISTS = ("UNWIND $rows AS row MATCH (:NeuronGroup {run: row.run})-[f:FEEDS]->(:NeuronGroup) "
                 "WHERE f.uid = row.target RETURN f.uid AS uid")

_READ = ("MATCH (a:Annotation) WHERE ($target IS NULL OR a.target = $target) AND ($key IS NULL OR a.key = $key) "
         "AND ($source IS NULL OR a.source = $source) "
         "RETURN a.target AS target, a.target_label AS target_label, a.key AS key, a.value_json AS value_json, "
         "a.source AS source, a.created_at AS created_at, a.meta_json AS meta_json "
         "ORDER BY target, key, source")


def _run_of(target: str) -> str:
    """The run uid a FEEDS uid starts with (identity.feeds_uid: ``{run}/{layer}/{gid}>...``)."""
    return target.split("/", 1)[0]


def _row(a: Annotation) -> dict[str, Any]:
    scalar = isinstance(a.value, (str, bool, int, float))
    row = {"uid": annotation_uid(a.target, a.key, a.source), "target": a.target, "target_label": a.target_label,
           "key": a.key, "value": a.value if scalar else None,
           "value_json": json.dumps(a.value, sort_keys=True, ensure_ascii=False),
           "meta_json": json.dumps(a.meta, sort_keys=True, ensure_ascii=False),
           "source": a.source, "created_at": a.created_at}
    if a.target_label == "FEEDS":
        row["run"] = _run_of(a.target)
    return row


def missing_targets(*, store: Any, annotations: Sequence[Annotation]) -> list[Annotation]:
    """The annotations whose target is not in the store."""
    found: set[tuple[str, str]] = set()
    by_label: dict[str, list[Annotation]] = {}
    for a in annotations:
        by_label.setdefault(a.target_label, []).append(a)
    for label, items in by_label.items():
        targets = sorted({a.target for a in items})
        for chunk in batched(targets, ANNOTATION_BATCH):
            if label == "FEEDS":
                rows = store.read(_FEEDS_EXISTS, {"rows": [{"run": _run_of(t), "target": t} for t in chunk]})
            else:
                rows = store.read(_node_exists(label), {"uids": list(chunk)})
            found.update((label, r["uid"]) for r in rows)
    return [a for a in annotations if (a.target_label, a.target) not in found]


def write_annotations(*, store: Any, annotations: Sequence[Annotation], skip_missing: bool = False) -> int:
    """Write ``annotations`` (newest per (target, key, source)); return how many were written.

    Every target must exist: InputError naming the first missing one, before anything is written,
    unless ``skip_missing`` (then those are left out)."""
    for a in annotations:
        if a.target_label not in TARGET_LABELS:
            raise InputError(f"annotation target_label {a.target_label!r} is not one of {', '.join(TARGET_LABELS)}")
    items = latest_per_key(annotations)
    if not items:
        return 0
    store.setup()
    from neurflow_graph.store.text_index import ensure_text_index

    ensure_text_index(store)  # groups_by_label searches annotation text (labels, captions) through it
    missing = missing_targets(store=store, annotations=items)
    if missing and not skip_missing:
        a = missing[0]
        raise InputError(f"{len(missing)} annotation(s) name targets not in {store.display_url}, e.g. "
                         f"{a.target_label} {a.target!r}; ingest the run first or check the uid")
    gone = {(a.target_label, a.target) for a in missing}
    items = [a for a in items if (a.target_label, a.target) not in gone]
    by_label: dict[str, list[dict[str, Any]]] = {}
    for a in items:
        by_label.setdefault(a.target_label, []).append(_row(a))
    for label, rows in sorted(by_label.items()):
        query = _FEEDS_WRITE if label == "FEEDS" else _node_write(label)
        store.write_rows(query, rows, batch_size=ANNOTATION_BATCH)
    return len(items)


def read_annotations(*, store: Any, target: str | None = None, key: str | None = None,
                     source: str | None = None) -> list[Annotation]:
    """Annotations in the store, filtered by any of ``target``, ``key``, ``source``; ordered by them."""
    out = []
    for r in store.read(_READ, {"target": target, "key": key, "source": source}):
        out.append(Annotation(target=r["target"], target_label=r["target_label"], key=r["key"],
                              value=json.loads(r["value_json"]), source=r["source"], created_at=r["created_at"],
                              meta=json.loads(r["meta_json"] or "{}")))
    return out


# ---- a user's labels for one run (``neurflow-graph annotate``) -----------------------------------

_GROUPS = "MATCH (g:NeuronGroup {run: $run}) RETURN g.uid AS uid, g.layer AS layer, g.gid AS gid"


def user_label_annotations(*, store: Any, run_uid: str, labels: Sequence[Any], source: str = "user") -> list[Annotation]:
    """Annotations (source ``source``) for ``labels`` (annotations.UserLabel) on the groups of run
    ``run_uid``; InputError naming the first entry whose group the run does not have."""
    from neurflow_graph.annotations import make_annotation

    groups = store.read(_GROUPS, {"run": run_uid})
    by_uid = {r["uid"] for r in groups}
    by_key = {(r["layer"], int(r["gid"])): r["uid"] for r in groups}
    layers = sorted({r["layer"] for r in groups})
    out = []
    for lab in labels:
        if lab.uid is not None:
            target = lab.uid if lab.uid in by_uid else None
            if target is None:
                raise InputError(f"{lab.where}: run {run_uid} has no neuron group {lab.uid!r} "
                                 f"(its group uids start with {run_uid}/; list them with `neurflow-graph query "
                                 f"class_circuit`)")
        else:
            target = by_key.get((lab.layer, lab.gid))
            if target is None:
                if lab.layer not in layers:
                    from neurflow_graph.queries.names import suggest

                    raise InputError(f"{lab.where}: run {run_uid} has no layer {lab.layer!r}"
                                     f"; {suggest(lab.layer, layers)}")
                gids = sorted(g for (layer, g) in by_key if layer == lab.layer)
                raise InputError(f"{lab.where}: layer {lab.layer!r} of run {run_uid} has no group {lab.gid} "
                                 f"(its groups: {', '.join(map(str, gids))})")
        for key, value in lab.values.items():
            out.append(make_annotation(target=target, target_label="NeuronGroup", key=key, value=value,
                                       source=source, meta={"from": lab.where}))
    return out
