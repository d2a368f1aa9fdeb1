"""Directions in the graph: PCA bases, their principal directions with exemplar patches,
ALIGNED_WITH edges from neuron groups and each run's coverage (docs/directions.md, "Graph").

::

    (:Model)-[:HAS_LAYER]->(:Layer)-[:HAS_BASIS]->(:PCABasis {site, curves, counts})
    (:PCABasis)-[:HAS_DIRECTION]->(:Direction {index, explained_variance_ratio, ...})
    (:Direction)-[:EXEMPLAR {rank, score}]->(:Patch)-[:CROPPED_FROM]->(:Image)
    (:NeuronGroup)-[:ALIGNED_WITH {cosine, abs_cosine, span_cosine, rank}]->(:Direction)
    (:Run)-[:COVERS {coverage, n_neurons, pca_share}]->(:PCABasis)

plus one annotation per (run, layer, site): key ``directions.coverage:<layer>:<site>``, source
``directions``, value = the coverage. A basis is one per (model, layer, site)
(identity.basis_uid): writing directions again replaces its curves, its directions, their
exemplars and every ALIGNED_WITH/COVERS edge into it. Writes are ``UNWIND $rows`` batches that
``MERGE`` on constrained uids only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurflow_graph.directions.alignment import group_alignment
from neurflow_graph.directions.completeness import span_share
from neurflow_graph.directions.result import DirectionsResult, SiteResult
from neurflow_graph.identity import basis_uid, direction_uid, image_uid, layer_uid, patch_uid

COVERAGE_SOURCE = "directions"
DEFAULT_MAX_DIRECTIONS = 256
ALIGN_TOP = 3

_MODEL = ("UNWIND $rows AS row MERGE (m:Model {uid: row.uid}) "
          "ON CREATE SET m.name = row.name, m.weights_sha256 = row.weights_sha256")
_LAYER = ("UNWIND $rows AS row MERGE (l:Layer {uid: row.uid}) ON CREATE SET l.model = row.model, l.name = row.name "
          "WITH row, l MATCH (m:Model {uid: row.model}) MERGE (m)-[:HAS_LAYER]->(l)")
_CLEAR = ("UNWIND $rows AS row MATCH (b:PCABasis {uid: row.uid})-[:HAS_DIRECTION]->(d:Direction) "
          "DETACH DELETE d")
_CLEAR_COVERS = "UNWIND $rows AS row MATCH (:Run)-[c:COVERS]->(b:PCABasis {uid: row.uid}) DELETE c"
_BASIS = ("UNWIND $rows AS row MERGE (b:PCABasis {uid: row.uid}) SET b.model = row.model, b.layer = row.layer, "
          "b.site = row.site, b.rule = row.rule, b.relu = row.relu, b.own = row.own, b.dim = row.dim, "
          "b.n_samples = row.n_samples, b.n_images = row.n_images, b.solver = row.solver, "
          "b.pca_curve = row.pca_curve, b.neuron_curve = row.neuron_curve, b.pca_80 = row.pca_80, "
          "b.pca_99 = row.pca_99, b.neuron_80 = row.neuron_80, b.neuron_99 = row.neuron_99, "
          "b.n_directions = row.n_directions, b.ablation_ks = row.ablation_ks, b.ablation_metric = row.ablation_metric, "
          "b.ablation_json = row.ablation_json, b.created_at = row.created_at "
          "WITH row, b MATCH (l:Layer {uid: row.layer_uid}) MERGE (l)-[:HAS_BASIS]->(b)")
_DIRECTION = ("UNWIND $rows AS row MERGE (d:Direction {uid: row.uid}) SET d.model = row.model, d.layer = row.layer, "
              "d.site = row.site, d.index = row.index, d.explained_variance = row.explained_variance, "
              "d.explained_variance_ratio = row.explained_variance_ratio, d.cumulative_ratio = row.cumulative_ratio "
              "WITH row, d MATCH (b:PCABasis {uid: row.basis}) MERGE (b)-[:HAS_DIRECTION]->(d)")
_IMAGE = "UNWIND $rows AS row MERGE (i:Image {uid: row.uid}) ON CREATE SET i.sha256 = row.sha256, i.path = row.path"
_PATCH = ("UNWIND $rows AS row MERGE (p:Patch {uid: row.uid}) ON CREATE SET p.image_sha256 = row.image_sha256, "
          "p.x0 = row.x0, p.y0 = row.y0, p.x1 = row.x1, p.y1 = row.y1 "
          "WITH row, p MATCH (i:Image {uid: row.image}) MERGE (p)-[:CROPPED_FROM]->(i)")
_EXEMPLAR = ("UNWIND $rows AS row MATCH (d:Direction {uid: row.a}) MATCH (p:Patch {uid: row.b}) "
             "MERGE (d)-[e:EXEMPLAR]->(p) SET e.rank = row.rank, e.score = row.score")
_GROUPS = ("MATCH (r:Run)-[:OF_MODEL]->(:Model {uid: $model}) WHERE r.status = 'complete' "
           "MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer})-[:HAS_MEMBER]->(s:SemanticGroup) "
           "RETURN r.uid AS run, g.uid AS group, collect(s.neuron_index) AS members ORDER BY run, group")
_ALIGNED = ("UNWIND $rows AS row MATCH (g:NeuronGroup {uid: row.a}) MATCH (d:Direction {uid: row.b}) "
            "MERGE (g)-[e:ALIGNED_WITH]->(d) SET e.run = row.run, e.cosine = row.cosine, e.abs_cosine = row.abs_cosine, "
            "e.span_cosine = row.span_cosine, e.rank = row.rank")
_COVERS = ("UNWIND $rows AS row MATCH (r:Run {uid: row.a}) MATCH (b:PCABasis {uid: row.b}) "
           "MERGE (r)-[c:COVERS]->(b) SET c.coverage = row.coverage, c.n_neurons = row.n_neurons, "
           "c.pca_share = row.pca_share")


@dataclass
class DirectionsWrite:
    """What :func:`write_directions` wrote."""

    bases: int
    directions: int
    exemplars: int
    aligned: int
    covers: int
    runs: int

    def summary(self) -> str:
        return (f"{self.bases} PCA bases, {self.directions} directions, {self.exemplars} exemplar patches; "
                f"{self.aligned} ALIGNED_WITH edges and {self.covers} coverage figures for {self.runs} run(s)")


def n_directions(site: SiteResult, max_directions: int = DEFAULT_MAX_DIRECTIONS) -> int:
    """Directions stored for a site: enough for 99% of the variance (all computed ones if never),
    at most ``max_directions``."""
    k99 = site.counts["pca"].get("99") or len(site.explained_variance)
    return int(min(k99, max_directions, len(site.explained_variance)))


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _basis_rows(result: DirectionsResult, site: SiteResult, n: int) -> dict[str, Any]:
    a = site.ablation
    metric = None
    curves: dict[str, Any] = {}
    if a is not None:
        metric = "accuracy" if a.accuracy else "agreement"
        curves = {"ks": a.ks, "agreement": a.agreement, "accuracy": a.accuracy, "n_images": a.n_images,
                  "skipped": a.skipped}
    return {"uid": basis_uid(result.model_uid, site.layer, site.site), "model": result.model_uid,
            "layer": site.layer, "site": site.site, "rule": site.rule, "relu": site.relu, "own": site.own,
            "dim": site.dim, "n_samples": site.n_samples, "n_images": result.n_images, "solver": site.solver,
            "pca_curve": site.pca_curve, "neuron_curve": site.neuron_curve,
            "pca_80": site.counts["pca"]["80"], "pca_99": site.counts["pca"]["99"],
            "neuron_80": site.counts["neurons"]["80"], "neuron_99": site.counts["neurons"]["99"],
            "n_directions": n, "ablation_ks": a.ks if a else None, "ablation_metric": metric,
            "ablation_json": json.dumps(curves, sort_keys=True) if a else None,
            "layer_uid": layer_uid(result.model_uid, site.layer), "created_at": result.created_at}


def write_directions(*, store: Any, result: DirectionsResult, max_directions: int = DEFAULT_MAX_DIRECTIONS,
                     align_top: int = ALIGN_TOP) -> DirectionsWrite:
    """Write ``result`` into ``store`` and link it to every complete run of the same model (see
    the module doc). Idempotent: writing the same result twice leaves the same graph."""
    muid = result.model_uid
    store.write_rows(_MODEL, [{"uid": muid, "name": result.model, "weights_sha256": result.weights_sha256}])
    layers = list(dict.fromkeys(s.layer for s in result.sites))
    store.write_rows(_LAYER, [{"uid": layer_uid(muid, name), "model": muid, "name": name} for name in layers])
    counts = {s.key: n_directions(s, max_directions) for s in result.sites}
    bases = [_basis_rows(result, s, counts[s.key]) for s in result.sites]
    store.write_rows(_CLEAR, [{"uid": b["uid"]} for b in bases])
    store.write_rows(_CLEAR_COVERS, [{"uid": b["uid"]} for b in bases])
    store.write_rows(_BASIS, bases)

    dir_rows, images, patches, ex_rows = [], {}, {}, []
    for s in result.sites:
        cum = np.cumsum(s.explained_variance_ratio)
        for i in range(counts[s.key]):
            du = direction_uid(muid, s.layer, s.site, i)
            dir_rows.append({"uid": du, "model": muid, "layer": s.layer, "site": s.site, "index": i,
                             "explained_variance": float(s.explained_variance[i]),
                             "explained_variance_ratio": float(s.explained_variance_ratio[i]),
                             "cumulative_ratio": float(cum[i]), "basis": basis_uid(muid, s.layer, s.site)})
            for rank, ex in enumerate(s.exemplars.get(i, [])):
                iu = image_uid(ex.image_sha256)
                pu = patch_uid(ex.image_sha256, ex.box)
                images.setdefault(iu, {"uid": iu, "sha256": ex.image_sha256, "path": ex.image_path})
                x0, y0, x1, y1 = (int(v) for v in ex.box)
                patches.setdefault(pu, {"uid": pu, "image_sha256": ex.image_sha256, "x0": x0, "y0": y0, "x1": x1,
                                        "y1": y1, "image": iu})
                ex_rows.append({"a": du, "b": pu, "rank": rank, "score": float(ex.score)})
    store.write_rows(_DIRECTION, dir_rows)
    store.write_rows(_IMAGE, list(images.values()))
    store.write_rows(_PATCH, list(patches.values()))
    store.write_rows(_EXEMPLAR, _dedupe(ex_rows))
    aligned, covers, runs = link_runs(store=store, result=result, counts=counts, align_top=align_top)
    return DirectionsWrite(bases=len(bases), directions=len(dir_rows), exemplars=len(ex_rows), aligned=aligned,
                           covers=covers, runs=runs)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        seen.setdefault((r["a"], r["b"]), r)
    return list(seen.values())


def link_runs(*, store: Any, result: DirectionsResult, counts: dict[str, int] | None = None,
              align_top: int = ALIGN_TOP) -> tuple[int, int, int]:
    """ALIGNED_WITH edges and coverage for every complete run of the result's model that has
    neuron groups at an analysed layer. Returns (edges, coverage figures, runs)."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.store.annotations import write_annotations

    muid = result.model_uid
    counts = counts or {s.key: n_directions(s) for s in result.sites}
    aligned_rows, cover_rows, notes = [], [], []
    runs: set[str] = set()
    for s in result.sites:
        n = counts[s.key]
        if s.components is None or n == 0:
            continue
        comps = s.components[:n]
        groups = store.read(_GROUPS, {"model": muid, "layer": s.layer})
        neurons_of_run: dict[str, set[int]] = {}
        for g in groups:
            members = [int(m) for m in g["members"] if m is not None]
            if not members or max(members) >= s.dim:
                continue
            neurons_of_run.setdefault(g["run"], set()).update(members)
            for a in group_alignment(components=comps, member_neurons=members, top=align_top):
                aligned_rows.append({"a": g["group"], "b": direction_uid(muid, s.layer, s.site, a["index"]),
                                     "run": g["run"], **{k: a[k] for k in ("cosine", "abs_cosine", "span_cosine", "rank")}})
        for run, neurons in neurons_of_run.items():
            runs.add(run)
            cov = span_share(np.asarray(s.feature_variance), sorted(neurons))
            pca_share = float(s.pca_curve[min(len(neurons), len(s.pca_curve)) - 1])
            bu = basis_uid(muid, s.layer, s.site)
            cover_rows.append({"a": run, "b": bu, "coverage": cov, "n_neurons": len(neurons), "pca_share": pca_share})
            notes.append(make_annotation(target=run, target_label="Run", key=f"directions.coverage:{s.layer}:{s.site}",
                                         value=cov, source=COVERAGE_SOURCE,
                                         meta={"basis": bu, "n_neurons": len(neurons), "pca_share_same_k": pca_share}))
    store.write_rows(_ALIGNED, aligned_rows)
    store.write_rows(_COVERS, cover_rows)
    if notes:
        write_annotations(store=store, annotations=notes)
    return len(aligned_rows), len(cover_rows), len(runs)
