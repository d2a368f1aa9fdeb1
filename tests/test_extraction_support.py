"""Helpers shared by the extraction tests (no tests here): images on disk, small models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from neurflow_graph.datasets.images import ImageRecord
from neurflow_graph.models.registry import LoadedModel, ModelSpec


def write_images(folder: Path, n: int, *, size: tuple[int, int] = (64, 64), seed: int = 0) -> list[ImageRecord]:
    """``n`` PNGs with a noisy background and a few coloured shapes; ImageRecords in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        w, h = size
        base = rng.integers(0, 256, size=3)
        arr = np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            x1, y1 = x0 + int(rng.integers(6, w // 2)), y0 + int(rng.integers(6, h // 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
        path = folder / f"img_{i:03d}.png"
        im.save(path)
        records.append(ImageRecord(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=None))
    return records


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial eval-mode BatchNorm statistics, so BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.3)


def demo_model(seed: int = 0) -> LoadedModel:
    """The demo CNN with seeded random weights (no training), as the registry would wrap it."""
    from neurflow_graph.models.demo import DEMO_LAYERS, DEMO_MEAN, DEMO_STD, build_demo_cnn

    torch.manual_seed(seed)
    module = build_demo_cnn()
    randomize_batchnorm(module, seed)
    module.eval()
    spec = ModelSpec(name="demo-test", layers=list(DEMO_LAYERS), input_size=64, mean=DEMO_MEAN, std=DEMO_STD)
    return LoadedModel(module=module, spec=spec, device=torch.device("cpu"), weights_sha256=None)


def hook_count(module: torch.nn.Module) -> int:
    """Forward (pre-)hooks registered on any submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def layer_outputs(module: torch.nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{layer: output}`` of the eager ``module`` on ``x`` (clones; the hooks are removed after)."""
    named = dict(module.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = [named[name].register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o.detach().clone()))
               for name in layers]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return out
