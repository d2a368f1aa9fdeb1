"""Where a layer's pre- and post-ReLU activations live: the site rule, found by one probe forward.

A *site* is one activation space of an analysed layer ``L`` (a ``named_modules()`` path):
``"pre"`` (before a ReLU), ``"post"`` (after it) or ``"out"`` (``L``'s output when no ReLU is next
to it). :func:`find_sites` runs one forward pass with hooks on every module (and a
``TorchFunctionMode`` that sees functional ``relu`` calls) and applies this rule, by tensor
identity, to what ran:

1. ``L`` is itself an ``nn.ReLU``: pre = its input, post = its output.
2. ``L`` ends in a ReLU: its output *is* the output of a ReLU module inside it (``Sequential(conv,
   bn, ReLU)``) or of a functional ``relu`` called inside it. post = ``L``'s output, pre = that
   ReLU's input.
3. A ReLU follows ``L``: an ``nn.ReLU`` (in place or not) or a functional ``relu`` takes ``L``'s
   output as its input. pre = ``L``'s output, post = that ReLU's output.
4. Otherwise ``L`` has the single site ``"out"`` (its output).

Post-ReLU activations are always computed as ``relu(pre)`` from the captured pre tensor (ReLU is
elementwise), so capture needs one hook per layer. A site also records its *hook point*, the
module whose output (or input) carries it, for interventions; a site whose tensor no module
returns (a functional relu's output, the input of a ReLU that no module produced) has
``module=None`` for that role and cannot be ablated with module hooks (it is still analysed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from neurflow_graph.errors import InputError

SITE_NAMES: tuple[str, ...] = ("pre", "post", "out")
_RELU_FUNCS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu_,
               torch.Tensor.relu, torch.Tensor.relu_}


@dataclass(frozen=True)
class HookPoint:
    """A tensor as a module hook sees it: ``module``'s output, or its first input (``where="input"``)."""

    module: str
    where: str = "output"


@dataclass(frozen=True)
class LayerSites:
    """The sites of one analysed layer.

    ``capture``: where the layer's base tensor is read (pre-ReLU when a ReLU is adjacent, else the
    output; rule 2 without a capturable pre: the post-ReLU output). ``base``: the site name of
    that tensor. ``sites``: the site names analysed (``("pre", "post")``, ``("out",)`` or
    ``("post",)``). ``points``: site name -> hook point for interventions, None when no module
    carries it. ``rule``: 1..4 of the module doc. ``own``: the site equal to ``L``'s own output
    (the space of the circuit's neurons of that layer)."""

    layer: str
    capture: HookPoint
    base: str
    sites: tuple[str, ...]
    points: dict[str, HookPoint | None]
    rule: int
    own: str
    relu: str | None = None        # the ReLU module or "functional relu"


