"""The concept world: determinism, masks against drawn pixels, class structure, export, CLI."""

from __future__ import annotations

import hashlib
import io
import json
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.cli import cli
from neurflow_graph.datasets.concept_world import (
    CLASSES, CONCEPTS, ConceptWorld, concept_fractions, dominant_concept, export_world,
    load_world_ground_truth,
)
from neurflow_graph.errors import InputError

N_CLASSES = len(CLASSES)


@pytest.fixture(scope="module")
def train_items():
    """40 train images per class (seed 0)."""
    return list(ConceptWorld(seed=0, n_per_class=40, split="train"))


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_images_and_masks():
    a = ConceptWorld(seed=3, n_per_class=2)
    b = ConceptWorld(seed=3, n_per_class=2)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x.image.tobytes() == y.image.tobytes()
        assert list(x.masks) == list(y.masks)
        for name in x.masks:
            assert np.array_equal(x.masks[name], y.masks[name])


def test_other_seed_and_other_split_give_other_images():
    base = [item.image.tobytes() for item in ConceptWorld(seed=3, n_per_class=2)]
    other_seed = [item.image.tobytes() for item in ConceptWorld(seed=4, n_per_class=2)]
    test_split = [item.image.tobytes() for item in ConceptWorld(seed=3, n_per_class=2, split="test")]
    assert all(a != b for a, b in zip(base, other_seed))
    assert not set(base) & set(test_split)


def test_image_does_not_depend_on_images_per_class():
    small, large = ConceptWorld(seed=1, n_per_class=2), ConceptWorld(seed=1, n_per_class=5)
    for label in range(N_CLASSES):
        for j in range(2):
            a, b = small[label * 2 + j], large[label * 5 + j]
            assert a.label == b.label == label
            assert a.image.tobytes() == b.image.tobytes()


def test_item_types_and_labels():
    world = ConceptWorld(seed=0, n_per_class=1, size=48)
    assert len(world) == N_CLASSES and world.class_names == [c.name for c in CLASSES]
    for label, item in enumerate(world):
        assert item.image.dtype == np.uint8 and item.image.shape == (48, 48, 3)
        assert item.label == label and item.class_name == CLASSES[label].name
        assert set(item.masks) <= set(CONCEPTS)
        assert all(m.dtype == bool and m.shape == (48, 48) and m.any() for m in item.masks.values())
    with pytest.raises(IndexError):
        world[len(world)]


@pytest.mark.parametrize("kwargs", [{"n_per_class": 0}, {"size": 8}, {"split": "val"}, {"seed": -1},
                                    {"spurious_rate": 1.5}])
def test_bad_parameters_raise_input_error(kwargs):
    with pytest.raises(InputError):
        ConceptWorld(**kwargs)


# --- masks against pixels --------------------------------------------------------------------

# Independent colour oracles: what each colour concept's pixels must look like.
COLOUR_ORACLES = {
    "color:red": lambda p: (p[:, 0] > 150) & (p[:, 1] < 90) & (p[:, 2] < 90),
    "color:yellow": lambda p: (p[:, 0] > 180) & (p[:, 1] > 150) & (p[:, 2] < 90),
    "color:blue": lambda p: (p[:, 2] > 150) & (p[:, 0] < 90) & (p[:, 1] < 120),
    "color:white": lambda p: p.min(axis=1) > 190,
    "color:black": lambda p: p.max(axis=1) < 70,
}


def test_colour_masks_cover_pixels_of_that_colour(train_items):
    seen = set()
    for item in train_items:
        pixels = item.image.reshape(-1, 3).astype(int)
        for name, mask in item.masks.items():
            if name.startswith("color:"):
                assert COLOUR_ORACLES[name](pixels[mask.reshape(-1)]).all(), (item.class_name, name)
                seen.add(name)
    assert seen == set(COLOUR_ORACLES)


