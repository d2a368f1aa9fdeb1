"""Exemplar-patch overlaps between neuron groups, derived at ingest for ``compare_models``.

``(a:NeuronGroup)-[:SHARES_PATCHES {shared}]->(b:NeuronGroup)``: the groups' members' exemplar
patches (distinct Patch nodes) intersect in ``shared`` > 0 patches. Written for every pair of
groups of one run (a self pair included) and, in both directions, for every pair between the run
and each other run of the same class (patches are shared by their content uid, so only runs that
crop the same images can share any). Counting them at query time meant joining ~400k EXEMPLAR
rows per ResNet50-sized run (minutes); here it is a set intersection per group pair, once.

Correctness: the values are content-derived (like every property); a run's pairs go with its
groups when it is deleted (``DETACH DELETE``); a run computes its pairs after its own groups are
written, against every other run whose groups are in the store (complete or not), so of two runs
ingested at the same time the later one to reach this step sees the other; an interrupted run's
remains (pairs included) are deleted when it is ingested again. Writes MERGE, so both ingests of
a concurrent pair write the same relationship once.
"""

from __future__ import annotations

from typing import Any

OTHER_RUNS = ("MATCH (o:Run) WHERE o.class_name = $cls AND o.uid <> $run AND o.status <> 'deleting' "
              "RETURN o.uid AS uid ORDER BY uid")
GROUP_PATCHES = ("MATCH (g:NeuronGroup {run: $run})-[:HAS_MEMBER]->(:SemanticGroup)-[:EXEMPLAR]->(p:Patch) "
                 "RETURN g.uid AS uid, collect(DISTINCT p.uid) AS patches")
WRITE = ("UNWIND $rows AS row MATCH (a:NeuronGroup {uid: row.a}) MATCH (b:NeuronGroup {uid: row.b}) "
         "MERGE (a)-[r:SHARES_PATCHES]->(b) SET r.shared = row.n")


def overlap_rows(mine: dict[str, set[str]], other: dict[str, set[str]] | None) -> list[dict[str, Any]]:
    """``{a, b, n}`` rows: every pair within ``mine`` (``other`` None), or both directions between
    ``mine`` and ``other``; only pairs sharing at least one patch."""
    rows = []
    for a, pa in mine.items():
        for b, pb in (mine if other is None else other).items():
            n = len(pa & pb)
            if n:
                rows.append({"a": a, "b": b, "n": n})
                if other is not None:
                    rows.append({"a": b, "b": a, "n": n})
    return rows


def write_patch_overlaps(*, store: Any, run_uid: str, class_name: str, group_patches: dict[str, set[str]],
                         batch_size: int = 5000) -> int:
    """Write run ``run_uid``'s SHARES_PATCHES pairs (module doc); ``group_patches``: its group uid ->
    distinct exemplar patch uids. Returns the relationships written."""
    rows = overlap_rows(group_patches, None)
    for r in store.read(OTHER_RUNS, {"cls": class_name, "run": run_uid}):
        theirs = {x["uid"]: set(x["patches"]) for x in store.read(GROUP_PATCHES, {"run": r["uid"]})}
        rows += overlap_rows(group_patches, theirs)
    store.write_rows(WRITE, rows, batch_size=batch_size)
    return len(rows)
