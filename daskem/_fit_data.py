"""A fit's data: validation, the fixed shift, the weights, the rows a fit uses.

:func:`prepare_data` is the one place where a fit's input becomes a
:class:`daskem._state.FitData`, for every entry point of the engine
(:mod:`daskem._engine`) and for :func:`daskem.select_model`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.utils.validation import validate_data

from ._cluster import check_workers
from ._model import MixtureFamily
from ._passes import Holes, PassTally
from ._state import FitData, FitState
from ._validation import (
    DataSummary,
    as_dask_array,
    check_sample_weight,
    is_dask_collection,
    summarise_data,
)
from .io._cache import cache_data

logger = logging.getLogger("daskem")


def set_feature_names(estimator: Any, names: np.ndarray | None) -> None:
    if names is not None:
        estimator.feature_names_in_ = names
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_


def prepare_data(
    estimator: Any, X: Any, sample_weight: Any, family: MixtureFamily, cache: bool | str
) -> FitData:
    """Validate X and the weights, find the fixed shift, apply the cache policy.

    Sets ``n_features_in_`` (and ``feature_names_in_``) on ``estimator`` as
    scikit-learn's validation does. One pass over Dask data (finiteness and
    column means), after persisting it when the cache policy says so, so
    that storage is read once.

    Returns
    -------
    FitData
    """
    check_workers()
    name = type(estimator).__name__
    allow_missing = family.missing != "raise"
    if is_dask_collection(X):
        Xd, _, names = as_dask_array(X, name, ensure_min_samples=2, allow_nan=allow_missing)
        estimator.n_features_in_ = Xd.shape[1]
        if names is not None and not all(isinstance(n, str) for n in names):
            names = None
        set_feature_names(estimator, names)
        family.check(Xd.shape[0], Xd.shape[1])
        Xd = cache_data(Xd, cache)
        weights = check_sample_weight(sample_weight, Xd)
        summary = summarise_data(Xd, weights, allow_missing, names)
    else:
        Xn = validate_data(estimator, X, dtype=[np.float64, np.float32], ensure_min_samples=2,
                           ensure_all_finite="allow-nan" if allow_missing else True)
        names = getattr(estimator, "feature_names_in_", None)
        family.check(Xn.shape[0], Xn.shape[1])
        Xd = cache_data(as_dask_array(Xn, name, allow_nan=allow_missing)[0], cache)
        weights = check_sample_weight(sample_weight, Xd)
        if allow_missing and np.isnan(Xn).any():
            summary = summarise_data(Xd, weights, True, names)
        else:  # in memory: NumPy's own mean
            total = Xd.shape[0] if weights is None else float(weights.sum().compute())
            summary = DataSummary(np.mean(Xn, axis=0, dtype=np.float64), 0, total, total,
                                  len(Xn), len(Xn))
    holes = None
    if summary.n_missing:
        holes = Holes(family.missing, summary.shift)
        # scikit-learn's n_samples >= n_components, over the rows the fit uses
        drop = family.missing == "drop"
        try:
            family.check(summary.complete_rows if drop else summary.observed_rows, Xd.shape[1])
        except ValueError as error:
            rows = "complete rows" if drop else "rows with an observed value"
            raise ValueError(f"{error} (the {rows}, under missing={family.missing!r})") from None
    return FitData(Xd, summary.shift, weights, weight_to_fit(summary, family.missing), names, holes)


def weight_to_fit(summary: DataSummary, missing: str) -> float:
    """The total weight of the rows a fit uses; an error when it is zero."""
    total_weight = summary.observed_weight
    if summary.n_missing and missing == "drop":
        total_weight = summary.complete_weight
        logger.info("missing='drop': fitting on the complete rows (weight %g); the rows with "
                    "missing values (weight %g) are left out", total_weight,
                    summary.observed_weight - total_weight)
        if total_weight <= 0:
            raise ValueError("missing='drop' leaves no complete row to fit: every row has a "
                             "missing value (try missing='marginalize').")
    if total_weight <= 0:
        raise ValueError("sample_weight sums to zero: no row carries any weight.")
    return total_weight


def new_tally(data: FitData, resume: FitState | None = None) -> PassTally:
    """A pass count for a fit of ``data``: the validation pass, plus a resumed fit's passes."""
    tally = PassTally(data.X.shape[0], 0 if resume is None else resume.n_passes)
    tally.add()
    return tally
