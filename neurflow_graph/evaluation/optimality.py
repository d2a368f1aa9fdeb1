"""Optimality of core concept neurons (paper sec. 4, Fig. 4).

For a target a with core set S_a (in the layer below), the loss L(S, a) = |V_a^{S-bar} ∩ V_a| / |V_a|
(Definition 2's knockout; lower = S matters more). Against R random sets of |S_a| neurons of the same
layer: the differences L(random) - L(S_a) over all (target, random set) cases, their mean with a 99%
confidence interval (normal approximation, mean ± 2.576 sd / sqrt(n)), the share of cases where a
random set does better (a smaller loss), and per target whether S_a beats the random sets' mean.
Random sets of one size are shared by the targets of a layer, so a layer costs (R + targets)
passes of its slice over D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurflow_graph.evaluation.common import RunData, sample_targets
from neurflow_graph.interventions.knockout import concept_loss, knockout_concepts, knockout_phi

Z99 = 2.5758293035489


@dataclass
class TargetOptimality:
    layer: str
    neuron: int
    core_size: int
    core_loss: float
    random_mean: float
    random_better: float         # share of its random sets with a smaller loss than S_a
    beats_random: bool           # core_loss < random_mean


@dataclass
class LayerOptimality:
    layer: str                   # layer of the targets (their cores are in the layer below)
    targets: list[TargetOptimality]
    mean_difference: float       # mean of L(random) - L(S_a) over all cases
    ci99: tuple[float, float]
    random_better: float         # share of all cases where the random set does better


@dataclass
class OptimalityResult:
    n_random: int
    layers: list[LayerOptimality] = field(default_factory=list)
    share_beating_random: float = float("nan")   # over every target of every layer
    n_targets: int = 0


def evaluate_optimality(*, data: RunData, n_random: int = 100, targets_per_layer: int = 5,
                        rng: np.random.Generator) -> OptimalityResult:
    result = OptimalityResult(n_random=n_random)
    wins = []
    for layer in data.layers[:-1]:
        lower = data.below(layer)
        targets = sample_targets(data, layer, targets_per_layer, rng)
        if not targets:
            continue
        cores = {a: data.cores(layer, a) for a in targets}
        n_lower = data.phi[lower].shape[1]
        sizes = sorted({len(c) for c in cores.values()})
        randoms = {n: [sorted(rng.choice(n_lower, size=min(n, n_lower), replace=False).tolist())
                       for _ in range(n_random)] for n in sizes}
        sets = [cores[a] for a in targets] + [s for n in sizes for s in randoms[n]]
        offset = {}
        pos = len(targets)
        for n in sizes:
            offset[n] = pos
            pos += n_random
        fn = data.slice(lower, layer, targets)
        phi = knockout_phi(slice_module=fn, maps=data.maps_cached(lower), sets=sets, max_rows=data.batch * 8).cpu()
        diffs, better = [], []
        rows = []
        for t, a in enumerate(targets):
            concept = data.concept(layer, a)
            core = float(concept_loss(concept, knockout_concepts(phi[t:t + 1, :, t], len(concept)))[0])
            n = len(cores[a])
            rand = concept_loss(concept, knockout_concepts(phi[offset[n]:offset[n] + n_random, :, t], len(concept)))
            diffs.extend((rand - core).tolist())
            better.extend((rand < core).tolist())
            rows.append(TargetOptimality(layer=layer, neuron=a, core_size=n, core_loss=core,
                                         random_mean=float(rand.mean()), random_better=float((rand < core).mean()),
                                         beats_random=bool(core < rand.mean())))
            wins.append(core < rand.mean())
        d = np.asarray(diffs)
        half = Z99 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        result.layers.append(LayerOptimality(layer=layer, targets=rows, mean_difference=float(d.mean()),
                                             ci99=(float(d.mean() - half), float(d.mean() + half)),
                                             random_better=float(np.mean(better))))
    result.n_targets = len(wins)
    result.share_beating_random = float(np.mean(wins)) if wins else float("nan")
    return result
