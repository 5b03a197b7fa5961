"""Online (stepwise) EM: partial_fit over batches and fit(algorithm='online')."""

import warnings

import dask.array as da
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

from conftest import make_blobs
from daskem import GaussianMixture
from daskem.persistence import load_model, save_model


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
    assert g.n_iter_ == 2  # the batch fit counts as the first update
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


def _full_covariances(gm):
    d = gm.means_.shape[1]
    cov = np.asarray(gm.covariances_)
    return {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (gm.n_components, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in cov]),
    }[gm.covariance_type]()


def _blended_fit(gm, X, step):
    """The reference: the M-step of (1 - step) * (the statistics that give back gm's
    parameters) + step * (X's normalised statistics under them), from the formulas."""
    covs = _full_covariances(gm)
    log_p = np.column_stack([
        np.log(w) + multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(gm.weights_, gm.means_, covs, strict=True)
    ])
    resp = np.exp(log_p - logsumexp(log_p, axis=1, keepdims=True))
    reg = gm.reg_covar
    eye = np.eye(X.shape[1])
    # normalised statistics: N_k, sum r x, sum r x x^T (of the model, then of the batch)
    n_model = gm.weights_
    s1_model = gm.weights_[:, None] * gm.means_
    s2_model = gm.weights_[:, None, None] * (covs - reg * eye + np.einsum("ki,kj->kij", gm.means_, gm.means_))
    n_batch = resp.mean(axis=0)
    s1_batch = resp.T @ X / len(X)
    s2_batch = np.einsum("ik,ij,il->kjl", resp, X, X) / len(X)
    n = (1 - step) * n_model + step * n_batch
    s1 = (1 - step) * s1_model + step * s1_batch
    s2 = (1 - step) * s2_model + step * s2_batch
    means = s1 / n[:, None]
    scatter = s2 - n[:, None, None] * np.einsum("ki,kj->kij", means, means)
    covariances = {
        "full": lambda: scatter / n[:, None, None] + reg * eye,
        "tied": lambda: scatter.sum(axis=0) / n.sum() + reg * eye,
        "diag": lambda: np.stack([np.diag(c) for c in scatter]) / n[:, None] + reg,
        "spherical": lambda: np.trace(scatter, axis1=1, axis2=2) / (n * X.shape[1]) + reg,
    }[gm.covariance_type]()
    return n / n.sum(), means, covariances


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_partial_fit_after_a_batch_fit_blends_the_batch_into_the_fitted_statistics(covariance_type):
    X = make_blobs(3000, seed=2)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0, max_iter=5).fit(X[:2000])
    batch = X[2000:] * 1.1 + 0.3  # data the fit has not seen, so that the blend moves it
    step = (1 + gm.learning_offset) ** -gm.learning_decay
    weights, means, covariances = _blended_fit(gm, batch, step)
    gm.partial_fit(batch)
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-9)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-9, atol=1e-12)


