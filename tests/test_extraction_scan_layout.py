"""The activation scan's fast layout (conv+BatchNorm folded, channels_last) against eager PyTorch.

Oracles: the user's own module run eagerly with plain forward hooks (what the scan measured before
the fast layout existed); whole circuits extracted with ``scan_layout="eager"``; a snapshot of the
user's module (tensor values and strides, parameter objects, module types, hooks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from neurflow_graph.errors import InputError
from neurflow_graph.extraction import ExtractParams, extract_circuit
from neurflow_graph.extraction.activations import scan_activations
from neurflow_graph.extraction.circuit_builder import frozen
from neurflow_graph.extraction.scan_layout import scan_form
from neurflow_graph.identity import run_uid
from test_extraction_support import demo_model, hook_count, layer_outputs, randomize_batchnorm, write_images


def _eager_phi(module, layers, x):
    """Oracle: spatial means of each layer's output, eager module, plain hooks."""
    out = layer_outputs(module, list(layers), x)
    return {n: (o.flatten(2).mean(2) if o.dim() > 2 else o).numpy() for n, o in out.items()}, out


def _scan(module, layers, x, layout, map_layers=(), batch_size=5):
    with frozen(module):
        form = scan_form(module=module, layers=layers, layout=layout, sample=x[:1])
        phi, maps = scan_activations(module=form.module, prepare=form.prepare, layers=layers, n_patches=len(x),
                                     batches=lambda ids: x[ids], device=torch.device("cpu"), batch_size=batch_size,
                                     map_layers=map_layers, map_budget=1e12)
    return form, phi, maps


def _snapshot(module):
    return {"state": {k: (v.clone(), v.stride()) for k, v in module.state_dict().items()},
            "params": [(n, id(p), p.requires_grad) for n, p in module.named_parameters()],
            "types": [(n, type(m)) for n, m in module.named_modules()], "training": module.training}


def _assert_untouched(module, snap):
    now = _snapshot(module)
    assert now["types"] == snap["types"] and now["params"] == snap["params"] and now["training"] == snap["training"]
    for k, (v, stride) in snap["state"].items():
        assert torch.equal(now["state"][k][0], v) and now["state"][k][1] == stride, k
    assert hook_count(module) == 0


def _close(got, want, rel=1e-5):
    for name, ref in want.items():
        scale = float(np.abs(ref).max())
        assert float(np.abs(got[name] - ref).max()) <= rel * scale, (name, float(np.abs(got[name] - ref).max()), scale)


def _resnet(name, size):
    from neurflow_graph.models.registry import load_model

    lm = load_model(name=name, input_size=size, device="cpu")
    randomize_batchnorm(lm.module, 3)
    return lm


def test_fast_scan_of_the_demo_model_matches_eager_per_layer():
    lm = demo_model(seed=2)
    layers = list(lm.spec.layers)
    x = torch.randn(12, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    snap = _snapshot(lm.module)
    form, phi, maps = _scan(lm.module, layers, x, "fast", map_layers=layers[1:])
    assert form.layout == "folded+channels_last" and len(form.folded) == 4  # every block's conv+BN, conv1's too
    assert all(type(form.module.get_submodule(bn)) is nn.Identity for _, bn in form.folded)
    want, outs = _eager_phi(lm.module, layers, x)
    _close(phi, want)
    for name in layers[1:]:  # kept maps: the eager tensor, in the normal contiguous layout
        assert maps[name].is_contiguous() and maps[name].shape == outs[name].shape
        assert (maps[name] - outs[name]).abs().max() <= 1e-5 * outs[name].abs().max()
    _assert_untouched(lm.module, snap)
    assert hook_count(form.module) == 0


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("resnet50", 64)])
def test_fast_scan_of_a_torchvision_resnet_matches_eager_per_layer(name, size):
    lm = _resnet(name, size)
    layers = list(lm.spec.layers)[:5]
    x = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(1))
    snap = _snapshot(lm.module)
    form, phi, _ = _scan(lm.module, layers, x, "fast")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in lm.module.modules())
    assert form.layout == "folded+channels_last" and len(form.folded) == n_bn  # resnet18: 20, resnet50: 53
    want, _ = _eager_phi(lm.module, layers, x)
    _close(phi, want)
    _, eager_phi, _ = _scan(lm.module, layers, x, "eager", batch_size=len(x))
    for n in layers:  # eager stays bit-exact with eager PyTorch (at the oracle's batch size)
        assert np.array_equal(eager_phi[n], want[n])
    _assert_untouched(lm.module, snap)


