"""The patch set D: sliding-window geometry and the pixels the model sees for each box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurflow_graph.errors import ExtractionError
from neurflow_graph.extraction.patches import PatchSource, plan_patches, window_starts
from test_extraction_support import write_images


@pytest.mark.parametrize("length, crop, stride, expected", [
    (64, 64, 32, [0]),
    (64, 32, 16, [0, 16, 32]),
    (10, 4, 3, [0, 3, 6]),
    (11, 4, 3, [0, 3, 6, 7]),  # the last window is moved to touch the border
])
def test_window_starts(length, crop, stride, expected):
    assert window_starts(length, crop, stride) == expected


def test_square_image_gives_the_papers_grid():
    plan = plan_patches(image_sizes=[(64, 64), (64, 64)], crop_fractions=(1.0, 0.5, 0.25), stride_fraction=0.5)
    assert len(plan) == 2 * (1 + 9 + 49)
    assert plan.image.tolist() == [0] * 59 + [1] * 59
    sides = sorted({int(b[2] - b[0]) for b in plan.boxes})
    assert sides == [16, 32, 64]
    assert (plan.boxes[:, 2] - plan.boxes[:, 0] == plan.boxes[:, 3] - plan.boxes[:, 1]).all()


def test_non_square_image_is_covered_at_every_size():
    w, h = 100, 60
    plan = plan_patches(image_sizes=[(w, h)], crop_fractions=(1.0, 0.5, 0.25), stride_fraction=0.5)
    boxes = plan.boxes
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    for cw, ch in [(100, 60), (50, 30), (25, 15)]:
        mine = boxes[(boxes[:, 2] - boxes[:, 0] == cw) & (boxes[:, 3] - boxes[:, 1] == ch)]
        covered = np.zeros((h, w), dtype=bool)
        for x0, y0, x1, y1 in mine:
            covered[y0:y1, x0:x1] = True
        assert covered.all()
    assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)


def test_patch_pixels_are_the_resized_crop(tmp_path):
    records = write_images(tmp_path, 2, size=(48, 40), seed=3)
    plan = plan_patches(image_sizes=[(48, 40)] * 2, crop_fractions=(1.0, 0.5), stride_fraction=0.5)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])

    def preprocess(im):
        a = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
        return torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)

    source = PatchSource(paths=[r.path for r in records], plan=plan, size=(32, 32), preprocess=preprocess)
    ids = [0, 3, len(plan) - 1]
    got = source.batch(ids)
    assert got.shape == (3, 3, 32, 32)
    for row, pid in enumerate(ids):
        with Image.open(records[plan.image[pid]].path) as im:
            crop = im.convert("RGB").crop(tuple(int(v) for v in plan.boxes[pid]))
            crop = crop.resize((32, 32), Image.Resampling.BILINEAR)
        torch.testing.assert_close(got[row], preprocess(crop))

    bad = PatchSource(paths=[r.path for r in records], plan=plan, size=(32, 32),
                      preprocess=lambda im: torch.zeros(3, 16, 16))
    with pytest.raises(ExtractionError, match="must not crop"):
        bad.batch([0])


# ---------------------------------------------------------------------------- tensor pipeline


def test_resize_matches_pillow_bit_for_bit_on_random_geometries():
    """Oracle: Pillow's own bilinear resize, on shrinking, growing and mixed geometries."""
    from neurflow_graph.models.resample import resize_uint8

    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 120, size=2))
        height, width = (int(v) for v in rng.integers(1, 150, size=2))
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        want = np.array(Image.fromarray(arr).resize((width, height), Image.Resampling.BILINEAR))
        got = resize_uint8(torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous(), height, width)[0]
        assert np.array_equal(got.permute(1, 2, 0).numpy(), want), (h, w, height, width)


def test_tensor_pipeline_gives_todays_patches_exactly(tmp_path):
    """Images of different sizes, all crop sizes, a shuffled batch: the batched tensor path equals the
    per-patch PIL implementation it replaced (kept as ``reference_batch``) bit for bit."""
    from neurflow_graph.extraction.patches import reference_batch
    from test_extraction_support import demo_model

    rng = np.random.default_rng(5)
    paths = []
    for i, (w, h) in enumerate([(64, 64), (90, 70), (33, 120)]):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(paths[-1])
    model = demo_model(seed=0)
    plan = plan_patches(image_sizes=[(64, 64), (90, 70), (33, 120)], crop_fractions=(1.0, 0.5, 0.25),
                        stride_fraction=0.5)
    source = PatchSource(paths=paths, plan=plan, size=(64, 64), preprocess=model.preprocess)
    ids = rng.permutation(len(plan))
    fast = source.batch(ids)
    assert fast.shape == (len(plan), 3, 64, 64) and fast.dtype == torch.float32
    assert torch.equal(fast, reference_batch(source, ids))


