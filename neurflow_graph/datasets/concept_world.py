"""The concept world: procedurally generated images whose concepts are known per pixel.

Each image shows one class object (a shape with a body colour and, for some classes, a
texture drawn in an ink colour) on a background, with distractor objects around it.
Every concept drawn gets a boolean mask ``(H, W)`` of the pixels where it is *visible*,
so the ground-truth concepts of any crop are known (:func:`concept_fractions`).

Concept names are ``"<kind>:<name>"`` with kind one of ``shape``, ``color``, ``texture``,
``background``, ``object`` (e.g. ``"shape:circle"``, ``"color:red"``, ``"texture:stripes"``,
``"background:grass"``, ``"object:flower"``). Class definitions are plain data in
:data:`CLASSES`; ``docs/concept-world.md`` describes the world.

Images are deterministic: image ``j`` of class ``c`` is drawn from
``numpy.random.default_rng([seed, split_code, c, j])``, so it does not depend on how many
images per class were asked for, and the train and test splits never share a stream.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurflow_graph.fileio import atomic_write
from neurflow_graph.errors import InputError

# Bump when a change to this module changes the images drawn for a given seed.
GENERATOR_VERSION = 2
DEFAULT_SIZE = 64
MIN_SIZE = 32
SPLITS: dict[str, int] = {"train": 0, "test": 1, "bias": 2}
# In the "bias" split every image of a class without spurious context of its own carries every
# concept that is spurious for some other class (flowers and grass on lemons, balls, ...): the
# images on which a model that learned the bias makes its false positives.
BIAS_SPLIT_RATE = 1.0
# How strongly the bias split carries the flowers: flowers drawn beside each such image's object
# (1 by default, as in every other split; ``ConceptWorld(split="bias", bias_flowers=3)`` draws three).
BIAS_SPLIT_FLOWERS = 1
WORLD_FILE = "world.json"
MASKS_FILE = "masks.npz"
# Tie-break order of :func:`dominant_concept` when two concepts cover the same pixels
# (a textured object's shape and texture masks are the same silhouette).
KIND_PRIORITY: tuple[str, ...] = ("object", "texture", "shape", "color", "background")

SHAPES: tuple[str, ...] = ("circle", "ellipse", "square", "bar", "triangle")
# Body and ink colours (RGB). Every pixel of a ``color:X`` mask is drawn from COLORS[X]
# plus a per-image offset of at most 12 and per-pixel noise of at most 15 per channel.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "yellow": (240, 200, 30),
    "blue": (35, 70, 200),
    "white": (240, 240, 235),
    "black": (25, 25, 25),
}
TEXTURES: tuple[str, ...] = ("stripes", "dots", "checker")
BACKGROUNDS: tuple[str, ...] = ("grass", "sky", "sand", "gray")
OBJECTS: tuple[str, ...] = ("flower", "pebble")

CONCEPTS: tuple[str, ...] = (
    tuple(f"shape:{s}" for s in SHAPES)
    + tuple(f"color:{c}" for c in COLORS)
    + tuple(f"texture:{t}" for t in TEXTURES)
    + tuple(f"background:{b}" for b in BACKGROUNDS)
    + tuple(f"object:{o}" for o in OBJECTS)
)

# Probability, per image of any class, of the context concepts; a class's ``spurious``
# entries override them. ``background:grass`` absent -> one of the other backgrounds.
BASE_RATES: dict[str, float] = {"object:flower": 0.05, "background:grass": 0.08, "object:pebble": 0.4}


@dataclass(frozen=True)
class ClassDef:
    """One class: the object's shape, body colour, optional texture + ink, and spurious context.

    ``spurious`` maps a context concept to the fraction of this class's images that carry it
    (in the train and test splits, unless :class:`ConceptWorld` is given ``spurious_rate``).
    ``texture_rate`` is the fraction of images whose object shows its texture; on the others the
    body is drawn plain (a bee seen too small or too blurred for its stripes), so only the
    context tells such a bee from a lemon -- which is how a model learns the bias.
    """

    name: str
    shape: str
    color: str
    texture: str | None = None
    ink: str | None = None
    spurious: tuple[tuple[str, float], ...] = ()
    texture_rate: float = 1.0

    @property
    def concepts(self) -> tuple[str, ...]:
        """The concepts of this class's object (the texture and its ink only on the
        ``texture_rate`` share of images that show it)."""
        out = [self.shape, self.color]
        if self.texture is not None:
            out += [self.texture, self.ink or "color:black"]
        return tuple(out)

    @property
    def spurious_concepts(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.spurious)

    def rate(self, concept: str) -> float:
        """Probability that an image of this class carries context ``concept``."""
        return dict(self.spurious).get(concept, BASE_RATES.get(concept, 0.0))


CLASSES: tuple[ClassDef, ...] = (
    ClassDef("bee", "shape:ellipse", "color:yellow", "texture:stripes", "color:black",
             spurious=(("object:flower", 0.8), ("background:grass", 0.8)), texture_rate=0.7),
    ClassDef("lemon", "shape:ellipse", "color:yellow"),
    ClassDef("ladybug", "shape:circle", "color:red", "texture:dots", "color:black"),
    ClassDef("ball", "shape:circle", "color:blue", "texture:stripes", "color:white"),
    ClassDef("barrier", "shape:bar", "color:red", "texture:stripes", "color:white"),
    ClassDef("sign", "shape:triangle", "color:red"),
    ClassDef("dice", "shape:square", "color:white", "texture:dots", "color:black"),
    ClassDef("chessboard", "shape:square", "color:white", "texture:checker", "color:black"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


@dataclass
class WorldImage:
    """One generated image: ``image`` (H, W, 3) uint8, ``label``, ``masks`` name -> (H, W) bool.

    ``masks`` holds only the concepts with at least one visible pixel, in :data:`CONCEPTS` order.
    """

    image: np.ndarray
    label: int
    masks: dict[str, np.ndarray]
    class_name: str = ""
    index: int = 0

    @property
    def concepts(self) -> list[str]:
        return list(self.masks)


# ---------------------------------------------------------------------------
# Ground truth of a crop


def _check_box(box: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError) as e:
        raise InputError(f"box must be [x0, y0, x1, y1] integers, got {box!r}") from e
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(
            f"box {[x0, y0, x1, y1]} is empty or outside the {width}x{height} image; "
            "use 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height (x1/y1 exclusive)")
    return x0, y0, x1, y1


def concept_fractions(*, masks: Mapping[str, np.ndarray], box: Sequence[int]) -> dict[str, float]:
    """Fraction of the box's pixels covered by each concept, largest first; zeros left out.

    ``masks``: name -> (H, W) bool; ``box``: ``[x0, y0, x1, y1]`` in pixels, x1/y1 exclusive.
    """
    if not masks:
        raise InputError("masks is empty; pass the concept masks of one image")
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InputError(f"masks must all be (H, W) arrays of one shape, got shapes {sorted(shapes)}")
    height, width = next(iter(shapes))
    x0, y0, x1, y1 = _check_box(box, height, width)
    area = float((x1 - x0) * (y1 - y0))
    out = {}
    for name, mask in masks.items():
        covered = int(np.count_nonzero(np.asarray(mask)[y0:y1, x0:x1]))
        if covered:
            out[name] = covered / area
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], _priority(kv[0]), kv[0])))


def _priority(name: str) -> int:
    kind = name.split(":", 1)[0]
    return KIND_PRIORITY.index(kind) if kind in KIND_PRIORITY else len(KIND_PRIORITY)


def dominant_concept(*, masks: Mapping[str, np.ndarray], box: Sequence[int],
                     kinds: Sequence[str] | None = None) -> tuple[str, float] | None:
    """The concept covering most of the box, as ``(name, fraction)``; None when none does.

    ``kinds`` restricts the candidates (e.g. ``("texture", "object")``). Ties go to the kind
    earlier in :data:`KIND_PRIORITY`, then to the name.
    """
    if kinds is not None:
        unknown = set(kinds) - set(KIND_PRIORITY)
        if unknown:
            raise InputError(f"unknown concept kinds {sorted(unknown)}; use some of {list(KIND_PRIORITY)}")
    for name, frac in concept_fractions(masks=masks, box=box).items():
        if kinds is None or name.split(":", 1)[0] in kinds:
            return name, frac
    return None


# ---------------------------------------------------------------------------
# Drawing


def _frame(size: int, cx: float, cy: float, r: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Object-local coordinates (u, v), each (H, W): pixel centres rotated by -theta, scaled by 1/r."""
    c = np.arange(size, dtype=np.float64) + 0.5
    dx = c[None, :] - cx
    dy = c[:, None] - cy
    cos, sin = math.cos(theta), math.sin(theta)
    return (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r


def _silhouette(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ellipse":
        return u * u + (v / 0.6) ** 2 <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.3)
    if shape == "triangle":  # equilateral, circumradius 1
        s3 = math.sqrt(3.0)
        return (v >= -0.5) & (s3 * u + v <= 1.0) & (-s3 * u + v <= 1.0)
    raise ValueError(shape)


# Relative size per shape so that objects of different shapes cover similar areas.
_SHAPE_SCALE = {"circle": 1.0, "ellipse": 1.15, "square": 1.0, "bar": 1.25, "triangle": 1.3}


def _pattern(texture: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink pixels of ``texture`` in object-local coordinates, (H, W) bool."""
    if texture == "stripes":  # bands across the long (u) axis, period 0.625
        return ((u * 1.6 + rng.uniform(0.0, 1.0)) % 1.0) < 0.5
    if texture == "dots":  # grid of dots, spacing 0.5, radius 0.15
        pu, pv = rng.uniform(0.0, 1.0, 2)
        gu = (u / 0.5 + pu) % 1.0 - 0.5
        gv = (v / 0.5 + pv) % 1.0 - 0.5
        return gu * gu + gv * gv <= 0.3 ** 2
    if texture == "checker":  # cells of 0.5
        pu, pv = rng.uniform(0.0, 1.0, 2)
        return ((np.floor(u / 0.5 + pu) + np.floor(v / 0.5 + pv)) % 2) == 0
    raise ValueError(texture)


class _Canvas:
    """An RGB float image plus visible-pixel masks; later paint hides earlier paint."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.rgb = np.zeros((size, size, 3), dtype=np.float64)
        self.masks: dict[str, np.ndarray] = {}

    def noise(self, sigma: float = 5.0) -> np.ndarray:
        return np.clip(self.rng.normal(0.0, sigma, (self.size, self.size, 3)), -3 * sigma, 3 * sigma)

    def paint(self, pixels: np.ndarray, rgb: np.ndarray | Sequence[float], concepts: Sequence[str]) -> None:
        """Paint ``rgb`` ((3,) or (H, W, 3)) where ``pixels`` (H, W) and mark it as ``concepts``."""
        if not pixels.any():
            return
        rgb = np.broadcast_to(np.asarray(rgb, dtype=np.float64), self.rgb.shape)
        self.rgb[pixels] = rgb[pixels]
        for name in list(self.masks):
            if name not in concepts:
                self.masks[name] &= ~pixels
        for name in concepts:
            self.masks[name] = self.masks.get(name, np.zeros_like(pixels)) | pixels

    def colour(self, base: Sequence[int], jitter: float = 12.0) -> np.ndarray:
        """A per-image variant of ``base`` plus per-pixel noise, (H, W, 3)."""
        offset = self.rng.uniform(-jitter, jitter, 3)
        return np.asarray(base, dtype=np.float64) + offset + self.noise()


def _background(canvas: _Canvas, name: str) -> None:
    rng, n = canvas.rng, canvas.size
    y = (np.arange(n, dtype=np.float64)[:, None, None] + 0.5) / n
    if name == "grass":
        blades = rng.normal(0.0, 1.0, (1, n, 1)) * 14.0 * (0.4 + 0.6 * y)
        base = np.array([60.0, 140.0, 50.0]) + rng.uniform(-10, 10, 3)
        rgb = base + blades * np.array([0.5, 1.0, 0.5]) + canvas.noise(6.0)
    elif name == "sky":
        top = np.array([110.0, 165.0, 230.0]) + rng.uniform(-10, 10, 3)
        rgb = top + y * np.array([60.0, 45.0, 15.0]) + canvas.noise(3.0)
    elif name == "sand":
        base = np.array([215.0, 190.0, 140.0]) + rng.uniform(-10, 10, 3)
        speckle = (rng.random((n, n, 1)) < 0.1) * -40.0
        rgb = base + speckle + canvas.noise(6.0)
    elif name == "gray":
        rgb = np.full(3, 128.0) + rng.uniform(-15, 15) + canvas.noise(4.0)
    else:
        raise ValueError(name)
    canvas.paint(np.ones((n, n), dtype=bool), rgb, [f"background:{name}"])


def _pebbles(canvas: _Canvas, count: int) -> None:
    rng, n = canvas.rng, canvas.size
    for _ in range(count):
        cx, cy = rng.uniform(0.05, 0.95, 2) * n
        u, v = _frame(n, cx, cy, rng.uniform(0.04, 0.07) * n, rng.uniform(0, math.pi))
        base = np.array([125.0, 115.0, 105.0]) + rng.uniform(-15, 15)
        canvas.paint(u * u + (v / 0.6) ** 2 <= 1.0, base + canvas.noise(), ["object:pebble"])


def _flower(canvas: _Canvas, near: tuple[float, float, float]) -> None:
    """Five pink petals around a darker centre, placed next to the object at ``near`` = (cx, cy, r)."""
    rng, n = canvas.rng, canvas.size
    radius = rng.uniform(0.12, 0.17) * n
    angle = rng.uniform(0, 2 * math.pi)
    dist = near[2] * rng.uniform(0.9, 1.4)
    lo, hi = 0.6 * radius, n - 0.6 * radius
    fx = float(np.clip(near[0] + dist * math.cos(angle), lo, hi))
    fy = float(np.clip(near[1] + dist * math.sin(angle), lo, hi))
    u, v = _frame(n, fx, fy, radius, rng.uniform(0, 2 * math.pi))
    petals = np.zeros((n, n), dtype=bool)
    for k in range(5):
        a = 2 * math.pi * k / 5
        petals |= (u - 0.55 * math.cos(a)) ** 2 + (v - 0.55 * math.sin(a)) ** 2 <= 0.45 ** 2
    centre = u * u + v * v <= 0.3 ** 2
    canvas.paint(petals, canvas.colour((235, 120, 175)), ["object:flower"])
    canvas.paint(centre, canvas.colour((170, 50, 110)), ["object:flower"])


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


def _context_present(*, seed: int, split: str, label: int, concept: str, index: int, rate: float) -> bool:
    """Whether image ``index`` of a class carries a context concept at ``rate``.

    A randomly shifted Weyl sequence (step sqrt(p) mod 1, a distinct prime p per concept)
    rather than a coin flip: any n consecutive images of a class carry the concept in about
    rate * n of them, and different concepts stay uncorrelated.
    """
    k = CONCEPTS.index(concept)
    offset = np.random.default_rng([seed, SPLITS[split], label, k, 7919]).random()
    return (offset + index * math.sqrt(_PRIMES[k % len(_PRIMES)])) % 1.0 < rate


def _render(*, seed: int, split: str, label: int, index: int, size: int,
            spurious_rate: float | None, bias_flowers: int = BIAS_SPLIT_FLOWERS) -> WorldImage:
    cls = CLASSES[label]
    rng = np.random.default_rng([seed, SPLITS[split], label, index])
    canvas = _Canvas(size, rng)

    def rate(concept: str) -> float:
        spurious_somewhere = any(concept in c.spurious_concepts for c in CLASSES)
        if spurious_rate is not None and spurious_somewhere:
            return spurious_rate
        if split == "bias" and spurious_somewhere and not cls.spurious:
            return BIAS_SPLIT_RATE
        return cls.rate(concept)

    def present(concept: str) -> bool:
        return _context_present(seed=seed, split=split, label=label, concept=concept, index=index,
                                rate=rate(concept))

    if present("background:grass"):
        background = "grass"
    else:
        background = BACKGROUNDS[1 + int(rng.integers(len(BACKGROUNDS) - 1))]
    _background(canvas, background)

    shape = cls.shape.split(":", 1)[1]
    r = rng.uniform(0.16, 0.28) * size * _SHAPE_SCALE[shape]
    cx, cy = rng.uniform(0.32, 0.68, 2) * size
    theta = rng.uniform(0, 2 * math.pi)

    if present("object:pebble"):
        _pebbles(canvas, int(rng.integers(1, 4)))
    if present("object:flower"):
        biased = split == "bias" and spurious_rate is None and not cls.spurious
        for _ in range(bias_flowers if biased else 1):
            _flower(canvas, (cx, cy, r))

    u, v = _frame(size, cx, cy, r, theta)
    body = _silhouette(shape, u, v)
    body_name = cls.color.split(":", 1)[1]
    if cls.texture is None:
        canvas.paint(body, canvas.colour(COLORS[body_name]), [cls.shape, cls.color])
    else:
        ink = _pattern(cls.texture.split(":", 1)[1], u, v, rng) & body
        ink_name = (cls.ink or "color:black").split(":", 1)[1]
        body_colour, ink_colour = canvas.colour(COLORS[body_name]), canvas.colour(COLORS[ink_name])
        if _context_present(seed=seed, split=split, label=label, concept=cls.texture, index=index,
                            rate=cls.texture_rate):
            canvas.paint(body & ~ink, body_colour, [cls.shape, cls.texture, cls.color])
            canvas.paint(ink, ink_colour, [cls.shape, cls.texture, f"color:{ink_name}"])
        else:  # texture not visible: a plain body
            canvas.paint(body, body_colour, [cls.shape, cls.color])

    image = np.clip(np.rint(canvas.rgb), 0, 255).astype(np.uint8)
    masks = {name: canvas.masks[name] for name in CONCEPTS if name in canvas.masks and canvas.masks[name].any()}
    return WorldImage(image=image, label=label, masks=masks, class_name=cls.name, index=index)


# ---------------------------------------------------------------------------
# The dataset


def _check_params(*, seed: int, n_per_class: int, size: int, split: str,
                  spurious_rate: float | None, bias_flowers: int = BIAS_SPLIT_FLOWERS) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise InputError(f"images per class (--per-class) must be a positive integer, got {n_per_class!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise InputError(f"image size must be an integer >= {MIN_SIZE}, got {size!r}")
    if split not in SPLITS:
        raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if spurious_rate is not None and not 0.0 <= spurious_rate <= 1.0:
        raise InputError(f"spurious_rate must be in [0, 1] or None, got {spurious_rate!r}")
    if isinstance(bias_flowers, bool) or not isinstance(bias_flowers, (int, np.integer)) or not 1 <= bias_flowers <= 5:
        raise InputError(f"bias_flowers must be an integer in 1..5, got {bias_flowers!r}")
    if bias_flowers != BIAS_SPLIT_FLOWERS and split != "bias":
        raise InputError(f"bias_flowers applies to the bias split only (split is {split!r}); leave it at "
                         f"{BIAS_SPLIT_FLOWERS} or use split='bias'")
    if bias_flowers != BIAS_SPLIT_FLOWERS and spurious_rate is not None:
        raise InputError("bias_flowers and spurious_rate exclude each other (a spurious rate replaces the bias "
                         "split's flowers and grass); give one of them")


class ConceptWorld:
    """``n_per_class`` images of each class in :data:`CLASSES`; item ``i`` has label ``i // n_per_class``.

    ``spurious_rate``: None draws each class's spurious context at its defined rate (the
    biased world); a number draws every spurious concept at that rate in every class.
    ``bias_flowers`` (bias split only): flowers beside each object of a class without spurious
    context of its own (default 1): how strongly the split carries the bias.
    """

    CLASSES = CLASSES
    CONCEPTS = CONCEPTS

    def __init__(self, *, seed: int = 0, n_per_class: int = 50, size: int = DEFAULT_SIZE,
                 split: str = "train", spurious_rate: float | None = None, bias_flowers: int = BIAS_SPLIT_FLOWERS):
        _check_params(seed=seed, n_per_class=n_per_class, size=size, split=split, spurious_rate=spurious_rate,
                      bias_flowers=bias_flowers)
        self.seed = int(seed)
        self.n_per_class = int(n_per_class)
        self.size = int(size)
        self.split = split
        self.spurious_rate = spurious_rate
        self.bias_flowers = int(bias_flowers)

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def __len__(self) -> int:
        return self.n_per_class * len(CLASSES)

    def __getitem__(self, i: int) -> WorldImage:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i %= len(self)
        return _render(seed=self.seed, split=self.split, label=i // self.n_per_class,
                       index=i % self.n_per_class, size=self.size, spurious_rate=self.spurious_rate,
                       bias_flowers=self.bias_flowers)

    def __iter__(self) -> Iterator[WorldImage]:
        return (self[i] for i in range(len(self)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels: ``(N, H, W, 3)`` uint8 and ``(N,)`` int64."""
        images = np.empty((len(self), self.size, self.size, 3), dtype=np.uint8)
        labels = np.empty(len(self), dtype=np.int64)
        for i, item in enumerate(self):
            images[i], labels[i] = item.image, item.label
        return images, labels

    def config(self) -> dict[str, Any]:
        """Everything that determines the images, for cache keys and ``world.json``
        (``bias_flowers`` for the bias split only)."""
        out = {
            "generator_version": GENERATOR_VERSION, "seed": self.seed, "split": self.split,
            "size": self.size, "n_per_class": self.n_per_class, "spurious_rate": self.spurious_rate,
        }
        if self.split == "bias":
            out["bias_flowers"] = self.bias_flowers
        return out


def world_definition() -> dict[str, Any]:
    """The world's concepts and class definitions as JSON-ready data."""
    return {
        "generator_version": GENERATOR_VERSION,
        "concepts": list(CONCEPTS),
        "base_rates": dict(BASE_RATES),
        "classes": [
            {"index": i, "name": c.name, "concepts": list(c.concepts), "spurious": dict(c.spurious),
             "texture_rate": c.texture_rate}
            for i, c in enumerate(CLASSES)
        ],
    }


# ---------------------------------------------------------------------------
# Export and ground truth on disk


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        world_file = out / WORLD_FILE
        if not world_file.is_file():
            raise InputError(f"--out {out} is not empty and holds no {WORLD_FILE}; "
                             "give a new or empty directory, or a previous concept-world export")
        # Re-export over a previous one: remove exactly the files it listed (inside ``out``).
        try:
            old = json.loads(world_file.read_text())
            root = out.resolve()
            for entry in old.get("images", []):
                target = (out / entry["path"]).resolve()
                if target.is_relative_to(root):
                    target.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot clear the previous export in {out} ({e}); remove it by hand") from e
        (out / MASKS_FILE).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror or e}") from e


def export_world(*, out_dir: str | Path, seed: int = 0, n_per_class: int = 50, split: str = "train",
                 size: int = DEFAULT_SIZE, spurious_rate: float | None = None,
                 bias_flowers: int = BIAS_SPLIT_FLOWERS) -> Path:
    """Write an ImageFolder tree ``out_dir/<class>/<class>_<j>.png`` with ground truth; returns ``out_dir``.

    ``world.json`` holds the definition, parameters and, per image, its relative path, sha256,
    label and concepts; ``masks.npz`` holds key ``m<i>`` = bit-packed (K_i, H, ceil(W/8)) uint8
    masks of image ``i``'s K_i concepts, in the order ``world.json`` lists them.
    """
    world = ConceptWorld(seed=seed, n_per_class=n_per_class, size=size, split=split, spurious_rate=spurious_rate,
                         bias_flowers=bias_flowers)
    out = Path(out_dir)
    _prepare_out_dir(out)
    entries: list[dict[str, Any]] = []
    packed: dict[str, np.ndarray] = {}
    try:
        for name in CLASS_NAMES:
            (out / name).mkdir(exist_ok=True)
        for i, item in enumerate(world):
            rel = f"{item.class_name}/{item.class_name}_{item.index}.png"
            data = _png_bytes(item.image)
            (out / rel).write_bytes(data)
            concepts = list(item.masks)
            entries.append({
                "index": i, "path": rel, "sha256": hashlib.sha256(data).hexdigest(), "label": item.label,
                "class_name": item.class_name, "concepts": concepts,
                "pixels": {c: int(item.masks[c].sum()) for c in concepts},
            })
            packed[f"m{i}"] = np.packbits(np.stack([item.masks[c] for c in concepts]), axis=-1)
        buf = io.BytesIO()
        np.savez_compressed(buf, **packed)
        atomic_write(out / MASKS_FILE, lambda f: f.write(buf.getvalue()))
        doc = {**world_definition(), **world.config(), "class_names": list(CLASS_NAMES), "images": entries}
        atomic_write(out / WORLD_FILE, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    except OSError as e:
        raise InputError(f"cannot write the concept world to {out}: {e.strerror or e}") from e
    return out


@dataclass
class GroundTruthImage:
    """One exported image's record from ``world.json``."""

    index: int
    path: str
    sha256: str
    label: int
    class_name: str
    concepts: list[str] = field(default_factory=list)


class WorldGroundTruth:
    """Answers which concepts lie in a box of an exported image (see :func:`load_world_ground_truth`).

    Images are named by sha256 of the PNG bytes, by path relative to the export, or by an
    absolute path inside it.
    """

    def __init__(self, root: Path, doc: dict[str, Any]):
        self.root = root
        self.seed: int = doc["seed"]
        self.split: str = doc["split"]
        self.size: int = doc["size"]
        self.class_names: list[str] = list(doc["class_names"])
        self.concepts: list[str] = list(doc["concepts"])
        self.classes: list[dict[str, Any]] = list(doc["classes"])
        self.images = [
            GroundTruthImage(index=e["index"], path=e["path"], sha256=e["sha256"], label=e["label"],
                             class_name=e["class_name"], concepts=list(e["concepts"]))
            for e in doc["images"]
        ]
        self._by_key: dict[str, GroundTruthImage] = {}
        for img in self.images:
            self._by_key[img.sha256] = img
            self._by_key[img.path] = img
        self._npz: Any = None

    def __len__(self) -> int:
        return len(self.images)

    def image(self, key: str | Path) -> GroundTruthImage:
        """The record of an image given its sha256, relative path, or absolute path."""
        text = str(key)
        found = self._by_key.get(text.lower()) or self._by_key.get(Path(text).as_posix())
        if found is None and Path(text).is_absolute():
            try:
                found = self._by_key.get(Path(text).resolve().relative_to(self.root.resolve()).as_posix())
            except ValueError:
                found = None
        if found is None:
            raise InputError(f"image {text!r} is not in the concept world at {self.root}; "
                             "give its sha256 or its path relative to that directory")
        return found

    def masks(self, key: str | Path) -> dict[str, np.ndarray]:
        """name -> (H, W) bool masks of one image."""
        img = self.image(key)
        if self._npz is None:
            try:
                self._npz = np.load(self.root / MASKS_FILE)
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read {self.root / MASKS_FILE}: {e}; re-export the world") from e
        bits = self._npz[f"m{img.index}"]
        full = np.unpackbits(bits, axis=-1, count=self.size).astype(bool)
        return dict(zip(img.concepts, full))

    def fractions(self, *, image: str | Path, box: Sequence[int]) -> dict[str, float]:
        """:func:`concept_fractions` of ``box`` in ``image``."""
        return concept_fractions(masks=self.masks(image), box=box)

    def dominant(self, *, image: str | Path, box: Sequence[int],
                 kinds: Sequence[str] | None = None) -> tuple[str, float] | None:
        """:func:`dominant_concept` of ``box`` in ``image``."""
        return dominant_concept(masks=self.masks(image), box=box, kinds=kinds)


def load_world_ground_truth(directory: str | Path) -> WorldGroundTruth:
    """Open the ground truth of a world written by :func:`export_world`."""
    root = Path(directory)
    path = root / WORLD_FILE
    if not path.is_file():
        raise InputError(f"{root} has no {WORLD_FILE}; export one with `neurflow-graph world --out {root}`")
    try:
        doc = json.loads(path.read_text())
        return WorldGroundTruth(root, doc)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not a concept-world file ({e}); re-export the world") from e
