"""Interventions against an independent oracle: the same model with the masked neurons' weights
zeroed (or set to give the mean) computes the same outputs. Plus hook hygiene: no hook survives a
``with`` block that succeeds or raises."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neurflow_graph.errors import InputError
from neurflow_graph.interventions import (
    concept_loss, knockout_concepts, knockout_phi, layer_function, mask_neuron_sets, mask_neurons,
    mean_activations, retain_neurons,
)
from neurflow_graph.models.demo import DemoCNN

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    m = DemoCNN(num_classes=5, widths=(4, 6, 8, 8))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a masked channel is not 0 by accident
        for bn in (m.conv1[1], m.conv2[1], m.conv3[1], m.conv4[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.1, 0.6)
    return m.eval().to(device)


def _inputs(device: str = "cpu", n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)


def _zeroed(model: nn.Module, block: str, channels: list[int], value: float | list[float] = 0.0) -> nn.Module:
    """The oracle: a copy whose BatchNorm (gamma, beta) of ``channels`` in ``block`` are (0, value),
    so after the block's ReLU those channels output ``value`` (>= 0) whatever the input."""
    oracle = copy.deepcopy(model)
    bn = getattr(oracle, block)[1]
    values = value if isinstance(value, list) else [value] * len(channels)
    with torch.no_grad():
        for c, v in zip(channels, values):
            bn.weight[c] = 0.0
            bn.bias[c] = v
    return oracle


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("device", DEVICES)
def test_mask_equals_zeroed_weights(device):
    model, x = _model(device), _inputs(device)
    with torch.no_grad():
        plain = model(x)
        with mask_neurons(model, {"conv3": [1, 4, 7]}):
            masked = model(x)
        expected = _zeroed(model, "conv3", [1, 4, 7])(x)
    assert torch.equal(masked, expected)
    assert not torch.allclose(masked, plain)
    assert _no_hooks(model)
    with torch.no_grad():
        assert torch.equal(model(x), plain)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_two_layers_and_the_logit(device):
    model, x = _model(device), _inputs(device)
    oracle = _zeroed(_zeroed(model, "conv2", [0, 5]), "conv4", [2])
    with torch.no_grad():
        oracle.fc.weight[3] = 0.0
        oracle.fc.bias[3] = 0.0
        with mask_neurons(model, {"conv2": [0, 5], "conv4": [2], "fc": [3]}):
            got = model(x)
        assert torch.equal(got, oracle(x))
    assert (got[:, 3] == 0).all()


def test_retain_equals_zeroing_the_complement():
    model, x = _model(), _inputs()
    keep = [2, 3]
    others = [c for c in range(8) if c not in keep]
    with torch.no_grad(), retain_neurons(model, {"conv4": keep}):
        got = model(x)
    with torch.no_grad():
        assert torch.equal(got, _zeroed(model, "conv4", others)(x))


def test_mean_mode_equals_constant_channels():
    model, x = _model(), _inputs()
    means = mean_activations(model, ["conv3"], [x[:3], x[3:]])
    # independent mean: the hooked forward's channel averages recomputed by hand
    with torch.no_grad():
        direct = model.conv3(model.pool2(model.conv2(model.pool1(model.conv1(x))))).mean((0, 2, 3))
    assert torch.allclose(means["conv3"], direct, atol=1e-6)
    values = [float(means["conv3"][c]) for c in (0, 6)]
    with torch.no_grad(), mask_neurons(model, {"conv3": [0, 6]}, mode="mean", means=means):
        got = model(x)
    with torch.no_grad():
        expected = _zeroed(model, "conv3", [0, 6], value=values)(x)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_sets_equal_one_set_at_a_time(device):
    model, x = _model(device), _inputs(device, n=4)
    sets = [[0], [1, 2, 3], [], [5, 7]]
    with torch.no_grad():
        with mask_neuron_sets(model, "conv3", sets):
            batched = model(x.repeat(len(sets), 1, 1, 1)).view(len(sets), len(x), -1)
        for i, s in enumerate(sets):
            assert torch.allclose(batched[i], _zeroed(model, "conv3", s)(x), atol=1e-5)
        with mask_neuron_sets(model, "conv3", sets, retain=True):
            kept = model(x.repeat(len(sets), 1, 1, 1)).view(len(sets), len(x), -1)
        others = [c for c in range(8) if c not in sets[1]]
        assert torch.allclose(kept[1], _zeroed(model, "conv3", others)(x), atol=1e-5)
    assert _no_hooks(model)


