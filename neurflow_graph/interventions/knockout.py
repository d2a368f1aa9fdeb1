"""Definition 2 of the paper: the concept of a neuron with a set S of the layer below knocked out.

phi_a^{S-bar}(v) is neuron a's activation (spatial mean of its channel) computed from M \\ S; for
a set S of channels of layer l-1 and a neuron a of layer l, that is the layer slice
phi^{l-1,l} (:mod:`neurflow_graph.extraction.slicing`) applied to layer l-1's maps with the channels
of S set to 0. :func:`knockout_phi` evaluates many sets at once (one batched pass per chunk of
sets x patches); :func:`knockout_concepts` takes the top-k patches of each, V_a^{S-bar}. The result
equals a full forward under ``mask_neurons(model, {lower: S})`` (tested), only cheaper: layer
l-1's maps are computed once for all sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.activations import spatial_means
from neurflow_graph.extraction.importance import top_k
from neurflow_graph.extraction.slicing import layer_slice, trace_layers


def layer_function(*, module: nn.Module, lower: str, upper: str) -> nn.Module:
    """phi^{l-1,l} as a module: maps of ``lower`` ``(B, *maps)`` -> output of ``upper``."""
    traced = trace_layers(module=module, layers=[upper, lower])
    return layer_slice(traced=traced, lower=lower, upper=upper)


@torch.no_grad()
def knockout_phi(*, slice_module: nn.Module, maps: torch.Tensor, sets: Sequence[Sequence[int]],
                 targets: Sequence[int] | None = None, max_rows: int = 2048) -> torch.Tensor:
    """phi of ``upper``'s ``targets`` (default: all channels) on every patch, once per knocked-out set.

    ``slice_module``: :func:`layer_function`; ``maps``: ``(P, C, *spatial)`` outputs of the lower
    layer for the patches; ``sets``: channel lists of the lower layer (an empty set gives the
    unmodified phi). Returns ``(len(sets), P, len(targets))`` float32 on ``maps.device``.
    ``max_rows`` bounds the rows (set x patch) of one forward pass."""
    if maps.dim() < 2:
        raise InputError(f"maps must be (patches, channels, ...), got shape {tuple(maps.shape)}")
    if max_rows < 1:
        raise InputError(f"max_rows must be >= 1, got {max_rows}")
    n_patches, n_channels = maps.shape[0], maps.shape[1]
    keep = torch.ones((len(sets), n_channels), dtype=torch.bool, device=maps.device)
    for i, s in enumerate(sets):
        ids = [int(c) for c in s]
        if any(not 0 <= c < n_channels for c in ids):
            raise InputError(f"set {i} names channel(s) outside 0..{n_channels - 1} of the lower layer")
        if ids:
            keep[i, torch.as_tensor(ids, dtype=torch.long, device=maps.device)] = False
    shape = (1, n_channels, *([1] * (maps.dim() - 2)))
    zero = torch.zeros((), dtype=maps.dtype, device=maps.device)
    target_index = None if targets is None else torch.as_tensor(list(targets), dtype=torch.long, device=maps.device)
    out: torch.Tensor | None = None
    patches_per_pass = max(1, min(n_patches, max_rows))
    sets_per_pass = max(1, max_rows // patches_per_pass)
    for s0 in range(0, len(sets), sets_per_pass):
        block = keep[s0:s0 + sets_per_pass]
        for p0 in range(0, n_patches, patches_per_pass):
            part = maps[p0:p0 + patches_per_pass]
            mask = block.view(block.shape[0], 1, n_channels, *shape[2:])  # (sets, 1, C, 1, ...)
            x = torch.where(mask, part.unsqueeze(0), zero)  # (sets, patches, C, *spatial)
            y = spatial_means(slice_module(x.reshape(-1, *part.shape[1:])).float())
            y = y.view(block.shape[0], part.shape[0], -1)
            if target_index is not None:
                y = y[:, :, target_index]
            if out is None:
                out = torch.empty((len(sets), n_patches, y.shape[2]), dtype=torch.float32, device=maps.device)
            out[s0:s0 + block.shape[0], p0:p0 + part.shape[0]] = y
    if out is None:
        raise InputError("knockout_phi needs at least one set and one patch")
    return out


def knockout_concepts(phi: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """V_a^{S-bar} per set: the ``k`` patches with the highest ``phi`` ``(n_sets, P)``, best first
    (ties to the lower patch id, as :func:`neurflow_graph.extraction.importance.top_k`) -> ``(n_sets, k)``."""
    values = phi.detach().cpu().numpy() if isinstance(phi, torch.Tensor) else np.asarray(phi)
    if values.ndim != 2:
        raise InputError(f"phi must be (sets, patches), got shape {values.shape}")
    return np.stack([top_k(row, k) for row in values])


def concept_loss(concept: Sequence[int], knocked: np.ndarray) -> np.ndarray:
    """L(S, a) = |V_a^{S-bar} ∩ V_a| / |V_a| for each row of ``knocked`` ``(n_sets, k)`` -> ``(n_sets,)``."""
    base = set(int(p) for p in concept)
    if not base:
        raise InputError("the concept V_a is empty")
    return np.asarray([len(base & set(row.tolist())) / len(base) for row in np.atleast_2d(knocked)])
