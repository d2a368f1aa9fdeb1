"""Batched IG equals captum's IntegratedGradients (one target at a time) on small CNNs.

Each case names the structural path it exercises (collapsed head, sliced conv/linear boundary,
channel concatenation, fallback), so that every rewrite of ig_graph is checked against the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from neurflow_graph.extraction.ig_graph import Costs, choose_slots
from neurflow_graph.extraction.integrated_gradients import SliceAttributor, quadrature
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers
from test_extraction_support import randomize_batchnorm


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x
        return F.relu(out)


class ResNetLike(nn.Module):
    """stem -> (maxpool) block (residual) -> down (strided conv, BN) -> gap -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block = Block(8)
        self.down = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.block(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.gap(self.down(x)), 1))


class Inception(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(c, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(c, 3, 1), nn.ReLU(), nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, 2, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class BranchNet(nn.Module):
    """Inception-style concat, a squeeze-excitation gate (falls back), a depthwise conv, an MLP head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.mix = Inception(6)
        self.se_fc = nn.Linear(11, 11)
        self.dw = nn.Sequential(nn.Conv2d(11, 11, 3, padding=1, groups=11), nn.Tanh())
        self.fc1 = nn.Linear(11, 7)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        x = self.mix(self.stem(x))
        gate = torch.sigmoid(self.se_fc(x.mean((2, 3))))
        x = self.dw(x * gate[:, :, None, None])
        x = F.relu(self.fc1(x.mean((2, 3))))
        return self.fc(self.drop(x))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Flatten(), nn.Linear(48, 10), nn.BatchNorm1d(10), nn.ReLU())
        self.l2 = nn.Sequential(nn.Linear(10, 9), nn.LeakyReLU(0.1))
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        return self.fc(self.l2(self.l1(x)))


def _model(cls: type, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = cls()
    randomize_batchnorm(m, seed)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# (model, layers, input side, {(upper, lower): predicate on the attributor naming the path})
CASES = [
    (ResNetLike, ["fc", "down", "block", "stem"], 12, {
        ("fc", "down"): lambda a: a.collapsible,
        ("down", "block"): lambda a: not a.collapsible and a.suffix_size >= 1,
        ("block", "stem"): lambda a: any(b.module is not None for b in a.boundaries) and a.suffix_size >= 2,
    }),
    (BranchNet, ["fc", "fc1", "mix", "stem"], 10, {
        ("fc", "fc1"): lambda a: a.collapsible,
        ("fc1", "mix"): lambda a: a.suffix_size == 0 and a.boundaries[0].module is not None,
        ("mix", "stem"): lambda a: any(b.module is not None for b in a.boundaries) and len(a.boundaries) >= 3,
    }),
    (MLP, ["fc", "l2", "l1"], 4, {
        ("fc", "l2"): lambda a: a.collapsible,
        ("l2", "l1"): lambda a: not a.collapsible and a.suffix_size == 1,
    }),
]


def _engine(slice_gm, maps, targets, method, steps, slots, max_rows, vectorised=False):
    att = SliceAttributor(slice_gm)
    att.vectorised = vectorised
    att.prepare(maps[:1])
    copies, rows = [], []
    for p in range(len(maps)):
        for i in range(0, len(targets), slots):
            chunk = targets[i:i + slots]
            copies.append(p)
            rows.append(chunk + [-1] * (slots - len(chunk)))
    alphas, weights = quadrature(method, steps)
    attr = att.attribute(maps=maps, copy_patch=torch.tensor(copies), slot_targets=torch.tensor(rows),
                         alphas=alphas, weights=weights, max_rows=max_rows)
    out = {}
    for ci, (p, ts) in enumerate(zip(copies, rows)):
        for si, t in enumerate(ts):
            if t >= 0:
                out[(p, t)] = attr[ci, si]
    return att, out


def _captum(slice_gm, maps, target, method, steps):
    def phi(x):
        y = slice_gm(x)
        return y.flatten(2).mean(2) if y.dim() > 2 else y

    a = IntegratedGradients(phi).attribute(maps, target=target, n_steps=steps, method=method)
    return a.flatten(2).sum(2) if a.dim() > 2 else a


@pytest.mark.parametrize("method, vectorised", [("gausslegendre", False), ("riemann_right", False),
                                                ("gausslegendre", True)], ids=["gl", "riemann", "gl-vmap"])
@pytest.mark.parametrize("cls, layers, side, paths", CASES, ids=[c[0].__name__ for c in CASES])
def test_batched_ig_equals_captum(cls, layers, side, paths, method, vectorised):
    model = _model(cls)
    traced = trace_layers(module=model, layers=layers)
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    steps = 12
    for upper, lower in zip(layers[:-1], layers[1:]):
        slice_gm = layer_slice(traced=traced, lower=lower, upper=upper)
        with torch.no_grad():
            maps = prefix(traced=traced, layer=lower)(x)
            width = slice_gm(maps[:1]).shape[1]
        targets = sorted({0, 1, width // 2, width - 1})
        # 2 slots and 5 rows per forward: copies split targets, chunks split a patch's steps.
        att, got = _engine(slice_gm, maps, targets, method, steps, slots=2, max_rows=5, vectorised=vectorised)
        assert paths[(upper, lower)](att), f"{cls.__name__} {upper}<-{lower} took an unexpected IG path"
        live = 0
        for t in targets:
            ref = _captum(slice_gm, maps, t, method, steps)
            scale = ref.abs().max().item()  # a ReLU-dead target has all-zero attributions: then exact zeros
            live += scale > 0
            for p in range(len(maps)):
                err = (got[(p, t)] - ref[p]).abs().max().item()
                assert err <= 1e-4 * scale, f"{cls.__name__} {upper}<-{lower} target {t} patch {p}: {err} vs {scale}"
        assert live >= 2, f"{cls.__name__} {upper}<-{lower}: too few live targets for a meaningful check"


def _registry_block(name, size, lower, upper, seed):
    """(slice lower -> upper, maps of 2 random inputs at ``lower``) of a random-init registry model."""
    from neurflow_graph.models.registry import load_model

    lm = load_model(name=name, input_size=size, device="cpu")
    for p in lm.module.parameters():
        p.requires_grad_(False)
    traced = trace_layers(module=lm.module, layers=[upper, lower])
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        maps = prefix(traced=traced, layer=lower)(x)
    return layer_slice(traced=traced, lower=lower, upper=upper), maps


def test_ig_on_torchvision_block_equals_captum():
    """A real ResNet block with many targets in shared rows (one slot per target)."""
    slice_gm, maps = _registry_block("resnet18", 48, "layer3.1", "layer4.0", 2)
    targets = [3, 77, 200, 511]
    _, got = _engine(slice_gm, maps, targets, "gausslegendre", 10, slots=4, max_rows=64)
    for t in targets:
        ref = _captum(slice_gm, maps, t, "gausslegendre", 10)
        for p in range(len(maps)):
            assert (got[(p, t)] - ref[p]).abs().max().item() <= 1e-4 * ref[p].abs().max().item()


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_right"])
@pytest.mark.parametrize("steps", [2, 7, 50])  # captum needs > 1
def test_quadrature_matches_captum(method, steps):
    step_sizes, alphas = approximation_parameters(method)
    a, w = quadrature(method, steps)
    # captum builds the Riemann points in float32; the engine casts to the model's dtype too.
    np.testing.assert_allclose(a, alphas(steps), rtol=0, atol=1e-7)
    np.testing.assert_allclose(w, step_sizes(steps), rtol=0, atol=1e-7)


def test_choose_slots_follows_the_cost_model():
    counts = [5, 5, 3, 1]
    # Free backward: sharing a forward among all targets of a patch is best.
    assert choose_slots(targets_per_patch=counts, costs=Costs(tail_forward=10.0), steps=50) == 5
    # Free forward: extra (empty) slots only cost, so one target per row.
    assert choose_slots(targets_per_patch=counts, costs=Costs(body_backward_per_slot=1.0), steps=50) == 1
    # A memory cap stops the search.
    assert choose_slots(targets_per_patch=counts, costs=Costs(tail_forward=10.0), steps=50, cap=lambda s: s <= 2) == 2


def test_ig_on_torchvision_inception_block_equals_captum():
    """A real torchvision GoogLeNet slice (inception4e -> maxpool4 -> inception5a): one target in each
    of the four concatenated branches (5a's 832 channels: 1x1 0-255, 3x3 256-575, 5x5 576-703, pool
    704-831) sharing one row, plus an empty slot, small row chunks: the branch-aware per-slot backward."""
    slice_gm, maps = _registry_block("googlenet", 64, "inception4e", "inception5a", 5)
    targets = [0, 300, 600, 800]
    _, got = _engine(slice_gm, maps, targets, "gausslegendre", 8, slots=5, max_rows=16)
    live = 0
    for t in targets:
        ref = _captum(slice_gm, maps, t, "gausslegendre", 8)
        for p in range(len(maps)):
            scale = ref[p].abs().max().item()
            live += scale > 0  # a target whose ReLU is off on the whole patch has zero attribution
            assert (got[(p, t)] - ref[p]).abs().max().item() <= 1e-4 * scale + 1e-9
    assert live >= len(targets)  # most (patch, target) pairs carry signal, so the check is not vacuous
