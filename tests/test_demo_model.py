"""The demo CNN: architecture, a reduced training run, the content-addressed cache, the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neurflow_graph.cli import cli
from neurflow_graph.datasets.concept_world import CLASSES, ConceptWorld
from neurflow_graph.errors import InputError, WeightsError
from neurflow_graph.models import demo
from neurflow_graph.models.demo import (
    DEMO_LAYERS, DemoMetrics, TrainConfig, build_demo_cnn, demo_cache_key, demo_model_path, get_demo_model,
    load_demo_metrics, train_demo_model,
)


# --- architecture ----------------------------------------------------------------------------


def test_named_layers_and_post_relu_outputs():
    model = build_demo_cnn().eval()
    modules = dict(model.named_modules())
    assert DEMO_LAYERS[0] == "fc" and all(name in modules for name in DEMO_LAYERS)
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[f"conv{i}"].register_forward_hook(
        lambda _m, _i, out, name=f"conv{i}": outputs.__setitem__(name, out)) for i in range(1, 5)]
    try:
        logits = model(torch.randn(2, 3, demo.DEMO_INPUT_SIZE, demo.DEMO_INPUT_SIZE))
    finally:
        for h in handles:
            h.remove()
    assert logits.shape == (2, len(CLASSES))
    assert [outputs[f"conv{i}"].shape[-1] for i in range(1, 5)] == [64, 32, 16, 8]
    assert all((out >= 0).all() for out in outputs.values())
    # The sub-network slicer uses torch.fx: the model must trace.
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(traced(x), model(x))


def test_module_constants_follow_the_custom_model_convention():
    assert demo.INPUT_SIZE == demo.DEMO_INPUT_SIZE == 64
    assert list(demo.CLASS_NAMES) == [c.name for c in CLASSES]
    # MEAN/STD are the world's own channel statistics (measured here on other images).
    images, _ = ConceptWorld(seed=11, n_per_class=20).arrays()
    x = images.astype(np.float64) / 255.0
    assert np.allclose(demo.MEAN, x.mean(axis=(0, 1, 2)), atol=0.03)
    assert np.allclose(demo.STD, x.std(axis=(0, 1, 2)), atol=0.03)


# --- training ----------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    # One thread is faster than two on a shared 2-core machine for a model this small.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_reduced_training_beats_chance_by_far(one_thread):
    # 40 train images per class, 6 epochs (a few seconds). Chance is 1/8; the full run
    # (200 per class) reaches ~100%. Floor 0.75 on 25 held-out images per class.
    model, metrics = train_demo_model(config=TrainConfig(seed=0, n_train_per_class=40, n_test_per_class=25, epochs=6))
    assert metrics.n_train == 40 * len(CLASSES) and metrics.n_test == 25 * len(CLASSES)
    assert metrics.test_accuracy >= 0.75
    # The reported accuracy is the model's own: recompute it on the same test split.
    images, labels = ConceptWorld(seed=0, n_per_class=25, split="test").arrays()
    with torch.no_grad():
        pred = model(demo._to_tensor(images)).argmax(1).numpy()
    assert (pred == labels).mean() == pytest.approx(metrics.test_accuracy)
    assert not model.training


def test_training_is_deterministic_for_a_seed(one_thread):
    a, _ = train_demo_model(config=TrainConfig(seed=4, n_train_per_class=3, n_test_per_class=1, epochs=1, batch_size=8))
    b, _ = train_demo_model(config=TrainConfig(seed=4, n_train_per_class=3, n_test_per_class=1, epochs=1, batch_size=8))
    c, _ = train_demo_model(config=TrainConfig(seed=5, n_train_per_class=3, n_test_per_class=1, epochs=1, batch_size=8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.0.weight"], sc["conv1.0.weight"])


def test_training_rejects_bad_config():
    with pytest.raises(InputError):
        train_demo_model(config=TrainConfig(epochs=0))


# --- cache -------------------------------------------------------------------------------------


class FakeTrainer:
    """Stands in for train_demo_model: counts calls, returns a seeded random model."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *, config, progress=None):
        self.calls += 1
        torch.manual_seed(config.seed + 100 * self.calls)
        metrics = DemoMetrics(test_accuracy=0.97, train_accuracy=0.99, debiased_accuracy=0.95,
                              per_class_accuracy={}, n_train=1, n_test=800, epochs=1, seconds=1.5,
                              data_seconds=0.1, threads=1, config=dataclasses.asdict(config))
        return build_demo_cnn().eval(), metrics


