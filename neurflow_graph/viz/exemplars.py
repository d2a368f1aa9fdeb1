"""Exemplar mosaics: for every semantic group and neuron group, its best patches in one picture.

A mosaic is a grid of up to :data:`MAX_PATCHES` thumbnails (``thumb`` x ``thumb`` pixels, RGB),
each a patch cropped from its source image by the stored box. Mosaics are PNG files named by
their content (``<sha256[:16]>.png``) in ``RUN_DIR/exemplars/``, listed by
``RUN_DIR/exemplars/manifest.json`` (format ``neurflow-exemplars``, version 1,
docs/circuit-format.md "Exemplar mosaics").

Compute (:func:`plan_exemplars`, :func:`render_mosaic`, :func:`split_mosaic`) is kept apart from
file I/O (:func:`write_exemplars`, :func:`read_manifest`, :func:`group_exemplars`, ...).

Patch order: a semantic group's patches as the circuit stores them (highest activation first);
a neuron group's patches round-robin over its member semantic groups (members in stored order),
so a group of several neurons shows each of them, first patches first; a patch shared by two
members appears once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neurflow_graph.circuit import Circuit
from neurflow_graph.errors import ImageError, RunFormatError
from neurflow_graph.fileio import atomic_write

EXEMPLAR_DIR = "exemplars"
MANIFEST_FILE = "manifest.json"
FORMAT = "neurflow-exemplars"
VERSION = 1
THUMB = 64
GAP = 2
MAX_PATCHES = 16
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class GroupPlan:
    """The patches of one group's mosaic: ``kind`` is ``neuron_group`` (``gid``) or
    ``semantic_group`` (``neuron``, ``j``)."""

    kind: str
    layer: str
    patches: tuple[int, ...]
    gid: int | None = None
    neuron: int | None = None
    j: int | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.layer, self.gid if self.kind == "neuron_group" else (self.neuron, self.j))


# ---------------------------------------------------------------------------- compute

def plan_exemplars(circuit: Circuit, *, max_patches: int = MAX_PATCHES) -> list[GroupPlan]:
    """One :class:`GroupPlan` per semantic group, then one per neuron group (circuit order)."""
    if max_patches < 1:
        raise ValueError(f"max_patches must be at least 1, got {max_patches}")
    sg_patches: dict[tuple[str, int, int], list[int]] = {}
    plans: list[GroupPlan] = []
    for n in circuit.neurons:
        for g in n.semantic_groups:
            sg_patches[(n.layer, n.index, g.id)] = list(g.patches)
            plans.append(GroupPlan(kind="semantic_group", layer=n.layer, neuron=n.index, j=g.id,
                                   patches=tuple(g.patches[:max_patches])))
    for ng in circuit.neuron_groups:
        lists = [sg_patches.get((ng.layer, idx, j), []) for idx, j in ng.members]
        chosen: list[int] = []
        seen: set[int] = set()
        for rank in range(max((len(x) for x in lists), default=0)):
            for x in lists:
                if rank < len(x) and x[rank] not in seen and len(chosen) < max_patches:
                    seen.add(x[rank])
                    chosen.append(x[rank])
        plans.append(GroupPlan(kind="neuron_group", layer=ng.layer, gid=ng.id, patches=tuple(chosen)))
    return plans


def grid_columns(n: int) -> int:
    """Columns of a mosaic of ``n`` tiles: ceil(sqrt(n)) (16 -> 4x4, 5 -> 3x2)."""
    return max(1, math.ceil(math.sqrt(n)))


def thumbnail(image: Image.Image, box: Sequence[int], *, thumb: int = THUMB) -> Image.Image:
    """The patch ``box`` = [x0, y0, x1, y1] of ``image``, resized to ``thumb`` x ``thumb`` RGB."""
    return image.crop(tuple(int(v) for v in box)).convert("RGB").resize((thumb, thumb), Image.Resampling.BILINEAR)


def render_mosaic(tiles: Sequence[Image.Image], *, thumb: int = THUMB, gap: int = GAP) -> Image.Image:
    """Tiles (each ``thumb`` x ``thumb``) row by row in a :func:`grid_columns` grid, ``gap`` white pixels apart."""
    if not tiles:
        raise ValueError("a mosaic needs at least one tile")
    cols = grid_columns(len(tiles))
    rows = math.ceil(len(tiles) / cols)
    out = Image.new("RGB", (cols * thumb + (cols - 1) * gap, rows * thumb + (rows - 1) * gap), BACKGROUND)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out.paste(tile, (c * (thumb + gap), r * (thumb + gap)))
    return out


def split_mosaic(mosaic: Image.Image, n: int, *, thumb: int = THUMB, gap: int = GAP) -> list[Image.Image]:
    """The ``n`` tiles of a :func:`render_mosaic` picture, in order."""
    cols = grid_columns(n)
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = c * (thumb + gap), r * (thumb + gap)
        out.append(mosaic.crop((x, y, x + thumb, y + thumb)))
    return out


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


KINDS = ("semantic_group", "neuron_group")


def build_mosaics(circuit: Circuit, *, load_image: Callable[[int], Image.Image], thumb: int = THUMB,
                  max_patches: int = MAX_PATCHES, kinds: Sequence[str] = KINDS) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Manifest (a dict, see the module doc) and ``{file name: PNG bytes}`` for every group of
    ``circuit`` of the ``kinds`` given; ``load_image(image_id)`` gives a source image. Groups without
    patches are left out."""
    boxes = {p.id: (p.image, p.box) for p in circuit.patches}
    tile_cache: dict[int, Image.Image] = {}

    def tile(pid: int) -> Image.Image:
        if pid not in tile_cache:
            image_id, box = boxes[pid]
            tile_cache[pid] = thumbnail(load_image(image_id), box, thumb=thumb)
        return tile_cache[pid]

    groups: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for plan in plan_exemplars(circuit, max_patches=max_patches):
        if not plan.patches or plan.kind not in kinds:
            continue
        data = png_bytes(render_mosaic([tile(p) for p in plan.patches], thumb=thumb))
        sha = hashlib.sha256(data).hexdigest()
        name = f"{sha[:16]}.png"
        files[name] = data
        entry: dict[str, Any] = {"kind": plan.kind, "layer": plan.layer}
        if plan.kind == "neuron_group":
            entry["gid"] = plan.gid
        else:
            entry["neuron"], entry["j"] = plan.neuron, plan.j
        entry.update({"file": name, "sha256": sha, "patches": list(plan.patches), "cols": grid_columns(len(plan.patches))})
        groups.append(entry)
    manifest = {"format": FORMAT, "version": VERSION, "thumb": thumb, "gap": GAP, "groups": groups}
    return manifest, files


