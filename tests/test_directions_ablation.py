"""Completeness 2: project_out against an inserted projection layer, and the fast suffix runner
against whole-model forwards under the intervention context managers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from directions_support import one_thread, Planted
from torch import nn

from neurflow_graph.directions import ablation as abl
from neurflow_graph.directions.compute import _runner, _trace
from neurflow_graph.directions.pca import ActivationPCA
from neurflow_graph.directions.sites import HookPoint
from neurflow_graph.errors import InputError
from neurflow_graph.interventions.projection import project_out

_one_thread = pytest.fixture(autouse=True)(one_thread)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_project_out_equals_an_inserted_projection_layer() -> None:
    torch.manual_seed(0)
    model = Planted().eval()
    x = torch.randn(4, 3, 16, 16)
    basis = np.random.default_rng(0).normal(size=(4, 12))          # not orthonormal: project_out orthonormalises
    q, _ = np.linalg.qr(basis.T)
    proj = nn.Conv2d(12, 12, 1, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.from_numpy(np.eye(12) - q @ q.T).float().view(12, 12, 1, 1))
    inserted = copy.deepcopy(model)
    inserted.planted = nn.Sequential(inserted.planted, proj)
    with torch.no_grad():
        want = inserted(x)
        with project_out(model, "planted", basis):
            got = model(x)
        with project_out(model, "relu", basis, where="input"):
            got_input = model(x)
        plain = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_input, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, want, atol=1e-3)               # the projection does something
    assert _hooks(model) == 0


def test_no_hook_survives_an_error() -> None:
    model = Planted().eval()
    with pytest.raises(RuntimeError):
        with project_out(model, "planted", np.eye(12)[:2]):
            raise RuntimeError("boom")
    assert _hooks(model) == 0
    with pytest.raises(InputError):
        with project_out(model, "planted", np.ones((2, 12))):      # dependent rows
            pass
    with pytest.raises(InputError):
        with project_out(model, "planted", np.eye(5)[:2]):          # wrong width: refused at the forward
            model(torch.randn(1, 3, 8, 8))
    assert _hooks(model) == 0


@pytest.mark.parametrize("point", [HookPoint("block.1"), HookPoint("planted")])
def test_suffix_runner_equals_hooked_forwards(point: HookPoint) -> None:
    torch.manual_seed(1)
    model = Planted(num_classes=5).eval()
    with torch.no_grad():                                          # a BN with non-trivial statistics
        model.block[1].running_mean.uniform_(-0.5, 0.5)
        model.block[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(24, 3, 16, 16)
    rows = []
    h = dict(model.named_modules())[point.module].register_forward_hook(
        lambda _m, _i, o: rows.append(o.detach().double().permute(0, 2, 3, 1).reshape(-1, o.shape[1])))
    with torch.no_grad():
        model(x)
    h.remove()
    est = ActivationPCA().fit(torch.cat(rows).numpy())

    class R:
        hook_module, hook_where = point.module, point.where

    fast = _runner(model, _trace(model, [point.module], "fc"), "fc", R, x, 10)
    slow = abl.HookedRunner(model=model, x=x, point=point, batch_size=10)
    assert isinstance(fast, abl.SuffixRunner)
    for kind in abl.BASES:
        for order in abl.ORDERS:
            a = abl.ablation_for(kind=kind, k=3, order=order, components=est.components_,
                                 feature_variance=est.feature_variance_)
            torch.testing.assert_close(fast.logits(a), slow.logits(a), rtol=1e-4, atol=1e-5)
    curves_fast = abl.ablation_curves(runner=fast, components=est.components_, feature_variance=est.feature_variance_,
                                      labels=np.arange(24) % 5)
    curves_slow = abl.ablation_curves(runner=slow, components=est.components_, feature_variance=est.feature_variance_,
                                      labels=np.arange(24) % 5)
    assert curves_fast.agreement == curves_slow.agreement and curves_fast.accuracy == curves_slow.accuracy
    d = est.n_features_in_
    everything_pca = abl.ablation_for(kind="pca", k=d, order="descending", components=est.components_,
                                      feature_variance=est.feature_variance_)
    everything_neurons = abl.ablation_for(kind="neurons", k=d, order="ascending", components=est.components_,
                                          feature_variance=est.feature_variance_)
    torch.testing.assert_close(slow.logits(everything_pca), slow.logits(everything_neurons), rtol=1e-4, atol=1e-5)
    assert all(v[0] == 1.0 for v in curves_slow.agreement.values())          # k = 0 is the unablated model
    assert _hooks(model) == 0


def test_ablation_grid() -> None:
    assert abl.ablation_ks(5) == [0, 1, 2, 3, 4, 5]
    ks = abl.ablation_ks(256, 9)
    assert ks[0] == 0 and ks[-1] == 256 and {1, 2, 4} <= set(ks) and len(ks) <= 9 + 3
