"""Early check of ``--layers``: top to bottom in the model's topology, starting at the logit layer.

One dummy forward with forward hooks (installed and removed in a context manager) records the
order in which the listed layers run and the first layer's output. The list must run in exactly
reverse order (each layer computed after the one listed below it) and the first layer's output
must be the model's output, the class scores. Raised as InputError (exit 2) before any scan.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from neurflow_graph.errors import InputError


@contextmanager
def _call_order(module: torch.nn.Module, layers: Sequence[str]) -> Iterator[tuple[list[str], dict[str, Any]]]:
    named = dict(module.named_modules())
    order: list[str] = []
    outputs: dict[str, Any] = {}
    handles = []

    def hook(name: str):
        def record(_m: torch.nn.Module, _i: object, out: object) -> None:
            order.append(name)
            outputs.setdefault(name, out)
        return record

    try:
        for name in layers:
            if name in named and name:
                handles.append(named[name].register_forward_hook(hook(name)))
        yield order, outputs
    finally:
        for h in handles:
            h.remove()


def check_layer_order(*, module: torch.nn.Module, layers: Sequence[str], input_size: tuple[int, int],
                      device: torch.device) -> None:
    """InputError naming the first misplaced layer when ``layers`` (top -> bottom) do not run bottom
    to top in one forward of a ``(1, 3, H, W)`` zero input, or when ``layers[0]``'s output is not the
    model's output (the logit layer). ``input_size`` is ``(width, height)``."""
    width, height = input_size
    x = torch.zeros(1, 3, int(height), int(width), device=device)
    was_training = module.training
    module.eval()
    try:
        with _call_order(module, layers) as (order, outputs), torch.no_grad():
            result = module(x)
    except Exception as e:  # user code: a shape error here is the user's model, reported in one line
        raise InputError(f"the model fails on a (1, 3, {height}, {width}) input ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]}); pass the --input-size it expects") from e
    finally:
        module.train(was_training)
    missing = [name for name in layers if name not in order]
    if missing:
        raise InputError(f"--layers: {missing[0]!r} does not run in the model's forward pass; list layers that the "
                         "forward computes, top -> bottom, the first being the logit layer")
    first_run = {name: order.index(name) for name in layers}
    for upper, lower in zip(layers, layers[1:]):
        if first_run[lower] > first_run[upper]:
            raise InputError(f"--layers must run top -> bottom: {lower!r} is listed below {upper!r} but runs after "
                             f"it in the model; list them in reverse order of the forward pass "
                             f"(`neurflow-graph layers --model ...` shows that order)")
    top = outputs[layers[0]]
    if not isinstance(result, torch.Tensor) or not isinstance(top, torch.Tensor) or top.shape != result.shape \
            or not torch.equal(top, result):
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise InputError(f"--layers must start at the logit layer, whose output is the model's class scores "
                         f"{shape}; {layers[0]!r} is not the layer that produces them")
