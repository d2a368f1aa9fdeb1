"""Masking and retaining channels of named layers with forward hooks, inside context managers.

The hook replaces the layer's output ``(B, C, *spatial)`` or ``(B, C)``: masked channels become 0
(``mode="zero"``) or the given mean (``mode="mean"``), others pass unchanged (``torch.where``, so
the result is exact: no ``0 * inf``, no rounding). Hooks are registered only inside the ``with``
block and removed in ``finally``, whether the block succeeds or raises.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from neurflow_graph.errors import InputError

MODES: tuple[str, ...] = ("zero", "mean")
Neurons = Mapping[str, Iterable[int]]


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (a ``named_modules()`` path); InputError with close names."""
    named = dict(model.named_modules())
    if not isinstance(layer, str) or not layer or layer not in named:
        close = difflib.get_close_matches(str(layer), [n for n in named if n], n=4)
        hint = f"close names: {', '.join(close)}" if close else "give a named_modules() path"
        raise InputError(f"layer {layer!r} is not a module of the model; {hint}")
    return named[layer]


def _channels(layer: str, channels: Iterable[int]) -> list[int]:
    if isinstance(channels, (str, bytes)):
        raise InputError(f"channels of layer {layer!r} must be a list of integers, got {channels!r}")
    out = []
    for c in channels:
        try:
            if isinstance(c, bool):
                raise TypeError
            c = operator.index(c)
        except TypeError:
            raise InputError(f"channels of layer {layer!r} must be integers, got {c!r}") from None
        if c < 0:
            raise InputError(f"channel {c} of layer {layer!r} is negative; channels count from 0")
        out.append(c)
    return sorted(set(out))


def _check_output(layer: str, output: Any, channels: Sequence[int]) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"layer {layer!r} outputs {what}, not a (batch, channels, ...) tensor; mask a layer "
                         "whose output is one tensor with channels on dimension 1")
    if channels and channels[-1] >= output.shape[1]:
        raise InputError(f"channel {channels[-1]} is out of range for layer {layer!r}, which has "
                         f"{output.shape[1]} channels (0..{output.shape[1] - 1})")
    return output


def _keep_mask(n_channels: int, masked: Sequence[int], device: torch.device) -> torch.Tensor:
    keep = torch.ones(n_channels, dtype=torch.bool, device=device)
    if masked:
        keep[torch.as_tensor(list(masked), dtype=torch.long, device=device)] = False
    return keep


