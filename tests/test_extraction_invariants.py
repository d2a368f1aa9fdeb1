"""Invariants of a real extraction (demo CNN, random weights, synthetic images), checked with
independent computations: concepts from our own crops, group edges from the paper's formula, the
JSON schema, and a round trip through circuit.json."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
import torch

from neurflow_graph.circuit import load_circuit
from neurflow_graph.extraction import ExtractParams, extract_circuit
from test_extraction_support import demo_model, write_images

K = 20
N_IMAGES = 3
PATCHES_PER_64PX_IMAGE = 1 + 3 * 3 + 7 * 7  # crops of 64, 32, 16 px every 32, 16, 8 px


@pytest.fixture(scope="module")
def extraction(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariants")
    images = write_images(root / "images", N_IMAGES, seed=1)
    model = demo_model(seed=3)
    circuit = extract_circuit(model=model, images=images, class_index=2,
                              params=ExtractParams(k=K, tau=4, max_semantic_groups=4, max_neuron_groups=5, ig_steps=16),
                              run_dir=root / "run", progress=False)
    return model, images, circuit, root / "run"


def test_layers_and_edges_follow_algorithm_3(extraction):
    _, _, circuit, _ = extraction
    layers = circuit.model.layers
    assert [n.index for n in circuit.layer_neurons(layers[0])] == [2]
    for upper, lower in zip(layers[:-1], layers[1:]):
        parents = {n.index for n in circuit.layer_neurons(upper)}
        children = {n.index for n in circuit.layer_neurons(lower)}
        edges = [e for e in circuit.edges if e.parent_layer == upper]
        assert edges and all(e.child_layer == lower for e in edges)
        assert {e.parent_index for e in edges} <= parents
        assert {e.child_index for e in edges} == children  # the next targets are the union of core neurons
        for a in parents:
            cores = {e.child_index for e in edges if e.parent_index == a}
            assert len(cores) <= 4
            groups = {g.id for g in circuit.neuron(upper, a).semantic_groups}
            for j in groups:  # every core neuron is linked to every semantic group of its parent
                assert {e.child_index for e in edges if e.parent_index == a and e.parent_group == j} == cores
    assert not [e for e in circuit.edges if e.parent_layer == layers[-1]]


def test_edge_weights_are_normalised_scores(extraction):
    _, _, circuit, _ = extraction
    by_group: dict[tuple, list] = {}
    for e in circuit.edges:
        by_group.setdefault((e.parent_layer, e.parent_index, e.parent_group), []).append(e)
    for key, edges in by_group.items():
        total = sum(abs(e.score) for e in edges)
        assert total > 0, key
        assert sum(abs(e.weight) for e in edges) == pytest.approx(1.0, abs=1e-9)
        for e in edges:
            assert e.weight == pytest.approx(e.score / total, rel=1e-9)


def test_concepts_are_top_k_of_our_own_crops(extraction):
    model, images, circuit, _ = extraction
    n_patches = N_IMAGES * PATCHES_PER_64PX_IMAGE
    for n in circuit.neurons:
        sizes = [len(g.patches) for g in n.semantic_groups]
        assert sum(sizes) == min(K, n_patches)
        ids = [p for g in n.semantic_groups for p in g.patches]
        assert len(set(ids)) == len(ids)
        assert [g.id for g in n.semantic_groups] == list(range(len(sizes)))
    # The root's concept: the K patches with the highest class-2 logit, computed from scratch here.
    boxes = []
    for img in images:
        for side in (64, 32, 16):
            for y in range(0, 64 - side + 1, side // 2):
                for x in range(0, 64 - side + 1, side // 2):
                    boxes.append((img, (x, y, x + side, y + side)))
    assert len(boxes) == n_patches
    from neurflow_graph.datasets.images import load_rgb

    batch = torch.stack([model.preprocess(load_rgb(img.path).crop(box)) for img, box in boxes])
    with torch.no_grad():
        logits = model.module(batch)[:, 2].double().numpy()
    top = set(np.argsort(-logits, kind="stable")[:K].tolist())
    by_id = {p.id: p for p in circuit.patches}
    root = circuit.neuron(circuit.model.layers[0], 2)
    got = {p for g in root.semantic_groups for p in g.patches}
    found = set()
    for pid in got:
        patch = by_id[pid]
        found.add(next(i for i, (img, box) in enumerate(boxes)
                       if img.sha256 == circuit.images[patch.image].sha256 and tuple(patch.box) == box))
    assert found == top
    for g in root.semantic_groups:
        ids = [next(i for i, (img, box) in enumerate(boxes)
                    if img.sha256 == circuit.images[by_id[p].image].sha256 and tuple(by_id[p].box) == box)
               for p in g.patches]
        assert g.mean_activation == pytest.approx(float(np.mean(logits[ids])), rel=1e-4, abs=1e-5)


def test_neuron_groups_partition_semantic_groups(extraction):
    _, _, circuit, _ = extraction
    for layer in circuit.model.layers:
        sgs = sorted((n.index, g.id) for n in circuit.layer_neurons(layer) for g in n.semantic_groups)
        members = sorted(tuple(m) for g in circuit.neuron_groups if g.layer == layer for m in g.members)
        assert members == sgs
        ids = [g.id for g in circuit.neuron_groups if g.layer == layer]
        assert ids == list(range(len(ids)))
    assert len([g for g in circuit.neuron_groups if g.layer == circuit.model.layers[0]]) == 1


def test_group_edges_follow_section_3_5(extraction):
    _, _, circuit, _ = extraction
    layers = circuit.model.layers
    w = {(e.parent_layer, e.parent_index, e.parent_group, e.child_index): e.weight for e in circuit.edges}
    expected = {}
    for upper, lower in zip(layers[:-1], layers[1:]):
        for gp in (g for g in circuit.neuron_groups if g.layer == upper):
            for gc in (g for g in circuit.neuron_groups if g.layer == lower):
                terms = [w[(upper, p, j, q)] for p, j in gp.members for q in {m[0] for m in gc.members}
                         if (upper, p, j, q) in w]
                if terms:
                    expected[(upper, gp.id, lower, gc.id)] = sum(terms)
    got = {(e.parent_layer, e.parent_group, e.child_layer, e.child_group): e.weight for e in circuit.group_edges}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12)


def test_circuit_json_validates_and_round_trips(extraction):
    _, _, circuit, run_dir = extraction
    schema = json.loads(resources.files("neurflow_graph").joinpath("schemas/circuit.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.loads((run_dir / "circuit.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert load_circuit(run_dir) == circuit
    assert set(data["params"]) >= {f for f in ExtractParams.__dataclass_fields__}
    assert {"scan", "ig", "total"} <= set(data["timing"])
    assert {"torch", "neurflow_graph", "device"} <= set(data["software"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "layer-00.json", "layer-01.json", "layer-02.json", "layer-03.json", "manifest.json", "scan.npz"]
