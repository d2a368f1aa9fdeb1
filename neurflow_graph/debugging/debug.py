"""Image debugging (paper sec. 5.1, app. F): which neuron groups drive a class's false positives.

For one run (class c) and one layer L, on a labelled image folder:

1. The false positives: images the model predicts as c whose folder names another class.
2. For every neuron group G of L, the metric M(v, S'_G, D) (:mod:`.metric`) on every crop of each
   false positive (the crops of sec. 3.3, with the run's crop sizes and stride); an image's score is
   the highest over its crops, and a heat map keeps, per pixel, the highest score of the crops
   covering it, shown where it exceeds the group's threshold (half the highest M on the group's
   own concept patches).
3. Masking all neurons S_G of each group at L (:mod:`neurflow_graph.interventions`) against R random
   sets of |S_G| neurons of L: the change in c's probability on the false positives, the share of
   them no longer predicted as c and the share returned to their true class (random sets: mean and
   99% interval, the 0.5th..99.5th percentiles of the R values).
4. With the concept world's ground truth beside the images (``world.json``), the images carrying
   each group's concept (its ground-truth annotation): the change in c's logit when masking G,
   against the random sets. A group is *beyond random* when its change lies outside the random
   99% interval, and is called *spurious* only when its concept is not part of the class's object
   and masking it lowers c's logit beyond random. The groups whose concept the world lists as
   c's spurious context are also masked together, against random sets of the same total size.
   Likewise every concept's groups (``by_concept``): the share of false positives returned to their
   true class, and the mean change of c's logit and of the true class's logit, against random sets of
   that size. A concept whose masking lowers c but also the true class (evidence for both) does not
   cause the false positives; one whose masking lowers c and raises the true class does.
5. Each group's net effect on the logit: the mean of (logit - logit with G masked) over the images
   predicted as c; its sign says whether G raises or lowers c. And the images whose logit drops
   most when G is masked (Fig. 9, right).

Everything is computed on layer L's maps, with the slice L -> logit layer of the traced model, so
each masked set costs one pass of that slice. No I/O here besides reading the images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurflow_graph.circuit import Circuit
from neurflow_graph.debugging.metric import CORE_SUBSET_SIZE, core_subset, group_metric
from neurflow_graph.errors import ImageError, InputError
from neurflow_graph.extraction.activations import scan_activations
from neurflow_graph.extraction.patches import PatchPlan, PatchSource, image_size, plan_patches
from neurflow_graph.interventions import knockout_phi, layer_function

FORMAT = "neurflow-debug"
VERSION = 1
TOP_DROP = 5
INTERVAL = (0.5, 99.5)  # percentiles of the random sets' values: a 99% interval


@dataclass
class RandomStats:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> "RandomStats":
        v = np.asarray(values, dtype=np.float64)
        lo, hi = np.percentile(v, INTERVAL)
        return cls(mean=float(v.mean()), low=float(lo), high=float(hi))


@dataclass
class GroupFinding:
    """One neuron group's measured effects (see the module doc)."""

    layer: str
    gid: int
    concept: str | None
    neurons: list[int]                 # S_G, every neuron of the group
    core_subset: list[int]             # S'_G, the <= 5 nearest the group's centre
    threshold: float                   # heat-map threshold on M
    metric: list[float]                # M per false positive (highest over its crops)
    top_share: float                   # share of false positives where this group has the highest M
    delta_prob: float                  # mean change of the class probability on the false positives
    flip_rate: float                   # share of false positives no longer predicted as the class
    returned_rate: float               # share of false positives predicted as their true class
    random_delta_prob: RandomStats | None
    random_flip_rate: RandomStats | None
    random_returned_rate: RandomStats | None
    net_effect: float                  # mean (logit - masked logit) on the images predicted as the class
    concept_images: int = 0            # images (ground truth) carrying the group's concept
    concept_delta_logit: float | None = None
    random_concept_delta_logit: RandomStats | None = None
    beyond_random: bool | None = None
    spurious: bool | None = None
    top_drop: list[dict[str, Any]] = field(default_factory=list)  # [{"path", "drop"}], largest first


@dataclass
class CombinedFinding:
    """The class's spurious-context groups (by ground truth) masked together."""

    groups: list[int]
    concepts: list[str]
    size: int
    returned_rate: float
    flip_rate: float
    delta_prob: float
    random_returned_rate: RandomStats
    random_flip_rate: RandomStats
    random_delta_prob: RandomStats


