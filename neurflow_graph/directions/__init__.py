"""Principal directions of layer activations beside neurons (Dey et al. 2025).

One algorithm per module: :mod:`.sites` (which pre/post-ReLU activation spaces a layer has),
:mod:`.sampling` (which positions become samples), :mod:`.pca` (the estimator),
:mod:`.completeness` (measure 1: variance explained by top-k PCs vs neurons), :mod:`.ablation`
(measure 2: network function as basis vectors are removed), :mod:`.alignment` (neuron groups vs
directions, circuit coverage). :mod:`.compute` runs them on a model and images;
:mod:`.result` is the plain-data result and its files; :mod:`.plots` draws it.
See ``docs/directions.md``.
"""

from neurflow_graph.directions.pca import ActivationPCA

__all__ = ["ActivationPCA"]