@pytest.fixture
def fake_trainer(monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(demo, "train_demo_model", fake)
    return fake


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cache_hit_does_not_retrain(tmp_path, fake_trainer):
    first, path = get_demo_model(cache_dir=tmp_path)
    assert fake_trainer.calls == 1
    assert path == tmp_path / f"demo-model-{demo_cache_key()}.pt" and path.is_file()
    assert load_demo_metrics(path).test_accuracy == 0.97
    second, path2 = get_demo_model(cache_dir=tmp_path)
    third, _ = get_demo_model(cache_dir=tmp_path, train_if_missing=False)
    assert fake_trainer.calls == 1 and path2 == path
    assert _same_weights(first, second) and _same_weights(first, third)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_missing_cache_without_training_is_an_error(tmp_path, fake_trainer):
    with pytest.raises(WeightsError):
        get_demo_model(cache_dir=tmp_path, train_if_missing=False)
    assert fake_trainer.calls == 0


def test_cache_key_follows_config_and_source(monkeypatch):
    base = demo_cache_key()
    assert demo_cache_key(config=TrainConfig()) == base
    assert len({base, demo_cache_key(config=TrainConfig(seed=1)),
                demo_cache_key(config=TrainConfig(epochs=7)),
                demo_cache_key(config=TrainConfig(lr=1e-3))}) == 4
    real = demo._source_digest()
    monkeypatch.setattr(demo, "_source_digest", lambda: {**real, "demo.py": "0" * 64})
    assert demo_cache_key() != base


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path / "c"))
    assert demo_model_path().parent == tmp_path / "c"
    monkeypatch.delenv("NEURFLOW_CACHE")
    assert demo_model_path().parent == Path.home() / ".cache" / "neurflow-graph"


def test_interrupted_write_leaves_no_cache_entry(tmp_path, fake_trainer, monkeypatch):
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        get_demo_model(cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(demo.torch, "save", real_save)
    _, path = get_demo_model(cache_dir=tmp_path)
    assert path.is_file() and fake_trainer.calls == 2


def test_corrupt_cache_file_is_retrained(tmp_path, fake_trainer):
    path = demo_model_path(cache_dir=tmp_path)
    path.write_bytes(b"not a state dict")
    with pytest.raises(WeightsError):
        get_demo_model(cache_dir=tmp_path, train_if_missing=False)
    model, _ = get_demo_model(cache_dir=tmp_path)
    assert fake_trainer.calls == 1
    reloaded = build_demo_cnn()
    reloaded.load_state_dict(torch.load(path, weights_only=True))
    assert _same_weights(model, reloaded)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_demo_model_trains_once_and_writes_weights(tmp_path, fake_trainer):
    runner = CliRunner()
    args = ["demo-model", "--out", str(tmp_path / "out" / "demo.pt"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "held-out accuracy 97.0%" in first.output and "trained now" in first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "cached" in second.output
    assert fake_trainer.calls == 1
    model = build_demo_cnn()
    model.load_state_dict(torch.load(tmp_path / "out" / "demo.pt", weights_only=True))
    cached, _ = get_demo_model(cache_dir=tmp_path / "cache", train_if_missing=False)
    assert _same_weights(model, cached)


@pytest.mark.parametrize("extra", [[], ["--seed", "-1"]])
def test_cli_demo_model_bad_input_is_one_line_exit_2(tmp_path, fake_trainer, extra):
    out = tmp_path if not extra else tmp_path / "demo.pt"
    result = CliRunner().invoke(cli, ["demo-model", "--out", str(out), "--cache-dir", str(tmp_path), *extra])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert fake_trainer.calls == 0
