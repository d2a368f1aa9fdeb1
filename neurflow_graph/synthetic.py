"""Synthetic but valid circuits, for store tests and benchmarks.

They obey every invariant of a real extraction (edge weights of one parent group sum to 1 in
absolute value, neuron groups partition a layer's semantic groups, group edges follow Section
3.5) while costing no model. Circuits made with the same ``pool_seed`` draw from one image
pool and favour low neuron indices, so different classes and models share neurons and
patches the way real circuits do.
"""

from __future__ import annotations

import hashlib

import numpy as np

from neurflow_graph.circuit import (
    Circuit, ClassInfo, Edge, ImageRef, ModelInfo, Neuron, NeuronGroup, Patch, SemanticGroup,
    derive_group_edges,
)

DEFAULT_LAYERS = ("fc", "block3", "block2", "block1")
DEFAULT_WIDTHS = (10, 64, 64, 32)


def _grid(size: int, fraction: float, stride_fraction: float = 0.5) -> list[list[int]]:
    """The extraction's sliding-window crops of one fraction (docs/circuit-format.md, patches)."""
    side = max(1, round(fraction * size))
    step = max(1, round(stride_fraction * side))
    starts = list(range(0, size - side + 1, step))
    if starts[-1] != size - side:
        starts.append(size - side)
    return [[x, y, x + side, y + side] for y in starts for x in starts]


def _image_pool(pool_seed: int, n_images: int, image_size: int,
                crop_fractions: tuple[float, ...] | None = None) -> tuple[list[ImageRef], list[Patch]]:
    images, patches = [], []
    half = image_size // 2
    step = half // 2
    boxes = [[0, 0, image_size, image_size]]
    boxes += [[x, y, x + half, y + half] for y in range(0, image_size - half + 1, step)
              for x in range(0, image_size - half + 1, step)]
    if crop_fractions is not None:
        boxes = [b for f in crop_fractions for b in _grid(image_size, f)]
    for i in range(n_images):
        sha = hashlib.sha256(f"synthetic-image/{pool_seed}/{i}".encode()).hexdigest()
        images.append(ImageRef(id=i, path=f"synthetic/{pool_seed}/img_{i:04d}.png", sha256=sha))
        for box in boxes:
            patches.append(Patch(id=len(patches), image=i, box=list(box)))
    return images, patches


def _popular_choice(rng: np.random.Generator, width: int, size: int) -> list[int]:
    p = 1.0 / np.arange(1, width + 1) ** 0.8
    return sorted(int(i) for i in rng.choice(width, size=min(size, width), replace=False, p=p / p.sum()))


def _split(rng: np.random.Generator, items: list[int], n_parts: int) -> list[list[int]]:
    """Randomly partition ``items`` into ``n_parts`` non-empty lists."""
    order = list(rng.permutation(items))
    cuts = sorted(rng.choice(np.arange(1, len(order)), size=n_parts - 1, replace=False)) if n_parts > 1 else []
    parts, start = [], 0
    for c in [*cuts, len(order)]:
        parts.append(sorted(int(x) for x in order[start:c]))
        start = c
    return parts


def synthetic_circuit(
    *,
    class_index: int,
    class_name: str,
    model_name: str = "synthnet",
    weights_sha256: str | None = None,
    seed: int = 0,
    pool_seed: int = 0,
    layers: tuple[str, ...] = DEFAULT_LAYERS,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    tau: int = 4,
    k: int = 12,
    max_semantic_groups: int = 3,
    max_neuron_groups: int = 4,
    n_images: int = 8,
    image_size: int = 64,
    created_at: str = "2026-01-01T00:00:00+00:00",
    crop_fractions: tuple[float, ...] | None = None,
) -> Circuit:
    """A random circuit for (model, class). ``widths[0]`` is the number of classes (logit units).
    ``crop_fractions``: crop each image like the extraction does (e.g. the paper's (1, 0.5, 0.25):
    59 patches per 224-pixel image); default: one full box and a 3x3 grid of half boxes."""
    if len(layers) != len(widths) or len(layers) < 2:
        raise ValueError("layers and widths must have the same length >= 2")
    if not 0 <= class_index < widths[0]:
        raise ValueError(f"class_index {class_index} outside the logit layer's width {widths[0]}")
    model_key = int.from_bytes(hashlib.sha256(model_name.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, class_index, model_key])
    images, patches = _image_pool(pool_seed, n_images, image_size, crop_fractions)
    patch_ids = [p.id for p in patches]
    k = min(k, len(patch_ids))

    def make_neuron(layer: str, index: int) -> Neuron:
        top = [int(x) for x in rng.choice(patch_ids, size=k, replace=False)]
        n_groups = int(rng.integers(1, max_semantic_groups + 1)) if k >= 3 else 1
        groups = [SemanticGroup(id=j, patches=part, mean_activation=float(rng.uniform(0.5, 5.0)))
                  for j, part in enumerate(_split(rng, top, n_groups))]
        return Neuron(layer=layer, index=index, semantic_groups=groups)

    neurons: list[Neuron] = [make_neuron(layers[0], class_index)]
    edges: list[Edge] = []
    targets = [neurons[0]]
    for depth in range(1, len(layers)):
        layer, width = layers[depth], widths[depth]
        children: set[int] = set()
        for a in targets:
            core = _popular_choice(rng, width, tau)
            children.update(core)
            for g in a.semantic_groups:
                raw = rng.normal(0.0, 1.0, size=len(core)) + 0.5
                norm = float(np.abs(raw).sum())
                for s, t in zip(core, raw):
                    edges.append(Edge(parent_layer=a.layer, parent_index=a.index, parent_group=g.id,
                                      child_layer=layer, child_index=s, weight=float(t) / norm, score=float(t)))
        targets = [make_neuron(layer, s) for s in sorted(children)]
        neurons.extend(targets)

    neuron_groups: list[NeuronGroup] = [NeuronGroup(
        layer=layers[0], id=0, members=[[class_index, g.id] for g in neurons[0].semantic_groups])]
    for layer in layers[1:]:
        members = [[n.index, g.id] for n in neurons if n.layer == layer for g in n.semantic_groups]
        n_parts = max(1, min(max_neuron_groups, len(members) - 1))
        for gid, part in enumerate(_split(rng, list(range(len(members))), n_parts)):
            neuron_groups.append(NeuronGroup(layer=layer, id=gid, members=[members[i] for i in part]))

    circuit = Circuit(
        model=ModelInfo(name=model_name, layers=list(layers), weights_sha256=weights_sha256),
        class_=ClassInfo(index=class_index, name=class_name),
        params={"k": k, "tau": tau, "synthetic": True, "seed": seed},
        neurons=neurons, edges=edges, neuron_groups=neuron_groups,
        group_edges=derive_group_edges(edges=edges, neuron_groups=neuron_groups),
        patches=patches, images=images, created_at=created_at,
        software={"neurflow_graph": "synthetic"},
    )
    circuit.validate()
    return circuit
