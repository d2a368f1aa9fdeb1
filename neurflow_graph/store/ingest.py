"""Circuits into the graph: rows, idempotent ingestion and the run status protocol.

Protocol (docs/graph-model.md, "Run status"):

1. ``MERGE`` the ``Run`` node (uid: :func:`neurflow_graph.identity.run_uid`, content only); a new
   one gets ``status = 'ingesting'``, ``latest = false``. A run already ``complete`` is skipped
   (unless ``force``: rewritten in place by MERGEs, no claim) -- but steps 5 and 6 still run.
   An incomplete run is written only under its **claim** (``CLAIM_QUERY``, one atomic query with
   the MERGE): ``Run.writer`` = this ingest's random token, ``Run.beat`` = the server's clock
   (``timestamp()``) at its latest beat. A query of steps 2-4 is preceded by a heartbeat
   (``BEAT_QUERY``, :class:`_Beating`) once ``BEAT_EVERY`` (1/6) of ``AWAIT_SECONDS`` has passed since the last, that also checks the claim is still held; remains of an
   earlier ingest are deleted only under it (``_delete_remains``: claim held and status not
   ``complete``, checked in the delete query). An ingest that finds the run claimed waits
   (:func:`_await_other_ingest`) while the holder's heartbeat is younger than ``AWAIT_SECONDS``
   (60 s): once the run is ``complete`` it goes on as a skip (steps 5-6, "written by another ingest
   at the same time"); once the claim is given up (the holder failed with an error: it releases
   it) or stale (killed) it takes the run over and writes it (steps 2-4); ``on_wait`` hears of the
   wait (:class:`WaitInfo`: started, still waiting, ended; the CLI prints its start and end). A
   holder that finds its claim taken (it sent nothing for ``AWAIT_SECONDS``) stops writing and waits
   in the same way.
   Step 4's ``complete`` removes ``writer`` and ``beat``.
2. Write every node label, then every relationship type: one ``UNWIND $rows AS row`` query
   per label/type and batch, nodes ``MERGE``d on their constrained ``uid``, relationships
   ``MERGE``d between ``MATCH``ed endpoints. Shared nodes (Model, Layer, Neuron, Class, Patch,
   Image) are reused by every run that names them.
3. Count what the store holds for the run and compare with the rows (a concurrent
   ``delete-run`` could have removed a shared endpoint); on a mismatch rewrite once.
4. Every group's best paths (store/paths.py), then ``status = 'complete'`` with the counts.
5. Recompute ``latest`` for (model, class) -- also after a skip, so a client killed between
   steps 4 and 5 is repaired by the next ingest.
6. ``Run.run_dir``, mosaic references and the run directory's annotations, then a checkpoint.

On Neo4j the writes of steps 2 and 4 share a few large explicit transactions (``store.bulk()``,
see store/neo4j_store.py) and every ingest query keeps its first plan (``store.plan_once()``);
the ``complete`` write of step 4 is always a transaction of its own. Stores without these
(FalkorDB, test wrappers) run each query as its own atomic write.

Two ingests of the same run at once (two terminals, two CI jobs): one holds the claim and writes; the
other waits and ends as a skip; nothing of the writer's is deleted and the run is never ``complete``
short of anything (tests/test_store_concurrent_same_run.py). Not covered: a holder paused for longer
than ``AWAIT_SECONDS`` *between* its heartbeat and the query after it (e.g. SIGSTOP) may write that
one query after a taker started; the verification (step 3) of the taker catches a mismatch.

Every step is idempotent, so an ingest that died anywhere (exception, SIGKILL of either
process) is finished by running it again, without duplicates. Queries read only complete runs.
Run directories are streamed (:func:`iter_runs`): one circuit in memory at a time, each validated
completely before any of its writes.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

from neurflow_graph.annotations import Annotation, make_annotation, now_utc, read_run_annotations
from neurflow_graph.circuit import ARRAYS_PREFIX, CIRCUIT_FILE, Circuit, load_circuit
from neurflow_graph.errors import InputError, RunFormatError, StoreError
from neurflow_graph.extraction.rundir import CHECKPOINT_DIR
from neurflow_graph.fileio import temp_pattern
from neurflow_graph.identity import (  # noqa: F401  (run_uid, model_uid, uid_part re-exported for callers)
    class_uid, feeds_uid, image_uid, layer_uid, model_uid, neuron_group_uid, neuron_uid, patch_uid, run_uid,
    semantic_group_uid, uid_part,
)
from neurflow_graph.store.base import GraphStore
from neurflow_graph.store.schema import identifier

INGEST_BATCH_SIZE = 10_000
T = TypeVar("T")

# label -> properties written besides uid (the order is the SET order)
NODE_PROPS: dict[str, tuple[str, ...]] = {
    "Model": ("name", "weights_sha256"),
    "Layer": ("model", "name", "depth"),
    "Neuron": ("model", "layer", "index"),
    "Class": ("name",),
    "Image": ("sha256", "path"),
    "Patch": ("image_sha256", "x0", "y0", "x1", "y1"),
    "SemanticGroup": ("run", "layer", "neuron_index", "j", "size", "mean_activation"),
    "NeuronGroup": ("run", "layer", "gid", "size", "neurons", "members_i", "members_j", "n_patches"),
}
# NeuronGroup aggregates, derived from the circuit at ingest (docs/graph-model.md "Derived aggregates"):
# neurons = distinct member neuron indices (ascending); members_i / members_j = its members
# [neuron index, j] sorted, as two parallel lists; n_patches = distinct exemplar patches of its members.

# type -> (start label, end label, relationship properties)
REL_SPEC: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "HAS_LAYER": ("Model", "Layer", ()),
    "HAS_NEURON": ("Layer", "Neuron", ()),
    "CROPPED_FROM": ("Patch", "Image", ()),
    "OF_MODEL": ("Run", "Model", ()),
    "EXPLAINS": ("Run", "Class", ()),
    "HAS_GROUP": ("Run", "NeuronGroup", ()),
    "OF": ("SemanticGroup", "Neuron", ()),
    "CONTRIBUTES": ("Neuron", "SemanticGroup", ("run", "weight", "score")),
    "HAS_MEMBER": ("NeuronGroup", "SemanticGroup", ()),
    "FEEDS": ("NeuronGroup", "NeuronGroup", ("run", "uid", "weight")),
    "EXEMPLAR": ("SemanticGroup", "Patch", ("rank",)),
}

RUN_PROPS = ("model", "class_name", "class_index", "params", "software_version", "layers", "n_layers",
             "neuron_layer", "neuron_index", "neuron_sgs")
# Run aggregates, derived from the circuit at ingest (docs/graph-model.md "Derived aggregates"): one
# entry per neuron that holds a semantic group in the run, sorted by (layer position, index), as three
# parallel lists: neuron_layer = position of its layer in ``layers``, neuron_index, neuron_sgs = its
# number of semantic groups. Model-wide queries (hub_neurons, polysemantic_neurons) read these
# instead of every SemanticGroup node of every latest run.
# Run.aggregates: the version of the derived aggregates (docs/graph-model.md "Derived aggregates") the
# run was completed with, written with ``status = 'complete'``; runs ingested before it existed have none,
# and the library queries that read aggregates refuse them (queries/names.py check_aggregates).
# Bump it when an aggregate is added or changes meaning: older runs then need `ingest --force`.
AGGREGATES_VERSION = 1
COUNT_KEYS = ("n_neurons", "n_semantic_groups", "n_edges", "n_neuron_groups", "n_group_edges",
              "n_patches", "n_images", "n_nodes", "n_relationships")


def node_query(label: str) -> str:
    """``UNWIND $rows AS row MERGE (n:Label {uid: row.uid}) SET n.p = row.p, ...``"""
    sets = ", ".join(f"n.{identifier(p)} = row.{identifier(p)}" for p in NODE_PROPS[label])
    return f"UNWIND $rows AS row MERGE (n:{identifier(label)} {{uid: row.uid}}) SET {sets}"


def rel_query(rel_type: str) -> str:
    """``UNWIND $rows AS row MATCH (a {uid: row.a}) MATCH (b {uid: row.b}) MERGE (a)-[r:TYPE]->(b) [SET ...]``"""
    start, end, props = REL_SPEC[rel_type]
    q = (f"UNWIND $rows AS row MATCH (a:{identifier(start)} {{uid: row.a}}) MATCH (b:{identifier(end)} {{uid: row.b}}) "
         f"MERGE (a)-[r:{identifier(rel_type)}]->(b)")
    if props:
        q += " SET " + ", ".join(f"r.{identifier(p)} = row.{identifier(p)}" for p in props)
    return q


RUN_QUERY = ("UNWIND $rows AS row MERGE (r:Run {uid: row.uid}) "
             "ON CREATE SET r.status = 'ingesting', r.latest = false, r.created_at = row.created_at "
             "SET " + ", ".join(f"r.{p} = row.{p}" for p in RUN_PROPS))
RUN_PROPS_QUERY = ("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET "
                   + ", ".join(f"r.{p} = row.{p}" for p in RUN_PROPS))
RUN_DIR_QUERY = "UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET r.run_dir = row.run_dir"
# --force on a complete run: rewritten in place, no claim (every write there is an idempotent MERGE)
FORCED_COMPLETE_QUERY = ("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET r.status = 'complete', "
                         "r.aggregates = row.aggregates, " + ", ".join(f"r.{k} = row.{k}" for k in COUNT_KEYS))

# ---- the writer claim (docs/graph-model.md, "Concurrent ingests of one run") ----------------------
# An incomplete run is written only by the ingest holding its claim: Run.writer = a random token of that
# ingest, Run.beat = the server's clock (timestamp(), ms) at its latest write. Portable forms, checked on
# both backends: the first SET reads the node's own properties, so Neo4j write-locks the Run before
# reading them (no lost update between two claimants); the decision is then a variable (FalkorDB runs a
# query atomically, but reads a node's old values in later SET items and moves a WHERE after a SET in
# front of it, so no query here filters on a value it has just set).
_MINE = "r.status = r.status WITH r, row, r.writer = row.writer AS mine "
CLAIM_QUERY = (
    "UNWIND $rows AS row MERGE (r:Run {uid: row.uid}) "
    "ON CREATE SET r.status = 'new', r.latest = false, r.created_at = row.created_at "
    "SET r.status = r.status "
    "WITH r, row, r.status = 'new' AS created, r.status = 'new' OR (r.status <> 'complete' AND "
    "(r.writer IS NULL OR r.writer = row.writer OR r.beat < timestamp() - row.stale_ms)) AS mine "
    "SET r.status = CASE WHEN created THEN 'ingesting' ELSE r.status END, "
    "r.writer = CASE WHEN mine THEN row.writer ELSE r.writer END, "
    "r.beat = CASE WHEN mine THEN timestamp() ELSE r.beat END "
    "RETURN created, mine")
BEAT_QUERY = ("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) "
              "SET r.beat = CASE WHEN r.writer = row.writer THEN timestamp() ELSE r.beat END "
              "RETURN r.writer = row.writer AS mine")
RELEASE_QUERY = ("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET " + _MINE +
                 "SET r.beat = CASE WHEN mine THEN null ELSE r.beat END, "
                 "r.writer = CASE WHEN mine THEN null ELSE r.writer END RETURN mine")
# 'complete' with the counts, and the claim removed (a complete run carries no writer / beat)
COMPLETE_QUERY = ("UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET " + _MINE + "SET "
                  + ", ".join(f"r.{k} = CASE WHEN mine THEN {v} ELSE r.{k} END" for k, v in [
                      ("status", "'complete'"), ("aggregates", "row.aggregates"),
                      *((k, f"row.{k}") for k in COUNT_KEYS), ("beat", "null"), ("writer", "null")])
                  + " RETURN mine")
AWAIT_QUERY = ("MATCH (r:Run {uid: $uid}) RETURN r.status AS status, r.writer AS writer, "
               "timestamp() - r.beat AS age")

# What the store holds for one run, one (kind, count) row per run-scoped node label / relationship type.
VERIFY_QUERY = " UNION ALL ".join([
    "MATCH (s:SemanticGroup {run: $run}) RETURN 'SemanticGroup' AS kind, count(s) AS n",
    "MATCH (g:NeuronGroup {run: $run}) RETURN 'NeuronGroup' AS kind, count(g) AS n",
    "MATCH (s:SemanticGroup {run: $run})-[e:OF]->(:Neuron) RETURN 'OF' AS kind, count(e) AS n",
    "MATCH (:Neuron)-[e:CONTRIBUTES]->(s:SemanticGroup {run: $run}) RETURN 'CONTRIBUTES' AS kind, count(e) AS n",
    "MATCH (s:SemanticGroup {run: $run})-[e:EXEMPLAR]->(:Patch) RETURN 'EXEMPLAR' AS kind, count(e) AS n",
    "MATCH (g:NeuronGroup {run: $run})-[e:HAS_MEMBER]->(:SemanticGroup) RETURN 'HAS_MEMBER' AS kind, count(e) AS n",
    "MATCH (g:NeuronGroup {run: $run})-[e:FEEDS]->(:NeuronGroup) RETURN 'FEEDS' AS kind, count(e) AS n",
    "MATCH (r:Run {uid: $run})-[e:HAS_GROUP]->(:NeuronGroup) RETURN 'HAS_GROUP' AS kind, count(e) AS n",
    "MATCH (r:Run {uid: $run})-[e:OF_MODEL]->(:Model) RETURN 'OF_MODEL' AS kind, count(e) AS n",
    "MATCH (r:Run {uid: $run})-[e:EXPLAINS]->(:Class) RETURN 'EXPLAINS' AS kind, count(e) AS n",
])
VERIFIED = ("SemanticGroup", "NeuronGroup", "OF", "CONTRIBUTES", "EXEMPLAR", "HAS_MEMBER", "FEEDS",
            "HAS_GROUP", "OF_MODEL", "EXPLAINS")


# ---- uids -------------------------------------------------------------------------------------
# Every uid comes from neurflow_graph.identity (content identity, docs/graph-model.md "Identity").

# ---- rows -------------------------------------------------------------------------------------

@dataclass
class CircuitRows:
    """Everything one circuit writes: the Run row, node rows per label, relationship rows per type."""

    uid: str
    run: dict[str, Any]
    nodes: dict[str, list[dict[str, Any]]]
    rels: dict[str, list[dict[str, Any]]]
    group_patches: dict[str, set[str]] = field(default_factory=dict)  # NeuronGroup uid -> distinct patch uids

    @property
    def n_nodes(self) -> int:
        return 1 + sum(len(v) for v in self.nodes.values())

    @property
    def n_relationships(self) -> int:
        return sum(len(v) for v in self.rels.values())


def _dedupe(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """Keep the first row per key (FalkorDB drops SETs of a key repeated within one MERGE batch)."""
    rows = list(rows)
    keys = list(map(key, rows))
    if len(set(keys)) == len(keys):  # the usual case: nothing repeated
        return rows
    seen: dict[Any, dict[str, Any]] = {}
    for k, r in zip(keys, rows):
        seen.setdefault(k, r)
    return list(seen.values())


def circuit_rows(circuit: Circuit, *, validate: bool = True, uid: str | None = None) -> CircuitRows:
    """Build all rows of ``circuit`` (validated first unless the caller just did; ``uid``: its
    run_uid when the caller has it) in plain Python."""
    if validate:
        circuit.validate()
    uid = uid or run_uid(circuit)
    muid = model_uid(circuit)
    layers = list(circuit.model.layers)
    layer_uids = {name: layer_uid(muid, name) for name in layers}
    class_name = circuit.class_.name
    cls_uid = class_uid(class_name)

    # each uid computed once (identity functions), then looked up: edges name the same nodes many times
    nu_memo: dict[tuple[str, int], str] = {}
    sg_memo: dict[tuple[str, int, int], str] = {}
    ng_memo: dict[tuple[str, int], str] = {}

    def nu_of(layer: str, index: int) -> str:
        k = (layer, index)
        v = nu_memo.get(k)
        if v is None:
            v = nu_memo[k] = neuron_uid(muid, layer, index)
        return v

    def sg_uid(layer: str, index: int, j: int) -> str:
        k = (layer, index, j)
        v = sg_memo.get(k)
        if v is None:
            v = sg_memo[k] = semantic_group_uid(uid, layer, index, j)
        return v

    def ng_uid(layer: str, gid: int) -> str:
        k = (layer, gid)
        v = ng_memo.get(k)
        if v is None:
            v = ng_memo[k] = neuron_group_uid(uid, layer, gid)
        return v

    images = {}
    for im in circuit.images:
        images[im.id] = im
    img_uid = {i: image_uid(im.sha256) for i, im in images.items()}
    p_uid: dict[int, str] = {}
    patch_rows: list[dict[str, Any]] = []
    for p in circuit.patches:
        x0, y0, x1, y1 = (int(v) for v in p.box)
        pu = patch_uid(images[p.image].sha256, p.box)
        p_uid[p.id] = pu
        patch_rows.append({"uid": pu, "image_sha256": images[p.image].sha256, "x0": x0, "y0": y0, "x1": x1, "y1": y1})

    neuron_rows, sg_rows, of_rows, ex_rows = [], [], [], []
    for n in circuit.neurons:
        nu = nu_of(n.layer, n.index)
        neuron_rows.append({"uid": nu, "model": muid, "layer": n.layer, "index": int(n.index)})
        for g in n.semantic_groups:
            su = sg_uid(n.layer, n.index, g.id)
            sg_rows.append({"uid": su, "run": uid, "layer": n.layer, "neuron_index": int(n.index), "j": int(g.id),
                            "size": len(g.patches), "mean_activation": float(g.mean_activation)})
            of_rows.append({"a": su, "b": nu})
            for rank, pid in enumerate(g.patches):
                ex_rows.append({"a": su, "b": p_uid[pid], "rank": rank})

    contrib_rows = [{"a": nu_of(e.child_layer, e.child_index),
                     "b": sg_uid(e.parent_layer, e.parent_index, e.parent_group),
                     "run": uid, "weight": float(e.weight), "score": float(e.score)} for e in circuit.edges]

    sg_patches = {(n.layer, n.index, g.id): g.patches for n in circuit.neurons for g in n.semantic_groups}
    ng_rows, member_rows = [], []
    group_patches: dict[str, set[str]] = {}
    for g in circuit.neuron_groups:
        gu = ng_uid(g.layer, g.id)
        members = sorted((int(i), int(j)) for i, j in g.members)
        patches: set[int] = set()
        for idx, j in g.members:
            member_rows.append({"a": gu, "b": sg_uid(g.layer, idx, j)})
            patches.update(sg_patches.get((g.layer, idx, j), ()))
        group_patches[gu] = {p_uid[p] for p in patches}
        ng_rows.append({"uid": gu, "run": uid, "layer": g.layer, "gid": int(g.id), "size": len(g.members),
                        "neurons": sorted({i for i, _ in members}), "members_i": [i for i, _ in members],
                        "members_j": [j for _, j in members], "n_patches": len(group_patches[gu])})
    feeds_rows = [{"a": ng_uid(e.child_layer, e.child_group), "b": ng_uid(e.parent_layer, e.parent_group), "run": uid,
                   "uid": feeds_uid(uid, e.child_layer, e.child_group, e.parent_layer, e.parent_group),
                   "weight": float(e.weight)} for e in circuit.group_edges]

    by_uid: Callable[[dict[str, Any]], Any] = itemgetter("uid")
    ends: Callable[[dict[str, Any]], Any] = itemgetter("a", "b")
    nodes = {
        "Model": [{"uid": muid, "name": circuit.model.name, "weights_sha256": circuit.model.weights_sha256}],
        "Class": [{"uid": cls_uid, "name": class_name}],
        "Layer": [{"uid": layer_uids[name], "model": muid, "name": name, "depth": d} for d, name in enumerate(layers)],
        "Image": _dedupe(({"uid": img_uid[i], "sha256": im.sha256, "path": im.path} for i, im in images.items()), by_uid),
        "Patch": _dedupe(patch_rows, by_uid),
        "Neuron": _dedupe(neuron_rows, by_uid),
        "SemanticGroup": _dedupe(sg_rows, by_uid),
        "NeuronGroup": _dedupe(ng_rows, by_uid),
    }
    rels = {
        "HAS_LAYER": [{"a": muid, "b": layer_uids[name]} for name in layers],
        "HAS_NEURON": _dedupe(({"a": layer_uids[r["layer"]], "b": r["uid"]} for r in nodes["Neuron"]), ends),
        "CROPPED_FROM": _dedupe(({"a": p_uid[p.id], "b": img_uid[p.image]} for p in circuit.patches), ends),
        "OF_MODEL": [{"a": uid, "b": muid}],
        "EXPLAINS": [{"a": uid, "b": cls_uid}],
        "HAS_GROUP": [{"a": uid, "b": r["uid"]} for r in nodes["NeuronGroup"]],
        "OF": _dedupe(of_rows, ends),
        "CONTRIBUTES": _dedupe(contrib_rows, ends),
        "HAS_MEMBER": _dedupe(member_rows, ends),
        "FEEDS": _dedupe(feeds_rows, ends),
        "EXEMPLAR": _dedupe(ex_rows, ends),
    }
    run = {
        "uid": uid, "model": muid, "class_name": class_name, "class_index": int(circuit.class_.index),
        "params": json.dumps(circuit.params, sort_keys=True, default=str),
        "software_version": circuit.software.get("neurflow_graph") or circuit.software.get("neurflow-graph"),
        "layers": layers, "n_layers": len({n.layer for n in circuit.neurons}),
        **_neuron_aggregates(circuit, layers),
        "created_at": circuit.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = CircuitRows(uid=uid, run=run, nodes=nodes, rels=rels, group_patches=group_patches)
    run.update({
        "n_neurons": len(nodes["Neuron"]), "n_semantic_groups": len(nodes["SemanticGroup"]),
        "n_edges": len(rels["CONTRIBUTES"]), "n_neuron_groups": len(nodes["NeuronGroup"]),
        "n_group_edges": len(rels["FEEDS"]), "n_patches": len(nodes["Patch"]), "n_images": len(nodes["Image"]),
        "n_nodes": out.n_nodes, "n_relationships": out.n_relationships,
    })
    return out


def _neuron_aggregates(circuit: Circuit, layers: list[str]) -> dict[str, list[int]]:
    """The Run's per-neuron aggregates (see RUN_PROPS): neurons with at least one semantic group."""
    pos = {name: i for i, name in enumerate(layers)}
    sgs: dict[tuple[int, int], int] = {}
    for n in circuit.neurons:
        if n.semantic_groups:
            key = (pos[n.layer], int(n.index))
            sgs[key] = sgs.get(key, 0) + len(n.semantic_groups)
    keys = sorted(sgs)
    return {"neuron_layer": [k[0] for k in keys], "neuron_index": [k[1] for k in keys],
            "neuron_sgs": [sgs[k] for k in keys]}


