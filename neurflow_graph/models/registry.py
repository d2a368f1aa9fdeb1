"""Model registry: named torchvision specs, the demo CNN, custom ``module:factory`` models, weights.

``load_model`` turns what the user typed (``--model``, ``--weights``, ``--layers``, ...) into a
:class:`LoadedModel`: an eval-mode module on its device, the :class:`ModelSpec` that says which
layers NeurFlow analyses (top -> bottom, ``layers[0]`` = the logit layer) and how images are
preprocessed, and a content hash of the weights.

Layer lists follow the paper (ResNet50 ``layer4.2`` ... ``layer2.3``, GoogLeNet ``inception5b`` ...
``maxpool2``): every listed layer except the logit layer is a post-activation output, so its
channels are non-negative "neurons". See ``docs/models-and-images.md``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from neurflow_graph.errors import InputError, ModelError, UnsafeWeightsError, WeightsError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEMO_NAME = "demo"
# Random init is seeded so that two random-weight runs of one architecture see the same model.
RANDOM_INIT_SEED = 0
# Checkpoint keys that commonly hold the state dict, tried in this order.
CHECKPOINT_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model")
# Key prefixes added by wrappers (DataParallel / DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


@dataclass
class ModelSpec:
    """What NeurFlow needs to know about a model besides its module."""

    name: str
    layers: list[str]                      # top -> bottom; layers[0] is the logit layer
    input_size: int | None                 # square side; None: images used at their own size
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    class_names: list[str] | None = None
    # "squash": the whole image resized to input_size x input_size (the demo, custom models, an explicit
    # --input-size). "weights": the torchvision weights' own transforms: shorter side resized to
    # resize_size, centre crop of input_size (e.g. 256 / 224 for ImageNet weights), then mean/std.
    preprocess: str = "squash"
    resize_size: int | None = None
    transforms_of: str | None = None       # the weights enum member whose transforms() these are

    def preprocess_record(self) -> dict[str, Any] | None:
        """What the run's parameters record about the preprocessing (``params["preprocess"]``): for
        registry torchvision models only (custom models and the demo keep their records unchanged)."""
        if self.name not in _TORCHVISION:
            return None
        record: dict[str, Any] = {"mode": self.preprocess, "input_size": self.input_size,
                                  "mean": list(self.mean) if self.mean is not None else None,
                                  "std": list(self.std) if self.std is not None else None,
                                  "interpolation": "bilinear"}
        if self.preprocess == "weights":
            record.update(resize_size=self.resize_size, crop_size=self.input_size, transforms_of=self.transforms_of)
        return record


PREPROCESS_MODES: tuple[str, ...] = ("weights", "squash")


@dataclass(frozen=True)
class _TorchvisionArch:
    layers: tuple[str, ...]
    logit_key: str                          # state-dict prefix of the logit layer (num_classes)
    ignored_prefixes: tuple[str, ...] = ()  # file keys dropped before loading (unused heads)


def _resnet_layers(blocks: dict[str, int], bottom: str) -> tuple[str, ...]:
    top = tuple(f"{stage}.{i}" for stage in ("layer4", "layer3") for i in reversed(range(blocks[stage])))
    return ("fc", *top, bottom)


_TORCHVISION: dict[str, _TorchvisionArch] = {
    # Paper, sec. 4: the last 10 layers below the classifier; block outputs are post-ReLU.
    "resnet50": _TorchvisionArch(_resnet_layers({"layer4": 3, "layer3": 6}, "layer2.3"), "fc"),
    # Inception outputs concatenate post-ReLU branches; maxpool2 pools conv3's ReLU (input of 3a).
    "googlenet": _TorchvisionArch(
        ("fc", "inception5b", "inception5a", "inception4e", "inception4d", "inception4c",
         "inception4b", "inception4a", "inception3b", "inception3a", "maxpool2"),
        "fc", ignored_prefixes=("aux1.", "aux2.")),
    # One output per learned layer, after its ReLU and (where one follows) its max-pool:
    # fc8, fc7 (classifier.5), fc6 (classifier.2), conv5+pool5 (features.12), conv4 (features.9),
    # conv3 (features.7), conv2+pool2 (features.5), conv1+pool1 (features.2).
    "alexnet": _TorchvisionArch(
        ("classifier.6", "classifier.5", "classifier.2", "features.12", "features.9", "features.7",
         "features.5", "features.2"),
        "classifier.6"),
    "resnet18": _TorchvisionArch(_resnet_layers({"layer4": 2, "layer3": 2}, "layer2.1"), "fc"),
}

REGISTRY_NAMES: tuple[str, ...] = (*_TORCHVISION, DEMO_NAME)


@dataclass
class LoadedModel:
    """A model ready for NeurFlow: ``module`` is in eval mode on ``device``."""

    module: torch.nn.Module
    spec: ModelSpec
    device: torch.device
    weights_sha256: str | None             # content hash of the state dict; None for random init
    weights_source: str = "random init"    # human-readable: "random init", "DEFAULT (...)", a path
    _mean: torch.Tensor | None = field(init=False, repr=False, compare=False, default=None)
    _std: torch.Tensor | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        s = self.spec
        if s.mean is not None or s.std is not None:
            self._mean = torch.tensor(s.mean if s.mean is not None else (0.0,), dtype=torch.float32)[:, None, None]
            self._std = torch.tensor(s.std if s.std is not None else (1.0,), dtype=torch.float32)[:, None, None]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> ``(3, S, S)`` float tensor on CPU: RGB, then ``spec.preprocess``: "squash"
        resizes the whole image to ``spec.input_size`` (no crop; own size when None), "weights"
        resizes the shorter side to ``spec.resize_size`` and centre-crops ``spec.input_size`` (as the
        torchvision weights' ``transforms()``); scaled to [0, 1], then normalized."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return self.normalize(self.frame(x))

    def frame(self, image: torch.Tensor) -> torch.Tensor:
        """The preprocessed image before normalisation: ``(3, H, W)`` uint8 -> ``(3, S, S)`` uint8
        (squash to input_size, or resize + centre crop); patches are cropped from it in "weights" mode."""
        from neurflow_graph.models.resample import center_crop_box, resize_uint8, resized_shorter

        s = self.spec
        if s.preprocess == "weights" and s.resize_size is not None and s.input_size is not None:
            h, w = resized_shorter(int(image.shape[1]), int(image.shape[2]), s.resize_size)
            resized = resize_uint8(image[None], h, w)[0]
            top, left = center_crop_box(h, w, s.input_size)
            return resized[:, top:top + s.input_size, left:left + s.input_size]
        if s.input_size is not None:
            return resize_uint8(image[None], s.input_size, s.input_size)[0]
        return image

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., 3, H, W)`` -> float32 in [0, 1], then ``(x - mean) / std`` when the spec has them."""
        x = x.float().div_(255.0)
        if self._mean is not None:
            mean, std = self._mean.to(x.device), self._std.to(x.device)
            x = (x - mean) / std
        return x

    @property
    def num_classes(self) -> int | None:
        """Number of logits, from the class names or the logit layer; None when unknown."""
        if self.spec.class_names is not None:
            return len(self.spec.class_names)
        return _logit_width(self.module, self.spec.layers[0] if self.spec.layers else None)

    def class_name(self, index: int) -> str:
        names = self.spec.class_names
        if names is not None and 0 <= index < len(names):
            return names[index]
        return f"class_{index}"


