"""The per-chunk kernels against a naive NumPy E-step and M-step written from the formulas."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskem._covariance import covariances_from_cholesky, precision_cholesky
from daskem._kernels import (
    StatisticsLayout,
    accumulate_statistics,
    chunk_predict,
    chunk_predict_proba,
    chunk_score_samples,
    chunk_statistics,
    kernel_parameters,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
K, D = 3, 4


def _model(covariance_type, seed=0):
    """Weights, means and covariances of a random mixture of the given type."""
    rng = np.random.RandomState(seed)
    weights = rng.dirichlet(np.ones(K))
    means = rng.randn(K, D) * 3
    if covariance_type == "full":
        A = rng.randn(K, D, D)
        cov = A @ np.swapaxes(A, 1, 2) / D + np.eye(D)
    elif covariance_type == "tied":
        A = rng.randn(D, D)
        cov = A @ A.T / D + np.eye(D)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, size=(K, D))
    else:
        cov = rng.uniform(0.5, 2.0, size=K)
    return weights, means, cov


def _dense_covariances(covariance_type, cov):
    return {
        "full": lambda: cov,
        "tied": lambda: np.repeat(cov[None], K, axis=0),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(D) for c in cov]),
    }[covariance_type]()


def _naive_log_prob(X, weights, means, dense):
    """log pi_k + log N(x_i | mu_k, Sigma_k) with scipy, (n, K)."""
    return np.column_stack([
        np.log(weights[k]) + multivariate_normal(means[k], dense[k]).logpdf(X) for k in range(K)
    ])


def _kernel_parameters(covariance_type, weights, means, cov, shift, dtype=np.float64):
    chol = precision_cholesky(cov, covariance_type)
    return kernel_parameters(weights, means, chol, covariance_type, shift, dtype)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.RandomState(1)
    # more rows than one row block, so that the block loop is exercised too
    return rng.randn(20_000, D) * 2 + 1.5


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunk_statistics_equal_the_naive_e_step_and_sums(rows, covariance_type):
    weights, means, cov = _model(covariance_type)
    shift = rows.mean(axis=0)
    kp = _kernel_parameters(covariance_type, weights, means, cov, shift)
    layout = StatisticsLayout(covariance_type, K, D)
    n, s1, s2, loglik, n_rows = layout.unpack(chunk_statistics(rows, kp, layout)[0])

    log_prob = _naive_log_prob(rows, weights, means, _dense_covariances(covariance_type, cov))
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None])
    z = rows - shift
    np.testing.assert_allclose(loglik, log_norm.sum(), rtol=1e-10)
    assert n_rows == len(rows)
    np.testing.assert_allclose(n, resp.sum(axis=0), rtol=1e-9)
    np.testing.assert_allclose(s1, resp.T @ z, rtol=1e-9, atol=1e-8)
    expected_s2 = {
        "full": np.einsum("nk,na,nb->kab", resp, z, z),
        "tied": z.T @ z,
        "diag": resp.T @ z**2,
        "spherical": resp.T @ np.sum(z**2, axis=1),
    }[covariance_type]
    np.testing.assert_allclose(s2, expected_s2, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weights_scale_each_rows_contribution(rows, covariance_type):
    weights, means, cov = _model(covariance_type, seed=2)
    shift = rows.mean(axis=0)
    kp = _kernel_parameters(covariance_type, weights, means, cov, shift)
    layout = StatisticsLayout(covariance_type, K, D)
    w = np.random.RandomState(3).randint(0, 3, size=len(rows)).astype(float)
    weighted = chunk_statistics(rows, kp, layout, w)[0]
    repeated = chunk_statistics(np.repeat(rows, w.astype(int), axis=0), kp, layout)[0]
    np.testing.assert_allclose(weighted, repeated, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_statistics_stay_close_to_float64(rows, covariance_type):
    weights, means, cov = _model(covariance_type, seed=4)
    shift = rows.mean(axis=0)
    layout = StatisticsLayout(covariance_type, K, D)
    stats = [
        chunk_statistics(rows.astype(dtype), _kernel_parameters(covariance_type, weights, means, cov,
                                                                shift, dtype), layout)[0]
        for dtype in (np.float64, np.float32)
    ]
    assert stats[1].dtype == np.float64  # accumulated in float64 whatever the data
    np.testing.assert_allclose(stats[1], stats[0], rtol=2e-4, atol=1e-2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_prediction_kernels_equal_the_naive_posterior(rows, covariance_type):
    weights, means, cov = _model(covariance_type, seed=5)
    kp = _kernel_parameters(covariance_type, weights, means, cov, rows.mean(axis=0))
    log_prob = _naive_log_prob(rows, weights, means, _dense_covariances(covariance_type, cov))
    log_norm = logsumexp(log_prob, axis=1)
    np.testing.assert_allclose(chunk_score_samples(rows, kp), log_norm, rtol=1e-10)
    np.testing.assert_allclose(chunk_predict_proba(rows, kp), np.exp(log_prob - log_norm[:, None]),
                               atol=1e-10)
    np.testing.assert_array_equal(chunk_predict(rows, kp), np.argmax(log_prob, axis=1))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_hard_assignment_statistics_equal_dense_ones(rows, covariance_type):
    layout = StatisticsLayout(covariance_type, K, D)
    labels = np.random.RandomState(6).randint(0, K, size=len(rows))
    dense = np.eye(K)[labels]
    hard = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), labels)), shape=(len(rows), K))
    out_dense, out_sparse = np.zeros(layout.size), np.zeros(layout.size)
    accumulate_statistics(out_dense, layout, rows, dense)
    accumulate_statistics(out_sparse, layout, rows, hard)
    np.testing.assert_allclose(out_sparse, out_dense, rtol=1e-12, atol=1e-9)
    n, s1 = layout.unpack(out_dense)[:2]
    np.testing.assert_array_equal(n, np.bincount(labels, minlength=K))
    np.testing.assert_allclose(s1, np.stack([rows[labels == k].sum(axis=0) for k in range(K)]))


def test_covariances_round_trip_through_precision_cholesky_factors():
    for covariance_type in COVARIANCE_TYPES:
        cov = _model(covariance_type, seed=7)[2]
        chol = precision_cholesky(cov, covariance_type)
        np.testing.assert_allclose(covariances_from_cholesky(chol, covariance_type), cov, rtol=1e-12)
