"""The demo CNN for the concept world: architecture, training, and a content-addressed cache.

``DemoCNN`` is four conv blocks (each ``Sequential(Conv, BatchNorm, ReLU)``, so a block's
output is post-ReLU) with max-pooling between, a global average pool and ``fc``.
NeurFlow explains ``DEMO_LAYERS`` (top -> bottom). The leaf is ``conv2``: its units see
8x8 pixels, about one dot or stripe period of the world's textures, while ``conv1``
units (3x3) only see colour and edges.

The trained weights are cached as ``<cache_dir>/demo-model-<key>.pt`` (a state_dict) with
``demo-model-<key>.json`` (training metrics) beside it. ``key`` is a sha256 prefix of the
training config, the world definition and the source of this module and of
``datasets/concept_world.py``, so any change that could change the weights gives a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neurflow_graph.datasets import concept_world
from neurflow_graph.datasets.concept_world import CLASS_NAMES as WORLD_CLASS_NAMES
from neurflow_graph.datasets.concept_world import ConceptWorld, world_definition
from neurflow_graph.fileio import atomic_write
from neurflow_graph.errors import InputError, WeightsError

DEMO_INPUT_SIZE = 64
# Per-channel statistics of the concept world's images (train split, all classes).
DEMO_MEAN: tuple[float, float, float] = (0.576, 0.620, 0.567)
DEMO_STD: tuple[float, float, float] = (0.231, 0.182, 0.282)
DEMO_LAYERS: list[str] = ["fc", "conv4", "conv3", "conv2"]
DEMO_CLASS_NAMES: list[str] = list(WORLD_CLASS_NAMES)
DEMO_WIDTHS: tuple[int, int, int, int] = (16, 32, 64, 64)

# Custom-model convention: a factory's module may declare these for the registry.
INPUT_SIZE = DEMO_INPUT_SIZE
MEAN = DEMO_MEAN
STD = DEMO_STD
CLASS_NAMES = DEMO_CLASS_NAMES

CACHE_ENV = "NEURFLOW_CACHE"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DemoCNN(nn.Module):
    """(N, 3, 64, 64) normalized images -> (N, num_classes) logits.

    Spatial sizes: conv1 64, conv2 32, conv3 16, conv4 8 (for a 64-pixel input).
    """

    def __init__(self, num_classes: int = len(DEMO_CLASS_NAMES), *, widths: tuple[int, ...] = DEMO_WIDTHS):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.conv1 = _block(3, w1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _block(w1, w2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _block(w2, w3)
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = _block(w3, w4)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool3(self.conv3(x))
        x = self.gap(self.conv4(x))
        return self.fc(torch.flatten(x, 1))


def build_demo_cnn() -> nn.Module:
    """Factory: an untrained :class:`DemoCNN` for the concept world's classes."""
    return DemoCNN(num_classes=len(DEMO_CLASS_NAMES))


# ---------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (besides the source code)."""

    seed: int = 0
    n_train_per_class: int = 200
    n_test_per_class: int = 100
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4


