"""ActivationPCA against scikit-learn's full-SVD PCA on the same samples (the issue's check)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from neurflow_graph.directions.pca import ActivationPCA
from neurflow_graph.errors import InputError


def _data(n: int = 4000, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.geomspace(5, 0.01, d)[None, :]
    return rng.normal(size=(n, d)) @ mix.T + rng.normal(size=d) * 30.0   # large mean: tests the float64 merge


def _assert_same_up_to_sign(a: np.ndarray, b: np.ndarray, k: int, tol: float) -> None:
    for i in range(k):
        s = np.sign(a[i] @ b[i])
        assert s != 0
        np.testing.assert_allclose(a[i] * s, b[i], atol=tol)


def test_streaming_covariance_matches_sklearn_full_svd() -> None:
    X = _data()
    ref = PCA(svd_solver="full").fit(X)
    est = ActivationPCA()
    for lo, hi in [(0, 1), (1, 700), (700, 701), (701, 4000)]:   # uneven batches, one of a single row
        est.partial_fit(X[lo:hi])
    assert est.solver_ == "covariance" and est.n_samples_seen_ == len(X)
    np.testing.assert_allclose(est.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-5)
    np.testing.assert_allclose(est.explained_variance_, ref.explained_variance_, rtol=1e-6)
    _assert_same_up_to_sign(est.components_, ref.components_, 20, 1e-5)   # the last ones are near-degenerate
    np.testing.assert_allclose(est.mean_, X.mean(0), rtol=1e-10)
    np.testing.assert_allclose(est.feature_variance_, X.var(0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(est.transform(X[:5]), (X[:5] - X.mean(0)) @ est.components_.T, atol=1e-8)


def test_fit_equals_partial_fit_and_sign_rule() -> None:
    X = _data(n=500, d=8, seed=1)
    a = ActivationPCA().fit(X)
    b = ActivationPCA().partial_fit(X[:250]).partial_fit(X[250:])
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-9)
    rows = np.arange(a.components_.shape[0])
    assert np.all(a.components_[rows, np.abs(a.components_).argmax(1)] > 0)


def test_sklearn_solvers_for_data_that_does_not_fit() -> None:
    X = _data(n=3000, d=16, seed=2)
    ref = PCA(svd_solver="full").fit(X)
    inc = ActivationPCA(n_components=6, max_covariance_bytes=100)   # 16 x 16 floats "do not fit"
    for i in range(0, len(X), 500):
        inc.partial_fit(X[i:i + 500])
    assert inc.solver_ == "incremental"
    np.testing.assert_allclose(inc.explained_variance_ratio_[:4], ref.explained_variance_ratio_[:4], atol=1e-3)
    _assert_same_up_to_sign(inc.components_, ref.components_, 3, 1e-2)
    rnd = ActivationPCA(n_components=6, solver="randomized").fit(X)
    np.testing.assert_allclose(rnd.explained_variance_ratio_[:4], ref.explained_variance_ratio_[:4], atol=1e-3)
    with pytest.raises(InputError):
        ActivationPCA(solver="randomized").partial_fit(X)


def test_bad_rows_are_input_errors() -> None:
    with pytest.raises(InputError):
        ActivationPCA().fit(np.zeros(5))
    with pytest.raises(InputError):
        ActivationPCA().fit(np.array([[1.0, np.nan]]))
    est = ActivationPCA().partial_fit(np.ones((3, 4)))
    with pytest.raises(InputError):
        est.partial_fit(np.ones((3, 5)))


def test_streaming_decomposes_once_when_read_and_again_after_more_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """partial_fit only merges moments; the O(C^3) eigendecomposition runs when a fitted attribute is
    read, and again only if rows arrived since (so a 4096-wide layer is not decomposed per batch)."""
    X = _data(n=2000, d=12, seed=3)
    calls = []
    real = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: calls.append(a.shape) or real(a))
    est = ActivationPCA()
    for i in range(0, 1000, 50):
        est.partial_fit(X[i:i + 50])
    assert calls == []
    np.testing.assert_allclose(est.mean_, X[:1000].mean(0), rtol=1e-10)    # moments are current without it
    first = PCA(svd_solver="full").fit(X[:1000])
    np.testing.assert_allclose(est.explained_variance_ratio_, first.explained_variance_ratio_, atol=1e-6)
    _ = est.components_, est.explained_variance_
    assert calls == [(12, 12)]
    for i in range(1000, 2000, 250):
        est.partial_fit(X[i:i + 250])
    ref = PCA(svd_solver="full").fit(X)
    np.testing.assert_allclose(est.explained_variance_, ref.explained_variance_, rtol=1e-6)
    _assert_same_up_to_sign(est.components_, ref.components_, 8, 1e-5)
    assert len(calls) == 2
    with pytest.raises(AttributeError):
        ActivationPCA().components_
