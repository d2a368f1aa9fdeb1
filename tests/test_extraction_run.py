"""How an extraction runs: determinism, resume after a crash, hooks, input validation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from neurflow_graph.errors import ExtractionError, ImageError, InputError, NeurflowError
from neurflow_graph.extraction import ExtractParams, circuit_builder, extract_circuit
from neurflow_graph.extraction.patches import PatchSource
from test_extraction_support import demo_model, hook_count, write_images

PARAMS = ExtractParams(k=64, tau=3, ig_steps=8, max_batch=64)  # k > |D| = 59: concepts are all of D


def _science(circuit) -> dict:
    d = circuit.to_dict()
    d.pop("timing")
    d.pop("created_at")
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("run-images"), 1, seed=7)


@pytest.fixture(scope="module")
def reference(images):
    return extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, progress=False)


def test_same_inputs_give_the_same_circuit(images, reference):
    again = extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, progress=False)
    assert json.dumps(_science(again)) == json.dumps(_science(reference))
    assert all(sum(len(g.patches) for g in n.semantic_groups) == 59 for n in reference.neurons)


def test_interrupted_run_resumes_to_the_same_circuit(images, tmp_path, monkeypatch):
    # Bit-exact resume needs the eager scan: the maps it keeps equal those the resumed run recomputes
    # bit for bit; the fast layout's equal them up to float rounding (tests/test_extraction_scan_layout.py).
    reference = extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS,
                                progress=False, scan_layout="eager")
    real = circuit_builder._process_layer
    calls: list[int] = []

    def crash_after_layer_1(**kw):
        calls.append(kw["index"])
        if kw["index"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C looks like mid-run
        return real(**kw)

    monkeypatch.setattr(circuit_builder, "_process_layer", crash_after_layer_1)
    with pytest.raises(KeyboardInterrupt):
        extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, run_dir=tmp_path,
                        progress=False, scan_layout="eager")
    assert calls == [0, 1, 2] and not (tmp_path / "circuit.json").exists()

    calls.clear()

    def spy(**kw):
        calls.append(kw["index"])
        return real(**kw)

    monkeypatch.setattr(circuit_builder, "_process_layer", spy)
    resumed = extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, run_dir=tmp_path,
                              resume=True, progress=False, scan_layout="eager")
    assert calls == [2, 3]  # layers 0 and 1 (and the scan) came from checkpoints
    assert "scan" not in resumed.timing
    assert json.dumps(_science(resumed)) == json.dumps(_science(reference))
    assert (tmp_path / "circuit.json").exists()

    with pytest.raises(ExtractionError, match="different extraction"):
        extract_circuit(model=demo_model(seed=1), images=images, class_index=4,
                        params=ExtractParams(k=63, tau=3, ig_steps=8, max_batch=64), run_dir=tmp_path, resume=True,
                        progress=False)
    with pytest.raises(ExtractionError, match="different extraction"):  # other weights, same everything else
        extract_circuit(model=demo_model(seed=2), images=images, class_index=4, params=PARAMS, run_dir=tmp_path,
                        resume=True, progress=False)
    # Without resume the old checkpoints are replaced, not an error.
    calls.clear()
    extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, run_dir=tmp_path,
                    progress=False)
    assert calls == [0, 1, 2, 3]


def test_the_callers_random_state_is_left_alone(images):
    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    def seed_all() -> None:
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(123)

    model = demo_model(seed=1)  # seeds torch itself
    seed_all()
    expected = draws()
    seed_all()
    extract_circuit(model=model, images=images, class_index=4,
                    params=ExtractParams(k=8, tau=2, ig_steps=4, seed=5), progress=False)
    assert draws() == expected


def test_hooks_are_removed_on_success_and_on_error(images, monkeypatch):
    model = demo_model(seed=1)
    module = model.module
    training = module.training
    extract_circuit(model=model, images=images, class_index=0, params=PARAMS, progress=False)
    assert hook_count(module) == 0
    assert module.training == training and all(p.requires_grad for p in module.parameters())

    seen: list[int] = []
    real = PatchSource.batch

    def failing(self, ids):
        seen.append(hook_count(module))
        if len(seen) == 2:
            raise RuntimeError("disk vanished")
        return real(self, ids)

    monkeypatch.setattr(PatchSource, "batch", failing)
    with pytest.raises(RuntimeError, match="disk vanished"):
        extract_circuit(model=model, images=images, class_index=0,  # eager: the hooks sit on the model itself
                        params=ExtractParams(k=8, tau=2, ig_steps=4, max_batch=16), progress=False,
                        scan_layout="eager")
    assert seen[-1] > 0  # the scan's hooks were live when the error struck
    assert hook_count(module) == 0
    assert module.training == training and all(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("params, kwargs, error, fragment", [
    (ExtractParams(ig_method="left"), {}, InputError, "ig_method must be one of"),
    (ExtractParams(rank_by="sum"), {}, InputError, "rank_by must be one of"),
    (ExtractParams(k=0), {}, InputError, "k must be an integer >= 1"),
    (ExtractParams(crop_fractions=(1.0, 1.5)), {}, InputError, "crop_fractions"),
    (ExtractParams(tau_per_layer={"fc": 2}), {}, InputError, "not an analysed layer below the logit"),
    (ExtractParams(), {"class_index": 99}, InputError, "class index 99 is out of range"),
    (ExtractParams(), {"images": []}, ImageError, "D_c is empty"),
])
def test_bad_input_is_one_actionable_line(images, params, kwargs, error, fragment):
    args = {"model": demo_model(seed=1), "images": images, "class_index": 0, "params": params, "progress": False}
    args.update(kwargs)
    with pytest.raises(error, match=fragment) as info:
        extract_circuit(**args)
    assert isinstance(info.value, NeurflowError) and "\n" not in str(info.value)


def test_tau_per_layer_overrides_tau(images):
    params = ExtractParams(k=16, tau=3, tau_per_layer={"conv3": 1}, ig_steps=4)
    c = extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=params, progress=False)
    for parent in c.layer_neurons("conv4"):
        children = {e.child_index for e in c.edges if e.parent_layer == "conv4" and e.parent_index == parent.index}
        assert len(children) == 1
    assert len({e.child_index for e in c.edges if e.parent_layer == "fc"}) == 3
    assert torch.is_grad_enabled()


def test_batch_size_does_not_change_the_circuit(images, reference):
    """Tiny batches split the scan, the maps, the blocks of copies and a patch's steps."""
    small = extract_circuit(model=demo_model(seed=1), images=images, class_index=4,
                            params=ExtractParams(k=64, tau=3, ig_steps=8, max_batch=5), progress=False)
    assert [(n.layer, n.index) for n in small.neurons] == [(n.layer, n.index) for n in reference.neurons]
    assert [[g.patches for g in n.semantic_groups] for n in small.neurons] == \
        [[g.patches for g in n.semantic_groups] for n in reference.neurons]
    key = lambda e: (e.parent_layer, e.parent_index, e.parent_group, e.child_index)  # noqa: E731
    assert sorted(map(key, small.edges)) == sorted(map(key, reference.edges))
    ref = {key(e): e for e in reference.edges}
    for e in small.edges:
        assert e.weight == pytest.approx(ref[key(e)].weight, abs=1e-5)
        assert e.score == pytest.approx(ref[key(e)].score, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("budget, held", [(4096, False), (8 * 2**20, True)])
def test_the_same_circuit_under_a_tiny_and_a_large_memory_budget(images, reference, budget, held):
    """A 4 KiB budget keeps nothing from the scan and streams every layer's maps per block. With 8 MiB
    the scan keeps conv4's maps of all of D (0.9 MiB; its share is 4 MiB, conv4 + conv3 need 4.6), conv3's
    top-k maps (3.7 MiB) are computed once and held, conv2's (7.4 MiB) are streamed."""
    run = extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, progress=False,
                          memory_budget=budget)
    assert run.timing["memory_budget_mib"] == round(budget / 2**20, 1) and run.timing["peak_rss_mib"] > 0
    assert run.timing["maps"] > 0 and reference.timing.get("maps", 0.0) < run.timing["maps"]
    assert ("maps_held_layers" in run.timing) is held
    key = lambda e: (e.parent_layer, e.parent_index, e.parent_group, e.child_index)  # noqa: E731
    ref = {key(e): e.weight for e in reference.edges}
    assert sorted(map(key, run.edges)) == sorted(ref)
    assert max(abs(e.weight - ref[key(e)]) for e in run.edges) < 1e-5
    assert [[g.patches for g in n.semantic_groups] for n in run.neurons] == \
        [[g.patches for g in n.semantic_groups] for n in reference.neurons]


def test_memory_budget_text_is_parsed_and_bad_text_refused(images):
    from neurflow_graph.extraction.budget import parse_memory

    assert parse_memory("2GiB") == 2 * 2**30 and parse_memory("512MiB") == 512 * 2**20 and parse_memory("1.5GB") == 1.5e9
    with pytest.raises(InputError, match="memory-budget"):
        extract_circuit(model=demo_model(seed=1), images=images, class_index=4, params=PARAMS, progress=False,
                        memory_budget="lots")