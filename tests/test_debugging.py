"""Metric M against hand computations; core sets against random sets on the planted circuit;
the debug and evaluate commands' input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neurflow_graph.cli import cli
from neurflow_graph.debugging.metric import core_subset, group_metric, nearest_members
from neurflow_graph.errors import InputError


def test_metric_by_hand():
    phi = np.array([[2.0, 1.0], [0.0, 3.0], [4.0, 4.0], [-2.0, 2.0]])
    maxima = np.array([4.0, 4.0])
    got = group_metric(phi, maxima)
    # geometric mean of |phi| / max: sqrt(0.5 * 0.25); a silent neuron gives 0; the maxima give 1
    assert got[0] == pytest.approx(math.sqrt(0.5 * 0.25))
    assert got[1] == 0.0
    assert got[2] == pytest.approx(1.0)
    assert got[3] == pytest.approx(0.5)  # |phi|, as the paper writes it
    with pytest.raises(InputError):
        group_metric(phi, np.array([4.0, 0.0]))


def test_core_subset_is_the_members_nearest_the_centre():
    # centre (13/7, 13/7); distances by hand: row 3 1.62, rows 1 and 2 2.05, row 0 2.63, rows 4, 5 3.41, row 6 11.5
    vectors = np.array([[0, 0], [1, 0], [0, 1], [3, 3], [-1, 0], [0, -1], [10, 10]], dtype=float)
    assert nearest_members(vectors, 5).tolist() == [3, 1, 2, 0, 4]
    # rows 1 and 3 are two semantic groups of one neuron (21): it enters S'_G once
    members = [(20, 0), (21, 0), (22, 0), (21, 1), (24, 0), (25, 0), (26, 0)]
    assert core_subset(members, vectors, 5) == [21, 22, 20, 24, 25]


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    from test_extraction_planted import LAYERS, Planted
    from test_extraction_support import write_images

    from neurflow_graph.extraction import ExtractParams, extract_circuit
    from neurflow_graph.models.registry import LoadedModel, ModelSpec

    images = write_images(tmp_path_factory.mktemp("planted_eval"), 6, size=(32, 32), seed=5)
    spec = ModelSpec(name="planted", layers=LAYERS, input_size=16, mean=None, std=None)
    model = LoadedModel(module=Planted().eval(), spec=spec, device=torch.device("cpu"), weights_sha256=None)
    circuit = extract_circuit(model=model, images=images, class_index=0,
                              params=ExtractParams(k=10, tau=2, max_semantic_groups=3, ig_steps=20), progress=False)
    return model, circuit


def test_planted_core_sets_beat_every_random_set(planted_run):
    from neurflow_graph.evaluation.common import load_run_data
    from neurflow_graph.evaluation.optimality import evaluate_optimality

    model, circuit = planted_run
    data = load_run_data(circuit=circuit, model=model)
    assert data.reproduced == 1.0  # the rebuilt D gives back every stored concept
    res = evaluate_optimality(data=data, n_random=30, targets_per_layer=5, rng=np.random.default_rng(0))
    targets = [t for layer in res.layers for t in layer.targets]
    assert {(t.layer, t.neuron) for t in targets} == {("fc", 0), ("mid_act", 0), ("mid_act", 1)}
    for t in targets:
        assert t.beats_random, t
        assert t.random_better == 0.0, t  # no random set of the same size has a smaller loss
    assert res.share_beating_random == 1.0
    assert all(layer.mean_difference > 0 and layer.ci99[0] > 0 for layer in res.layers)


def test_planted_recomputed_scores_match_the_circuit(planted_run):
    from neurflow_graph.evaluation.common import load_run_data
    from neurflow_graph.evaluation.k_dependence import evaluate_k_dependence
    from neurflow_graph.evaluation.weight_fidelity import evaluate_weight_fidelity

    model, circuit = planted_run
    data = load_run_data(circuit=circuit, model=model)
    wf = evaluate_weight_fidelity(data=data, cardinalities=(1, 2), combinations=10, targets_per_layer=3,
                                  rng=np.random.default_rng(1))
    # T recomputed by autograd IG equals the extraction's batched IG scores of the cores
    assert wf.stored_score_max_rel_error < 1e-3
    kd = evaluate_k_dependence(data=data, ks=(10,), baseline=10, targets_per_layer=3, rng=np.random.default_rng(2))
    assert kd.baseline_matches_run == 1.0 and kd.overlap[10] == 1.0


def test_debug_and_evaluate_reject_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["debug", "--run", str(tmp_path / "nope"), "--images", str(tmp_path),
                            "--store", f"embedded:{tmp_path / 'store'}"])
    assert r.exit_code == 2 and "Error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["evaluate", "--run", str(tmp_path), "--experiments", "optimality,bogus"])
    assert r.exit_code == 2 and "unknown experiment 'bogus'" in r.output
    r = runner.invoke(cli, ["evaluate", "--run", str(tmp_path), "--experiments", "fidelity"])
    assert r.exit_code == 2 and "needs --images" in r.output


def test_extraction_ig_engine_equals_plain_autograd_ig(planted_run):
    """The evaluation's T comes from the extraction's batched IG; plain autograd IG is the oracle."""
    from neurflow_graph.evaluation.common import attributions, extraction_attributions, load_run_data

    model, circuit = planted_run
    data = load_run_data(circuit=circuit, model=model)
    concept = data.concept("mid_act", 1)
    fast = extraction_attributions(data=data, lower="low_act", upper="mid_act", target=1, patches=concept)
    maps = data.maps_cached("low_act")[torch.as_tensor(concept)]
    plain = attributions(fn=data.slice("low_act", "mid_act", [1]), maps=maps, method=data.params.ig_method,
                         steps=data.params.ig_steps).numpy()
    assert np.allclose(fast, plain, rtol=1e-4, atol=1e-6)


def test_by_concept_sentences_name_the_true_class_change_or_say_why_there_is_none():
    """debug_sentences on hand-made by_concept findings: the figures appear as given; when no false
    positive's folder is one of the model's classes (delta_true_logit NaN) the sentence says so
    instead of printing 'nan'."""
    from types import SimpleNamespace

    from neurflow_graph.debugging.debug import ConceptMasking, RandomStats

    def masking(concept, d_true):
        return ConceptMasking(concept=concept, groups=[1, 2], size=13, returned_rate=1.0, delta_logit=-2.62,
                              delta_true_logit=d_true, random_returned_rate=RandomStats(0.03, 0.0, 0.077),
                              random_delta_logit=RandomStats(-0.6, -1.0, -0.2),
                              random_delta_true_logit=RandomStats(-0.15, -0.3, 0.0))

    result = SimpleNamespace(groups=[], combined=None, top_group_spurious_share=None, class_name="bee", n_images=96,
                             false_positives=["x"] * 13, false_positive_labels=["lemon"] * 13, n_random=100,
                             layer="conv4", by_concept=[masking("object:flower", 0.57), masking("color:yellow", math.nan)])
    from neurflow_graph.debugging.report import debug_sentences

    lines = [ln for ln in debug_sentences(result) if "masking all" in ln]
    assert len(lines) == 2
    assert "returns 100% of the false positives (random sets: 3%)" in lines[0]
    assert "bee logit by -2.62, their true class's by +0.57 (random: -0.60, -0.15)" in lines[0]
    assert "nan" not in lines[1].lower() and "no true-class logit" in lines[1] and "by -2.62 (random: -0.60)" in lines[1]
    assert "returns" not in lines[1]  # a share 'returned to the true class' means nothing without one