# ---------------------------------------------------------------------------- file I/O

def _image_loader(circuit: Circuit, run_dir: Path) -> Callable[[int], Image.Image]:
    from neurflow_graph.datasets.images import load_rgb

    refs = {i.id: i for i in circuit.images}
    cache: dict[int, Image.Image] = {}

    def load(image_id: int) -> Image.Image:
        if image_id not in cache:
            ref = refs[image_id]
            path = Path(ref.path)
            if not path.is_absolute() and not path.exists() and (run_dir / path).exists():
                path = run_dir / path
            if not path.exists():
                raise ImageError(f"source image {ref.path} of the run is missing: exemplars are cropped from the "
                                 "run's images; put them back at that path (or run from the directory the "
                                 "extraction ran in) and rebuild with `neurflow-graph exemplars RUN_DIR`")
            cache.clear()  # patches are visited image by image mostly; keep memory at one image
            cache[image_id] = load_rgb(path)
        return cache[image_id]

    return load


def write_exemplars(*, circuit: Circuit, run_dir: str | os.PathLike[str], thumb: int = THUMB,
                    max_patches: int = MAX_PATCHES, kinds: Sequence[str] = KINDS) -> Path:
    """Write every group's mosaic (of ``kinds``: both by default) and the manifest to
    ``run_dir/exemplars/`` (mosaics first, the manifest last, each atomically); remove mosaics the new
    manifest no longer lists. Returns the manifest's path. ImageError when a source image is missing."""
    bad = sorted(set(kinds) - set(KINDS))
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    run_dir = Path(run_dir)
    out = run_dir / EXEMPLAR_DIR
    manifest, files = build_mosaics(circuit, load_image=_image_loader(circuit, run_dir), thumb=thumb,
                                    max_patches=max_patches, kinds=kinds)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = out / name
        if not (target.exists() and target.read_bytes() == data):  # content-addressed: same name, same bytes
            atomic_write(target, lambda f, data=data: f.write(data))
    path = out / MANIFEST_FILE
    atomic_write(path, lambda f: json.dump(manifest, f, indent=1), mode="w")
    for p in out.glob("*.png"):
        if p.name not in files and len(p.stem) == 16 and all(c in "0123456789abcdef" for c in p.stem):
            p.unlink()
    return path


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run_dir/exemplars/manifest.json``, checked; RunFormatError when absent or of another format."""
    path = Path(run_dir) / EXEMPLAR_DIR / MANIFEST_FILE
    if not path.exists():
        raise RunFormatError(f"{path} does not exist: build the exemplars with `neurflow-graph exemplars {run_dir}`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunFormatError(f"{path} is unreadable ({e}); rebuild it with `neurflow-graph exemplars {run_dir}`") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise RunFormatError(f"{path} is not a {FORMAT} version {VERSION} manifest; rebuild it with "
                             f"`neurflow-graph exemplars {run_dir}`")
    return doc


def _entry(doc: dict[str, Any], run_dir: Any, *, layer: str, gid: int | None = None, neuron: int | None = None,
           j: int | None = None) -> dict[str, Any]:
    for g in doc["groups"]:
        if g["layer"] != layer:
            continue
        if gid is not None and g["kind"] == "neuron_group" and g["gid"] == gid:
            return g
        if neuron is not None and g["kind"] == "semantic_group" and g["neuron"] == neuron and g["j"] == j:
            return g
    what = f"neuron group {layer}/{gid}" if gid is not None else f"semantic group {layer}/{neuron}/{j}"
    layers = sorted({g["layer"] for g in doc["groups"]})
    raise RunFormatError(f"the exemplars of {run_dir} have no mosaic of {what}; its layers: {', '.join(layers)}")


def mosaic_path(run_dir: str | os.PathLike[str], layer: str, gid: int) -> Path:
    """Path of neuron group ``layer/gid``'s mosaic PNG."""
    doc = read_manifest(run_dir)
    return Path(run_dir) / EXEMPLAR_DIR / _entry(doc, run_dir, layer=layer, gid=gid)["file"]


