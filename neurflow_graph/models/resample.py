"""Bilinear resizing of uint8 image tensors, bit-identical to Pillow's ``Image.resize(BILINEAR)``.

Pillow resizes separably (horizontal pass, then vertical), each output pixel a weighted sum of
the input pixels under a triangle filter widened by the scale factor (antialiasing when
shrinking), with weights normalised to sum 1 and rounded to fixed point (22 fractional bits);
every pass rounds and clips to uint8. This module computes the same weights and runs each pass
as one matrix product over a whole batch, in float64, where every product and sum of these
integers is exact (so the result does not depend on the device). torch's own antialiased resize
differs from Pillow by 1 grey level on some pixels, hence this module.

Also here: torchvision's resize-shorter-side and centre-crop geometry (``weights.transforms()``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


@lru_cache(maxsize=256)
def _weights(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` integer weights (Pillow's fixed-point coefficients) as float64."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear filter support is 1
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        ws = []
        for x in range(xmin, xmax):
            t = abs((x - center + 0.5) / filterscale)
            ws.append(1.0 - t if t < 1.0 else 0.0)
        total = sum(ws)
        for i, w in enumerate(ws):
            w = w / total if total != 0.0 else w
            fixed = int(-0.5 + w * (1 << _PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << _PRECISION_BITS))
            out[xx, xmin + i] = float(fixed)
    return out


def _pass(x: torch.Tensor, weights: np.ndarray, dim: int) -> torch.Tensor:
    """One Pillow pass along ``dim`` (-1 width, -2 height) of float64 integer-valued ``x``."""
    w = torch.from_numpy(weights).to(x.device)
    y = x @ w.T if dim == -1 else w @ x
    return torch.clamp(torch.floor((y + float(1 << (_PRECISION_BITS - 1))) / float(1 << _PRECISION_BITS)), 0, 255)


def _two_passes(x: torch.Tensor, h: int, w: int, height: int, width: int, vertical_first: bool) -> torch.Tensor:
    if vertical_first:
        return _pass(_pass(x, _weights(h, height), -2), _weights(w, width), -1)
    return _pass(_pass(x, _weights(w, width), -1), _weights(h, height), -2)


@lru_cache(maxsize=1024)
def _vertical_first(h: int, w: int, height: int, width: int) -> bool | None:
    """Which pass Pillow runs first for this geometry (it depends on the sizes only, not on the
    pixels; Pillow picks it by a cost estimate): found once per geometry by resizing a seeded random
    probe with Pillow and with both orders. None: neither order reproduces Pillow (then Pillow is used)."""
    from PIL import Image

    probe = np.random.default_rng(h * 7919 + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    want = torch.from_numpy(np.array(Image.fromarray(probe).resize((width, height), Image.Resampling.BILINEAR)))
    x = torch.from_numpy(probe).permute(2, 0, 1)[None].to(torch.float64)
    for order in (False, True):
        if torch.equal(_two_passes(x, h, w, height, width, order)[0].permute(1, 2, 0).to(torch.uint8), want):
            return order
    return None


def resize_uint8(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, C, h, w)`` uint8 -> ``(B, C, height, width)`` uint8, as Pillow's bilinear resize of each image.

    A dimension already at its size is not resampled (as in Pillow)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"resize_uint8 takes a (B, C, h, w) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
    h, w = int(images.shape[-2]), int(images.shape[-1])
    if (h, w) == (height, width):
        return images
    x = images.to(torch.float64)
    if w != width and h != height:
        order = _vertical_first(h, w, height, width)
        if order is None:
            return _pillow_resize(images, height, width)
        return _two_passes(x, h, w, height, width, order).to(torch.uint8)
    if w != width:
        x = _pass(x, _weights(w, width), -1)
    if h != height:
        x = _pass(x, _weights(h, height), -2)
    return x.to(torch.uint8)


def _pillow_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow itself, image by image (the fallback for a geometry :func:`_vertical_first` cannot place)."""
    from PIL import Image

    out = [torch.from_numpy(np.array(Image.fromarray(im.permute(1, 2, 0).contiguous().cpu().numpy()).resize(
        (width, height), Image.Resampling.BILINEAR))).permute(2, 0, 1) for im in images]
    return torch.stack(out).to(images.device)


def resized_shorter(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after torchvision's ``resize(size)`` with one int: the shorter side becomes
    ``size``, the longer ``int(size * long / short)``."""
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


def center_crop_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``center_crop(crop)`` of a ``height x width`` image (no padding
    needed: the image is at least ``crop`` on each side)."""
    if height < crop or width < crop:
        raise ValueError(f"a {height}x{width} image is smaller than the {crop}-pixel centre crop")
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def frame_to_source(boxes: np.ndarray, *, source: tuple[int, int], resized: tuple[int, int],
                    offset: tuple[int, int]) -> np.ndarray:
    """Boxes ``(N, 4)`` ``[x0, y0, x1, y1]`` in a centre-cropped frame -> the source image's pixels.

    ``source`` and ``resized`` are ``(width, height)``; ``offset`` the crop's ``(left, top)`` in the
    resized image. Rounded to whole pixels, clipped to the image, at least 1 pixel wide and high."""
    (sw, sh), (rw, rh), (left, top) = source, resized, offset
    b = np.asarray(boxes, dtype=np.float64)
    x = (b[:, [0, 2]] + left) * (sw / rw)
    y = (b[:, [1, 3]] + top) * (sh / rh)
    out = np.stack([np.floor(x[:, 0] + 1e-9), np.floor(y[:, 0] + 1e-9),
                    np.ceil(x[:, 1] - 1e-9), np.ceil(y[:, 1] - 1e-9)], axis=1).astype(np.int64)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, sw)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, sh)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return out

