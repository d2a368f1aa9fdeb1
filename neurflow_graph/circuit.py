"""The result of one extraction: plain data, independent of any store.

A :class:`Circuit` is what ``neurflow-graph extract`` writes to ``RUN_DIR/circuit.json``
and what ``neurflow-graph ingest`` reads. The format is documented in
``docs/circuit-format.md`` and described by ``neurflow_graph/schemas/circuit.schema.json``.

Conventions
-----------
* Layers are named by their ``named_modules()`` path; ``model.layers`` is ordered
  top (logit layer) -> bottom (leaf layer).
* The root neuron is ``(model.layers[0], class.index)``.
* Edges point child -> parent semantically but are stored with both ends named:
  the child neuron ``(child_layer, child_index)`` contributes ``weight`` to semantic
  group ``parent_group`` of the parent ``(parent_layer, parent_index)``.
* ``weight`` is eq. 4 of the paper (signed, |weights| of one (parent, group) sum to 1);
  ``score`` is the raw integrated-gradients importance T(a, s, V_{a,j}) it came from.
* Patch boxes are ``[x0, y0, x1, y1]`` in the source image's own pixels (x1/y1 exclusive).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neurflow_graph.errors import RunFormatError
from neurflow_graph.fileio import atomic_write

SCHEMA_VERSION = 1
CIRCUIT_FILE = "circuit.json"
# per-group fields version 1 allowed inline; now annotations (read, never written)
LEGACY_GROUP_ANNOTATIONS = ("concept", "purity", "label", "caption")


@dataclass
class ModelInfo:
    name: str
    layers: list[str]
    weights_sha256: str | None = None


@dataclass
class ClassInfo:
    index: int
    name: str


@dataclass
class SemanticGroup:
    id: int
    patches: list[int]
    mean_activation: float


@dataclass
class Neuron:
    layer: str
    index: int
    semantic_groups: list[SemanticGroup]


@dataclass
class Edge:
    parent_layer: str
    parent_index: int
    parent_group: int
    child_layer: str
    child_index: int
    weight: float
    score: float


@dataclass
class NeuronGroup:
    layer: str
    id: int
    members: list[list[int]]  # [[neuron_index, semantic_group_id], ...]
    # Labels, concepts, purity... are annotations (neurflow_graph/annotations.py), not results.


@dataclass
class GroupEdge:
    parent_layer: str
    parent_group: int
    child_layer: str
    child_group: int
    weight: float


@dataclass
class Patch:
    id: int
    image: int
    box: list[int]  # [x0, y0, x1, y1] in source-image pixels


@dataclass
class ImageRef:
    id: int
    path: str
    sha256: str


@dataclass
class Circuit:
    model: ModelInfo
    class_: ClassInfo
    params: dict[str, Any]
    neurons: list[Neuron]
    edges: list[Edge]
    neuron_groups: list[NeuronGroup]
    group_edges: list[GroupEdge]
    patches: list[Patch]
    images: list[ImageRef]
    timing: dict[str, float] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None
    schema_version: int = SCHEMA_VERSION
    # version-1 files carried per-group annotations inline; they are read into here as
    # (layer, group id, key, value) and become annotations at ingestion (never part of the results)
    legacy_annotations: list[tuple[str, int, str, Any]] = field(default_factory=list, compare=False, repr=False)

    # ---- convenience views -------------------------------------------------
    @property
    def root(self) -> tuple[str, int]:
        return (self.model.layers[0], self.class_.index)

    def neuron(self, layer: str, index: int) -> Neuron:
        for n in self.neurons:
            if n.layer == layer and n.index == index:
                return n
        raise KeyError((layer, index))

    def layer_neurons(self, layer: str) -> list[Neuron]:
        return [n for n in self.neurons if n.layer == layer]

    # ---- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("legacy_annotations", None)
        d["class"] = d.pop("class_")
        order = ["schema_version", "model", "class", "params", "timing", "software", "created_at",
                 "neurons", "edges", "neuron_groups", "group_edges", "patches", "images"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Circuit":
        if not isinstance(d, dict):
            raise RunFormatError("circuit.json must hold a JSON object")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RunFormatError(
                f"circuit.json has schema_version {version!r}; this neurflow-graph reads {SCHEMA_VERSION}"
            )
        try:
            c = cls(
                model=ModelInfo(**d["model"]),
                class_=ClassInfo(**d["class"]),
                params=dict(d["params"]),
                timing=dict(d.get("timing", {})),
                software=dict(d.get("software", {})),
                created_at=d.get("created_at"),
                neurons=[Neuron(layer=n["layer"], index=n["index"],
                                semantic_groups=[SemanticGroup(**g) for g in n["semantic_groups"]])
                         for n in d["neurons"]],
                edges=[Edge(**e) for e in d["edges"]],
                neuron_groups=[NeuronGroup(layer=g["layer"], id=g["id"], members=g["members"]) for g in d["neuron_groups"]],
                group_edges=[GroupEdge(**e) for e in d["group_edges"]],
                patches=[Patch(**p) for p in d["patches"]],
                images=[ImageRef(**i) for i in d["images"]],
            )
        except KeyError as e:
            raise RunFormatError(f"circuit.json is missing the field {e.args[0]!r}") from e
        except TypeError as e:
            raise RunFormatError(f"circuit.json has a malformed entry: {e}") from e
        c.legacy_annotations = [(g["layer"], g["id"], k, g[k]) for g in d["neuron_groups"]
                                for k in LEGACY_GROUP_ANNOTATIONS if g.get(k) is not None]
        c.validate()
        return c

    def validate(self) -> None:
        """Check referential integrity and the paper's invariants; raise RunFormatError."""
        layers = self.model.layers
        if not layers:
            raise RunFormatError("circuit.json: model.layers is empty")
        self._check_names()
        self._check_finite()
        layer_pos = {name: i for i, name in enumerate(layers)}
        patch_ids = {p.id for p in self.patches}
        image_ids = {i.id for i in self.images}
        for p in self.patches:
            if p.image not in image_ids:
                raise RunFormatError(f"circuit.json: patch {p.id} names unknown image {p.image}")
            if len(p.box) != 4 or p.box[0] >= p.box[2] or p.box[1] >= p.box[3]:
                raise RunFormatError(f"circuit.json: patch {p.id} has a bad box {p.box}")
        groups: set[tuple[str, int, int]] = set()
        for n in self.neurons:
            if n.layer not in layer_pos:
                raise RunFormatError(f"circuit.json: neuron on unknown layer {n.layer!r}")
            for g in n.semantic_groups:
                groups.add((n.layer, n.index, g.id))
                bad = [pid for pid in g.patches if pid not in patch_ids]
                if bad:
                    raise RunFormatError(f"circuit.json: semantic group {n.layer}/{n.index}/{g.id} names unknown patches {bad[:3]}")
        neurons = {(n.layer, n.index) for n in self.neurons}
        if self.root not in neurons:
            raise RunFormatError(f"circuit.json: the root neuron {self.root} is missing")
        for e in self.edges:
            if (e.parent_layer, e.parent_index, e.parent_group) not in groups:
                raise RunFormatError(f"circuit.json: edge parent {e.parent_layer}/{e.parent_index}/{e.parent_group} is not a semantic group")
            if (e.child_layer, e.child_index) not in neurons:
                raise RunFormatError(f"circuit.json: edge child {e.child_layer}/{e.child_index} is not a neuron")
            if layer_pos.get(e.child_layer) != layer_pos[e.parent_layer] + 1:
                raise RunFormatError(f"circuit.json: edge {e.parent_layer}->{e.child_layer} skips layers")
        ng_keys: set[tuple[str, int]] = set()
        for g in self.neuron_groups:
            ng_keys.add((g.layer, g.id))
            for idx, j in g.members:
                if (g.layer, idx, j) not in groups:
                    raise RunFormatError(f"circuit.json: neuron group {g.layer}/{g.id} names unknown member {[idx, j]}")
        for e in self.group_edges:
            if (e.parent_layer, e.parent_group) not in ng_keys or (e.child_layer, e.child_group) not in ng_keys:
                raise RunFormatError(f"circuit.json: group edge {e} names an unknown neuron group")

    def _check_names(self) -> None:
        named = [("model.name", self.model.name), ("class.name", self.class_.name)]
        named += [("layer name", name) for name in self.model.layers]
        named += [(f"images[{i.id}].sha256", i.sha256) for i in self.images]
        for what, text in named:
            if not isinstance(text, str) or not text:
                raise RunFormatError(f"circuit.json: {what} must be a non-empty string, got {text!r}")

    def _check_finite(self) -> None:
        """NaN/infinite numbers are not JSON and no store can hold them consistently."""
        bad = next((f"edge {e.child_layer}/{e.child_index} -> {e.parent_layer}/{e.parent_index}/{e.parent_group}"
                    for e in self.edges if not (math.isfinite(e.weight) and math.isfinite(e.score))), None)
        bad = bad or next((f"group edge {e.child_layer}/{e.child_group} -> {e.parent_layer}/{e.parent_group}"
                           for e in self.group_edges if not math.isfinite(e.weight)), None)
        bad = bad or next((f"semantic group {n.layer}/{n.index}/{g.id}" for n in self.neurons
                           for g in n.semantic_groups if not math.isfinite(g.mean_activation)), None)
        if bad:
            raise RunFormatError(f"circuit.json: {bad} has a NaN or infinite number; re-run the extraction")

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``run_dir/circuit.json`` atomically (temp file + rename); return its path."""
        self.validate()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        target = run_dir / CIRCUIT_FILE
        atomic_write(target, lambda f: json.dump(self.to_dict(), f, indent=1), mode="w")
        return target


def load_circuit(run_dir: str | os.PathLike[str]) -> Circuit:
    """Read and validate ``run_dir/circuit.json`` (or a path to the file itself)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / CIRCUIT_FILE
    if not path.exists():
        raise RunFormatError(f"{path} does not exist: is this a finished run directory? (run `neurflow-graph extract` first)")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise RunFormatError(f"{path} is not valid JSON (line {e.lineno}): the run may be incomplete; re-run extract") from e
    except OSError as e:
        raise RunFormatError(f"cannot read {path}: {e.strerror}") from e
    return Circuit.from_dict(data)