def test_object_masks_partition_the_image(train_items):
    for item in train_items:
        cls = CLASSES[item.label]
        m = item.masks
        backgrounds = [n for n in m if n.startswith("background:")]
        assert len(backgrounds) == 1
        objects = np.zeros_like(m[backgrounds[0]])
        for name, mask in m.items():
            if not name.startswith("background:"):
                objects |= mask
        assert np.array_equal(m[backgrounds[0]], ~objects)
        body = m[cls.shape]
        colours = [n for n in m if n.startswith("color:")]
        # The object's colours split its silhouette exactly; a texture covers the whole silhouette.
        layers = np.sum([m[c] for c in colours], axis=0)
        assert (layers[body] == 1).all() and (layers[~body] == 0).all()
        if cls.texture is not None and cls.texture in m:
            assert np.array_equal(m[cls.texture], body)
        elif cls.texture is not None:  # a plain body (texture not visible): one colour, no ink
            assert colours == [cls.color]
        for other in ("object:flower", "object:pebble"):
            if other in m:
                assert not (m[other] & body).any()


def test_textured_objects_show_their_pattern(train_items):
    from scipy import ndimage

    for item in train_items:
        cls = CLASSES[item.label]
        if cls.texture is None or cls.texture not in item.masks:
            continue
        region = item.image[item.masks[cls.texture]].astype(int)
        ink = COLOUR_ORACLES[cls.ink](region)
        body = COLOUR_ORACLES[cls.color](region)
        assert (ink | body).all()
        ink_fraction = ink.mean()
        # Expected ink share: stripes and checker half, dots pi * 0.3^2 ~ 0.28 (edges shift it).
        low, high = {"texture:stripes": (0.3, 0.7), "texture:checker": (0.3, 0.7),
                     "texture:dots": (0.1, 0.45)}[cls.texture]
        assert low < ink_fraction < high, (item.class_name, ink_fraction)
        # A pattern, not one blob: several separate ink regions inside the silhouette.
        ink_image = np.zeros(item.image.shape[:2], dtype=bool)
        ink_image[item.masks[cls.texture]] = ink
        _, count = ndimage.label(ink_image)
        assert count >= 2, item.class_name


def test_context_masks_look_like_their_concept(train_items):
    checked = set()
    for item in train_items:
        img = item.image.astype(int)
        for name, mask in item.masks.items():
            mean = img[mask].mean(axis=0)
            if name == "object:flower":  # pink: much more red than green
                assert mean[0] > mean[1] + 50
            elif name == "background:grass":
                assert mean[1] > mean[0] + 40 and mean[1] > mean[2] + 40
            elif name == "background:sky":
                assert mean[2] > mean[0] + 40
            elif name == "background:sand":
                assert mean[0] > mean[2] + 40
            elif name == "background:gray":
                assert np.ptp(mean) < 10
            else:
                continue
            checked.add(name)
    assert {"object:flower", "background:grass", "background:sky", "background:sand"} <= checked


def _shape_stats(mask: np.ndarray) -> tuple[float, float]:
    """(eigenvalue ratio of the pixel covariance, area / sqrt(det cov))."""
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(float))
    lo, hi = np.linalg.eigvalsh(cov)
    return hi / lo, mask.sum() / np.sqrt(lo * hi)


def test_shape_masks_have_their_geometry():
    # Geometry oracles: elongation (axis ratio squared) and area / sqrt(det cov), which are
    # 4*pi for disks and ellipses, 12 for rectangles, 6*sqrt(3) for equilateral triangles.
    expected = {"shape:circle": (1.0, 4 * np.pi), "shape:ellipse": ((1 / 0.6) ** 2, 4 * np.pi),
                "shape:square": (1.0, 12.0), "shape:bar": ((1 / 0.3) ** 2, 12.0),
                "shape:triangle": (1.0, 6 * np.sqrt(3))}
    world = ConceptWorld(seed=5, n_per_class=4, size=128)  # larger images: less pixel rounding
    checked = set()
    for item in world:
        shape = CLASSES[item.label].shape
        mask = item.masks[shape]
        if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue  # clipped by the border
        elongation, area_ratio = _shape_stats(mask)
        want_elongation, want_area = expected[shape]
        assert abs(elongation - want_elongation) / want_elongation < 0.2, (shape, elongation)
        assert abs(area_ratio - want_area) / want_area < 0.03, (shape, area_ratio)
        checked.add(shape)
    assert checked == set(expected)


