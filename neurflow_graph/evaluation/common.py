"""What the evaluations share: the run's patch set D rebuilt, its activations, maps, targets, IG.

The run's D is rebuilt from its images and parameters exactly as the extraction built it
(``extraction.circuit_builder.patch_source``); :attr:`RunData.reproduced` is the share of the run's
neurons whose concept (top-k) the rebuilt D gives back, a check that the evaluation sees what the
extraction saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurflow_graph.circuit import Circuit
from neurflow_graph.errors import ImageError
from neurflow_graph.extraction.activations import scan_activations, spatial_means
from neurflow_graph.extraction.circuit_builder import patch_source
from neurflow_graph.extraction.importance import top_k
from neurflow_graph.extraction.integrated_gradients import quadrature
from neurflow_graph.extraction.params import ExtractParams
from neurflow_graph.extraction.patches import PatchSource
from neurflow_graph.extraction.scan_layout import scan_form
from neurflow_graph.extraction.slicing import TracedModel, layer_slice, prefix, trace_layers
from neurflow_graph.interventions.knockout import restrict_outputs


# Full maps of the layers below the logit kept from the one scan when they fit (else recomputed).
MAP_BUDGET = 1 << 30


@dataclass
class RunData:
    circuit: Circuit
    model: Any
    params: ExtractParams
    source: PatchSource
    phi: dict[str, np.ndarray]          # {layer: (P, C)} over the rebuilt D
    traced: TracedModel
    reproduced: float                   # share of the run's neurons whose concept D reproduces
    batch: int = 256

    @property
    def layers(self) -> list[str]:
        return list(self.circuit.model.layers)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def below(self, layer: str) -> str:
        return self.layers[self.layers.index(layer) + 1]

    def maps(self, layer: str) -> torch.Tensor:
        """Full output of ``layer`` for every patch of D: ``(P, C, *spatial)`` on the device."""
        fn = prefix(traced=self.traced, layer=layer)
        out = []
        with torch.no_grad():
            for i in range(0, len(self.source.plan), self.batch):
                ids = np.arange(i, min(i + self.batch, len(self.source.plan)))
                out.append(fn(self.source.batch(ids).to(self.device)))
        return torch.cat(out)

    def maps_cached(self, layer: str) -> torch.Tensor:
        """:meth:`maps`, computed once per layer."""
        cache = self.__dict__.setdefault("_maps", {})
        if layer not in cache:
            cache[layer] = self.maps(layer)
        return cache[layer]

    def slice(self, lower: str, upper: str, targets: Sequence[int] | None = None) -> torch.nn.Module:
        """phi^{lower, upper}; restricted to ``targets`` output channels when the slice allows it
        (then its output has ``len(targets)`` channels), else the full slice."""
        fn = layer_slice(traced=self.traced, lower=lower, upper=upper)
        if targets is not None:
            small = restrict_outputs(fn, list(targets))
            if small is not None:
                return small
            return _Select(fn, list(targets))
        return fn

    def concept(self, layer: str, neuron: int, k: int | None = None) -> np.ndarray:
        return top_k(self.phi[layer][:, neuron], k or self.params.k)

    def cores(self, layer: str, neuron: int) -> list[int]:
        """S_a of the run: the distinct children of ``neuron``'s edges, in the layer below."""
        return sorted({e.child_index for e in self.circuit.edges if e.parent_layer == layer and e.parent_index == neuron})


class _Select(torch.nn.Module):
    def __init__(self, fn: torch.nn.Module, channels: list[int]) -> None:
        super().__init__()
        self.fn = fn
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)[:, self.channels]


def run_params(circuit: Circuit) -> ExtractParams:
    p = dict(circuit.params)
    p["crop_fractions"] = tuple(p.get("crop_fractions", (1.0, 0.5, 0.25)))
    known = set(ExtractParams.__dataclass_fields__)
    return ExtractParams(**{k: v for k, v in p.items() if k in known})