def expected_counts(rows: CircuitRows) -> dict[str, int]:
    """What :data:`VERIFY_QUERY` must find once ``rows`` are written."""
    exp = {k: len(rows.nodes[k]) for k in ("SemanticGroup", "NeuronGroup")}
    exp.update({k: len(rows.rels[k]) for k in VERIFIED if k in rows.rels})
    return exp


# ---- ingestion --------------------------------------------------------------------------------

@dataclass
class IngestResult:
    """One run's ingestion: ``skipped`` when it was already complete (its annotations and ``latest``
    are still brought up to date)."""

    uid: str
    model: str
    class_name: str
    nodes: int
    relationships: int
    seconds: float
    skipped: bool = False
    concurrent: bool = False  # skipped because another ingest of the same run was writing it at the same time
    took_over: bool = False  # written after taking the run over from an ingest of it that had stopped
    source: Path | None = None
    annotations: int = 0
    annotations_skipped: int = 0

    @property
    def rels_per_second(self) -> float:
        return self.relationships / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        notes = ""
        if self.annotations or self.annotations_skipped:
            notes = f", {self.annotations} annotations"
            if self.annotations_skipped:
                notes += f" ({self.annotations_skipped} skipped: their targets are not in this run)"
        if self.concurrent:
            return (f"run {self.uid}  {self.model}  class {self.class_name!r}: written by another ingest at the "
                    f"same time, which completed it{notes}")
        if self.skipped:
            return (f"run {self.uid}  {self.model}  class {self.class_name!r}: already complete, skipped "
                    f"(--force rewrites it){notes}")
        if self.took_over:
            notes = (f", taken over from another ingest of it that had stopped (no heartbeat for "
                     f"{AWAIT_SECONDS:.0f} s) or failed{notes}")
        return (f"run {self.uid}  {self.model}  class {self.class_name!r}: {self.nodes} nodes, "
                f"{self.relationships} relationships in {self.seconds:.2f}s ({self.rels_per_second:,.0f} rel/s){notes}")