# --- class structure, measured from the masks ------------------------------------------------


def _presence(items) -> dict[str, dict[str, float]]:
    """class name -> concept -> fraction of that class's images in which the concept is visible."""
    out: dict[str, dict[str, float]] = {}
    for cls in CLASSES:
        mine = [it for it in items if it.class_name == cls.name]
        out[cls.name] = {c: sum(c in it.masks for it in mine) / len(mine) for c in CONCEPTS}
    return out


def test_class_concepts_and_overlaps_measured_from_masks(train_items):
    presence = _presence(train_items)
    core = {name: {c for c, f in p.items() if f == 1.0} for name, p in presence.items()}
    for cls in CLASSES:
        if cls.texture_rate == 1.0:
            assert core[cls.name] == set(cls.concepts), cls.name
        else:  # the texture and its ink show on about texture_rate of the images, the rest always
            textured = {cls.texture, cls.ink or "color:black"}
            assert core[cls.name] == set(cls.concepts) - textured, cls.name
            for c in textured:
                assert abs(presence[cls.name][c] - cls.texture_rate) <= 0.1, (cls.name, c)
            core[cls.name] |= textured
    shared = {c for a, b in combinations(core.values(), 2) for c in a & b}
    assert {"color:red", "texture:stripes", "texture:dots", "shape:square", "shape:circle"} <= shared
    for name, concepts in core.items():
        others = set().union(*(v for k, v in core.items() if k != name))
        assert concepts & others, f"{name} shares no concept with another class"
    # No two classes are the same composition.
    assert len({frozenset(v) for v in core.values()}) == len(core)


def test_spurious_concepts_measured_from_masks(train_items):
    presence = _presence(train_items)
    spurious = {(cls.name, c) for cls in CLASSES for c in cls.spurious_concepts}
    assert ("bee", "object:flower") in spurious and ("bee", "background:grass") in spurious
    for cls_name, concept in spurious:
        assert 0.7 <= presence[cls_name][concept] <= 0.9, (cls_name, concept)
        elsewhere = [presence[other.name][concept] for other in CLASSES if other.name != cls_name]
        assert max(elsewhere) <= 0.15, (concept, elsewhere)


def test_spurious_rate_decorrelates_context():
    items = list(ConceptWorld(seed=0, n_per_class=20, split="test", spurious_rate=0.5))
    presence = _presence(items)
    for cls in CLASSES:
        assert 0.35 <= presence[cls.name]["object:flower"] <= 0.65
        assert 0.35 <= presence[cls.name]["background:grass"] <= 0.65
    # The two contexts are drawn independently: both together in about a quarter of the images.
    both = np.mean([("object:flower" in it.masks) and ("background:grass" in it.masks) for it in items])
    assert 0.15 <= both <= 0.35


# --- concept_fractions / dominant_concept on hand-made masks --------------------------------


def _hand_masks() -> dict[str, np.ndarray]:
    # 4 x 6 image: left half "a", the top-right 2x3 corner "b", the rest "c".
    a = np.zeros((4, 6), dtype=bool)
    a[:, :3] = True
    b = np.zeros((4, 6), dtype=bool)
    b[:2, 3:] = True
    return {"shape:a": a, "texture:b": b, "background:c": ~(a | b)}


def test_concept_fractions_on_hand_made_masks():
    m = _hand_masks()
    assert concept_fractions(masks=m, box=[0, 0, 6, 4]) == {"shape:a": 0.5, "texture:b": 0.25, "background:c": 0.25}
    # Box x 2..4, y 1..3: pixels (2,1),(3,1),(2,2),(3,2) -> a, b, a, c.
    assert concept_fractions(masks=m, box=[2, 1, 4, 3]) == {"shape:a": 0.5, "texture:b": 0.25, "background:c": 0.25}
    assert concept_fractions(masks=m, box=[3, 0, 6, 2]) == {"texture:b": 1.0}
    assert concept_fractions(masks=m, box=(5, 3, 6, 4)) == {"background:c": 1.0}