def load_run_data(*, circuit: Circuit, model: Any, batch: int = 256) -> RunData:
    """Rebuild the run's D, scan every analysed layer on it, trace the model."""
    from neurflow_graph.datasets.images import ImageRecord

    missing = [i.path for i in circuit.images if not Path(i.path).is_file()]
    if missing:
        raise ImageError(f"the run's image {missing[0]} is missing ({len(missing)} of {len(circuit.images)}); "
                         "evaluate needs the images the run was extracted from, where they were")
    params = run_params(circuit)
    records = [ImageRecord(path=Path(i.path), sha256=i.sha256, label=None) for i in circuit.images]
    source = patch_source(model=model, images=records, params=params)
    layers = list(circuit.model.layers)
    module = model.module
    module.eval()
    # The run's own scan layout (its timing says whether the scan ran in a faster form), so that the
    # rebuilt phi ranks near-ties as the run did (a resumed run's timing has it from the scan checkpoint).
    fast = bool(circuit.timing.get("scan_folded_pairs", 0) or circuit.timing.get("scan_channels_last", 0))
    device = torch.device(model.device)
    sample = source.batch(np.arange(1)).to(device) if fast else None
    traced = trace_layers(module=module, layers=layers)
    form = scan_form(module=module, layers=layers, layout="fast" if fast else "eager", sample=sample, traced=traced)
    phi, maps = scan_activations(module=form.module, prepare=form.prepare, layers=layers,
                                 n_patches=len(source.plan), batches=source.batch, device=device, batch_size=batch,
                                 map_layers=layers[1:], map_budget=MAP_BUDGET)
    del form
    hits = []
    for n in circuit.neurons:
        stored = {p for g in n.semantic_groups for p in g.patches}
        hits.append(set(top_k(phi[n.layer][:, n.index], params.k).tolist()) == stored)
    data = RunData(circuit=circuit, model=model, params=params, source=source, phi=phi, traced=traced,
                   reproduced=float(np.mean(hits)) if hits else float("nan"), batch=batch)
    data.__dict__["_maps"] = {layer: m.to(model.device) for layer, m in maps.items()}
    return data


def sample_targets(data: RunData, layer: str, n: int, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` neurons of ``layer`` with core neurons below, drawn at random (sorted)."""
    have = sorted({e.parent_index for e in data.circuit.edges if e.parent_layer == layer})
    if len(have) <= n:
        return have
    return sorted(rng.choice(have, size=n, replace=False).tolist())


def extraction_attributions(*, data: "RunData", lower: str, upper: str, target: int, patches: np.ndarray
                            ) -> np.ndarray:
    """Per-patch IG attributions ``(len(patches), C)`` of ``target`` in ``upper`` to the channels of
    ``lower``, with the extraction's own batched IG engine (the values behind the circuit's scores)."""
    from neurflow_graph.extraction.integrated_gradients import SliceAttributor

    attributor = SliceAttributor(layer_slice(traced=data.traced, lower=lower, upper=upper))
    maps = data.maps_cached(lower)[torch.as_tensor(patches, dtype=torch.long, device=data.device)]
    attributor.prepare(maps[:1])
    alphas, weights = quadrature(data.params.ig_method, data.params.ig_steps)
    out = []
    block = max(1, data.params.max_batch // max(1, attributor.steps_needed(data.params.ig_steps)))
    for i in range(0, len(patches), block):
        idx = torch.arange(i, min(i + block, len(patches)), device=data.device)
        attr = attributor.attribute(maps=maps, copy_patch=idx, slot_targets=torch.full((len(idx), 1), int(target),
                                    dtype=torch.long, device=data.device), alphas=alphas, weights=weights,
                                    max_rows=data.params.max_batch)
        out.append(attr[:, 0].detach().to("cpu", torch.float64).numpy())
    return np.concatenate(out)


def attributions(*, fn: torch.nn.Module, maps: torch.Tensor, method: str, steps: int, max_rows: int = 2048
                 ) -> torch.Tensor:
    """Integrated gradients (eq. 2, zero baseline) of output channel 0 of ``fn`` (a slice restricted
    to one target) w.r.t. its input ``maps`` ``(n, C, *spatial)``, per patch: ``(n, C)``."""
    alphas, weights = quadrature(method, steps)
    a = torch.as_tensor(alphas, dtype=maps.dtype, device=maps.device)
    w = torch.as_tensor(weights, dtype=maps.dtype, device=maps.device)
    out = torch.zeros(maps.shape[:2], dtype=torch.float64, device=maps.device)
    per = max(1, max_rows // steps)
    dims = (1,) * (maps.dim() - 1)
    for i in range(0, maps.shape[0], per):
        x = maps[i:i + per]
        rows = (x.unsqueeze(1) * a.view(1, -1, *dims)).reshape(-1, *x.shape[1:]).requires_grad_(True)
        with torch.enable_grad():
            y = spatial_means(fn(rows))[:, 0].sum()
            (g,) = torch.autograd.grad(y, rows)
        g = (g.view(x.shape[0], steps, *x.shape[1:]) * w.view(1, -1, *dims)).sum(1)
        out[i:i + per] = (x * g).flatten(2).sum(2).double()
    return out