class _ReluCalls(TorchFunctionMode):
    """Records functional relu calls as (input tensor, output tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, Any]] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _RELU_FUNCS and args:
            self.calls.append((args[0], out))
        return out


@dataclass
class _Event:
    name: str
    module: nn.Module
    inputs: tuple[Any, ...]
    output: Any


def _probe(model: nn.Module, x: torch.Tensor) -> tuple[list[_Event], list[tuple[Any, Any]], list[tuple[str, Any]]]:
    """One no-grad forward: (module events in completion order, relu calls, (module, input) at start).

    Only tensor identities are used (in-place ReLUs change values, never identities)."""
    events: list[_Event] = []
    starts: list[tuple[str, Any]] = []
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue
        handles.append(m.register_forward_pre_hook(
            lambda mod, inputs, name=name: starts.append((name, inputs[0] if inputs else None))))
        handles.append(m.register_forward_hook(
            lambda mod, inputs, output, name=name: events.append(_Event(name, mod, tuple(inputs), output))))
    mode = _ReluCalls()
    try:
        with torch.no_grad(), mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return events, mode.calls, starts


def _is_relu(m: nn.Module) -> bool:
    return isinstance(m, nn.ReLU)


def find_sites(model: nn.Module, layers: Sequence[str], example: torch.Tensor) -> dict[str, LayerSites]:
    """The sites of each of ``layers`` (see the module doc) from one forward of ``example`` ``(B, ...)``."""
    named = dict(model.named_modules())
    for layer in layers:
        if not layer or layer not in named:
            raise InputError(f"layer {layer!r} is not a module of the model; layers are named_modules() paths")
    events, relu_calls, _starts = _probe(model, example)
    order = {id(e): i for i, e in enumerate(events)}
    out: dict[str, LayerSites] = {}
    for layer in layers:
        mine = [e for e in events if e.name == layer]
        if len(mine) != 1:
            raise InputError(f"layer {layer!r} ran {len(mine)} times in one forward pass; analyse a module that "
                             "runs exactly once")
        ev = mine[0]
        y = ev.output
        if not isinstance(y, torch.Tensor) or y.dim() < 2:
            raise InputError(f"layer {layer!r} does not return one (batch, channels, ...) tensor")

        def producer(t: Any, before: _Event) -> str | None:
            """The last module (completed before ``before``) whose output is ``t``, not inside ``layer``'s ReLU."""
            hits = [e for e in events if e.output is t and order[id(e)] < order[id(before)]]
            return hits[-1].name if hits else None

        post_point = HookPoint(layer)
        # rule 1
        if _is_relu(ev.module):
            pre_t = ev.inputs[0] if ev.inputs else None
            p = producer(pre_t, ev)
            out[layer] = _two(layer, p, HookPoint(layer, "input"), post_point, rule=1, own="post", relu=layer)
            continue
        # rule 2: the layer's output is a ReLU's output computed inside it
        inner = [e for e in events if e.name.startswith(layer + ".") and _is_relu(e.module)
                 and e.output is y and order[id(e)] < order[id(ev)]]
        if inner:
            r = inner[-1]
            p = producer(r.inputs[0], r) if r.inputs else None
            if p == layer:
                p = None
            out[layer] = _two(layer, p, HookPoint(r.name, "input"), post_point, rule=2, own="post", relu=r.name)
            continue
        fn_inner = [(i, o) for i, o in relu_calls if o is y and i is not y]
        if fn_inner:
            p = producer(fn_inner[-1][0], ev)
            if p is not None:
                out[layer] = _two(layer, p, None, post_point, rule=2, own="post", relu="functional relu")
            else:
                out[layer] = LayerSites(layer=layer, capture=post_point, base="post", sites=("post",),
                                        points={"post": post_point}, rule=2, own="post", relu="functional relu")
            continue
        # rule 3: a ReLU module, or a functional relu, reads the layer's output
        after = [e for e in events if _is_relu(e.module) and e.inputs and e.inputs[0] is y and e.name != layer
                 and not e.name.startswith(layer + ".")]
        if after:
            r = after[0]
            post = HookPoint(r.name)
            out[layer] = LayerSites(layer=layer, capture=HookPoint(layer), base="pre", sites=("pre", "post"),
                                    points={"pre": HookPoint(layer), "post": post}, rule=3, own="pre", relu=r.name)
            continue
        if any(i is y for i, _ in relu_calls):
            out[layer] = LayerSites(layer=layer, capture=HookPoint(layer), base="pre", sites=("pre", "post"),
                                    points={"pre": HookPoint(layer), "post": None}, rule=3, own="pre",
                                    relu="functional relu")
            continue
        out[layer] = LayerSites(layer=layer, capture=HookPoint(layer), base="out", sites=("out",),
                                points={"out": HookPoint(layer)}, rule=4, own="out")
    return out


def _two(layer: str, producer: str | None, fallback: HookPoint | None, post: HookPoint, *, rule: int, own: str,
         relu: str) -> LayerSites:
    pre = HookPoint(producer) if producer is not None else fallback
    if pre is None:
        raise AssertionError("unreachable: a pre site without a hook point is handled by the caller")
    return LayerSites(layer=layer, capture=pre, base="pre", sites=("pre", "post"), points={"pre": pre, "post": post},
                      rule=rule, own=own, relu=relu)


def site_tensor(base: torch.Tensor, base_name: str, site: str) -> torch.Tensor:
    """The tensor of ``site`` from the captured base tensor: ``relu(pre)`` for post, else itself."""
    if site == base_name:
        return base
    if base_name == "pre" and site == "post":
        return torch.relu(base)
    raise InputError(f"site {site!r} cannot be computed from a {base_name!r} capture")


@contextmanager
def capture(model: nn.Module, points: dict[str, HookPoint]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Hooks copying the tensor at each hook point (key -> point) per forward, detached, into
    ``captured[key]`` (a list per key, one entry per forward); removed on exit."""
    named = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {k: [] for k in points}
    handles = []

    def take(key: str, t: Any) -> None:
        if not isinstance(t, torch.Tensor):
            raise InputError(f"hook point {points[key]} does not carry a tensor")
        captured[key].append(t.detach().clone())

    try:
        for key, p in points.items():
            m = named[p.module]
            if p.where == "output":
                handles.append(m.register_forward_hook(lambda _m, _i, o, key=key: take(key, o)))
            else:
                handles.append(m.register_forward_pre_hook(lambda _m, i, key=key: take(key, i[0] if i else None)))
        yield captured
    finally:
        for h in handles:
            h.remove()
