"""Sites, the planted 3-dim subspace, and the whole PCA pipeline against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from directions_support import one_thread, FunctionalRelu, InplaceAfter, Planted, world_images
from sklearn.decomposition import PCA
from torch import nn

from neurflow_graph.datasets.concept_world import CLASS_NAMES
from neurflow_graph.datasets.images import list_images, load_rgb
from neurflow_graph.directions.compute import compute_directions
from neurflow_graph.directions.result import read_result, write_result
from neurflow_graph.directions.sites import HookPoint, capture, find_sites
from neurflow_graph.errors import InputError
from neurflow_graph.models.registry import LoadedModel, ModelSpec


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = world_images(tmp_path_factory.mktemp("world") / "w", per_class=2, size=32)
    return list_images(root)[0]

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _loaded(module: nn.Module) -> LoadedModel:
    spec = ModelSpec(name=type(module).__name__.lower(), layers=["fc"], input_size=32, mean=None, std=None,
                     class_names=list(CLASS_NAMES) if module.fc.out_features == len(CLASS_NAMES) else None)
    return LoadedModel(module=module.eval(), spec=spec, device=torch.device("cpu"), weights_sha256="ab" * 32)


def test_site_rules() -> None:
    x = torch.randn(2, 3, 16, 16)
    p = find_sites(Planted().eval(), ["planted", "block", "relu", "pool"], x)
    assert (p["planted"].rule, p["planted"].sites, p["planted"].points["post"]) == (3, ("pre", "post"), HookPoint("relu"))
    assert (p["block"].rule, p["block"].capture, p["block"].own) == (2, HookPoint("block.1"), "post")
    assert (p["relu"].rule, p["relu"].capture) == (1, HookPoint("planted"))
    assert (p["pool"].rule, p["pool"].sites) == (4, ("out",))
    f = find_sites(FunctionalRelu().eval(), ["conv", "unit"], x)
    assert (f["conv"].rule, f["conv"].points["post"]) == (3, None)          # functional relu: no module output
    assert (f["unit"].rule, f["unit"].capture, f["unit"].relu) == (2, HookPoint("unit.bn"), "functional relu")
    i = find_sites(InplaceAfter().eval(), ["conv", "pool"], x)
    assert (i["conv"].rule, i["conv"].points["post"], i["pool"].rule) == (3, HookPoint("act"), 4)


def test_inplace_relu_capture_is_pre_relu() -> None:
    m = InplaceAfter().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = m.conv(x)
        with capture(m, {"c": HookPoint("conv")}) as got:
            m(x)
    assert (got["c"][0] < 0).any()
    torch.testing.assert_close(got["c"][0], want)


def test_planted_subspace_three_pcs(images: list) -> None:
    model = Planted().eval()
    r = compute_directions(model=_loaded(model), images=images, layers=["planted"], samples=20_000, eval_images=0,
                           n_exemplars=2)
    pre = r.site("planted", "pre")
    assert pre.pca_curve[2] >= 0.999
    assert pre.counts["pca"]["99"] <= 3
    q, _ = np.linalg.qr(model.A.numpy())                       # orthonormal basis of the planted span
    for u in pre.components[:3]:
        assert np.linalg.norm(q.T @ u) > 1 - 1e-6              # each top PC lies in the span ...
    assert np.linalg.matrix_rank(q.T @ pre.components[:3].T, tol=1e-3) == 3   # ... and together they span it
    assert pre.neuron_curve[2] < 0.999                          # three neurons do not
    post = r.site("planted", "post")
    assert post.pca_curve[2] < pre.pca_curve[2]                 # the ReLU leaves the subspace


def test_pipeline_pcs_match_sklearn_on_the_same_samples(images: list, tmp_path: Path) -> None:
    model = Planted(seed=1).eval()
    loaded = _loaded(model)
    r = compute_directions(model=loaded, images=images, layers=["block"], samples=10**7, eval_images=0, n_exemplars=0)
    # independent sample: every position of every image (samples > positions), through a plain hook
    rows = []
    h = model.block[1].register_forward_hook(lambda _m, _i, o: rows.append(o.detach().double()))
    with torch.no_grad():
        for rec in images:
            model(loaded.preprocess(load_rgb(rec.path))[None])
    h.remove()
    pre = torch.cat(rows).permute(0, 2, 3, 1).reshape(-1, 10).numpy()
    for site, X in (("pre", pre), ("post", np.maximum(pre, 0))):
        s = r.site("block", site)
        ref = PCA(svd_solver="full").fit(X)
        assert s.n_samples == len(X)
        np.testing.assert_allclose(s.explained_variance_ratio, ref.explained_variance_ratio_, atol=1e-5)
        for a, b in zip(s.components[:8], ref.components_[:8]):
            assert abs(abs(a @ b) - 1) < 1e-5
    # sampling caps the rows and spreads them over the images; the files round-trip
    r2 = compute_directions(model=loaded, images=images, layers=["block"], samples=1000, eval_images=0, n_exemplars=1)
    assert r2.site("block", "pre").n_samples == 1000
    write_result(r2, tmp_path / "out")
    back = read_result(tmp_path / "out")
    np.testing.assert_allclose(back.site("block", "post").components, r2.site("block", "post").components)
    assert back.site("block", "pre").exemplars[0][0].box == r2.site("block", "pre").exemplars[0][0].box


def test_missing_site_is_an_input_error(images: list) -> None:
    with pytest.raises(InputError, match="no 'pre' site"):
        compute_directions(model=_loaded(Planted().eval()), images=images[:2], layers=["pool"], sites=["pre"],
                           eval_images=0)
