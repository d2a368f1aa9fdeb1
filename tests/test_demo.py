"""`neurflow-graph demo` end to end, judged by the concept world's ground truth."""

import json
import shutil

from click.testing import CliRunner

from neurflow_graph.cli import cli
from neurflow_graph.annotations import read_run_annotations
from neurflow_graph.circuit import load_circuit
from neurflow_graph.datasets.concept_world import CLASSES
from neurflow_graph.demo import run_demo
from neurflow_graph.identity import neuron_group_uid
from neurflow_graph.queries.library import run_query
from neurflow_graph.store.url import open_store
from conftest import redis_pids_for

FAST = {"k": 20, "tau": 8, "ig_steps": 8}


def test_demo_finds_the_spurious_concepts_of_the_biased_class(tmp_path):
    lines: list[str] = []
    result = run_demo(data_dir=tmp_path, per_class=6, classes=["bee", "lemon"], params=FAST, echo=lines.append)

    bee = load_circuit(result.run_dirs["bee"])
    notes = read_run_annotations(result.run_dirs["bee"])
    concepts = {a.target: a.value for a in notes if a.key == "concept" and a.source == "ground_truth"}
    purities = {a.target: a.value for a in notes if a.key == "purity" and a.source == "ground_truth"}
    spurious = {c for c, _ in next(c for c in CLASSES if c.name == "bee").spurious}
    # ground truth: some neuron group of the bee circuit is made of flower or grass patches
    assert set(concepts.values()) & spurious
    assert any("bee: group" in line and "spurious" in line for line in lines)
    # issue 10: the demo debugs bee on the bias split and prints the finding with its picture; masking the
    # flower/grass groups returns the false positives to their class far more than random sets (measured
    # in this configuration: 50% of 6 vs 0%; 100% of 13 vs 3% at the demo's defaults, bench/RESULTS.md)
    picture = result.debug_pictures["bee"]
    assert picture.is_file() and any(str(picture) in line for line in lines)
    debugged = json.loads((picture.parent / "debug.json").read_text())
    assert debugged["false_positives"] and debugged["combined"]["returned_rate"] >= 0.5
    assert debugged["combined"]["random_returned_rate"]["mean"] <= 0.10
    assert any(line.startswith("bee: masking the") and "returns" in line for line in lines)
    # what drives them: every concept's groups masked together (debug.json "by_concept"), recomputed
    # here by a full forward pass under mask_neurons, an oracle independent of debug's batched slice
    import pytest
    import torch

    from neurflow_graph.datasets.images import load_rgb
    from neurflow_graph.interventions import mask_neurons
    from neurflow_graph.models.registry import load_model

    model = load_model(name="demo", layers=bee.model.layers)
    names = [model.class_name(i) for i in range(model.num_classes)]
    x = torch.stack([model.preprocess(load_rgb(p)) for p in debugged["false_positives"]])
    true = torch.as_tensor([names.index(label) for label in debugged["false_positive_labels"]])
    rows, c = torch.arange(len(x)), names.index("bee")
    with torch.no_grad():
        base = model.module(x)
    assert {m["concept"] for m in debugged["by_concept"]} == {g["concept"] for g in debugged["groups"] if g["concept"]}
    for m in debugged["by_concept"]:
        neurons = sorted({n for g in debugged["groups"] if g["gid"] in m["groups"] for n in g["neurons"]})
        assert len(neurons) == m["size"] and all(g["concept"] == m["concept"] for g in debugged["groups"]
                                                 if g["gid"] in m["groups"])
        with mask_neurons(model.module, {debugged["layer"]: neurons}), torch.no_grad():
            out = model.module(x)
        assert (out.argmax(1) == true).float().mean().item() == pytest.approx(m["returned_rate"])
        assert (out[:, c] - base[:, c]).mean().item() == pytest.approx(m["delta_logit"], abs=1e-3)
        assert (out[rows, true] - base[rows, true]).mean().item() == pytest.approx(m["delta_true_logit"], abs=1e-3)
    assert any(line.startswith("bee: masking all") and "true class's by" in line for line in lines)
    # every group is scored (an annotation beside circuit.json) with a purity in [0, 1]
    uid = result.run_uids["bee"]
    assert set(purities) == set(concepts) == {neuron_group_uid(uid, g.layer, g.id) for g in bee.neuron_groups}
    assert all(0.0 <= p <= 1.0 for p in purities.values())

    with open_store(f"embedded:{tmp_path}") as store:
        runs = store.read("MATCH (r:Run {status: 'complete', latest: true}) RETURN r.uid AS uid, r.class_name AS c")
        assert {r["c"]: r["uid"] for r in runs} == result.run_uids
        # the logit path the demo printed is the strongest one the library finds
        top = run_query(store=store, name="concept_paths_to_logit",
                        params={"model": bee.model.name, "class": "bee", "layer": bee.model.layers[-1], "limit": 1})
        assert any(" -> ".join(top[0]["path"]) in line for line in lines)
    assert redis_pids_for(tmp_path) == []

    # issue 8 item 1: the demo again, re-extracting from scratch (no checkpoint, no circuit.json),
    # gives the same runs, not a second copy of each (new timings and dates do not count)
    for run_dir in result.run_dirs.values():
        shutil.rmtree(run_dir / "checkpoints")
        (run_dir / "circuit.json").unlink()
    again = run_demo(data_dir=tmp_path, per_class=6, classes=["bee", "lemon"], params=FAST, echo=lambda _: None)
    assert load_circuit(again.run_dirs["bee"]).created_at is not None
    assert again.run_uids == result.run_uids
    with open_store(f"embedded:{tmp_path}") as store:
        assert sorted(r["u"] for r in store.read("MATCH (r:Run) RETURN r.uid AS u")) == sorted(result.run_uids.values())


def test_demo_command_rejects_bad_input_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--data-dir", str(tmp_path), "--per-class", "1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["Error: --per-class must be at least 2, got 1"]
    assert "Traceback" not in result.output