def test_weights_preprocessing_is_the_weights_transforms_and_patches_come_from_its_frame(tmp_path):
    """Oracle: torchvision's ``ResNet18_Weights.DEFAULT.transforms()`` (metadata only, nothing downloaded)
    applied to the PIL image. The full-size patch of an image is exactly that tensor; smaller patches
    are cut from the 224-px frame, and their stored boxes lie in the source image's pixels."""
    import torchvision

    from neurflow_graph.datasets.images import ImageRecord
    from neurflow_graph.extraction.circuit_builder import patch_source, run_params
    from neurflow_graph.extraction.params import ExtractParams
    from neurflow_graph.models.registry import load_model

    model = load_model(name="resnet18", device="cpu", layers=["fc", "layer4.1"])
    assert (model.spec.preprocess, model.spec.resize_size, model.spec.input_size) == ("weights", 256, 224)
    transforms = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    rng = np.random.default_rng(9)
    records, sizes = [], [(300, 240), (250, 400)]
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"w{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(path=path, sha256=f"{i:064x}", label=None))
        assert torch.equal(model.preprocess(Image.open(path).convert("RGB")), transforms(Image.open(path).convert("RGB")))
    source = patch_source(model=model, images=records, params=ExtractParams())
    plan = source.plan
    full = [int(np.flatnonzero((plan.image == i) & (plan.frame_boxes[:, 2] - plan.frame_boxes[:, 0] == 224))[0])
            for i in range(2)]
    batch = source.batch(full)
    for i, pid in enumerate(full):
        assert torch.equal(batch[i], transforms(Image.open(records[i].path).convert("RGB")))
    # a quarter patch: crop of the frame, resized by Pillow (the oracle), normalised like the transforms
    quarter = int(np.flatnonzero((plan.image == 1) & (plan.frame_boxes[:, 2] - plan.frame_boxes[:, 0] == 56))[3])
    frame = Image.open(records[1].path).convert("RGB").resize((256, 409), Image.Resampling.BILINEAR).crop(
        (16, 92, 240, 316))
    crop = frame.crop(tuple(int(v) for v in plan.frame_boxes[quarter])).resize((224, 224), Image.Resampling.BILINEAR)
    want = torchvision.transforms.functional.normalize(
        torchvision.transforms.functional.pil_to_tensor(crop).float() / 255, transforms.mean, transforms.std)
    assert torch.equal(source.batch([quarter])[0], want)
    for i, (w, h) in enumerate(sizes):  # source boxes: inside the image, the frame's region scaled back
        b = plan.boxes[plan.image == i]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
    scale = 250 / 256  # image 1: 250 px wide -> 256; 400 px high -> 409, crop offset (16, 92)
    fx0, fy0, fx1, fy1 = plan.frame_boxes[quarter]
    assert abs(plan.boxes[quarter][0] - (fx0 + 16) * scale) <= 1 and abs(plan.boxes[quarter][3] - (fy1 + 92) * scale) <= 1
    record = run_params(model, ExtractParams())["preprocess"]
    assert record == {"mode": "weights", "input_size": 224, "resize_size": 256, "crop_size": 224,
                      "mean": list(transforms.mean), "std": list(transforms.std), "interpolation": "bilinear",
                      "transforms_of": "ResNet18_Weights.IMAGENET1K_V1"}


def test_squash_override_and_custom_models_keep_their_preprocessing():
    from neurflow_graph.errors import InputError
    from neurflow_graph.extraction.circuit_builder import run_params
    from neurflow_graph.extraction.params import ExtractParams
    from neurflow_graph.models.registry import load_model

    squashed = load_model(name="resnet18", device="cpu", input_size=96)
    assert (squashed.spec.preprocess, squashed.spec.input_size) == ("squash", 96)
    assert run_params(squashed, ExtractParams())["preprocess"]["mode"] == "squash"
    assert load_model(name="resnet18", device="cpu", preprocess="squash").spec.preprocess == "squash"
    from test_extraction_support import demo_model

    custom = demo_model(seed=0)  # not a registry torchvision model: squash, and no new parameter (same run uids)
    assert custom.spec.preprocess == "squash" and run_params(custom, ExtractParams()) == ExtractParams().to_json()
    with pytest.raises(InputError, match="--preprocess weights"):
        load_model(name="resnet18", device="cpu", preprocess="weights", input_size=96)