def _write_all(store: Any, rows: CircuitRows, batch_size: int) -> None:
    for label in ("Model", "Class", "Layer", "Image", "Patch", "Neuron", "SemanticGroup", "NeuronGroup"):
        if rows.nodes[label]:
            store.write_rows(node_query(label), rows.nodes[label], batch_size=batch_size)
    for rel_type in REL_SPEC:
        if rows.rels[rel_type]:
            store.write_rows(rel_query(rel_type), rows.rels[rel_type], batch_size=batch_size)


# ---- the create path: a run that is not in the store yet ---------------------------------------
# Run-owned nodes (SemanticGroup, NeuronGroup) and every relationship touching them are CREATEd,
# with their endpoints found by the internal node id the store returned when it wrote them (no
# uid index lookups, no MERGE pattern checks); shared nodes are MERGEd on their uid as always.
# Rows are nested (one row per node, its relationships as lists) so that each batch carries about
# ``batch_size`` relationships. Used only when the run status protocol says the run is absent or
# incomplete (its remains are deleted first); a forced rewrite of a complete run, and the second
# attempt after a failed verification, use the MERGE path (_write_all).

ID_FUNCTION = {"falkordb": "id", "neo4j": "elementId"}  # the backend's internal node id function


def _id_queries(fn: str) -> dict[str, str]:
    """The create path's queries, with ``fn`` (``id`` or ``elementId``) as the node id function. Each
    id is projected to a variable before its MATCH: FalkorDB seeks by id only when compared with a
    variable (``WHERE id(n) = row.n`` scans the label)."""
    sg_props = ", ".join(f"{p}: row.{p}" for p in NODE_PROPS["SemanticGroup"] if p != "run")
    ng_props = ", ".join(f"{p}: row.{p}" for p in NODE_PROPS["NeuronGroup"] if p != "run")
    return {
        "SemanticGroup": (f"UNWIND $rows AS row WITH row, row.n AS nid MATCH (n:Neuron) WHERE {fn}(n) = nid "
                          f"CREATE (s:SemanticGroup {{uid: row.uid, run: $run, {sg_props}}})-[:OF]->(n) "
                          f"RETURN row.uid AS uid, {fn}(s) AS id"),
        "EXEMPLAR": (f"UNWIND $rows AS row WITH row, row.s AS sid MATCH (s:SemanticGroup) WHERE {fn}(s) = sid "
                     "UNWIND range(0, size(row.p) - 1) AS k WITH s, row.p[k] AS pid, row.r[k] AS rank "
                     f"MATCH (x:Patch) WHERE {fn}(x) = pid CREATE (s)-[:EXEMPLAR {{rank: rank}}]->(x)"),
        "CONTRIBUTES": (f"UNWIND $rows AS row WITH row, row.s AS sid MATCH (s:SemanticGroup) WHERE {fn}(s) = sid "
                        "UNWIND range(0, size(row.c) - 1) AS k WITH s, row.c[k] AS cid, row.w[k] AS w, row.x[k] AS x "
                        f"MATCH (n:Neuron) WHERE {fn}(n) = cid "
                        "CREATE (n)-[:CONTRIBUTES {run: $run, weight: w, score: x}]->(s)"),
        "NeuronGroup": ("UNWIND $rows AS row MATCH (r:Run {uid: $run}) "
                        f"CREATE (r)-[:HAS_GROUP]->(g:NeuronGroup {{uid: row.uid, run: $run, {ng_props}}}) "
                        f"RETURN row.uid AS uid, {fn}(g) AS id"),
        "HAS_MEMBER": (f"UNWIND $rows AS row WITH row, row.g AS gid MATCH (g:NeuronGroup) WHERE {fn}(g) = gid "
                       f"UNWIND row.m AS sid MATCH (s:SemanticGroup) WHERE {fn}(s) = sid CREATE (g)-[:HAS_MEMBER]->(s)"),
        "FEEDS": ("UNWIND $rows AS row WITH row, row.a AS aid, row.b AS bid "
                  f"MATCH (a:NeuronGroup) WHERE {fn}(a) = aid MATCH (b:NeuronGroup) WHERE {fn}(b) = bid "
                  "CREATE (a)-[:FEEDS {run: $run, uid: row.uid, weight: row.weight}]->(b)"),
    }


