"""Online (stepwise) EM: partial_fit over batches and fit(algorithm='online')."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import make_blobs
from daskem import GaussianMixture


@pytest.fixture(scope="module")
def data():
    X = make_blobs(60000, seed=1)
    batch = GaussianMixture(3, random_state=0, tol=1e-8, max_iter=300).fit(X)
    return X, batch.score(X)


def test_partial_fit_over_the_batches_of_a_dataset_converges(data):
    X, batch_score = data
    g = GaussianMixture(3, random_state=0)
    for start in range(0, len(X), 5000):
        g.partial_fit(X[start : start + 5000])
    assert g.n_iter_ == 12
    assert abs(g.score(X) - batch_score) < 1e-3 * abs(batch_score)
    np.testing.assert_allclose(np.sort(g.means_[:, 0]), [-4, 0, 5], atol=0.1)


def test_online_fit_is_within_one_percent_of_batch_em_after_two_passes(data):
    X, batch_score = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(3, algorithm="online", max_iter=2, tol=0, random_state=0)
        g.fit(da.from_array(X, chunks=4000))
    assert g.n_iter_ == 2 and len(g.lower_bounds_) == 2
    assert abs(g.score(X) - batch_score) < 0.01 * abs(batch_score)


def test_online_fit_is_reproducible_with_random_state(data):
    X, _ = data
    Xd = da.from_array(X, chunks=6000)
    fits = [
        GaussianMixture(3, algorithm="online", batch_size=12000, max_iter=3, random_state=7).fit(Xd)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(fits[0].means_, fits[1].means_)
    np.testing.assert_array_equal(fits[0].covariances_, fits[1].covariances_)


def test_fit_keyword_shortcuts_select_the_online_algorithm(data):
    X, _ = data
    g = GaussianMixture(3, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g.fit(da.from_array(X, chunks=6000), algorithm="online", batch_size=20000)
    assert g.get_params()["algorithm"] == "online" and g.batch_size == 20000
    assert g.n_iter_ == 1


def test_partial_fit_continues_a_batch_fit(data):
    X, batch_score = data
    g = GaussianMixture(3, random_state=0).fit(X[:20000])
    g.partial_fit(X[20000:40000])
    assert g.n_iter_ == 1
    assert abs(g.score(X) - batch_score) < 1e-3 * abs(batch_score)


def test_partial_fit_rejects_a_batch_with_other_features(data):
    X, _ = data
    g = GaussianMixture(3, random_state=0).partial_fit(X[:3000])
    means = g.means_.copy()
    with pytest.raises(ValueError, match="X has 2 features"):
        g.partial_fit(X[:100, :2])
    np.testing.assert_array_equal(g.means_, means)


def test_learning_decay_outside_its_range_is_rejected():
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(2, learning_decay=0.4).partial_fit(make_blobs(90))
