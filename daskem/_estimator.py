"""What every daskem mixture estimator shares: fitting, predictions, scores, sampling, saving.

The methods hand off to the engine (:mod:`daskem._engine`) and to
:mod:`daskem._predict`; an estimator class adds its parameters, their
constraints and its own extras, and registers its model family
(:mod:`daskem._registry`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _engine, _predict

INIT_METHODS = ("auto", "coreset", "k-means||", "kmeans", "k-means++", "random", "random_from_data", "hc")

# The parameters every mixture estimator has, with scikit-learn's constraints.
MIXTURE_CONSTRAINTS: dict = {
    "n_components": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "reg_covar": [Interval(Real, 0.0, None, closed="left")],
    "max_iter": [Interval(Integral, 0, None, closed="left")],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "init_params": [StrOptions(set(INIT_METHODS))],
    "random_state": ["random_state"],
    "warm_start": ["boolean"],
    "verbose": ["verbose"],
    "verbose_interval": [Interval(Integral, 1, None, closed="left")],
    "cache": [StrOptions({"auto"}), "boolean"],
    "no_workers_timeout": [Interval(Real, 0.0, None, closed="neither"), None],
}


class MixtureEstimator(DensityMixin, BaseEstimator):
    """Base of daskem's mixture estimators (not for direct use)."""

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MixtureEstimator:
        """Estimate the model's parameters from X, one pass over the data per iteration.

        Parameters
        ----------
        X : array-like, Dask array or Dask DataFrame of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or Dask array of shape (n_samples,), optional
            Non-negative row weights. Integer weights fit like repeated rows,
            zero weights like dropped rows.

        Returns
        -------
        self
        """
        _engine.fit(self, X, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the most probable component of each row of X.

        Equal to ``fit(X).predict(X)``; lazy for Dask input.
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # ------------------------------------------------------------- predict

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of each row of X under the model.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
        """
        return _predict.apply_kernel(self, X, "score_samples")

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean per-row log-likelihood of X (weighted by ``sample_weight``)."""
        total, n = _predict.total_log_likelihood(self, X, sample_weight)
        return total / n

    def predict(self, X: Any) -> Any:
        """Most probable component of each row of X (int64 labels)."""
        return _predict.apply_kernel(self, X, "predict", dtype=np.int64)

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of each component for each row of X."""
        return _predict.apply_kernel(self, X, "predict_proba", n_columns=self.n_components)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture, grouped by component.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        return _predict.sample(self, n_samples)

    def save(self, path: str | os.PathLike[str], **metadata: Any) -> None:
        """Write the fitted model to ``path`` in daskem's safe model format.

        No pickle is used: see :func:`daskem.load`. Extra keyword arguments
        are stored as JSON metadata (for example the training data's
        fingerprint).
        """
        from .persistence import save_model

        check_is_fitted(self)
        save_model(self, path, **metadata)

