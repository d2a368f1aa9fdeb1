"""The plain-data result of ``directions`` and its on-disk format.

``OUT/directions.json`` (``{"format": "neurflow-directions", "version": 1, ...}``, the fields of
:class:`DirectionsResult`, one entry of ``sites`` per (layer, site)) and ``OUT/components.npz``
(``"<layer>|<site>|components"`` ``(k, C)`` and ``"<layer>|<site>|mean"`` ``(C,)``, float64).
Writing is atomic per file; the JSON is written last, so its presence marks a complete output.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurflow_graph.directions.ablation import AblationCurves
from neurflow_graph.errors import RunFormatError
from neurflow_graph.fileio import atomic_write

FORMAT = "neurflow-directions"
VERSION = 1
RESULT_FILE = "directions.json"
COMPONENTS_FILE = "components.npz"


@dataclass
class Exemplar:
    """A patch projecting strongly onto a direction: its image and box (image pixels, x1/y1 exclusive)."""

    image_sha256: str
    image_path: str
    box: list[int]
    score: float                     # (a - mean) . u at the patch's position


@dataclass
class SiteResult:
    """PCA of one site of one layer. Arrays are float64; curves are cumulative shares (see
    ``completeness``); ``counts`` = ``{"pca": {"80": k, "99": k}, "neurons": {...}}``."""

    layer: str
    site: str
    rule: int
    relu: str | None
    own: bool                        # this site is the layer's own output (the circuit's neuron space)
    hook_module: str | None
    hook_where: str | None
    dim: int
    n_samples: int
    spatial: list[int]
    solver: str
    explained_variance: list[float]
    explained_variance_ratio: list[float]
    feature_variance: list[float]
    pca_curve: list[float]
    neuron_curve: list[float]
    counts: dict[str, dict[str, int | None]]
    exemplars: dict[int, list[Exemplar]] = field(default_factory=dict)
    ablation: AblationCurves | None = None
    components: np.ndarray | None = field(default=None, repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.layer}|{self.site}"


@dataclass
class DirectionsResult:
    model: str
    model_uid: str
    weights_sha256: str | None
    weights_source: str
    n_images: int
    samples: int
    seed: int
    sites: list[SiteResult]
    created_at: str
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def site(self, layer: str, site: str) -> SiteResult:
        for s in self.sites:
            if s.layer == layer and s.site == site:
                return s
        raise KeyError((layer, site))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s in d["sites"]:
            s.pop("components", None)
            s.pop("mean", None)
            s["exemplars"] = {str(k): v for k, v in s["exemplars"].items()}
        return d


def write_result(result: DirectionsResult, out_dir: str | Path) -> Path:
    """Write ``components.npz`` then ``directions.json`` into ``out_dir``; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for s in result.sites:
        if s.components is not None:
            arrays[f"{s.key}|components"] = s.components
            arrays[f"{s.key}|mean"] = s.mean
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(out / COMPONENTS_FILE, lambda f: f.write(buf.getvalue()))
    text = json.dumps(result.to_dict(), indent=1, allow_nan=True).encode()
    atomic_write(out / RESULT_FILE, lambda f: f.write(text))
    return out / RESULT_FILE


def read_result(out_dir: str | Path) -> DirectionsResult:
    """Read what :func:`write_result` wrote (components included); RunFormatError when unusable."""
    out = Path(out_dir)
    try:
        d = json.loads((out / RESULT_FILE).read_text())
        arrays = dict(np.load(out / COMPONENTS_FILE))
    except (OSError, ValueError) as e:
        raise RunFormatError(f"{out} is not a complete directions output ({e}); run `neurflow-graph directions` "
                             "again") from e
    if d.get("format") != FORMAT or d.get("version") != VERSION:
        raise RunFormatError(f"{out / RESULT_FILE} is not a {FORMAT} v{VERSION} file")
    sites = []
    for s in d.pop("sites"):
        s["exemplars"] = {int(k): [Exemplar(**e) for e in v] for k, v in s["exemplars"].items()}
        s["ablation"] = AblationCurves(**s["ablation"]) if s.get("ablation") else None
        site = SiteResult(**s)
        site.components = arrays.get(f"{site.key}|components")
        site.mean = arrays.get(f"{site.key}|mean")
        sites.append(site)
    return DirectionsResult(sites=sites, **d)