def test_an_online_warm_start_from_a_batch_fit_continues_its_parameters():
    X = make_blobs(3000, seed=2)
    gm = GaussianMixture(3, random_state=0, max_iter=5, warm_start=True).fit(X[:2000])
    batch = X[2000:] * 1.1 + 0.3
    weights, means, covariances = _blended_fit(gm, batch, (1 + gm.learning_offset) ** -gm.learning_decay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.set_params(algorithm="online", max_iter=1).fit(batch)  # one batch, one update
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-9)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-9)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", ["EII", "VII", "EEI", "VVI", "EEE", "VVV", "EVI", "VEE"])
def test_the_running_statistics_of_fitted_parameters_give_them_back(model):
    from daskem._engine import continued_state, family_of, fitted_parameters

    X = make_blobs(900, seed=3)
    gm = GaussianMixture(3, covariance_type=model, random_state=0, max_iter=20).fit(X)
    family = family_of(gm)
    params = fitted_parameters(gm, family)
    state = continued_state(family, params, X.mean(axis=0), gm.lower_bound_)
    again, _ = family.update(state.stats, state.layout, params, state.shift, X.dtype)
    np.testing.assert_allclose(again.weights, params.weights, rtol=1e-12)
    np.testing.assert_allclose(again.means, params.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(again.covariances, params.covariances, rtol=1e-7, atol=1e-12)


def test_a_saved_online_model_continues_where_it_stopped(tmp_path):
    X = make_blobs(6000, seed=4)
    gm = GaussianMixture(3, random_state=0)
    for start in range(0, 4000, 1000):
        gm.partial_fit(X[start : start + 1000])
    save_model(gm, tmp_path / "online.npz")
    loaded = load_model(tmp_path / "online.npz")
    gm.partial_fit(X[4000:])
    loaded.partial_fit(X[4000:])
    assert loaded.n_iter_ == gm.n_iter_ == 5
    np.testing.assert_array_equal(loaded.means_, gm.means_)
    np.testing.assert_array_equal(loaded.covariances_, gm.covariances_)
    np.testing.assert_array_equal(loaded.weights_, gm.weights_)


def test_a_saved_batch_model_continues_like_the_fitted_one(tmp_path):
    X = make_blobs(6000, seed=4)
    gm = GaussianMixture(3, random_state=0).fit(X[:4000])
    save_model(gm, tmp_path / "batch.npz")
    loaded = load_model(tmp_path / "batch.npz")
    gm.partial_fit(X[4000:])
    loaded.partial_fit(X[4000:])
    np.testing.assert_array_equal(loaded.means_, gm.means_)
    np.testing.assert_array_equal(loaded.covariances_, gm.covariances_)


def test_a_batch_fit_after_an_online_one_drops_its_running_statistics(tmp_path):
    X = make_blobs(3000, seed=4)
    gm = GaussianMixture(3, random_state=0).partial_fit(X[:1000]).fit(X)
    fresh = GaussianMixture(3, random_state=0).fit(X)
    gm.partial_fit(X[:1000])
    fresh.partial_fit(X[:1000])
    assert gm.n_iter_ == fresh.n_iter_ == 2
    np.testing.assert_array_equal(gm.means_, fresh.means_)


def test_an_online_fit_skips_batches_of_no_weight(data):
    X, _ = data
    weights = np.ones(24000)
    weights[6000:12000] = weights[18000:24000] = 0.0  # the second and the fourth batch
    kept = np.concatenate([X[:6000], X[12000:18000]])
    settings = dict(algorithm="online", batch_size=6000, max_iter=3, tol=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(3, **settings).fit(
            da.from_array(X[:24000], chunks=6000), sample_weight=da.from_array(weights, chunks=6000))
        reference = GaussianMixture(3, **settings).fit(
            da.from_array(kept, chunks=6000), sample_weight=da.from_array(np.ones(12000), chunks=6000))
    # the shifts differ (the data's means), so the sums round differently
    np.testing.assert_allclose(weighted.means_, reference.means_, rtol=1e-10)
    np.testing.assert_allclose(weighted.covariances_, reference.covariances_, rtol=1e-10)
    np.testing.assert_allclose(weighted.lower_bounds_, reference.lower_bounds_, rtol=1e-10)


def test_partial_fit_of_a_batch_of_no_weight_is_one_clear_error_that_changes_nothing(data):
    X, _ = data
    g = GaussianMixture(3, random_state=0).partial_fit(X[:3000])
    means, n_iter = g.means_.copy(), g.n_iter_
    with pytest.raises(ValueError, match="sample_weight sums to zero"):
        g.partial_fit(X[3000:3100], sample_weight=np.zeros(100))
    np.testing.assert_array_equal(g.means_, means)
    assert g.n_iter_ == n_iter


def test_partial_fit_under_marginalize_takes_a_batch_missing_a_whole_column(data):
    X, _ = data
    g = GaussianMixture(3, missing="marginalize", random_state=0).partial_fit(X[:3000])
    batch = X[3000:4000].copy()
    batch[:, 1] = np.nan
    g.partial_fit(batch)
    assert g.n_iter_ == 2
    assert np.all(np.isfinite(g.means_)) and np.all(np.isfinite(g.covariances_))


def test_partial_fit_after_changing_the_covariance_type_is_one_clear_error(data):
    X, _ = data
    g = GaussianMixture(3, random_state=0).partial_fit(X[:3000])
    means = g.means_.copy()
    g.set_params(covariance_type="diag")
    with pytest.raises(ValueError, match="partial_fit continues the fitted model, which does not match"):
        g.partial_fit(X[3000:6000])
    np.testing.assert_array_equal(g.means_, means)


@pytest.mark.parametrize("missing", ["drop", "marginalize"])
def test_an_online_fit_initialises_from_a_batch_with_rows_it_uses(data, missing):
    # every row of the first batch has a hole under 'drop', or no observed value under
    # 'marginalize': whichever batch a seed visits first, the fit starts from one it can use
    X, _ = data
    X = X[:24000].copy()
    if missing == "drop":
        X[:6000, 0] = np.nan
    else:
        X[:6000] = np.nan
    for seed in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            g = GaussianMixture(3, missing=missing, algorithm="online", batch_size=6000, max_iter=3,
                                tol=0, random_state=seed).fit(da.from_array(X, chunks=6000))
        np.testing.assert_allclose(np.sort(g.means_[:, 0]), [-4, 0, 5], atol=0.15)
