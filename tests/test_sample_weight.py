"""Sample weights: integer weights are repeated rows, zero weights are dropped rows."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import make_blobs
from daskem import GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_"]
START = dict(
    weights_init=[0.3, 0.3, 0.4],
    means_init=[[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [-4.0, 6.0, 0.0]],
)


PRECISIONS = {
    "full": np.stack([np.eye(3)] * 3),
    "tied": np.eye(3),
    "diag": np.ones((3, 3)),
    "spherical": np.ones(3),
}


def fit(X, covariance_type, sample_weight=None, **kw):
    """A fit from fixed starting parameters, so that only the data decide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            3, covariance_type=covariance_type, max_iter=6, tol=0,
            precisions_init=PRECISIONS[covariance_type], **START, **kw
        ).fit(X, sample_weight=sample_weight)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_fit_like_repeated_rows(covariance_type):
    X = make_blobs(600)
    w = np.random.RandomState(0).randint(0, 4, size=len(X))
    weighted = fit(da.from_array(X, chunks=150), covariance_type, da.from_array(w, chunks=200))
    repeated = fit(np.repeat(X, w, axis=0), covariance_type)
    for name in PARAMS:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-11)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_zero_weights_fit_like_dropped_rows(covariance_type):
    X = make_blobs(600)
    w = np.ones(len(X))
    w[::3] = 0
    weighted = fit(X, covariance_type, w)
    dropped = fit(X[w > 0], covariance_type)
    for name in PARAMS:
        np.testing.assert_allclose(getattr(weighted, name), getattr(dropped, name), rtol=1e-9, err_msg=name)


def test_weighted_score_bic_and_aic_match_repeated_rows():
    X = make_blobs(300)
    w = np.random.RandomState(1).randint(1, 3, size=len(X))
    g = fit(X, "full")
    Xr = np.repeat(X, w, axis=0)
    np.testing.assert_allclose(g.score(X, sample_weight=w), g.score(Xr), rtol=1e-12)
    np.testing.assert_allclose(g.bic(X, sample_weight=w), g.bic(Xr), rtol=1e-12)
    np.testing.assert_allclose(g.aic(da.from_array(X, chunks=70), sample_weight=w), g.aic(Xr), rtol=1e-12)


@pytest.mark.parametrize("method", ["score", "bic", "aic", "icl"])
def test_scoring_rows_of_zero_total_weight_is_one_clear_error(method):
    X = make_blobs(90)
    g = fit(X, "full")
    with pytest.raises(ValueError, match="sample_weight sums to zero"):
        getattr(g, method)(X, sample_weight=np.zeros(len(X)))


def test_data_driven_initialisation_never_picks_zero_weight_rows():
    X = make_blobs(900)
    w = np.ones(len(X))
    far = np.abs(X[:, 0]) > 3  # the two outer blobs carry no weight
    w[far] = 0
    g = GaussianMixture(2, random_state=0, max_iter=0).fit(da.from_array(X, chunks=200), sample_weight=w)
    assert np.all(np.abs(g.means_[:, 0]) < 3)


@pytest.mark.parametrize(
    "w, match",
    [
        (-np.ones(300), "Negative values in data passed to `sample_weight`: 300"),
        (np.r_[np.ones(299), np.nan], "1 NaN or infinite"),
        (np.r_[np.ones(299), np.inf], "1 NaN or infinite"),
        (np.ones(299), r"sample_weight.shape == \(299,\), expected \(300,\)"),
        (np.zeros(300), "sums to zero"),
    ],
)
@pytest.mark.parametrize("as_dask", [False, True])
def test_bad_weights_are_rejected(w, match, as_dask):
    X = make_blobs(300)
    if as_dask:
        w = da.from_array(w, chunks=100)
    g = GaussianMixture(2)
    with pytest.raises(ValueError, match=match):
        g.fit(X, sample_weight=w)
    assert not hasattr(g, "means_")
