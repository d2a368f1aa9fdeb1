"""The patch set D (paper sec. 3.3, app. D.8): multi-size sliding-window crops of the images of D_c.

Only the geometry is held in memory: patch ``i`` is ``(image[i], boxes[i])`` with the box
``[x0, y0, x1, y1]`` in the source image's own pixels (x1/y1 exclusive). Pixels are produced on
demand, a batch at a time, by :class:`PatchSource`: crop, resize back to the model's input size,
``model.preprocess``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from neurflow_graph.errors import ExtractionError, ImageError

# Decoded images kept between batches (patches are image-major, so a small cache suffices).
_IMAGE_CACHE = 16


@dataclass(frozen=True)
class PatchPlan:
    """Geometry of D. ``image``: (P,) index into the image list; ``boxes``: (P, 4) int64."""

    image: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Left edges of windows of ``crop`` pixels every ``stride`` pixels; the last one touches the end."""
    starts = list(range(0, length - crop + 1, stride))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


def plan_patches(*, image_sizes: Sequence[tuple[int, int]], crop_fractions: Sequence[float],
                 stride_fraction: float) -> PatchPlan:
    """Boxes of every crop size over every image: image-major, then fraction, then rows, then columns.

    ``image_sizes`` are ``(width, height)``. A crop of fraction ``f`` is ``round(f * side)`` pixels
    on each side (at least 1); its stride is ``round(stride_fraction * crop)`` (at least 1).
    Boxes repeated by rounding are kept once.
    """
    images: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    for index, (width, height) in enumerate(image_sizes):
        seen: set[tuple[int, int, int, int]] = set()
        for fraction in crop_fractions:
            cw, ch = max(1, round(fraction * width)), max(1, round(fraction * height))
            sx, sy = max(1, round(stride_fraction * cw)), max(1, round(stride_fraction * ch))
            for y0 in window_starts(height, ch, sy):
                for x0 in window_starts(width, cw, sx):
                    box = (x0, y0, x0 + cw, y0 + ch)
                    if box not in seen:
                        seen.add(box)
                        images.append(index)
                        boxes.append(box)
    return PatchPlan(image=np.asarray(images, dtype=np.int64),
                     boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image file, read from its header."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e


class PatchSource:
    """Pixels of the patches of a :class:`PatchPlan`, as the model sees them.

    ``size`` is ``(width, height)`` every crop is resized to; ``preprocess`` maps a PIL image of
    that size to ``(3, height, width)``.
    """

    def __init__(self, *, paths: Sequence[Path], plan: PatchPlan, size: tuple[int, int],
                 preprocess: Any) -> None:
        self.paths = [Path(p) for p in paths]
        self.plan = plan
        self.size = (int(size[0]), int(size[1]))
        self.preprocess = preprocess
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()

    def _image(self, index: int) -> Image.Image:
        from neurflow_graph.datasets.images import load_rgb

        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        im = load_rgb(self.paths[index])
        self._cache[index] = im
        if len(self._cache) > _IMAGE_CACHE:
            self._cache.popitem(last=False)
        return im

    def batch(self, ids: Sequence[int] | np.ndarray) -> torch.Tensor:
        """(B, 3, H, W) float tensor (CPU) of the patches ``ids``, in that order."""
        width, height = self.size
        out = []
        for pid in np.asarray(ids, dtype=np.int64).tolist():
            im = self._image(int(self.plan.image[pid]))
            crop = im.crop(tuple(int(v) for v in self.plan.boxes[pid]))
            if crop.size != (width, height):
                crop = crop.resize((width, height), Image.Resampling.BILINEAR)
            t = self.preprocess(crop)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (3, height, width):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ExtractionError(f"model.preprocess returned {shape} for a {width}x{height} patch, expected "
                                      f"(3, {height}, {width}); preprocess must not crop")
            out.append(t)
        return torch.stack(out) if out else torch.empty(0, 3, height, width)
