"""Neuron groups scored against the concept world's masks."""

import copy

import numpy as np
import pytest

from neurflow_graph.analysis.ground_truth import ground_truth_annotations, score_groups
from neurflow_graph.circuit import (
    Circuit, ClassInfo, ImageRef, ModelInfo, Neuron, NeuronGroup, Patch, SemanticGroup,
)
from neurflow_graph.datasets.concept_world import export_world, load_world_ground_truth
from neurflow_graph.identity import neuron_group_uid, run_uid


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    export_world(out_dir=out, seed=5, n_per_class=6, split="test")
    return load_world_ground_truth(out)


def _circuit(truth, concept_a: str, concept_b: str) -> Circuit:
    """Two leaf neurons: one whose patches are boxes around `concept_a`, one around `concept_b`."""
    images, patches, groups = [], [], {concept_a: [], concept_b: []}
    for img in truth.images:
        masks = truth.masks(img.sha256)
        for concept in (concept_a, concept_b):
            if concept in masks and masks[concept].sum() >= 30:
                if not images or images[-1].sha256 != img.sha256:
                    images.append(ImageRef(id=len(images), path=img.path, sha256=img.sha256))
                patches.append(Patch(id=len(patches), image=images[-1].id, box=_bbox(masks[concept])))
                groups[concept].append(patches[-1].id)
    assert len(groups[concept_a]) >= 3 and len(groups[concept_b]) >= 3
    neurons = [
        Neuron("fc", 0, [SemanticGroup(0, groups[concept_a] + groups[concept_b], 1.0)]),
        Neuron("conv", 3, [SemanticGroup(0, groups[concept_a], 1.0)]),
        Neuron("conv", 7, [SemanticGroup(0, groups[concept_b], 1.0)]),
    ]
    return Circuit(
        model=ModelInfo("m", ["fc", "conv"]), class_=ClassInfo(0, "bee"), params={},
        neurons=neurons, edges=[],
        neuron_groups=[NeuronGroup("fc", 0, [[0, 0]]), NeuronGroup("conv", 0, [[3, 0]]),
                       NeuronGroup("conv", 1, [[7, 0]])],
        group_edges=[], patches=patches, images=images)


def test_groups_are_named_after_the_concept_their_patches_show(world):
    circuit = _circuit(world, "object:flower", "object:pebble")
    scores = {(s.layer, s.group): s for s in score_groups(circuit=circuit, truth=world)}
    assert scores[("conv", 0)].concept == "object:flower"
    assert scores[("conv", 1)].concept == "object:pebble"
    # every patch of the flower group is a box around a flower, so the flower is present in all
    assert scores[("conv", 0)].purity == pytest.approx(1.0)
    assert scores[("conv", 0)].baseline < 1.0


def test_ground_truth_becomes_annotations_and_leaves_the_circuit_alone(world):
    circuit = _circuit(world, "object:flower", "object:pebble")
    before = (copy.deepcopy(circuit), run_uid(circuit))
    notes = ground_truth_annotations(circuit=circuit, truth=world)
    assert (circuit, run_uid(circuit)) == before
    assert {a.source for a in notes} == {"ground_truth"} and {a.target_label for a in notes} == {"NeuronGroup"}
    got = {(a.target, a.key): a.value for a in notes}
    flower = neuron_group_uid(run_uid(circuit), "conv", 0)
    assert got[(flower, "concept")] == "object:flower" and got[(flower, "purity")] == pytest.approx(1.0)
    assert len(got) == 2 * len(circuit.neuron_groups)
