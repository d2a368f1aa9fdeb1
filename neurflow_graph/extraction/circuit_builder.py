"""NeurFlow's circuit (Algorithm 3) and concept circuit (sec. 3.5), assembled into a :class:`Circuit`.

Top-down from the class logit: for the targets of layer ``i`` (the root, then the union of the
core neurons found above) compute concepts (top-k patches by phi from the one activation scan),
semantic groups (Ward on the layer below's phi), integrated gradients to layer ``i+1`` for the
patches of the concepts only, core neurons and edge weights. The bottom layer's neurons get
concepts and semantic groups on their own phi, and no edges. Each layer is checkpointed.

The steps that do not depend on how phi and IG are computed are public (:func:`patch_source`,
:func:`concepts`, :func:`layer_entry`, :func:`assemble_circuit`) so that ``bench/extract.py``'s
reference-style baseline runs the very same code around its own scan and IG.
"""

from __future__ import annotations

import platform
import random
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from neurflow_graph.circuit import (
    Circuit, ClassInfo, Edge, ImageRef, ModelInfo, Neuron, NeuronGroup, Patch, SemanticGroup, derive_group_edges,
)
from neurflow_graph.errors import ExtractionError, ImageError, InputError
from neurflow_graph.extraction import importance
from neurflow_graph.extraction.activations import scan_activations
from neurflow_graph.extraction.budget import device_budget, grad_budget, peak_memory
from neurflow_graph.extraction.heap import retained_heap
from neurflow_graph.extraction.layer_order import check_layer_order
from neurflow_graph.extraction.integrated_gradients import SliceAttributor, quadrature
from neurflow_graph.extraction.ig_graph import choose_slots
from neurflow_graph.extraction.neuron_groups import NeuronGrouper, group_vectors
from neurflow_graph.extraction.params import ExtractParams
from neurflow_graph.extraction.patches import PatchPlan, PatchSource, image_size, plan_patches
from neurflow_graph.extraction.rundir import Checkpoints, fingerprint
from neurflow_graph.extraction.scan_layout import scan_form
from neurflow_graph.extraction.semantic_groups import SemanticGrouper
from neurflow_graph.extraction.slicing import TracedModel, layer_slice, prefix, trace_layers


# Share of the memory budget for full maps kept from the scan (all of D, top layers first); the rest
# holds the maps of one layer's top-k patches (U) between the blocks of integrated gradients.
SCAN_MAP_SHARE = 0.5