# ---------------------------------------------------------------------------- public API


def model_names() -> list[str]:
    """Names accepted by ``load_model(name=...)`` besides ``package.module:factory``."""
    return list(REGISTRY_NAMES)


def get_spec(name: str) -> ModelSpec:
    """The registry's spec for ``name`` (a fresh copy; class names are those of random init)."""
    if name in _TORCHVISION:
        return ModelSpec(name=name, layers=list(_TORCHVISION[name].layers), input_size=224,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if name == DEMO_NAME:
        from neurflow_graph.models import demo

        return ModelSpec(name=DEMO_NAME, layers=list(demo.DEMO_LAYERS), input_size=demo.DEMO_INPUT_SIZE,
                         mean=demo.DEMO_MEAN, std=demo.DEMO_STD, class_names=list(demo.DEMO_CLASS_NAMES))
    raise ModelError(_unknown_model_message(name))


def resolve_device(device: str | None) -> torch.device:
    """None -> cuda when available, else cpu. An unavailable or unknown device raises InputError."""
    if device is None or not str(device).strip():
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError) as e:
        raise InputError(f"unknown device {device!r}; use cpu or cuda (cuda:N for one GPU)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for but CUDA is not available here "
                             f"(torch {torch.__version__}); use --device cpu or leave --device out")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                             f"visible; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {device!r} was asked for but MPS is not available here; use cpu")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


