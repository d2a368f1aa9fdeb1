"""Fidelity of the IG importance scores (paper sec. 4, Fig. 6).

For a target a, T(a, s, V_a) (eq. 2) for every neuron s of the layer below, recomputed over a's
concept with the extraction's IG engine; random combinations S of the layer below with cardinality tau' = 1 ... tau; for each,
Σ_{s in S} |T(a, s, V_a)| and the knockout loss it causes. Reported per cardinality: the Pearson
and Spearman correlation, over the targets' combinations pooled per target and averaged, between
Σ|T| and the concept change 1 - L(S, a) (= the share of V_a that knocking S out removes), so that
agreement is positive as in the paper's figure. Also checked: T of the run's own core neurons
equals the scores stored in the circuit (summed over semantic groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from neurflow_graph.evaluation.common import RunData, extraction_attributions, sample_targets
from neurflow_graph.interventions.knockout import concept_loss, knockout_concepts, knockout_phi


@dataclass
class CardinalityCorrelation:
    cardinality: int
    pearson: float
    spearman: float
    n_targets: int


@dataclass
class WeightFidelityResult:
    combinations: int
    cardinalities: list[int]
    correlations: list[CardinalityCorrelation] = field(default_factory=list)
    stored_score_max_rel_error: float = float("nan")   # recomputed T vs the circuit's scores, cores only


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def scores_of(data: RunData, layer: str, neuron: int, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concept ids, signed T (C,), sum over patches of |attribution| (C,)) of ``neuron`` over its top-k."""
    lower = data.below(layer)
    concept = data.concept(layer, neuron, k)
    per_patch = extraction_attributions(data=data, lower=lower, upper=layer, target=neuron, patches=concept)
    return concept, per_patch.sum(0), np.abs(per_patch).sum(0)


def evaluate_weight_fidelity(*, data: RunData, cardinalities: Sequence[int] = (1, 2, 4, 8, 16),
                             combinations: int = 50, targets_per_layer: int = 3,
                             rng: np.random.Generator) -> WeightFidelityResult:
    result = WeightFidelityResult(combinations=combinations, cardinalities=list(cardinalities))
    per_card: dict[int, list[tuple[float, float]]] = {t: [] for t in cardinalities}
    errors = []
    for layer in data.layers[:-1]:
        lower = data.below(layer)
        n_lower = data.phi[lower].shape[1]
        targets = sample_targets(data, layer, targets_per_layer, rng)
        for a in targets:
            concept, signed, _ = scores_of(data, layer, a)
            stored: dict[int, float] = {}
            for e in data.circuit.edges:
                if e.parent_layer == layer and e.parent_index == a:
                    stored[e.child_index] = stored.get(e.child_index, 0.0) + e.score
            for s, v in stored.items():
                errors.append(abs(signed[s] - v) / max(abs(v), 1e-12))
            sets = [sorted(rng.choice(n_lower, size=min(t, n_lower), replace=False).tolist())
                    for t in cardinalities for _ in range(combinations)]
            phi = knockout_phi(slice_module=data.slice(lower, layer, [a]), maps=data.maps_cached(lower), sets=sets,
                               max_rows=data.batch * 8)[:, :, 0]
            change = 1.0 - concept_loss(concept, knockout_concepts(phi, len(concept)))
            mass = np.asarray([np.abs(signed[s]).sum() for s in sets])
            for i, t in enumerate(cardinalities):
                block = slice(i * combinations, (i + 1) * combinations)
                if np.ptp(change[block]) > 0 and np.ptp(mass[block]) > 0:
                    per_card[t].append((float(np.corrcoef(mass[block], change[block])[0, 1]),
                                        _spearman(mass[block], change[block])))
    for t in cardinalities:
        vals = np.asarray(per_card[t])
        result.correlations.append(CardinalityCorrelation(
            cardinality=t, pearson=float(vals[:, 0].mean()) if len(vals) else float("nan"),
            spearman=float(vals[:, 1].mean()) if len(vals) else float("nan"), n_targets=len(vals)))
    result.stored_score_max_rel_error = float(max(errors)) if errors else float("nan")
    return result