def _view(t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) broadcastable against ``output`` (B, C, *spatial)."""
    return t.view(1, -1, *([1] * (output.dim() - 2)))


def _replacement(layer: str, output: torch.Tensor, mode: str, means: Mapping[str, Any] | None) -> torch.Tensor:
    if mode == "zero":
        return torch.zeros((), dtype=output.dtype, device=output.device)
    value = torch.as_tensor((means or {})[layer], dtype=output.dtype, device=output.device)
    if value.dim() == 1:
        if value.shape[0] != output.shape[1]:
            raise InputError(f"means[{layer!r}] has {value.shape[0]} values but the layer has {output.shape[1]} "
                             "channels; give one mean per channel (or a (C, *spatial) map)")
        return _view(value, output)
    if tuple(value.shape) != tuple(output.shape[1:]):
        raise InputError(f"means[{layer!r}] has shape {tuple(value.shape)}; give (C,) or {tuple(output.shape[1:])}")
    return value.unsqueeze(0)


def _validated(model: nn.Module, neurons: Neurons, mode: str, means: Mapping[str, Any] | None
               ) -> dict[str, list[int]]:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(neurons, Mapping):
        raise InputError("neurons must map layer names to channel lists, e.g. {'conv3': [1, 5]}")
    out = {}
    for layer, channels in neurons.items():
        resolve_layer(model, layer)
        out[layer] = _channels(layer, channels)
        if mode == "mean" and (means is None or layer not in means):
            raise InputError(f"mode='mean' needs means[{layer!r}] (per-channel means, e.g. from mean_activations)")
    return out


@contextmanager
def _hooks(model: nn.Module, hooks: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """Register ``{layer: forward_hook}`` for the duration; every handle removed on exit."""
    with ExitStack() as stack:
        for layer, hook in hooks.items():
            handle = resolve_layer(model, layer).register_forward_hook(hook)
            stack.callback(handle.remove)
        yield


@contextmanager
def mask_neurons(model: nn.Module, neurons: Neurons, *, mode: str = "zero",
                 means: Mapping[str, Any] | None = None) -> Iterator[nn.Module]:
    """Within the block, channels ``neurons[layer]`` of each layer output 0 (``mode="zero"``) or
    ``means[layer]`` (``mode="mean"``: ``(C,)`` per-channel values or a ``(C, *spatial)`` map).
    Yields ``model``. Channels out of range raise InputError at the first forward."""
    plan = _validated(model, neurons, mode, means)

    def make(layer: str, channels: list[int]) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
            out = _check_output(layer, output, channels)
            keep = _view(_keep_mask(out.shape[1], channels, out.device), out)
            return torch.where(keep, out, _replacement(layer, out, mode, means))
        return hook

    with _hooks(model, {layer: make(layer, chans) for layer, chans in plan.items() if chans}):
        yield model


@contextmanager
def retain_neurons(model: nn.Module, neurons: Neurons, *, mode: str = "zero",
                   means: Mapping[str, Any] | None = None) -> Iterator[nn.Module]:
    """Within the block, every channel of each layer in ``neurons`` is masked (as in
    :func:`mask_neurons`) except ``neurons[layer]``. Yields ``model``."""
    plan = _validated(model, neurons, mode, means)

    def make(layer: str, channels: list[int]) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
            out = _check_output(layer, output, channels)
            keep = _view(~_keep_mask(out.shape[1], channels, out.device), out)
            return torch.where(keep, out, _replacement(layer, out, mode, means))
        return hook

    with _hooks(model, {layer: make(layer, chans) for layer, chans in plan.items()}):
        yield model


@contextmanager
def mask_neuron_sets(model: nn.Module, layer: str, sets: Sequence[Iterable[int]], *, retain: bool = False,
                     mode: str = "zero", means: Mapping[str, Any] | None = None) -> Iterator[nn.Module]:
    """Batched masking: a batch of ``n * len(sets)`` rows is read as ``len(sets)`` blocks of ``n``
    rows, and block ``s`` runs with ``sets[s]`` masked at ``layer`` (with ``retain=True``: every
    channel but ``sets[s]``). Feed ``x.repeat(len(sets), ...)`` to evaluate every set on ``x`` at once."""
    if isinstance(sets, (str, bytes)) or not isinstance(sets, Sequence) or not sets:
        raise InputError("sets must be a non-empty sequence of channel lists")
    _validated(model, {layer: []}, mode, means)
    chosen = [_channels(layer, s) for s in sets]
    n_sets = len(chosen)

    def hook(_m: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
        out = _check_output(layer, output, max(chosen, key=lambda s: s[-1] if s else -1))
        if out.shape[0] % n_sets:
            raise InputError(f"a batch of {out.shape[0]} rows cannot be split into {n_sets} equal blocks; "
                             f"repeat the input {n_sets} times (x.repeat({n_sets}, ...))")
        keep = torch.stack([_keep_mask(out.shape[1], s, out.device) for s in chosen])  # (S, C)
        if retain:
            keep = ~keep
        rows = out.shape[0] // n_sets
        keep = keep.repeat_interleave(rows, dim=0).view(out.shape[0], out.shape[1], *([1] * (out.dim() - 2)))
        return torch.where(keep, out, _replacement(layer, out, mode, means))

    with _hooks(model, {layer: hook}):
        yield model


@torch.no_grad()
def mean_activations(model: nn.Module, layers: Sequence[str], batches: Iterable[torch.Tensor], *,
                     spatial: bool = False) -> dict[str, torch.Tensor]:
    """Mean output of each layer over ``batches`` of model inputs: ``(C,)`` per channel (over rows
    and positions), or with ``spatial=True`` the mean map ``(C, *spatial)``. For ``mode="mean"``."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def make(layer: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
            out = _check_output(layer, output, []).detach().double()
            if spatial or out.dim() == 2:
                s, n = out.sum(0), out.shape[0]
            else:
                s, n = out.transpose(0, 1).reshape(out.shape[1], -1).sum(1), out.shape[0] * out[0, 0].numel()
            sums[layer] = sums[layer] + s if layer in sums else s
            counts[layer] = counts.get(layer, 0) + n
        return hook

    for layer in layers:
        resolve_layer(model, layer)
    with _hooks(model, {layer: make(layer) for layer in layers}):
        for x in batches:
            model(x)
    if not sums:
        raise InputError("mean_activations got no batches")
    return {layer: (sums[layer] / counts[layer]).float() for layer in layers}
