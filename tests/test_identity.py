"""Run identity (issue 8 item 1): what defines a run and what it found, never timings, dates,
software builds, image paths or annotations. The oracle is the rule itself, applied by mutating
one field at a time of a real (synthetic) circuit."""

from __future__ import annotations

import copy

import pytest

from neurflow_graph.identity import (
    annotation_uid, feeds_uid, model_uid, neuron_group_uid, neuron_uid, run_uid, semantic_group_uid,
)
from neurflow_graph.store.ingest import ingest, ingest_circuit
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit


def small(**kw):
    return synthetic_circuit(class_index=1, class_name="cat", widths=(10, 24, 24, 16), **kw)


def _same(c):
    c = copy.deepcopy(c)
    c.timing = {"total": 123.4, "ig": 99.0}
    c.created_at = "2031-05-05T05:05:05+00:00"
    c.software = {"neurflow_graph": "9.9.9", "torch": "3.0", "device": "cuda"}
    for im in c.images:
        im.path = "/elsewhere/" + im.path
    return c


def _mutations():
    def weights(c): c.model.weights_sha256 = "ab" * 32
    def name(c): c.model.name = "othernet"
    def layer(c):  # the same circuit read at a differently named layer
        old = c.model.layers[-1]
        c.model.layers[-1] = "renamed"
        for x in [*c.neurons, *c.neuron_groups]:
            x.layer = "renamed" if x.layer == old else x.layer
        for e in c.edges:
            e.child_layer = "renamed" if e.child_layer == old else e.child_layer
        for e in c.group_edges:
            e.child_layer = "renamed" if e.child_layer == old else e.child_layer
        c.validate()
    def cls_index(c): c.class_.index = 2
    def cls_name(c): c.class_.name = "dog"
    def params(c): c.params = {**c.params, "k": c.params["k"] + 1}
    def image(c): c.images[0].sha256 = "0" * 64
    def edge(c): c.edges.pop(5)
    def member(c): c.neuron_groups[1].members.pop()
    def group_edge(c): c.group_edges.pop(0)
    def patch(c): c.patches[0].box = [0, 0, 63, 64]
    def semantic_patches(c): c.neurons[2].semantic_groups[0].patches.pop()
    return [weights, name, layer, cls_index, cls_name, params, image, edge, member, group_edge, patch,
            semantic_patches]


def test_float_noise_in_measured_values_keeps_the_uid():
    """Weights, scores and mean activations are measurements fixed by the inputs up to float noise
    (thread counts and devices change their last bits), so they are not part of the identity."""
    c = small()
    before = run_uid(c)
    c.edges[5].weight *= 1 + 1e-9
    c.edges[3].score += 1e-12
    c.group_edges[0].weight *= 1 + 1e-7
    c.neurons[2].semantic_groups[0].mean_activation += 1e-8
    assert run_uid(c) == before


def test_timings_dates_software_and_paths_leave_the_identity():
    c = small()
    assert run_uid(_same(c)) == run_uid(c)
    assert len(run_uid(c)) == 16 and int(run_uid(c), 16) >= 0


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_everything_that_defines_the_run_is_in_the_identity(mutate):
    c = small()
    m = copy.deepcopy(c)
    mutate(m)
    assert run_uid(m) != run_uid(c)


def test_same_inputs_twice_is_one_run(store):
    c = small()
    first = ingest(store=store, circuit=c)
    again = ingest(store=store, circuit=_same(c))  # a re-extraction: new timing, date, build, paths
    assert again.uid == first.uid and again.skipped
    runs = list_runs(store=store)
    assert [(r.uid, r.status, r.latest) for r in runs] == [(first.uid, "complete", True)]
    assert runs[0].created_at == c.created_at  # the first extraction's date stays


def test_a_label_added_later_keeps_the_uid(store, tmp_path):
    from neurflow_graph.annotations import append_run_annotations, make_annotation
    from neurflow_graph.store.ingest import ingest_run_dir

    c = small()
    c.save(tmp_path)
    before = ingest_run_dir(store=store, run_dir=tmp_path)
    g = c.neuron_groups[1]
    append_run_annotations(tmp_path, [make_annotation(
        target=neuron_group_uid(before.uid, g.layer, g.id), target_label="NeuronGroup", key="label",
        value="whiskers", source="user")])
    after = ingest_run_dir(store=store, run_dir=tmp_path)
    assert after.uid == before.uid == run_uid(c)
    assert [r.uid for r in list_runs(store=store)] == [before.uid]
    rows = store.read("MATCH (a:Annotation)-[:ANNOTATES]->(g:NeuronGroup) RETURN a.value AS v, g.run AS run")
    assert rows == [{"v": "whiskers", "run": before.uid}]


def test_uid_helpers_are_stable_text():
    c = small(model_name="my net ")
    m = model_uid(c)
    assert m == "my net%20@random"
    assert neuron_uid(m, "block1", 3) == "my net%20@random/block1/3"
    assert semantic_group_uid("r1", "block1", 3, 0) == "r1/block1/3/0"
    assert neuron_group_uid("r1", "block1", 2) == "r1/block1/2"
    assert feeds_uid("r1", "block1", 2, "block2", 0) == "r1/block1/2>block2/0"
    assert annotation_uid("t", "label", "user") == annotation_uid("t", "label", "user") != annotation_uid("t", "label", "mllm:x")


def test_ingest_names_the_run_by_its_identity(store):
    c = small()
    assert ingest_circuit(store=store, circuit=c) == run_uid(c)
    assert store.read("MATCH (r:Run) RETURN r.uid AS u") == [{"u": run_uid(c)}]
