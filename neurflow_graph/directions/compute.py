"""``compute_directions``: PCA of every site of the chosen layers, completeness measures 1 and 2,
and exemplar patches per direction, for a loaded model and an image list.

Passes over the images (batches of ``(B, 3, S, S)``, no_grad):

1. one probe forward finds each layer's sites (:mod:`.sites`);
2. PCA: hooks capture each layer's base tensor; the sampled positions (:mod:`.sampling`) of every
   image become rows ``(n, C)`` that stream into one :class:`.pca.ActivationPCA` per site
   (post-ReLU rows = ``relu`` of the pre rows);
3. exemplars: every position of every image is projected onto the first ``exemplar_directions``
   PCs; per direction the ``n_exemplars`` images with the highest projection are kept (their best
   position each, so one image appears once per direction);
4. ablation (completeness 2) on ``eval_images`` images (a seeded subset), :mod:`.ablation`.

The images are read here (the orchestrator); the modules it calls do no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np
import torch

from neurflow_graph.datasets.images import ImageRecord, load_rgb
from neurflow_graph.directions import ablation as abl
from neurflow_graph.directions import completeness, sampling
from neurflow_graph.directions.pca import DEFAULT_MAX_COVARIANCE_BYTES, ActivationPCA
from neurflow_graph.directions.result import DirectionsResult, Exemplar, SiteResult
from neurflow_graph.directions.sites import LayerSites, capture, find_sites, site_tensor
from neurflow_graph.errors import InputError
from neurflow_graph.models.registry import LoadedModel

DEFAULT_SAMPLES = 100_000
DEFAULT_EVAL_IMAGES = 128
DEFAULT_ABLATION_POINTS = 9


def model_identity(model: LoadedModel) -> str:
    from neurflow_graph.identity import model_uid_for

    return model_uid_for(model.spec.name, model.weights_sha256)


def compute_directions(*, model: LoadedModel, images: Sequence[ImageRecord], layers: Sequence[str],
                       samples: int = DEFAULT_SAMPLES, sites: Sequence[str] | None = None, seed: int = 0,
                       batch_size: int = 64, eval_images: int = DEFAULT_EVAL_IMAGES, n_exemplars: int = 8,
                       exemplar_directions: int = 16, ablation_points: int = DEFAULT_ABLATION_POINTS,
                       max_covariance_bytes: int = DEFAULT_MAX_COVARIANCE_BYTES,
                       progress: Callable[[str], None] | None = None) -> DirectionsResult:
    """Principal directions of ``layers`` (named_modules paths) on ``images``; see the module doc.

    ``sites``: None (every site a layer has) or a subset of ``pre``/``post``; a layer without that
    site is an InputError. ``eval_images=0`` skips completeness 2."""
    if samples < 2:
        raise InputError(f"--samples must be at least 2, got {samples}")
    if not images:
        raise InputError("no images")
    if not layers:
        raise InputError("no layers given; pass --layers L1,L2 (named_modules() paths)")
    say = progress or (lambda _m: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    module = model.module
    images = list(images)
    sizes: dict[int, tuple[int, int]] = {}

    def batch(ids: Sequence[int]) -> torch.Tensor:
        ims = []
        for g in ids:
            im = load_rgb(images[g].path)
            sizes[g] = im.size
            ims.append(model.preprocess(im))
        return torch.stack(ims).to(model.device)

    # 1. sites
    t = time.perf_counter()
    x0 = batch([0])
    found = find_sites(module, layers, x0)
    chosen = _choose_sites(found, sites)
    timings["sites"] = time.perf_counter() - t

    # 2. PCA
    t = time.perf_counter()
    points = {layer: found[layer].capture for layer in layers}
    estimators = {(layer, s): ActivationPCA(max_covariance_bytes=max_covariance_bytes)
                  for layer in layers for s in chosen[layer]}
    spatial: dict[str, list[int]] = {}
    n_seen = {layer: 0 for layer in layers}
    order = list(range(len(images)))
    with torch.no_grad(), capture(module, points) as got:
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            module(batch(ids))
            for layer in layers:
                base = got[layer].pop()
                spatial.setdefault(layer, list(base.shape[2:]))
                rows = _sample_rows(base, ids, len(images), samples, seed)
                n_seen[layer] += rows.shape[0]
                for s in chosen[layer]:
                    r = rows if s == found[layer].base else site_tensor(torch.from_numpy(rows), found[layer].base, s).numpy()
                    estimators[(layer, s)].partial_fit(r)
            say(f"PCA: {min(start + batch_size, len(order))}/{len(order)} images")
    timings["pca"] = time.perf_counter() - t

    results: list[SiteResult] = []
    for layer in layers:
        ls = found[layer]
        for s in chosen[layer]:
            est = estimators[(layer, s)]
            pca_curve = completeness.cumulative_share(est.explained_variance_, est.total_variance_)
            neuron_curve = completeness.cumulative_share(est.feature_variance_, est.total_variance_)
            point = ls.points.get(s)
            results.append(SiteResult(
                layer=layer, site=s, rule=ls.rule, relu=ls.relu, own=(s == ls.own),
                hook_module=point.module if point else None, hook_where=point.where if point else None,
                dim=est.n_features_in_, n_samples=est.n_samples_seen_, spatial=spatial[layer], solver=est.solver_,
                explained_variance=est.explained_variance_.tolist(),
                explained_variance_ratio=est.explained_variance_ratio_.tolist(),
                feature_variance=est.feature_variance_.tolist(), pca_curve=pca_curve.tolist(),
                neuron_curve=neuron_curve.tolist(),
                counts={"pca": completeness.counts(pca_curve), "neurons": completeness.counts(neuron_curve)},
                components=est.components_, mean=est.mean_))

    # 3. exemplars
    t = time.perf_counter()
    if n_exemplars > 0:
        _exemplars(module, images, batch, sizes, found, results, points, batch_size, n_exemplars,
                   exemplar_directions, x0, model.spec.input_size)
        say("exemplars done")
    timings["exemplars"] = time.perf_counter() - t

    # 4. ablation
    t = time.perf_counter()
    if eval_images > 0:
        rng = np.random.default_rng([seed, 7])
        pick = np.sort(rng.permutation(len(images))[:eval_images]).tolist()
        x_eval = torch.cat([batch(pick[i:i + batch_size]) for i in range(0, len(pick), batch_size)])
        labels = _labels(model, [images[g] for g in pick])
        logit = model.spec.layers[0] if model.spec.layers else None   # None: whole-model forwards only
        points_out = [r.hook_module for r in results if r.hook_where == "output"]
        traced = _trace(module, points_out, logit) if logit is not None else None
        for r in results:
            if r.hook_module is None:
                continue
            runner = _runner(module, traced, logit or "", r, x_eval, batch_size)
            r.ablation = abl.ablation_curves(runner=runner, components=r.components,
                                             feature_variance=np.asarray(r.feature_variance), labels=labels,
                                             ks=abl.ablation_ks(r.dim, ablation_points))
            say(f"ablation: {r.layer} {r.site} ({r.ablation.runner})")
    timings["ablation"] = time.perf_counter() - t

    return DirectionsResult(
        model=model.spec.name, model_uid=model_identity(model), weights_sha256=model.weights_sha256,
        weights_source=model.weights_source, n_images=len(images), samples=samples, seed=seed, sites=results,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - t_start, timings=timings)


# ---- private -------------------------------------------------------------------------------

def _choose_sites(found: dict[str, LayerSites], sites: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    out = {}
    for layer, ls in found.items():
        if sites is None:
            out[layer] = ls.sites
            continue
        missing = [s for s in sites if s not in ls.sites]
        if missing:
            why = {4: "no ReLU is next to it", 2: "its ReLU's input is not carried by any module"}.get(ls.rule, "")
            raise InputError(f"layer {layer!r} has no {missing[0]!r} site ({why}; its sites: {', '.join(ls.sites)}); "
                             "leave --site out to analyse every site a layer has")
        out[layer] = tuple(s for s in ls.sites if s in sites)
    return out


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C, P); (B, C) -> (B, C, 1)."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def _sample_rows(base: torch.Tensor, ids: Sequence[int], n_images: int, samples: int, seed: int) -> np.ndarray:
    flat = _flat(base).double().cpu().numpy()
    n_pos = flat.shape[2]
    quota = sampling.quotas(n_images=n_images, n_positions=n_pos, samples=samples)
    parts = [flat[b][:, sampling.positions(image=g, n_positions=n_pos, quota=int(quota[g]), seed=seed)].T
             for b, g in enumerate(ids)]
    return np.concatenate(parts) if parts else np.zeros((0, flat.shape[1]))


def _receptive_box(module: torch.nn.Module, point, x0: torch.Tensor) -> tuple[float, float]:
    """Width/height (input pixels) of the input region that moves the map's centre position: the
    extent of the input gradient of the sum of its channels there (1 x 1 maps: the whole input)."""
    named = dict(module.named_modules())
    keep: list[torch.Tensor] = []
    m = named[point.module]
    h = (m.register_forward_hook(lambda _m, _i, o: keep.append(o)) if point.where == "output"
         else m.register_forward_pre_hook(lambda _m, i: keep.append(i[0])))
    x = x0.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            module(x)
            if keep[0].dim() < 4 or keep[0].shape[2] * keep[0].shape[3] == 1:
                return float(x.shape[3]), float(x.shape[2])
            hh, ww = keep[0].shape[2], keep[0].shape[3]
            keep[0][0, :, hh // 2, ww // 2].sum().backward()
    finally:
        h.remove()
    g = x.grad[0].abs().sum(0)
    rows = torch.nonzero(g.sum(1) > 0).flatten()
    cols = torch.nonzero(g.sum(0) > 0).flatten()
    if rows.numel() == 0:
        return float(x.shape[3]) / keep[0].shape[3], float(x.shape[2]) / keep[0].shape[2]
    return float(cols.max() - cols.min() + 1), float(rows.max() - rows.min() + 1)


def _exemplars(module, images, batch, sizes, found, results, points, batch_size, n_exemplars, n_dirs, x0,
               input_size) -> None:
    per_layer: dict[str, list[SiteResult]] = {}
    for r in results:
        per_layer.setdefault(r.layer, []).append(r)
    rf = {layer: _receptive_box(module, points[layer], x0) for layer in per_layer}
    best: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}   # key -> (scores (n, m), image, pos)
    tensors = {r.key: (torch.from_numpy(r.components[:n_dirs]), torch.from_numpy(r.mean)) for r in results}
    with torch.no_grad(), capture(module, points) as got:
        for start in range(0, len(images), batch_size):
            ids = list(range(start, min(start + batch_size, len(images))))
            module(batch(ids))
            for layer, rs in per_layer.items():
                base = _flat(got[layer].pop()).double()
                for r in rs:
                    a = site_tensor(base, found[layer].base, r.site)
                    comps, mean = tensors[r.key]
                    score = torch.einsum("kc,bcp->bkp", comps, a - mean[None, :, None])   # (B, m, P)
                    top, pos = score.max(dim=2)                                           # (B, m)
                    s_all = top.numpy()
                    p_all = pos.numpy()
                    g_all = np.repeat(np.asarray(ids)[:, None], s_all.shape[1], axis=1)
                    if r.key in best:
                        s0, g0, p0 = best[r.key]
                        s_all, g_all, p_all = (np.concatenate([s0, s_all]), np.concatenate([g0, g_all]),
                                               np.concatenate([p0, p_all]))
                    keep_rows = np.argsort(-s_all, axis=0, kind="stable")[:n_exemplars]           # (n, m)
                    cols = np.arange(s_all.shape[1])[None, :]
                    best[r.key] = (s_all[keep_rows, cols], g_all[keep_rows, cols], p_all[keep_rows, cols])
    for r in results:
        if r.key not in best:
            continue
        s, g, p = best[r.key]
        h, w = (r.spatial + [1, 1])[:2] if r.spatial else (1, 1)
        rw, rh = rf[r.layer]
        out: dict[int, list[Exemplar]] = {}
        for d in range(s.shape[1]):
            items = []
            for i in range(s.shape[0]):
                gi, pi = int(g[i, d]), int(p[i, d])
                W, H = sizes.get(gi, (input_size or 1, input_size or 1))
                S = input_size or W
                yy, xx = divmod(pi, w) if len(r.spatial) >= 2 else (0, 0)
                cx, cy = (xx + 0.5) * S / w, (yy + 0.5) * S / h
                sx, sy = W / S, H / S
                box = [max(0, int(np.floor((cx - rw / 2) * sx))), max(0, int(np.floor((cy - rh / 2) * sy))),
                       min(W, int(np.ceil((cx + rw / 2) * sx))), min(H, int(np.ceil((cy + rh / 2) * sy)))]
                items.append(Exemplar(image_sha256=images[gi].sha256, image_path=str(images[gi].path), box=box,
                                      score=float(s[i, d])))
            out[d] = items
        r.exemplars = out


def _labels(model: LoadedModel, records: Sequence[ImageRecord]) -> np.ndarray | None:
    """Class index of each record's ImageFolder label among the model's class names; -1 unknown;
    None when no record has a known label (completeness 2 then reports agreement only)."""
    names = model.spec.class_names
    if not names:
        return None
    index = {n: i for i, n in enumerate(names)}
    labels = np.asarray([index.get(r.label, -1) if r.label is not None else -1 for r in records])
    return labels if (labels >= 0).any() else None


def _trace(module: torch.nn.Module, points: Sequence[str], logit_layer: str):
    """One torch.fx trace locating every hook point and the logit layer; None when untraceable."""
    from neurflow_graph.extraction.slicing import trace_layers

    names = list(dict.fromkeys([*points, logit_layer]))
    try:
        return trace_layers(module=module, layers=names)
    except Exception:  # untraceable model (data-dependent control flow, ...): full forwards instead
        return None


def _runner(module: torch.nn.Module, traced, logit_layer: str, r: SiteResult, x_eval: torch.Tensor,
            batch_size: int):
    from neurflow_graph.directions.sites import HookPoint

    point = HookPoint(r.hook_module, r.hook_where)
    hooked = abl.HookedRunner(model=module, x=x_eval, point=point, batch_size=batch_size)
    if traced is None or point.where != "output" or point.module == logit_layer:
        return hooked
    try:
        from neurflow_graph.extraction.slicing import layer_slice

        suffix = layer_slice(traced=traced, lower=point.module, upper=logit_layer)
    except Exception:  # untraceable model or a site the rest depends on otherwise: full forwards
        return hooked
    with torch.no_grad(), capture(module, {"a": point}) as got:
        full = []
        for i in range(0, len(x_eval), batch_size):
            full.append(module(x_eval[i:i + batch_size]))
        acts = torch.cat(got["a"])
    full_logits = torch.cat(full)
    runner = abl.SuffixRunner(suffix=suffix, acts=acts, batch_size=max(batch_size, 256))
    if not torch.allclose(runner.logits(None), full_logits, rtol=1e-4, atol=1e-4):
        return hooked   # the logit layer's output is not the model's output
    return runner