class _Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.totals: dict[str, float] = {}

    def timing(self) -> dict[str, float]:
        """Seconds per phase and ``total`` since creation, rounded to microseconds."""
        out = {k: round(v, 6) for k, v in sorted(self.totals.items())}
        out["total"] = round(time.perf_counter() - self.started, 6)
        return out

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards."""
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The generators a run could draw from (torch on the CPU and ``device``, numpy, random) seeded
    with ``seed`` for the duration; the caller's states are restored afterwards."""
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed % (2**32))
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def patch_size(model: Any, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(width, height) every patch is resized to: the model's input size, else the images' common size."""
    side = getattr(model.spec, "input_size", None)
    if side is not None:
        return int(side), int(side)
    distinct = sorted(set(sizes))
    if len(distinct) != 1:
        raise ExtractionError(f"the model has no input size and the images have {len(distinct)} different sizes "
                              f"(e.g. {distinct[0]} and {distinct[-1]}); give the model an input size "
                              "(--input-size N) so that patches can be batched")
    return distinct[0]


def weights_id(model: Any) -> str:
    """The weights' sha256, or a hash of the random-init state dict."""
    if getattr(model, "weights_sha256", None):
        return str(model.weights_sha256)
    from neurflow_graph.models.registry import state_dict_sha256

    return "state:" + state_dict_sha256(model.module.state_dict())


def software_versions(device: torch.device) -> dict[str, str]:
    import sklearn
    import torchvision

    from neurflow_graph import __version__

    return {"neurflow_graph": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "device": str(device)}


def patch_source(*, model: Any, images: Sequence[Any], params: ExtractParams,
                 device: torch.device | str = "cpu") -> PatchSource:
    """The patch set D of ``images`` (crops and stride of ``params``), resized to :func:`patch_size`;
    ``.plan`` has the boxes, ``.batch(ids)`` gives ``(B, 3, H, W)`` model inputs on ``device``.

    With "weights" preprocessing (``model.spec.preprocess``) the windows are laid over each image's
    preprocessed frame (resize + centre crop, ``input_size`` square) and cut from it (sec. 3.3: patches
    of the images the model sees); their boxes are stored in source-image pixels."""
    check_images(images)
    paths = [img.path for img in images]
    sizes = [image_size(p) for p in paths]
    spec = model.spec
    if getattr(spec, "preprocess", "squash") == "weights":
        from neurflow_graph.models.resample import center_crop_box, frame_to_source, resized_shorter

        side = int(spec.input_size)
        framed = plan_patches(image_sizes=[(side, side)] * len(sizes), crop_fractions=params.crop_fractions,
                              stride_fraction=params.stride_fraction)
        boxes = np.empty_like(framed.boxes)
        for i, (w, h) in enumerate(sizes):
            rh, rw = resized_shorter(h, w, int(spec.resize_size))
            top, left = center_crop_box(rh, rw, side)
            rows = framed.image == i
            boxes[rows] = frame_to_source(framed.boxes[rows], source=(w, h), resized=(rw, rh), offset=(left, top))
        plan = PatchPlan(image=framed.image, boxes=boxes, frame_boxes=framed.boxes)
        return PatchSource(paths=paths, plan=plan, size=(side, side), preprocess=model.preprocess, device=device)
    plan = plan_patches(image_sizes=sizes, crop_fractions=params.crop_fractions,
                        stride_fraction=params.stride_fraction)
    return PatchSource(paths=paths, plan=plan, size=patch_size(model, sizes), preprocess=model.preprocess,
                       device=device)


def run_params(model: Any, params: ExtractParams) -> dict[str, Any]:
    """The run's recorded parameters: ``params.to_json()`` plus, for registry torchvision models, the
    preprocessing under ``"preprocess"`` (mode, sizes, mean/std, whose transforms)."""
    out = params.to_json()
    record = getattr(model.spec, "preprocess_record", None)
    extra = record() if callable(record) else None
    if extra is not None:
        out["preprocess"] = extra
    return out


# ---------------------------------------------------------------------------- one layer


def concepts(*, phi_layer: np.ndarray, r: np.ndarray, targets: Sequence[int], params: ExtractParams
             ) -> dict[int, dict[str, np.ndarray]]:
    """Concept of each target: ``topk`` (k,) patch ids, best first by ``phi_layer`` ``(P, C)``, and
    ``labels`` (k,) their semantic groups (Alg. 2) on the representative vectors ``r`` ``(P, d)``."""
    if phi_layer.ndim != 2 or r.ndim != 2 or phi_layer.shape[0] != r.shape[0]:
        raise ExtractionError(f"phi {phi_layer.shape} and representative vectors {r.shape} must be (patches, "
                              "channels) arrays over the same patches; pass two layers' phi from one scan")
    bad = [a for a in targets if not 0 <= a < phi_layer.shape[1]]
    if bad:
        raise ExtractionError(f"target neuron {bad[0]} is out of range: the layer has {phi_layer.shape[1]} "
                              "channels; pass channel indices of the layer phi_layer belongs to")
    out = {}
    for a in targets:
        topk = importance.top_k(phi_layer[:, a], params.k)
        labels = SemanticGrouper(max_groups=params.max_semantic_groups).fit(r[topk]).labels_
        out[a] = {"topk": topk, "labels": labels}
    return out


def _attribute_layer(*, traced: TracedModel, lower: str, upper: str, concepts: dict[int, dict[str, Any]],
                     source: PatchSource, params: ExtractParams, device: torch.device, timer: _Timer,
                     progress: bool, cached: torch.Tensor | None = None, budget: int | None = None
                     ) -> dict[int, dict[str, np.ndarray]]:
    """IG from ``lower`` to every target of ``upper``, reduced per target to
    ``abs_sum`` (C,), ``signed_sum`` (C,) and ``groups`` (n_groups, C) over its concept's patches.

    ``cached``: maps of ``lower`` for all patches kept by the scan. Otherwise the maps of the patches
    of the concepts (U) are computed once with the fx prefix and held when they fit ``budget`` bytes
    (half of it; the rest bounds the gradient tensors), else streamed per block of copies."""
    budget = int(budget if budget is not None else device_budget(device))
    slice_gm = layer_slice(traced=traced, lower=lower, upper=upper)
    prefix_gm = prefix(traced=traced, layer=lower)
    targets_of: dict[int, list[int]] = {}
    position: dict[tuple[int, int], int] = {}
    for a, c in concepts.items():
        for pos, p in enumerate(c["topk"].tolist()):
            targets_of.setdefault(p, []).append(a)
            position[(a, p)] = pos
    patches = sorted(targets_of, key=lambda p: (-len(targets_of[p]), p))

    def compute(ids: Sequence[int]) -> torch.Tensor:
        parts = [prefix_gm(source.batch(ids[i:i + params.max_batch]).to(device))
                 for i in range(0, len(ids), params.max_batch)]
        return torch.cat(parts)

    held: dict[str, Any] = {}

    def maps_of(ids: Sequence[int]) -> torch.Tensor:
        with timer.phase("maps"), torch.no_grad():
            if cached is not None:
                return cached[torch.as_tensor(list(ids), dtype=torch.long)].to(device)
            if "maps" in held:
                return held["maps"][torch.as_tensor([held["row"][p] for p in ids], dtype=torch.long, device=device)]
            return compute(ids)

    attributor = SliceAttributor(slice_gm, grad_budget=grad_budget(budget))
    first = maps_of(patches[:1])
    if cached is None and first[:1].numel() * first.element_size() * len(patches) <= budget // 2:
        with timer.phase("maps"), torch.no_grad():  # U fits: one prefix pass over it, kept for every block
            held["maps"], held["row"] = compute(patches), {p: i for i, p in enumerate(patches)}
        timer.totals["maps_held_layers"] = timer.totals.get("maps_held_layers", 0.0) + 1.0
    attributor.prepare(first)
    steps = attributor.steps_needed(params.ig_steps)
    slots = choose_slots(targets_per_patch=[len(targets_of[p]) for p in patches], costs=attributor.costs,
                         steps=steps, cap=attributor.slots_fit)
    copies: list[tuple[int, list[int]]] = []
    for p in patches:
        ts = targets_of[p]
        for i in range(0, len(ts), slots):
            chunk = ts[i:i + slots]
            copies.append((p, chunk + [-1] * (slots - len(chunk))))
    alphas, weights = quadrature(params.ig_method, params.ig_steps)
    acc: dict[int, dict[str, np.ndarray]] = {}
    per_block = attributor.copies_per_block(slots, params.max_batch)
    bar = tqdm(total=sum(len(c["topk"]) for c in concepts.values()), desc=f"IG {upper} <- {lower}", unit="pair",
               disable=not progress, leave=False)
    try:
        for start in range(0, len(copies), per_block):
            block = copies[start:start + per_block]
            ids = list(dict.fromkeys(p for p, _ in block))
            index = {p: i for i, p in enumerate(ids)}
            maps = maps_of(ids)
            with timer.phase("ig"):
                attr = attributor.attribute(
                    maps=maps, copy_patch=torch.tensor([index[p] for p, _ in block], device=device),
                    slot_targets=torch.tensor([t for _, t in block], dtype=torch.long, device=device),
                    alphas=alphas, weights=weights, max_rows=params.max_batch)
                values = attr.detach().to("cpu", torch.float64).numpy()
                n_pairs = 0
                for ci, (p, ts) in enumerate(block):
                    for si, a in enumerate(ts):
                        if a < 0:
                            continue
                        vec = values[ci, si]
                        if a not in acc:
                            n_groups = int(concepts[a]["labels"].max()) + 1
                            acc[a] = {"abs_sum": np.zeros_like(vec), "signed_sum": np.zeros_like(vec),
                                      "groups": np.zeros((n_groups, vec.shape[0]))}
                        j = int(concepts[a]["labels"][position[(a, p)]])
                        acc[a]["abs_sum"] += np.abs(vec)
                        acc[a]["signed_sum"] += vec
                        acc[a]["groups"][j] += vec
                        n_pairs += 1
            bar.update(n_pairs)
    finally:
        bar.close()
    return acc


def _process_layer(*, index: int, layers: Sequence[str], targets: Sequence[int], phi: dict[str, np.ndarray],
                   traced: TracedModel, source: PatchSource, params: ExtractParams, device: torch.device,
                   timer: _Timer, progress: bool, cached: dict[str, torch.Tensor] | None = None,
                   budget: int | None = None) -> dict[str, Any]:
    """Checkpointable results of layer ``index``: per target its concept, semantic labels, core
    neurons (best first) and the raw scores T(a, s, V_{a,j}) of those cores per group."""
    layer = layers[index]
    lower = layers[index + 1] if index + 1 < len(layers) else None
    with timer.phase("semantic_groups"):
        found = concepts(phi_layer=phi[layer], r=phi[lower if lower is not None else layer], targets=targets,
                         params=params)
    acc = {}
    if lower is not None and targets:
        acc = _attribute_layer(traced=traced, lower=lower, upper=layer, concepts=found, source=source,
                               params=params, device=device, timer=timer, progress=progress,
                               cached=(cached or {}).pop(lower, None), budget=budget)
    neurons = [layer_entry(neuron=a, concept=found[a], sums=acc[a] if lower is not None else None, lower=lower,
                           params=params) for a in targets]
    return {"layer": layer, "neurons": neurons}


def layer_entry(*, neuron: int, concept: dict[str, np.ndarray], sums: dict[str, np.ndarray] | None,
                lower: str | None, params: ExtractParams) -> dict[str, Any]:
    """Checkpointable result of one target ``neuron``: its concept (from :func:`concepts`) and, given
    ``lower`` (the layer below) and ``sums`` of its IG over the concept's patches -- ``abs_sum`` (C,),
    ``signed_sum`` (C,), ``groups`` (n_groups, C) -- its core neurons in ``lower`` (best first, ranked
    by ``params.rank_by``, tau of ``lower``) and their raw scores ``(n_groups, n_cores)``."""
    if (sums is None) != (lower is None):
        raise ExtractionError("layer_entry needs IG sums exactly when there is a layer below; pass both "
                              "sums and lower, or neither for the bottom layer")
    entry: dict[str, Any] = {"index": int(neuron), "topk": concept["topk"].tolist(),
                             "labels": concept["labels"].tolist(), "cores": [], "scores": []}
    if sums is not None and lower is not None:
        scores = importance.rank_scores(abs_sum=sums["abs_sum"], signed_sum=sums["signed_sum"],
                                        n_patches=len(concept["topk"]), rank_by=params.rank_by)
        cores = importance.core_neurons(scores, params.tau_for(lower))
        entry["cores"] = cores.tolist()
        entry["scores"] = sums["groups"][:, cores].tolist()
    return entry


# ---------------------------------------------------------------------------- assembly


def _assemble(*, layer_results: list[dict[str, Any]], layers: Sequence[str], phi: dict[str, np.ndarray],
              params: ExtractParams, timer: _Timer) -> tuple[list[Neuron], list[Edge], list[NeuronGroup], set[int]]:
    neurons: list[Neuron] = []
    edges: list[Edge] = []
    groups: list[NeuronGroup] = []
    used: set[int] = set()
    for i, result in enumerate(layer_results):
        layer = layers[i]
        r = phi[layers[i + 1]] if i + 1 < len(layers) else phi[layer]
        members: list[tuple[int, int, np.ndarray]] = []
        for entry in sorted(result["neurons"], key=lambda e: e["index"]):
            a = entry["index"]
            topk = np.asarray(entry["topk"], dtype=np.int64)
            labels = np.asarray(entry["labels"], dtype=np.int64)
            used.update(topk.tolist())
            sgs = []
            for j in range(int(labels.max()) + 1):
                ids = topk[labels == j]
                members.append((a, j, ids))
                sgs.append(SemanticGroup(id=j, patches=ids.tolist(),
                                         mean_activation=float(phi[layer][ids, a].astype(np.float64).mean())))
            neurons.append(Neuron(layer=layer, index=a, semantic_groups=sgs))
            if entry["cores"]:
                scores = np.asarray(entry["scores"], dtype=np.float64)
                weights = importance.edge_weights(scores)
                for j in range(scores.shape[0]):
                    for ci, child in sorted(enumerate(entry["cores"]), key=lambda t: t[1]):
                        edges.append(Edge(parent_layer=layer, parent_index=a, parent_group=j,
                                          child_layer=layers[i + 1], child_index=int(child),
                                          weight=float(weights[j, ci]), score=float(scores[j, ci])))
        if not members:
            continue
        with timer.phase("neuron_groups"):
            if i == 0:
                labels_ng = np.zeros(len(members), dtype=np.int64)
            else:
                vectors = group_vectors(r, [m[2] for m in members])
                labels_ng = NeuronGrouper(max_groups=params.max_neuron_groups).fit(vectors).labels_
        for g in range(int(labels_ng.max()) + 1):
            groups.append(NeuronGroup(layer=layer, id=g,
                                      members=[[m[0], m[1]] for m, lab in zip(members, labels_ng) if lab == g]))
    return neurons, edges, groups, used


def assemble_circuit(*, model: Any, images: Sequence[Any], class_index: int, params: ExtractParams,
                     layer_results: Sequence[dict[str, Any]], phi: dict[str, np.ndarray], plan: PatchPlan,
                     timer: _Timer | None = None) -> Circuit:
    """The :class:`Circuit` of ``layer_results`` (one :func:`layer_entry` list per layer, top down from
    the logit layer): neurons, edges (eq. 4), neuron groups, group edges and the patches used.
    ``phi``: ``{layer: (P, C)}`` of the scan of ``plan``'s patches. With ``timer``, its phases and
    total become the circuit's timing (none without)."""
    layers = list(model.spec.layers)
    got = [r.get("layer") for r in layer_results]
    if got != layers[:len(got)]:
        raise ExtractionError(f"layer results are for layers {got}, not a top-down prefix of {layers}; pass one "
                              "result per analysed layer, starting at the logit layer")
    neurons, edges, groups, used = _assemble(layer_results=list(layer_results), layers=layers, phi=phi,
                                             params=params, timer=timer or _Timer())
    group_edges = derive_group_edges(edges=edges, neuron_groups=groups)
    patches = [Patch(id=int(p), image=int(plan.image[p]), box=[int(v) for v in plan.boxes[p]]) for p in sorted(used)]
    image_refs = [ImageRef(id=i, path=str(img.path), sha256=str(img.sha256)) for i, img in enumerate(images)]
    timing = timer.timing() if timer is not None else {}
    return Circuit(
        model=ModelInfo(name=model.spec.name, layers=layers, weights_sha256=getattr(model, "weights_sha256", None)),
        class_=ClassInfo(index=int(class_index), name=str(model.class_name(class_index))),
        params=run_params(model, params), neurons=neurons, edges=edges, neuron_groups=groups, group_edges=group_edges,
        patches=patches, images=image_refs, timing=timing, software=software_versions(torch.device(model.device)),
        created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat())


def build_circuit(*, model: Any, images: Sequence[Any], class_index: int, params: ExtractParams,
                  run_dir: Any, resume: bool, progress: bool, memory_budget: int | None = None,
                  on_layer: Callable[[dict[str, Any]], None] | None = None, scan_layout: str = "eager") -> Circuit:
    """The whole extraction; inputs already validated by ``extract_circuit``. ``params.seed`` seeds
    torch, numpy and random for the run only: the caller's generator states are restored.

    ``memory_budget``: bytes for cached maps and gradient tensors (default: :func:`device_budget`).
    ``scan_layout``: ``fast`` or ``eager`` (``extraction.scan_layout``); the form the scan ran in is
    recorded as ``timing["scan_folded_pairs"]`` (conv+BatchNorm pairs folded) and
    ``timing["scan_channels_last"]`` (1 or 0), read back from the scan checkpoint on resume.
    Freed tensor memory stays in the process heap for the run (:func:`heap.retained_heap`).
    ``on_layer(info)`` is called after each layer with ``index``, ``layer``, ``targets``, ``next_targets``
    (the targets of the layer below), ``seconds`` and the peak memory so far (``peak_rss_mib``, ``peak_cuda_mib`` on CUDA)."""
    timer = _Timer()
    layers = list(model.spec.layers)
    module, device = model.module, torch.device(model.device)
    budget = int(memory_budget) if memory_budget is not None else device_budget(device)
    with retained_heap(), _seeded(params.seed, device), peak_memory(device) as peak:
        circuit = _build(model=model, images=images, class_index=class_index, params=params, run_dir=run_dir,
                         resume=resume, progress=progress, budget=budget, on_layer=on_layer, timer=timer,
                         layers=layers, module=module, device=device, peak=peak, scan_layout=scan_layout)
    if run_dir is not None:
        from neurflow_graph.viz.exemplars import write_exemplars

        write_exemplars(circuit=circuit, run_dir=run_dir)  # before circuit.json: a finished run has its mosaics
        circuit.save(run_dir)
    return circuit


def _build(*, model: Any, images: Sequence[Any], class_index: int, params: ExtractParams, run_dir: Any,
           resume: bool, progress: bool, budget: int, on_layer: Callable[[dict[str, Any]], None] | None,
           timer: _Timer, layers: list[str], module: torch.nn.Module, device: torch.device, peak: Any,
           scan_layout: str) -> Circuit:
    """The body of :func:`build_circuit` (seeded, memory watched by ``peak``)."""
    with timer.phase("patches"):
        source = patch_source(model=model, images=images, params=params, device=device)
    ckpt = Checkpoints(run_dir=run_dir, fingerprint=fingerprint(
        model_name=model.spec.name, layers=layers, weights=weights_id(model), size=source.size,
        mean=getattr(model.spec, "mean", None), std=getattr(model.spec, "std", None), class_index=class_index,
        image_hashes=[img.sha256 for img in images], params=run_params(model, params)), resume=resume)

    with frozen(module):
        with timer.phase("trace"):
            check_layer_order(module=module, layers=layers, input_size=source.size, device=device)
            traced = trace_layers(module=module, layers=layers)
        phi = ckpt.load_scan(layers)
        cached: dict[str, torch.Tensor] = {}
        # How the scan ran (read back from the checkpoint when resumed past it). The fast form's kept maps equal the
        # maps IG would recompute from the eager graph up to float rounding, which IG can amplify (a ReLU
        # kink between quadrature points: one ResNet50 weight 1.1e-4 from the eager scan's, identical core
        # sets); keeping none instead costs more than the fast scan saves (bench/RESULTS.md).
        scan_record: dict[str, int] = ckpt.load_scan_record() if phi is not None else {}
        if phi is None:
            with timer.phase("scan"):
                sample = source.batch(np.arange(1)).to(device) if scan_layout != "eager" else None
                form = scan_form(module=module, layers=layers, layout=scan_layout, traced=traced, sample=sample)
                scan_record = {"scan_folded_pairs": len(form.folded), "scan_channels_last": int(form.channels_last)}
                bar = tqdm(total=len(source.plan), desc="activation scan", unit="patch", disable=not progress,
                           leave=False)
                try:
                    phi, cached = scan_activations(module=form.module, prepare=form.prepare, layers=layers,
                                                   n_patches=len(source.plan),
                                                   batches=source.batch, device=device,
                                                   batch_size=params.max_batch, on_batch=bar.update,
                                                   map_layers=layers[1:],
                                                   map_budget=budget * SCAN_MAP_SHARE)
                finally:
                    bar.close()
                    del form  # the copy's weights are not needed past the scan
            ckpt.save_scan(phi, layers, record=scan_record)
        n_logits = phi[layers[0]].shape[1]
        if not 0 <= class_index < n_logits:
            raise InputError(f"class index {class_index} is out of range: the logit layer {layers[0]!r} has "
                             f"{n_logits} outputs (0..{n_logits - 1})")

        results: list[dict[str, Any]] = []
        targets: list[int] = [class_index]
        for i, layer in enumerate(layers):
            if not targets:
                break
            started = time.perf_counter()
            result = ckpt.load_layer(i)
            if result is None or [n["index"] for n in result["neurons"]] != list(targets):
                result = _process_layer(index=i, layers=layers, targets=targets, phi=phi, traced=traced,
                                        source=source, params=params, device=device, timer=timer,
                                        progress=progress, cached=cached, budget=budget)
                ckpt.save_layer(i, result)
            results.append(result)
            below = sorted({c for n in result["neurons"] for c in n["cores"]})
            if on_layer is not None:
                on_layer({"index": i, "layer": layer, "targets": len(targets), "next_targets": len(below),
                          "seconds": time.perf_counter() - started, **peak.read()})
            targets = below

    circuit = assemble_circuit(model=model, images=images, class_index=class_index, params=params,
                               layer_results=results, phi=phi, plan=source.plan, timer=timer)
    circuit.timing.update({**peak.read(), "memory_budget_mib": round(budget / 2**20, 1)})
    circuit.timing.update(scan_record)
    return circuit


def check_images(images: Sequence[Any]) -> None:
    if not images:
        raise ImageError("no images to explain the class with (D_c is empty); give images the model classifies "
                         "as this class")
    for img in images:
        if not hasattr(img, "path") or not hasattr(img, "sha256"):
            raise InputError(f"images must be ImageRecord-like (path, sha256), got {type(img).__name__}")