@dataclass
class ConceptMasking:
    """All groups of one (ground-truth or annotated) concept masked together on the false positives:
    which concept's neurons the false positives depend on, beside random sets of the same size."""

    concept: str
    groups: list[int]
    size: int
    returned_rate: float
    delta_logit: float                 # mean change of the class's logit
    delta_true_logit: float            # mean change of each false positive's true class's logit
    random_returned_rate: RandomStats
    random_delta_logit: RandomStats
    random_delta_true_logit: RandomStats


@dataclass
class DebugResult:
    run: str
    class_name: str
    class_index: int
    layer: str
    n_images: int
    n_random: int
    seed: int
    false_positives: list[str]
    false_positive_labels: list[str]
    groups: list[GroupFinding]
    combined: CombinedFinding | None = None
    top_group_spurious_share: float | None = None  # share of false positives whose top-M group is a spurious-context group
    by_concept: list[ConceptMasking] = field(default_factory=list)
    heatmaps: dict[str, Any] = field(default_factory=dict)  # not serialised: {"images": [...], "maps": {gid: [(H, W)]}}
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain data for debug.json: every NaN or infinite number (a figure with nothing to average,
        e.g. ``delta_true_logit`` when no false positive has a true class) becomes None (JSON null)."""
        d = asdict(self)
        d.pop("heatmaps")
        return _finite_or_none(d)

    def json_text(self) -> str:
        """debug.json's text: strict JSON (no bare NaN/Infinity), one level indented."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False)


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    return v


# ---------------------------------------------------------------------------- helpers


def _records_source(paths: Sequence[Path], plan: PatchPlan, model: Any) -> PatchSource:
    from neurflow_graph.extraction.circuit_builder import patch_size

    sizes = [image_size(p) for p in paths]
    return PatchSource(paths=paths, plan=plan, size=patch_size(model, sizes), preprocess=model.preprocess)


def _scan(model: Any, source: PatchSource, layers: Sequence[str], keep: Sequence[str] = (),
          batch: int = 256) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """phi ``{layer: (P, C)}`` and full maps of ``keep`` layers for every patch of ``source``."""
    budget = float("inf") if keep else 0.0
    return scan_activations(module=model.module, layers=list(layers), n_patches=len(source.plan),
                            batches=source.batch, device=torch.device(model.device), batch_size=batch,
                            map_layers=list(keep), map_budget=budget)


def _member_vectors(circuit: Circuit, layer: str, members: Sequence[tuple[int, int]],
                    phi_r: np.ndarray, index: dict[int, int]) -> np.ndarray:
    sgs = {(n.index, g.id): g.patches for n in circuit.layer_neurons(layer) for g in n.semantic_groups}
    return np.stack([phi_r[[index[p] for p in sgs[(a, j)]]].astype(np.float64).mean(0) for a, j in members])


def _random_sets(rng: np.random.Generator, n_channels: int, size: int, count: int) -> list[list[int]]:
    size = min(size, n_channels)
    return [sorted(rng.choice(n_channels, size=size, replace=False).tolist()) for _ in range(count)]


