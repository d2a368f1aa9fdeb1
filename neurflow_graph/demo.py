"""``neurflow-graph demo``: the whole pipeline on the concept world, end to end.

concept world (held-out split, exported with its masks) -> demo CNN (trained once, cached)
-> one NeurFlow circuit per class -> neuron groups scored against the ground truth
-> ingested into the store -> the Cypher library run -> findings printed in plain words.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurflow_graph.errors import InputError

Echo = Callable[[str], None]

@dataclass
class DemoResult:
    """What the demo produced: run directories, store run uids, findings and timings (seconds)."""

    run_dirs: dict[str, Path] = field(default_factory=dict)
    run_uids: dict[str, str] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    purity: dict[str, float] = field(default_factory=dict)
    pictures: dict[str, Path] = field(default_factory=dict)  # class -> drawn circuit (PNG)
    debug_pictures: dict[str, Path] = field(default_factory=dict)  # biased class -> debug masking.png


def _world(*, data_dir: Path, seed: int, per_class: int, echo: Echo) -> Any:
    """The held-out world under ``data_dir/world`` (exported unless an identical one is there), as ground truth."""
    from neurflow_graph.datasets.concept_world import (
        WORLD_FILE, ConceptWorld, WorldGroundTruth, export_world, load_world_ground_truth,
    )

    world_dir = data_dir / "world"
    wanted = ConceptWorld(seed=seed, n_per_class=per_class, split="test").config()
    try:
        doc = json.loads((world_dir / WORLD_FILE).read_text())
        if all(doc.get(k) == v for k, v in wanted.items()):
            return WorldGroundTruth(world_dir, doc)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    echo(f"exporting the held-out concept world ({per_class} images per class) to {world_dir}")
    return load_world_ground_truth(export_world(out_dir=world_dir, seed=seed, n_per_class=per_class, split="test"))


def run_demo(*, data_dir: str | Path = "neurflow-data", store_url: str | None = None,
             per_class: int = 12, classes: Sequence[str] | None = None, device: str | None = None,
             params: dict[str, Any] | None = None, seed: int = 1, echo: Echo = print,
             debug: bool = True) -> DemoResult:
    """Run the demo; ``store_url`` defaults to ``embedded:<data_dir>``. Returns a :class:`DemoResult`.
    ``debug=False`` leaves out the debugging step (masking on the bias split; a minute on two classes):
    the dashboard's browser tests use it, their pages do not show it."""
    from neurflow_graph.analysis.ground_truth import ground_truth_annotations
    from neurflow_graph.annotations import append_run_annotations
    from neurflow_graph.datasets.images import ImageRecord, predict_classes, resolve_class, select_class_images
    from neurflow_graph.extraction import ExtractParams, extract_circuit
    from neurflow_graph.models.registry import load_model
    from neurflow_graph.store.ingest import ingest_run_dir, model_uid
    from neurflow_graph.store.url import open_store

    if per_class < 2:
        raise InputError(f"--per-class must be at least 2, got {per_class}")
    data_dir = Path(data_dir)
    store_url = store_url or f"embedded:{data_dir}"
    # Cheap checks before the world, the model and the extraction (minutes): every class name, and
    # the store itself, so that a typo, a wrong URL or a server that is down fails now.
    _check_class_names(classes or [])
    with open_store(store_url):
        pass
    result = DemoResult()
    t_all = time.perf_counter()

    t = time.perf_counter()
    truth = _world(data_dir=data_dir, seed=seed, per_class=per_class, echo=echo)
    echo("loading the demo model (trained on the concept world's train split on first use, then cached)")
    model = load_model(name="demo", device=device)
    # world.json already holds every image's sha256: no need to re-read and re-hash them (list_images)
    shown = sorted(truth.images, key=lambda i: i.path)
    records = [ImageRecord(path=(truth.root / i.path).resolve(), sha256=i.sha256, label=i.class_name) for i in shown]
    predictions = predict_classes(model=model, images=records)
    accuracy = sum(p == i.label for p, i in zip(predictions, shown)) / len(records)
    echo(f"demo model: held-out accuracy {accuracy:.1%} on {len(records)} concept-world images")
    result.timing["world_and_model"] = time.perf_counter() - t

    class_indices = [resolve_class(model=model, text=c) for c in classes] if classes else list(range(len(truth.class_names)))
    extract_params = ExtractParams(**{**(params or {}), "seed": 0})  # the paper's defaults unless overridden
    circuits = {}
    truth_by_group: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    t = time.perf_counter()
    for c in class_indices:
        name = model.class_name(c)
        images = select_class_images(model=model, images=records, class_index=c, predictions=predictions)
        run_dir = data_dir / "runs" / name
        echo(f"[{name}] extracting the circuit from {len(images)} images -> {run_dir}")
        circuit = extract_circuit(model=model, images=images, class_index=c, params=extract_params,
                                  run_dir=run_dir, resume=True, progress=False)
        # ground-truth concept and purity are annotations beside circuit.json: the run's identity stays
        notes = ground_truth_annotations(circuit=circuit, truth=truth)
        append_run_annotations(run_dir, notes)
        truth_by_group[name] = _truth_by_group(circuit, notes)
        circuits[name] = circuit
        result.run_dirs[name] = run_dir
    result.timing["extraction"] = time.perf_counter() - t

    t = time.perf_counter()
    with open_store(store_url) as store:
        for name, circuit in circuits.items():
            result.run_uids[name] = ingest_run_dir(store=store, run_dir=result.run_dirs[name]).uid
        result.timing["ingest"] = time.perf_counter() - t
        echo(f"ingested {len(circuits)} circuits into {store.display_url}")
        # debug (issue 10): the biased classes' false positives on the bias split, measured by masking
        from neurflow_graph.debugging.showcase import debug_biased_classes

        t = time.perf_counter()
        debugged = debug_biased_classes(data_dir=data_dir, seed=seed, per_class=per_class, model=model,
                                        circuits=circuits, run_dirs=result.run_dirs, run_uids=result.run_uids,
                                        truth_classes=truth.classes if debug else [], store=store, echo=echo)
        result.debug_pictures = debugged.pictures
        result.timing["debug"] = time.perf_counter() - t
        t = time.perf_counter()
        result.findings = _findings(store=store, model_uid=model_uid(next(iter(circuits.values()))),
                                    circuits=circuits, truth=truth, truth_by_group=truth_by_group,
                                    debug=debugged.results)
        if debugged.lines:
            result.findings += ["== Debugging the biased class's false positives (debug, bias split) =="] + debugged.lines
        result.timing["queries"] = time.perf_counter() - t
        t = time.perf_counter()
        result.pictures = _draw_circuits(store=store, run_uids=result.run_uids, out_dir=data_dir / "pictures")
        result.timing["pictures"] = time.perf_counter() - t
    for name, circuit in circuits.items():
        groups = [g for g in circuit.neuron_groups if g.layer != circuit.model.layers[0]]
        result.purity[name] = (sum(truth_by_group[name][(g.layer, g.id)]["purity"] for g in groups)
                               / max(1, len(groups)))
    result.timing["total"] = time.perf_counter() - t_all
    for line in result.findings:
        echo(line)
    echo("mean neuron-group purity against the ground truth (share of a group's patches showing its concept, "
         "1 = every patch): " + ", ".join(f"{k} {v:.2f}" for k, v in result.purity.items()))
    echo("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timing.items()))
    for name, path in result.pictures.items():
        echo(f"circuit of {name} drawn: {path}")
    echo(f"explore the circuits in the dashboard: neurflow-graph serve --store {store_url}   "
         f"then open {DASHBOARD_URL}")
    if result.run_uids:
        first = next(iter(result.run_uids))
        muid, leaf = model_uid(circuits[first]), circuits[first].model.layers[-1]
        store_opt = "" if store_url in ("embedded:neurflow-data", "embedded:./neurflow-data") else f" --store {store_url}"
        echo("what to try next:")
        for line in (f"neurflow-graph runs{store_opt}    # the runs just stored",
                     f"neurflow-graph query class_circuit -p model={muid} -p class={first}{store_opt}    # its groups",
                     f"neurflow-graph query concept_paths_to_logit -p model={muid} -p class={first} -p layer={leaf}"
                     f"{store_opt}    # its strongest paths",
                     "neurflow-graph query --list    # every question the query library answers",
                     "docs/queries.md: the query library; README.md: your own models and images"):
            echo(f"  {line}")
    return result


DASHBOARD_URL = "http://127.0.0.1:8765/"


def _draw_circuits(*, store: Any, run_uids: dict[str, str], out_dir: Path) -> dict[str, Path]:
    """One PNG per class (neurflow_graph.viz.draw, as `neurflow-graph draw --run UID` does)."""
    from neurflow_graph.viz.draw import draw_run

    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: draw_run(store=store, run=uid, out=out_dir / f"{name}.png")[0] for name, uid in run_uids.items()}


