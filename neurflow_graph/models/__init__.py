"""Models: the registry (torchvision specs, custom ``module:factory`` models, weights) and the demo CNN."""

from neurflow_graph.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REGISTRY_NAMES,
    LoadedModel,
    ModelSpec,
    get_spec,
    load_model,
    model_names,
    resolve_device,
    state_dict_sha256,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "REGISTRY_NAMES", "LoadedModel", "ModelSpec", "get_spec", "load_model",
    "model_names", "resolve_device", "state_dict_sha256",
]
