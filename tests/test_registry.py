"""Model registry: layer lists against the real module trees, weights loading, custom factories, devices."""

from __future__ import annotations

import sys
import textwrap
import urllib.error
from types import SimpleNamespace

import pytest
import torch
import torchvision

from neurflow_graph.errors import InputError, ModelError, WeightsError
from neurflow_graph.models import registry
from neurflow_graph.models.registry import get_spec, load_model, resolve_device

# Expected lists written from the paper (sec. 4: "layer4.2" ... for ResNet50, GoogLeNet's last 10 layers)
# and torchvision's module trees, independently of the registry's construction code.
PAPER_LAYERS = {
    "resnet50": ["fc", "layer4.2", "layer4.1", "layer4.0", "layer3.5", "layer3.4", "layer3.3", "layer3.2",
                 "layer3.1", "layer3.0", "layer2.3"],
    "googlenet": ["fc", "inception5b", "inception5a", "inception4e", "inception4d", "inception4c", "inception4b",
                  "inception4a", "inception3b", "inception3a", "maxpool2"],
    "alexnet": ["classifier.6", "classifier.5", "classifier.2", "features.12", "features.9", "features.7",
                "features.5", "features.2"],
    "resnet18": ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1"],
}

TINY_MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    INPUT_SIZE = 8
    MEAN = (0.5, 0.5, 0.5)
    STD = (0.25, 0.25, 0.25)
    CLASS_NAMES = ["red", "green", "blue"]

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def build():
        torch.manual_seed(1)
        return Tiny()

    def not_a_module():
        return 42
