"""Applying a fitted model to data: per-row outputs, totals and information criteria.

Per-row outputs (labels, probabilities, log-likelihoods) map a per-chunk
kernel of :mod:`daskem._kernels` over the rows, lazily for Dask input
(chunked like it) and eagerly for NumPy input. Each function takes a fitted
estimator and reads only its public attributes.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _criteria
from ._cluster import check_workers, no_workers_watch
from ._engine import fitted_parameters
from ._passes import PassRequest
from ._registry import family_of
from ._validation import check_fitted_input, check_sample_weight, checked_chunk_function


def apply_kernel(
    estimator: Any,
    X: Any,
    kind: str,
    n_columns: int | None = None,
    dtype: Any = np.float64,
) -> Any:
    """Run a per-chunk prediction of the fitted model over X (lazily for Dask).

    ``kind`` names the model family's per-chunk function (see
    ``prediction_function``: 'score_samples', 'predict', 'predict_proba',
    'scores', 'impute'); it returns one value per row (``n_columns=None``)
    or ``n_columns`` values per row (``n_columns='same'``: as many as X has,
    in X's dtype). Rows with missing values (NaN) are taken where the model
    takes them: under ``missing='marginalize'``, and always by 'impute'.
    """
    family = family_of(estimator)
    holes = kind == "impute" or family.missing == "marginalize"
    X = check_fitted_input(estimator, X, allow_nan=holes)
    func = family.prediction_function(kind, holes)
    kp = family.kernel_parameters(fitted_parameters(estimator, family), X.dtype, holes)
    if n_columns == "same":
        n_columns, dtype = X.shape[1], X.dtype
    if not isinstance(X, da.Array):
        return func(X, kp)
    check_workers(collections=[X])
    kp = dask.delayed(kp, pure=True, traverse=False)
    kwargs = {"drop_axis": 1} if n_columns is None else {"chunks": (X.chunks[0], (n_columns,))}
    return da.map_blocks(
        checked_chunk_function(func, allow_nan=holes), X, kp, dtype=dtype,
        meta=np.empty((0,) * (1 if n_columns is None else 2), dtype=dtype), **kwargs,
    )


def totals(estimator: Any, X: Any, sample_weight: Any = None) -> tuple[float, float, float]:
    """Sums over the rows of X, in one pass: (w log p(x), w, w log max_k p(k | x)).

    The last is the classification term of ICL. Rows with every value
    missing count in none of them (their log-likelihood is that of nothing
    observed, 0).
    """
    scores = apply_kernel(estimator, X, "scores", n_columns=3)
    if sample_weight is None:
        sums = scores.sum(axis=0)
    else:
        w = sample_weight
        if isinstance(scores, da.Array):
            w = check_sample_weight(w, scores[:, :1])[:, 0]
        else:
            w = np.asarray(check_sample_weight(w, da.from_array(scores[:, :1])))[:, 0]
        sums = (scores * w[:, None]).sum(axis=0)
    with no_workers_watch(getattr(estimator, "no_workers_timeout", None)):
        (sums,) = dask.compute(sums)
    if not sums[2] > 0:
        # a mean over nothing (and BIC's log n) is undefined
        if sample_weight is not None:
            raise ValueError("sample_weight sums to zero over the rows with an observed value: "
                             "no row carries any weight.")
        raise ValueError("X has no row with an observed value: every value is missing (NaN).")
    return float(sums[0]), float(sums[2]), float(sums[1])


def _scores_func(block, ctx, row_start, sample_weight):
    scores = ctx["func"](block, ctx["kp"])
    return scores.sum(axis=0) if sample_weight is None else sample_weight @ scores


def scores_request(family: Any, parameters: Any, dtype: Any) -> PassRequest:
    """A pass request for the sums of :func:`totals` under ``parameters``: (log-likelihood,
    ICL's classification term, weight of the rows with an observed value)."""
    holes = family.missing == "marginalize"
    ctx = {"kp": family.kernel_parameters(parameters, dtype, holes),
           "func": family.prediction_function("scores", holes)}
    return PassRequest(_scores_func, ctx, 3, holes=True)


def total_log_likelihood(estimator: Any, X: Any, sample_weight: Any = None) -> tuple[float, float]:
    """(sum of w_i log p(x_i), sum of w_i) over the rows of X, in one pass."""
    return totals(estimator, X, sample_weight)[:2]


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
        defined (not the variational mixture), ``n_parameters``, ``bic``,
        ``aic`` and ``icl`` (lower is better).
    """
    total, n, classification = totals(estimator, X, sample_weight)
    out = {"log_likelihood": total, "n_samples": n}
    if family_of(estimator).supports_criteria:
        p = n_parameters(estimator)
        bic = _criteria.bic(total, p, n)
        out.update(n_parameters=p, bic=bic, aic=_criteria.aic(total, p),
                   icl=_criteria.icl(bic, classification))
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