def test_a_pair_at_an_analysed_layer_is_not_folded():
    lm = demo_model(seed=3)
    # conv4.0 (a conv: its pre-BN output), conv3.1 (a BN: the post-BN output) and features "0" below
    layers = ["fc", "conv4.0", "conv3.1", "conv2"]
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    form, phi, _ = _scan(lm.module, layers, x, "fast")
    assert set(form.folded) == {("conv1.0", "conv1.1"), ("conv2.0", "conv2.1")}
    assert isinstance(form.module.get_submodule("conv4.1"), nn.BatchNorm2d)
    _close(phi, _eager_phi(lm.module, layers, x)[0])

    class Wrapped(nn.Module):  # an analysed container whose output is the conv's
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 3))
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.stem(x))).mean((2, 3)))

    net = Wrapped()
    randomize_batchnorm(net, 1)
    form, phi, _ = _scan(net, ["head", "stem"], x, "fast")
    assert form.folded == () and form.layout == "channels_last"
    _close(phi, _eager_phi(net.eval(), ["head", "stem"], x)[0])
    form, _, _ = _scan(net, ["head"], x, "fast")
    assert form.folded == (("stem.0", "bn"),)


def test_train_mode_bn_free_and_layout_hostile_models_fall_back():
    lm = demo_model(seed=4)
    lm.module.train()
    x = torch.randn(2, 3, 64, 64)
    form = scan_form(module=lm.module, layers=list(lm.spec.layers), layout="fast", sample=x[:1])
    assert form.layout == "eager" and form.module is lm.module and "train mode" in form.note

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    form, phi, _ = _scan(plain, ["4", "2"], x, "fast")
    assert form.layout == "channels_last" and form.folded == ()
    _close(phi, _eager_phi(plain, ["4", "2"], x)[0])

    class Viewing(nn.Module):  # .view of a channels_last map fails: folding alone is used
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 62 * 62, 3)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            return self.fc(y.view(y.shape[0], -1))

    net = Viewing()
    randomize_batchnorm(net, 2)
    form, phi, _ = _scan(net.eval(), ["fc"], x, "fast")
    assert form.layout == "folded" and "channels_last" in form.note
    _close(phi, _eager_phi(net, ["fc"], x)[0])
    with pytest.raises(InputError, match="fast, eager"):
        scan_form(module=net, layers=["fc"], layout="quick", sample=x[:1])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("scan-layout-images"), 2, seed=11)


def _circuits_equal(a, b):
    assert [(n.layer, n.index) for n in a.neurons] == [(n.layer, n.index) for n in b.neurons]
    for x, y in zip(a.neurons, b.neurons):
        assert [sorted(g.patches) for g in x.semantic_groups] == [sorted(g.patches) for g in y.semantic_groups]
    def ends(e):
        return e.parent_layer, e.parent_index, e.parent_group, e.child_layer, e.child_index

    assert [ends(e) for e in a.edges] == [ends(e) for e in b.edges] and a.edges
    assert max(abs(e.weight - f.weight) for e, f in zip(a.edges, b.edges)) <= 1e-4
    assert max(abs(e.weight - f.weight) for e, f in zip(a.group_edges, b.group_edges)) <= 1e-4
    assert [(g.layer, g.id, g.members) for g in a.neuron_groups] == [(g.layer, g.id, g.members)
                                                                      for g in b.neuron_groups]
    assert run_uid(a) == run_uid(b)  # the layout is not part of the run's identity


def test_whole_circuit_fast_equals_eager_and_leaves_the_model_untouched(images):
    params = ExtractParams(k=12, tau=3, ig_steps=6, max_batch=32)
    lm = demo_model(seed=5)
    snap = _snapshot(lm.module)
    fast = extract_circuit(model=lm, images=images, class_index=2, params=params, progress=False, scan_layout="fast")
    _assert_untouched(lm.module, snap)
    eager = extract_circuit(model=lm, images=images, class_index=2, params=params, progress=False,
                            scan_layout="eager")
    assert fast.timing["scan_folded_pairs"] == 4 and fast.timing["scan_channels_last"] == 1
    assert eager.timing["scan_folded_pairs"] == 0 and eager.timing["scan_channels_last"] == 0
    assert fast.params == eager.params and "scan_layout" not in json.dumps(fast.params)
    _circuits_equal(fast, eager)
    with pytest.raises(InputError, match="scan_layout must be one of fast, eager"):
        extract_circuit(model=lm, images=images, class_index=2, params=params, progress=False, scan_layout="nchw")


def test_whole_resnet18_circuit_fast_equals_eager(images):
    from neurflow_graph.models.registry import load_model

    lm = load_model(name="resnet18", input_size=48, device="cpu", preprocess="squash")
    randomize_batchnorm(lm.module, 5)
    lm.spec.layers = list(lm.spec.layers)[:4]
    params = ExtractParams(k=8, tau=2, ig_steps=4, max_batch=32)
    fast = extract_circuit(model=lm, images=images, class_index=7, params=params, progress=False, scan_layout="fast")
    eager = extract_circuit(model=lm, images=images, class_index=7, params=params, progress=False,
                            scan_layout="eager")
    assert fast.timing["scan_folded_pairs"] == 20
    _circuits_equal(fast, eager)
    assert hook_count(lm.module) == 0


