"""Draw a class circuit layer by layer with matplotlib: logit on top, neuron groups as their exemplar
mosaic with their name, FEEDS edges with width by ``|weight|`` and colour by sign.

:func:`figure` builds the picture from plain data (a pruned :class:`CircuitGraph`, its layout and
the mosaics already loaded); :func:`save_drawing` writes it as PNG or SVG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurflow_graph.errors import InputError
from neurflow_graph.viz.graph import CircuitGraph, NodeKey

POSITIVE = "#1f6fb4"  # excitatory edge (W > 0)
NEGATIVE = "#d1342b"  # inhibitory edge (W < 0)
NODE_SIZE = 0.62      # mosaic side in layout units (groups in a layer are >= 1 apart)
FORMATS = (".png", ".svg")


def edge_width(weight: float, max_abs: float) -> float:
    """Line width in points: 0.5 for the weakest, 6 for the strongest |W| of the drawing."""
    return 0.5 + 5.5 * (abs(weight) / max_abs if max_abs > 0 else 0.0)


def figure(graph: CircuitGraph, positions: Mapping[NodeKey, tuple[float, float]],
           mosaics: Mapping[NodeKey, np.ndarray | None], *, title: str | None = None) -> Any:
    """A matplotlib Figure of ``graph`` at ``positions`` (x, depth); ``mosaics[key]`` is an
    ``(H, W, 3)`` uint8 array or None (drawn as a grey box)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    xs = [p[0] for p in positions.values()] or [0.0]
    depths = sorted({n.depth for n in graph.nodes.values()}) or [0]
    width = max(xs) - min(xs) + 1.6
    height = (max(depths) - min(depths)) * 1.35 + 1.8
    fig = Figure(figsize=(max(6.0, 1.45 * width + 1.6), max(4.0, 1.45 * height)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(min(xs) - 0.8 - 1.0, max(xs) + 0.8)
    ax.set_ylim(max(depths) * 1.35 + 0.75, min(depths) - 0.85)  # depth 0 (logit) on top

    def xy(key: NodeKey) -> tuple[float, float]:
        x, d = positions[key]
        return x, d * 1.35

    max_abs = max((abs(e.weight) for e in graph.edges), default=0.0)
    for e in sorted(graph.edges, key=lambda e: abs(e.weight)):  # strongest drawn last, on top
        (x0, y0), (x1, y1) = xy(e.child), xy(e.parent)
        ax.plot([x0, x1], [y0 - NODE_SIZE / 2, y1 + NODE_SIZE / 2 + 0.2], color=POSITIVE if e.weight > 0 else NEGATIVE,
                lw=edge_width(e.weight, max_abs), alpha=0.75, solid_capstyle="round", zorder=1)
    half = NODE_SIZE / 2
    for key, node in graph.nodes.items():
        x, y = xy(key)
        img = mosaics.get(key)
        if img is not None:
            ax.imshow(img, extent=(x - half, x + half, y + half, y - half), zorder=2, interpolation="bilinear")
        else:
            ax.add_patch(_box(x, y, half))
            ax.text(x, y, "no\nexemplars", ha="center", va="center", fontsize=7, color="#555", zorder=3)
        name = node.caption(top_depth=min(depths))
        name = name if len(name) <= 22 else name[:21] + "…"
        ax.text(x, y + half + 0.05, f"{node.gid}: {name}", ha="center", va="top", fontsize=8, zorder=3)
    for layer in graph.layers:
        d = next(n.depth for n in graph.nodes.values() if n.layer == layer) if any(
            n.layer == layer for n in graph.nodes.values()) else None
        if d is not None:
            ax.text(min(xs) - 0.8 - 0.95, d * 1.35, layer, ha="left", va="center", fontsize=9, weight="bold")
    ax.set_axis_off()
    ax.set_aspect("equal")
    handles = [Line2D([], [], color=POSITIVE, lw=3, label="W > 0 (excites)"),
               Line2D([], [], color=NEGATIVE, lw=3, label="W < 0 (inhibits)")]
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    ax.set_title(title or f"{graph.class_name} — {graph.model} — run {graph.run}", fontsize=11)
    fig.tight_layout()
    return fig


def _box(x: float, y: float, half: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - half, y - half), 2 * half, 2 * half, facecolor="#e6e6e6", edgecolor="#999", zorder=2)


def load_mosaics(graph: CircuitGraph) -> dict[NodeKey, np.ndarray | None]:
    """Each node's mosaic as an array, read from the path the store recorded (None when absent/unreadable)."""
    import hashlib

    from PIL import Image

    out: dict[NodeKey, np.ndarray | None] = {}
    for key, node in graph.nodes.items():
        out[key] = None
        if not node.mosaic:
            continue
        try:
            data = Path(node.mosaic).read_bytes()
        except OSError:
            continue
        if node.mosaic_sha256 and hashlib.sha256(data).hexdigest() != node.mosaic_sha256:
            continue
        import io

        with Image.open(io.BytesIO(data)) as im:
            out[key] = np.asarray(im.convert("RGB"))
    return out


def save_drawing(fig: Any, out: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``out`` (.png at 100 dpi or .svg), atomically."""
    from neurflow_graph.fileio import atomic_write

    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in FORMATS:
        raise InputError(f"--out must end in .png or .svg, got {out.name!r}")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist; create it or choose another --out")
    atomic_write(out, lambda f: fig.savefig(f, format=fmt[1:]))
    return out


def draw_run(*, store: Any, run: str, out: str | os.PathLike[str], min_weight: float = 0.0,
             top: int | None = None) -> tuple[Path, CircuitGraph]:
    """Draw ``run`` (uid or unique prefix) from ``store`` to ``out``; return the path and the drawn graph."""
    from neurflow_graph.viz.fetch import circuit_graph, resolve_run
    from neurflow_graph.viz.graph import prune
    from neurflow_graph.viz.layout import layered_layout

    if min_weight < 0:
        raise InputError(f"--min-weight must be >= 0, got {min_weight}")
    if top is not None and top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    graph = prune(circuit_graph(store, resolve_run(store, run)), min_weight=min_weight, top=top)
    fig = figure(graph, layered_layout(graph), load_mosaics(graph))
    return save_drawing(fig, out), graph