def _nested_batches(rows: list[dict[str, Any]], key: str, size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive lists of ``rows`` holding about ``size`` items of their ``key`` lists each."""
    chunk: list[dict[str, Any]] = []
    n = 0
    for r in rows:
        chunk.append(r)
        n += len(r[key]) + 1
        if n >= size:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _write_ids(store: Any, query: str, rows: list[dict[str, Any]], batch_size: int,
               **params: Any) -> dict[str, Any]:
    """Run ``query`` (returning ``uid``, ``id``) over ``rows`` in batches; uid -> internal id."""
    out: dict[str, Any] = {}
    for i in range(0, len(rows), batch_size):
        for r in store.write(query, {"rows": rows[i:i + batch_size], **params}):
            out[r["uid"]] = r["id"]
    return out


def _delete_remains(store: Any, uid: str, claim: "_Claim") -> None:
    """Remove what an interrupted ingest of run ``uid`` left (its own nodes with their
    relationships), in bounded transactions, only while ``claim`` holds the run and it is not
    complete (each one checked first, _ClaimLost when it is not held); annotations of them stay and
    are linked again later."""
    for label in ("SemanticGroup", "NeuronGroup"):
        while True:
            claim.beat(store)
            if not store.write(f"UNWIND $rows AS row MATCH (r:Run {{uid: row.run}}) WHERE r.writer = row.writer "
                               f"AND r.status <> 'complete' MATCH (n:{label} {{run: row.run}}) WITH n LIMIT 5000 "
                               "DETACH DELETE n RETURN count(*) AS c",
                               {"rows": [{"run": uid, "writer": claim.writer}]})[0]["c"]:
                break


_RELINK = ("MATCH (a:Annotation) WHERE a.target_label IN ['NeuronGroup', 'SemanticGroup', 'FEEDS'] "
           "AND a.target STARTS WITH $prefix AND NOT (a)-[:ANNOTATES]->() RETURN a.uid AS uid, a.target AS target, "
           "a.target_label AS label")


def _relink_annotations(store: Any, uid: str, ids: dict[str, Any], fn: str) -> None:
    """Point annotations of run ``uid``'s own nodes (left unlinked by _delete_remains) at the new nodes."""
    rows = []
    for r in store.read(_RELINK, {"prefix": uid + "/"}):
        target = r["target"].split(">", 1)[0] if r["label"] == "FEEDS" else r["target"]
        if target in ids:
            rows.append({"uid": r["uid"], "t": ids[target]})
    if rows:
        store.write_rows(f"UNWIND $rows AS row WITH row, row.t AS tid MATCH (a:Annotation {{uid: row.uid}}) "
                         f"MATCH (b) WHERE {fn}(b) = tid "
                         "MERGE (a)-[r:ANNOTATES]->(b)", rows, batch_size=5000)


def _create_all(store: Any, rows: CircuitRows, batch_size: int) -> dict[str, Any]:
    """The create path's writes (see above): shared nodes MERGEd (ids returned), the run's own nodes
    and relationships CREATEd by id; returns the run's own nodes' uid -> internal id."""
    fn = ID_FUNCTION[store.backend]
    q = _id_queries(fn)
    uid = rows.uid
    for label in ("Model", "Class", "Layer", "Image"):
        if rows.nodes[label]:
            store.write_rows(node_query(label), rows.nodes[label], batch_size=batch_size)
    ret = f" RETURN row.uid AS uid, {fn}(n) AS id"
    patch_id = _write_ids(store, node_query("Patch") + ret, rows.nodes["Patch"], batch_size)
    neuron_id = _write_ids(store, node_query("Neuron") + ret, rows.nodes["Neuron"], batch_size)
    for rel_type in ("HAS_LAYER", "HAS_NEURON", "CROPPED_FROM", "OF_MODEL", "EXPLAINS"):  # shared endpoints
        if rows.rels[rel_type]:
            store.write_rows(rel_query(rel_type), rows.rels[rel_type], batch_size=batch_size)
    of = {r["a"]: r["b"] for r in rows.rels["OF"]}
    sg_rows = [{**{k: r[k] for k in NODE_PROPS["SemanticGroup"] if k != "run"}, "uid": r["uid"],
                "n": neuron_id[of[r["uid"]]]} for r in rows.nodes["SemanticGroup"]]
    sg_id = _write_ids(store, q["SemanticGroup"], sg_rows, batch_size, run=uid)
    del sg_rows
    ex: dict[str, tuple[list[Any], list[int]]] = {}
    for r in rows.rels["EXEMPLAR"]:
        p, rk = ex.setdefault(r["a"], ([], []))
        p.append(patch_id[r["b"]])
        rk.append(r["rank"])
    ex_rows = [{"s": sg_id[s], "p": p, "r": rk} for s, (p, rk) in ex.items()]
    del ex
    for chunk in _nested_batches(ex_rows, "p", batch_size):
        store.write(q["EXEMPLAR"], {"rows": chunk})
    del ex_rows
    co: dict[str, tuple[list[Any], list[float], list[float]]] = {}
    for r in rows.rels["CONTRIBUTES"]:
        c, w, x = co.setdefault(r["b"], ([], [], []))
        c.append(neuron_id[r["a"]])
        w.append(r["weight"])
        x.append(r["score"])
    co_rows = [{"s": sg_id[s], "c": c, "w": w, "x": x} for s, (c, w, x) in co.items()]
    del co
    for chunk in _nested_batches(co_rows, "c", batch_size):
        store.write(q["CONTRIBUTES"], {"rows": chunk, "run": uid})
    del co_rows
    ng_rows = [{k: r[k] for k in ("uid", *NODE_PROPS["NeuronGroup"]) if k != "run"} for r in rows.nodes["NeuronGroup"]]
    ng_id = _write_ids(store, q["NeuronGroup"], ng_rows, batch_size, run=uid)
    mem: dict[str, list[Any]] = {}
    for r in rows.rels["HAS_MEMBER"]:
        mem.setdefault(r["a"], []).append(sg_id[r["b"]])
    for chunk in _nested_batches([{"g": ng_id[g], "m": m} for g, m in mem.items()], "m", batch_size):
        store.write(q["HAS_MEMBER"], {"rows": chunk})
    feeds = [{"a": ng_id[r["a"]], "b": ng_id[r["b"]], "uid": r["uid"], "weight": r["weight"]} for r in rows.rels["FEEDS"]]
    store.write_rows(q["FEEDS"], feeds, batch_size=batch_size, run=uid)
    return {**sg_id, **ng_id}


def _create_run(store: Any, rows: CircuitRows, batch_size: int, claim: "_Claim", *, partial: bool) -> None:
    """The create path of a run absent from the store or incomplete, written under ``claim``
    (``partial``: remains of an earlier ingest are deleted first, and its annotations linked again
    to the new nodes). A retry after a transient error deletes only while the claim is held."""
    def remove() -> None:
        nonlocal partial
        partial = True
        _delete_remains(store, rows.uid, claim)

    if partial:
        _delete_remains(store, rows.uid, claim)
    ids = _in_bulk(store, lambda w: _create_all(_Beating(w, claim), rows, batch_size), before_retry=remove)
    if partial:
        _relink_annotations(store, rows.uid, ids, ID_FUNCTION[store.backend])


def _capable(store: Any, name: str) -> bool:
    """Whether the store's class defines method ``name`` (``bulk``, ``plan_once``): a capability of the
    class, so test wrappers that delegate through ``__getattr__`` get plain, one-query-at-a-time writes."""
    return callable(getattr(type(store), name, None))


RETRY_SECONDS = 30.0  # how long a bulk write is retried after transient failures (deadlocks)


def _in_bulk(store: Any, work: Callable[[Any], T], *, before_retry: Callable[[], None] | None = None) -> T:
    """``work(writer)`` in the store's bulk writer (Neo4j: a few large explicit transactions, see
    Neo4jStore.bulk; FalkorDB: the store itself, every query atomic), retried as a whole, after
    ``before_retry``, while the store reports a transient failure (a deadlock with a concurrent ingest)."""
    has_bulk = _capable(store, "bulk")
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            if not has_bulk:
                return work(store)
            with store.bulk() as writer:
                return work(writer)
        except StoreError as e:
            if not getattr(e, "retryable", False) or time.monotonic() > deadline:
                raise
        if before_retry is not None:
            before_retry()
        time.sleep(random.uniform(0.05, 0.5))


# A claim whose heartbeat (Run.beat, the server's clock) is older than this belongs to a writer that
# stopped (killed, lost its machine): another ingest may then take the run over. A live writer beats
# before a query once BEAT_EVERY of this has passed since its last beat (_Beating), so only a single
# query or computation between two queries lasting about this long makes a live writer look stopped (it then stops writing and waits: _ClaimLost).
AWAIT_SECONDS = 60.0
# Share of AWAIT_SECONDS after which the writer beats again before its next query (one small write per
# ~10 s instead of one per query).
BEAT_EVERY = 1 / 6


class _ClaimLost(StoreError):
    """This ingest no longer holds the run's claim: another ingest took it over (or completed the run)."""


@dataclass
class _Claim:
    """One ingest's claim on run ``uid`` (``writer``: a random token, Run.writer while held)."""

    uid: str
    writer: str = field(default_factory=lambda: uuid.uuid4().hex)
    last: float = field(default=float("-inf"), compare=False)  # time.monotonic() of the last beat sent

    def take(self, store: Any, created_at: str) -> bool | None:
        """Claim the run (creating its Run node, ``ingesting``, when absent) unless it is complete or
        held by a live writer: None when not claimed, else whether the Run node was created here."""
        rows = store.write(CLAIM_QUERY, {"rows": [{"uid": self.uid, "writer": self.writer, "created_at": created_at,
                                                   "stale_ms": int(AWAIT_SECONDS * 1000)}]})
        if not (rows and rows[0]["mine"]):
            return None
        self.last = time.monotonic()
        return bool(rows[0]["created"])

    def beat(self, w: Any) -> None:
        """Bump Run.beat through ``w`` (a store or a bulk writer); _ClaimLost when not held any more."""
        rows = w.write(BEAT_QUERY, {"rows": [{"uid": self.uid, "writer": self.writer}]})
        if not rows:
            raise StoreError(f"run {self.uid} was deleted while this ingest was writing it; run the same ingest again")
        if not rows[0]["mine"]:
            raise _ClaimLost(f"run {self.uid} was taken over by another ingest of it (this one sent nothing for "
                             f"{AWAIT_SECONDS:.0f} s)")
        self.last = time.monotonic()

    def beat_due(self, w: Any) -> None:
        """Beat when BEAT_EVERY of AWAIT_SECONDS has passed since the last beat: a live writer's beat is
        never older than that share (plus one query) when a waiter looks, and a writer that stalled past
        AWAIT_SECONDS beats, and so learns of a takeover, before its next query."""
        if time.monotonic() - self.last >= AWAIT_SECONDS * BEAT_EVERY:
            self.beat(w)

    def release(self, store: Any) -> None:
        """Give the claim up after a failure, so that the next ingest need not wait for it to go stale."""
        try:
            store.write(RELEASE_QUERY, {"rows": [{"uid": self.uid, "writer": self.writer}]})
        except Exception:  # the store is gone (the claim then goes stale); the original error matters more
            pass


class _Beating:
    """The store-like writer ``w`` (a store or a bulk writer), beating ``claim`` before a query once
    ``BEAT_EVERY`` of ``AWAIT_SECONDS`` has passed since its last beat."""

    def __init__(self, w: Any, claim: _Claim) -> None:
        self._w, self._claim, self.backend = w, claim, w.backend

    @property
    def display_url(self) -> str:
        return self._w.display_url

    def read(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        self._claim.beat_due(self._w)
        return self._w.read(query, params)

    def write(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        self._claim.beat_due(self._w)
        return self._w.write(query, params)

    write_rows = GraphStore.write_rows  # the same UNWIND batching, through this writer's write()


# How often, at most, a waiting ingest reports that it still waits (``on_wait``, state "waiting").
WAIT_REPORT_SECONDS = 5.0


@dataclass(frozen=True)
class WaitInfo:
    """One report of an ingest waiting for another ingest of the same run (``ingest(on_wait=...)``).

    ``state``: ``"started"`` (the first look found a live holder; sent once per wait), ``"waiting"``
    (sent at most every ``WAIT_REPORT_SECONDS`` while it lasts), then one of ``"completed"`` (the
    holder completed the run: this ingest goes on as a skip), ``"released"`` (the holder gave its
    claim up after an error) or ``"stale"`` (no heartbeat for ``stale_after_s``: it stopped); after
    these two this ingest takes the run over. ``heartbeat_age_s``: age of the holder's latest beat by
    the store server's clock (None once the claim is gone); ``waited_s``: seconds since the wait started
    (by this client's monotonic clock); ``stale_after_s``: the threshold (``AWAIT_SECONDS``). A run
    deleted during the wait ends it with a StoreError instead."""

    run_uid: str
    state: Literal["started", "waiting", "completed", "released", "stale"]
    heartbeat_age_s: float | None
    waited_s: float
    stale_after_s: float

    @property
    def ended(self) -> bool:
        return self.state in ("completed", "released", "stale")


def _await_other_ingest(store: Any, uid: str, *, on_wait: Callable[[WaitInfo], None] | None = None) -> bool:
    """Wait while another ingest holding run ``uid``'s claim beats: True once the run is complete,
    False once the claim is free or stale (heartbeat older than AWAIT_SECONDS: that writer stopped);
    StoreError when the run is deleted meanwhile. ``on_wait`` sees a :class:`WaitInfo` when waiting
    starts, at most every WAIT_REPORT_SECONDS meanwhile, and when it ends (nothing when the first
    look already finds the run complete or free: no wait)."""
    start = time.monotonic()
    reported: float | None = None  # time.monotonic() of the last report; None: waiting not started

    def report(state: Any, age_ms: Any) -> None:
        nonlocal reported
        reported = time.monotonic()
        if on_wait is not None:
            age = None if age_ms is None else max(0.0, age_ms / 1000)
            on_wait(WaitInfo(run_uid=uid, state=state, heartbeat_age_s=age, waited_s=reported - start,
                             stale_after_s=AWAIT_SECONDS))

    while True:
        rows = store.read(AWAIT_QUERY, {"uid": uid})
        if not rows:
            raise StoreError(f"run {uid} was being written by another ingest at the same time and has been "
                             "deleted meanwhile; run the same ingest again")
        st = rows[0]
        ended = ("completed" if st["status"] == "complete" else "released" if st["writer"] is None or st["age"] is None
                 else "stale" if st["age"] > AWAIT_SECONDS * 1000 else None)
        if ended is not None:
            if reported is not None:
                report(ended, None if ended == "released" else st["age"])
            return ended == "completed"
        if reported is None:
            report("started", st["age"])
        elif time.monotonic() - reported >= WAIT_REPORT_SECONDS:
            report("waiting", st["age"])
        time.sleep(min(0.5, AWAIT_SECONDS / 4))


def _observed(store: Any, uid: str) -> dict[str, int]:
    return {r["kind"]: int(r["n"]) for r in store.read(VERIFY_QUERY, {"run": uid})}


def _write_verified(store: Any, rows: CircuitRows, batch_size: int, *, create: bool, claim: _Claim | None,
                    partial: bool = False) -> None:
    """Write the run's nodes and relationships (the create path when ``create``, else MERGEs), count
    what the store holds and, on a mismatch, delete the run's own nodes (``create``) and rewrite it
    once by MERGEs; StoreError when it still does not match. ``claim``: the run's claim, beaten
    before every query (None: a forced rewrite of a complete run)."""
    uid = rows.uid
    w = store if claim is None else _Beating(store, claim)
    expected = expected_counts(rows)
    for attempt in (1, 2):
        if attempt == 1 and create:
            assert claim is not None
            try:
                _create_run(store, rows, batch_size, claim, partial=partial)
            except StoreError as e:
                if not getattr(e, "duplicate", False):
                    raise
                claim.beat(store)  # _ClaimLost: another ingest took the run over and wrote these nodes
                raise StoreError(f"run {uid}: a node of it was written by another process while this ingest held "
                                 f"the run; run the same ingest again") from e
        else:
            if create:  # the create path's result did not verify: start again from nothing
                assert claim is not None
                _delete_remains(store, uid, claim)
            _write_all(w, rows, batch_size)
        observed = _observed(w, uid)
        missing = {k: (observed.get(k, 0), n) for k, n in expected.items() if observed.get(k, 0) != n}
        if not missing:
            return
        if attempt == 2:
            detail = ", ".join(f"{k} {got}/{want}" for k, (got, want) in sorted(missing.items()))
            raise StoreError(f"run {uid} is incomplete after writing it twice ({detail}); is another process "
                             f"deleting runs in {store.display_url}? Ingest it again")


def legacy_annotations(circuit: Circuit) -> list[Annotation]:
    """Annotations a version-1 circuit.json carried inline on its neuron groups: ``concept`` and
    ``purity`` with source ``ground_truth``, ``label`` and ``caption`` with source ``circuit-v1``."""
    if not circuit.legacy_annotations:
        return []
    uid = run_uid(circuit)
    when = circuit.created_at or now_utc()
    return [make_annotation(target=neuron_group_uid(uid, layer, gid), target_label="NeuronGroup", key=key,
                            value=value, source="ground_truth" if key in ("concept", "purity") else "circuit-v1",
                            created_at=when)
            for layer, gid, key, value in circuit.legacy_annotations]


def ingest(*, store: Any, circuit: Circuit, force: bool = False, batch_size: int = INGEST_BATCH_SIZE,
           checkpoint: bool = True, annotations: Sequence[Annotation] = (),
           run_dir: str | Path | None = None, validated: bool = False,
           on_wait: Callable[[WaitInfo], None] | None = None) -> IngestResult:
    """Ingest ``circuit`` into ``store`` idempotently (see the module doc), then ``annotations``
    (those whose targets are not in the store are skipped and counted); return what was written.
    ``run_dir``: where the run directory is, recorded as ``Run.run_dir`` (absolute; a location,
    not part of the identity: re-ingesting from elsewhere updates it). ``validated``: the caller
    has just validated ``circuit`` (load_circuit does), so it is not checked a second time.
    ``on_wait``: sees a :class:`WaitInfo` when this ingest waits for another ingest of the same run
    (it starts, still waits every ``WAIT_REPORT_SECONDS``, ends), e.g. to tell a user why nothing moves.

    A run already complete is skipped unless ``force``; its annotations are still written and its
    (model, class)'s ``latest`` recomputed, which repairs a client killed between the two writes."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    if not validated:
        circuit.validate()
    # Neo4j: every ingest query keeps its first plan (uid/run index seeks at any size) instead of
    # being planned again each time the growing store's statistics move (Neo4jStore.plan_once)
    plan_once = store.plan_once() if _capable(store, "plan_once") else nullcontext()
    with plan_once:
        return _ingest(store=store, circuit=circuit, force=force, batch_size=batch_size, checkpoint=checkpoint,
                       annotations=annotations, run_dir=run_dir, t0=t0, on_wait=on_wait)


def _ingest(*, store: Any, circuit: Circuit, force: bool, batch_size: int, checkpoint: bool,
            annotations: Sequence[Annotation], run_dir: str | Path | None, t0: float,
            on_wait: Callable[[WaitInfo], None] | None) -> IngestResult:
    from neurflow_graph.store.annotations import write_annotations
    from neurflow_graph.store.overlaps import write_patch_overlaps
    from neurflow_graph.store.paths import write_best_paths
    from neurflow_graph.store.runs import recompute_latest

    uid = run_uid(circuit)
    muid, class_name = model_uid(circuit), circuit.class_.name
    annotations = [*legacy_annotations(circuit), *annotations]
    store.setup()
    status = store.read("MATCH (r:Run {uid: $uid}) RETURN r.status AS status", {"uid": uid})
    forced = bool(status) and status[0]["status"] == "complete"
    skipped = forced and not force
    nodes = rels = 0
    concurrent = took_over = False
    if not skipped:
        rows = circuit_rows(circuit, validate=False, uid=uid)

        def derived(w: Any) -> int:
            # derived from the content only: every group's best paths to the logit (store/paths.py) and
            # its exemplar-patch overlaps with the groups of this and other runs of the class (store/overlaps.py)
            write_best_paths(store=w, circuit=circuit, run_uid=uid)
            return write_patch_overlaps(store=w, run_uid=uid, class_name=class_name, group_patches=rows.group_patches)

        counts = [{"uid": uid, "aggregates": AGGREGATES_VERSION, **{k: rows.run[k] for k in COUNT_KEYS}}]
        pairs = 0
        if forced:  # --force on a complete run: rewritten in place by MERGEs (idempotent), visible meanwhile
            store.write_rows(RUN_QUERY, [{k: rows.run[k] for k in ("uid", "created_at", *RUN_PROPS)}], batch_size=1)
            _write_verified(store, rows, batch_size, create=False, claim=None)
            pairs = _in_bulk(store, derived)
            store.write_rows(FORCED_COMPLETE_QUERY, counts, batch_size=1)
        else:
            claim = _Claim(uid)
            while True:
                created = claim.take(store, rows.run["created_at"])
                if created is None:  # another ingest holds the run: wait for it to complete it, or to stop
                    if _await_other_ingest(store, uid, on_wait=on_wait):
                        skipped = concurrent = True
                        break
                    took_over = True  # its claim was given up or went stale: take the run over
                    continue
                try:
                    _Beating(store, claim).write_rows(RUN_PROPS_QUERY, [{k: rows.run[k] for k in ("uid", *RUN_PROPS)}],
                                                      batch_size=1)
                    _write_verified(store, rows, batch_size, create=store.backend in ID_FUNCTION, claim=claim,
                                    partial=not created)
                    pairs = _in_bulk(store, lambda w: derived(_Beating(w, claim)))
                    done = store.write(COMPLETE_QUERY, {"rows": [{**counts[0], "writer": claim.writer}]})
                    if not (done and done[0]["mine"]):
                        raise _ClaimLost(f"run {uid} was taken over by another ingest of it before it completed")
                    break
                except _ClaimLost:
                    continue  # another ingest took the run over (this one looked stopped): wait for that one
                except BaseException:
                    claim.release(store)
                    raise
        if not skipped:
            nodes, rels = rows.n_nodes, rows.n_relationships + pairs
        del rows
    # after "complete": a client killed here leaves latest stale; the next ingest (even a skip) repairs it
    recompute_latest(store=store, pairs=[(muid, class_name)])
    if run_dir is not None:
        store.write_rows(RUN_DIR_QUERY, [{"uid": uid, "run_dir": str(Path(run_dir).resolve())}], batch_size=1)
        # exemplar mosaic references on the groups, from RUN_DIR/exemplars/ (issue 9, store/mosaics.py)
        from neurflow_graph.store.mosaics import record_mosaics

        record_mosaics(store=store, run_uid=uid, run_dir=run_dir)
    written = write_annotations(store=store, annotations=annotations, skip_missing=True) if annotations else 0
    if checkpoint:
        store.checkpoint()
    unique = len({(a.target, a.key, a.source) for a in annotations})
    return IngestResult(uid=uid, model=muid, class_name=class_name, nodes=nodes, relationships=rels,
                        seconds=time.perf_counter() - t0, skipped=skipped, concurrent=concurrent, took_over=took_over,
                        annotations=written,
                        annotations_skipped=unique - written)


def ingest_circuit(*, store: Any, circuit: Circuit, force: bool = False,
                   batch_size: int = INGEST_BATCH_SIZE) -> str:
    """Ingest ``circuit`` (idempotent; a complete run is skipped unless ``force``); return the run uid."""
    return ingest(store=store, circuit=circuit, force=force, batch_size=batch_size).uid


def ingest_run_dir(*, store: Any, run_dir: str | Path, force: bool = False, batch_size: int = INGEST_BATCH_SIZE,
                   checkpoint: bool = True, on_wait: Callable[[WaitInfo], None] | None = None) -> IngestResult:
    """Load (validating) one run directory and ingest its circuit, then its ``annotations.jsonl``
    (``on_wait``: as for :func:`ingest`)."""
    run_dir = Path(run_dir)
    circuit = load_circuit(run_dir)
    res = ingest(store=store, circuit=circuit, force=force, batch_size=batch_size, checkpoint=checkpoint,
                 annotations=read_run_annotations(run_dir), run_dir=run_dir, validated=True, on_wait=on_wait)
    res.source = run_dir
    return res


# ---- run directories --------------------------------------------------------------------------

def find_run_dirs(paths: Sequence[str | Path], *, unfinished_out: list[Path] | None = None) -> list[Path]:
    """Run directories named by ``paths``: each path is a run directory (holding circuit.json) or a
    parent searched recursively for circuit.json files. RunFormatError when a path yields none.

    An unfinished run (checkpoints or temp files, no circuit.json) under a parent is an error, unless
    ``unfinished_out`` is given and the parent also holds finished runs: then it is appended there
    and its finished siblings are returned (a failed class of a many-class extract never blocks them)."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name == CIRCUIT_FILE:
            found.append(p.parent)
            continue
        if not p.is_dir():
            raise RunFormatError(f"{p} is not a directory: give a run directory (holding {CIRCUIT_FILE}) or a parent of run directories")
        if (p / CIRCUIT_FILE).is_file():
            found.append(p)
            continue
        runs = sorted({c.parent for c in p.rglob(CIRCUIT_FILE) if c.is_file()})
        started = [m.parent.parent for m in p.rglob(f"{CHECKPOINT_DIR}/manifest.json")]
        started += [t.parent for t in p.rglob(temp_pattern(CIRCUIT_FILE))]
        started += [t.parent for t in p.rglob(temp_pattern(f"{ARRAYS_PREFIX}*.npz"))]  # died writing the arrays
        unfinished = sorted({d for d in started if not (d / CIRCUIT_FILE).is_file()}, key=str)
        if unfinished and runs and unfinished_out is not None:
            unfinished_out.extend(d for d in unfinished if d not in unfinished_out)
        elif unfinished:
            raise RunFormatError(f"{unfinished[0]} is an unfinished run (no {CIRCUIT_FILE}: its extraction was "
                                 "interrupted or is still running); finish it with `neurflow-graph extract --resume`, "
                                 "or name the finished run directories instead")
        if not runs:
            raise RunFormatError(f"no {CIRCUIT_FILE} under {p}: is this a finished run directory? "
                                 "(run `neurflow-graph extract` first)")
        found.extend(runs)
    unique: dict[Path, None] = {}
    for d in found:
        unique.setdefault(d.resolve(), None)
    return list(unique)


def load_runs(paths: Sequence[str | Path]) -> list[tuple[Path, Circuit]]:
    """Find and load (validating) every run under ``paths`` at once (small sets; ingestion streams instead)."""
    return [(d, load_circuit(d)) for d in find_run_dirs(paths)]


def iter_runs(paths: Sequence[str | Path]) -> Iterator[tuple[Path, Circuit]]:
    """The run directories under ``paths`` (all found first, so an unfinished one stops everything),
    then each loaded and validated only when the previous one is done: one circuit in memory at a time."""
    for d in find_run_dirs(paths):
        try:
            circuit = load_circuit(d)
        except RunFormatError as e:
            raise RunFormatError(f"{d}: {e}" if str(d) not in str(e) else str(e)) from e
        yield d, circuit


def ingest_runs(*, store: Any, runs: Iterable[tuple[Path | None, Circuit]], force: bool = False,
                batch_size: int = INGEST_BATCH_SIZE,
                on_result: Callable[[IngestResult], None] | None = None,
                validated: bool = False,
                on_wait: Callable[[WaitInfo], None] | None = None) -> list[IngestResult]:
    """Ingest runs one after the other as ``runs`` yields them (each with its run directory's
    annotations when the directory is given), with one checkpoint at the end; ``on_result`` sees
    each result as soon as it is done (``validated``: ``runs`` yields validated circuits, as
    :func:`iter_runs` does; ``on_wait``: as for :func:`ingest`). A run that fails to load stops here;
    the runs before it stay complete."""
    results: list[IngestResult] = []
    try:
        for d, circuit in runs:
            res = ingest(store=store, circuit=circuit, force=force, batch_size=batch_size, checkpoint=False,
                         annotations=read_run_annotations(d) if d is not None else (), run_dir=d,
                         validated=validated, on_wait=on_wait)
            del circuit
            res.source = d
            results.append(res)
            if on_result is not None:
                on_result(res)
    except BaseException as e:
        if results:  # keep the runs that did complete; the original error matters more than this one
            try:
                store.checkpoint()
            except Exception:
                pass
            if isinstance(e, RunFormatError):
                raise RunFormatError(f"{e} ({len(results)} run(s) before it are ingested and complete; "
                                     "fix this one and run the same command again)") from e
        raise
    store.checkpoint()
    return results
