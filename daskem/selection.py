"""Model selection over a grid of component counts and covariance types.

Every candidate (and every restart) is fitted at once: each pass over the data
evaluates the requests of all candidates still running (see
:mod:`daskem._passes`), so the I/O of the whole grid is about that of its
longest fit instead of the sum of all fits. Candidates drop out of the passes
as they converge.
"""

import math
import warnings

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from . import _covariance
from ._em import MixtureParameters, statistics_request
from ._passes import drive
from .gaussian_mixture import GaussianMixture

CRITERIA = ("bic", "aic")


def _log_likelihood_steps(model, data):
    """Step generator: total log-likelihood of a fitted model (one pass)."""
    parameters = MixtureParameters(*model._get_parameters())
    request, layout = statistics_request(parameters, model.covariance_type, data.shift, data.X.dtype)
    stats = yield request
    return layout.unpack(stats)[3]


def select_model(
    X,
    n_components=range(1, 11),
    covariance_types=("full", "tied", "diag", "spherical"),
    *,
    n_init=1,
    criterion="bic",
    sample_weight=None,
    random_state=None,
    **params,
):
    """Fit a grid of Gaussian mixtures in shared passes and pick the best.

    Parameters
    ----------
    X : array-like, Dask array or Dask DataFrame of shape (n_samples, n_features)
    n_components : iterable of int
        Component counts to try.
    covariance_types : iterable of str
        Covariance types to try ('full', 'tied', 'diag', 'spherical').
    n_init : int
        Restarts per candidate; the best lower bound is kept, as in
        :class:`GaussianMixture`.
    criterion : {'bic', 'aic'}
        The criterion to minimise.
    sample_weight : array-like or Dask array of shape (n_samples,), optional
    random_state : int or None
        Seed of every candidate: candidate (K, type) is the model that
        ``GaussianMixture(K, covariance_type=type, random_state=random_state,
        n_init=n_init, **params).fit(X)`` would give.
    **params
        Other :class:`GaussianMixture` parameters (tol, max_iter, reg_covar,
        init_params, cache, ...). Initial weights, means and precisions are
        not accepted: their shapes depend on the candidate.

    Returns
    -------
    table : pandas.DataFrame
        One row per candidate: n_components, covariance_type,
        log_likelihood (total, under the fitted parameters), bic, aic,
        n_iter, converged, and error (the message of a failed fit, else
        None; its criteria are NaN).
    best : GaussianMixture
        The fitted candidate with the lowest criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError("criterion must be one of %s; got %r" % (CRITERIA, criterion))
    for name in ("weights_init", "means_init", "precisions_init", "n_components", "covariance_type"):
        if params.get(name) is not None:
            raise ValueError("select_model does not take %s: it varies over the grid" % name)
    ks = sorted({int(k) for k in n_components})
    types = list(dict.fromkeys(covariance_types))
    if not ks or not types:
        raise ValueError("n_components and covariance_types must not be empty")
    for t in types:
        if t not in _covariance.COVARIANCE_TYPES:
            raise ValueError(
                "The 'covariance_type' parameter must be one of %s; got %r"
                % (_covariance.COVARIANCE_TYPES, t)
            )
    template = GaussianMixture(
        max(ks), covariance_type=types[0], n_init=n_init, random_state=random_state, **params
    )
    template._validate_params()
    data = template._prepare_fit_data(X, sample_weight)

    models = []
    for t in types:
        for k in ks:
            model = clone(template).set_params(n_components=k, covariance_type=t)
            model._validate_params()
            model._check_initial_parameters(data.X.shape[1])
            model.n_features_in_ = template.n_features_in_
            if hasattr(template, "feature_names_in_"):
                model.feature_names_in_ = template.feature_names_in_
            models.append(model)
    results = drive(
        data.X, [m._fit_steps(data) for m in models], data.sample_weight, on_error="return"
    )
    fitted, errors = [], []
    for model, result in zip(models, results):
        if isinstance(result, Exception):
            errors.append(str(result))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model._set_fit_result(result)
        fitted.append(model)
        errors.append(None)
    totals = drive(data.X, [_log_likelihood_steps(m, data) for m in fitted], data.sample_weight)
    n = data.total_weight
    rows, by_model = [], dict(zip(map(id, fitted), totals))
    for model, error in zip(models, errors):
        ll = by_model.get(id(model), math.nan) if error is None else math.nan
        p = _covariance.n_parameters(model.covariance_type, model.n_components, data.X.shape[1])
        rows.append(
            {
                "n_components": model.n_components,
                "covariance_type": model.covariance_type,
                "log_likelihood": ll,
                "bic": -2 * ll + p * math.log(n),
                "aic": -2 * ll + 2 * p,
                "n_iter": getattr(model, "n_iter_", 0),
                "converged": bool(getattr(model, "converged_", False)),
                "error": error,
            }
        )
    table = pd.DataFrame(rows)
    if table[criterion].isna().all():
        raise ValueError("Every candidate failed; first error: %s" % next(e for e in errors if e))
    best = models[int(np.nanargmin(table[criterion].to_numpy()))]
    return table, best