def test_dominant_concept_ties_and_kinds():
    m = _hand_masks()
    # Box x 2..5, y 1..3: a 2 px, b 2 px, c 2 px -> tie broken by kind priority (texture first).
    assert dominant_concept(masks=m, box=[2, 1, 5, 3]) == ("texture:b", pytest.approx(2 / 6))
    assert dominant_concept(masks=m, box=[0, 0, 6, 4]) == ("shape:a", 0.5)
    assert dominant_concept(masks=m, box=[0, 0, 6, 4], kinds=["background"]) == ("background:c", 0.25)
    assert dominant_concept(masks=m, box=[0, 0, 2, 2], kinds=["object"]) is None
    with pytest.raises(InputError):
        dominant_concept(masks=m, box=[0, 0, 2, 2], kinds=["nonsense"])


@pytest.mark.parametrize("box", [[0, 0, 0, 1], [0, 0, 7, 4], [-1, 0, 2, 2], [2, 2, 1, 3], [0, 0, 1], "abcd"])
def test_concept_fractions_rejects_bad_boxes(box):
    with pytest.raises(InputError):
        concept_fractions(masks=_hand_masks(), box=box)


# --- export and ground truth on disk ---------------------------------------------------------


def test_export_round_trip(tmp_path):
    out = export_world(out_dir=tmp_path / "w", seed=2, n_per_class=2, split="test")
    world = ConceptWorld(seed=2, n_per_class=2, split="test")
    doc = json.loads((out / "world.json").read_text())
    assert doc["seed"] == 2 and doc["split"] == "test" and doc["concepts"] == list(CONCEPTS)
    assert [c["name"] for c in doc["classes"]] == [c.name for c in CLASSES]
    assert len(doc["images"]) == len(world)
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == sorted(e["path"] for e in doc["images"])

    truth = load_world_ground_truth(out)
    for i, entry in enumerate(doc["images"]):
        item = world[i]
        cls = CLASSES[item.label]
        assert entry["path"] == f"{cls.name}/{cls.name}_{item.index}.png"
        data = (out / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), item.image)
        assert entry["label"] == item.label and entry["concepts"] == list(item.masks)
        # The same masks come back by sha256, relative path and absolute path.
        for key in (entry["sha256"], entry["path"], out / entry["path"]):
            masks = truth.masks(key)
            assert list(masks) == list(item.masks)
            assert all(np.array_equal(masks[n], item.masks[n]) for n in masks)
        # Box lookups agree with pixel counts of the in-memory masks.
        x0, y0, x1, y1 = 8, 4, 40, 60
        for name, frac in truth.fractions(image=entry["sha256"], box=[x0, y0, x1, y1]).items():
            assert frac == item.masks[name][y0:y1, x0:x1].sum() / ((x1 - x0) * (y1 - y0))
        whole = truth.fractions(image=entry["sha256"], box=[0, 0, 64, 64])
        assert set(whole) == set(item.masks)
        name, frac = truth.dominant(image=entry["path"], box=[0, 0, 64, 64])
        assert frac == max(whole.values()) and name in whole
    with pytest.raises(InputError):
        truth.masks("0" * 64)


def test_reexport_replaces_previous_files_only(tmp_path):
    out = tmp_path / "w"
    export_world(out_dir=out, seed=0, n_per_class=3)
    outside = tmp_path / "keep.png"
    outside.write_bytes(b"not mine")
    doc = json.loads((out / "world.json").read_text())
    doc["images"].append({"path": "../keep.png"})
    (out / "world.json").write_text(json.dumps(doc))
    export_world(out_dir=out, seed=0, n_per_class=1)
    assert len(list(out.rglob("*.png"))) == N_CLASSES
    assert len(load_world_ground_truth(out)) == N_CLASSES
    assert outside.read_bytes() == b"not mine"


