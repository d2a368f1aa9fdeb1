"""NeurFlow extraction engine (paper sec. 3, app. E): images of a class -> :class:`Circuit`.

Modules, one algorithm each: ``patches`` (the patch set D), ``activations`` (the one hook scan),
``scan_layout`` (the scan's fast model copy), ``slicing`` (sub-networks via torch.fx), ``ig_graph`` +
``integrated_gradients`` (batched IG), ``importance`` (concepts, core neurons, eq. 4), ``budget`` and
``heap`` (memory), ``semantic_groups`` / ``neuron_groups`` (clustering), ``circuit_builder`` (Alg. 3 and assembly), ``rundir`` (checkpoints, resume).
See docs/extraction.md and docs/circuit-format.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from neurflow_graph.errors import InputError
from neurflow_graph.extraction.budget import parse_memory
from neurflow_graph.extraction.params import ExtractParams, validate_params
from neurflow_graph.extraction.scan_layout import SCAN_LAYOUTS

if TYPE_CHECKING:
    from neurflow_graph.circuit import Circuit
    from neurflow_graph.datasets.images import ImageRecord
    from neurflow_graph.models.registry import LoadedModel

__all__ = ["ExtractParams", "extract_circuit"]


def extract_circuit(*, model: "LoadedModel", images: Sequence["ImageRecord"], class_index: int,
                    params: ExtractParams, run_dir: Path | None = None, resume: bool = False,
                    progress: bool = True, memory_budget: int | str | None = None,
                    on_layer: Callable[[dict[str, Any]], None] | None = None,
                    scan_layout: str = "eager") -> "Circuit":
    """Extract the NeurFlow circuit of class ``class_index`` from ``images`` (D_c).

    With ``run_dir``, per-layer checkpoints go to ``run_dir/checkpoints`` and the circuit to
    ``run_dir/circuit.json`` (written last, atomically); ``resume=True`` skips the layers an
    interrupted run with the same inputs and parameters finished. ``progress`` shows tqdm bars.
    ``memory_budget`` (bytes, or text such as ``"2GiB"``) bounds cached layer maps and gradient
    tensors; None sizes it from the device (``extraction.budget``). It is not a parameter of the run:
    the circuit's timing records it and the peak memory. ``on_layer(info)`` is called after each layer.
    ``scan_layout``: ``"eager"`` (default: the model as it is, bit-exact with eager PyTorch and
    with the published reference's scan) or ``"fast"`` (the activation scan runs on a copy of the
    model with conv+BatchNorm pairs folded, in channels_last memory format); see
    ``extraction.scan_layout``. Like the memory budget it is not a parameter of the run: the two
    layouts compute the same phi up to float rounding (the noise that thread counts and devices also
    bring), so it stays out of ``circuit.params``; ``circuit.timing`` records the form the scan ran in
    (``scan_folded_pairs``, ``scan_channels_last``, kept across ``resume``). Rounding can reorder exact
    ties among activations (a planted model does this), and then the discrete circuit and so the run
    uid differ between the layouts, as they can between devices.
    """
    from neurflow_graph.extraction.circuit_builder import build_circuit, check_images

    for attr in ("module", "spec", "device", "preprocess", "class_name"):
        if not hasattr(model, attr):
            raise InputError(f"model must be a LoadedModel (from neurflow_graph.models.load_model); it has no {attr!r}")
    layers = list(model.spec.layers)
    if not layers:
        raise InputError("the model has no analysed layers; give at least the logit layer")
    if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
        raise InputError(f"class_index must be a non-negative integer, got {class_index!r}")
    validate_params(params, layers=layers)
    check_images(images)
    budget = parse_memory(memory_budget) if memory_budget is not None else None
    if scan_layout not in SCAN_LAYOUTS:
        raise InputError(f"scan_layout must be one of {', '.join(SCAN_LAYOUTS)}, got {scan_layout!r}")
    return build_circuit(scan_layout=scan_layout, model=model, images=list(images), class_index=class_index, params=params,
                         run_dir=Path(run_dir) if run_dir is not None else None, resume=resume, progress=progress,
                         memory_budget=budget, on_layer=on_layer)