@pytest.mark.parametrize("device", DEVICES)
def test_knockout_phi_equals_full_forward_under_mask(device):
    """Definition 2 through the layer slice == the hooked full model (and the zeroed oracle)."""
    model, x = _model(device), _inputs(device, n=5)
    captured = {}
    handle = model.conv3.register_forward_hook(lambda _m, _i, out: captured.__setitem__("maps", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    fn = layer_function(module=model, lower="conv3", upper="conv4")
    sets = [[], [0, 1], [4], list(range(8))]
    phi = knockout_phi(slice_module=fn, maps=captured["maps"], sets=sets, targets=[1, 6], max_rows=7)
    assert phi.shape == (4, 5, 2)
    for i, s in enumerate(sets):
        out = {}
        h = model.conv4.register_forward_hook(lambda _m, _i, o: out.__setitem__("y", o.detach()))
        try:
            with torch.no_grad(), mask_neurons(model, {"conv3": s}):
                model(x)
        finally:
            h.remove()
        expected = out["y"].mean((2, 3))[:, [1, 6]]
        assert torch.allclose(phi[i], expected, atol=1e-5), s


def test_knockout_concepts_and_loss_by_hand():
    phi = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.0], [0.9, 0.0, 0.1, 0.2, 0.8]])
    got = knockout_concepts(phi, 3)
    assert got.tolist() == [[1, 2, 3], [0, 4, 3]]  # ties to the lower id
    assert concept_loss([1, 2, 3], got).tolist() == [1.0, pytest.approx(1 / 3)]


def test_no_hook_survives_an_error():
    model, x = _model(), _inputs()
    with pytest.raises(RuntimeError, match="boom"):
        with mask_neurons(model, {"conv2": [1], "conv3": [2]}):
            model(x)
            raise RuntimeError("boom")
    assert _no_hooks(model)
    # an error raised inside the hook itself (channel out of range) also leaves nothing behind
    with pytest.raises(InputError, match="out of range"):
        with mask_neurons(model, {"conv3": [99]}):
            model(x)
    assert _no_hooks(model)
    with pytest.raises(InputError, match="cannot be split"):
        with mask_neuron_sets(model, "conv3", [[0], [1], [2], [3], [4]]):
            model(x)
    assert _no_hooks(model)


def test_a_bad_layer_registers_nothing():
    model = _model()
    with pytest.raises(InputError, match="close names: conv3"):
        with mask_neurons(model, {"conv2": [0], "conv33": [1]}):
            pass  # pragma: no cover
    assert _no_hooks(model)
    with pytest.raises(InputError, match="mode"):
        with mask_neurons(model, {"conv2": [0]}, mode="noise"):
            pass  # pragma: no cover
    with pytest.raises(InputError, match="means"):
        with mask_neurons(model, {"conv2": [0]}, mode="mean"):
            pass  # pragma: no cover
    with pytest.raises(InputError, match="integers"):
        with mask_neurons(model, {"conv2": ["a"]}):
            pass  # pragma: no cover
    assert _no_hooks(model)


def test_numpy_channel_ids_are_accepted():
    model, x = _model(), _inputs()
    with torch.no_grad():
        with mask_neurons(model, {"conv3": np.array([1, 4])}):
            a = model(x)
        with mask_neurons(model, {"conv3": [1, 4]}):
            b = model(x)
    assert torch.equal(a, b)


def test_restricted_slice_equals_the_full_slice_columns():
    from neurflow_graph.interventions.knockout import restrict_outputs

    model = _model()
    maps = torch.randn(5, 6, 16, 16, generator=torch.Generator().manual_seed(3))
    fn = layer_function(module=model, lower="conv2", upper="conv3")
    small = restrict_outputs(fn, [5, 1])
    assert small is not None
    with torch.no_grad():
        assert torch.allclose(small(maps), fn(maps)[:, [5, 1]], atol=1e-5)
    sets = [[], [0, 2], [4]]
    full = knockout_phi(slice_module=fn, maps=maps, sets=sets, targets=[5, 1])
    fast = knockout_phi(slice_module=small, maps=maps, sets=sets)
    assert torch.allclose(full, fast, atol=1e-5)
    # a slice ending in a skip connection (x + f(x)) is not restricted
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)
            self.b = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y) + y
    skip = Skip().eval()
    assert restrict_outputs(layer_function(module=skip, lower="a", upper="b"), [0]) is not None
    gm = torch.fx.symbolic_trace(skip)
    assert restrict_outputs(gm, [0]) is None


def test_knockout_by_weight_columns_equals_masking_the_input():
    """The fast path (zero the first conv's weight columns) against the plain one (zero the maps)."""
    from neurflow_graph.interventions.knockout import split_at_first_mixer

    model = _model()
    maps = torch.relu(torch.randn(7, 6, 16, 16, generator=torch.Generator().manual_seed(4)))
    fn = layer_function(module=model, lower="conv2", upper="conv3")
    assert split_at_first_mixer(fn) is not None
    sets = [[], [0], [1, 3, 5], list(range(6))]
    fast = knockout_phi(slice_module=fn, maps=maps, sets=sets, max_rows=3)
    with torch.no_grad():
        for i, s in enumerate(sets):
            x = maps.clone()
            x[:, s] = 0
            assert torch.allclose(fast[i], fn(x).mean((2, 3)), atol=1e-5), s
