"""The IG engine's branch-aware backward (GoogLeNet-style slices) equals captum, slot by slot.

Per copy the engine sorts its slots by the boundaries their targets read, back-propagates per slot
only the boundaries and head values those targets reach, and enters a one-channel head value behind a
conv at the conv's input (one weight row per copy). These tests put targets of different branches,
empty slots, an all-empty copy and a pool-only branch (no conv) into the same rows, with strided,
dilated and output-padded convolutions on both sides of the head/tail split, and check every
(copy, slot) against captum's IntegratedGradients for that patch and target alone.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from torch import nn

from neurflow_graph.extraction.integrated_gradients import SliceAttributor, _restricted_input_grads, quadrature
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers
from test_extraction_support import randomize_batchnorm


class BasicConv(nn.Module):
    """torchvision GoogLeNet's unit: conv (no bias), BatchNorm, in-place ReLU."""

    def __init__(self, c_in: int, c_out: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionBlock(nn.Module):
    def __init__(self, c_in: int, c1: int, c2r: int, c2: int, c3r: int, c3: int, c4: int):
        super().__init__()
        self.b1 = BasicConv(c_in, c1, kernel_size=1)
        self.b2 = nn.Sequential(BasicConv(c_in, c2r, kernel_size=1), BasicConv(c2r, c2, kernel_size=3, padding=1))
        self.b3 = nn.Sequential(BasicConv(c_in, c3r, kernel_size=1), BasicConv(c3r, c3, kernel_size=3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv(c_in, c4, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Reduction(nn.Module):
    """A strided conv branch (in the head), a dilated strided conv behind a 1x1 (a sliced boundary with
    output padding: 8 -> 4 -> 8 px), and a max-pool branch with no conv at all."""

    def __init__(self, c_in: int):
        super().__init__()
        self.b1 = BasicConv(c_in, 4, kernel_size=3, stride=2, padding=1)
        self.b2 = nn.Sequential(BasicConv(c_in, 3, kernel_size=1),
                                BasicConv(3, 5, kernel_size=(3, 2), stride=2, padding=(2, 0), dilation=(2, 1)))
        self.b3 = nn.MaxPool2d(3, 2, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class Shared(nn.Module):
    """A folded-BN 1x1 conv read both by the concatenation (a direct boundary) and, through a ReLU,
    by a 3x3 conv (the body): per slot its accumulator may hold one channel or a full gradient."""

    def __init__(self, c_in: int, c1: int, c2: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(c_in, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.conv = BasicConv(c1, c2, kernel_size=3, padding=1)

    def forward(self, x):
        f = self.reduce(x)
        return torch.cat([f, self.conv(F.relu(f))], 1)


class GoogLeNetLike(nn.Module):
    """stem -> inception -> max-pool -> inception -> reduction -> shared -> gap -> fc (16 px input)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.inc1 = InceptionBlock(6, 3, 3, 4, 2, 3, 2)       # 12 channels
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inc2 = InceptionBlock(12, 4, 4, 5, 2, 3, 2)      # 14 channels
        self.red = Reduction(14)                               # 4 + 5 + 14 = 23 channels
        self.shared = Shared(23, 4, 5)                         # 9 channels
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(9, 5)

    def forward(self, x):
        x = self.shared(self.red(self.inc2(self.pool(self.inc1(self.stem(x))))))
        return self.fc(torch.flatten(self.gap(x), 1))


LAYERS = ["fc", "shared", "red", "inc2", "inc1", "stem"]
SIDE = 16


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = GoogLeNetLike()
    randomize_batchnorm(m, 3)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _captum(slice_gm, maps, target, steps):
    def phi(x):
        return slice_gm(x).flatten(2).mean(2)

    return IntegratedGradients(phi).attribute(maps, target=target, n_steps=steps,
                                              method="gausslegendre").flatten(2).sum(2)


def _branches(widths: list[int]) -> list[list[int]]:
    out, start = [], 0
    for w in widths:
        out.append(list(range(start, start + w)))
        start += w
    return out


# (upper, lower, channel widths of the upper layer's concatenated branches)
SLICES = [("inc2", "inc1", [4, 5, 3, 2]), ("red", "inc2", [4, 5, 14]), ("inc1", "stem", [3, 4, 3, 2]),
          ("shared", "red", [4, 5])]


@pytest.mark.parametrize("vectorised", [False, True], ids=["per-slot", "vmap"])
@pytest.mark.parametrize("max_rows", [5, 64], ids=["rows5", "rows64"])
@pytest.mark.parametrize("upper, lower, widths", SLICES, ids=[f"{u}<-{lo}" for u, lo, _ in SLICES])
def test_mixed_branch_slots_equal_captum(upper, lower, widths, max_rows, vectorised):
    model = _model()
    traced = trace_layers(module=model, layers=LAYERS)
    slice_gm = layer_slice(traced=traced, lower=lower, upper=upper)
    x = torch.randn(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        maps = prefix(traced=traced, layer=lower)(x)
    att = SliceAttributor(slice_gm)
    att.vectorised = vectorised
    att.prepare(maps[:1])
    # The paths these rows are meant to exercise.
    assert any(b.module is not None for b in att.boundaries), "no sliced conv boundary"
    assert any(d is not None for d in att._direct), "no direct boundary"
    assert att._head_rows, "no head value entered at a conv's input"
    if upper == "red":
        assert any(d is not None and d not in att._head_rows for d in att._direct), "no conv-less direct branch"
    if upper == "shared":  # the direct boundary's tail input is also a body input
        assert any(d is not None and att._needs[d] for d in att._direct), "no direct boundary read by the body"
    with torch.no_grad():
        alive = (slice_gm(maps).flatten(2).amax(2).amax(0) > 0).tolist()
    br = [sorted(b, key=lambda ch: not alive[ch]) for b in _branches(widths)]  # live targets first
    last = br[-1]
    # Slots mix branches in every order, hold empty slots (-1), one copy holds nothing, a target
    # appears in two copies of one patch, and the last copy holds first-branch targets only (after
    # sorting, its slots follow other branches' targets in earlier copies).
    rows = [[br[0][0], br[1][1], br[-2][0], last[-1]],
            [last[0], -1, br[1][0], -1],
            [-1, -1, -1, -1],
            [br[-2][-1], br[0][-1], br[0][1], br[1][-1]],
            [br[1][1], last[-1], -1, br[0][0]],
            [br[0][1], -1, br[0][0], br[0][-1]]]
    copy_patch = [0, 0, 1, 2, 0, 1]
    steps = 9
    alphas, weights = quadrature("gausslegendre", steps)
    got = att.attribute(maps=maps, copy_patch=torch.tensor(copy_patch), slot_targets=torch.tensor(rows),
                        alphas=alphas, weights=weights, max_rows=max_rows)
    assert got.shape == (len(rows), 4, maps.shape[1])
    refs: dict[int, torch.Tensor] = {}
    live = set()
    for c, (p, targets) in enumerate(zip(copy_patch, rows)):
        for s, t in enumerate(targets):
            if t < 0:
                assert torch.count_nonzero(got[c, s]) == 0, f"empty slot {s} of copy {c} is not zero"
                continue
            if t not in refs:
                refs[t] = _captum(slice_gm, maps, t, steps)
            ref = refs[t][p]
            scale = refs[t].abs().max().item()
            if scale > 0:
                live.add(t)
            err = (got[c, s] - ref).abs().max().item()
            assert err <= 1e-4 * scale + 1e-12, f"{upper}<-{lower} copy {c} slot {s} target {t}: {err} vs {scale}"
    # Every branch has a live target, so no branch is checked only on exact zeros.
    for b in br:
        assert live & set(b), f"{upper}<-{lower}: branch {b} has no live target"


CONVS = [
    (nn.Conv2d(5, 4, 3, stride=2, padding=1), (2, 5, 8, 8)),                      # output padding 1
    (nn.Conv2d(5, 4, (3, 2), stride=(2, 1), padding=(2, 0), dilation=(2, 3)), (2, 5, 9, 7)),
    (nn.Conv2d(5, 4, 1), (2, 5, 6, 6)),
    (nn.Conv2d(5, 4, 5, stride=3, padding=0), (2, 5, 11, 10)),                    # padding below k-1: cropped
    (nn.Conv1d(5, 4, 5, stride=2, padding=2, dilation=2), (2, 5, 13)),
    (nn.Conv3d(3, 4, 3, stride=2, padding=1), (2, 3, 5, 6, 5)),                  # per-channel fallback
    (nn.Conv2d(5, 4, 3, padding=1, padding_mode="reflect"), (2, 5, 6, 6)),       # autograd fallback
    (nn.Conv2d(5, 4, 3, padding="same", dilation=2), (2, 5, 7, 7)),
    (nn.Linear(6, 4), (2, 6)),
]


@pytest.mark.parametrize("module, shape", CONVS, ids=[f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(CONVS)])
def test_restricted_input_grads_equal_autograd(module, shape):
    """Each pair's one-weight-row input gradient equals autograd of <g, module(u)[row, channel]>."""
    torch.manual_seed(5)
    u = torch.randn(shape)
    with torch.no_grad():
        out_shape = module(u).shape
    rows = torch.tensor([0, 1, 1, 0, 1])
    channels = torch.tensor([3, 0, 2, 3, 1])
    g = torch.randn(len(rows), *out_shape[2:])
    got = _restricted_input_grads(module, u, rows, channels, g)
    assert got.shape == (len(rows), *shape[1:])
    for n, (r, ch) in enumerate(zip(rows.tolist(), channels.tolist())):
        leaf = u[r:r + 1].clone().requires_grad_(True)
        (module(leaf)[0, ch] * g[n]).sum().backward()
        want = leaf.grad[0]
        assert (got[n] - want).abs().max().item() <= 1e-5 * want.abs().max().item() + 1e-7, f"pair {n}"
