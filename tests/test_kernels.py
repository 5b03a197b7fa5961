"""The per-chunk kernels against a naive NumPy E-step and M-step written from the formulas."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from conftest import traced_peak
from daskem._covariance import covariances_from_cholesky, precision_cholesky
from daskem._kernels import (
    StatisticsLayout,
    accumulate_hard_statistics,
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


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_hard_assignment_statistics_equal_dense_ones(rows, covariance_type, weighted):
    layout = StatisticsLayout(covariance_type, K, D)
    labels = np.random.RandomState(6).randint(0, K - 1, size=len(rows))  # the last one empty
    w = np.random.RandomState(7).uniform(0.0, 2.0, size=len(rows)) if weighted else None
    out_dense, out_hard = np.zeros(layout.size), np.zeros(layout.size)
    accumulate_statistics(out_dense, layout, rows, np.eye(K)[labels], w)
    accumulate_hard_statistics(out_hard, layout, rows, labels, w)
    np.testing.assert_allclose(out_hard, out_dense, rtol=1e-12, atol=1e-9)
    n, s1 = layout.unpack(out_hard)[:2]
    w = np.ones(len(rows)) if w is None else w
    np.testing.assert_allclose(n, np.bincount(labels, weights=w, minlength=K), rtol=1e-12)
    np.testing.assert_allclose(s1, np.stack([w[labels == k] @ rows[labels == k] for k in range(K)]),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_the_joint_feature_layout_equals_the_naive_statistics(covariance_type, dtype, weighted):
    """Where one product over [1, z, z^2] is the faster (diag and spherical, d=5, K=16)."""
    from daskem._features import _features

    k, d = 16, 5
    assert _features(covariance_type, d, k).joint
    rng = np.random.RandomState(11)
    weights = rng.dirichlet(np.ones(k))
    means = rng.randn(k, d) * 3
    var = rng.uniform(0.5, 2.0, size=(k, d) if covariance_type == "diag" else k)
    X = (rng.randn(9000, d) * 2 + 1.0).astype(dtype)
    w = rng.uniform(0.0, 2.0, size=len(X)) if weighted else None
    shift = X.mean(axis=0, dtype=np.float64)
    kp = kernel_parameters(weights, means, precision_cholesky(var, covariance_type),
                           covariance_type, shift, dtype)
    layout = StatisticsLayout(covariance_type, k, d)
    n, s1, s2, loglik, _ = layout.unpack(chunk_statistics(X, kp, layout, w)[0])

    X64 = X.astype(np.float64)
    dense = var if covariance_type == "diag" else np.repeat(var[:, None], d, axis=1)
    log_prob = np.column_stack([np.log(weights[j]) + multivariate_normal(means[j], np.diag(dense[j]))
                                .logpdf(X64) for j in range(k)])
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None]) * (1.0 if w is None else w[:, None])
    z = X64 - shift
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(loglik, log_norm @ (np.ones(len(X)) if w is None else w), rtol=rtol)
    np.testing.assert_allclose(n, resp.sum(axis=0), rtol=rtol)
    np.testing.assert_allclose(s1, resp.T @ z, rtol=rtol, atol=1e-6 if dtype == np.float64 else 0.5)
    squares = resp.T @ z**2 if covariance_type == "diag" else resp.T @ np.sum(z**2, axis=1)
    np.testing.assert_allclose(s2, squares, rtol=rtol)
    np.testing.assert_allclose(chunk_score_samples(X, kp), log_norm, rtol=rtol)


def test_covariances_round_trip_through_precision_cholesky_factors():
    for covariance_type in COVARIANCE_TYPES:
        cov = _model(covariance_type, seed=7)[2]
        chol = precision_cholesky(cov, covariance_type)
        np.testing.assert_allclose(covariances_from_cholesky(chol, covariance_type), cov, rtol=1e-12)


# ------------------------------------------------- full covariance: two forms


def _full_mixture(k, d, seed, separation=3.0):
    """A random full-covariance mixture and its precision Cholesky factors."""
    rng = np.random.RandomState(seed)
    weights = rng.dirichlet(np.ones(k) * 5)
    means = rng.randn(k, d) * separation
    A = rng.randn(k, d, d) / np.sqrt(d)
    cov = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(d)
    return weights, means, cov, precision_cholesky(cov, "full")


def _full_rows(means, n, seed):
    rng = np.random.RandomState(seed)
    labels = rng.randint(len(means), size=n)
    return means[labels] + rng.randn(n, means.shape[1])


def _naive_full_statistics(X, weights, means, cov, shift, sample_weight=None):
    """N, S1, S2 (about the shift) and the log-likelihood sum, from scipy's densities."""
    log_prob = np.column_stack([
        np.log(weights[j]) + multivariate_normal(means[j], cov[j]).logpdf(X)
        for j in range(len(weights))
    ])
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None])
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    resp = resp * w[:, None]
    z = X - shift
    return (resp.sum(axis=0), resp.T @ z, np.einsum("nk,na,nb->kab", resp, z, z),
            float(log_norm @ w))