''')


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A custom factory module ``nf_tiny_model`` importable for this test only."""
    (tmp_path / "nf_tiny_model.py").write_text(TINY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nf_tiny_model", raising=False)
    yield "nf_tiny_model"
    sys.modules.pop("nf_tiny_model", None)


def _run_with_hooks(module: torch.nn.Module, layers: list[str], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
               for name in layers]
    try:
        with torch.no_grad():
            y = module(x)
    finally:
        for h in handles:
            h.remove()
    return y, outputs


@pytest.mark.parametrize("name", list(PAPER_LAYERS))
def test_torchvision_layers_are_real_post_activation_modules(name):
    loaded = load_model(name=name, device="cpu")
    assert loaded.spec.layers == PAPER_LAYERS[name]
    assert loaded.spec.input_size == 224 and loaded.spec.mean == registry.IMAGENET_MEAN
    assert loaded.weights_sha256 is None and not loaded.module.training
    # 64x64 is enough for all four (adaptive pooling before the classifiers).
    y, outputs = _run_with_hooks(loaded.module, loaded.spec.layers, torch.rand(2, 3, 64, 64))
    assert set(outputs) == set(PAPER_LAYERS[name])
    assert torch.equal(outputs[loaded.spec.layers[0]], y) and y.shape == (2, 1000)
    for layer in loaded.spec.layers[1:]:
        out = outputs[layer]
        assert out.shape[0] == 2 and out.numel() > 2
        assert out.min() >= 0, f"{name}.{layer} is not a post-activation output"
    assert not any(m._forward_hooks for m in loaded.module.modules())
    if name == "googlenet":  # random init: no auxiliary heads, no input transform (that is for pretrained)
        assert loaded.module.aux1 is None and loaded.module.transform_input is False


def test_demo_layers_are_real_modules():
    demo = pytest.importorskip("neurflow_graph.models.demo")
    spec = get_spec("demo")
    module = demo.build_demo_cnn().eval()
    assert spec.layers == list(demo.DEMO_LAYERS) and spec.class_names == list(demo.CLASS_NAMES)
    size = spec.input_size
    y, outputs = _run_with_hooks(module, spec.layers, torch.rand(2, 3, size, size))
    assert torch.equal(outputs[spec.layers[0]], y)
    assert all(outputs[layer].shape[0] == 2 for layer in spec.layers)


def test_random_init_is_deterministic_and_inplace_is_off():
    a = load_model(name="resnet18", device="cpu")
    b = load_model(name="resnet18", device="cpu")
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not any(getattr(m, "inplace", False) for m in a.module.modules())
    assert a.class_name(7) == "class_7" and a.num_classes == 1000


def test_unknown_model_lists_registry_and_factory_form():
    with pytest.raises(ModelError) as e:
        load_model(name="resnet51", device="cpu")
    msg = str(e.value)
    assert all(n in msg for n in ("resnet50", "googlenet", "alexnet", "resnet18", "demo"))
    assert "module:factory" in msg and "did you mean resnet50" in msg


def test_bad_layer_lists_close_matches_and_top_level_modules():
    with pytest.raises(ModelError) as e:
        load_model(name="resnet18", layers=["fc", "layer4.3"], device="cpu")
    msg = str(e.value)
    assert "'layer4.3'" in msg and "layer4.1" in msg and "top-level modules: conv1, bn1" in msg


def test_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("gpu0")


# ---------------------------------------------------------------------------- custom factories


def test_custom_factory_reads_module_attributes(tiny):
    loaded = load_model(name=f"{tiny}:build", layers=["fc", "features.1"], device="cpu")
    assert loaded.spec.input_size == 8 and loaded.spec.mean == (0.5, 0.5, 0.5) and loaded.spec.std == (0.25,) * 3
    assert loaded.class_name(2) == "blue" and loaded.num_classes == 3
    assert loaded.weights_sha256 is not None  # the factory owns its weights: always hashed
    from PIL import Image
    x = loaded.preprocess(Image.new("RGB", (20, 10), (255, 0, 128)))
    assert x.shape == (3, 8, 8)
    expected = torch.tensor([(1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25])
    assert torch.allclose(x[:, 3, 3], expected, atol=1e-5)


def test_custom_overrides_and_no_preprocessing(tiny):
    loaded = load_model(name=f"{tiny}:build", layers=["fc"], input_size=4, mean=[0.0], std=[2.0], device="cpu")
    from PIL import Image
    x = loaded.preprocess(Image.new("RGB", (9, 9), (255, 255, 255)))
    assert x.shape == (3, 4, 4) and torch.allclose(x, torch.full((3, 4, 4), 0.5))


def test_custom_without_attributes_uses_own_size_unnormalized(tmp_path, monkeypatch):
    (tmp_path / "nf_bare_model.py").write_text("import torch\ndef make():\n    return torch.nn.Sequential("
                                               "torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nf_bare_model", raising=False)
    loaded = load_model(name="nf_bare_model:make", layers=["0"], device="cpu")
    assert loaded.spec.input_size is None and loaded.spec.mean is None and loaded.spec.class_names is None
    from PIL import Image
    x = loaded.preprocess(Image.new("L", (5, 3), 51))
    assert x.shape == (3, 3, 5) and torch.allclose(x, torch.full((3, 3, 5), 0.2))
    assert loaded.class_name(1) == "class_1"


@pytest.mark.parametrize("name,layers,pattern", [
    ("nf_tiny_model:build", None, "needs --layers"),
    ("nf_tiny_model:not_a_module", ["fc"], "returned int, not a torch.nn.Module"),
    ("nf_tiny_model:buidl", ["fc"], "no factory 'buidl'; did you mean build"),
    ("nf_no_such_module:build", ["fc"], "cannot import 'nf_no_such_module'"),
    ("nf_tiny_model:", ["fc"], "package.module:factory"),
])
def test_custom_factory_errors(tiny, name, layers, pattern):
    with pytest.raises(ModelError, match=pattern):
        load_model(name=name, layers=layers, device="cpu")


def test_custom_class_names_must_match_logit_width(tiny):
    sys.modules.pop(tiny, None)
    import importlib
    mod = importlib.import_module(tiny)
    mod.CLASS_NAMES = ["only", "two"]
    with pytest.raises(ModelError, match="2 class names but its logit layer 'fc' has 3 outputs"):
        load_model(name=f"{tiny}:build", layers=["fc"], device="cpu")


# ---------------------------------------------------------------------------- weights files


def _tiny_state(tiny):
    import importlib
    return importlib.import_module(tiny).build().state_dict()


def test_weights_packagings_give_the_same_content_hash(tiny, tmp_path):
    import importlib
    mod = importlib.import_module(tiny)
    torch.manual_seed(5)
    source = mod.Tiny()
    state = source.state_dict()
    files = {
        "plain.pt": state,
        "ckpt.pt": {"state_dict": state, "epoch": 3},
        "ckpt2.pt": {"model_state_dict": state},
        "ckpt3.pth": {"model": state},
        "dp.pt": {f"module.{k}": v for k, v in state.items()},
        "nested.pt": {"model": {"state_dict": {k: v.clone() for k, v in state.items()}}},
        "module.pt": source,
    }
    hashes = set()
    for fname, obj in files.items():
        torch.save(obj, tmp_path / fname)
        # a pickled module is code, not tensors: it loads only when the user says it is trusted
        loaded = load_model(name=f"{tiny}:build", weights=str(tmp_path / fname), layers=["fc"], device="cpu",
                            trust_pickle=fname == "module.pt")
        got = loaded.module.state_dict()
        assert all(torch.equal(got[k], state[k]) for k in state), fname
        hashes.add(loaded.weights_sha256)
    assert len(hashes) == 1
    changed = {k: v.clone() for k, v in state.items()}
    changed["fc.bias"][0] += 1.0
    torch.save(changed, tmp_path / "changed.pt")
    other = load_model(name=f"{tiny}:build", weights=str(tmp_path / "changed.pt"), layers=["fc"], device="cpu")
    assert other.weights_sha256 not in hashes


def test_weights_that_do_not_fit_name_the_keys(tiny, tmp_path):
    state = _tiny_state(tiny)
    bad = dict(state)
    bad.pop("fc.bias")
    bad["head.weight"] = torch.zeros(1)
    bad["fc.weight"] = torch.zeros(5, 4)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as e:
        load_model(name=f"{tiny}:build", weights=str(tmp_path / "bad.pt"), layers=["fc"], device="cpu")
    msg = str(e.value)
    assert "1 missing: fc.bias" in msg and "1 unexpected: head.weight" in msg
    assert "fc.weight file (5, 4) vs model (3, 4)" in msg


@pytest.mark.parametrize("content,pattern", [
    (b"this is not a checkpoint", "cannot read weights file"),
    (None, "does not exist"),
])
def test_unreadable_weights_file(tiny, tmp_path, content, pattern):
    path = tmp_path / "w.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=pattern):
        load_model(name=f"{tiny}:build", weights=str(path), layers=["fc"], device="cpu")


def test_checkpoint_without_state_dict(tiny, tmp_path):
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "c.pt")
    with pytest.raises(WeightsError, match="without a state dict.*'epoch'"):
        load_model(name=f"{tiny}:build", weights=str(tmp_path / "c.pt"), layers=["fc"], device="cpu")


def test_custom_model_has_no_default_weights(tiny):
    with pytest.raises(WeightsError, match="no DEFAULT weights"):
        load_model(name=f"{tiny}:build", weights="DEFAULT", layers=["fc"], device="cpu")


def test_finetuned_file_sets_the_number_of_classes(tmp_path):
    net = torchvision.models.resnet18(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "ft.pt")
    loaded = load_model(name="resnet18", weights=str(tmp_path / "ft.pt"), device="cpu")
    assert loaded.num_classes == 10 and loaded.module.fc.out_features == 10
    assert torch.equal(loaded.module.fc.weight, net.fc.weight)
    assert loaded.class_name(3) == "class_3" and loaded.weights_sha256 is not None


def test_wrong_architecture_file(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(WeightsError, match=r"do not fit resnet50: \d+ missing: .*layer1\.0\.conv3"):
        load_model(name="resnet50", weights=str(tmp_path / "r18.pt"), device="cpu")


# ---------------------------------------------------------------------------- DEFAULT weights


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_default_weights_offline_says_how_to_pass_a_file(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as e:
        load_model(name="resnet50", weights="DEFAULT", device="cpu")
    msg = str(e.value)
    assert "could not download" in msg and "resnet50-11ad3fa6.pth" in msg and "--weights PATH" in msg
    assert "\n" not in msg


def test_default_weights_come_from_the_hub_cache(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    net = torchvision.models.googlenet(aux_logits=True, init_weights=False)  # the published file keeps aux heads
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(net.state_dict(), cache / "googlenet-1378be20.pth")
    loaded = load_model(name="googlenet", weights="DEFAULT", device="cpu")
    assert loaded.module.transform_input is True and loaded.module.aux1 is None
    assert torch.equal(loaded.module.fc.weight, net.fc.weight)
    categories = torchvision.models.GoogLeNet_Weights.DEFAULT.meta["categories"]
    assert loaded.class_name(309) == categories[309] and loaded.num_classes == 1000
    # The same content given as a file (aux heads dropped, 'module.' prefix) hashes the same.
    plain = {f"module.{k}": v for k, v in net.state_dict().items() if not k.startswith("aux")}
    torch.save(plain, tmp_path / "plain.pt")
    again = load_model(name="googlenet", weights=str(tmp_path / "plain.pt"), device="cpu")
    assert again.weights_sha256 == loaded.weights_sha256


def test_published_file_is_recognised_by_its_hash(monkeypatch, tmp_path):
    import hashlib
    net = torchvision.models.resnet18()
    path = tmp_path / "downloaded.pth"
    torch.save(net.state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    fake = SimpleNamespace(url=f"https://example.invalid/resnet18-{sha[:8]}.pth", name="FAKE",
                           meta={"categories": [f"thing {i}" for i in range(1000)]})
    monkeypatch.setattr(registry, "_torchvision_weights", lambda name: [fake])
    loaded = load_model(name="resnet18", weights=str(path), device="cpu")
    assert loaded.class_name(5) == "thing 5"
    monkeypatch.setattr(registry, "_torchvision_weights", lambda name: [])
    assert load_model(name="resnet18", weights=str(path), device="cpu").class_name(5) == "class_5"


def test_demo_weights_file_and_default(tmp_path, monkeypatch):
    demo = pytest.importorskip("neurflow_graph.models.demo")
    torch.manual_seed(3)
    trained = demo.build_demo_cnn()
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "demo.pt")
    from_file = load_model(name="demo", weights=str(tmp_path / "demo.pt"), device="cpu")
    assert from_file.spec.input_size == demo.INPUT_SIZE and from_file.class_name(0) == demo.CLASS_NAMES[0]
    # None / DEFAULT mean the cached trained weights; stand in for training with the same module.
    monkeypatch.setattr(demo, "get_demo_model", lambda **kw: (trained, tmp_path / "demo.pt"))
    for weights in (None, "DEFAULT"):
        cached = load_model(name="demo", weights=weights, device="cpu")
        assert cached.weights_sha256 == from_file.weights_sha256 is not None
