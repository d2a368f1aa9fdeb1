"""Partition of a layer slice phi^{l-1,l} that makes batched integrated gradients cheap, exactly.

Integrated gradients evaluate the slice at ``alpha_n * X`` for every step ``n``. Two exact
rewrites remove most of that work (see docs/extraction.md, "IG engine"):

* **Head.** The longest run of operations from the input whose Jacobian is the same at every
  ``alpha > 0``: affine ops (conv, linear, eval BatchNorm, average pooling, reshapes, sums) and
  positively homogeneous ones (ReLU, max pooling) applied before any bias. On it,
  ``h(alpha X) = alpha (h(X) - h(0)) + h(0)`` and ``J_h(alpha X) = J_h(X)``, so the head runs once
  per patch (not per step) and its backward once per (target, patch) on the step-summed gradient.
  When the whole slice is head, the quadrature collapses to one point.
* **Channel-wise suffix.** The ops before the output through which output channel ``a`` reads
  only one channel of each input (activations, BatchNorm, pooling, residual sums, channel
  concatenation). One backward of ``sum_a phi_a`` through it gives every target's gradient at
  its *boundaries* at once; a conv/linear boundary then needs only row ``a`` of its weight, so
  per-target backward work is that of a one-output-channel conv instead of the whole slice.

What is left, the *body* (frontier -> boundaries), is back-propagated once per target with
``vmap``-batched cotangents.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

# ---------------------------------------------------------------------------- op tables

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_AFFINE_MODULES = (*_CONVS, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_SHAPE_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
              nn.AdaptiveMaxPool3d)
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, *_MAX_POOLS)
_POOL_DIMS: dict[type, int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
}
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                        nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity)

_PRESERVE_FUNCS: set[Any] = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
                             torch.permute, torch.narrow, torch.mean, operator.getitem, operator.neg, torch.neg,
                             F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                             F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_PRESERVE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "contiguous",
                     "mean", "clone", "narrow", "neg"}
_HOMOGENEOUS_FUNCS: set[Any] = {F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                                F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_ADD_FUNCS: set[Any] = {operator.add, torch.add, operator.sub, torch.sub}
_MUL_FUNCS: set[Any] = {operator.mul, torch.mul}
_DIV_FUNCS: set[Any] = {operator.truediv, torch.div}
_ELEMENTWISE_FUNCS: set[Any] = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardswish,
                                F.hardsigmoid, F.hardtanh, torch.sigmoid, torch.tanh, F.mish, F.softplus}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_POOL_FUNCS: set[Any] = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                         F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}

LIN, AFF, CONST = "lin", "aff", "const"


def _nodes_in(value: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, lambda n: out.append(n))  # type: ignore[func-returns-value]
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _eval_batchnorm(m: nn.Module) -> bool:
    return (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training
            and m.track_running_stats and m.running_mean is not None)


def _method_or_function(node: fx.Node) -> tuple[str | None, Any]:
    """(method name, None) for call_method, (None, target) for call_function."""
    return (str(node.target), None) if node.op == "call_method" else (None, node.target)


def _keyword(node: fx.Node, name: str, default: Any) -> Any:
    return node.kwargs.get(name, default)


def channel_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` per channel (dim 1): an eval-mode BatchNorm, folded."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


def batchnorm_affine(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each ``(C,)``, with ``m(x) == x * scale + shift`` per channel for an
    eval-mode BatchNorm ``m`` (running statistics), up to float rounding."""
    with torch.no_grad():
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -m.running_mean * scale
        if m.bias is not None:
            shift = shift + m.bias
    return scale, shift