def load_model(*, name: str, weights: str | None = None, layers: Sequence[str] | None = None,
               input_size: int | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, device: str | None = None, trust_pickle: bool = False,
               class_names: Sequence[str] | None = None, require_layers: bool = True,
               preprocess: str | None = None) -> LoadedModel:
    """Build, weight and validate a model.

    ``name``: a registry name (:data:`REGISTRY_NAMES`), ``package.module:factory`` or
    ``path/to/file.py:factory`` (both recorded as the one canonical ``module:factory`` name).
    ``weights``: None (random init; the factory's own weights for custom models; the trained demo
    weights for ``demo``), ``"DEFAULT"`` or a torchvision enum member name (e.g. ``IMAGENET1K_V1``),
    or a path to a state dict / checkpoint. A file the safe (tensors-only) loader refuses, such as
    a pickled module, is read only with ``trust_pickle=True`` (unpickling can run code). ``layers``
    replaces the spec's list (required for custom models unless ``require_layers=False``, which
    only ``neurflow-graph layers`` uses). ``input_size``/``mean``/``std``/``class_names`` override
    the spec's preprocessing and names. ``preprocess``: None (registry torchvision models use their
    weights' ``transforms()`` - for random init those of the DEFAULT weights - unless ``input_size``
    is given, which squashes the whole image to that size; others squash), ``"weights"`` or
    ``"squash"`` (the whole image resized to the input size, no crop).
    """
    name = (name or "").strip()
    if not name:
        raise ModelError(_unknown_model_message(name))
    dev = resolve_device(device)
    layers = _check_layer_arg(layers)
    input_size = _check_input_size(input_size, what="input size")
    mean = _check_norm(mean, what="mean")
    std = _check_norm(std, what="std")
    if std is not None and any(v <= 0 for v in std):
        raise InputError(f"std values must be > 0, got {std}")
    weights = weights.strip() if isinstance(weights, str) and weights.strip() else None
    names = _opt_names(class_names, what="--class-names") if class_names is not None else None
    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise InputError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
    if preprocess == "weights" and name not in _TORCHVISION:
        raise InputError(f"--preprocess weights needs torchvision weights' transforms, which {name or 'this model'} "
                         f"has not; use --preprocess squash with --input-size/--mean/--std (registry models with "
                         f"weights transforms: {', '.join(_TORCHVISION)})")
    if preprocess == "weights" and input_size is not None:
        raise InputError("--input-size squashes the whole image to N x N, while --preprocess weights uses the "
                         "weights' own resize and centre crop; give one of them")

    if name in _TORCHVISION:
        module, spec, sha, source = _load_torchvision(name, weights, trust_pickle)
    elif name == DEMO_NAME:
        module, spec, sha, source = _load_demo(weights, trust_pickle)
    elif ":" in name:
        module, spec, sha, source = _load_custom(name, weights, layers, trust_pickle, require_layers)
    else:
        raise ModelError(_unknown_model_message(name))

    spec = replace(spec,
                   layers=list(layers) if layers is not None else list(spec.layers),
                   input_size=input_size if input_size is not None else spec.input_size,
                   mean=mean if mean is not None else spec.mean,
                   std=std if std is not None else spec.std,
                   class_names=names if names is not None else spec.class_names)
    if spec.preprocess == "weights" and (preprocess == "squash" or input_size is not None):
        spec = replace(spec, preprocess="squash", resize_size=None, transforms_of=None)
    if spec.layers or require_layers:
        _validate_layers(module, spec.layers, model=spec.name)
        width = _logit_width(module, spec.layers[0])
        if spec.class_names is not None and width is not None and width != len(spec.class_names):
            what = "--class-names" if names is not None else "CLASS_NAMES"
            raise ModelError(f"{spec.name} has {len(spec.class_names)} class names but its logit layer "
                             f"{spec.layers[0]!r} has {width} outputs; fix {what} or --layers")
    _disable_inplace(module)
    module.eval()
    module.to(dev)
    return LoadedModel(module=module, spec=spec, device=dev, weights_sha256=sha, weights_source=source)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, each with its dtype, shape and raw bytes (so packaging does not matter)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(key.encode("utf-8") + b"\0")
        h.update(f"{str(t.dtype).removeprefix('torch.')}{tuple(t.shape)}".encode("ascii") + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def is_custom(spec: ModelSpec) -> bool:
    """Whether ``spec`` is a user's ``module:factory`` model (not a registry name)."""
    return ":" in spec.name


def preprocessing_warning(model: LoadedModel) -> str | None:
    """A warning for a custom model that declares no MEAN/STD and got none (images then go in as
    RGB in [0, 1], unnormalised: the usual cause of wrong predictions); None otherwise."""
    spec = model.spec
    if not is_custom(spec) or spec.mean is not None or spec.std is not None:
        return None
    module = spec.name.split(":", 1)[0]
    size = "" if spec.input_size is not None else " and no INPUT_SIZE (images keep their own size)"
    return (f"warning: {spec.name} declares no MEAN/STD{size}, and none was given: images go in as RGB in "
            f"[0, 1] without normalisation. If the model was trained otherwise, pass --mean/--std/--input-size "
            f"or set MEAN, STD, INPUT_SIZE in {module}")


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a file, in logit order: a JSON list (``.json``) or one name per line
    (blank lines and lines starting with ``#`` skipped). InputError naming the file otherwise."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read --class-names {p}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"--class-names {p} is not UTF-8 text; give one class name per line") from e
    if p.suffix.lower() == ".json":
        import json

        try:
            names = json.loads(text)
        except ValueError as e:
            raise InputError(f"--class-names {p} is not valid JSON ({e}); give a list of strings") from e
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise InputError(f"--class-names {p} must hold a JSON list of non-empty strings")
        names = [n.strip() for n in names]
    else:
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise InputError(f"--class-names {p} holds no names; give one class name per line, in logit order")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--class-names {p} lists {', '.join(map(repr, dupes[:3]))} more than once")
    return names


@dataclass(frozen=True)
class LayerInfo:
    """One named module: its ``named_modules()`` path, class name and output shape(s) on a dummy input."""

    name: str
    kind: str
    output: str          # e.g. "(1, 64, 16, 16)"; "not called" when forward never ran it
    depth: int


@contextmanager
def _recording_outputs(module: torch.nn.Module) -> Iterator[dict[str, Any]]:
    """Forward hooks recording each named submodule's output for the ``with`` body; all removed after."""
    seen: dict[str, Any] = {}
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(_m: torch.nn.Module, _inp: Any, out: Any) -> None:  # returns None: the output is kept
            seen.setdefault(name, _describe_output(out))
        return hook

    try:
        for name, m in module.named_modules():
            if name:
                handles.append(m.register_forward_hook(record(name)))
        yield seen
    finally:
        for h in handles:
            h.remove()


def _describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return str(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return "[" + ", ".join(_describe_output(o) for o in out) + "]"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_describe_output(v)}" for k, v in out.items()) + "}"
    return type(out).__name__


def layer_shapes(model: LoadedModel, *, input_size: int | None = None) -> list[LayerInfo]:
    """Every named module of ``model`` in ``named_modules()`` order with its output shape on one
    dummy ``(1, 3, S, S)`` input (``S`` = ``input_size``, else the spec's, else 224)."""
    side = _check_input_size(input_size, what="--input-size") or model.spec.input_size or 224
    x = torch.zeros(1, 3, side, side, device=model.device)
    with _recording_outputs(model.module) as seen, torch.no_grad():
        try:
            model.module(x)
        except Exception as e:  # user code: report, do not trace
            raise ModelError(f"{model.spec.name} fails on a (1, 3, {side}, {side}) dummy input "
                             f"({type(e).__name__}: {_short(e)}); pass --input-size N for the size it expects") from e
    return [LayerInfo(name=n, kind=type(m).__name__, output=seen.get(n, "not called"), depth=n.count("."))
            for n, m in model.module.named_modules() if n]


# ---------------------------------------------------------------------------- torchvision


def _torchvision_weights(name: str) -> list[Any]:
    """The weights enum members of a torchvision architecture (aliases such as DEFAULT excluded)."""
    import torchvision

    return list(torchvision.models.get_model_weights(name))


def _weights_enum_member(name: str, text: str) -> Any | None:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    key = text.removeprefix(enum.__name__ + ".")
    if key.upper() == "DEFAULT":
        return enum.DEFAULT
    return enum.__members__.get(key)


def _load_torchvision(name: str, weights: str | None,
                      trust_pickle: bool = False) -> tuple[torch.nn.Module, ModelSpec, str | None, str]:
    arch = _TORCHVISION[name]
    spec = get_spec(name)
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            module = _build_torchvision(name, pretrained_layout=False, num_classes=1000)
        return module, _with_transforms(spec, name, None), None, "random init"

    member = _weights_enum_member(name, weights) if not Path(weights).exists() else None
    if member is not None:
        state = _download_state_dict(name, member)
        source = f"{weights} ({type(member).__name__}.{member.name})"
    else:
        state, file_sha = _read_weights_file(weights, trust_pickle=trust_pickle)
        member = _recognize_torchvision_file(name, file_sha)
        source = str(Path(weights).expanduser())
    state = {k: v for k, v in state.items() if not k.startswith(arch.ignored_prefixes)}
    if member is not None:
        num_classes = len(member.meta["categories"])
        spec.class_names = list(member.meta["categories"])
    else:  # a fine-tuned file may have its own number of classes
        w = state.get(f"{arch.logit_key}.weight")
        num_classes = int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 2 else 1000
    module = _build_torchvision(name, pretrained_layout=member is not None, num_classes=num_classes)
    _load_state_dict(module, state, what=source, model=name)
    return module, _with_transforms(spec, name, member), state_dict_sha256(module.state_dict()), source


def _with_transforms(spec: ModelSpec, name: str, member: Any | None) -> ModelSpec:
    """``spec`` preprocessing as ``member.transforms()`` (the DEFAULT weights' when None: random init
    and unrecognised files): resize, centre crop, mean, std. Only metadata; nothing is downloaded."""
    import torchvision

    if member is None or not callable(getattr(member, "transforms", None)):
        member = torchvision.models.get_model_weights(name).DEFAULT
    t = member.transforms()
    if str(getattr(t, "interpolation", "bilinear")).lower().rsplit(".", 1)[-1] != "bilinear":
        raise ModelError(f"{type(member).__name__}.{member.name} transforms use {t.interpolation}; only bilinear "
                         "is implemented; pass --preprocess squash")
    return replace(spec, preprocess="weights", input_size=int(t.crop_size[0]), resize_size=int(t.resize_size[0]),
                   mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std),
                   transforms_of=f"{type(member).__name__}.{member.name}")


