"""The demo's debugging step: ``debug`` on every class with spurious context, on the bias split.

Kept here (not in ``demo.py``) so the demo's edit stays one call: export the world's ``bias`` split
(every other class on flowers and grass), run :func:`~neurflow_graph.debugging.debug.debug_class`
on each biased class's run, write its JSON, pictures and annotations, and return plain sentences.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ShowcaseResult:
    results: dict[str, Any] = field(default_factory=dict)        # class -> DebugResult
    pictures: dict[str, Path] = field(default_factory=dict)      # class -> masking.png
    lines: list[str] = field(default_factory=list)


def debug_biased_classes(*, data_dir: Path, seed: int, per_class: int, model: Any, circuits: dict[str, Any],
                         run_dirs: dict[str, Path], run_uids: dict[str, str], truth_classes: list[dict[str, Any]],
                         store: Any | None, echo: Callable[[str], None], n_random: int = 100) -> ShowcaseResult:
    from neurflow_graph.annotations import append_run_annotations
    from neurflow_graph.datasets.concept_world import (
        BIAS_SPLIT_FLOWERS, WORLD_FILE, export_world, load_world_ground_truth,
    )
    from neurflow_graph.datasets.images import ImageRecord
    from neurflow_graph.debugging.debug import debug_class
    from neurflow_graph.debugging.plots import plot_debug
    from neurflow_graph.debugging.report import debug_annotations, debug_sentences
    from neurflow_graph.debugging.runs import LocatedRun, group_concepts
    from neurflow_graph.fileio import atomic_write

    out = ShowcaseResult()
    biased = [c["name"] for c in truth_classes if c.get("spurious") and c["name"] in circuits]
    if not biased:
        return out
    bias_dir = data_dir / "bias"
    try:
        doc = json.loads((bias_dir / WORLD_FILE).read_text())
        fresh = (doc.get("split") == "bias" and doc.get("seed") == seed and doc.get("n_per_class") == per_class
                 and doc.get("bias_flowers", 1) == BIAS_SPLIT_FLOWERS)
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        echo(f"exporting the bias split (other classes on the spurious context, {per_class} per class) to {bias_dir}")
        export_world(out_dir=bias_dir, seed=seed, n_per_class=per_class, split="bias")
    truth = load_world_ground_truth(bias_dir)
    records = [ImageRecord(path=(truth.root / i.path).resolve(), sha256=i.sha256, label=i.class_name)
               for i in sorted(truth.images, key=lambda i: i.path)]
    for name in biased:
        located = LocatedRun(circuit=circuits[name], run_dir=run_dirs[name], uid=run_uids[name])
        result = debug_class(model=model, circuit=located.circuit, run_uid=located.uid, images=records,
                             n_random=n_random, truth=truth, concepts=group_concepts(located=located))
        folder = located.run_dir / "debug" / result.layer
        pictures = plot_debug(result, folder)
        atomic_write(folder / "debug.json", lambda f, r=result: f.write(r.json_text()), mode="w")
        notes = debug_annotations(result)
        append_run_annotations(located.run_dir, notes)
        if store is not None:
            from neurflow_graph.store.annotations import write_annotations

            write_annotations(store=store, annotations=notes, skip_missing=True)
        out.results[name] = result
        out.pictures[name] = pictures["masking"]
        out.lines += [line if line.startswith(f"{name}:") else f"{name}: {line}" for line in debug_sentences(result)]
        out.lines.append(f"{name}: pictures of this finding: {pictures['masking']} (masking), {pictures['metric']} "
                         f"(metric M), {pictures.get('heatmaps', '-')} (heat maps), {pictures['top_drop']} (top logit drops)")
    return out
