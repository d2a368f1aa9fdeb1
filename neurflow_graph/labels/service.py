"""``label`` and ``label --evaluate`` as library functions: find the run, plan, ask, store.

Data flow: the store names the run and its run directory (``Run.run_dir``, or ``run_dir=``) ->
``circuit.json`` + the exemplar mosaics -> requests (:mod:`plan`, :mod:`evaluate`) -> answers
(:mod:`runner`: cache, budget, concurrency) -> annotations (:mod:`annotate`) -> written to the
run directory's ``annotations.jsonl`` and to the store. Nothing here changes a run's identity:
the circuit file is only read, and annotations target existing uids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurflow_graph.circuit import Circuit, load_circuit
from neurflow_graph.errors import InputError, RunFormatError
from neurflow_graph.labels.annotate import outcome_annotations, source_for
from neurflow_graph.labels.cache import ResponseCache
from neurflow_graph.labels.client import ChatClient, EndpointConfig
from neurflow_graph.labels.runner import FAILED, UNSENT, Outcome, Totals, execute

LABELS_DIR = "labels"  # RUN_DIR/labels/{cache,dry-run,dry-run-evaluate}
Echo = Callable[[str], None]


# ---- the run ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocatedRun:
    uid: str
    run_dir: Path
    circuit: Circuit


_RUN_DIR_QUERY = "MATCH (r:Run {uid: $uid}) RETURN r.status AS status, properties(r) AS props"


def locate_run(*, store: Any, run: str, run_dir: str | Path | None = None) -> LocatedRun:
    """The run ``run`` (uid or unique prefix) of ``store``, its run directory and circuit.

    The directory is ``run_dir`` when given, else the one the Run node records (``run_dir``
    property, written at ingest). Its ``circuit.json`` must be this very run (same identity)."""
    from neurflow_graph.identity import run_uid as identity_of

    uid = _resolve(store, run)
    rows = store.read(_RUN_DIR_QUERY, {"uid": uid})
    if not rows or rows[0]["status"] != "complete":
        raise InputError(f"run {uid} is not completely ingested in {store.display_url}; finish it with "
                         "`neurflow-graph ingest RUN_DIR` first")
    props = rows[0]["props"] or {}
    recorded = props.get("run_dir")
    where = Path(run_dir) if run_dir is not None else (Path(recorded) if recorded else None)
    if where is None:
        raise InputError(f"the store does not record run {uid}'s run directory (ingested by an older version); "
                         "give it with --run-dir, or ingest the run again")
    if not (where / "circuit.json").is_file():
        hint = "--run-dir" if run_dir is not None else "the directory recorded at ingest (--run-dir overrides it)"
        raise RunFormatError(f"{where} holds no circuit.json: {hint} must be run {uid}'s run directory")
    circuit = load_circuit(where)
    found = identity_of(circuit)
    if found != uid:
        raise RunFormatError(f"{where} holds run {found}, not run {uid}: give run {uid}'s own run directory")
    return LocatedRun(uid=uid, run_dir=where, circuit=circuit)


def _resolve(store: Any, run: str) -> str:
    try:
        from neurflow_graph.queries.names import resolve_run
    except ImportError:  # pragma: no cover - names.py is part of the package
        return run
    return resolve_run(store, run)


def store_annotations(*, store: Any, run_dir: Path, annotations: Sequence[Any]) -> int:
    """Append to ``RUN_DIR/annotations.jsonl`` (so a re-ingest keeps them) and write them to the store."""
    from neurflow_graph.annotations import append_run_annotations
    from neurflow_graph.store.annotations import write_annotations

    if not annotations:
        return 0
    append_run_annotations(run_dir, list(annotations))
    return write_annotations(store=store, annotations=list(annotations))


# ---- labelling ----------------------------------------------------------------------------------

@dataclass
class LabelSummary:
    run_uid: str
    run_dir: Path
    model: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    annotations: int = 0
    dry_run_dir: Path | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        return Totals.of(self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def unsent(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == UNSENT]

    def parse_failures(self) -> list[str]:
        from neurflow_graph.labels.parsing import parse_caption, parse_formation

        out = []
        for o in self.outcomes:
            if o.reply is None:
                continue
            r = o.request
            if r.kind == "caption":
                p = parse_caption(o.reply.text)
            elif r.kind == "formation":
                p = parse_formation(o.reply.text, n_groups=1 + len(r.subject["children"]))
            else:
                from neurflow_graph.labels.evaluate import score_answer

                p = score_answer(o.reply.text, r.subject["positives"])
            if not p.ok:
                out.append(f"{r.kind} {r.subject['layer']}/{r.subject['gid']}: {p.error}")
        return out

    def lines(self) -> list[str]:
        out = [f"run {self.run_uid} ({self.run_dir}), model {self.model}: {len(self.outcomes)} requests planned"]
        out += [f"skipped {s}" for s in self.skipped]
        out.append(self.totals.line())
        if self.dry_run_dir is not None:
            out.append(f"dry run: nothing sent; the requests are in {self.dry_run_dir}")
        else:
            bad = self.parse_failures()
            out += [f"answer not in the answer form (raw text kept, parse_ok false): {b}" for b in bad]
            out.append(f"{self.annotations} annotations written (source {source_for(self.model)})")
        out += self.extra
        for o in self.failed:
            out.append(f"failed: {o.request.kind} {o.request.subject['layer']}/{o.request.subject['gid']}: {o.error}")
        if self.unsent:
            out.append(f"{len(self.unsent)} requests left for later (--max-requests); run the same command again "
                       "to continue")
        return out


def _client_factory(config: EndpointConfig, holder: list[ChatClient]) -> Callable[[], Callable[..., Any]]:
    def make() -> Callable[..., Any]:
        client = ChatClient(config)
        holder.append(client)
        return client.complete
    return make


def _ask(*, requests: Sequence[Any], config: EndpointConfig, cache_dir: Path, max_requests: int | None,
         concurrency: int, dry_run_dir: Path | None, outcomes: list[Outcome],
         finish: Callable[[list[Outcome]], None], progress: Callable[[Outcome], Any] | None = None) -> None:
    """Execute ``requests``; ``finish(outcomes)`` stores whatever was answered, even when interrupted."""
    clients: list[ChatClient] = []
    try:
        execute(requests, cache=ResponseCache(cache_dir), outcomes=outcomes,
                complete=_client_factory(config, clients), max_requests=max_requests, concurrency=concurrency,
                dry_run_dir=dry_run_dir, progress=progress)
    finally:
        for c in clients:
            c.close()
        if dry_run_dir is None:
            finish(outcomes)


def label_run(*, store: Any, run: str, config: EndpointConfig, run_dir: str | Path | None = None,
              layers: Sequence[str] | None = None, children: int = 3, cache_dir: str | Path | None = None,
              max_requests: int | None = None, concurrency: int = 4, dry_run_dir: str | Path | None = None,
              dry_run: bool = False, progress: Callable[[Outcome], Any] | None = None) -> LabelSummary:
    """Caption every neuron group of the run and explain each group's formation from its children."""
    from neurflow_graph.labels.mosaics import neuron_group_mosaics
    from neurflow_graph.labels.plan import plan_labels

    located = locate_run(store=store, run=run, run_dir=run_dir)
    base = located.run_dir / LABELS_DIR
    dry = (Path(dry_run_dir) if dry_run_dir else base / "dry-run") if dry_run or dry_run_dir else None
    mosaics = {k: m.image() for k, m in neuron_group_mosaics(located.run_dir).items()}
    plan = plan_labels(circuit=located.circuit, mosaics=mosaics, model=config.model, layers=layers,
                       children=children)
    summary = LabelSummary(run_uid=located.uid, run_dir=located.run_dir, model=config.model,
                           skipped=plan.skipped, dry_run_dir=dry)

    def finish(outcomes: list[Outcome]) -> None:
        anns = outcome_annotations(run_uid=located.uid, outcomes=outcomes)
        summary.annotations = store_annotations(store=store, run_dir=located.run_dir, annotations=anns)

    _ask(requests=plan.requests, config=config, cache_dir=Path(cache_dir) if cache_dir else base / "cache",
         max_requests=max_requests, concurrency=concurrency, dry_run_dir=dry, outcomes=summary.outcomes,
         finish=finish, progress=progress)
    return summary