def _build_torchvision(name: str, *, pretrained_layout: bool, num_classes: int) -> torch.nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if name == "googlenet":
        # torchvision's pretrained GoogLeNet expects transform_input=True; random init keeps the default.
        kwargs.update(aux_logits=False, transform_input=pretrained_layout, init_weights=not pretrained_layout)
    return torchvision.models.get_model(name, weights=None, **kwargs)


def _download_state_dict(name: str, member: Any) -> dict[str, torch.Tensor]:
    url = member.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, map_location="cpu",
                                                   weights_only=True)
    except OSError as e:  # URLError, HTTPError, socket errors, disk errors
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"could not download the {member.name} weights of {name} from {url} ({reason}); "
                           f"download that file elsewhere and pass it with --weights PATH "
                           f"(or put it at {cached})") from e
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise WeightsError(f"could not read the {member.name} weights of {name} ({_short(e)}); delete {cached} "
                           f"to download it again, or pass a file with --weights PATH") from e
    return _extract_state_dict(state, what=url)


def _recognize_torchvision_file(name: str, file_sha: str) -> Any | None:
    """The torchvision weights member whose published file has this sha256 (by its URL's hash prefix)."""
    for member in _torchvision_weights(name):
        m = re.search(r"-([a-f0-9]{8,})\.", Path(str(member.url)).name)
        if m and file_sha.startswith(m.group(1)):
            return member
    return None


