"""``ExtractParams``: every knob of one NeurFlow extraction, validated in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from neurflow_graph.errors import InputError

IG_METHODS: tuple[str, ...] = ("gausslegendre", "riemann_right")
RANK_BY: tuple[str, ...] = ("abs_mean", "abs_sum")


@dataclass
class ExtractParams:
    """Parameters of :func:`neurflow_graph.extraction.extract_circuit` (paper defaults).

    ``tau_per_layer`` maps a layer *below* the logit layer to the number of core concept neurons
    each of its parents (the neurons of the layer above) keeps there; other layers use ``tau``.
    ``max_batch`` bounds the rows of every forward pass (patches in the scan, patch x step rows in
    integrated gradients). ``seed`` seeds torch, numpy and random for the run only (the caller's
    generator states are restored); the algorithm itself draws no random numbers.
    """

    k: int = 50
    tau: int = 16
    tau_per_layer: dict[str, int] = field(default_factory=dict)
    crop_fractions: tuple[float, ...] = (1.0, 0.5, 0.25)
    stride_fraction: float = 0.5
    ig_steps: int = 50
    ig_method: str = "gausslegendre"
    rank_by: str = "abs_mean"
    max_semantic_groups: int = 5
    max_neuron_groups: int = 8
    max_batch: int = 256
    seed: int = 0

    def tau_for(self, layer: str) -> int:
        """Core neurons kept in ``layer`` per parent."""
        return int(self.tau_per_layer.get(layer, self.tau))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (tuples become lists, dict keys sorted)."""
        d = asdict(self)
        d["crop_fractions"] = [float(f) for f in self.crop_fractions]
        d["tau_per_layer"] = {k: int(v) for k, v in sorted(self.tau_per_layer.items())}
        return d


def validate_params(params: ExtractParams, *, layers: Sequence[str]) -> None:
    """Raise InputError naming the first bad field of ``params`` and what to use instead."""
    if not isinstance(params, ExtractParams):
        raise InputError(f"params must be an ExtractParams, got {type(params).__name__}")

    def positive_int(name: str, value: Any, minimum: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")

    positive_int("k", params.k)
    positive_int("tau", params.tau)
    positive_int("ig_steps", params.ig_steps)
    positive_int("max_semantic_groups", params.max_semantic_groups)
    positive_int("max_neuron_groups", params.max_neuron_groups)
    positive_int("max_batch", params.max_batch)
    if isinstance(params.seed, bool) or not isinstance(params.seed, int):
        raise InputError(f"seed must be an integer, got {params.seed!r}")
    if not isinstance(params.tau_per_layer, dict):
        raise InputError(f"tau_per_layer must be a dict layer -> int, got {type(params.tau_per_layer).__name__}")
    below = list(layers[1:])
    for layer, value in params.tau_per_layer.items():
        if layer not in below:
            options = ", ".join(below) if below else "none (the model has only a logit layer)"
            raise InputError(f"tau_per_layer names {layer!r}, which is not an analysed layer below the logit "
                             f"layer; use one of {options}")
        positive_int(f"tau_per_layer[{layer!r}]", value)
    fractions = tuple(params.crop_fractions)
    if not fractions or not all(isinstance(f, (int, float)) and math.isfinite(f) and 0.0 < f <= 1.0
                                for f in fractions):
        raise InputError(f"crop_fractions must be numbers in (0, 1], got {params.crop_fractions!r}")
    s = params.stride_fraction
    if not isinstance(s, (int, float)) or not math.isfinite(s) or not 0.0 < s <= 1.0:
        raise InputError(f"stride_fraction must be in (0, 1], got {s!r}")
    if params.ig_method not in IG_METHODS:
        raise InputError(f"ig_method must be one of {', '.join(IG_METHODS)}, got {params.ig_method!r}")
    if params.rank_by not in RANK_BY:
        raise InputError(f"rank_by must be one of {', '.join(RANK_BY)}, got {params.rank_by!r}")
