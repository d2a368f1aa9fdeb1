"""Projecting directions out of a layer's activations, inside a context manager.

``project_out(model, layer, basis)`` replaces the output ``y`` of ``layer`` (``(B, C, *spatial)``
or ``(B, C)``) by its projection onto the orthogonal complement of ``span(basis)``, channel-wise at
every position: ``y - Q Q^T y`` with ``Q`` an orthonormal basis of the span of the rows of
``basis`` (``(k, C)``; any full-rank rows, orthonormalised here by QR). This is exactly what an
inserted linear layer ``I - Q Q^T`` (a bias-free 1x1 convolution for conv maps) would compute.
Zeroing channels ``S`` is the special case ``basis = one-hot rows of S``.

With ``where="input"`` the hook is a forward *pre*-hook that projects the module's first input
instead (used for a ReLU whose input no module returns). The hook exists only inside the ``with``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from neurflow_graph.errors import InputError
from neurflow_graph.interventions.masking import resolve_layer

WHERE: tuple[str, ...] = ("output", "input")


def orthonormal_rows(basis: Any) -> np.ndarray:
    """``(k, C)`` rows -> ``(k, C)`` orthonormal rows spanning the same space (float64); InputError
    when the rows are not finite or not linearly independent."""
    b = np.asarray(basis, dtype=np.float64)
    if b.ndim == 1:
        b = b[None, :]
    if b.ndim != 2:
        raise InputError(f"basis must be a (k, channels) array, got shape {b.shape}")
    if b.shape[0] == 0:
        return b
    if not np.all(np.isfinite(b)):
        raise InputError("basis has non-finite values")
    if b.shape[0] > b.shape[1]:
        raise InputError(f"basis has {b.shape[0]} rows for {b.shape[1]} channels; at most one row per channel")
    q, r = np.linalg.qr(b.T)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * max(diag.max(), 1e-300):
        raise InputError("basis rows are linearly dependent; give independent directions")
    return q.T


def project_tensor(y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``y - Q^T (Q y)`` over dim 1 of ``y`` (``(B, C, *spatial)`` or ``(B, C)``); ``q`` is ``(k, C)``
    with orthonormal rows, in ``y``'s dtype and device."""
    if q.shape[0] == 0:
        return y
    coef = torch.einsum("kc,bc...->bk...", q, y)
    return y - torch.einsum("kc,bk...->bc...", q, coef)


def _check(layer: str, y: Any, q: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.dim() < 2:
        what = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"layer {layer!r} gives {what}, not a (batch, channels, ...) tensor")
    if y.shape[1] != q.shape[1]:
        raise InputError(f"basis has {q.shape[1]} channels but layer {layer!r} has {y.shape[1]}")
    return y


@contextmanager
def project_out(model: nn.Module, layer: str, basis: Any, *, where: str = "output") -> Iterator[nn.Module]:
    """Within the block, ``layer``'s output (``where="input"``: its first input) has ``span(basis)``
    projected out (see the module doc). ``basis``: ``(k, C)`` array or tensor. Yields ``model``."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if where not in WHERE:
        raise InputError(f"where must be one of {', '.join(WHERE)}, got {where!r}")
    target = resolve_layer(model, layer)
    if isinstance(basis, torch.Tensor):
        basis = basis.detach().cpu().double().numpy()
    q64 = torch.from_numpy(orthonormal_rows(basis))
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def q_for(y: torch.Tensor) -> torch.Tensor:
        key = (y.dtype, y.device)
        if key not in cache:
            cache[key] = q64.to(dtype=y.dtype, device=y.device)
        return cache[key]

    if where == "output":
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
            y = _check(layer, output, q64)
            return project_tensor(y, q_for(y))
        handle = target.register_forward_hook(hook)
    else:
        def pre_hook(_m: nn.Module, inputs: Any) -> Any:
            y = _check(layer, inputs[0] if inputs else None, q64)
            return (project_tensor(y, q_for(y)), *inputs[1:])
        handle = target.register_forward_pre_hook(pre_hook)
    try:
        yield model
    finally:
        handle.remove()