# ---------------------------------------------------------------------------- demo


def _load_demo(weights: str | None, trust_pickle: bool = False) -> tuple[torch.nn.Module, ModelSpec, str | None, str]:
    from neurflow_graph.models import demo

    spec = get_spec(DEMO_NAME)
    if weights is None or weights.upper() == "DEFAULT":
        # Trains (under a minute) and caches on a miss; the training progress goes to stderr.
        module, path = demo.get_demo_model(progress=lambda msg: print(f"demo model: {msg}", file=sys.stderr))
        source = f"demo weights ({path})"
    else:
        state, _ = _read_weights_file(weights, trust_pickle=trust_pickle)
        module = demo.build_demo_cnn()
        source = str(Path(weights).expanduser())
        _load_state_dict(module, state, what=source, model=DEMO_NAME)
    return module, spec, state_dict_sha256(module.state_dict()), source


# ---------------------------------------------------------------------------- custom module:factory


def _load_custom(name: str, weights: str | None, layers: list[str] | None, trust_pickle: bool = False,
                 require_layers: bool = True) -> tuple[torch.nn.Module, ModelSpec, str | None, str]:
    mod, factory, name = _import_factory(name)
    if layers is None and require_layers:
        raise ModelError(f"custom model {name} needs --layers (comma-separated module names, top -> bottom, "
                         f"the first being the logit layer; `neurflow-graph layers --model {name}` lists them)")
    try:
        module = factory()
    except Exception as e:  # user code: any failure is reported, not traced
        raise ModelError(f"factory {name} raised {type(e).__name__}: {_short(e)}") from e
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {name} returned {type(module).__name__}, not a torch.nn.Module")
    spec = ModelSpec(name=name, layers=list(layers or []),
                     input_size=_check_input_size(getattr(mod, "INPUT_SIZE", None), what=f"{mod.__name__}.INPUT_SIZE"),
                     mean=_check_norm(_opt_floats(getattr(mod, "MEAN", None), what=f"{mod.__name__}.MEAN"),
                                      what=f"{mod.__name__}.MEAN"),
                     std=_check_norm(_opt_floats(getattr(mod, "STD", None), what=f"{mod.__name__}.STD"),
                                     what=f"{mod.__name__}.STD"),
                     class_names=_opt_names(getattr(mod, "CLASS_NAMES", None), what=f"{mod.__name__}.CLASS_NAMES"))
    source = "factory weights"
    if weights is not None:
        if weights.upper() == "DEFAULT":
            raise WeightsError(f"custom model {name} has no DEFAULT weights; pass --weights PATH "
                               "or leave --weights out to use the weights the factory returns")
        state, _ = _read_weights_file(weights, trust_pickle=trust_pickle)
        source = str(Path(weights).expanduser())
        _load_state_dict(module, state, what=source, model=name)
    return module, spec, state_dict_sha256(module.state_dict()), source