def derive_group_edges(*, edges: list[Edge], neuron_groups: list[NeuronGroup]) -> list[GroupEdge]:
    """Group-to-group weights of Section 3.5: W(G_child, G_parent) = Σ w(p, q, V_{p, j_p}).

    The sum runs over parent members (p, j_p) of G_parent and over the *distinct* child neurons
    q that have at least one semantic group in G_child, taking the neuron edge q -> (p, j_p)
    where it exists. Only pairs joined by at least one edge are returned, ordered by
    (parent_layer, parent_group, child_layer, child_group) as they first appear.
    """
    weight: dict[tuple[str, int, int, str, int], float] = {}
    for e in edges:
        weight[(e.parent_layer, e.parent_index, e.parent_group, e.child_layer, e.child_index)] = e.weight
    child_layer_of = {}
    for e in edges:
        child_layer_of.setdefault(e.parent_layer, e.child_layer)
    by_layer: dict[str, list[NeuronGroup]] = {}
    for g in neuron_groups:
        by_layer.setdefault(g.layer, []).append(g)
    out: list[GroupEdge] = []
    for parent_layer, child_layer in child_layer_of.items():
        for gp in by_layer.get(parent_layer, []):
            for gc in by_layer.get(child_layer, []):
                children = sorted({q for q, _ in gc.members})
                total, linked = 0.0, False
                for p, j in gp.members:
                    for q in children:
                        w = weight.get((parent_layer, p, j, child_layer, q))
                        if w is not None:
                            total += w
                            linked = True
                if linked:
                    out.append(GroupEdge(parent_layer=parent_layer, parent_group=gp.id,
                                         child_layer=child_layer, child_group=gc.id, weight=total))
    return out
