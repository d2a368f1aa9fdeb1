"""User image folders: listing (ImageFolder tree or flat folder), loading, and D_c selection.

D_c, the images NeurFlow explains class c with, are the images the model *classifies* as c
(paper, sec. 3 and app. C), whatever folder they sit in. Files that cannot be decoded are
skipped and reported, never fatal; a folder with nothing usable is an :class:`ImageError`.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image, UnidentifiedImageError

from neurflow_graph.errors import ImageError, InputError, ModelError

if TYPE_CHECKING:
    import torch

    from neurflow_graph.models.registry import LoadedModel

# Extensions PIL reads that people keep images in; other files are reported as NOT_AN_IMAGE.
NOT_AN_IMAGE = "not an image"
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"})


@dataclass
class ImageRecord:
    path: Path
    sha256: str
    label: str | None                      # ImageFolder sub-folder name, None for a flat folder


def list_images(root: str | Path) -> tuple[list[ImageRecord], list[tuple[Path, str]]]:
    """Images under ``root`` -> (records sorted by relative path, skipped files with a reason).

    Sub-folders of ``root`` are ImageFolder classes (``label`` = sub-folder name, searched
    recursively); files directly in ``root`` get ``label=None``. Hidden files and folders are ignored.
    Every image is fully decoded once, so corrupt files are caught here rather than mid-run.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise ImageError(f"image folder {root} does not exist; pass --images DIR with class sub-folders "
                         "or image files")
    if not root.is_dir():
        raise ImageError(f"{root} is not a folder; pass --images DIR (a folder of images or of class sub-folders)")
    root = root.resolve()
    found: list[tuple[str, Path, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        label = rel_dir.parts[0] if rel_dir.parts else None
        for fn in filenames:
            if not fn.startswith("."):
                path = here / fn
                found.append((path.relative_to(root).as_posix(), path, label))
    found.sort(key=lambda t: t[0])

    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    for _, path, label in found:
        try:
            data = _read_bytes(path)
        except OSError as e:
            skipped.append((path, f"unreadable ({e.strerror or e})"))
            continue
        reason = _decode_problem(data, path)
        if reason is not None:
            skipped.append((path, reason))
            continue
        records.append(ImageRecord(path=path, sha256=hashlib.sha256(data).hexdigest(), label=label))
    if not records:
        if skipped:
            named = "; ".join(f"{p.relative_to(root)}: {why}" for p, why in skipped[:3])
            more = f"; +{len(skipped) - 3} more" if len(skipped) > 3 else ""
            what = f"{len(skipped)} file(s) skipped: {named}{more}"
        else:
            what = "no files"
        raise ImageError(f"no readable image in {root} ({what}); supported: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    return records, skipped


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as a fully loaded RGB PIL image (file closed)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except OSError as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image {path}: {e}") from e


def predict_classes(*, model: LoadedModel, images: Sequence[ImageRecord], batch_size: int = 64) -> list[int]:
    """The model's top-1 class for each image, in order. Batches of ``(B, 3, S, S)``; no_grad."""
    import torch

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    predictions: list[int] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            tensors = [model.preprocess(load_rgb(r.path)) for r in images[start:start + batch_size]]
            # Same-size runs are stacked; images of different sizes (no input_size) go separately.
            for group in _same_shape_runs(tensors):
                predictions.extend(_argmax_logits(model, torch.stack(group).to(model.device)))
    return predictions


def select_class_images(*, model: LoadedModel, images: Sequence[ImageRecord], class_index: int,
                        batch_size: int = 64, predictions: Sequence[int] | None = None) -> list[ImageRecord]:
    """D_c: the records the model classifies as ``class_index`` (input order kept).

    ``predictions`` (from :func:`predict_classes`) saves the forward passes when several classes
    share one image set. ImageError when no image is classified as the class.
    """
    n = model.num_classes
    if class_index < 0 or (n is not None and class_index >= n):
        raise InputError(f"class index {class_index} is out of range for {model.spec.name} "
                         f"({n} classes: 0..{(n or 1) - 1})")
    if not images:
        raise ImageError("no images to select from")
    if predictions is None:
        predictions = predict_classes(model=model, images=images, batch_size=batch_size)
    elif len(predictions) != len(images):
        raise InputError(f"{len(predictions)} predictions for {len(images)} images")
    chosen = [r for r, p in zip(images, predictions) if p == class_index]
    if not chosen:
        top = ", ".join(f"{model.class_name(c)!r} ({c}): {k}" for c, k in Counter(predictions).most_common(3))
        spec = model.spec
        undeclared = " (the model declares no MEAN/STD: images go in unnormalised)" if (
            spec.mean is None and spec.std is None) else ""
        raise ImageError(f"none of the {len(images)} images is classified as {model.class_name(class_index)!r} "
                         f"({class_index}) by {spec.name}; it predicts {top}. Give images of that class "
                         "(--images), or check --weights and the preprocessing (--input-size, --mean, --std)"
                         f"{undeclared}")
    return chosen


def resolve_class(*, model: LoadedModel, text: str) -> int:
    """A class given as an index ("309") or a name ("bee", case-insensitive) -> its index."""
    text = str(text).strip()
    n = model.num_classes
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (n is not None and index >= n):
            raise InputError(f"class index {index} is out of range for {model.spec.name} "
                             f"(0..{(n or 1) - 1})")
        return index
    names = model.spec.class_names
    if names is None:
        if text.lower().startswith("class_") and text[6:].isdigit():
            return resolve_class(model=model, text=text[6:])
        raise InputError(f"{model.spec.name} has no class names; give --class as an index (0..{(n or 1) - 1}), or "
                         "declare the names: CLASS_NAMES = [...] in the model's module, or --class-names FILE "
                         "(one per line, in logit order)")
    hits = [i for i, name in enumerate(names) if name.lower() == text.lower()]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(f"class name {text!r} is ambiguous in {model.spec.name} (indices "
                         f"{', '.join(map(str, hits))}); give --class as one of these indices")
    lowered = {name.lower(): name for name in names}
    close = [lowered[c] for c in difflib.get_close_matches(text.lower(), list(lowered), n=5, cutoff=0.6)]
    if not close:  # substring matches help with multi-word ImageNet names ("bee" -> "bee eater")
        close = [name for name in names if text.lower() in name.lower()][:5]
    hint = f"close names: {', '.join(map(repr, close))}" if close else f"e.g. {', '.join(map(repr, names[:5]))}"
    raise InputError(f"unknown class {text!r} for {model.spec.name}; {hint} (or give an index 0..{len(names) - 1})")


# ---------------------------------------------------------------------------- private


def _read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _decode_problem(data: bytes, path: Path) -> str | None:
    """None when ``data`` decodes as an image, else the reason to skip it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return "corrupt image (format not recognised)"
        return NOT_AN_IMAGE
    except Exception as e:  # PIL raises many types on damaged data (OSError, SyntaxError, ValueError, ...)
        return f"corrupt image ({' '.join(str(e).split()) or type(e).__name__})"
    return None


def _same_shape_runs(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    runs: list[list[torch.Tensor]] = []
    for t in tensors:
        if runs and runs[-1][0].shape == t.shape:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _argmax_logits(model: LoadedModel, batch: torch.Tensor) -> list[int]:
    out = model.module(batch)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not hasattr(out, "dim") or out.dim() != 2:
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ModelError(f"{model.spec.name} returned {shape} for a batch; expected (N, num_classes) logits")
    return out.argmax(dim=1).tolist()
