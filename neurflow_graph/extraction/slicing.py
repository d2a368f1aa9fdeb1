"""Sub-networks between analysed layers, cut generically out of the model's torch.fx graph.

The model is traced once with torchvision's ``NodePathTracer`` (which knows torchvision's
quirks); each analysed layer's output is the value its module's ``forward`` returns. From that
graph we cut:

* ``prefix``: model input -> output of one layer (full activation maps, computed on demand);
* ``layer_slice``: output of layer l-1 -> output of layer l, the function phi^{l-1,l} of eq. 2.

A slice must depend on nothing but its input and the model's parameters/constants; a skip
connection from further down (DenseNet-style) is an ExtractionError naming the offending node.
In-place operations are rewritten out of place (later readers get the new value), so slices and
their sub-graphs can be fed leaf tensors that require grad.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx, nn

from neurflow_graph.errors import ExtractionError

_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


@dataclass
class TracedModel:
    """The model's fx graph and, for every analysed layer, the node holding its output."""

    graph_module: fx.GraphModule
    layer_nodes: dict[str, fx.Node]


def _tracer_class() -> type:
    from torchvision.models.feature_extraction import NodePathTracer

    class _LayerOutputTracer(NodePathTracer):  # type: ignore[misc, valid-type]
        """Records the value each analysed layer's module returns."""

        def __init__(self, layers: Sequence[str], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.watched = set(layers)
            self.outputs: dict[str, list[Any]] = {}

        def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
            out = super().call_module(m, forward, args, kwargs)
            try:
                name = self.path_of_module(m)
            except NameError:
                return out
            if name in self.watched:
                self.outputs.setdefault(name, []).append(out)
            return out

    return _LayerOutputTracer


def _torchvision_tracer_kwargs() -> dict[str, Any]:
    import torchvision

    leaves = [obj for _, obj in inspect.getmembers(torchvision.ops)
              if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    return {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaves}


def trace_layers(*, module: nn.Module, layers: Sequence[str]) -> TracedModel:
    """Trace ``module`` (in its current mode) and locate the output node of each of ``layers``."""
    layers = list(layers)
    if not layers:
        raise ExtractionError("no layers to analyse; give at least the logit layer")
    names = {n for n, _ in module.named_modules() if n}
    for name in layers:
        if name not in names:
            raise ExtractionError(f"layer {name!r} is not a module of the model; layers are named_modules() paths")
    tracer = _tracer_class()(layers, **_torchvision_tracer_kwargs())
    try:
        graph = tracer.trace(module)
    except Exception as e:  # fx raises many types (TraceError, TypeError, ...) on untraceable code
        raise ExtractionError(f"cannot trace the model with torch.fx ({type(e).__name__}: {str(e)[:200]}); "
                              "NeurFlow needs a model without data-dependent Python control flow") from e
    nodes: dict[str, fx.Node] = {}
    for name in layers:
        outs = tracer.outputs.get(name, [])
        if len(outs) != 1:
            raise ExtractionError(f"layer {name!r} runs {len(outs)} times in forward; analyse modules that run "
                                  "exactly once (not shared or unused ones)")
        if not isinstance(outs[0], fx.Proxy):
            raise ExtractionError(f"layer {name!r} returns {type(outs[0]).__name__}, not one tensor; "
                                  "analyse a module whose output is a tensor")
        nodes[name] = outs[0].node
    gm = fx.GraphModule(tracer.root, graph)
    _functionalize(gm.graph, gm)
    gm.recompile()
    return TracedModel(graph_module=gm, layer_nodes=nodes)


def _set_inplace_false(node: fx.Node) -> bool:
    """Rewrite ``f(..., inplace=True)`` as ``f(..., inplace=False)``; True when it was in place."""
    if node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}
        return True
    try:
        sig = inspect.signature(node.target)  # type: ignore[arg-type]
        bound = sig.bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    if bound.arguments.get("inplace") is True:
        bound.arguments["inplace"] = False
        node.args, node.kwargs = tuple(bound.args), dict(bound.kwargs)
        return True
    return False


def _functionalize(graph: fx.Graph, root: nn.Module) -> None:
    """Make every in-place op out of place; readers after it read its result instead."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        mutated: Any = node.args[0] if node.args else None
        inplace = False
        if node.op == "call_function":
            if node.target in _INPLACE_OPERATORS:
                node.target = _INPLACE_OPERATORS[node.target]
                inplace = True
            else:
                inplace = _set_inplace_false(node)
        elif node.op == "call_method" and isinstance(node.target, str):
            t = node.target
            if t.endswith("_") and not t.endswith("__") and hasattr(torch.Tensor, t[:-1]):
                node.target = t[:-1]
                inplace = True
        elif node.op == "call_module" and getattr(root.get_submodule(str(node.target)), "inplace", False) is True:
            if isinstance(mutated, fx.Node):
                with graph.inserting_before(node):
                    copy = graph.call_method("clone", (mutated,))
                node.args = (copy, *node.args[1:])
                order[copy] = order[node]
                inplace = True
        if inplace and isinstance(mutated, fx.Node):
            for user in list(mutated.users):
                if user is not node and order.get(user, -1) > order[node]:
                    user.replace_input_with(mutated, node)


def _cut(traced: TracedModel, start: fx.Node | None, end: fx.Node, *, what: str) -> fx.GraphModule:
    """A GraphModule computing ``end`` from ``start`` (a new placeholder ``x``), or from the model
    input when ``start`` is None."""
    needed: set[fx.Node] = set()
    stack = [end]
    while stack:
        n = stack.pop()
        if n in needed or n is start:
            continue
        needed.add(n)
        if n.op == "placeholder" and start is not None:
            reader = next((u.name for u in n.users if u in needed), n.name)
            raise ExtractionError(f"{what} depends on the model input other than through its lower layer "
                                  f"(via node {reader}); NeurFlow needs each listed layer to be computed from the "
                                  "next one alone: choose layers that cut the network, such as block outputs")
        stack.extend(n.all_input_nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if start is not None:
        x = graph.placeholder("x")
        env[start] = x
    inputs = [n for n in traced.graph_module.graph.nodes if n.op == "placeholder" and n in needed]
    if start is None and len(inputs) != 1:
        raise ExtractionError(f"the model's forward reads {len(inputs)} inputs; NeurFlow needs one image tensor")
    for n in traced.graph_module.graph.nodes:
        if n in needed:
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[end])
    gm = fx.GraphModule(traced.graph_module, graph)
    gm.eval()
    return gm


def layer_slice(*, traced: TracedModel, lower: str, upper: str) -> fx.GraphModule:
    """phi^{l-1,l}: ``(B, *maps of lower)`` -> ``(B, *output of upper)``."""
    for name in (lower, upper):
        if name not in traced.layer_nodes:
            raise ExtractionError(f"layer {name!r} was not traced; it is not in the analysed layer list")
    return _cut(traced, traced.layer_nodes[lower], traced.layer_nodes[upper], what=f"layer {upper!r}")


def prefix(*, traced: TracedModel, layer: str) -> fx.GraphModule:
    """Model input ``(B, 3, H, W)`` -> full output of ``layer``."""
    if layer not in traced.layer_nodes:
        raise ExtractionError(f"layer {layer!r} was not traced; it is not in the analysed layer list")
    return _cut(traced, None, traced.layer_nodes[layer], what=f"layer {layer!r}")