def _import_factory(text: str) -> tuple[Any, Callable[[], Any], str]:
    """``package.module:factory`` or ``path/to/file.py:factory`` -> (module, factory, canonical name).

    A file is imported under its dotted name from the first folder above it without an
    ``__init__.py`` (``proj/mymodel.py`` -> ``mymodel``; ``proj/pkg/net.py`` in package ``pkg`` ->
    ``pkg.net``), so both spellings of one model give one canonical ``module:factory`` name."""
    module_name, _, attr = text.rpartition(":")
    if not module_name or not attr:
        raise ModelError(f"--model {text!r} is not of the form package.module:factory or path/to/file.py:factory")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module_name = _module_from_file(module_name, text)
    elif ":" in module_name:
        raise ModelError(f"--model {text!r} is not of the form package.module:factory or path/to/file.py:factory")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # console scripts do not put the cwd on the path
        sys.path.append(cwd)
    try:
        mod = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error raised by the module's own code
        raise ModelError(f"cannot import {module_name!r} for --model {text} ({type(e).__name__}: {_short(e)}); "
                         "make it importable (run from its folder, add it to PYTHONPATH, or give the file: "
                         "path/to/file.py:factory)") from e
    factory = getattr(mod, attr, None)
    if factory is None:
        callables = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(attr, callables, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"module {module_name!r} has no factory {attr!r}{hint}")
    if not callable(factory):
        raise ModelError(f"{text} is a {type(factory).__name__}, not a callable factory")
    return mod, factory, f"{module_name}:{attr}"