@pytest.mark.parametrize("form", [None, "projection", "packed"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k,d", [(3, 40), (2, 5)])
def test_full_forms_equal_the_naive_e_step_and_sums(form, dtype, weighted, k, d):
    # form None: the cost model's choice (projection at d = 40, K = 3, where
    # the triangular factors are split in two column blocks; packed at d = 5);
    # 2,500 rows: two whole blocks and a short one
    from daskem._kernels import full_covariance_form

    weights, means, cov, chol = _full_mixture(k, d, seed=d)
    X = _full_rows(means, 2500, seed=1)
    shift = X.mean(axis=0)
    w = np.random.RandomState(2).uniform(0, 2, size=len(X)) if weighted else None
    kp = kernel_parameters(weights, means, chol, "full", shift, dtype, form=form)
    assert kp["form"] == (form or full_covariance_form(k, d, dtype))
    if form is None:
        assert kp["form"] == ("projection" if d == 40 else "packed")
    layout = StatisticsLayout("full", k, d)
    n, s1, s2, loglik, n_rows = layout.unpack(chunk_statistics(X.astype(dtype), kp, layout, w)[0])
    n_ref, s1_ref, s2_ref, loglik_ref = _naive_full_statistics(X, weights, means, cov, shift, w)
    # float32: the rounding of the rows and of the float32 E-step
    rtol, atol = (1e-9, 1e-8) if dtype == np.float64 else (2e-4, 1e-2 * np.sqrt(d))
    np.testing.assert_allclose(loglik, loglik_ref, rtol=1e-10 if dtype == np.float64 else 1e-5)
    assert n_rows == pytest.approx(len(X) if w is None else w.sum())
    np.testing.assert_allclose(n, n_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(s1, s1_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(s2, s2_ref, rtol=rtol, atol=atol * 10)


def _both_forms(X, weights, means, chol, k, d, dtype=np.float64, sample_weight=None):
    shift = X.mean(axis=0)
    layout = StatisticsLayout("full", k, d)
    return [
        chunk_statistics(X.astype(dtype), kernel_parameters(weights, means, chol, "full", shift, dtype,
                                                            form=form), layout, sample_weight)[0]
        for form in ("packed", "projection")
    ]


@pytest.mark.parametrize("separation", [0.3, 3.0, 30.0])
def test_the_two_full_forms_agree(separation):
    # from overlapping components (no zero responsibility) to separated ones,
    # where most responsibilities are exactly 0 and the projection form's
    # M-step gathers the rows each component has a share of
    k, d = 8, 64
    weights, means, cov, chol = _full_mixture(k, d, seed=3, separation=separation)
    X = _full_rows(means, 3000, seed=4)
    packed, projection = _both_forms(X, weights, means, chol, k, d)
    np.testing.assert_allclose(projection, packed, rtol=1e-10, atol=1e-10 * np.abs(packed).max())


def test_the_projection_form_serves_zero_weights_and_non_triangular_factors():
    k, d = 4, 36
    weights, means, cov, chol = _full_mixture(k, d, seed=5)
    X = _full_rows(means, 1500, seed=6)
    weights = np.array([0.5, 0.0, 0.25, 0.25])
    packed, projection = _both_forms(X, weights, means, chol, k, d)
    np.testing.assert_allclose(projection, packed, rtol=1e-10, atol=1e-10 * np.abs(packed).max())
    assert packed[1] == projection[1] == 0.0  # N of the weightless component
    # a factor times an orthogonal matrix has the same precision; the
    # projection then uses it whole instead of in triangular blocks
    q = np.linalg.qr(np.random.RandomState(7).randn(d, d))[0]
    rotated = chol @ q
    rotated *= np.sign(np.diagonal(rotated, axis1=1, axis2=2))[:, None, :]  # positive diagonals
    shift = X.mean(axis=0)
    kp = kernel_parameters(weights, means, rotated, "full", shift, np.float64, form="projection")
    assert len(kp["proj_blocks"]) == 1
    kp_tri = kernel_parameters(weights, means, chol, "full", shift, np.float64, form="projection")
    assert len(kp_tri["proj_blocks"]) == 2
    # the constants come from the factors' diagonals (log det), so compare
    # with the packed form on the same rotated factors
    layout = StatisticsLayout("full", k, d)
    kp_packed = kernel_parameters(weights, means, rotated, "full", shift, np.float64, form="packed")
    np.testing.assert_allclose(chunk_statistics(X, kp, layout)[0],
                               chunk_statistics(X, kp_packed, layout)[0], rtol=1e-10,
                               atol=1e-10 * np.abs(packed).max())


def test_the_cost_model_chooses_the_form(monkeypatch):
    import daskem._kernels as kernels

    # the grid's cells (benchmarks/bench_em.py), and large d
    for dtype in (np.float64, np.float32):
        assert kernels.full_covariance_form(8, 64, dtype) == "projection"
        assert kernels.full_covariance_form(8, 16, dtype) == "packed"
        assert kernels.full_covariance_form(64, 16, dtype) == "packed"
        assert kernels.full_covariance_form(8, 128, dtype) == "projection"
    assert kernels.full_covariance_form(64, 64, np.float64) == "packed"
    packed, projection = kernels.full_covariance_costs(8, 64, np.float64)
    assert 0 < projection < packed
    weights, means, cov, chol = _full_mixture(8, 64, seed=8)
    shift = means.mean(axis=0)
    assert kernel_parameters(weights, means, chol, "full", shift, np.float64)["form"] == "projection"
    monkeypatch.setattr(kernels, "FULL_FORM", "packed")
    assert kernel_parameters(weights, means, chol, "full", shift, np.float64)["form"] == "packed"
    with pytest.raises(ValueError, match="form"):
        kernel_parameters(weights, means, chol, "full", shift, np.float64, form="dense")


@pytest.mark.parametrize(
    "form, covariance_type",
    [("projection", "full")] + [("packed", covariance_type) for covariance_type in COVARIANCE_TYPES],
)
def test_kernels_allocate_nothing_per_row_block(form, covariance_type):
    # the per-block temporaries live in the per-thread workspace (see
    # _Workspace): a chunk of 8 blocks allocates no more than one of 1 block
    from daskem import _kernels, _projection

    k, d = 8, 64
    weights, means, cov, chol = _full_mixture(k, d, seed=9)
    if covariance_type != "full":
        chol = precision_cholesky(_dense_to(covariance_type, cov), covariance_type)
    if form == "projection":
        step = _projection.BLOCK_ROWS
    else:
        step = _kernels._block_rows(_kernels._features(covariance_type, d, k), 8)
    X = _full_rows(means, 8 * step, seed=10)
    kp = kernel_parameters(weights, means, chol, covariance_type, X.mean(axis=0), np.float64,
                           form=form)
    layout = StatisticsLayout(covariance_type, k, d)
    peaks = []
    for rows in (step, 8 * step):
        chunk_statistics(X[:rows], kp, layout)  # the workspace of this thread
        peaks.append(traced_peak(chunk_statistics, X[:rows], kp, layout)[1])
    assert peaks[1] <= peaks[0] + 2**12, peaks
    # and what it allocates is the chunk's accumulators and small arrays
    # (under glibc's 128 KiB mmap threshold)
    assert peaks[0] < 4 * layout.size * 8 + 2**17, (peaks, layout.size * 8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictions_allocate_their_result_and_no_per_block_temporaries(covariance_type, dtype):
    # score, BIC and predict_proba passes reduce each block's (K, rows) log-densities in the
    # thread's workspace (float64 ones for float32 data): beyond the result, a chunk of 8
    # blocks allocates under 512 KiB (it had allocated (rows, K) float64 temporaries, 1.6 to
    # 12 MiB here)
    from daskem import _kernels

    k, d = 8, 16
    weights, means, cov, chol = _full_mixture(k, d, seed=9)
    if covariance_type != "full":
        chol = precision_cholesky(_dense_to(covariance_type, cov), covariance_type)
    step = _kernels._block_rows(_kernels._features(covariance_type, d, k), np.dtype(dtype).itemsize)
    X = _full_rows(means, 8 * step, seed=10).astype(dtype)
    kp = kernel_parameters(weights, means, chol, covariance_type, X.mean(axis=0, dtype=np.float64), dtype)
    for func in (chunk_score_samples, _kernels.chunk_scores, chunk_predict_proba):
        expected = func(X, kp)  # the workspace of this thread
        result, peak = traced_peak(func, X, kp)
        np.testing.assert_array_equal(result, expected)
        assert peak - result.nbytes < 2**19, (func.__name__, peak, result.nbytes)


def _dense_to(covariance_type, cov):
    """Full covariances (K, d, d) reduced to another type's parameters."""
    return {
        "tied": lambda: cov.mean(axis=0),
        "diag": lambda: np.diagonal(cov, axis1=1, axis2=2).copy(),
        "spherical": lambda: np.diagonal(cov, axis1=1, axis2=2).mean(axis=1),
    }[covariance_type]()


def test_scratch_arrays_are_kept_per_name_and_thread_until_the_scope_ends():
    import threading

    from daskem._scratch import scratch, scratch_scope

    # outside a scope: a fresh array each time
    assert not np.shares_memory(scratch("test.a", (100, 3)), scratch("test.a", (100, 3)))
    with scratch_scope():
        first = scratch("test.a", (100, 3))
        assert first.shape == (100, 3) and first.dtype == np.float64
        # the same memory for the same name, a smaller request a view of it
        assert np.shares_memory(scratch("test.a", (10, 2)), first)
        assert not np.shares_memory(scratch("test.b", (100, 3)), first)
        assert scratch("test.a", (5,), np.intp).dtype == np.intp
        grown = scratch("test.a", (1000, 3))
        assert grown.shape == (1000, 3)
        with scratch_scope():  # a nested scope shares the outer one's arrays
            assert np.shares_memory(scratch("test.a", (100, 3)), grown)
        assert np.shares_memory(scratch("test.a", (100, 3)), grown)
        other = []

        def in_another_thread():
            with scratch_scope():
                other.append(scratch("test.a", (100, 3)))

        thread = threading.Thread(target=in_another_thread)
        thread.start()
        thread.join()
        assert not np.shares_memory(other[0], grown)
    # given up when the scope ends
    assert not np.shares_memory(scratch("test.a", (100, 3)), grown)


def test_a_d2_draw_makes_no_copy_of_the_chunk():
    # worker processes fault every page of a fresh large temporary in (issue 18): the keys,
    # the drawn rows and the shifted rows are the task's scratch arrays; what a chunk
    # allocates is its output and the partition's index
    from daskem._initialization import _d2_sample_func
    from daskem._scratch import scratch_scope

    X = np.random.default_rng(3).normal(size=(50_000, 16))
    shift = X.mean(axis=0)
    for centres in (np.empty((0, 16)), np.zeros((1, 16)), X[:8] - shift):
        ctx = {"shift": shift, "centres": centres, "n_take": 3000, "seed": 4, "weights": True}
        with scratch_scope():  # as a pass's task over a worker's chunks
            expected = _d2_sample_func(X, ctx, 0, None)
            drawn, peak = traced_peak(_d2_sample_func, X, ctx, 0, None)
        np.testing.assert_array_equal(drawn, expected)
        assert peak <= drawn.nbytes + 8 * len(X) + 2**17, (len(centres), peak, drawn.nbytes)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype, far", [(np.float64, 1e160), (np.float32, 1e20)])
def test_a_finite_row_too_far_to_score_is_one_clear_error_instead_of_nan(covariance_type, dtype, far):
    weights, means, cov = _model(covariance_type)
    kp = _kernel_parameters(covariance_type, weights, means, cov, np.zeros(D), dtype)
    rows = np.zeros((3, D), dtype=dtype)
    rows[1, 0] = far
    assert np.isfinite(rows).all()
    for func in (chunk_predict, chunk_predict_proba, chunk_score_samples):
        with pytest.raises(ValueError, match="overflow " + np.dtype(dtype).name):
            func(rows, kp)
    # rows within range still score
    assert np.isfinite(chunk_score_samples(rows[[0, 2]], kp)).all()
