"""The Circuit dataclasses: round trip, validation, atomic save, group-edge derivation."""

import json

import pytest

from neurflow_graph.circuit import (
    CIRCUIT_FILE, Edge, NeuronGroup, derive_group_edges, load_circuit,
)
from neurflow_graph.errors import RunFormatError
from neurflow_graph.synthetic import synthetic_circuit


@pytest.fixture
def circuit():
    return synthetic_circuit(class_index=2, class_name="bee", model_name="m", seed=3)


def test_round_trip_through_disk(tmp_path, circuit):
    path = circuit.save(tmp_path / "run")
    assert path.name == CIRCUIT_FILE
    assert load_circuit(tmp_path / "run") == circuit
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != CIRCUIT_FILE]  # no temp file left


def test_synthetic_circuits_obey_paper_invariants(circuit):
    by_group = {}
    for e in circuit.edges:
        by_group.setdefault((e.parent_layer, e.parent_index, e.parent_group), []).append(abs(e.weight))
    assert by_group and all(abs(sum(v) - 1.0) < 1e-9 for v in by_group.values())
    for layer in circuit.model.layers:
        sgs = sorted((n.index, g.id) for n in circuit.layer_neurons(layer) for g in n.semantic_groups)
        members = sorted(tuple(m) for g in circuit.neuron_groups if g.layer == layer for m in g.members)
        assert members == sgs


def test_missing_file_and_truncated_json_are_clear_errors(tmp_path, circuit):
    with pytest.raises(RunFormatError, match="does not exist"):
        load_circuit(tmp_path)
    circuit.save(tmp_path)
    text = (tmp_path / CIRCUIT_FILE).read_text()
    (tmp_path / CIRCUIT_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(RunFormatError, match="not valid JSON"):
        load_circuit(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("edges"), "missing the field 'edges'"),
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d["edges"][0].update(child_index=10_000), "is not a neuron"),
    (lambda d: d["patches"][0].update(box=[5, 5, 1, 1]), "bad box"),
    (lambda d: d["neuron_groups"][1]["members"].append([999, 0]), "unknown member"),
])
def test_validation_rejects_broken_circuits(tmp_path, circuit, mutate, message):
    d = circuit.to_dict()
    mutate(d)
    (tmp_path / CIRCUIT_FILE).write_text(json.dumps(d))
    with pytest.raises(RunFormatError, match=message):
        load_circuit(tmp_path)


def test_derive_group_edges_counts_each_child_neuron_once():
    # parent group P = {(a=0, j=0), (a=1, j=0)}; child group C holds neuron 5 twice (two semantic groups)
    edges = [
        Edge("top", 0, 0, "low", 5, 0.5, 1.0),
        Edge("top", 1, 0, "low", 5, -0.25, -1.0),
        Edge("top", 1, 0, "low", 6, 0.75, 3.0),
    ]
    groups = [
        NeuronGroup("top", 0, [[0, 0], [1, 0]]),
        NeuronGroup("low", 0, [[5, 0], [5, 1]]),
        NeuronGroup("low", 1, [[6, 0]]),
        NeuronGroup("low", 2, [[7, 0]]),  # no edge reaches it
    ]
    got = {(g.child_group): g.weight for g in derive_group_edges(edges=edges, neuron_groups=groups)}
    assert got == {0: pytest.approx(0.25), 1: pytest.approx(0.75)}
