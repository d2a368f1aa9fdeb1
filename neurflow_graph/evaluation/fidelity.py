"""Fidelity of core concept neurons (paper sec. 4, Fig. 5).

The core neurons of a layer are the run's neurons there (the union of the core sets found from
above). On the images of the run's class (``--images``, folder = class): the accuracy (share predicted
as the class) when the core neurons are masked, or when only they are retained, divided by the
unmasked accuracy (1 = no effect), at one layer and from the layer below the logit down to that
layer. The same with random sets of equal size per layer (R draws: mean and 99% interval, the
0.5th..99.5th percentiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurflow_graph.errors import ImageError
from neurflow_graph.interventions import mask_neurons, retain_neurons


@dataclass
class FidelityPoint:
    layer: str
    scope: str                   # "layer" (that layer only) or "down_to" (below the logit down to it)
    operation: str               # "mask" or "retain"
    n_neurons: dict[str, int]
    core: float                  # relative accuracy with the core neurons
    random_mean: float
    random_low: float
    random_high: float


@dataclass
class FidelityResult:
    n_images: int
    base_accuracy: float
    n_random: int
    points: list[FidelityPoint] = field(default_factory=list)
    mask_below_random_everywhere: bool | None = None   # masking core drops accuracy more than random at every layer


def _accuracy(model: Any, x: torch.Tensor, c: int, batch: int) -> float:
    with torch.no_grad():
        pred = torch.cat([model.module(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == c).float().mean())


def evaluate_fidelity(*, model: Any, circuit: Any, images: Sequence[Any], n_random: int = 20,
                      rng: np.random.Generator, batch: int = 256) -> FidelityResult:
    from neurflow_graph.datasets.images import load_rgb

    c, name = circuit.class_.index, circuit.class_.name
    mine = [r for r in images if r.label is not None and str(r.label).lower() == name.lower()]
    if not mine:
        raise ImageError(f"no image of class {name!r} in --images (a sub-folder named {name!r}); fidelity needs them")
    x = torch.stack([model.preprocess(load_rgb(r.path)) for r in mine]).to(model.device)
    base = _accuracy(model, x, c, batch)
    layers = list(circuit.model.layers)[1:]
    cores = {l: sorted({n.index for n in circuit.layer_neurons(l)}) for l in layers}
    widths = _widths(model, x[:1], layers)
    result = FidelityResult(n_images=len(mine), base_accuracy=base, n_random=n_random)
    rel = (lambda acc: acc / base) if base > 0 else (lambda acc: float("nan"))
    for i, layer in enumerate(layers):
        if not cores[layer]:
            continue
        for scope, chosen in (("layer", [layer]), ("down_to", [l for l in layers[:i + 1] if cores[l]])):
            for op, ctx in (("mask", mask_neurons), ("retain", retain_neurons)):
                with ctx(model.module, {l: cores[l] for l in chosen}):
                    core = rel(_accuracy(model, x, c, batch))
                rand = []
                for _ in range(n_random):
                    sets = {l: rng.choice(widths[l], size=len(cores[l]), replace=False).tolist() for l in chosen}
                    with ctx(model.module, sets):
                        rand.append(rel(_accuracy(model, x, c, batch)))
                lo, hi = np.percentile(rand, (0.5, 99.5))
                result.points.append(FidelityPoint(layer=layer, scope=scope, operation=op,
                                                   n_neurons={l: len(cores[l]) for l in chosen}, core=core,
                                                   random_mean=float(np.mean(rand)), random_low=float(lo),
                                                   random_high=float(hi)))
    masks = [p for p in result.points if p.operation == "mask" and p.scope == "layer"]
    result.mask_below_random_everywhere = bool(masks) and all(p.core < p.random_mean for p in masks)
    return result


def _widths(model: Any, x: torch.Tensor, layers: Sequence[str]) -> dict[str, int]:
    named = dict(model.module.named_modules())
    out: dict[str, int] = {}
    handles = [named[l].register_forward_hook(lambda _m, _i, o, l=l: out.__setitem__(l, int(o.shape[1])))
               for l in layers]
    try:
        with torch.no_grad():
            model.module(x)
    finally:
        for h in handles:
            h.remove()
    return out
