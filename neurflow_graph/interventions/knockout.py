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

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.activations import spatial_means
from neurflow_graph.extraction.importance import top_k
from neurflow_graph.extraction.slicing import layer_slice, trace_layers


def layer_function(*, module: nn.Module, lower: str, upper: str) -> nn.Module:
    """phi^{l-1,l} as a module: maps of ``lower`` ``(B, *maps)`` -> output of ``upper``."""
    traced = trace_layers(module=module, layers=[upper, lower])
    return layer_slice(traced=traced, lower=lower, upper=upper)


_PER_CHANNEL = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Identity, nn.Dropout, nn.Dropout2d)
_PER_CHANNEL_FUNCTIONS = {F.relu, torch.relu, F.gelu, F.silu}


def _replace_module(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _pruned(module: nn.Module, channels: list[int]) -> nn.Module | None:
    idx = torch.as_tensor(channels, dtype=torch.long)
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        new = nn.Conv2d(module.in_channels, len(channels), module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                        padding_mode=module.padding_mode)
    elif isinstance(module, nn.Linear):
        new = nn.Linear(module.in_features, len(channels), bias=module.bias is not None)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.track_running_stats:
        new = type(module)(len(channels), eps=module.eps, momentum=module.momentum, affine=module.affine)
        new.running_mean.copy_(module.running_mean[idx.to(module.running_mean.device)])
        new.running_var.copy_(module.running_var[idx.to(module.running_var.device)])
    else:
        return None
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(module, name, None)
            if p is not None:
                getattr(new, name).copy_(p[idx.to(p.device)])
    return new.to(next(module.parameters()).device).eval()


def restrict_outputs(slice_module: fx.GraphModule, channels: Sequence[int]) -> nn.Module | None:
    """A copy of the slice computing only output ``channels`` (in that order), or None when its
    output is not a conv/linear layer followed only by per-channel modules (BatchNorm, ReLU, ...).
    Same values as ``slice_module(x)[:, channels]`` up to float rounding, at a fraction of the cost."""
    if not isinstance(slice_module, fx.GraphModule):
        return None
    gm = copy.deepcopy(slice_module)
    node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    chain: list[fx.Node] = []
    while True:
        if not isinstance(node, fx.Node) or len(node.users) != 1:
            return None  # a value used twice (a skip connection): pruning would change the other use
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                chain.append(node)
                break
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                chain.append(node)
            elif not isinstance(mod, _PER_CHANNEL):
                return None
        elif not (node.op == "call_function" and node.target in _PER_CHANNEL_FUNCTIONS):
            return None
        node = node.args[0]
    targets = [str(n.target) for n in chain]
    if len(set(targets)) != len(targets):
        return None
    for target in targets:
        new = _pruned(gm.get_submodule(target), [int(c) for c in channels])
        if new is None:
            return None
        _replace_module(gm, target, new)
    gm.recompile()
    return gm


_ZERO_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d,
                    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_PRESERVING_FUNCTIONS = {F.relu, torch.relu, F.max_pool2d, F.avg_pool2d}
# Elements of one pass's mixer output (sets x patches x channels x positions) at most.
_PASS_ELEMENTS = 1 << 25


def split_at_first_mixer(slice_module: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module] | None:
    """(head, mixer, tail) when the slice's input reaches its first conv/linear (``mixer``, groups 1)
    only through per-channel ops that map 0 to 0 (ReLU, pooling, ...): then zeroing input channel s
    is the same as zeroing column s of the mixer's weight, and ``head(maps)`` is computed once for
    every set. None otherwise."""
    from neurflow_graph.extraction.ig_graph import output_node, subgraph

    if not isinstance(slice_module, fx.GraphModule):
        return None
    gm = slice_module
    node = next(n for n in gm.graph.nodes if n.op == "placeholder")
    while True:
        users = list(node.users)
        if len(users) != 1 or node.op == "output":
            return None
        node = users[0]
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and getattr(mod, "groups", 1) == 1:
                break
            if not isinstance(mod, _ZERO_PRESERVING):
                return None
        elif not (node.op == "call_function" and node.target in _ZERO_PRESERVING_FUNCTIONS):
            return None
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    source = node.args[0]
    head = subgraph(gm, [placeholder], source) if source is not placeholder else nn.Identity()
    tail = subgraph(gm, [node], output_node(gm))
    return head, gm.get_submodule(str(node.target)), tail


def _mixed(mixer: nn.Module, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The mixer applied to ``h`` ``(P, C_in, ...)`` once per row of ``keep`` ``(S, C_in)`` (columns of
    dropped channels zeroed) -> ``(S * P, C_out, ...)``, set-major."""
    w = mixer.weight
    n_sets, c_out = keep.shape[0], w.shape[0]
    shape = (n_sets, 1, keep.shape[1], *([1] * (w.dim() - 2)))
    weight = (w.unsqueeze(0) * keep.view(shape).to(w.dtype)).reshape(n_sets * c_out, *w.shape[1:])
    bias = None if mixer.bias is None else mixer.bias.repeat(n_sets)
    y = mixer._conv_forward(h, weight, bias) if isinstance(mixer, nn.Conv2d) else F.linear(h, weight, bias)
    y = y.view(h.shape[0], n_sets, c_out, *y.shape[2:]).transpose(0, 1)
    return y.reshape(n_sets * h.shape[0], c_out, *y.shape[3:])


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
    split = split_at_first_mixer(slice_module)
    if split is not None:
        return _knockout_by_weights(split, maps, keep, target_index, max_rows)
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


def _knockout_by_weights(split: tuple[nn.Module, nn.Module, nn.Module], maps: torch.Tensor, keep: torch.Tensor,
                         target_index: torch.Tensor | None, max_rows: int) -> torch.Tensor:
    head, mixer, tail = split
    n_sets, n_patches = keep.shape[0], maps.shape[0]
    out: torch.Tensor | None = None
    per_patch = max(1, min(n_patches, max_rows))
    for p0 in range(0, n_patches, per_patch):
        h = head(maps[p0:p0 + per_patch])
        probe = _mixed(mixer, h[:1], keep[:1])
        per_set = max(1, _PASS_ELEMENTS // max(1, probe.numel() * h.shape[0]))
        for s0 in range(0, n_sets, per_set):
            block = keep[s0:s0 + per_set]
            y = spatial_means(tail(_mixed(mixer, h, block)).float()).view(block.shape[0], h.shape[0], -1)
            if target_index is not None:
                y = y[:, :, target_index]
            if out is None:
                out = torch.empty((n_sets, n_patches, y.shape[2]), dtype=torch.float32, device=maps.device)
            out[s0:s0 + block.shape[0], p0:p0 + h.shape[0]] = y
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
