"""Figures of a :class:`DirectionsResult` (matplotlib, Agg): one PNG per layer and measure.

``completeness1-<layer>.png``: cumulative explained variance vs k for PCs and neurons of every
site (dotted lines at 80% and 99%). ``completeness2-<layer>.png``: accuracy (or agreement with
the unablated prediction) vs number of ablated basis vectors, PCs and neurons, descending and
ascending, one panel per site.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from neurflow_graph.directions.result import DirectionsResult
from neurflow_graph.fileio import atomic_write


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def plot_result(result: DirectionsResult, out_dir: str | Path) -> list[Path]:
    """Write the figures into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    layers = list(dict.fromkeys(s.layer for s in result.sites))
    colors = {"pre": "tab:blue", "post": "tab:orange", "out": "tab:green"}
    for layer in layers:
        sites = [s for s in result.sites if s.layer == layer]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for s in sites:
            k = np.arange(1, len(s.pca_curve) + 1)
            ax.plot(k, s.pca_curve, color=colors.get(s.site), label=f"PCA {s.site}")
            ax.plot(np.arange(1, len(s.neuron_curve) + 1), s.neuron_curve, color=colors.get(s.site), ls="--",
                    label=f"neurons {s.site}")
        for t in (0.8, 0.99):
            ax.axhline(t, color="gray", lw=0.6, ls=":")
        ax.set_xlabel("k (top-k basis vectors by variance)")
        ax.set_ylabel("cumulative share of variance")
        ax.set_title(f"{result.model} {layer}: completeness 1")
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out / f"completeness1-{_safe(layer)}.png"))
        plt.close(fig)

        with_abl = [s for s in sites if s.ablation is not None]
        if not with_abl:
            continue
        fig, axes = plt.subplots(1, len(with_abl), figsize=(5 * len(with_abl), 3.8), squeeze=False)
        for ax, s in zip(axes[0], with_abl):
            a = s.ablation
            metric, name = (a.accuracy, "accuracy") if a.accuracy else (a.agreement, "agreement with unablated")
            for key, ys in metric.items():
                kind, order = key.split("/")
                ax.plot(a.ks, ys, color="tab:red" if kind == "pca" else "tab:gray",
                        ls="-" if order == "descending" else "--", marker=".", label=key)
            ax.set_xlabel("number of ablated basis vectors")
            ax.set_ylabel(name)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{layer} {s.site}: completeness 2 ({a.n_images} images)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / f"completeness2-{_safe(layer)}.png"))
        plt.close(fig)
    return paths
