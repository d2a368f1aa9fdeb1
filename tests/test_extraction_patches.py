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