def _module_from_file(path_text: str, text: str) -> str:
    """Put the import root of the file ``path_text`` on ``sys.path``; return the file's dotted module name."""
    path = Path(path_text).expanduser()
    if path.suffix != ".py":
        raise ModelError(f"--model {text}: {path} is not a .py file; give path/to/file.py:factory "
                         "or package.module:factory")
    if not path.is_file():
        raise ModelError(f"--model {text}: no file {path}; check the path (relative to {Path.cwd()})")
    path = path.resolve()
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    dotted = ".".join(parts)
    if not all(p.isidentifier() for p in parts):
        raise ModelError(f"--model {text}: {dotted!r} is not an importable module name; rename the file "
                         "(letters, digits and _)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get(dotted)
    if loaded is None:
        try:
            importlib.invalidate_caches()
            spec = importlib.util.find_spec(dotted)
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    else:
        origin = Path(getattr(loaded, "__file__", "") or "").resolve()
    if origin != path:
        raise ModelError(f"--model {text}: the module name {dotted!r} resolves to {origin or 'nothing'}, "
                         f"not {path}; rename the file so that it does not clash with another module")
    return dotted


# ---------------------------------------------------------------------------- weights files


def _read_weights_file(path: str, *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict / checkpoint file -> (state dict, sha256 of the file bytes).

    Only ``torch.load(weights_only=True)`` is used (tensors and plain containers, no code), unless
    ``trust_pickle``: then a file it refuses (e.g. a pickled ``nn.Module``) is unpickled in full,
    which can run code the file carries. Without it such a file is an UnsafeWeightsError quoting
    the safe loader's reason."""
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"weights file {p} does not exist; pass DEFAULT, a .pt/.pth file, "
                           "or leave --weights out for random init")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights file {p}: {e.strerror or e}") from e
    file_sha = hashlib.sha256(data).hexdigest()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as first:  # not plain tensors: maybe a pickled nn.Module, or not a torch file at all
        reason = _safe_loader_reason(first)
        if not trust_pickle:
            if "global" in reason.lower():
                raise UnsafeWeightsError(
                    f"weights file {p} is not plain tensors; the safe loader says: {reason}. If you trust the "
                    "file, pass --trust-pickle (unpickling can run code the file carries), or re-save it as a "
                    "state dict: torch.save(model.state_dict(), PATH)") from first
            raise WeightsError(f"cannot read weights file {p}: not a PyTorch state dict or checkpoint "
                               f"(the safe loader says: {reason})") from first
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:
            raise WeightsError(f"cannot read weights file {p}: not a PyTorch state dict, checkpoint or pickled "
                               f"module ({type(e).__name__}: {_short(e)})") from first
    return _extract_state_dict(obj, what=str(p)), file_sha


def _safe_loader_reason(e: BaseException) -> str:
    """The one informative sentence of a ``weights_only=True`` failure (torch's message is a page)."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = " ".join(text.split())
    for stop in (". Please use", ". Check the documentation", " Check the documentation"):
        text = text.split(stop, 1)[0]
    return _short(text.rstrip(". ") or type(e).__name__)


def _extract_state_dict(obj: Any, *, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a state dict, a checkpoint dict holding one, or an nn.Module; wrapper prefixes stripped."""
    for _ in range(3):  # checkpoints nest at most a couple of levels
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, dict):
            raise WeightsError(f"weights file {what} holds a {type(obj).__name__}, not a state dict, "
                               "checkpoint or nn.Module")
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return _strip_prefixes(dict(obj))
        inner = next((obj[k] for k in CHECKPOINT_KEYS if k in obj), None)
        if inner is None:
            keys = ", ".join(map(repr, list(obj)[:6])) or "none"
            raise WeightsError(f"weights file {what} holds a dict without a state dict (keys: {keys}); expected "
                               f"parameter tensors, or a checkpoint with one under {', '.join(CHECKPOINT_KEYS)}")
        obj = inner
    raise WeightsError(f"weights file {what}: checkpoint nested too deeply to find its state dict")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _load_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, model: str) -> None:
    """Load ``state`` into ``module`` after checking keys and shapes; WeightsError naming the first misfits."""
    own = module.state_dict()
    # BatchNorm's num_batches_tracked is bookkeeping; older files lack it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise WeightsError(f"weights {what} do not fit {model}: {'; '.join(parts)}; "
                           "check that --weights was saved from this --model")
    module.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------- validation helpers


