"""PCA of activation samples, accumulated in float64, with scikit-learn for what does not fit.

:class:`ActivationPCA` is a scikit-learn style estimator over rows ``X`` of shape ``(n, C)`` (one
row per sampled position, ``C`` channels). Solvers:

* ``"covariance"`` -- exact. Batches are merged into a float64 mean and scatter matrix with Chan
  et al.'s pairwise update (no ``sum x x^T - n mu mu^T`` cancellation); the components are the
  eigenvectors of the covariance ``scatter / (n - 1)``. Memory ``8 C^2`` bytes, whatever ``n`` is:
  the samples never need to fit in memory.
* ``"incremental"`` -- :class:`sklearn.decomposition.IncrementalPCA` (``n_components`` needed),
  for layers so wide that the ``C x C`` matrix does not fit ``max_covariance_bytes``.
* ``"randomized"`` -- :class:`sklearn.decomposition.PCA` with ``svd_solver="randomized"`` on a
  sample given to :meth:`fit` at once (top ``n_components`` only).

The eigendecomposition (``O(C^3)``: seconds at ``C = 4096``) runs once, when a fitted attribute
(``components_``, ``explained_variance_``, ``explained_variance_ratio_``) is first read after the
last :meth:`partial_fit`, not after every batch; the moments (``mean_``, ``feature_variance_``,
``total_variance_``) are current after each call.

``"auto"`` picks covariance when ``8 C^2 <= max_covariance_bytes``, else incremental. Every solver
also keeps each channel's own variance (``feature_variance_``, the "neuron" variances of
completeness measure 1). Variances use ``n - 1`` like scikit-learn. Components follow
scikit-learn's sign rule: the loading of largest magnitude of each component is positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurflow_graph.errors import InputError

SOLVERS: tuple[str, ...] = ("auto", "covariance", "incremental", "randomized")
DEFAULT_MAX_COVARIANCE_BYTES = 1 << 30


def sign_flip(components: np.ndarray) -> np.ndarray:
    """Rows flipped so that each row's largest-magnitude entry is positive (scikit-learn's rule)."""
    if components.size == 0:
        return components
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


class ActivationPCA:
    """PCA over activation rows; see the module doc.

    Parameters: ``n_components`` (None: all ``C``; required by ``"incremental"``/``"randomized"``
    when ``C`` is large, else ``min(C, 1024)``), ``solver``, ``max_covariance_bytes``,
    ``random_state`` (randomized solver).

    Attributes after fitting: ``n_features_in_``, ``n_samples_seen_``, ``solver_``, ``mean_`` (C,),
    ``components_`` (k, C), ``explained_variance_`` (k,), ``explained_variance_ratio_`` (k,),
    ``total_variance_``, ``feature_variance_`` (C,).
    """

    def __init__(self, n_components: int | None = None, *, solver: str = "auto",
                 max_covariance_bytes: int = DEFAULT_MAX_COVARIANCE_BYTES, random_state: int = 0) -> None:
        self.n_components = n_components
        self.solver = solver
        self.max_covariance_bytes = max_covariance_bytes
        self.random_state = random_state

    # ---- public ---------------------------------------------------------------------------

    def fit(self, X: Any) -> "ActivationPCA":
        """Fit on all rows of ``X`` ``(n, C)`` at once (previous state discarded)."""
        X = self._check_rows(X, first=True)
        self._reset(X.shape[1])
        if self.solver_ == "randomized":
            self._fit_randomized(X)
            return self
        for start in range(0, X.shape[0], 65536):
            self._accumulate(X[start:start + 65536])
        self._finish()
        return self

    def partial_fit(self, X: Any) -> "ActivationPCA":
        """Add the rows of ``X`` ``(n, C)`` to the fit (streaming). Returns self."""
        first = not hasattr(self, "n_features_in_")
        X = self._check_rows(X, first=first)
        if first:
            self._reset(X.shape[1])
        if self.solver_ == "randomized":
            raise InputError("the randomized solver fits one sample at once; use fit(X), or solver='covariance'")
        self._accumulate(X)
        self._finish(decompose=False)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Scores ``(n, k)``: ``(X - mean_) @ components_.T``."""
        X = np.asarray(X, dtype=np.float64)
        return (X - self.mean_) @ self.components_.T

    @property
    def components_(self) -> np.ndarray:
        return self._decomposed()[0]

    @components_.setter
    def components_(self, value: np.ndarray) -> None:
        self._components, self._stale = value, False

    @property
    def explained_variance_(self) -> np.ndarray:
        return self._decomposed()[1]

    @explained_variance_.setter
    def explained_variance_(self, value: np.ndarray) -> None:
        self._explained, self._stale = value, False

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        ev = self._decomposed()[1]
        total = self.total_variance_
        return ev / total if total > 0 else np.zeros_like(ev)

    # ---- private --------------------------------------------------------------------------

    def _decomposed(self) -> tuple[np.ndarray, np.ndarray]:
        """(components, explained variance), decomposing first when a partial_fit left them stale;
        AttributeError before any fit (so ``hasattr`` works as with scikit-learn)."""
        if getattr(self, "_stale", False):
            self._finish(decompose=True)
        if "_components" not in self.__dict__:
            raise AttributeError("this ActivationPCA is not fitted yet; call fit or partial_fit")
        return self._components, self._explained

    def _check_rows(self, X: Any, *, first: bool) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] == 0:
            raise InputError(f"PCA needs rows of shape (n, channels), got {X.shape}")
        if not first and X.shape[1] != self.n_features_in_:
            raise InputError(f"rows have {X.shape[1]} channels, the fit so far has {self.n_features_in_}")
        if not np.all(np.isfinite(X)):
            raise InputError("activation rows contain NaN or infinite values")
        return X

    def _reset(self, d: int) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.n_components is not None and not (1 <= int(self.n_components) <= d):
            raise InputError(f"n_components must be in 1..{d}, got {self.n_components}")
        solver = self.solver
        if solver == "auto":
            solver = "covariance" if 8 * d * d <= self.max_covariance_bytes else "incremental"
        self.solver_ = solver
        self.n_features_in_ = d
        self.n_samples_seen_ = 0
        self._mean = np.zeros(d)
        self._m2_diag = np.zeros(d)
        self._scatter = np.zeros((d, d)) if solver == "covariance" else None
        self._ipca = None
        self._buffer: list[np.ndarray] = []
        self.__dict__.pop("_components", None)
        self._stale = False
        if solver == "incremental":
            from sklearn.decomposition import IncrementalPCA

            self._ipca = IncrementalPCA(n_components=self._k(d))

    def _k(self, d: int) -> int:
        return int(self.n_components) if self.n_components is not None else min(d, 1024)

    def _accumulate(self, X: np.ndarray) -> None:
        m = X.shape[0]
        if m == 0:
            return
        n = self.n_samples_seen_
        mb = X.mean(axis=0)
        Xc = X - mb
        delta = mb - self._mean
        total = n + m
        self._mean = self._mean + delta * (m / total)
        self._m2_diag += np.einsum("ij,ij->j", Xc, Xc) + delta * delta * (n * m / total)
        if self._scatter is not None:
            self._scatter += Xc.T @ Xc + np.outer(delta, delta) * (n * m / total)
        if self._ipca is not None:
            self._buffer.append(X)
            rows = sum(len(b) for b in self._buffer)
            if rows >= self._ipca.n_components:
                self._ipca.partial_fit(np.concatenate(self._buffer))
                self._buffer = []
        self.n_samples_seen_ = total

    def _finish(self, decompose: bool = True) -> None:
        n = self.n_samples_seen_
        d = self.n_features_in_
        denom = max(n - 1, 1)
        self.mean_ = self._mean.copy()
        self.feature_variance_ = self._m2_diag / denom
        self.total_variance_ = float(self.feature_variance_.sum())
        if not decompose:
            self._stale = True
            return
        self._stale = False
        if self._scatter is not None:
            w, v = np.linalg.eigh(self._scatter / denom)
            order = np.argsort(w)[::-1][: self._k_or_all(d)]
            ev = np.clip(w[order], 0.0, None)
            comps = sign_flip(v[:, order].T)
        else:
            if self._ipca is None or not hasattr(self._ipca, "components_"):
                return  # not enough rows yet for the incremental solver
            comps = sign_flip(np.asarray(self._ipca.components_, dtype=np.float64))
            ev = np.asarray(self._ipca.explained_variance_, dtype=np.float64)
        self.components_ = comps
        self.explained_variance_ = ev

    def _k_or_all(self, d: int) -> int:
        return int(self.n_components) if self.n_components is not None else d

    def _fit_randomized(self, X: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        self._accumulate_moments_only(X)
        pca = PCA(n_components=self._k(X.shape[1]), svd_solver="randomized", random_state=self.random_state).fit(X)
        self.mean_ = self._mean.copy()
        self.feature_variance_ = self._m2_diag / max(X.shape[0] - 1, 1)
        self.total_variance_ = float(self.feature_variance_.sum())
        self.components_ = sign_flip(np.asarray(pca.components_, dtype=np.float64))
        self.explained_variance_ = np.asarray(pca.explained_variance_, dtype=np.float64)

    def _accumulate_moments_only(self, X: np.ndarray) -> None:
        self._mean = X.mean(axis=0)
        Xc = X - self._mean
        self._m2_diag = np.einsum("ij,ij->j", Xc, Xc)
        self.n_samples_seen_ = X.shape[0]
