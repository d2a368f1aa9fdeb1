"""The activation scan's layout: a scan-only copy of the model that computes the same layer outputs faster.

``fast`` (opt-in: ``extract --scan-layout fast``) folds each eval-mode ``Conv -> BatchNorm`` pair into the convolution
(``W' = W * s``, ``b' = (b - mean) * s + beta`` per output channel, ``s = gamma / sqrt(var + eps)``;
the BatchNorm becomes ``nn.Identity``) and stores 4-D convolution weights and the input in
``channels_last`` memory format; ``eager`` (the default) scans the user's module as it is (bit-exact with eager
PyTorch). The copy keeps every ``named_modules()`` path, shares every tensor it does not change with
the user's module and never modifies that module (no parameter, buffer, module or hook of it is
touched).

A pair is folded only where the fold cannot change what a forward hook sees: the convolution's sole
consumer in the model's torch.fx graph is the BatchNorm, each module runs once, neither holds a hook
or a parametrization (weight norm, ...), and neither is (nor ends) an analysed layer: a hook on an
analysed layer sees exactly the tensor it sees in eager mode, up to float rounding. A module in train mode is scanned eagerly (BatchNorm would
use batch statistics and update its running ones). Before it is used, the fast form is checked on one
sample against the eager module, layer by layer; a form that cannot be built or fails there (a model
that cannot be copied, an op or assert that rejects channels_last strides, an output that depends on
the layout: any exception) falls back to folding alone, then to eager, and says why in ``ScanForm.note``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.ig_graph import batchnorm_affine, eval_batchnorm
from neurflow_graph.extraction.slicing import TracedModel, trace_layers

SCAN_LAYOUTS: tuple[str, ...] = ("fast", "eager")
# Largest max|fast - eager| / max|eager| of an analysed layer's output on the check sample: float
# rounding of a fold is ~1e-7..1e-6 relative; anything near this bound is a different function.
CHECK_TOLERANCE = 1e-3
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class ScanForm:
    """What the scan runs: ``module`` (the user's own for ``eager``), ``layout`` (``eager``,
    ``channels_last``, ``folded`` or ``folded+channels_last``), the ``(conv, batchnorm)`` paths folded,
    and ``note`` (why a faster form was not used; empty when it was)."""

    module: nn.Module
    layout: str
    folded: tuple[tuple[str, str], ...] = ()
    note: str = ""
    channels_last: bool = field(default=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, 3, H, W)`` input in the form's memory format (same values)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def scan_form(*, module: nn.Module, layers: Sequence[str], layout: str, sample: torch.Tensor | None,
              traced: TracedModel | None = None) -> ScanForm:
    """The scan form of ``module`` for ``layout`` (one of :data:`SCAN_LAYOUTS`), checked on ``sample``
    (``(1, 3, H, W)`` on the module's device; unused, may be None, for ``eager``) against the eager
    module. ``traced``: the model's
    :func:`~neurflow_graph.extraction.slicing.trace_layers` graph for ``layers`` (traced here when None)."""
    if layout not in SCAN_LAYOUTS:
        raise InputError(f"scan_layout must be one of {', '.join(SCAN_LAYOUTS)}, got {layout!r}")
    if layout == "eager":
        return ScanForm(module=module, layout="eager")
    if module.training:
        return ScanForm(module=module, layout="eager", note="the module is in train mode")
    if sample is None:
        raise InputError("the fast scan layout needs a sample input to check the fast form against eager")
    if traced is None:
        traced = trace_layers(module=module, layers=layers)
    pairs = _foldable_pairs(module, traced, layers)
    tried: list[str] = []
    for fold, channels_last in ((True, True), (True, False)) if pairs else ((False, True),):
        name = "+".join(p for p, on in (("folded", fold), ("channels_last", channels_last)) if on)
        try:  # a model the copy or the fast form breaks (unpicklable attributes, its own asserts) scans eagerly
            form = _build(module, pairs if fold else (), channels_last)
            problem = _check(module, form, layers, sample)
        except Exception as e:  # noqa: BLE001 - any failure of the faster form means: do not use it
            problem = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        if problem is None:
            form.note = "; ".join(tried)
            return form
        tried.append(f"{name}: {problem}")
    return ScanForm(module=module, layout="eager", note="; ".join(tried))


# ---------------------------------------------------------------------------- private


def _foldable_pairs(module: nn.Module, traced: TracedModel, layers: Sequence[str]) -> list[tuple[str, str]]:
    """``(conv path, batchnorm path)`` of every pair in ``traced``'s graph that may be folded (module doc)."""
    graph = traced.graph_module.graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    outputs = set(traced.layer_nodes.values())
    analysed = set(layers)
    named = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        (user,) = node.users
        conv_path, bn_path = str(node.target), str(user.target)
        conv, bn = named.get(conv_path), named.get(bn_path) if user.op == "call_module" else None
        if not (isinstance(conv, _CONVS) and bn is not None and eval_batchnorm(bn)):
            continue
        if user.args != (node,) or user.kwargs or bn.num_features != conv.out_channels:
            continue
        if calls[conv_path] != 1 or calls[bn_path] != 1 or node in outputs or user in outputs:
            continue
        if {conv_path, bn_path} & analysed or _has_hooks(conv) or _has_hooks(bn):
            continue
        if parametrize.is_parametrized(conv) or parametrize.is_parametrized(bn):
            continue
        pairs.append((conv_path, bn_path))
    return pairs


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _build(module: nn.Module, pairs: Sequence[tuple[str, str]], channels_last: bool) -> ScanForm:
    """A copy of ``module`` (sharing every tensor it does not replace) with ``pairs`` folded and, with
    ``channels_last``, its 4-D convolution weights in that memory format."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    scan = copy.deepcopy(module, memo)
    for conv_path, bn_path in pairs:
        conv, bn = scan.get_submodule(conv_path), module.get_submodule(bn_path)
        scale, shift = batchnorm_affine(bn)
        with torch.no_grad():
            w = conv.weight * scale.to(conv.weight.dtype).view(-1, *([1] * (conv.weight.dim() - 1)))
            b = shift.to(w.dtype) if conv.bias is None else conv.bias * scale.to(w.dtype) + shift.to(w.dtype)
        conv.weight = nn.Parameter(w, requires_grad=False)
        conv.bias = nn.Parameter(b, requires_grad=False)
        parent, _, child = bn_path.rpartition(".")
        setattr(scan.get_submodule(parent) if parent else scan, child, nn.Identity())
    if channels_last:
        for _, m in scan.named_modules():
            if isinstance(m, nn.Conv2d) and m.weight.dim() == 4 and not parametrize.is_parametrized(m):
                m.weight = nn.Parameter(m.weight.detach().contiguous(memory_format=torch.channels_last),
                                        requires_grad=False)
    layout = "+".join(part for part, on in (("folded", bool(pairs)), ("channels_last", channels_last)) if on)
    return ScanForm(module=scan, layout=layout, folded=tuple(pairs), channels_last=channels_last)


@contextmanager
def _layer_outputs(module: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks recording each layer's last output (detached); removed on exit."""
    named = dict(module.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = [named[name].register_forward_hook(
        lambda _m, _i, o, name=name: out.__setitem__(name, o.detach()) if isinstance(o, torch.Tensor) else None)
        for name in layers if name in named]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def _check(module: nn.Module, form: ScanForm, layers: Sequence[str], sample: torch.Tensor) -> str | None:
    """None when every analysed layer's output of ``form`` on ``sample`` matches the eager module's
    (:data:`CHECK_TOLERANCE`), else what went wrong (one line)."""
    with torch.no_grad():
        with _layer_outputs(module, layers) as want:
            module(sample)
        with _layer_outputs(form.module, layers) as got:
            form.module(form.prepare(sample))
    for name in layers:
        if name not in want or name not in got or got[name].shape != want[name].shape:
            return f"layer {name!r} gives no output of the eager shape"
        ref = want[name].float()
        diff = float((got[name].float() - ref).abs().max()) if ref.numel() else 0.0
        if not diff <= CHECK_TOLERANCE * float(ref.abs().max()) + 1e-30:
            return f"layer {name!r} differs from eager by {diff:.2e} (max |eager| {float(ref.abs().max()):.2e})"
    return None
