"""Completeness measure 2 (Dey et al. 2025): network function as basis vectors are ablated.

For ``k`` in a grid, the ``k`` highest-variance (``order="descending"``) or lowest-variance
(``"ascending"``) basis vectors of a site are removed and the model's predictions on an
evaluation set are compared with the labels (accuracy) and with the unablated predictions
(agreement). Principal components are removed by projecting the activations onto the orthogonal
complement of their span (:func:`neurflow_graph.interventions.projection.project_out`); neurons by
zeroing their channels (:func:`neurflow_graph.interventions.masking.mask_neurons`).

Two runners give the same logits: :class:`HookedRunner` runs the whole model under those context
managers; :class:`SuffixRunner` caches the site's activations once and runs only the traced rest
of the network (``extraction.slicing``), which is what makes the curves cheap. A test checks
that they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from neurflow_graph.directions.sites import HookPoint
from neurflow_graph.errors import InputError
from neurflow_graph.interventions.masking import mask_neurons
from neurflow_graph.interventions.projection import orthonormal_rows, project_out, project_tensor

ORDERS: tuple[str, ...] = ("descending", "ascending")
BASES: tuple[str, ...] = ("pca", "neurons")


def ablation_ks(dim: int, max_points: int = 13) -> list[int]:
    """``k`` values 0..dim: all of them when few, else a linear grid plus 1, 2, 4 (dense where the
    top components matter most)."""
    if dim + 1 <= max_points:
        return list(range(dim + 1))
    grid = set(np.rint(np.linspace(0, dim, max_points - 3)).astype(int).tolist()) | {1, 2, 4}
    return sorted(k for k in grid if 0 <= k <= dim)


@dataclass(frozen=True)
class Ablation:
    """What to remove at one site: PC rows ``basis`` ``(k, C)`` or neuron ``channels``."""

    kind: str                                  # "pca" | "neurons"
    basis: np.ndarray | None = None
    channels: tuple[int, ...] = ()
    orthonormal: bool = False                  # basis rows are already orthonormal (PCs): no QR needed


def ablation_for(*, kind: str, k: int, order: str, components: np.ndarray, feature_variance: np.ndarray) -> Ablation:
    """The ``k`` vectors removed first in ``order``. PCs: rows of ``components`` (descending
    variance); neurons: channels sorted by ``feature_variance``."""
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}")
    if kind == "pca":
        rows = components[:k] if order == "descending" else components[::-1][:k]
        return Ablation("pca", basis=np.asarray(rows, dtype=np.float64), orthonormal=True)
    if kind == "neurons":
        idx = np.argsort(-np.asarray(feature_variance), kind="stable")
        if order == "ascending":
            idx = idx[::-1]
        return Ablation("neurons", channels=tuple(int(c) for c in idx[:k]))
    raise InputError(f"kind must be one of {', '.join(BASES)}")


class HookedRunner:
    """Logits of the whole model on ``x`` ``(N, ...)`` with the ablation applied at ``point``."""

    def __init__(self, *, model: nn.Module, x: torch.Tensor, point: HookPoint, batch_size: int = 256) -> None:
        self.model, self.x, self.point, self.batch_size = model, x, point, batch_size

    @torch.no_grad()
    def logits(self, ablation: Ablation | None) -> torch.Tensor:
        outs = []
        for start in range(0, len(self.x), self.batch_size):
            xb = self.x[start:start + self.batch_size]
            outs.append(self._forward(xb, ablation))
        return torch.cat(outs)

    def _forward(self, xb: torch.Tensor, ablation: Ablation | None) -> torch.Tensor:
        p = self.point
        if ablation is None or (ablation.kind == "pca" and len(ablation.basis) == 0) or \
                (ablation.kind == "neurons" and not ablation.channels):
            return self.model(xb)
        if ablation.kind == "neurons" and p.where == "output":
            with mask_neurons(self.model, {p.module: list(ablation.channels)}):
                return self.model(xb)
        basis = ablation.basis if ablation.kind == "pca" else _one_hot(ablation.channels, self._width(xb))
        with project_out(self.model, p.module, basis, where=p.where):
            return self.model(xb)

    def _width(self, xb: torch.Tensor) -> int:
        named = dict(self.model.named_modules())
        seen: list[int] = []
        hook = (named[self.point.module].register_forward_hook(lambda _m, _i, o: seen.append(o.shape[1]))
                if self.point.where == "output" else
                named[self.point.module].register_forward_pre_hook(lambda _m, i: seen.append(i[0].shape[1])))
        try:
            self.model(xb[:1])
        finally:
            hook.remove()
        return seen[0]


def _one_hot(channels: Sequence[int], width: int) -> np.ndarray:
    b = np.zeros((len(channels), width))
    b[np.arange(len(channels)), list(channels)] = 1.0
    return b


class SuffixRunner:
    """Logits from cached site activations ``acts`` ``(N, C, ...)`` through ``suffix`` (site -> logits)."""

    def __init__(self, *, suffix: Callable[[torch.Tensor], torch.Tensor], acts: torch.Tensor,
                 batch_size: int = 256) -> None:
        self.suffix, self.acts, self.batch_size = suffix, acts, batch_size

    @torch.no_grad()
    def logits(self, ablation: Ablation | None) -> torch.Tensor:
        q = keep = None
        if ablation is not None and ablation.kind == "pca" and len(ablation.basis):
            rows = ablation.basis if ablation.orthonormal else orthonormal_rows(ablation.basis)
            q = torch.tensor(np.array(rows, dtype=np.float64), dtype=self.acts.dtype)
        if ablation is not None and ablation.kind == "neurons" and ablation.channels:
            keep = torch.ones(self.acts.shape[1], dtype=torch.bool)
            keep[list(ablation.channels)] = False
            keep = keep.view(1, -1, *([1] * (self.acts.dim() - 2)))
        outs = []
        for start in range(0, len(self.acts), self.batch_size):
            a = self.acts[start:start + self.batch_size]
            if q is not None:
                a = project_tensor(a, q)
            if keep is not None:
                a = torch.where(keep, a, torch.zeros((), dtype=a.dtype))
            outs.append(self.suffix(a))
        return torch.cat(outs)


@dataclass
class AblationCurves:
    """Curves of one site: ``ks`` and, per ``"<basis>/<order>"``, accuracy and agreement per k."""

    ks: list[int]
    agreement: dict[str, list[float]] = field(default_factory=dict)
    accuracy: dict[str, list[float]] | None = None
    n_images: int = 0
    runner: str = ""
    skipped: dict[str, str] = field(default_factory=dict)   # curve -> why it was not computed


def ablation_curves(*, runner: HookedRunner | SuffixRunner, components: np.ndarray, feature_variance: np.ndarray,
                    labels: np.ndarray | None, ks: Sequence[int] | None = None) -> AblationCurves:
    """Accuracy (when ``labels`` ``(N,)`` given, -1 = unknown) and agreement with the unablated
    prediction for both bases and both orders. PCs ascending needs every component."""
    dim = int(np.asarray(feature_variance).shape[0])
    ks = list(ks) if ks is not None else ablation_ks(dim)
    base_pred = runner.logits(None).argmax(1).numpy()
    out = AblationCurves(ks=ks, accuracy={} if labels is not None else None, n_images=int(len(base_pred)),
                         runner=type(runner).__name__)
    known = labels >= 0 if labels is not None else None
    everything: list[np.ndarray] = []   # k = dim removes the whole space, whatever the basis and order
    for kind in BASES:
        for order in ORDERS:
            key = f"{kind}/{order}"
            if kind == "pca" and order == "ascending" and components.shape[0] < dim:
                out.skipped[key] = f"only {components.shape[0]} of {dim} components were computed"
                continue
            agree, acc = [], []
            for k in ks:
                whole = k >= dim and (kind == "neurons" or components.shape[0] >= dim)
                if k == 0:
                    pred = base_pred
                elif whole and everything:
                    pred = everything[0]
                else:
                    abl = ablation_for(kind=kind, k=min(k, components.shape[0]) if kind == "pca" else k, order=order,
                                       components=components, feature_variance=feature_variance)
                    pred = runner.logits(abl).argmax(1).numpy()
                    if whole:
                        everything.append(pred)
                agree.append(float(np.mean(pred == base_pred)))
                if labels is not None:
                    acc.append(float(np.mean(pred[known] == labels[known])) if known.any() else float("nan"))
            out.agreement[key] = agree
            if out.accuracy is not None:
                out.accuracy[key] = acc
    return out
