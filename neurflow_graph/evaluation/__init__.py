"""The paper's evaluations (sec. 4, app. D.7) on one run: one module per experiment.

``optimality`` (Fig. 4), ``fidelity`` (Fig. 5), ``weight_fidelity`` (Fig. 6), ``k_dependence``
(app. D.7); ``common`` rebuilds the run's patch set D and holds what they share; ``report`` turns
results into JSON, plots and annotations. See docs/applications.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurflow_graph.errors import InputError

EXPERIMENTS: tuple[str, ...] = ("optimality", "fidelity", "weight_fidelity", "k_dependence")


@dataclass
class EvaluationSettings:
    """Sizes of the experiments (paper values where it gives them: 100 random sets, 5 targets per
    layer, k in {30, 50, 70, 110})."""

    n_random: int = 100
    targets_per_layer: int = 5
    fidelity_random: int = 20
    combinations: int = 50
    cardinalities: tuple[int, ...] = (1, 2, 4, 8, 16)
    weight_targets_per_layer: int = 3
    ks: tuple[int, ...] = (30, 50, 70, 110)
    k_targets_per_layer: int = 3
    seed: int = 0


@dataclass
class EvaluationRun:
    run: str
    class_name: str
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    concepts_reproduced: float = float("nan")


def check_experiments(names: Sequence[str]) -> list[str]:
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise InputError(f"unknown experiment {bad[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    return list(dict.fromkeys(names)) or list(EXPERIMENTS)


def evaluate_run(*, model: Any, circuit: Any, run_uid: str, images: Sequence[Any] | None,
                 experiments: Sequence[str] = EXPERIMENTS, settings: EvaluationSettings = EvaluationSettings()
                 ) -> EvaluationRun:
    """Run the chosen experiments; ``images`` (labelled) are needed by ``fidelity`` only."""
    from neurflow_graph.evaluation.common import load_run_data
    from neurflow_graph.evaluation.fidelity import evaluate_fidelity
    from neurflow_graph.evaluation.k_dependence import evaluate_k_dependence
    from neurflow_graph.evaluation.optimality import evaluate_optimality
    from neurflow_graph.evaluation.weight_fidelity import evaluate_weight_fidelity

    names = check_experiments(experiments)
    out = EvaluationRun(run=run_uid, class_name=circuit.class_.name)
    t = time.perf_counter()
    data = load_run_data(circuit=circuit, model=model) if set(names) - {"fidelity"} else None
    out.seconds["setup"] = time.perf_counter() - t
    if data is not None:
        out.concepts_reproduced = data.reproduced
    s = settings
    for i, name in enumerate(names):
        rng = np.random.default_rng([s.seed, EXPERIMENTS.index(name)])
        t = time.perf_counter()
        if name == "optimality":
            res = evaluate_optimality(data=data, n_random=s.n_random, targets_per_layer=s.targets_per_layer, rng=rng)
        elif name == "fidelity":
            if images is None:
                raise InputError("the fidelity experiment needs --images (a folder with the class's images)")
            res = evaluate_fidelity(model=model, circuit=circuit, images=images, n_random=s.fidelity_random, rng=rng)
        elif name == "weight_fidelity":
            res = evaluate_weight_fidelity(data=data, cardinalities=s.cardinalities, combinations=s.combinations,
                                           targets_per_layer=s.weight_targets_per_layer, rng=rng)
        else:
            res = evaluate_k_dependence(data=data, ks=s.ks, targets_per_layer=s.k_targets_per_layer, rng=rng)
        out.results[name] = res
        out.seconds[name] = time.perf_counter() - t
    return out
