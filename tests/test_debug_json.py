"""debug.json is strict JSON: a figure with nothing to average is null, never a bare NaN.

A real ``debug_class`` run on the planted model (tests/test_extraction_planted.py), with false positives
whose folder (``other/``) names no class of the model: no true class, so ``by_concept``'s
``delta_true_logit`` has nothing to average (it was written as ``NaN``, which JSON does not have).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image


def _refuse(constant: str):
    raise ValueError(f"debug.json holds the non-JSON constant {constant}")


@pytest.fixture(scope="module")
def no_true_class(tmp_path_factory):
    from test_extraction_planted import LAYERS, Planted
    from test_extraction_support import write_images

    from neurflow_graph.datasets.images import ImageRecord
    from neurflow_graph.debugging.debug import debug_class
    from neurflow_graph.extraction import ExtractParams, extract_circuit
    from neurflow_graph.models.registry import LoadedModel, ModelSpec

    spec = ModelSpec(name="planted", layers=LAYERS, input_size=16, mean=None, std=None)
    model = LoadedModel(module=Planted().eval(), spec=spec, device=torch.device("cpu"), weights_sha256=None)
    circuit = extract_circuit(model=model, images=write_images(tmp_path_factory.mktemp("planted_dbg"), 6,
                                                               size=(32, 32), seed=5),
                              class_index=0, params=ExtractParams(k=10, tau=2, max_semantic_groups=3, ig_steps=20),
                              progress=False)
    # red images: the planted class-0 logit is 3 * relu(2r - g + 0.1) - 2 * ..., so they are predicted as
    # class_0, and their folder "other" is no class of the model (names class_0..class_2)
    folder = tmp_path_factory.mktemp("other") / "other"
    folder.mkdir()
    records = []
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = np.zeros((24, 24, 3), dtype=np.uint8)
        arr[..., 0] = 200 + rng.integers(0, 50, size=(24, 24))
        path = folder / f"red_{i}.png"
        Image.fromarray(arr).save(path)
        records.append(ImageRecord(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label="other"))
    layer = LAYERS[1]
    concepts = {(g.layer, g.id): "colour:red" for g in circuit.neuron_groups if g.layer == layer}
    result = debug_class(model=model, circuit=circuit, run_uid="planted-run", images=records, layer=layer,
                         n_random=5, seed=0, concepts=concepts, heatmap_images=0)
    return result


def test_debug_json_without_a_true_class_is_strict_json_with_null(no_true_class):
    result = no_true_class
    assert result.false_positives and result.by_concept  # the case: false positives, concepts masked together
    assert all(math.isnan(m.delta_true_logit) for m in result.by_concept)  # nothing to average in memory...
    text = result.json_text()
    doc = json.loads(text, parse_constant=_refuse)  # ...and no NaN/Infinity in the file
    assert [m["delta_true_logit"] for m in doc["by_concept"]] == [None] * len(result.by_concept)
    # the figures that do exist are kept as they are
    assert [m["delta_logit"] for m in doc["by_concept"]] == [m.delta_logit for m in result.by_concept]
    assert all(math.isfinite(m["delta_logit"]) for m in doc["by_concept"])
    # the data the writers get is JSON-safe by itself too (what to_json returns)
    json.loads(json.dumps(result.to_json(), allow_nan=False), parse_constant=_refuse)
