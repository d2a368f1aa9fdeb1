"""Interventions on a model's neurons, all as context managers (no hook outlives its ``with``).

A *neuron* is a channel of a layer's output (a conv feature map or a linear unit); layers are
named by their ``named_modules()`` path, as everywhere in the project.

* :func:`mask_neurons` -- the outputs of some channels replaced by 0 (``mode="zero"``) or by a
  given mean (``mode="mean"``); removing neurons from the computational graph, ``M \\ S`` of the
  paper's Definition 2, is ``mode="zero"``.
* :func:`retain_neurons` -- every channel of a layer masked except the given ones.
* :func:`mask_neuron_sets` -- batched: row block ``s`` of every batch runs with set ``s`` masked,
  so many random sets are evaluated in one forward pass.
* :func:`knockout_phi` / :func:`knockout_concepts` -- Definition 2, V_a^{S-bar}: the activations of
  layer ``l`` computed from layer ``l-1``'s maps with a set S knocked out, for many sets at once
  through the traced layer slice (exactly equal to a full forward under :func:`mask_neurons`).

``interventions/projection.py`` (directions) adds ``project_out`` in the same style.
"""

from neurflow_graph.interventions.knockout import concept_loss, knockout_concepts, knockout_phi, layer_function
from neurflow_graph.interventions.masking import (
    mask_neuron_sets, mask_neurons, mean_activations, resolve_layer, retain_neurons,
)

__all__ = ["concept_loss", "knockout_concepts", "layer_function", "knockout_phi", "mask_neuron_sets", "mask_neurons", "mean_activations",
           "resolve_layer", "retain_neurons"]