def _validate_layers(module: torch.nn.Module, layers: Sequence[str], *, model: str) -> None:
    names = [n for n, _ in module.named_modules() if n]
    known = set(names)
    if not layers:
        raise ModelError(f"no layers given for {model}; pass --layers top -> bottom, the first being the logit layer")
    dupes = sorted({n for n in layers if list(layers).count(n) > 1})
    if dupes:
        raise ModelError(f"layer(s) listed twice for {model}: {', '.join(dupes)}")
    for layer in layers:
        if layer in known:
            continue
        close = difflib.get_close_matches(layer, names, n=4, cutoff=0.5)
        top = [n for n, _ in module.named_children()]
        shown = ", ".join(top[:12]) + (", ..." if len(top) > 12 else "")
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise ModelError(f"layer {layer!r} is not a module of {model}; {hint}top-level modules: {shown} "
                         "(layer names are named_modules() paths such as layer4.2 or features.12; "
                         f"`neurflow-graph layers --model {model}` lists them all with their output shapes)")


def _logit_width(module: torch.nn.Module, layer: str | None) -> int | None:
    if layer is None:
        return None
    m = dict(module.named_modules()).get(layer)
    if isinstance(m, torch.nn.Linear):
        return int(m.out_features)
    if isinstance(m, torch.nn.modules.conv._ConvNd):
        return int(m.out_channels)
    return None


def _disable_inplace(module: torch.nn.Module) -> None:
    # In-place activations break forward hooks that keep outputs and backward hooks; results are identical.
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


def _check_layer_arg(layers: Sequence[str] | None) -> list[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = layers.split(",")
    out = [str(x).strip() for x in layers if str(x).strip()]
    if not out:
        raise ModelError("--layers is empty; give comma-separated module names, top -> bottom")
    return out


def _check_input_size(value: Any, *, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise InputError(f"{what} must be a positive integer (square side in pixels), got {value!r}")
    return int(value)


def _check_norm(values: Sequence[float] | None, *, what: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    vals = tuple(float(v) for v in values)
    if len(vals) not in (1, 3) or not all(np.isfinite(vals)):
        raise InputError(f"{what} must be 1 or 3 finite numbers (one per RGB channel), got {values!r}")
    return vals


def _opt_floats(value: Any, *, what: str = "value") -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{what} must be a sequence of numbers, got {value!r}") from e


def _opt_names(value: Any, *, what: str = "CLASS_NAMES") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ModelError(f"{what} must be a list of strings")
    return list(value)


def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, REGISTRY_NAMES, n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return (f"unknown model {name!r}{hint}; use one of {', '.join(REGISTRY_NAMES)}, "
            "or package.module:factory for your own model (with --layers)")


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