def eval_batchnorm(m: nn.Module) -> bool:
    """Whether ``m`` is a BatchNorm that normalises with its running statistics (eval mode)."""
    return _eval_batchnorm(m)


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with every eval-mode BatchNorm replaced by :func:`channel_affine`.

    Same function up to float rounding; its (vmapped) backward is a plain multiplication."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    attrs: dict[str, Any] = {}
    for node in gm.graph.nodes:
        m = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if m is not None and _eval_batchnorm(m) and len(node.args) == 1 and not node.kwargs:
            scale, shift = batchnorm_affine(m)
            name = "folded_" + str(node.target).replace(".", "_")
            attrs[f"{name}_scale"], attrs[f"{name}_shift"] = scale.detach().clone(), shift.detach().clone()
            env[node] = graph.call_function(channel_affine, (env[node.args[0]], graph.get_attr(f"{name}_scale"),
                                                             graph.get_attr(f"{name}_shift")))
            continue
        if node.op == "call_module":
            attrs[str(node.target)] = m
        elif node.op == "get_attr":
            attrs[str(node.target)] = fetch_attr(gm, str(node.target))
        env[node] = graph.node_copy(node, lambda a: env[a])
    out = fx.GraphModule(attrs, graph)
    out.eval()
    return out


def fetch_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------- head (step-invariant Jacobian)


def _head_kind(node: fx.Node, kinds: dict[fx.Node, str], root: nn.Module) -> str | None:
    """LIN (h(aX) = a h(X)), AFF (affine in X) or None (not head) for ``node`` given its inputs' kinds."""
    if not node.args or not isinstance(node.args[0], (fx.Node, list, tuple)):
        return None
    first = node.args[0]
    rest_nodes = _nodes_in((node.args[1:], node.kwargs))
    rest_const = all(kinds.get(n) == CONST for n in rest_nodes)
    k = kinds.get(first) if isinstance(first, fx.Node) else None

    if node.op == "call_module":
        m = root.get_submodule(str(node.target))
        if k not in (LIN, AFF) or rest_nodes or len(node.args) != 1:
            return None
        if isinstance(m, _AFFINE_MODULES):
            return AFF if (m.bias is not None or k == AFF) else LIN
        if _eval_batchnorm(m):
            return AFF
        if isinstance(m, _SHAPE_MODULES) or (isinstance(m, _DROPOUTS) and not m.training):
            return k
        if isinstance(m, _HOMOGENEOUS_MODULES) and not getattr(m, "return_indices", False):
            return LIN if k == LIN else None
        return None

    method, fn = _method_or_function(node)
    if fn is torch.cat:
        tensors = first if isinstance(first, (list, tuple)) else None
        if tensors is None or not rest_const or not all(isinstance(t, fx.Node) for t in tensors):
            return None
        ks = [kinds.get(t) for t in tensors]
        if not all(x in (LIN, AFF, CONST) for x in ks) or not any(x in (LIN, AFF) for x in ks):
            return None
        return LIN if all(x == LIN for x in ks) else AFF
    if k not in (LIN, AFF):
        return None
    if fn in _ADD_FUNCS or method in ("add", "sub"):
        other = node.args[1] if len(node.args) > 1 else None
        if not all(kinds.get(n) == CONST for n in _nodes_in((node.args[2:], node.kwargs))):
            return None
        if isinstance(other, fx.Node) and kinds.get(other) in (LIN, AFF):
            return LIN if (k == LIN and kinds[other] == LIN) else AFF
        if _is_number(other) or (isinstance(other, fx.Node) and kinds.get(other) == CONST):
            return AFF
        return None
    if fn in _MUL_FUNCS or fn in _DIV_FUNCS or method in ("mul", "div"):
        other = node.args[1] if len(node.args) > 1 else None
        if node.kwargs or len(node.args) != 2:
            return None
        if _is_number(other) or (isinstance(other, fx.Node) and kinds.get(other) == CONST):
            return k
        return None
    if not rest_const:
        return None
    if fn is channel_affine:
        return AFF
    if fn in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
        training = _keyword(node, "training", node.args[2] if len(node.args) > 2 else True)
        return k if training is False else None
    if fn in _PRESERVE_FUNCS or method in _PRESERVE_METHODS:
        return k
    if fn in _HOMOGENEOUS_FUNCS or method == "relu":
        if _keyword(node, "return_indices", False):
            return None
        return LIN if k == LIN else None
    return None