def test_export_refuses_a_foreign_directory_and_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError):
        export_world(out_dir=tmp_path, n_per_class=1)
    with pytest.raises(InputError):
        export_world(out_dir=tmp_path / "notes.txt", n_per_class=1)
    with pytest.raises(InputError):
        load_world_ground_truth(tmp_path)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_world_exports_and_summarises(tmp_path):
    result = CliRunner().invoke(cli, ["world", "--out", str(tmp_path / "w"), "--per-class", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert f"{2 * N_CLASSES} images" in result.output
    assert len(list((tmp_path / "w").rglob("*.png"))) == 2 * N_CLASSES
    assert load_world_ground_truth(tmp_path / "w").seed == 1


@pytest.mark.parametrize("args", [["--per-class", "0"], ["--size", "4"], ["--spurious-rate", "2"], "FILE",
                                  ["--split", "bias", "--bias-flowers", "9"], ["--bias-flowers", "3"],
                                  ["--split", "bias", "--bias-flowers", "3", "--spurious-rate", "0.5"]])
def test_cli_world_bad_input_is_one_line_exit_2(tmp_path, args):
    target = tmp_path / "w"
    if args == "FILE":
        target.write_text("x")
        args = []
    result = CliRunner().invoke(cli, ["world", "--out", str(target), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output


def test_cli_world_bias_flowers_writes_the_images_of_the_python_option(tmp_path):
    result = CliRunner().invoke(cli, ["world", "--out", str(tmp_path / "w"), "--per-class", "2", "--split", "bias",
                                      "--bias-flowers", "3"])
    assert result.exit_code == 0, result.output
    assert "3 flowers per other-class image" in result.output
    expected = {f"{it.class_name}/{it.class_name}_{it.index}.png": it.image.tobytes()
                for it in ConceptWorld(seed=0, n_per_class=2, split="bias", bias_flowers=3)}
    one = {f"{it.class_name}/{it.class_name}_{it.index}.png": it.image.tobytes()
           for it in ConceptWorld(seed=0, n_per_class=2, split="bias")}
    written = {rel: Image.open(tmp_path / "w" / rel).convert("RGB").tobytes() for rel in expected}
    assert written == expected and written != one


def test_bias_split_puts_the_spurious_context_on_every_other_class():
    items = list(ConceptWorld(seed=0, n_per_class=20, split="bias"))
    presence = _presence(items)
    for cls in CLASSES:
        if cls.spurious:  # the biased class keeps its own rates
            for concept, rate in cls.spurious:
                assert abs(presence[cls.name][concept] - rate) <= 0.1
        else:
            assert presence[cls.name]["object:flower"] == 1.0 and presence[cls.name]["background:grass"] == 1.0
    train = {it.image.tobytes() for it in ConceptWorld(seed=0, n_per_class=20, split="train")}
    assert not train & {it.image.tobytes() for it in items}


def test_bias_flowers_draws_more_flowers_on_the_other_classes_only():
    one = list(ConceptWorld(seed=0, n_per_class=8, split="bias"))
    same = list(ConceptWorld(seed=0, n_per_class=8, split="bias", bias_flowers=1))
    three = list(ConceptWorld(seed=0, n_per_class=8, split="bias", bias_flowers=3))
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(one, same))  # the default is one flower
    biased = {c.name for c in CLASSES if c.spurious}
    grew = []
    for a, b in zip(one, three):
        cls = next(c for c in CLASSES if c.name == a.class_name)
        if a.class_name in biased:  # the biased class keeps its own images
            assert a.image.tobytes() == b.image.tobytes()
            continue
        assert np.array_equal(a.masks[cls.shape], b.masks[cls.shape])  # the object is drawn over the flowers
        grew.append(b.masks["object:flower"].sum() / a.masks["object:flower"].sum())
    assert np.median(grew) > 1.5  # three flowers cover more than one (they may overlap each other)
    assert ConceptWorld(seed=0, n_per_class=2, split="bias", bias_flowers=3).config()["bias_flowers"] == 3
    assert "bias_flowers" not in ConceptWorld(seed=0, n_per_class=2, split="test").config()


@pytest.mark.parametrize("kwargs", [{"bias_flowers": 0}, {"bias_flowers": 6}, {"bias_flowers": True},
                                    {"bias_flowers": 2, "split": "test"}])
def test_bias_flowers_bad_values_are_input_errors(kwargs):
    with pytest.raises(InputError, match="bias_flowers"):
        ConceptWorld(**{"seed": 0, "n_per_class": 2, "split": "bias", **kwargs})
