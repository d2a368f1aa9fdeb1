"""Exemplar mosaic references on group nodes (never the image bytes).

After a run is ingested, :func:`record_mosaics` sets ``mosaic`` (the mosaic PNG's absolute path in
``RUN_DIR/exemplars/``) and ``mosaic_sha256`` on each of the run's NeuronGroup and SemanticGroup nodes
listed in the run directory's exemplar manifest (docs/circuit-format.md, "Exemplar mosaics").
Properties only: node identity and the run uid are untouched, and writing again replaces them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurflow_graph.identity import neuron_group_uid, semantic_group_uid

_SET = {
    "neuron_group": "UNWIND $rows AS row MATCH (g:NeuronGroup {uid: row.uid}) "
                    "SET g.mosaic = row.mosaic, g.mosaic_sha256 = row.sha256",
    "semantic_group": "UNWIND $rows AS row MATCH (g:SemanticGroup {uid: row.uid}) "
                      "SET g.mosaic = row.mosaic, g.mosaic_sha256 = row.sha256",
}


def mosaic_rows(*, run_uid: str, run_dir: str | Path, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows per group kind: ``{"uid", "mosaic" (absolute path), "sha256"}``."""
    from neurflow_graph.viz.exemplars import EXEMPLAR_DIR

    base = Path(run_dir).resolve() / EXEMPLAR_DIR
    out: dict[str, list[dict[str, Any]]] = {"neuron_group": [], "semantic_group": []}
    for g in manifest["groups"]:
        if g["kind"] == "neuron_group":
            uid = neuron_group_uid(run_uid, g["layer"], g["gid"])
        else:
            uid = semantic_group_uid(run_uid, g["layer"], g["neuron"], g["j"])
        out[g["kind"]].append({"uid": uid, "mosaic": str(base / g["file"]), "sha256": g["sha256"]})
    return out


def record_mosaics(*, store: Any, run_uid: str, run_dir: str | Path) -> int:
    """Record the mosaics of ``run_dir`` on run ``run_uid``'s groups; the number of groups (0 without exemplars)."""
    from neurflow_graph.viz.exemplars import EXEMPLAR_DIR, MANIFEST_FILE, read_manifest

    if not (Path(run_dir) / EXEMPLAR_DIR / MANIFEST_FILE).exists():
        return 0
    rows = mosaic_rows(run_uid=run_uid, run_dir=run_dir, manifest=read_manifest(run_dir))
    for kind, batch in rows.items():
        if batch:
            store.write_rows(_SET[kind], batch, batch_size=5_000)
    return sum(len(v) for v in rows.values())
