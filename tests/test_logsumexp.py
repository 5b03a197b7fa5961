"""The compiled log-sum-exp normalisation of the E-step, against SciPy."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from daskem._logsumexp import LOG_TINY, normalise_in_place


def _log_densities(rng, k, n, spread):
    return rng.standard_normal((k, n)) * spread - rng.uniform(0, 500, size=n)


@pytest.mark.parametrize("k", [1, 3, 8, 64])
@pytest.mark.parametrize("spread", [1.0, 30.0, 300.0])
def test_matches_scipy_logsumexp_and_softmax(k, spread):
    rng = np.random.default_rng(k)
    L = _log_densities(rng, k, 1000, spread)
    expected_log_norm = logsumexp(L, axis=0)
    expected_resp = softmax(L, axis=0)
    expected_resp[L - L.max(axis=0) <= LOG_TINY["d"]] = 0.0
    resp = L.copy()
    log_norm = normalise_in_place(resp)
    np.testing.assert_allclose(log_norm, expected_log_norm, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(resp, expected_resp, rtol=2e-15, atol=1e-300)
    np.testing.assert_allclose(resp.sum(axis=0), 1.0, rtol=1e-15)


def test_exponential_is_within_two_ulps_of_numpy_over_its_whole_range():
    x = np.linspace(LOG_TINY["d"] + 1e-9, 0.0, 2_000_001)
    # exp(x) = r0 / r1 for the two log-densities (x, 0)
    L = np.vstack([x, np.zeros_like(x)])
    normalise_in_place(L)
    relative_error = np.abs(L[0] / L[1] - np.exp(x)) / np.exp(x)
    # two ulps of the exponential, one for the division recovering it
    assert relative_error.max() <= 3 * np.finfo(np.float64).eps


def test_responsibilities_below_the_smallest_normal_number_are_exactly_zero():
    L = np.array([[0.0, 0.0], [-707.0, -709.0]])
    normalise_in_place(L)
    assert L[1, 0] == pytest.approx(np.exp(-707.0), rel=1e-14)
    assert L[1, 1] == 0.0
    assert L[0, 1] == 1.0


def test_zero_weight_component_gets_zero_responsibility():
    L = np.array([[-3.0, -1.0], [-np.inf, -np.inf], [-2.0, -5.0]])
    log_norm = normalise_in_place(L)
    np.testing.assert_array_equal(L[1], 0.0)
    np.testing.assert_allclose(log_norm, [np.logaddexp(-3.0, -2.0), np.logaddexp(-1.0, -5.0)])


def test_row_no_component_can_produce_has_minus_infinite_log_likelihood():
    L = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    log_norm = normalise_in_place(L)
    assert log_norm[0] == -np.inf
    assert log_norm[1] == pytest.approx(np.log(2.0))
    # its responsibilities are undefined (0/0), never a silent number
    assert np.isnan(L[:, 0]).all()


@pytest.mark.parametrize("nan_component", [0, 2])
def test_nan_log_density_makes_its_row_nan_and_leaves_others_alone(nan_component):
    L = np.array([[-1.0, -1.0], [-2.0, -2.0], [-3.0, -3.0]])
    L[nan_component, 0] = np.nan
    log_norm = normalise_in_place(L)
    assert np.isnan(log_norm[0])
    assert np.isnan(L[:, 0]).all()
    np.testing.assert_allclose(log_norm[1], logsumexp([-1.0, -2.0, -3.0]), rtol=1e-15)


def test_float32_log_densities_are_normalised_in_float64_and_rounded_once():
    rng = np.random.default_rng(0)
    L64 = _log_densities(rng, 8, 1000, 30.0).astype(np.float32).astype(np.float64)
    L32 = L64.astype(np.float32)
    log_norm = normalise_in_place(L32)
    assert L32.dtype == np.float32 and log_norm.dtype == np.float64
    np.testing.assert_allclose(log_norm, logsumexp(L64, axis=0), rtol=1e-15, atol=1e-15)
    expected = softmax(L64, axis=0)
    expected[L64 - L64.max(axis=0) <= LOG_TINY["f"]] = 0.0
    np.testing.assert_allclose(L32, expected, rtol=np.finfo(np.float32).eps, atol=0)
