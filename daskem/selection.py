"""Model selection over a grid of component counts and covariance types.

Every candidate (and every restart) is fitted at once: each pass over the data
evaluates the requests of all candidates still running (see
:mod:`daskem._passes`), so the I/O of the whole grid is about that of its
longest fit instead of the sum of all fits. Candidates drop out of the passes
as they converge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from . import _criteria, _engine
from ._cluster import no_workers_watch
from ._fit_data import new_tally, prepare_data
from ._gaussian import COVARIANCE_NAMES
from ._mclust import MODELS as MCLUST_MODELS
from ._passes import drive
from ._predict import scores_request
from ._registry import family_of
from .gaussian_mixture import GaussianMixture

CRITERIA = ("bic", "aic", "icl")


def _scores_steps(family, parameters, data):
    """Step generator: (total log-likelihood, ICL's classification term) of a fitted model."""
    sums = yield scores_request(family, parameters, data.dtype)
    return float(sums[0]), float(sums[1])


def select_model(
    X: Any,
    n_components: Iterable[int] = range(1, 11),
    covariance_types: Iterable[str] = ("full", "tied", "diag", "spherical"),
    *,
    n_init: int = 1,
    criterion: str = "bic",
    sample_weight: Any = None,
    random_state: int | None = None,
    **params: Any,
) -> tuple[pd.DataFrame, GaussianMixture]:
    """Fit a grid of Gaussian mixtures in shared passes and pick the best.

    Parameters
    ----------
    X : array-like, Dask array or Dask DataFrame of shape (n_samples, n_features)
    n_components : iterable of int
        Component counts to try.
    covariance_types : iterable of str, or 'all'
        Covariance types to try: scikit-learn's names and mclust's (see
        :class:`GaussianMixture`); 'all' is mclust's fourteen models.
    n_init : int
        Restarts per candidate; the best lower bound is kept, as in
        :class:`GaussianMixture`.
    criterion : {'bic', 'aic', 'icl'}
        The criterion to minimise (scikit-learn's sign: lower is better;
        mclust reports BIC and ICL negated).
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
        log_likelihood (total, under the fitted parameters), bic, aic, icl,
        n_parameters,
        n_iter, converged, n_passes (the passes that candidate's fit alone
        would make), and error (the message of a failed fit, else None; its
        criteria are NaN). ``table.attrs["n_passes"]`` is the number of
        passes the whole grid made over the data.
    best : GaussianMixture
        The fitted candidate with the lowest criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError("criterion must be one of %s; got %r" % (CRITERIA, criterion))
    for name in ("weights_init", "means_init", "precisions_init", "n_components", "covariance_type"):
        if params.get(name) is not None:
            raise ValueError("select_model does not take %s: it varies over the grid" % name)
    ks = sorted({int(k) for k in n_components})
    if isinstance(covariance_types, str):
        covariance_types = MCLUST_MODELS if covariance_types == "all" else [covariance_types]
    types = list(dict.fromkeys(covariance_types))
    if not ks or not types:
        raise ValueError("n_components and covariance_types must not be empty")
    for t in types:
        if t not in COVARIANCE_NAMES:
            raise ValueError(
                "The 'covariance_type' parameter must be one of %s; got %r" % (COVARIANCE_NAMES, t)
            )
    template = GaussianMixture(
        max(ks), covariance_type=types[0], n_init=n_init, random_state=random_state, **params
    )
    template._validate_params()
    # the whole grid under one no-workers watch (see daskem._cluster.no_workers_watch)
    with no_workers_watch(template.no_workers_timeout):
        return _fit_grid(X, sample_weight, template, ks, types, criterion)


def _fit_grid(X, sample_weight, template, ks, types, criterion):
    """select_model's passes: every candidate fitted in shared passes, then scored."""
    data = prepare_data(X=X, sample_weight=sample_weight, estimator=template,
                                family=family_of(template), cache=template.cache)

    models, families, steps = [], [], []
    for t in types:
        for k in ks:
            model = clone(template).set_params(n_components=k, covariance_type=t)
            model._validate_params()
            family = family_of(model)
            family.check(data.X.shape[0], data.n_features)
            settings = _engine.FitSettings.from_params(model.get_params(deep=False))
            models.append(model)
            families.append(family)
            steps.append(_engine.fit_steps(family, settings, data, tally=new_tally(data)))
    # the grid's own cost: every pass served every candidate still running
    grid_passes = new_tally(data)
    results = drive(data.X, steps, data.sample_weight, on_error="return", tally=grid_passes,
                    holes=data.holes)
    fitted, errors = [], []
    for model, family, result in zip(models, families, results, strict=True):
        if isinstance(result, Exception):
            errors.append(str(result))
            continue
        _engine.set_fitted(model, _engine.fitted_attributes(family, result, data, model.max_iter))
        fitted.append((model, family, result.best.parameters))
        errors.append(None)
    scores = drive(
        data.X,
        [_scores_steps(f, parameters, data) for _, f, parameters in fitted],
        data.sample_weight,
        tally=grid_passes,
        holes=data.holes,
    )
    n = data.total_weight
    rows, by_model = [], {id(m): s for (m, _, _), s in zip(fitted, scores, strict=True)}
    for model, family, error in zip(models, families, errors, strict=True):
        ll, classification = by_model.get(id(model), (math.nan, math.nan))
        p = family.n_parameters(data.n_features)
        bic = _criteria.bic(ll, p, n)
        rows.append(
            {
                "n_components": model.n_components,
                "covariance_type": model.covariance_type,
                "log_likelihood": ll,
                "bic": bic,
                "aic": _criteria.aic(ll, p),
                "icl": _criteria.icl(bic, classification),
                "n_parameters": p,
                "n_iter": getattr(model, "n_iter_", 0),
                "converged": bool(getattr(model, "converged_", False)),
                "n_passes": int(getattr(model, "n_passes_", 0)),
                "error": error,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["n_passes"] = grid_passes.passes
    if table[criterion].isna().all():
        raise ValueError("Every candidate failed; first error: %s" % next(e for e in errors if e))
    best = models[int(np.nanargmin(table[criterion].to_numpy()))]
    return table, best