def test_cli_scan_layout_bad_value_is_one_line_exit_2(tmp_path):
    from neurflow_graph.cli import cli

    r = CliRunner().invoke(cli, ["extract", "--model", "demo", "--images", str(tmp_path), "--class", "0",
                                 "--out", str(tmp_path / "run"), "--scan-layout", "nchw"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1 and "--scan-layout" in lines[0] and "fast" in lines[0] and "eager" in lines[0]


def test_fast_layout_resume_gives_the_same_discrete_circuit(images, tmp_path, monkeypatch):
    """A resumed run recomputes the maps the fast scan kept from the eager graph: the same discrete
    circuit, weights equal up to float rounding (bit-exact resume: the eager layout, test_extraction_run)."""
    from neurflow_graph.extraction import circuit_builder

    params = ExtractParams(k=12, tau=3, ig_steps=6, max_batch=32)
    whole = extract_circuit(model=demo_model(seed=6), images=images, class_index=1, params=params, progress=False,
                            scan_layout="fast")
    real = circuit_builder._process_layer

    def crash(**kw):
        if kw["index"] == 2:
            raise KeyboardInterrupt
        return real(**kw)

    monkeypatch.setattr(circuit_builder, "_process_layer", crash)
    with pytest.raises(KeyboardInterrupt):
        extract_circuit(model=demo_model(seed=6), images=images, class_index=1, params=params, run_dir=tmp_path,
                        progress=False, scan_layout="fast")
    monkeypatch.setattr(circuit_builder, "_process_layer", real)
    resumed = extract_circuit(model=demo_model(seed=6), images=images, class_index=1, params=params,
                              run_dir=tmp_path, resume=True, progress=False, scan_layout="fast")
    # the scan came from the checkpoint, which records the form it ran in
    assert whole.timing["scan_folded_pairs"] > 0 and whole.timing["scan_channels_last"] == 1
    assert {k: resumed.timing[k] for k in ("scan_folded_pairs", "scan_channels_last")} == \
        {k: whole.timing[k] for k in ("scan_folded_pairs", "scan_channels_last")}
    _circuits_equal(whole, resumed)


def test_hooks_on_the_scan_copy_are_removed_on_error(images, monkeypatch):
    from neurflow_graph.extraction import circuit_builder
    from neurflow_graph.extraction.patches import PatchSource

    lm = demo_model(seed=7)
    forms, seen = [], []
    real_form, real_batch = circuit_builder.scan_form, PatchSource.batch
    monkeypatch.setattr(circuit_builder, "scan_form", lambda **kw: forms.append(real_form(**kw)) or forms[-1])

    def failing(self, ids):
        seen.append(hook_count(forms[-1].module) if forms else -1)
        if len(seen) == 3:  # the sample, the first batch, then the second batch
            raise RuntimeError("disk vanished")
        return real_batch(self, ids)

    monkeypatch.setattr(PatchSource, "batch", failing)
    with pytest.raises(RuntimeError, match="disk vanished"):
        extract_circuit(model=lm, images=images, class_index=0,
                        params=ExtractParams(k=8, tau=2, ig_steps=4, max_batch=16), progress=False,
                        scan_layout="fast")
    assert forms[-1].module is not lm.module and seen[-1] > 0  # the copy's hooks were live
    assert hook_count(forms[-1].module) == 0 and hook_count(lm.module) == 0


def test_models_the_fast_form_cannot_copy_or_fold_scan_correctly():
    import threading

    from torch.nn.utils.parametrizations import weight_norm

    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    class Locked(nn.Module):  # deepcopy fails on the lock: the eager module is scanned
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    net = Locked()
    randomize_batchnorm(net, 4)
    form, phi, _ = _scan(net.eval(), ["fc", "conv"], x, "fast")
    assert form.layout == "eager" and form.module is net and "TypeError" in form.note
    _close(phi, _eager_phi(net, ["fc", "conv"], x)[0])

    wn = nn.Sequential(weight_norm(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                       nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    randomize_batchnorm(wn, 5)
    snap = _snapshot(wn.eval())
    form, phi, _ = _scan(wn, ["6"], x, "fast")  # the parametrized pair stays, the plain one is folded
    assert form.folded == (("3", "4"),) and form.layout == "folded+channels_last", form.note
    _close(phi, _eager_phi(wn, ["6"], x)[0])
    _assert_untouched(wn, snap)