def head_kinds(graph: fx.Graph, root: nn.Module) -> dict[fx.Node, str]:
    """Kind of every node: LIN/AFF for head nodes, CONST for input-independent ones; others absent."""
    kinds: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            kinds[node] = LIN
        elif node.op == "get_attr":
            kinds[node] = CONST
        elif node.op == "output":
            continue
        elif all(kinds.get(n) == CONST for n in node.all_input_nodes):
            kinds[node] = CONST
        else:
            kind = _head_kind(node, kinds, root)
            if kind is not None:
                kinds[node] = kind
    return kinds


# ---------------------------------------------------------------------------- building sub-graphs


def ancestors(targets: Iterable[fx.Node], stop: set[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(targets)
    while stack:
        n = stack.pop()
        if n in seen or n in stop:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def subgraph(gm: fx.GraphModule, inputs: list[fx.Node], outputs: list[fx.Node] | fx.Node) -> fx.GraphModule:
    """A GraphModule computing ``outputs`` (a node, or a tuple of nodes) from ``inputs`` (new
    placeholders). The graph must be free of in-place ops (``slicing`` rewrites them)."""
    wanted = [outputs] if isinstance(outputs, fx.Node) else list(outputs)
    stop = set(inputs)
    needed = ancestors(wanted, stop)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, n in enumerate(inputs):
        env[n] = graph.placeholder(f"in_{i}")
    for n in gm.graph.nodes:
        if n in needed and n not in env:
            if n.op == "placeholder":
                raise RuntimeError(f"subgraph needs the input {n.name} that was not given")  # a bug, not user error
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[outputs] if isinstance(outputs, fx.Node) else tuple(env[n] for n in wanted))
    out = fx.GraphModule(gm, graph)
    out.eval()
    return out


def output_args(gm: fx.GraphModule) -> tuple[fx.Node, ...]:
    """The nodes a multi-output GraphModule (one built by :func:`subgraph` with a list) returns."""
    value = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def output_node(gm: fx.GraphModule) -> fx.Node:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    value = out.args[0]
    if not isinstance(value, fx.Node):
        raise RuntimeError("a layer slice must return one node")  # slicing guarantees this
    return value


# ---------------------------------------------------------------------------- channel-wise suffix


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _channel_routes(node: fx.Node, root: nn.Module) -> list[tuple[fx.Node, np.ndarray]] | None:
    """For a channel-wise ``node``: (input, route) pairs with route[c] = the input channel output
    channel ``c`` reads (-1: none). None when the node mixes channels (or is not understood)."""
    out = node_shape(node)
    if out is None or len(out) < 2:
        return None
    channels = out[1]
    ident = np.arange(channels)
    first = node.args[0] if node.args else None

    def unary(require_same_shape: bool = True) -> list[tuple[fx.Node, np.ndarray]] | None:
        if not isinstance(first, fx.Node) or _nodes_in((node.args[1:], node.kwargs)):
            return None
        shape = node_shape(first)
        if shape is None or (require_same_shape and shape != out) or shape[:2] != out[:2]:
            return None
        return [(first, ident)]

    if node.op == "call_module":
        m = root.get_submodule(str(node.target))
        if isinstance(m, _ELEMENTWISE_MODULES) or _eval_batchnorm(m) or (isinstance(m, _DROPOUTS) and not m.training):
            return unary()
        dims = _POOL_DIMS.get(type(m))
        if dims is not None and not getattr(m, "return_indices", False):
            shape = node_shape(first) if isinstance(first, fx.Node) else None
            return unary(require_same_shape=False) if shape is not None and len(shape) == dims + 2 else None
        return None
    if node.op not in ("call_function", "call_method"):
        return None
    method, fn = _method_or_function(node)
    if fn is channel_affine:
        if not isinstance(first, fx.Node) or node_shape(first) != out or node.kwargs:
            return None
        return [(first, ident)] if all(isinstance(a, fx.Node) and a.op == "get_attr" for a in node.args[1:]) else None
    if fn is torch.cat:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        tensors = first
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
            return None
        if not isinstance(dim, int) or dim % len(out) != 1:
            return None
        routes, offset = [], 0
        for t in tensors:
            shape = node_shape(t)
            if shape is None or len(shape) != len(out):
                return None
            route = ident - offset
            route[(route < 0) | (route >= shape[1])] = -1
            routes.append((t, route))
            offset += shape[1]
        return routes if offset == channels else None
    if fn in _ADD_FUNCS or fn in _MUL_FUNCS or method in ("add", "sub", "mul"):
        if len(node.args) != 2 or node.kwargs:
            return None
        pairs = []
        for operand in node.args:
            if isinstance(operand, fx.Node):
                shape = node_shape(operand)
                if shape is None or len(shape) != len(out) or shape[1] != channels or operand.op == "get_attr":
                    return None
                pairs.append((operand, ident))
            elif not _is_number(operand):
                return None
        return pairs or None
    if fn in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
        training = _keyword(node, "training", node.args[2] if len(node.args) > 2 else True)
        if training is not False or not isinstance(first, fx.Node):
            return None
        shape = node_shape(first)
        return [(first, ident)] if shape == out else None
    if fn in _ELEMENTWISE_FUNCS or method in _ELEMENTWISE_METHODS:
        if not isinstance(first, fx.Node) or _nodes_in((node.args[1:], node.kwargs)):
            return None
        return [(first, ident)] if node_shape(first) == out else None
    if fn in _POOL_FUNCS:
        if not isinstance(first, fx.Node) or _nodes_in((node.args[1:], node.kwargs)):
            return None
        if _keyword(node, "return_indices", False):
            return None
        shape = node_shape(first)
        return [(first, ident)] if shape is not None and len(shape) >= 3 and shape[:2] == out[:2] else None
    return None


@dataclass
class Boundary:
    """A value the suffix reads. ``module`` is set for a conv/linear whose weight row can be sliced
    (its input is then back-propagated instead of its output). ``route[a]``: channel of this value
    that target ``a`` reads (-1: none)."""

    node: fx.Node
    route: np.ndarray
    module: nn.Module | None = None


def sliceable(node: fx.Node, root: nn.Module) -> nn.Module | None:
    """The conv (groups 1) or linear (2-d input) module ``node`` applies to one input, else None."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    m = root.get_submodule(str(node.target))
    if isinstance(m, _CONVS) and m.groups == 1:
        return m
    in_shape = node_shape(node.args[0])
    if isinstance(m, nn.Linear) and in_shape is not None and len(in_shape) == 2:
        return m
    return None


def split_suffix(tail: fx.GraphModule) -> tuple[list[Boundary], set[fx.Node], dict[fx.Node, np.ndarray]]:
    """Boundaries, channel-wise suffix nodes of ``tail`` (whose nodes carry ShapeProp metadata), and
    for every suffix node and boundary the channel each output channel reads there (-1: none).

    Falls back to an empty suffix with the output as the only boundary when the routing is not
    one-to-one (a boundary channel read by two output channels)."""
    out_node = output_node(tail)
    out_shape = node_shape(out_node)
    if out_shape is None or len(out_shape) < 2:
        raise RuntimeError("layer output without a channel dimension reached the IG engine")  # scan rejects these
    channels = out_shape[1]
    suffix: set[fx.Node] = set()
    routes: dict[fx.Node, list[tuple[fx.Node, np.ndarray]]] = {}
    for node in reversed(list(tail.graph.nodes)):
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node is not out_node and not all(u in suffix for u in node.users):
            continue
        r = _channel_routes(node, tail)
        if r is not None:
            suffix.add(node)
            routes[node] = r

    def fallback() -> tuple[list[Boundary], set[fx.Node], dict[fx.Node, np.ndarray]]:
        ident = np.arange(channels)
        return [Boundary(out_node, ident, sliceable(out_node, tail))], set(), {out_node: ident}

    if out_node not in suffix:
        return fallback()
    chan: dict[fx.Node, np.ndarray] = {out_node: np.arange(channels)}
    order = {n: i for i, n in enumerate(tail.graph.nodes)}
    for node in sorted(suffix, key=lambda n: -order[n]):
        here = chan.get(node)
        if here is None:
            continue
        for inp, route in routes[node]:
            mapped = np.where(here >= 0, route[np.clip(here, 0, None)], -1)
            if inp in chan:
                prev = chan[inp]
                if np.any((prev >= 0) & (mapped >= 0) & (prev != mapped)):
                    return fallback()
                chan[inp] = np.maximum(prev, mapped)
            else:
                chan[inp] = mapped
    boundaries = []
    for node in sorted((n for n in chan if n not in suffix), key=lambda n: order[n]):
        route = chan[node]
        used = route[route >= 0]
        if len(np.unique(used)) != len(used):
            return fallback()
        boundaries.append(Boundary(node, route, sliceable(node, tail)))
    return boundaries, suffix, chan


# ---------------------------------------------------------------------------- cost model


def flops_per_row(gm: fx.GraphModule, nodes: Iterable[fx.Node] | None = None) -> float:
    """Multiply-adds of one row through ``nodes`` (all of ``gm`` by default), from ShapeProp metadata;
    elementwise ops count one per output element."""
    total = 0.0
    for node in (gm.graph.nodes if nodes is None else nodes):
        shape = node_shape(node)
        if shape is None or node.op in ("placeholder", "output", "get_attr"):
            continue
        numel = float(np.prod(shape[1:])) if len(shape) > 1 else 1.0
        total += numel * module_fan_in(node, gm)
    return total


def module_fan_in(node: fx.Node, gm: fx.GraphModule) -> float:
    """Multiply-adds per output element of a conv/linear node; 1 for anything else."""
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if isinstance(m, _CONVS):
            return float(m.in_channels // m.groups * int(np.prod(m.kernel_size)))
        if isinstance(m, nn.Linear):
            return float(m.in_features)
    return 1.0


def shape_prop(gm: fx.GraphModule, *example: torch.Tensor) -> None:
    """Annotate ``gm``'s nodes with shapes (``node.meta['tensor_meta']``) from one forward on ``example``."""
    with torch.no_grad():
        ShapeProp(gm).propagate(*example)


@dataclass
class Costs:
    """Per-row multiply-adds used to choose the slot count (see ``choose_slots``)."""

    tail_forward: float = 0.0
    body_backward_per_slot: float = 0.0
    head_forward: float = 0.0
    head_backward_per_slot: float = 0.0


def choose_slots(*, targets_per_patch: Iterable[int], costs: Costs, steps: int,
                 cap: Callable[[int], bool] | None = None) -> int:
    """The number S of targets sharing one forward row minimising
    sum_p ceil(t_p / S) * (steps * (F + S * B) + H_f + S * H_b); ties go to the smaller S."""
    counts = np.asarray([t for t in targets_per_patch if t > 0], dtype=np.int64)
    if counts.size == 0:
        return 1
    best, best_cost = 1, float("inf")
    for s in range(1, int(counts.max()) + 1):
        if cap is not None and not cap(s):
            break
        copies = float(np.ceil(counts / s).sum())
        cost = copies * (steps * (costs.tail_forward + s * costs.body_backward_per_slot)
                         + costs.head_forward + s * costs.head_backward_per_slot)
        if cost < best_cost * (1 - 1e-12):
            best, best_cost = s, cost
    return best
