"""daskem's EM against scikit-learn and against closed forms."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import make_blobs
from daskem import GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
FITTED = ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"]


def shared_start(X, covariance_type, n_components=3, seed=0):
    """Starting parameters both libraries accept: one sklearn EM step from k-means."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = SklearnGaussianMixture(
            n_components, covariance_type=covariance_type, max_iter=1, random_state=seed
        ).fit(X)
    return dict(
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )


def fit_both(X_sklearn, X_daskem, covariance_type, max_iter=8, **kw):
    init = shared_start(X_sklearn, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = SklearnGaussianMixture(
            3, covariance_type=covariance_type, max_iter=max_iter, tol=0, **init
        ).fit(X_sklearn)
        ours = GaussianMixture(
            3, covariance_type=covariance_type, max_iter=max_iter, tol=0, acceleration=None, **init, **kw
        ).fit(X_daskem)
    return ref, ours


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_numpy_fit_matches_sklearn_from_identical_start(covariance_type):
    X = make_blobs()
    ref, ours = fit_both(X, X, covariance_type)
    for name in FITTED:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-9)
    assert ours.n_iter_ == ref.n_iter_ == 8


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_unevenly_chunked_dask_fit_matches_sklearn(covariance_type):
    X = make_blobs()
    Xd = da.from_array(X, chunks=((100, 37, 263, 1, 499), (1, 2)))
    ref, ours = fit_both(X, Xd, covariance_type)
    for name in FITTED:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictions_match_sklearn(covariance_type):
    X = make_blobs()
    ref, ours = fit_both(X, X, covariance_type, max_iter=3)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-9)
    np.testing.assert_allclose(ours.bic(X), ref.bic(X), rtol=1e-9)
    np.testing.assert_allclose(ours.aic(X), ref.aic(X), rtol=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_one_component_is_sample_mean_and_covariance():
    X = make_blobs()
    g = GaussianMixture(1, reg_covar=0, max_iter=1, tol=0).fit(X)
    np.testing.assert_allclose(g.weights_, [1.0])
    np.testing.assert_allclose(g.means_[0], X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(g.covariances_[0], np.cov(X.T, bias=True), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_offset_data_keeps_variances_accurate(covariance_type):
    """Mean 1e6 and spread 1: raw moments would lose every digit."""
    X = make_blobs()
    offset = 1e6
    init = shared_start(X, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = SklearnGaussianMixture(3, covariance_type=covariance_type, max_iter=5, tol=0, **init).fit(X)
        init["means_init"] = init["means_init"] + offset
        ours = GaussianMixture(3, covariance_type=covariance_type, max_iter=5, tol=0, acceleration=None,
                               **init)
        ours.fit(da.from_array(X + offset, chunks=250))
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-6)
    np.testing.assert_allclose(ours.means_ - offset, ref.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_offset_single_component_variance_is_exact(covariance_type):
    rng = np.random.RandomState(1)
    Z = rng.randn(20000, 4)
    g = GaussianMixture(1, covariance_type=covariance_type, reg_covar=0, max_iter=1, tol=0)
    g.fit(da.from_array(Z + 1e6, chunks=3000))
    cov = np.cov(Z.T, bias=True)
    expected = {
        "full": cov[None],
        "tied": cov,
        "diag": np.diag(cov)[None],
        "spherical": [np.trace(cov) / 4],
    }[covariance_type]
    np.testing.assert_allclose(g.covariances_, expected, rtol=1e-6, atol=1e-6)
