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

import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurflow_graph.errors import RunFormatError
from neurflow_graph.fileio import atomic_write

SCHEMA_VERSION = 2                 # what save() writes; load reads 1 and 2
READABLE_VERSIONS = (1, 2)
CIRCUIT_FILE = "circuit.json"
ARRAYS_PREFIX = "circuit-"         # version 2: RUN_DIR/circuit-<sha256[:16]>.npz holds the large arrays
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
    schema_version: int = field(default=SCHEMA_VERSION, compare=False)  # the version it was read from
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
        """The whole circuit inline as one JSON document: the version-1 layout (still read; small
        circuits, tests, exports). :meth:`save` writes version 2 (header + arrays)."""
        d = asdict(self)
        d.pop("legacy_annotations", None)
        d["class"] = d.pop("class_")
        d["schema_version"] = 1
        order = ["schema_version", "model", "class", "params", "timing", "software", "created_at",
                 "neurons", "edges", "neuron_groups", "group_edges", "patches", "images"]
        return {k: d[k] for k in order}

    def header(self) -> dict[str, Any]:
        """The version-2 circuit.json without its ``arrays`` reference: everything but the large arrays."""
        return {"schema_version": 2, "model": asdict(self.model), "class": asdict(self.class_),
                "params": self.params, "timing": self.timing, "software": self.software,
                "created_at": self.created_at, "images": [asdict(i) for i in self.images],
                "counts": {"neurons": len(self.neurons), "edges": len(self.edges),
                           "neuron_groups": len(self.neuron_groups), "group_edges": len(self.group_edges),
                           "patches": len(self.patches)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Circuit":
        """A circuit from the version-1 (inline) document; validated."""
        if not isinstance(d, dict):
            raise RunFormatError("circuit.json must hold a JSON object")
        version = d.get("schema_version")
        if version != 1:
            raise RunFormatError(
                f"circuit.json has schema_version {version!r}; this neurflow-graph reads "
                f"{' and '.join(map(str, READABLE_VERSIONS))}" + (" (a version-2 file needs its run directory: "
                                                                  "use load_circuit)" if version == 2 else "")
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
        """Write version 2 into ``run_dir``: the arrays to ``circuit-<sha>.npz``, then ``circuit.json``
        naming them (each atomically, temp file + rename), then drop older array files. A crash at any
        point leaves the previous complete pair or none; return the circuit.json path."""
        self.validate()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **circuit_arrays(self))
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        name = f"{ARRAYS_PREFIX}{sha[:16]}.npz"
        atomic_write(run_dir / name, lambda f: f.write(data))
        header = {**self.header(), "arrays": {"file": name, "sha256": sha, "format": "npz"}}
        target = run_dir / CIRCUIT_FILE
        atomic_write(target, lambda f: json.dump(header, f, indent=1), mode="w")
        for old in run_dir.glob(f"{ARRAYS_PREFIX}*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
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
    if isinstance(data, dict) and data.get("schema_version") == 2:
        return _load_v2(path, data)
    c = Circuit.from_dict(data)
    c.schema_version = 1
    return c


# ---- version 2: large arrays in an .npz beside circuit.json ------------------------------------------

def _ints(rows: Any, width: int | None = None) -> np.ndarray:
    a = np.asarray(rows, dtype=np.int64)
    if width is not None:
        a = a.reshape(-1, width)
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        return a
    return a.astype(np.int32)


def circuit_arrays(c: Circuit) -> dict[str, np.ndarray]:
    """The circuit's results as flat arrays (docs/circuit-format.md, version 2); layers by position."""
    pos = {name: i for i, name in enumerate(c.model.layers)}
    sgs = [(i, g) for i, n in enumerate(c.neurons) for g in n.semantic_groups]
    sizes = [len(g.patches) for _, g in sgs]
    members = [m for g in c.neuron_groups for m in g.members]
    return {
        "neurons": _ints([[pos[n.layer], n.index] for n in c.neurons], 2),
        "sg": _ints([[i, g.id] for i, g in sgs], 2),
        "sg_mean_activation": np.asarray([g.mean_activation for _, g in sgs], dtype=np.float64),
        "sg_patch_offsets": np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64),
        "sg_patches": _ints([p for _, g in sgs for p in g.patches]),
        "edges": _ints([[pos[e.parent_layer], e.parent_index, e.parent_group, pos[e.child_layer], e.child_index]
                        for e in c.edges], 5),
        "edge_weight": np.asarray([e.weight for e in c.edges], dtype=np.float64),
        "edge_score": np.asarray([e.score for e in c.edges], dtype=np.float64),
        "neuron_groups": _ints([[pos[g.layer], g.id] for g in c.neuron_groups], 2),
        "ng_member_offsets": np.concatenate([[0], np.cumsum([len(g.members) for g in c.neuron_groups],
                                                            dtype=np.int64)]).astype(np.int64),
        "ng_members": _ints(members, 2),
        "group_edges": _ints([[pos[e.parent_layer], e.parent_group, pos[e.child_layer], e.child_group]
                              for e in c.group_edges], 4),
        "group_edge_weight": np.asarray([e.weight for e in c.group_edges], dtype=np.float64),
        "patches": _ints([[p.id, p.image, *p.box] for p in c.patches], 6),
    }


_ARRAY_SHAPES = {"neurons": 2, "sg": 2, "sg_mean_activation": 0, "sg_patch_offsets": 0, "sg_patches": 0,
                 "edges": 5, "edge_weight": 0, "edge_score": 0, "neuron_groups": 2, "ng_member_offsets": 0,
                 "ng_members": 2, "group_edges": 4, "group_edge_weight": 0, "patches": 6}


def _load_v2(path: Path, d: dict[str, Any]) -> Circuit:
    ref = d.get("arrays")
    if not isinstance(ref, dict) or not isinstance(ref.get("file"), str) or "/" in ref["file"]:
        raise RunFormatError(f"{path}: schema_version 2 needs an 'arrays' object naming the .npz file beside it")
    npz = path.parent / ref["file"]
    try:
        data = npz.read_bytes()
    except FileNotFoundError:
        raise RunFormatError(f"{npz} is missing (circuit.json names it): copy the whole run directory, "
                             "or re-run extract") from None
    except OSError as e:
        raise RunFormatError(f"cannot read {npz}: {e.strerror}") from e
    if ref.get("sha256") and hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise RunFormatError(f"{npz} does not match the sha256 circuit.json records: the run directory is "
                             "damaged or mixed; re-run extract")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in _ARRAY_SHAPES}
    except KeyError as e:
        raise RunFormatError(f"{npz} lacks the array {e.args[0]!r}") from e
    except (ValueError, OSError) as e:
        raise RunFormatError(f"{npz} is not a readable .npz ({e}); re-run extract") from e
    for k, width in _ARRAY_SHAPES.items():
        ok = a[k].ndim == 1 if width == 0 else (a[k].ndim == 2 and a[k].shape[1] == width)
        if not ok and not (a[k].size == 0 and width):
            raise RunFormatError(f"{npz}: array {k!r} has shape {a[k].shape}")
    try:
        layers = list(d["model"]["layers"])
        c = Circuit(model=ModelInfo(**d["model"]), class_=ClassInfo(**d["class"]), params=dict(d["params"]),
                    timing=dict(d.get("timing", {})), software=dict(d.get("software", {})),
                    created_at=d.get("created_at"), images=[ImageRef(**i) for i in d["images"]],
                    neurons=[], edges=[], neuron_groups=[], group_edges=[], patches=[], schema_version=2)
        offsets, flat, act = a["sg_patch_offsets"].tolist(), a["sg_patches"].tolist(), a["sg_mean_activation"].tolist()
        if len(offsets) != len(a["sg"]) + 1 or offsets[-1] != len(flat) or len(act) != len(a["sg"]):
            raise RunFormatError(f"{npz}: semantic-group arrays disagree in length")
        neurons = [Neuron(layer=layers[lp], index=idx, semantic_groups=[]) for lp, idx in a["neurons"].tolist()]
        for s, (row, j) in enumerate(a["sg"].tolist()):
            neurons[row].semantic_groups.append(SemanticGroup(id=j, patches=flat[offsets[s]:offsets[s + 1]],
                                                              mean_activation=act[s]))
        c.neurons = neurons
        if not len(a["edges"]) == len(a["edge_weight"]) == len(a["edge_score"]):
            raise RunFormatError(f"{npz}: edge arrays disagree in length")
        c.edges = [Edge(parent_layer=layers[pl], parent_index=pi, parent_group=pg, child_layer=layers[cl],
                        child_index=ci, weight=w, score=sc)
                   for (pl, pi, pg, cl, ci), w, sc in zip(a["edges"].tolist(), a["edge_weight"].tolist(),
                                                          a["edge_score"].tolist())]
        mo, mem = a["ng_member_offsets"].tolist(), a["ng_members"].tolist()
        if len(mo) != len(a["neuron_groups"]) + 1 or mo[-1] != len(mem):
            raise RunFormatError(f"{npz}: neuron-group arrays disagree in length")
        c.neuron_groups = [NeuronGroup(layer=layers[lp], id=gid, members=mem[mo[i]:mo[i + 1]])
                           for i, (lp, gid) in enumerate(a["neuron_groups"].tolist())]
        if len(a["group_edges"]) != len(a["group_edge_weight"]):
            raise RunFormatError(f"{npz}: group-edge arrays disagree in length")
        c.group_edges = [GroupEdge(parent_layer=layers[pl], parent_group=pg, child_layer=layers[cl], child_group=cg,
                                   weight=w)
                         for (pl, pg, cl, cg), w in zip(a["group_edges"].tolist(), a["group_edge_weight"].tolist())]
        c.patches = [Patch(id=pid, image=im, box=box) for pid, im, *box in a["patches"].tolist()]
    except KeyError as e:
        raise RunFormatError(f"circuit.json is missing the field {e.args[0]!r}") from e
    except IndexError as e:
        raise RunFormatError(f"{npz} names a layer or row that does not exist ({e}); re-run extract") from e
    except TypeError as e:
        raise RunFormatError(f"circuit.json has a malformed entry: {e}") from e
    c.validate()
    return c


def derive_group_edges(*, edges: list[Edge], neuron_groups: list[NeuronGroup]) -> list[GroupEdge]:
    """Group-to-group weights of Section 3.5: W(G_child, G_parent) = Σ w(p, q, V_{p, j_p}).

    The sum runs over parent members (p, j_p) of G_parent and over the *distinct* child neurons
    q that have at least one semantic group in G_child, taking the neuron edge q -> (p, j_p)
    where it exists. Only pairs joined by at least one edge are returned, ordered by
    (parent_layer, parent_group, child_layer, child_group) as they first appear.

    Cost: one pass over the edges, each added to every child group holding its child neuron
    (O(E x groups per neuron)), not over all group pairs and members.
    """
    parent_of: dict[tuple[str, int, int], list[int]] = {}      # (layer, p, j) -> parent group ids
    child_groups: dict[tuple[str, int], list[int]] = {}        # (layer, q) -> groups holding q (distinct)
    for g in neuron_groups:
        for p, j in g.members:
            parent_of.setdefault((g.layer, p, j), []).append(g.id)
        for q in dict.fromkeys(q for q, _ in g.members):
            child_groups.setdefault((g.layer, q), []).append(g.id)
    weight: dict[tuple[str, int, int, str, int], float] = {}
    for e in edges:  # the last edge listed wins if one is repeated, as a lookup table would
        weight[(e.parent_layer, e.parent_index, e.parent_group, e.child_layer, e.child_index)] = e.weight
    total: dict[tuple[str, int, str, int], float] = {}
    for (pl, p, j, cl, q), w in weight.items():
        for gp in parent_of.get((pl, p, j), ()):
            for gc in child_groups.get((cl, q), ()):
                k = (pl, gp, cl, gc)
                total[k] = total.get(k, 0.0) + w
    child_layer_of: dict[str, str] = {}
    for e in edges:
        child_layer_of.setdefault(e.parent_layer, e.child_layer)
    by_layer: dict[str, list[NeuronGroup]] = {}
    for g in neuron_groups:
        by_layer.setdefault(g.layer, []).append(g)
    out: list[GroupEdge] = []
    for parent_layer, child_layer in child_layer_of.items():
        for gp in by_layer.get(parent_layer, []):
            for gc in by_layer.get(child_layer, []):
                w = total.get((parent_layer, gp.id, child_layer, gc.id))
                if w is not None:
                    out.append(GroupEdge(parent_layer=parent_layer, parent_group=gp.id,
                                         child_layer=child_layer, child_group=gc.id, weight=w))
    return out