# ---- evaluation ---------------------------------------------------------------------------------

def _group_keys(circuit: Circuit, uid: str) -> dict[str, tuple[str, int]]:
    from neurflow_graph.identity import neuron_group_uid

    return {neuron_group_uid(uid, g.layer, g.id): (g.layer, g.id) for g in circuit.neuron_groups}


def _stored_values(store: Any, *, key: str, source: str | None, targets: dict[str, tuple[str, int]]) -> dict:
    from neurflow_graph.store.annotations import read_annotations

    out: dict[tuple[str, int], Any] = {}
    for a in read_annotations(store=store, key=key, source=source):
        if a.target in targets:
            out[targets[a.target]] = a.value
    return out


def _cropper(circuit: Circuit, run_dir: Path, thumb: int) -> Callable[[int], Any]:
    from neurflow_graph.datasets.images import load_rgb
    from neurflow_graph.labels.requests import Image as Png
    from neurflow_graph.viz.exemplars import png_bytes, thumbnail

    patches = {p.id: p for p in circuit.patches}
    refs = {i.id: i for i in circuit.images}
    loaded: dict[int, Any] = {}

    def crop(pid: int) -> Png:
        p = patches[pid]
        if p.image not in loaded:
            path = Path(refs[p.image].path)
            if not path.is_absolute() and not path.exists() and (run_dir / path).exists():
                path = run_dir / path
            loaded[p.image] = load_rgb(path)
        return Png.from_png(png_bytes(thumbnail(loaded[p.image], p.box, thumb=thumb)))

    return crop


