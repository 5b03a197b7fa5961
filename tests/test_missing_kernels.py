"""The missing-value kernels (daskem._missing) against an independent in-memory reference."""

import numpy as np
import pytest
from missing_reference import (
    dense_covariances,
    reference_e_step,
    reference_em,
    reference_statistics,
)
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import daskem._missing as missing_module
from conftest import traced_peak
from daskem._covariance import precision_cholesky
from daskem._gaussian import m_step
from daskem._kernels import StatisticsLayout, chunk_statistics
from daskem._missing import (
    impute_chunk,
    missing_chunk_statistics,
    missing_log_prob,
    missing_predict,
    missing_predict_proba,
    missing_score_samples,
    missing_statistics_context,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
K, D = 3, 5
EPS64 = np.finfo(np.float64).eps


def _mixture(covariance_type, n_components=K, n_features=D, seed=0):
    """Weights, means and covariances (daskem's shapes) of a random mixture."""
    rng = np.random.RandomState(seed)
    k, d = n_components, n_features
    weights = rng.dirichlet(np.ones(k) * 3)
    means = rng.randn(k, d) * 2.5
    if covariance_type == "full":
        a = rng.randn(k, d, d)
        cov = a @ np.swapaxes(a, 1, 2) / d + 0.5 * np.eye(d)
    elif covariance_type == "tied":
        a = rng.randn(d, d)
        cov = a @ a.T / d + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.5, 2.0, size=k)
    return weights, means, cov


def _data(covariance_type, n=500, seed=1, n_features=D, params=None):
    """Rows from the mixture with ~20% MCAR holes, complete rows, all-missing
    rows, and rows with more holes than observed values."""
    rng = np.random.RandomState(seed)
    weights, means, cov = params if params is not None else _mixture(covariance_type, n_features=n_features)
    dense = dense_covariances(cov, covariance_type, len(weights), n_features)
    labels = rng.choice(len(weights), size=n, p=weights)
    X = np.stack([rng.multivariate_normal(means[c], dense[c]) for c in labels])
    full = X.copy()
    X[rng.rand(n, n_features) < 0.2] = np.nan
    X[:40] = full[:40]  # complete rows
    X[40:45] = np.nan  # nothing observed
    for i in range(45, 90):  # one or two observed values (|m| > |o|)
        X[i] = full[i]
        X[i, rng.permutation(n_features)[1 + i % 2 :]] = np.nan
    return X[rng.permutation(n)]


def _context(covariance_type, params, X, dtype=np.float64):
    weights, means, cov = params
    shift = np.nanmean(X, axis=0)
    chol = precision_cholesky(cov, covariance_type)
    return missing_statistics_context(weights, means, cov, chol, covariance_type, shift, dtype)


def _assert_statistics_close(vector, layout, reference, rtol):
    got = layout.unpack(vector)
    for name, a, b in zip(("N", "S1", "S2", "loglik", "rows"), got, reference, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = float(np.max(np.abs(b))) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request):
    return request.param


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_statistics_with_holes_equal_the_reference(covariance_type, weighted):
    params = _mixture(covariance_type)
    X = _data(covariance_type, params=params)
    w = np.random.RandomState(5).uniform(0.2, 3.0, len(X)) if weighted else None
    ctx = _context(covariance_type, params, X)
    vector = missing_chunk_statistics(X, ctx, 0, w)
    assert vector.shape == (ctx["layout"].size,) and vector.dtype == np.float64
    reference = reference_statistics(X, *params, covariance_type, ctx["shift"], w)
    _assert_statistics_close(vector, ctx["layout"], reference, rtol=1e-10)


def test_rows_with_nothing_observed_count_for_nothing(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, params=params)
    ctx = _context(covariance_type, params, X)
    kept = ~np.isnan(X).all(axis=1)
    assert (~kept).sum() >= 5
    np.testing.assert_allclose(
        missing_chunk_statistics(X, ctx, 0, None), missing_chunk_statistics(X[kept], ctx, 0, None),
        rtol=1e-12, atol=1e-12,
    )
    empty = np.full((4, D), np.nan)
    np.testing.assert_array_equal(missing_chunk_statistics(empty, ctx, 0, None), 0.0)


