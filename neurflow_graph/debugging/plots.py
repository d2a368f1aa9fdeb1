"""PNG figures of a :class:`~neurflow_graph.debugging.debug.DebugResult` (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _name(g: Any) -> str:
    concept = (g.concept or "?").split(":", 1)[-1]
    return f"{g.gid}: {concept}"


def plot_debug(result: Any, out_dir: Path) -> dict[str, Path]:
    """Write metric.png (Fig. 9 left), masking.png, heatmaps.png and top_drop.png; return their paths."""
    from neurflow_graph.datasets.images import load_rgb

    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    groups = result.groups
    names = [_name(g) for g in groups]

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups)), 3.5))
    if result.false_positives:
        ax.boxplot([g.metric for g in groups], showfliers=True)
        ax.set_xticks(range(1, len(groups) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("M (highest over crops)")
    ax.set_title(f"{result.class_name}: metric M of {result.layer} groups on {len(result.false_positives)} false positives")
    fig.tight_layout()
    paths["metric"] = out_dir / "metric.png"
    fig.savefig(paths["metric"], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(groups)), 3.5))
    x = np.arange(len(groups))
    for ax, attr, label in ((axes[0], "delta_prob", "change of class probability"),
                            (axes[1], "returned_rate", "false positives returned to true class")):
        vals = [getattr(g, attr) for g in groups]
        ax.bar(x - 0.2, vals, 0.4, label="group masked", color="tab:red")
        rnd = [getattr(g, f"random_{attr}") for g in groups]
        if all(r is not None for r in rnd):
            ax.bar(x + 0.2, [r.mean for r in rnd], 0.4, label="random sets (mean, 99% interval)", color="tab:gray",
                   yerr=np.array([[r.mean - r.low for r in rnd], [r.high - r.mean for r in rnd]]), capsize=3)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(label)
        ax.axhline(0, color="black", lw=0.5)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths["masking"] = out_dir / "masking.png"
    fig.savefig(paths["masking"], dpi=100)
    plt.close(fig)

    shown = result.heatmaps.get("images", [])
    if shown:
        fig, axes = plt.subplots(len(shown), len(groups) + 1, figsize=(1.6 * (len(groups) + 1), 1.7 * len(shown)),
                                 squeeze=False)
        for r, path in enumerate(shown):
            img = np.asarray(load_rgb(path))
            axes[r, 0].imshow(img)
            axes[r, 0].set_title(Path(path).parent.name, fontsize=7)
            for c, g in enumerate(groups, 1):
                heat = result.heatmaps["maps"][g.gid][r]
                axes[r, c].imshow(img)
                axes[r, c].imshow(np.where(heat >= g.threshold, heat, np.nan), cmap="autumn", alpha=0.55, vmin=0)
                if r == 0:
                    axes[r, c].set_title(names[c - 1], fontsize=7)
        for ax in axes.flat:
            ax.axis("off")
        fig.tight_layout()
        paths["heatmaps"] = out_dir / "heatmaps.png"
        fig.savefig(paths["heatmaps"], dpi=100)
        plt.close(fig)

    n = max(len(g.top_drop) for g in groups)
    fig, axes = plt.subplots(len(groups), n, figsize=(1.4 * n, 1.5 * len(groups)), squeeze=False)
    for r, g in enumerate(groups):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(g.top_drop):
                ax.imshow(np.asarray(load_rgb(g.top_drop[c]["path"])))
                ax.set_title(f"{Path(g.top_drop[c]['path']).parent.name} -{g.top_drop[c]['drop']:.2f}", fontsize=6)
        axes[r, 0].text(-0.1, 0.5, names[r], transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    paths["top_drop"] = out_dir / "top_drop.png"
    fig.savefig(paths["top_drop"], dpi=100)
    plt.close(fig)
    return paths
