"""Applying a fitted model to data: per-row outputs, totals and information criteria.

Per-row outputs (labels, probabilities, log-likelihoods) map a per-chunk
kernel of :mod:`daskem._kernels` over the rows, lazily for Dask input
(chunked like it) and eagerly for NumPy input. Each function takes a fitted
estimator and reads only its public attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _criteria
from ._cluster import check_workers
from ._engine import fitted_parameters
from ._registry import family_of
from ._validation import check_fitted_input, check_sample_weight, checked_chunk_function


def apply_kernel(
    estimator: Any,
    X: Any,
    func: Callable[[np.ndarray, dict], np.ndarray],
    n_columns: int | None = None,
    dtype: Any = np.float64,
) -> Any:
    """Run a per-chunk function of the fitted model over X (lazily for Dask).

    ``func(block, kernel_parameters)`` returns one value per row
    (``n_columns=None``) or ``n_columns`` values per row.
    """
    X = check_fitted_input(estimator, X)
    family = family_of(estimator)
    kp = family.kernel_parameters(fitted_parameters(estimator, family), X.dtype)
    if not isinstance(X, da.Array):
        return func(X, kp)
    check_workers(collections=[X])
    kp = dask.delayed(kp, pure=True, traverse=False)
    kwargs = {"drop_axis": 1} if n_columns is None else {"chunks": (X.chunks[0], (n_columns,))}
    return da.map_blocks(
        checked_chunk_function(func), X, kp, dtype=dtype,
        meta=np.empty((0,) * (1 if n_columns is None else 2), dtype=dtype), **kwargs,
    )


def total_log_likelihood(
    estimator: Any, X: Any, sample_weight: Any = None
) -> tuple[float, float]:
    """(sum of w_i log p(x_i), sum of w_i) over the rows of X, in one pass."""
    from ._kernels import chunk_score_samples

    scores = apply_kernel(estimator, X, chunk_score_samples)
    if sample_weight is None:
        total, n = scores.sum(), scores.shape[0]
    else:
        w = sample_weight
        if isinstance(scores, da.Array):
            w = check_sample_weight(w, scores[:, None])[:, 0]
        else:
            w = np.asarray(check_sample_weight(w, da.from_array(scores[:, None])))[:, 0]
        total, n = (scores * w).sum(), w.sum()
    total, n = dask.compute(total, n)
    return float(total), float(n)


def n_parameters(estimator: Any) -> int:
    """Number of free parameters of a fitted estimator's model."""
    check_is_fitted(estimator)
    return int(family_of(estimator).n_parameters(estimator.n_features_in_))


def criteria(estimator: Any, X: Any, sample_weight: Any = None) -> dict[str, float]:
    """Log-likelihood and information criteria of X under the model, in one pass.

    Returns
    -------
    dict
        ``log_likelihood`` (total, weighted with ``sample_weight``) and
        ``n_samples`` (rows, or the total weight); for models where they are
        defined (not the variational mixture), ``n_parameters``, ``bic`` and
        ``aic`` (lower is better).
    """
    total, n = total_log_likelihood(estimator, X, sample_weight)
    out = {"log_likelihood": total, "n_samples": n}
    if family_of(estimator).supports_criteria:
        p = n_parameters(estimator)
        out.update(n_parameters=p, bic=_criteria.bic(total, p, n), aic=_criteria.aic(total, p))
    return out


def sample(estimator: Any, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Draw rows from a fitted estimator's mixture, grouped by component: (X, y)."""
    check_is_fitted(estimator)
    if n_samples < 1:
        raise ValueError(
            "Invalid value for 'n_samples': %d . The sampling requires at "
            "least one sample." % (estimator.n_components)
        )
    family = family_of(estimator)
    rng = check_random_state(estimator.random_state)
    return family.sample(fitted_parameters(estimator, family), n_samples, rng)
