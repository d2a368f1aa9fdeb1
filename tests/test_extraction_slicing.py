"""Sub-networks cut from the fx graph reproduce the model: prefix then slice == the layer's output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurflow_graph.errors import ExtractionError
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers
from neurflow_graph.models.registry import get_spec, load_model
from test_extraction_support import layer_outputs, randomize_batchnorm


def _check_all_pairs(module: nn.Module, layers: list[str], x: torch.Tensor) -> None:
    module.eval()
    want = layer_outputs(module, layers, x)  # the oracle: eager outputs by plain hooks
    traced = trace_layers(module=module, layers=layers)
    with torch.no_grad():
        for upper, lower in zip(layers[:-1], layers[1:]):
            maps = prefix(traced=traced, layer=lower)(x)
            torch.testing.assert_close(maps, want[lower], rtol=1e-5, atol=1e-6)
            got = layer_slice(traced=traced, lower=lower, upper=upper)(maps)
            torch.testing.assert_close(got, want[upper], rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"{upper} <- {lower}: {m}")


@pytest.mark.parametrize("name, side", [("resnet18", 48), ("resnet50", 48), ("googlenet", 64), ("alexnet", 64)])
def test_torchvision_slices_reproduce_the_model(name, side):
    model = load_model(name=name, input_size=side, device="cpu")
    assert model.spec.layers == get_spec(name).layers
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    _check_all_pairs(model.module, model.spec.layers, x)


def test_demo_cnn_slices_reproduce_the_model():
    from neurflow_graph.models.demo import DEMO_LAYERS, build_demo_cnn

    torch.manual_seed(0)
    module = build_demo_cnn()
    randomize_batchnorm(module)
    _check_all_pairs(module, list(DEMO_LAYERS), torch.randn(3, 3, 64, 64))


class InPlaceBlock(nn.Module):
    """In-place ops whose inputs are read afterwards: out-of-place rewriting must keep the semantics."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.a(x)
        y = self.act(x)          # mutates x: x is relu(a(x)) from here on
        z = self.b(y)
        z += x                   # reads the mutated x
        w = F.relu(z, inplace=True)
        return self.c(w) + z     # z was mutated too


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = InPlaceBlock()
        self.block2 = InPlaceBlock()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block2(self.block1(self.stem(x))).mean((2, 3)))


def test_in_place_ops_keep_eager_semantics():
    torch.manual_seed(0)
    _check_all_pairs(InPlace(), ["fc", "block2", "block1", "stem"], torch.randn(2, 3, 8, 8))


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Conv2d(3, 4, 1)
        self.l2 = nn.Conv2d(4, 4, 1)
        self.l3 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        a = self.l1(x)
        b = self.l2(a)
        c = self.l3(b) + a  # the logit reads l1 directly (a DenseNet-style skip)
        return self.fc(c.mean((2, 3)))


def test_skip_over_a_layer_is_refused():
    traced = trace_layers(module=Skip().eval(), layers=["fc", "l3", "l2", "l1"])
    with pytest.raises(ExtractionError, match="depends on the model input other than through"):
        layer_slice(traced=traced, lower="l3", upper="fc")
    layer_slice(traced=traced, lower="l2", upper="l3")  # these pairs are fine
    layer_slice(traced=traced, lower="l1", upper="l2")


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean((2, 3)))


def test_shared_layer_is_refused():
    with pytest.raises(ExtractionError, match="runs 2 times"):
        trace_layers(module=Shared().eval(), layers=["fc", "conv"])