def evaluate_run(*, store: Any, run: str, config: EndpointConfig, run_dir: str | Path | None = None,
                 layers: Sequence[str] | None = None, positives: int = 4, negatives: int = 4, seed: int = 0,
                 cache_dir: str | Path | None = None, max_requests: int | None = None, concurrency: int = 4,
                 dry_run_dir: str | Path | None = None, dry_run: bool = False,
                 progress: Callable[[Outcome], Any] | None = None) -> LabelSummary:
    """The label-quality check of every captioned group (see :mod:`evaluate`), plus the ground-truth
    agreement where the groups carry a ground-truth concept (the concept world)."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.labels import evaluate as ev
    from neurflow_graph.labels.mosaics import neuron_group_mosaics
    from neurflow_graph.labels.plan import select_layers
    from neurflow_graph.viz.exemplars import read_manifest

    if positives < 1 or negatives < 1:
        raise InputError("--positives and --negatives must be at least 1")
    located = locate_run(store=store, run=run, run_dir=run_dir)
    circuit, uid = located.circuit, located.uid
    chosen = set(select_layers(circuit, layers))
    targets = {k: v for k, v in _group_keys(circuit, uid).items() if v[0] in chosen}
    uid_of = {v: k for k, v in targets.items()}
    source = source_for(config.model)
    captions = _stored_values(store, key="caption", source=source, targets=targets)
    labels = _stored_values(store, key="label", source=source, targets=targets)
    base = located.run_dir / LABELS_DIR
    dry = (Path(dry_run_dir) if dry_run_dir else base / "dry-run-evaluate") if dry_run or dry_run_dir else None
    summary = LabelSummary(run_uid=uid, run_dir=located.run_dir, model=config.model, dry_run_dir=dry)
    if not captions:
        raise InputError(f"run {uid} has no captions from {source} yet: run `neurflow-graph label --run {uid}` first")
    mosaics = neuron_group_mosaics(located.run_dir)
    mixes = []
    for key in sorted(captions, key=lambda k: (circuit.model.layers.index(k[0]), k[1])):
        m = mosaics.get(key)
        mix = ev.evaluation_mix(circuit=circuit, run_uid=uid, layer=key[0], gid=key[1],
                                shown=m.patches if m else (), positives=positives, negatives=negatives, seed=seed)
        if mix is None:
            summary.skipped.append(f"{key[0]}/{key[1]}: no held-out exemplar (every patch is in the mosaic)")
        else:
            mixes.append(mix)
    crop = _cropper(circuit, located.run_dir, int(read_manifest(located.run_dir).get("thumb", 64)))
    requests = ev.evaluation_requests(model=config.model, mixes=mixes, captions=captions, crop=crop)
    mix_of = {(m.layer, m.gid): m for m in mixes}
    accuracy: dict[tuple[str, int], float] = {}

    def finish(outcomes: list[Outcome]) -> None:
        anns = []
        for o in outcomes:
            if o.reply is None:
                continue
            key = (o.request.subject["layer"], int(o.request.subject["gid"]))
            score = ev.score_answer(o.reply.text, o.request.subject["positives"])
            meta = {"prompt_version": o.request.prompt_version, "images": o.request.image_hashes,
                    "request": o.request.key, "kind": "evaluation", "parse_ok": score.ok,
                    "response_model": o.reply.response_model, "caption": captions[key]}
            anns.append(make_annotation(target=uid_of[key], target_label="NeuronGroup", key="label_accuracy_answer",
                                        value={"raw": o.reply.text, "parsed": score.ok, "error": score.error},
                                        source=source, meta=meta))
            if score.ok:
                accuracy[key] = float(score.accuracy)
                anns.append(make_annotation(target=uid_of[key], target_label="NeuronGroup", key="label_accuracy",
                                            value=score.accuracy, source=source,
                                            meta={**meta, **ev.as_meta(score, mix_of[key])}))
        summary.annotations = store_annotations(store=store, run_dir=located.run_dir, annotations=anns)

    _ask(requests=requests, config=config, cache_dir=Path(cache_dir) if cache_dir else base / "cache",
         max_requests=max_requests, concurrency=concurrency, dry_run_dir=dry, outcomes=summary.outcomes,
         finish=finish, progress=progress)
    if dry is None:
        for layer, n, mean in ev.summarise(accuracy, circuit.model.layers):
            summary.extra.append(f"label accuracy {layer}: {mean:.2f} over {n} groups "
                                 f"({positives} held-out exemplars + {negatives} random patches each; chance 0.50)")
        summary.extra += _agreement(store=store, circuit=circuit, targets=targets, uid_of=uid_of, source=source,
                                    captions=captions, labels=labels, run_dir=located.run_dir, summary=summary)
    return summary


def _agreement(*, store: Any, circuit: Circuit, targets: dict[str, tuple[str, int]],
               uid_of: dict[tuple[str, int], str], source: str, captions: dict, labels: dict, run_dir: Path,
               summary: LabelSummary) -> list[str]:
    """Ground-truth agreement lines (none when no group carries a ground-truth concept)."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.labels import evaluate as ev

    concepts = {k: v for k, v in _stored_values(store, key="concept", source="ground_truth", targets=targets).items()
                if isinstance(v, str) and v}
    texts = {k: " ".join(x for x in (labels.get(k), captions.get(k)) if x) for k in captions}
    rows = ev.ground_truth_agreement(concepts=concepts, texts=texts)
    if not rows:
        return []
    anns = [make_annotation(target=uid_of[(a.layer, a.gid)], target_label="NeuronGroup",
                            key="label_matches_ground_truth", value=a.agrees, source=source,
                            meta={"concept": a.concept, "matched_terms": a.matched}) for a in rows]
    summary.annotations += store_annotations(store=store, run_dir=run_dir, annotations=anns)
    agree = sum(a.agrees for a in rows)
    return [f"ground truth: {agree} of {len(rows)} labelled groups name their ground-truth concept "
            f"({agree / len(rows):.0%}); " + ", ".join(f"{a.layer}/{a.gid} {a.concept} {'yes' if a.agrees else 'no'}"
                                                    for a in rows)]
