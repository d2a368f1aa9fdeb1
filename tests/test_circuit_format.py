"""The Circuit dataclasses: round trip, validation, atomic save, group-edge derivation."""

import json

import pytest

from neurflow_graph.circuit import (
    CIRCUIT_FILE, Edge, NeuronGroup, derive_group_edges, load_circuit,
)
from neurflow_graph.errors import RunFormatError
from neurflow_graph.identity import run_uid
from neurflow_graph.synthetic import synthetic_circuit


@pytest.fixture
def circuit():
    return synthetic_circuit(class_index=2, class_name="bee", model_name="m", seed=3)


def test_round_trip_through_disk(tmp_path, circuit):
    path = circuit.save(tmp_path / "run")
    assert path.name == CIRCUIT_FILE
    loaded = load_circuit(tmp_path / "run")
    assert loaded == circuit and loaded.schema_version == 2
    names = sorted(p.name for p in (tmp_path / "run").iterdir())  # no temp file left
    assert len(names) == 2 and names[0].startswith("circuit-") and names[0].endswith(".npz") and names[1] == CIRCUIT_FILE
    header = json.loads(path.read_text())
    assert header["schema_version"] == 2 and "edges" not in header and header["arrays"]["file"] == names[0]
    assert header["counts"]["edges"] == len(circuit.edges)


def test_saving_again_replaces_the_arrays(tmp_path, circuit):
    circuit.save(tmp_path)
    circuit.edges[0].weight += 0.5
    circuit.save(tmp_path)
    assert len(list(tmp_path.glob("circuit-*.npz"))) == 1
    assert load_circuit(tmp_path).edges[0].weight == circuit.edges[0].weight


def test_version_1_is_still_read_with_its_inline_annotations(tmp_path, circuit):
    d = circuit.to_dict()
    assert d["schema_version"] == 1 and "edges" in d
    d["neuron_groups"][1].update(concept="texture:fur", purity=0.5, label=None, caption=None)
    (tmp_path / CIRCUIT_FILE).write_text(json.dumps(d))
    old = load_circuit(tmp_path)
    assert old == circuit and old.schema_version == 1 and run_uid(old) == run_uid(circuit)
    g = circuit.neuron_groups[1]
    assert old.legacy_annotations == [(g.layer, g.id, "concept", "texture:fur"), (g.layer, g.id, "purity", 0.5)]
    old.save(tmp_path / "v2")  # rewritten as version 2: same content, same uid
    assert run_uid(load_circuit(tmp_path / "v2")) == run_uid(circuit)


def test_version_2_is_much_smaller_than_version_1(tmp_path):
    c = synthetic_circuit(class_index=1, class_name="cat", widths=(10, 256, 256, 128), tau=16, k=50, n_images=16)
    c.save(tmp_path)
    v2 = sum(p.stat().st_size for p in tmp_path.iterdir())
    v1 = len(json.dumps(c.to_dict(), indent=1))
    assert v2 * 3 < v1, (v1, v2)


@pytest.mark.parametrize("damage, message", [
    (lambda d: next(d.glob("circuit-*.npz")).unlink(), "is missing"),
    (lambda d: next(d.glob("circuit-*.npz")).write_bytes(b"x" * 100), "does not match the sha256"),
    (lambda d: (d / CIRCUIT_FILE).write_text(json.dumps({**json.loads((d / CIRCUIT_FILE).read_text()), "arrays": None})),
     "needs an 'arrays' object"),
])
def test_a_damaged_version_2_run_is_a_clear_error(tmp_path, circuit, damage, message):
    circuit.save(tmp_path)
    damage(tmp_path)
    with pytest.raises(RunFormatError, match=message):
        load_circuit(tmp_path)


def test_version_2_arrays_are_validated_like_version_1(tmp_path, circuit):
    import numpy as np

    circuit.save(tmp_path)
    npz = next(tmp_path.glob("circuit-*.npz"))
    with np.load(npz) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["edges"][0, 4] = 10_000  # the child neuron of an edge that does not exist
    np.savez(npz, **arrays)
    header = json.loads((tmp_path / CIRCUIT_FILE).read_text())
    header["arrays"].pop("sha256")
    (tmp_path / CIRCUIT_FILE).write_text(json.dumps(header))
    with pytest.raises(RunFormatError, match="is not a neuron"):
        load_circuit(tmp_path)


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