def semantic_mosaic_path(run_dir: str | os.PathLike[str], layer: str, neuron: int, j: int) -> Path:
    """Path of semantic group ``layer/neuron/j``'s mosaic PNG."""
    doc = read_manifest(run_dir)
    return Path(run_dir) / EXEMPLAR_DIR / _entry(doc, run_dir, layer=layer, neuron=neuron, j=j)["file"]


def _tiles(run_dir: Any, doc: dict[str, Any], entry: dict[str, Any]) -> list[Image.Image]:
    path = Path(run_dir) / EXEMPLAR_DIR / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RunFormatError(f"cannot read the mosaic {path} ({e.strerror}); rebuild with "
                             f"`neurflow-graph exemplars {run_dir}`") from e
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise RunFormatError(f"{path} does not match its sha256 in the manifest; rebuild with "
                             f"`neurflow-graph exemplars {run_dir}`")
    with Image.open(io.BytesIO(data)) as im:
        mosaic = im.convert("RGB")
    return split_mosaic(mosaic, len(entry["patches"]), thumb=int(doc["thumb"]), gap=int(doc.get("gap", GAP)))


def group_exemplars(run_dir: str | os.PathLike[str], layer: str, gid: int) -> list[Image.Image]:
    """Neuron group ``layer/gid``'s exemplar patches, one ``thumb`` x ``thumb`` RGB image each, best first."""
    doc = read_manifest(run_dir)
    return _tiles(run_dir, doc, _entry(doc, run_dir, layer=layer, gid=gid))


def semantic_group_exemplars(run_dir: str | os.PathLike[str], layer: str, neuron: int, j: int) -> list[Image.Image]:
    """Semantic group ``layer/neuron/j``'s exemplar patches (see :func:`group_exemplars`)."""
    doc = read_manifest(run_dir)
    return _tiles(run_dir, doc, _entry(doc, run_dir, layer=layer, neuron=neuron, j=j))


def group_exemplars_array(run_dir: str | os.PathLike[str], layer: str, gid: int) -> np.ndarray:
    """:func:`group_exemplars` as one ``(N, thumb, thumb, 3)`` uint8 array."""
    return np.stack([np.asarray(t, dtype=np.uint8) for t in group_exemplars(run_dir, layer, gid)])
