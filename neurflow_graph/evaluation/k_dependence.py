"""Dependence of the core sets on k (paper app. D.7).

For sampled targets, the core set recomputed with concepts of k in {30, 50, 70, 110} patches (IG
over the top-k, ranked as the run ranks, tau of the layer below) and its overlap with the core set
at the baseline k = 50: |S_a^k ∩ S_a^50| / |S_a^50|, averaged over the targets. Also the share of
targets whose recomputed k = 50 core set equals the run's own (a check of the recomputation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from neurflow_graph.evaluation.common import RunData, sample_targets
from neurflow_graph.evaluation.weight_fidelity import scores_of
from neurflow_graph.extraction.importance import core_neurons, rank_scores

BASELINE_K = 50


@dataclass
class KDependenceResult:
    ks: list[int]
    baseline: int
    overlap: dict[int, float] = field(default_factory=dict)      # k -> mean overlap with the baseline
    n_targets: int = 0
    baseline_matches_run: float = float("nan")


def evaluate_k_dependence(*, data: RunData, ks: Sequence[int] = (30, 50, 70, 110), targets_per_layer: int = 3,
                          rng: np.random.Generator, baseline: int = BASELINE_K) -> KDependenceResult:
    ks = sorted(set(ks) | {baseline})
    result = KDependenceResult(ks=list(ks), baseline=baseline)
    overlaps: dict[int, list[float]] = {k: [] for k in ks}
    matches = []
    for layer in data.layers[:-1]:
        lower = data.below(layer)
        for a in sample_targets(data, layer, targets_per_layer, rng):
            cores = {}
            for k in ks:
                concept, signed, abs_sum = scores_of(data, layer, a, k)
                scores = rank_scores(abs_sum=abs_sum, signed_sum=signed, n_patches=len(concept),
                                     rank_by=data.params.rank_by)
                cores[k] = set(core_neurons(scores, data.params.tau_for(lower)).tolist())
            base = cores[baseline]
            for k in ks:
                overlaps[k].append(len(cores[k] & base) / max(len(base), 1))
            if data.params.k == baseline:
                matches.append(base == set(data.cores(layer, a)))
    result.n_targets = len(overlaps[baseline])
    result.overlap = {k: float(np.mean(v)) if v else float("nan") for k, v in overlaps.items()}
    result.baseline_matches_run = float(np.mean(matches)) if matches else float("nan")
    return result