def test_several_slices_and_batches_give_the_same_statistics(covariance_type, monkeypatch):
    params = _mixture(covariance_type)
    X = _data(covariance_type, n=700, params=params)
    w = np.random.RandomState(2).uniform(0.5, 2.0, len(X))
    ctx = _context(covariance_type, params, X)
    whole = missing_chunk_statistics(X, ctx, 0, w)
    # tiny slices and batches: patterns straddle slices and batches
    monkeypatch.setattr(missing_module, "_SLICE_BYTES", 1)
    monkeypatch.setattr(missing_module, "_MIN_SLICE_ROWS", 7)
    monkeypatch.setattr(missing_module, "_BATCH_PAIRS", 4)
    sliced = missing_chunk_statistics(X, ctx, 0, w)
    np.testing.assert_allclose(sliced, whole, rtol=1e-12, atol=1e-12 * np.abs(whole).max())
    reference = reference_statistics(X, *params, covariance_type, ctx["shift"], w)
    _assert_statistics_close(sliced, ctx["layout"], reference, rtol=1e-10)


def test_a_pass_tasks_scratch_arrays_change_no_result(covariance_type, monkeypatch):
    # inside a pass task the kernels reuse scratch arrays from slice to slice, batch to
    # batch and chunk to chunk: every result is the one computed with fresh arrays
    from daskem._scratch import scratch_scope

    params = _mixture(covariance_type)
    X = _data(covariance_type, n=700, params=params)
    w = np.random.RandomState(2).uniform(0.5, 2.0, len(X))
    ctx = _context(covariance_type, params, X)
    monkeypatch.setattr(missing_module, "_SLICE_BYTES", 1)
    monkeypatch.setattr(missing_module, "_MIN_SLICE_ROWS", 7)
    monkeypatch.setattr(missing_module, "_BATCH_PAIRS", 4)
    funcs = [lambda b: missing_chunk_statistics(b, ctx, 0, None),
             lambda b: missing_chunk_statistics(b, ctx, 0, w[: len(b)]),
             lambda b: missing_log_prob(b, ctx), lambda b: impute_chunk(b, ctx)]
    fresh = [f(X) for f in funcs] + [f(X[::2]) for f in funcs]
    with scratch_scope():
        reused = [f(X) for f in funcs] + [f(X[::2]) for f in funcs]
    for a, b in zip(reused, fresh, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_with_holes_make_no_chunk_sized_temporaries_within_a_pass_task(covariance_type):
    # distributed's workers map and fault in every temporary over 128 KiB afresh (issue 18):
    # within a pass task the second chunk's statistics reuse the first one's scratch arrays,
    # and what is left are the chunk's index arrays (the kernel had allocated 3 to 5 times
    # the chunk's size per chunk, in (rows, components, features) temporaries)
    from daskem._scratch import scratch_scope

    params = _mixture(covariance_type, n_components=4, n_features=8)
    X = _data(covariance_type, n=20_000, n_features=8, params=params)
    ctx = _context(covariance_type, params, X)
    with scratch_scope():
        expected = missing_chunk_statistics(X, ctx, 0, None)
        vector, peak = traced_peak(missing_chunk_statistics, X, ctx, 0, None)
    np.testing.assert_array_equal(vector, expected)
    assert peak < X.nbytes, (peak, X.nbytes)


def test_float32_rows_with_holes_are_computed_in_float64(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, params=params).astype(np.float32)
    ctx = _context(covariance_type, params, X.astype(np.float64), dtype=np.float32)
    vector = missing_chunk_statistics(X, ctx, 0, None)
    reference = reference_statistics(X.astype(np.float64), *params, covariance_type, ctx["shift"])
    # complete rows go through the float32 kernel; rows with holes are exact
    _assert_statistics_close(vector, ctx["layout"], reference, rtol=2e-5)
    holes = np.isnan(X).any(axis=1)
    only_holes = missing_chunk_statistics(X[holes], ctx, 0, None)
    reference = reference_statistics(X[holes].astype(np.float64), *params, covariance_type, ctx["shift"])
    _assert_statistics_close(only_holes, ctx["layout"], reference, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_without_holes_the_complete_kernel_is_used_unchanged(covariance_type, dtype):
    params = _mixture(covariance_type)
    X = np.nan_to_num(_data(covariance_type, params=params), nan=0.5).astype(dtype)
    w = np.random.RandomState(3).uniform(0.5, 2.0, len(X))
    ctx = _context(covariance_type, params, X.astype(np.float64), dtype=dtype)
    for weights in (None, w):
        np.testing.assert_array_equal(
            missing_chunk_statistics(X, ctx, 0, weights),
            chunk_statistics(X, ctx["kernel"], ctx["layout"], weights)[0],
        )


def test_more_than_sixteen_features(covariance_type):
    # patterns are keyed by bytes beyond 16 columns
    d = 19
    params = _mixture(covariance_type, n_features=d, seed=4)
    X = _data(covariance_type, n=300, n_features=d, params=params)
    ctx = _context(covariance_type, params, X)
    reference = reference_statistics(X, *params, covariance_type, ctx["shift"])
    _assert_statistics_close(missing_chunk_statistics(X, ctx, 0, None), ctx["layout"], reference, 1e-10)


def test_a_component_of_weight_zero(covariance_type):
    weights, means, cov = _mixture(covariance_type)
    weights = np.array([0.0, 0.4, 0.6])
    X = _data(covariance_type, params=(weights, means, cov))
    ctx = _context(covariance_type, (weights, means, cov), X)
    vector = missing_chunk_statistics(X, ctx, 0, None)
    assert np.all(np.isfinite(vector))
    reference = reference_statistics(X, weights, means, cov, covariance_type, ctx["shift"])
    _assert_statistics_close(vector, ctx["layout"], reference, rtol=1e-10)


# ------------------------------------------------------------- prediction


def _marginal_log_density(X, weights, means, dense):
    """log sum_k pi_k N(x_o | mu_o, S_oo), row by row with scipy."""
    out = np.empty(len(X))
    for i, x in enumerate(X):
        o = ~np.isnan(x)
        if not o.any():
            out[i] = 0.0
            continue
        terms = [
            np.log(weights[k]) + multivariate_normal(means[k][o], dense[k][np.ix_(o, o)]).logpdf(x[o])
            for k in range(len(weights))
        ]
        out[i] = logsumexp(terms)
    return out


def _conditional_means(X, weights, means, dense):
    """sum_k p(k | x_o) (mu_m + S_mo S_oo^-1 (x_o - mu_o)), row by row with scipy."""
    out = X.copy()
    for i, x in enumerate(X):
        m, o = np.isnan(x), ~np.isnan(x)
        if not m.any():
            continue
        if not o.any():
            out[i] = weights @ means / weights.sum()
            continue
        log_p, filled = [], []
        for k in range(len(weights)):
            S = dense[k]
            log_p.append(np.log(weights[k]) + multivariate_normal(means[k][o], S[np.ix_(o, o)]).logpdf(x[o]))
            regression = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
            filled.append(means[k][m] + regression @ (x[o] - means[k][o]))
        p = np.exp(np.array(log_p) - logsumexp(log_p))
        out[i, m] = p @ np.array(filled)
    return out


def test_score_samples_is_the_log_marginal_density(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, n=200, params=params)
    ctx = _context(covariance_type, params, X)
    dense = dense_covariances(params[2], covariance_type, K, D)
    expected = _marginal_log_density(X, params[0], params[1], dense)
    got = missing_score_samples(X, ctx)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert np.all(got[np.isnan(X).all(axis=1)] == 0.0)


def test_log_prob_proba_and_predict_match_the_reference(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, n=200, params=params)
    ctx = _context(covariance_type, params, X)
    e = reference_e_step(X, *params, covariance_type)
    np.testing.assert_allclose(missing_log_prob(X, ctx), e["log_prob"], rtol=1e-10)
    proba = missing_predict_proba(X, ctx)
    np.testing.assert_allclose(proba, e["resp"], rtol=1e-9, atol=1e-12)
    empty = np.isnan(X).all(axis=1)
    np.testing.assert_allclose(proba[empty], np.broadcast_to(params[0], (empty.sum(), K)), rtol=1e-12)
    labels = missing_predict(X, ctx)
    assert labels.dtype == np.int64
    clear = np.sort(e["resp"], axis=1)[:, -1] - np.sort(e["resp"], axis=1)[:, -2] > 1e-6
    np.testing.assert_array_equal(labels[clear], np.argmax(e["resp"], axis=1)[clear])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_impute_fills_the_conditional_means_and_keeps_the_observed_values(covariance_type, dtype):
    params = _mixture(covariance_type)
    X = _data(covariance_type, n=200, params=params).astype(dtype)
    ctx = _context(covariance_type, params, X.astype(np.float64), dtype=dtype)
    filled = impute_chunk(X, ctx)
    assert filled.dtype == dtype and not np.isnan(filled).any()
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(filled[observed], X[observed])
    dense = dense_covariances(params[2], covariance_type, K, D)
    expected = _conditional_means(X.astype(np.float64), params[0], params[1], dense)
    rtol = 1e-10 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(filled, expected.astype(dtype), rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(impute_chunk(X[observed.all(axis=1)], ctx), X[observed.all(axis=1)])


# ------------------------------------------------------------------ M-step


def test_one_m_step_equals_the_reference_em_iteration(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, params=params)
    ctx = _context(covariance_type, params, X)
    reg_covar = 1e-6
    new = m_step(missing_chunk_statistics(X, ctx, 0, None), ctx["layout"], ctx["shift"], reg_covar, EPS64)
    (first,) = reference_em(X, *params, covariance_type, n_iter=1, reg_covar=reg_covar)
    np.testing.assert_allclose(new.weights, first["weights"], rtol=1e-9)
    np.testing.assert_allclose(new.means, first["means"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(new.covariances, first["covariances"], rtol=1e-9, atol=1e-12)


def test_m_step_on_weighted_statistics_of_several_chunks(covariance_type):
    params = _mixture(covariance_type)
    X = _data(covariance_type, params=params)
    w = np.random.RandomState(9).uniform(0.2, 3.0, len(X))
    ctx = _context(covariance_type, params, X)
    # statistics add up over chunks
    total = sum(missing_chunk_statistics(X[a:b], ctx, a, w[a:b]) for a, b in [(0, 77), (77, 300), (300, 500)])
    new = m_step(total, ctx["layout"], ctx["shift"], 1e-6, EPS64)
    (first,) = reference_em(X, *params, covariance_type, n_iter=1, sample_weight=w)
    np.testing.assert_allclose(new.weights, first["weights"], rtol=1e-9)
    np.testing.assert_allclose(new.means, first["means"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(new.covariances, first["covariances"], rtol=1e-9, atol=1e-12)


def test_reference_em_never_decreases_the_observed_log_likelihood(covariance_type):
    params = _mixture(covariance_type, seed=7)
    X = _data(covariance_type, n=300, params=_mixture(covariance_type, seed=8))
    history = reference_em(X, *params, covariance_type, n_iter=12)
    bounds = np.array([h["lower_bound"] for h in history])
    assert np.all(np.diff(bounds) >= -1e-10 * np.abs(bounds[:-1])), bounds
    assert bounds[-1] > bounds[0]


def test_kernel_em_follows_the_reference_em(covariance_type):
    params = _mixture(covariance_type, seed=7)
    X = _data(covariance_type, n=300, params=_mixture(covariance_type, seed=8))
    shift = np.nanmean(X, axis=0)
    layout = StatisticsLayout(covariance_type, K, D)
    weights, means, cov = params
    history = reference_em(X, *params, covariance_type, n_iter=5)
    for h in history:
        chol = precision_cholesky(cov, covariance_type)
        ctx = missing_statistics_context(
            weights, means, cov, chol, covariance_type, shift, np.float64, layout
        )
        stats = missing_chunk_statistics(X, ctx, 0, None)
        _, _, _, loglik, rows = layout.unpack(stats)
        np.testing.assert_allclose(loglik / rows, h["lower_bound"], rtol=1e-10)
        new = m_step(stats, layout, shift, 1e-6, EPS64)
        weights, means, cov = new.weights, new.means, new.covariances
        np.testing.assert_allclose(means, h["means"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cov, h["covariances"], rtol=1e-8, atol=1e-10)