@dataclass
class DemoMetrics:
    """Held-out results of one training run; ``seconds`` includes generating the images."""

    test_accuracy: float
    train_accuracy: float
    debiased_accuracy: float  # test split with every spurious concept at rate 0.5 in every class
    per_class_accuracy: dict[str, float]
    n_train: int
    n_test: int
    epochs: int
    seconds: float
    data_seconds: float
    threads: int
    config: dict[str, Any] = field(default_factory=dict)
    # Bias split (every other class on flowers and grass): share of the other classes' images
    # predicted as a class whose spurious context they carry ("bee"); None in older caches.
    bias_false_positive_rate: float | None = None


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, normalized with DEMO_MEAN/DEMO_STD."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(DEMO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def train_demo_model(*, config: TrainConfig = TrainConfig(),
                     progress: Callable[[str], None] | None = None) -> tuple[nn.Module, DemoMetrics]:
    """Train :class:`DemoCNN` on the concept world's train split (on CPU); evaluate on its test split.

    Deterministic for a given config and thread count. Returns the model in eval mode and its metrics.
    """
    seed, epochs, batch_size, lr = config.seed, config.epochs, config.batch_size, config.lr
    for name in ("n_train_per_class", "n_test_per_class", "epochs", "batch_size"):
        if getattr(config, name) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(config, name)}")
    if lr <= 0:
        raise InputError(f"lr must be > 0, got {lr}")
    say = progress or (lambda _msg: None)

    start = time.perf_counter()
    train_images, train_labels = ConceptWorld(seed=seed, n_per_class=config.n_train_per_class, split="train").arrays()
    test_images, test_labels = ConceptWorld(seed=seed, n_per_class=config.n_test_per_class, split="test").arrays()
    x_train, y_train = _to_tensor(train_images), torch.from_numpy(train_labels)
    x_test, y_test = _to_tensor(test_images), torch.from_numpy(test_labels)
    fair_images, fair_labels = ConceptWorld(seed=seed, n_per_class=config.n_test_per_class, split="test",
                                            spurious_rate=0.5).arrays()
    x_fair, y_fair = _to_tensor(fair_images), torch.from_numpy(fair_labels)
    bias_images, bias_labels = ConceptWorld(seed=seed, n_per_class=config.n_test_per_class, split="bias").arrays()
    x_bias, y_bias = _to_tensor(bias_images), torch.from_numpy(bias_labels)
    data_seconds = time.perf_counter() - start
    say(f"generated {len(x_train)} train + {len(x_test)} test images in {data_seconds:.1f} s")

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_demo_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(x_train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            # Random horizontal flips: every class is mirror-symmetric in distribution.
            xb = x_train[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            loss = loss_fn(model(xb), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        say(f"epoch {epoch + 1}/{epochs}: loss {total / len(x_train):.3f} "
            f"({time.perf_counter() - start:.0f} s)")

    test_pred = _predict(model, x_test)
    train_pred = _predict(model, x_train)
    per_class = {
        name: float((test_pred[y_test == c] == c).float().mean()) for c, name in enumerate(DEMO_CLASS_NAMES)
    }
    biased = torch.tensor([bool(c.spurious) for c in concept_world.CLASSES])
    bias_pred = _predict(model, x_bias)
    others = ~biased[y_bias]
    metrics = DemoMetrics(
        test_accuracy=float((test_pred == y_test).float().mean()),
        train_accuracy=float((train_pred == y_train).float().mean()),
        debiased_accuracy=float((_predict(model, x_fair) == y_fair).float().mean()),
        per_class_accuracy=per_class, n_train=len(x_train), n_test=len(x_test), epochs=epochs,
        seconds=time.perf_counter() - start, data_seconds=data_seconds, threads=torch.get_num_threads(),
        config=asdict(config),
        bias_false_positive_rate=float(biased[bias_pred[others]].float().mean()),
    )
    say(f"held-out accuracy {metrics.test_accuracy:.1%} (debiased {metrics.debiased_accuracy:.1%}; "
        f"bias split: {metrics.bias_false_positive_rate:.1%} of other classes called the biased class) "
        f"in {metrics.seconds:.1f} s")
    return model.eval(), metrics


# ---------------------------------------------------------------------------
# Content-addressed cache


def default_cache_dir() -> Path:
    """``$NEURFLOW_CACHE`` or ``~/.cache/neurflow-graph``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurflow-graph"


def _source_digest() -> dict[str, str]:
    files = {"concept_world.py": Path(concept_world.__file__), "demo.py": Path(__file__)}
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def demo_cache_key(*, config: TrainConfig = TrainConfig()) -> str:
    """16 hex digits of sha256 over the training config, world definition, architecture and source."""
    payload = {
        "train": asdict(config),
        "world": world_definition(),
        "model": {"widths": DEMO_WIDTHS, "input_size": DEMO_INPUT_SIZE, "mean": DEMO_MEAN, "std": DEMO_STD},
        "source": _source_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def demo_model_path(*, cache_dir: str | Path | None = None, config: TrainConfig = TrainConfig()) -> Path:
    """Where the weights for ``config`` live (whether or not they exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"demo-model-{demo_cache_key(config=config)}.pt"


def save_state_dict(*, model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path such as {path / 'demo.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(model.state_dict(), f))
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def load_demo_metrics(weights_path: str | Path) -> DemoMetrics | None:
    """The metrics saved beside cached weights, or None when absent or unreadable."""
    try:
        return DemoMetrics(**json.loads(Path(weights_path).with_suffix(".json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _load_cached(path: Path) -> nn.Module | None:
    model = build_demo_cnn()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:  # a truncated or foreign file: treat as a cache miss
        return None
    return model.eval()


def get_demo_model(*, cache_dir: str | Path | None = None, train_if_missing: bool = True,
                   config: TrainConfig = TrainConfig(),
                   progress: Callable[[str], None] | None = None) -> tuple[nn.Module, Path]:
    """The trained demo model (eval mode, CPU) and its cached weights file; trains on a miss."""
    path = demo_model_path(cache_dir=cache_dir, config=config)
    if path.is_file():
        model = _load_cached(path)
        if model is not None:
            return model, path
    if not train_if_missing:
        raise WeightsError(f"no usable cached demo model at {path}; "
                           "run `neurflow-graph demo-model --out demo.pt` to train it (about a minute)")
    model, metrics = train_demo_model(config=config, progress=progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(asdict(metrics), indent=1).encode()))
        # The weights go last: their presence marks a complete cache entry.
        atomic_write(path, lambda f: torch.save(model.state_dict(), f))
    except OSError as e:
        raise InputError(f"cannot write the demo-model cache in {path.parent}: {e.strerror or e}; "
                         f"set {CACHE_ENV} to a writable directory") from e
    return model, path
