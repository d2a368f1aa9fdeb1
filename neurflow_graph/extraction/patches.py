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
    """Geometry of D. ``image``: (P,) index into the image list; ``boxes``: (P, 4) int64 in source-image
    pixels (what the circuit stores). ``frame_boxes``: (P, 4) the same boxes in the preprocessed
    image the pixels are cut from ("weights" preprocessing); None when pixels are cut from the source."""

    image: np.ndarray
    boxes: np.ndarray
    frame_boxes: np.ndarray | None = None

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
    that size to ``(3, height, width)``. When ``preprocess`` is a LoadedModel's own (the usual case),
    the tensor pipeline runs: each image is decoded once (and, for "weights" preprocessing, resized
    and centre-cropped once) into a uint8 frame kept on ``device``; a batch is cut from the frames
    by index arithmetic (one gather per crop size), resized with Pillow's exact bilinear weights as
    matrix products (``neurflow_graph.models.resample``) and normalised, with no loop per patch.
    Any other callable gets the per-patch PIL path (crop, resize, ``preprocess``).
    """

    def __init__(self, *, paths: Sequence[Path], plan: PatchPlan, size: tuple[int, int],
                 preprocess: Any, device: torch.device | str = "cpu") -> None:
        self.paths = [Path(p) for p in paths]
        self.plan = plan
        self.size = (int(size[0]), int(size[1]))
        self.preprocess = preprocess
        self.device = torch.device(device)
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()
        owner = getattr(preprocess, "__self__", None)
        self._model = owner if callable(getattr(owner, "frame", None)) and callable(getattr(owner, "normalize", None)) \
            else None
        self._frames: dict[int, torch.Tensor] = {}

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

    def _frame(self, index: int) -> torch.Tensor:
        """``(3, H, W)`` uint8 on ``device``: the decoded image, or its preprocessed frame when the
        plan cuts patches from one. Decoded once; frames are small (the model's input size)."""
        if index not in self._frames:
            from neurflow_graph.datasets.images import load_rgb

            x = torch.from_numpy(np.array(load_rgb(self.paths[index]), dtype=np.uint8)).permute(2, 0, 1)
            if self.plan.frame_boxes is not None:
                x = self._model.frame(x)
            self._frames[index] = x.contiguous().to(self.device)
        return self._frames[index]

    def batch(self, ids: Sequence[int] | np.ndarray) -> torch.Tensor:
        """(B, 3, H, W) float tensor (on ``device``) of the patches ``ids``, in that order."""
        width, height = self.size
        ids = np.asarray(ids, dtype=np.int64)
        if self._model is None:
            return self._batch_pil(ids).to(self.device)
        if len(ids) == 0:
            return torch.empty(0, 3, height, width, device=self.device)
        boxes = (self.plan.frame_boxes if self.plan.frame_boxes is not None else self.plan.boxes)[ids]
        images = self.plan.image[ids]
        out = torch.empty(len(ids), 3, height, width, dtype=torch.uint8, device=self.device)
        sizes = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
        # one group per (crop height, crop width, frame shape): a gather, then one batched resize
        frames = {int(i): self._frame(int(i)) for i in np.unique(images)}
        shape_of = np.array([frames[int(i)].shape[1] * 100003 + frames[int(i)].shape[2] for i in images])
        keys = np.stack([sizes[:, 0], sizes[:, 1], shape_of], axis=1)
        uniq, group = np.unique(keys, axis=0, return_inverse=True)
        for g in range(len(uniq)):
            rows = np.flatnonzero(group.reshape(-1) == g)
            ch, cw = int(uniq[g][0]), int(uniq[g][1])
            members = sorted({int(i) for i in images[rows]})
            stack = torch.stack([frames[i] for i in members])                       # (n, 3, H, W)
            slot = torch.as_tensor(np.searchsorted(members, images[rows]), device=self.device)
            y = torch.as_tensor(boxes[rows, 1], device=self.device)[:, None] + torch.arange(ch, device=self.device)
            x = torch.as_tensor(boxes[rows, 0], device=self.device)[:, None] + torch.arange(cw, device=self.device)
            crops = stack[slot[:, None, None], :, y[:, :, None], x[:, None, :]]      # (b, ch, cw, 3)
            crops = crops.permute(0, 3, 1, 2).contiguous()
            from neurflow_graph.models.resample import resize_uint8

            out[torch.as_tensor(rows, device=self.device)] = resize_uint8(crops, height, width)
        return self._model.normalize(out)

    def _batch_pil(self, ids: np.ndarray) -> torch.Tensor:
        """The per-patch path for a preprocess callable that is not a LoadedModel's (crop the source
        image, resize, call); such a callable has no preprocessed frame to cut from."""
        if self.plan.frame_boxes is not None:
            raise ExtractionError("patches cut from a preprocessed frame need a LoadedModel's preprocess")
        width, height = self.size
        out = []
        for pid in ids.tolist():
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


def reference_batch(source: PatchSource, ids: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The per-patch PIL implementation (crop the source image, PIL bilinear resize, ``preprocess``)
    that the tensor pipeline replaced; kept as the oracle the tests compare it with."""
    return source._batch_pil(np.asarray(ids, dtype=np.int64))