def circuit_patch_source(circuit: Circuit, model: Any, patch_ids: Sequence[int]) -> PatchSource:
    """The run's own patches ``patch_ids`` (from its images and boxes), as the extraction saw them."""
    by_id = {p.id: p for p in circuit.patches}
    paths = [Path(i.path) for i in circuit.images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ImageError(f"the run's image {missing[0]} is missing ({len(missing)} of {len(paths)}); the run's "
                         "images must stay where they were extracted from")
    plan = PatchPlan(image=np.asarray([by_id[p].image for p in patch_ids], dtype=np.int64),
                     boxes=np.asarray([by_id[p].box for p in patch_ids], dtype=np.int64).reshape(-1, 4))
    return _records_source(paths, plan, model)


# ---------------------------------------------------------------------------- the analysis


def debug_class(*, model: Any, circuit: Circuit, run_uid: str, images: Sequence[Any], layer: str | None = None,
                n_random: int = 100, seed: int = 0, truth: Any | None = None, concepts: dict[tuple[str, int], str | None] | None = None,
                heatmap_images: int = 4, batch: int = 256) -> DebugResult:
    """Debug the run's class on labelled ``images`` (ImageRecords; ``label`` = folder name).

    ``truth``: the concept world's ground truth of ``images`` (``WorldGroundTruth``) or None;
    ``concepts``: ``{(layer, gid): concept}`` of the run's groups (see :func:`.runs.group_concepts`).
    ``layer`` defaults to the layer below the logit layer (the paper's choice, layer4.2)."""
    layers = list(circuit.model.layers)
    if len(layers) < 2:
        raise InputError("the run has only a logit layer; debugging needs a layer of neuron groups below it")
    layer = layer or layers[1]
    if layer not in layers[1:]:
        raise InputError(f"layer {layer!r} is not an analysed layer below the logit; use one of {', '.join(layers[1:])}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 2:
        raise InputError(f"--random must be an integer >= 2, got {n_random!r}")
    groups = sorted((g for g in circuit.neuron_groups if g.layer == layer), key=lambda g: g.id)
    if not groups:
        raise InputError(f"the run has no neuron groups at layer {layer!r}")
    concept_of = {g.id: (concepts or {}).get((layer, g.id)) for g in groups}
    if any(r.label is None for r in images):
        raise ImageError("debug needs labelled images: an ImageFolder tree (one sub-folder per class) so that "
                         "false positives can be told")
    c = circuit.class_.index
    cname = circuit.class_.name
    names = [model.class_name(i) for i in range(model.num_classes or 0)]
    index_of = {n.lower(): i for i, n in enumerate(names)}
    below = layers[layers.index(layer) + 1] if layers.index(layer) + 1 < len(layers) else layer
    gen = np.random.default_rng(seed)

    # --- layer-L maps and logits of every image (one forward each)
    paths = [Path(r.path) for r in images]
    whole = PatchPlan(image=np.arange(len(paths), dtype=np.int64),
                      boxes=np.asarray([[0, 0, *image_size(p)] for p in paths], dtype=np.int64))
    src = _records_source(paths, whole, model)
    phi_img, maps = _scan(model, src, [layers[0], layer], keep=[layer], batch=batch)
    maps_l = maps[layer].to(model.device)
    logits = torch.as_tensor(phi_img[layers[0]])
    fn = layer_function(module=model.module, lower=layer, upper=layers[0])
    pred = logits.argmax(1).numpy()
    true = np.asarray([index_of.get(str(r.label).lower(), -1) for r in images])
    fp = np.flatnonzero((pred == c) & (true != c))
    predicted = np.flatnonzero(pred == c)
    n_channels = int(maps_l.shape[1])

    # --- sets to mask: each group, R random sets per size, the spurious-context union
    members = {g.id: [(int(a), int(j)) for a, j in g.members] for g in groups}
    neurons = {g.id: sorted({a for a, _ in members[g.id]}) for g in groups}
    class_def = _class_def(truth, cname)
    spurious_concepts = list((class_def or {}).get("spurious", {}))
    object_concepts = set((class_def or {}).get("concepts", []))
    combined_ids = [g.id for g in groups if concept_of[g.id] in spurious_concepts]
    combined = sorted({a for gid in combined_ids for a in neurons[gid]})
    named = sorted({str(concept_of[g.id]) for g in groups if concept_of[g.id]})
    by_concept_ids = {k: [g.id for g in groups if concept_of[g.id] == k] for k in named}
    by_concept_sets = {k: sorted({a for gid in ids for a in neurons[gid]}) for k, ids in by_concept_ids.items()}
    sizes = sorted({len(v) for v in neurons.values()} | ({len(combined)} if combined else set()))
    # sizes met only by a concept's union are drawn after the others: those keep their random sets
    sizes += sorted({len(v) for v in by_concept_sets.values()} - set(sizes))
    randoms = {n: _random_sets(gen, n_channels, n, n_random) for n in sizes}
    sets: list[list[int]] = [neurons[g.id] for g in groups] + [combined] * bool(combined)
    concept_offset = len(sets)
    sets += [by_concept_sets[k] for k in named]
    offsets = {}
    for n in sizes:
        offsets[n] = len(sets)
        sets += randoms[n]
    with torch.no_grad():
        masked = knockout_phi(slice_module=fn, maps=maps_l, sets=sets, max_rows=batch * 8).cpu()  # (S, N, K)
    probs = torch.softmax(logits, 1)[:, c].numpy()
    m_probs = torch.softmax(masked, 2)[:, :, c].numpy()
    m_pred = masked.argmax(2).numpy()
    m_logit = masked[:, :, c].numpy()
    logit = logits[:, c].numpy()

    def fp_stats(s: int) -> tuple[float, float, float]:
        if not len(fp):
            return float("nan"), float("nan"), float("nan")
        return (float((m_probs[s, fp] - probs[fp]).mean()), float((m_pred[s, fp] != c).mean()),
                float((m_pred[s, fp] == true[fp]).mean()))

    def random_fp(n: int) -> tuple[RandomStats, RandomStats, RandomStats] | tuple[None, None, None]:
        if not len(fp):
            return None, None, None
        vals = np.asarray([fp_stats(offsets[n] + i) for i in range(n_random)])
        return RandomStats.of(vals[:, 0]), RandomStats.of(vals[:, 1]), RandomStats.of(vals[:, 2])

    # --- M on the crops of the false positives, maxima and r vectors on the run's own patches
    layer_patches = sorted({p for n in circuit.layer_neurons(layer) for g in n.semantic_groups for p in g.patches})
    pindex = {p: i for i, p in enumerate(layer_patches)}
    phi_run, _ = _scan(model, circuit_patch_source(circuit, model, layer_patches), sorted({layer, below}), batch=batch)
    phi_l_run, phi_r_run = phi_run[layer], phi_run[below]
    params = circuit.params
    fp_paths = [paths[i] for i in fp]
    metric_img = np.zeros((len(groups), len(fp)))
    heat: dict[int, list[np.ndarray]] = {g.id: [] for g in groups}
    thresholds: dict[int, float] = {}
    subsets: dict[int, list[int]] = {}
    if len(fp):
        crop_plan = plan_patches(image_sizes=[image_size(p) for p in fp_paths],
                                 crop_fractions=params.get("crop_fractions", [1.0, 0.5, 0.25]),
                                 stride_fraction=params.get("stride_fraction", 0.5))
        phi_crops = _scan(model, _records_source(fp_paths, crop_plan, model), [layer], batch=batch)[0][layer]
    for gi, g in enumerate(groups):
        vectors = _member_vectors(circuit, layer, members[g.id], phi_r_run, pindex)
        sub = core_subset(members[g.id], vectors, CORE_SUBSET_SIZE)
        subsets[g.id] = sub
        own = sorted({p for a, j in members[g.id] for p in _sg_patches(circuit, layer, a, j)})
        maxima = np.maximum(phi_l_run[:, sub].max(0), np.finfo(np.float64).tiny)
        own_m = group_metric(phi_l_run[[pindex[p] for p in own]][:, sub], maxima)
        thresholds[g.id] = 0.5 * float(own_m.max())
        if len(fp):
            m = group_metric(phi_crops[:, sub], maxima)
            for k in range(len(fp)):
                rows = np.flatnonzero(crop_plan.image == k)
                metric_img[gi, k] = float(m[rows].max())
                if k < heatmap_images:
                    heat[g.id].append(_heat(crop_plan, rows, m, image_size(fp_paths[k])))

    # --- per group findings
    findings = []
    top = metric_img.argmax(0) if len(fp) else np.zeros(0, dtype=np.int64)
    image_concepts = _image_concepts(truth, images)
    for gi, g in enumerate(groups):
        d_prob, flip, back = fp_stats(gi)
        r_prob, r_flip, r_back = random_fp(len(neurons[g.id]))
        net = float((logit[predicted] - m_logit[gi, predicted]).mean()) if len(predicted) else float("nan")
        f = GroupFinding(layer=layer, gid=g.id, concept=concept_of[g.id], neurons=neurons[g.id], core_subset=subsets[g.id],
                         threshold=thresholds[g.id], metric=[float(v) for v in metric_img[gi]],
                         top_share=float((top == gi).mean()) if len(fp) else float("nan"),
                         delta_prob=d_prob, flip_rate=flip, returned_rate=back, random_delta_prob=r_prob,
                         random_flip_rate=r_flip, random_returned_rate=r_back, net_effect=net)
        drop = logit - m_logit[gi]
        f.top_drop = [{"path": str(paths[i]), "drop": float(drop[i])} for i in np.argsort(-drop, kind="stable")[:TOP_DROP]]
        if image_concepts is not None and concept_of[g.id]:
            with_c = np.asarray([concept_of[g.id] in cs for cs in image_concepts])
            f.concept_images = int(with_c.sum())
            if with_c.any():
                f.concept_delta_logit = float((m_logit[gi, with_c] - logit[with_c]).mean())
                n = len(neurons[g.id])
                rvals = np.asarray([(m_logit[offsets[n] + i, with_c] - logit[with_c]).mean() for i in range(n_random)])
                f.random_concept_delta_logit = RandomStats.of(rvals)
                r = f.random_concept_delta_logit
                f.beyond_random = bool(f.concept_delta_logit < r.low or f.concept_delta_logit > r.high)
                f.spurious = bool(concept_of[g.id] not in object_concepts and f.beyond_random
                                  and f.concept_delta_logit < r.low)
        findings.append(f)

    result = DebugResult(run=run_uid, class_name=cname, class_index=c, layer=layer, n_images=len(images),
                         n_random=n_random, seed=seed, false_positives=[str(p) for p in fp_paths],
                         false_positive_labels=[str(images[i].label) for i in fp], groups=findings)
    if combined:
        s = len(groups)
        d_prob, flip, back = fp_stats(s)
        r_prob, r_flip, r_back = random_fp(len(combined))
        if r_prob is not None:
            result.combined = CombinedFinding(groups=combined_ids, concepts=sorted({concept_of[i] for i in combined_ids}),
                                              size=len(combined), returned_rate=back, flip_rate=flip, delta_prob=d_prob,
                                              random_returned_rate=r_back, random_flip_rate=r_flip,
                                              random_delta_prob=r_prob)
    if len(fp):
        known = fp[true[fp] >= 0]  # false positives whose folder is one of the model's classes
        base_true = logits.numpy()[known, true[known]]

        def concept_stats(s: int) -> tuple[float, float, float]:
            d_true = masked[s].numpy()[known, true[known]] - base_true if len(known) else np.full(1, np.nan)
            return (float((m_pred[s, fp] == true[fp]).mean()), float((m_logit[s, fp] - logit[fp]).mean()),
                    float(d_true.mean()))

        for i, k in enumerate(named):
            back, d_c, d_true = concept_stats(concept_offset + i)
            n = len(by_concept_sets[k])
            r = np.asarray([concept_stats(offsets[n] + j) for j in range(n_random)])
            result.by_concept.append(ConceptMasking(
                concept=k, groups=by_concept_ids[k], size=n, returned_rate=back, delta_logit=d_c,
                delta_true_logit=d_true, random_returned_rate=RandomStats.of(r[:, 0]),
                random_delta_logit=RandomStats.of(r[:, 1]), random_delta_true_logit=RandomStats.of(r[:, 2])))
    if len(fp) and spurious_concepts:
        result.top_group_spurious_share = float(np.mean([concept_of[groups[t].id] in spurious_concepts for t in top]))
    result.heatmaps = {"images": [str(p) for p in fp_paths[:heatmap_images]], "maps": heat}
    return result


def _sg_patches(circuit: Circuit, layer: str, neuron: int, j: int) -> list[int]:
    for g in circuit.neuron(layer, neuron).semantic_groups:
        if g.id == j:
            return list(g.patches)
    raise InputError(f"neuron {layer}/{neuron} has no semantic group {j}")


def _heat(plan: PatchPlan, rows: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per pixel, the highest M of the crops (``rows`` of ``plan``) covering it: ``(H, W)``."""
    width, height = size
    out = np.zeros((height, width))
    for r in rows:
        x0, y0, x1, y1 = plan.boxes[r]
        np.maximum(out[y0:y1, x0:x1], m[r], out=out[y0:y1, x0:x1])
    return out


def _class_def(truth: Any | None, name: str) -> dict[str, Any] | None:
    if truth is None:
        return None
    return next((c for c in truth.classes if c.get("name") == name), None)


def _image_concepts(truth: Any | None, images: Sequence[Any]) -> list[set[str]] | None:
    if truth is None:
        return None
    return [set(truth.image(r.sha256).concepts) for r in images]
