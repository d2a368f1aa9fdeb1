"""The activation scan: one pass of D through the model, forward hooks on every analysed layer.

A neuron's activation phi_a(v) is the spatial mean of channel ``a`` of its layer's output (a conv
layer, ``(B, C, *spatial)``) or the unit itself (a linear layer, ``(B, C)``); the root's is the
logit. The scan keeps only these means, ``(P, C_l)`` per layer; full maps are recomputed later
for the few patches that need them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from neurflow_graph.errors import ExtractionError


def spatial_means(y: torch.Tensor) -> torch.Tensor:
    """phi of every channel, differentiable: ``(B, C, *spatial)`` -> ``(B, C)``; ``(B, C)`` unchanged."""
    return y.flatten(2).mean(2) if y.dim() > 2 else y


def channel_means(output: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_means` of a layer output, detached, in float32: ``(B, C, *spatial)`` -> ``(B, C)``."""
    if output.dim() < 2:
        raise ExtractionError(f"a layer output of shape {tuple(output.shape)} has no channel dimension; "
                              "analyse layers whose output is (batch, channels, ...)")
    return spatial_means(output.detach().float())


@contextmanager
def channel_mean_hooks(module: torch.nn.Module, layers: Sequence[str],
                       keep: Sequence[str] = ()) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks appending each layer's ``(B, C)`` channel means per forward (and, for layers in
    ``keep``, a contiguous CPU copy of the full output under ``"maps:<layer>"``); removed on exit."""
    named = dict(module.named_modules())
    missing = [name for name in layers if name not in named or not name]
    if missing:
        raise ExtractionError(f"layer {missing[0]!r} is not a module of the model; layers are named_modules() paths")
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    captured.update({f"maps:{name}": [] for name in keep})
    kept = set(keep)
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise ExtractionError(f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                                      "analyse a module that outputs one tensor")
            captured[name].append(channel_means(output))
            if name in kept:
                captured[f"maps:{name}"].append(output.detach().to("cpu", copy=True,
                                                                  memory_format=torch.contiguous_format))
        return hook

    try:
        for name in layers:
            handles.append(named[name].register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for h in handles:
            h.remove()


def scan_activations(*, module: torch.nn.Module, layers: Sequence[str], n_patches: int,
                     batches: Callable[[np.ndarray], torch.Tensor], device: torch.device, batch_size: int,
                     on_batch: Callable[[int], None] | None = None, map_layers: Sequence[str] = (),
                     map_budget: float = 0.0, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """phi of every layer for every patch, ``{layer: (P, C_l) float32}``, and full maps
    ``{layer: (P, C, *spatial)}`` (CPU) of the first ``map_layers`` whose maps fit ``map_budget`` bytes.

    ``batches(ids)`` returns the ``(B, 3, H, W)`` pixels of patches ``ids``; one forward per batch
    under ``no_grad``. ``prepare`` maps each batch on ``device`` to the form ``module`` expects (the
    memory format of a :class:`~neurflow_graph.extraction.scan_layout.ScanForm`; values unchanged).
    Maps come back contiguous whatever the layout. A layer whose module runs other than once per
    forward is an ExtractionError."""
    prep = prepare if prepare is not None else (lambda x: x)
    phi: dict[str, np.ndarray] = {}
    maps: dict[str, torch.Tensor] = {}
    starts = range(0, n_patches, batch_size)
    with torch.no_grad():
        first = prep(batches(np.arange(0, min(batch_size, n_patches))).to(device))
        keep = _maps_that_fit(module, map_layers, first[:1], n_patches, map_budget) if map_layers else []
        with channel_mean_hooks(module, layers, keep) as captured:
            for start in starts:
                ids = np.arange(start, min(start + batch_size, n_patches))
                module(first if start == 0 else prep(batches(ids).to(device)))
                for name in layers:
                    got = captured[name]
                    if len(got) != 1:
                        raise ExtractionError(f"layer {name!r} ran {len(got)} times in one forward pass; analyse "
                                              "modules that run exactly once (not shared or unused ones)")
                    means = got.pop().cpu().numpy()
                    if name not in phi:
                        phi[name] = np.empty((n_patches, means.shape[1]), dtype=np.float32)
                    phi[name][start:start + len(ids)] = means
                for name in keep:
                    block = captured[f"maps:{name}"].pop()
                    if name not in maps:
                        maps[name] = torch.empty((n_patches, *block.shape[1:]), dtype=block.dtype)
                    maps[name][start:start + len(ids)] = block
                if on_batch is not None:
                    on_batch(len(ids))
    return phi, maps


def _maps_that_fit(module: torch.nn.Module, candidates: Sequence[str], x: torch.Tensor, n_patches: int,
                   budget: float) -> list[str]:
    """The longest prefix of ``candidates`` whose full maps for all patches fit ``budget`` bytes."""
    sizes: dict[str, float] = {}
    named = dict(module.named_modules())
    handles = [named[name].register_forward_hook(
        lambda _m, _i, out, name=name: sizes.__setitem__(name, float(out.numel() * out.element_size())))
        for name in candidates]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    chosen, total = [], 0.0
    for name in candidates:
        total += sizes.get(name, float("inf")) * n_patches
        if total > budget:
            break
        chosen.append(name)
    return chosen
