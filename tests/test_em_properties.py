"""Properties of daskem's EM: monotone likelihood, chunking and scheduler invariance,
restarts, warm starts, sampling, information criteria, degenerate data."""

import re
import warnings
from concurrent.futures import ProcessPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from conftest import make_blobs
from daskem import GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_"]


def fixed_fit(X, covariance_type="full", max_iter=10, **kw):
    """Plain EM (accelerated EM's properties: test_acceleration.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            3, covariance_type=covariance_type, max_iter=max_iter, tol=0, random_state=0,
            acceleration=None, **kw
        ).fit(X)


def assert_same_parameters(a, b, rtol):
    for name in PARAMS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=0, err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_likelihood_never_decreases(covariance_type):
    X = make_blobs(1500, seed=3)
    g = fixed_fit(da.from_array(X, chunks=400), covariance_type, max_iter=40, init_params="random")
    steps = np.diff(g.lower_bounds_)
    assert len(steps) == 39
    assert np.all(steps >= -1e-12 * np.abs(g.lower_bounds_[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_different_chunkings_agree(covariance_type):
    X = make_blobs(1200, seed=4)
    fits = [
        fixed_fit(da.from_array(X, chunks=chunks), covariance_type)
        for chunks in [1200, 100, ((7, 493, 300, 400), 3)]
    ]
    for other in fits[1:]:
        assert_same_parameters(fits[0], other, rtol=1e-10)
        np.testing.assert_allclose(fits[0].lower_bounds_, other.lower_bounds_, rtol=1e-12)


def test_threaded_and_multiprocessing_schedulers_agree():
    Xd = da.from_array(make_blobs(900, seed=5), chunks=200)
    with dask.config.set(scheduler="threads"):
        threaded = fixed_fit(Xd, cache=False)
    with ProcessPoolExecutor(2) as pool, dask.config.set(scheduler="processes", pool=pool):
        processes = fixed_fit(Xd, cache=False)
    assert_same_parameters(threaded, processes, rtol=0)


def test_distributed_scheduler_agrees_with_threaded():
    Xd = da.from_array(make_blobs(900, seed=5), chunks=200)
    threaded = fixed_fit(Xd, cache=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster, Client(cluster):
        distributed = fixed_fit(Xd, cache=False)
    assert_same_parameters(threaded, distributed, rtol=0)


def test_data_held_by_workers_are_read_by_one_task_per_worker_thread_with_the_same_result():
    from distributed import wait

    from daskem._passes import PassGraph

    Xd = da.from_array(make_blobs(900, seed=5), chunks=100)
    threaded = fixed_fit(Xd, cache=False)
    with LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster, Client(cluster) as client:
        held = client.persist(Xd)
        wait(held)
        groups = PassGraph(held)._worker_groups()
        distributed = fixed_fit(held, cache=False)
    # a group per worker thread, together every chunk once
    assert len(groups) == 4 and sorted(i for g in groups for i in g) == list(range(9))
    # the merges follow the chunk order whatever the grouping: the same sums, bit for bit
    assert_same_parameters(threaded, distributed, rtol=0)
    assert distributed.lower_bounds_ == threaded.lower_bounds_


def test_chunks_held_by_one_worker_are_shared_out_to_every_worker_with_the_same_result():
    from distributed import get_task_stream, wait

    from daskem._passes import PassGraph

    Xd = da.from_array(make_blobs(900, seed=5), chunks=100)
    threaded = fixed_fit(Xd, cache=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster, Client(cluster) as client:
        first = sorted(client.nthreads())[0]
        held = client.persist(Xd, workers=[first])  # all nine chunks on one worker
        wait(held)
        assert set(w for ws in client.who_has(held).values() for w in ws) == {first}
        groups = PassGraph(held)._worker_groups()
        with get_task_stream(client) as stream:
            distributed = fixed_fit(held, cache=False)
    assert sorted(len(g) for g in groups) == [4, 5] and sorted(i for g in groups for i in g) == list(range(9))
    ran_on = {task["worker"] for task in stream.data if "-group-" in task["key"]}
    assert len(ran_on) == 2
    assert_same_parameters(threaded, distributed, rtol=0)
    assert distributed.lower_bounds_ == threaded.lower_bounds_


def test_chunks_shared_out_to_another_worker_are_sent_once_not_every_pass():
    from distributed import wait

    Xd = da.from_array(make_blobs(900, seed=5), chunks=100)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=False, protocol="tcp://") as cluster, \
            Client(cluster) as client:
        first = sorted(client.nthreads())[0]
        held = client.persist(Xd, workers=[first])
        wait(held)
        chunk_keys = {str(k) for k in dask.core.flatten(held.__dask_keys__())}

        def chunks_received(dask_worker):
            return sum(str(key) in chunk_keys
                       for transfer in dask_worker.transfer_incoming_log for key in transfer["keys"])

        fit = fixed_fit(held, max_iter=12, cache=False)
        received = sum(client.run(chunks_received).values())
    assert fit.n_passes_ >= 12
    # four of the nine chunks go to the idle worker in the first pass; later passes reuse them
    assert received == 4, received


def test_a_coreset_drawn_from_data_held_by_workers_equals_the_threaded_one():
    """Each worker's group merges its chunks' top rows itself; the draws are the same."""
    from distributed import wait

    from daskem._initialization import coreset_steps
    from daskem._passes import drive

    X = make_blobs(30_000, seed=5)
    Xd = da.from_array(X, chunks=2_500)

    def coreset(data):
        steps = coreset_steps(len(X), X.mean(axis=0), 3, np.random.RandomState(0))
        return drive(data, [steps])[0]

    rows, weights = coreset(Xd)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster, Client(cluster) as client:
        held = client.persist(Xd)
        wait(held)
        held_rows, held_weights = coreset(held)
    assert len(rows) > 9_000
    np.testing.assert_array_equal(held_rows, rows)
    np.testing.assert_array_equal(held_weights, weights)


def test_n_init_keeps_the_best_run(capsys):
    X = make_blobs(600, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(
            6, n_init=4, init_params="random", random_state=1, verbose=2, max_iter=30
        ).fit(X)
    bounds = [float(b) for b in re.findall(r"lower bound (-?\d+\.\d+)", capsys.readouterr().out)]
    assert len(bounds) == 4
    assert len(set(np.round(bounds, 4))) > 1, "restarts should reach different optima"
    np.testing.assert_allclose(g.lower_bound_, max(bounds), atol=1e-5)
    assert g.lower_bounds_[-1] == g.lower_bound_


def test_warm_start_continues_where_the_last_fit_stopped():
    X = make_blobs(900, seed=7)
    straight = fixed_fit(X, max_iter=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(3, max_iter=4, tol=0, random_state=0, warm_start=True,
                            acceleration=None).fit(X)
        g.set_params(max_iter=6).fit(X)
    assert g.n_iter_ == 6
    assert_same_parameters(straight, g, rtol=1e-10)
    np.testing.assert_allclose(g.lower_bounds_, straight.lower_bounds_[4:], rtol=1e-12)


@pytest.mark.parametrize(("change", "message"), [
    ({"covariance_type": "diag"}, "covariances_ has shape"),
    ({"n_components": 4}, "components"),
])
def test_a_warm_start_that_no_longer_matches_the_parameters_is_one_clear_error(change, message):
    X = make_blobs(900, seed=7)
    g = fixed_fit(X, max_iter=3, warm_start=True)
    means = g.means_.copy()
    g.set_params(**change)
    with pytest.raises(ValueError, match=f"warm_start=True continues the fitted model.*{message}"):
        g.fit(X)
    np.testing.assert_array_equal(g.means_, means)


def test_a_warm_start_on_other_features_is_one_clear_error_that_changes_nothing():
    X = make_blobs(900, seed=7)
    g = fixed_fit(X, max_iter=3, warm_start=True)
    means = g.means_.copy()
    with pytest.raises(ValueError, match="fitted on 3 features, but X has 2 features"):
        g.fit(X[:, :2])
    np.testing.assert_array_equal(g.means_, means)
    assert g.n_features_in_ == 3


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_reproduces_fitted_moments(covariance_type):
    g = fixed_fit(make_blobs(900, seed=8), covariance_type, max_iter=20)
    Xs, ys = g.sample(200_000)
    assert Xs.shape == (200_000, 3) and np.all(np.diff(ys) >= 0)
    np.testing.assert_allclose(np.bincount(ys) / len(ys), g.weights_, atol=5e-3)
    covs = {
        "full": lambda c: c,
        "tied": lambda c: np.broadcast_to(c, (3, 3, 3)),
        "diag": lambda c: np.stack([np.diag(v) for v in c]),
        "spherical": lambda c: np.stack([np.eye(3) * v for v in c]),
    }[covariance_type](g.covariances_)
    for k in range(3):
        part = Xs[ys == k]
        np.testing.assert_allclose(part.mean(axis=0), g.means_[k], atol=0.03)
        np.testing.assert_allclose(np.cov(part.T), covs[k], atol=0.05)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_and_aic_follow_their_definitions(covariance_type):
    X = make_blobs(900, seed=9)
    g = fixed_fit(X, covariance_type, max_iter=5)
    d, k = 3, 3
    cov_params = {"full": k * d * (d + 1) / 2, "tied": d * (d + 1) / 2, "diag": k * d, "spherical": k}
    p = int(cov_params[covariance_type] + k * d + k - 1)
    loglik = g.score_samples(X).sum()
    np.testing.assert_allclose(g.bic(X), -2 * loglik + p * np.log(len(X)), rtol=1e-12)
    np.testing.assert_allclose(g.aic(X), -2 * loglik + 2 * p, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_collapsed_data_without_regularisation_raises_ill_defined_error(covariance_type):
    X = np.repeat([[1.0, 2.0], [3.0, 4.0]], 10, axis=0)
    g = GaussianMixture(2, covariance_type=covariance_type, reg_covar=0, random_state=0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        g.fit(da.from_array(X, chunks=7))


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_collapsed_data_without_regularisation_get_variances_at_the_rounding_level(covariance_type):
    """A variance that cancellation leaves at zero is the rounding error of its computation
    (as scikit-learn's arithmetic gives for a single-row component, its issue #18216)."""
    X = np.repeat([[1.0, 2.0], [3.0, 4.0]], 10, axis=0)
    g = GaussianMixture(2, covariance_type=covariance_type, reg_covar=0, random_state=0)
    g.fit(da.from_array(X, chunks=7))
    assert np.all(np.isfinite(g.covariances_)) and np.all(g.covariances_ > 0)
    # eps times the second moment around the data mean (squared distances of about 2)
    assert np.all(g.covariances_ <= 4 * np.finfo(float).eps * 2)
    np.testing.assert_allclose(np.sort(g.means_, axis=0), [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "dtype, scale, covariance_type",
    [(np.float64, 1e160, cov) for cov in COVARIANCE_TYPES]
    # float32 tied forms its quadratic forms by projection (no squares) and
    # its statistics in float64, so it fits such data
    + [(np.float32, 1e20, cov) for cov in ("full", "diag", "spherical")],
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_data_whose_squares_overflow_raise_an_overflow_error(dtype, scale, covariance_type):
    # finite data, but squared deviations beyond the dtype's largest number
    # (NumPy warns on the way, in the initialisation's distances)
    X = (make_blobs(600, seed=12) * scale).astype(dtype)
    g = GaussianMixture(2, covariance_type=covariance_type, random_state=0)
    with pytest.raises(ValueError, match=f"sufficient statistics overflowed {np.dtype(dtype).name}"):
        g.fit(da.from_array(X, chunks=200))
    assert not hasattr(g, "means_")


def test_empty_component_keeps_finite_parameters():
    X = make_blobs(600, seed=10)
    means = np.array([[0.0, 0, 0], [5, 5, 5], [-4, 6, 0], [1e4, 1e4, 1e4]])
    g = GaussianMixture(4, means_init=means, max_iter=5, tol=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g.fit(X)
    for name in PARAMS:
        assert np.all(np.isfinite(getattr(g, name))), name
    assert g.weights_[3] < 1e-12
    np.testing.assert_allclose(g.covariances_[3], np.eye(3) * g.reg_covar, rtol=1e-6)
    assert np.all(np.isfinite(g.score_samples(X)))


def test_max_iter_zero_returns_the_initialisation():
    X = make_blobs(600, seed=11)
    means = np.array([[0.0, 0, 0], [5, 5, 5], [-4, 6, 0]])
    g = GaussianMixture(3, means_init=means, max_iter=0, random_state=0).fit(X)
    np.testing.assert_array_equal(g.means_, means)
    assert g.n_iter_ == 0 and g.lower_bounds_ == [] and g.lower_bound_ == -np.inf


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float32_input_fits_like_float64(covariance_type):
    X = make_blobs(3000, seed=12)
    g64 = fixed_fit(da.from_array(X, chunks=700), covariance_type, max_iter=15)
    g32 = fixed_fit(da.from_array(X.astype(np.float32), chunks=700), covariance_type, max_iter=15)
    assert g32.means_.dtype == np.float32  # the data's dtype, as in scikit-learn 1.9
    np.testing.assert_allclose(g32.lower_bound_, g64.lower_bound_, rtol=1e-5)
    np.testing.assert_allclose(g32.means_, g64.means_, atol=1e-4)
    np.testing.assert_allclose(g32.covariances_, g64.covariances_, atol=1e-4)