def _check_class_names(classes: Sequence[str]) -> None:
    """InputError (with close matches) for a --class the demo model does not have; needs no model."""
    from types import SimpleNamespace

    from neurflow_graph.datasets.images import resolve_class
    from neurflow_graph.models.registry import DEMO_NAME, get_spec

    spec = get_spec(DEMO_NAME)
    names_only = SimpleNamespace(spec=spec, num_classes=len(spec.class_names or []))
    for text in classes:
        resolve_class(model=names_only, text=text)


def _truth_by_group(circuit: Any, notes: Sequence[Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """(layer, group id) -> {"concept", "purity"} from the ground-truth annotations of ``circuit``."""
    from neurflow_graph.identity import neuron_group_uid, run_uid

    uid = run_uid(circuit)
    by_target = {(a.target, a.key): a.value for a in notes}
    return {(g.layer, g.id): {k: by_target.get((neuron_group_uid(uid, g.layer, g.id), k)) for k in ("concept", "purity")}
            for g in circuit.neuron_groups}


def _label(concept: Any) -> str:
    return str(concept).split(":", 1)[-1] if concept else "?"


def _findings(*, store: Any, model_uid: str, circuits: dict[str, Any], truth: Any,
              truth_by_group: dict[str, dict[tuple[str, int], dict[str, Any]]],
              debug: dict[str, Any] | None = None) -> list[str]:
    """Plain-word findings from the Cypher library (each sentence names the query it came from).
    ``debug``: class -> DebugResult; a group is called spurious only on its measured masking effect."""
    from neurflow_graph.queries.library import run_query

    out: list[str] = []
    names = list(circuits)
    classes = {c["name"]: c for c in truth.classes}

    # 1. overlap of circuits per layer: pairs of classes sharing a concept by construction vs not
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    common = {(a, b): set(classes[a]["concepts"]) & set(classes[b]["concepts"]) for a, b in pairs}
    by_layer: dict[str, dict[bool, list[float]]] = {}
    for a, b in pairs:
        for row in run_query(store=store, name="shared_neurons_by_layer",
                             params={"model": model_uid, "class_a": a, "class_b": b}):
            by_layer.setdefault(row["layer"], {True: [], False: []})[bool(common[(a, b)])].append(row["jaccard"])
    out.append("== How much two classes' circuits overlap, per layer (query shared_neurons_by_layer) ==")
    out.append("   Jaccard = neurons both circuits use / neurons either uses (0: disjoint, 1: the same neurons);"
               " the mean over pairs of classes that share a concept by construction vs pairs that share none")
    for layer, groups in by_layer.items():
        mean = {k: sum(v) / len(v) if v else float("nan") for k, v in groups.items()}
        out.append(f"{layer}: classes sharing a concept {mean[True]:.2f} vs classes sharing none {mean[False]:.2f}")

    # 2. groups shared because the classes share a concept
    out.append("== Neuron groups two classes share, labelled with a concept both classes have (query shared_groups) ==")
    out.append("   per pair of classes: the best-overlapping pair of groups whose ground-truth concept both classes"
               " have; shared neurons and their Jaccard")
    for (a, b), both in common.items():
        if not both:
            continue
        rows = run_query(store=store, name="shared_groups",
                         params={"model": model_uid, "class_a": a, "class_b": b, "limit": 1000})
        hits = [r for r in rows if r.get("concept_a") in both and r.get("concept_b") in both]
        shared_list = ", ".join(sorted(_label(c) for c in both))
        if not hits:
            out.append(f"{a} & {b} share {shared_list} by construction; no shared group pair is labelled with it")
            continue
        r = hits[0]
        out.append(f"{a} & {b} share {shared_list}: {a} {r['layer']}/{r['group_a']} ({_label(r['concept_a'])}) "
                   f"~ {b} {r['layer']}/{r['group_b']} ({_label(r['concept_b'])}), "
                   f"{r['shared']} shared neurons, Jaccard {r['jaccard']:.2f}")

    # 2. the biased class: its spurious concepts and their paths to the logit
    out.append("== Spurious concepts (concept_paths_to_logit) ==")
    out.append("   a group showing the biased class's context; purity = share of its patches showing that concept;"
               " path strength = share of the logit's inflow carried by that chain of groups (-1..1, negative:"
               " inhibiting)")
    for name, spec in classes.items():
        spurious = list(spec.get("spurious", {}))  # world.json: concept -> rate
        if not spurious or name not in circuits:
            continue
        circuit = circuits[name]
        gt = truth_by_group[name]
        hits = [g for g in circuit.neuron_groups
                if gt[(g.layer, g.id)]["concept"] in spurious and g.layer != circuit.model.layers[0]]
        if not hits:
            out.append(f"{name}: spurious concepts {', '.join(map(_label, spurious))} did not surface as a neuron group")
            continue
        tested = {(f.layer, f.gid): f for f in getattr((debug or {}).get(name), "groups", [])}
        for g in sorted(hits, key=lambda g: circuit.model.layers.index(g.layer))[:3]:
            rows = run_query(store=store, name="concept_paths_to_logit",
                             params={"model": model_uid, "class": name, "layer": g.layer, "group": g.id, "limit": 1})
            head = (f"{name}: group {g.layer}/{g.id} shows '{_label(gt[(g.layer, g.id)]['concept'])}' "
                    f"(purity {gt[(g.layer, g.id)]['purity']:.2f}), the class's spurious context")
            f = tested.get((g.layer, g.id))
            if f is None:
                head += " (not tested by masking at this layer, so not called spurious)"
            elif f.spurious:
                r = f.random_concept_delta_logit
                head += (f"; spurious (measured): masking it changes the {name} logit by {f.concept_delta_logit:+.2f} on "
                         f"images with it vs {r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}] for random sets of its size; "
                         f"net effect {f.net_effect:+.2f}")
            else:
                head += f"; not called spurious: masking it moves the logit no more than random sets (net {f.net_effect:+.2f})"
            if rows:
                out.append(f"{head}; strongest path to the logit: {' -> '.join(rows[0]['path'])} "
                           f"(strength {rows[0]['strength']:+.3f}, {abs(rows[0]['strength']):.1%} of the logit's inflow)")
            else:
                out.append(f"{head}, but it reaches the logit by no path")

    # 3. the strongest path to each logit from the leaf layer
    out.append("== Strongest path from the leaf layer to each logit (concept_paths_to_logit) ==")
    out.append("   each hop's flow = its share of the parent group's incoming weight; strength = the product of the"
               " flows = the share of the logit's inflow through this one chain (of every leaf-to-logit path)")
    for name, circuit in circuits.items():
        leaf = circuit.model.layers[-1]
        rows = run_query(store=store, name="concept_paths_to_logit",
                         params={"model": model_uid, "class": name, "layer": leaf, "limit": 1})
        if rows:
            r = rows[0]
            labels = " -> ".join(_label(lab or con) for lab, con in zip(r["labels"], r["concepts"]))
            out.append(f"{name}: {' -> '.join(map(str, r['path']))} [{labels}] strength {r['strength']:+.3f}"
                       f" ({abs(r['strength']):.1%} of the logit's inflow)")
    return out
