"""A hand-wired CNN whose circuit is known: the extraction recovers its neurons and signs.

    low  = ReLU(1x1 conv of RGB):  low0 = R, low1 = G, low2 = B, low3 = R+G+B, low4 = 0.5, low5 = 0
    mid  = ReLU(1x1 conv of low):  mid0 = 2 low0 - low1 + 0.1, mid1 = 1.5 low2 + 0.5 low0,
                                   mid2 = low3, mid3 = low1, mid4 = 0
    logit0 = 3 mean(mid0) - 2 mean(mid1)

With tau = 2 the circuit must be: logit0 <- {mid0 (+), mid1 (-)}; mid0 <- {low0 (+), low1 (-)};
mid1 <- {low2 (+), low0 (+)}. The logit's scores are also checked against values computed here
from the patch pixels (T(root, mid_c, V_j) = w_c * sum over the group's patches of mean(mid_c)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neurflow_graph.extraction import ExtractParams, extract_circuit
from neurflow_graph.models.registry import LoadedModel, ModelSpec
from test_extraction_support import write_images


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.low = nn.Conv2d(3, 6, 1)
        self.low_act = nn.ReLU()
        self.mid = nn.Conv2d(6, 5, 1)
        self.mid_act = nn.ReLU()
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            lw = self.low.weight[:, :, 0, 0]
            lw[0, 0] = lw[1, 1] = lw[2, 2] = 1.0
            lw[3] = 1.0
            self.low.bias[4] = 0.5
            mw = self.mid.weight[:, :, 0, 0]
            mw[0, 0], mw[0, 1] = 2.0, -1.0
            self.mid.bias[0] = 0.1
            mw[1, 2], mw[1, 0] = 1.5, 0.5
            mw[2, 3] = 1.0
            mw[3, 1] = 1.0
            self.fc.weight[0, 0], self.fc.weight[0, 1] = 3.0, -2.0
            self.fc.weight[1, 2] = self.fc.weight[2, 3] = 1.0

    def forward(self, x):
        return self.fc(self.mid_act(self.mid(self.low_act(self.low(x)))).mean((2, 3)))


LAYERS = ["fc", "mid_act", "low_act"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    images = write_images(tmp_path_factory.mktemp("planted"), 6, size=(32, 32), seed=5)
    module = Planted().eval()
    spec = ModelSpec(name="planted", layers=LAYERS, input_size=16, mean=None, std=None)
    model = LoadedModel(module=module, spec=spec, device=torch.device("cpu"), weights_sha256=None)
    circuit = extract_circuit(model=model, images=images, class_index=0,
                              params=ExtractParams(k=10, tau=2, max_semantic_groups=3, ig_steps=20), progress=False)
    return module, images, circuit


def _edges(circuit, parent_layer, parent_index):
    out: dict[int, list[float]] = {}
    for e in circuit.edges:
        if e.parent_layer == parent_layer and e.parent_index == parent_index:
            out.setdefault(e.child_index, []).append(e.weight)
    return out


def test_planted_neurons_and_signs_are_recovered(planted):
    _, _, circuit = planted
    assert [n.index for n in circuit.layer_neurons("fc")] == [0]
    assert [n.index for n in circuit.layer_neurons("mid_act")] == [0, 1]
    assert [n.index for n in circuit.layer_neurons("low_act")] == [0, 1, 2]

    root = _edges(circuit, "fc", 0)
    assert set(root) == {0, 1}
    assert all(w > 0 for w in root[0]) and all(w < 0 for w in root[1])

    mid0 = _edges(circuit, "mid_act", 0)
    assert set(mid0) == {0, 1}
    assert all(w > 0 for w in mid0[0]) and all(w < 0 for w in mid0[1])

    mid1 = _edges(circuit, "mid_act", 1)
    assert set(mid1) == {0, 2}
    assert all(w > 0 for ws in mid1.values() for w in ws)


def test_planted_root_scores_match_patch_pixels(planted):
    module, images, circuit = planted
    boxes = {p.id: (p.image, p.box) for p in circuit.patches}

    def mid_means(pid: int) -> np.ndarray:
        image, box = boxes[pid]
        with Image.open(images[image].path) as im:
            crop = im.convert("RGB").crop(tuple(box)).resize((16, 16), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            m = module.mid_act(module.mid(module.low_act(module.low(x))))
        return m.mean((2, 3))[0].double().numpy()

    root = circuit.neuron("fc", 0)
    for group in root.semantic_groups:
        expected = {0: 3.0 * sum(mid_means(p)[0] for p in group.patches),
                    1: -2.0 * sum(mid_means(p)[1] for p in group.patches)}
        got = {e.child_index: e.score for e in circuit.edges
               if e.parent_layer == "fc" and e.parent_group == group.id}
        assert set(got) == {0, 1}
        for c in (0, 1):
            assert got[c] == pytest.approx(expected[c], rel=1e-4)
        norm = abs(got[0]) + abs(got[1])
        weights = {e.child_index: e.weight for e in circuit.edges
                   if e.parent_layer == "fc" and e.parent_group == group.id}
        assert weights[0] == pytest.approx(expected[0] / norm, rel=1e-4)
