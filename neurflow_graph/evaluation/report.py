"""Evaluation results as JSON files, PNG plots and annotations on the Run (source ``evaluation:<name>``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

FORMAT = "neurflow-evaluation"
VERSION = 1


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def result_json(run: Any, name: str) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "experiment": name, "run": run.run, "class": run.class_name,
            "seconds": round(run.seconds.get(name, float("nan")), 3),
            "concepts_reproduced": run.concepts_reproduced, "result": asdict(run.results[name])}


def summary(name: str, res: Any) -> dict[str, Any]:
    """The few numbers of an experiment that go on the Run's annotation."""
    if name == "optimality":
        return {"share_beating_random": res.share_beating_random, "n_targets": res.n_targets, "n_random": res.n_random,
                "layers": {l.layer: {"mean_difference": l.mean_difference, "ci99": list(l.ci99),
                                     "random_better": l.random_better} for l in res.layers}}
    if name == "fidelity":
        return {"base_accuracy": res.base_accuracy, "n_images": res.n_images,
                "mask_below_random_everywhere": res.mask_below_random_everywhere,
                "points": [{"layer": p.layer, "scope": p.scope, "operation": p.operation, "core": p.core,
                            "random_mean": p.random_mean} for p in res.points]}
    if name == "weight_fidelity":
        return {"correlations": {str(c.cardinality): {"pearson": c.pearson, "spearman": c.spearman}
                                 for c in res.correlations},
                "stored_score_max_rel_error": res.stored_score_max_rel_error}
    return {"overlap": {str(k): v for k, v in res.overlap.items()}, "baseline": res.baseline,
            "n_targets": res.n_targets, "baseline_matches_run": res.baseline_matches_run}


def sentence(name: str, res: Any) -> str:
    if name == "optimality":
        parts = ", ".join(f"{l.layer} {l.mean_difference:+.3f} [{l.ci99[0]:+.3f}, {l.ci99[1]:+.3f}] "
                          f"(random better in {l.random_better:.1%})" for l in res.layers)
        return (f"optimality: core sets beat the random sets' mean for {res.share_beating_random:.0%} of "
                f"{res.n_targets} targets; L(random) - L(core), mean [99% CI]: {parts}")
    if name == "fidelity":
        m = [p for p in res.points if p.operation == "mask" and p.scope == "layer"]
        r = [p for p in res.points if p.operation == "retain" and p.scope == "layer"]
        return (f"fidelity ({res.n_images} images, accuracy {res.base_accuracy:.0%}): relative accuracy masking core vs "
                f"random: " + ", ".join(f"{p.layer} {p.core:.2f} vs {p.random_mean:.2f}" for p in m)
                + "; retaining only core vs random: " + ", ".join(f"{p.layer} {p.core:.2f} vs {p.random_mean:.2f}" for p in r))
    if name == "weight_fidelity":
        return ("weight fidelity: correlation of Σ|T| with the concept change, per cardinality: "
                + ", ".join(f"{c.cardinality}: {c.pearson:+.2f} (Spearman {c.spearman:+.2f})" for c in res.correlations)
                + f"; recomputed T vs stored scores, max relative error {res.stored_score_max_rel_error:.1e}")
    return (f"dependence on k: core-set overlap with k={res.baseline}: "
            + ", ".join(f"k={k} {v:.2f}" for k, v in res.overlap.items())
            + f" ({res.n_targets} targets; recomputed k={res.baseline} equals the run's cores for "
              f"{res.baseline_matches_run:.0%})")


def plot(name: str, res: Any, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if name == "optimality":
        x = range(len(res.layers))
        ax.bar(x, [l.mean_difference for l in res.layers], color="tab:blue", label="L(random) - L(core), 99% CI",
               yerr=[[l.mean_difference - l.ci99[0] for l in res.layers], [l.ci99[1] - l.mean_difference for l in res.layers]],
               capsize=4)
        ax.bar(x, [l.random_better for l in res.layers], color="tab:pink", alpha=0.8, width=0.4,
               label="share of cases a random set does better")
        ax.set_xticks(list(x), [l.layer for l in res.layers])
        ax.set_title("optimality of core concept neurons (Fig. 4)")
    elif name == "fidelity":
        for op, scope, style in (("mask", "layer", "-"), ("retain", "layer", "--"), ("mask", "down_to", ":"),
                                 ("retain", "down_to", "-.")):
            pts = [p for p in res.points if p.operation == op and p.scope == scope]
            if not pts:
                continue
            xs = [p.layer for p in pts]
            ax.plot(xs, [p.core for p in pts], style, color="tab:red", marker="o", label=f"CC {op} ({scope})")
            ax.plot(xs, [p.random_mean for p in pts], style, color="tab:gray", marker="s", label=f"random {op} ({scope})")
        ax.set_ylabel("accuracy / unmasked accuracy")
        ax.set_title("fidelity of core concept neurons (Fig. 5)")
    elif name == "weight_fidelity":
        ax.plot([c.cardinality for c in res.correlations], [c.pearson for c in res.correlations], marker="o", label="Pearson")
        ax.plot([c.cardinality for c in res.correlations], [c.spearman for c in res.correlations], marker="s", label="Spearman")
        ax.set_xlabel("cardinality of the random combination")
        ax.set_ylabel("correlation of Σ|T| with concept change")
        ax.set_title("fidelity of the IG scores (Fig. 6)")
    else:
        ks = sorted(res.overlap)
        ax.bar([str(k) for k in ks], [res.overlap[k] for k in ks], color="tab:green")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("k")
        ax.set_ylabel(f"core-set overlap with k={res.baseline}")
        ax.set_title("dependence on k (app. D.7)")
    ax.legend(fontsize=7) if name in ("optimality", "fidelity", "weight_fidelity") else None
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(run: Any, out_dir: Path) -> dict[str, dict[str, Path]]:
    """``<name>.json`` and ``<name>.png`` per experiment in ``out_dir``."""
    from neurflow_graph.fileio import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, res in run.results.items():
        doc = result_json(run, name)
        j = out_dir / f"{name}.json"
        atomic_write(j, lambda f, doc=doc: f.write(json.dumps(doc, indent=1)), mode="w")
        files[name] = {"json": j, "png": plot(name, res, out_dir / f"{name}.png")}
    return files


def evaluation_annotations(run: Any) -> list[Any]:
    from neurflow_graph.annotations import make_annotation

    return [make_annotation(target=run.run, target_label="Run", key=f"evaluation.{name}", value=summary(name, res),
                            source=f"evaluation:{name}", meta={"seconds": round(run.seconds.get(name, 0.0), 3)})
            for name, res in run.results.items()]
