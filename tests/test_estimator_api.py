"""The scikit-learn interface: estimator checks, input kinds, lazy outputs, errors."""

import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from conftest import make_blobs
from daskem import GaussianMixture


# Every scikit-learn estimator check applies and passes. The one check that
# scikit-learn itself skips, check_array_api_input, needs SCIPY_ARRAY_API and an
# estimator that claims array-API support; daskem works on NumPy and Dask arrays.
@parametrize_with_checks([GaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def quick(**kw):
    kw.setdefault("random_state", 0)
    return GaussianMixture(3, **kw)


def test_dask_input_gives_lazy_outputs_chunked_like_the_input():
    X = make_blobs(900)
    Xd = da.from_array(X, chunks=((100, 500, 300), 3))
    g = quick().fit(Xd)
    for out, cols in [(g.predict(Xd), None), (g.predict_proba(Xd), 3), (g.score_samples(Xd), None)]:
        assert isinstance(out, da.Array)
        assert out.chunks[0] == Xd.chunks[0]
        if cols:
            assert out.chunks[1] == (cols,)
    np.testing.assert_array_equal(g.predict(Xd).compute(), g.predict(X))
    np.testing.assert_allclose(g.predict_proba(Xd).compute(), g.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(g.score_samples(Xd).compute(), g.score_samples(X), rtol=1e-12)


def test_numpy_input_gives_numpy_outputs():
    X = make_blobs(300)
    g = quick().fit(X)
    assert isinstance(g.predict(X), np.ndarray) and g.predict(X).dtype == np.int64
    assert isinstance(g.predict_proba(X), np.ndarray)
    np.testing.assert_allclose(g.predict_proba(X).sum(axis=1), 1.0)
    assert isinstance(g.score(X), float)


def test_fit_predict_equals_fit_then_predict():
    X = make_blobs(600)
    labels = quick(max_iter=2).fit_predict(X)
    np.testing.assert_array_equal(labels, quick(max_iter=2).fit(X).predict(X))


def test_dask_dataframe_input_fits_like_the_array():
    X = make_blobs(600)
    ddf = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=3)
    g_df = quick().fit(ddf)
    g_np = quick().fit(X)
    np.testing.assert_allclose(g_df.means_, g_np.means_, rtol=1e-10)
    assert list(g_df.feature_names_in_) == ["a", "b", "c"]
    assert g_df.predict(ddf).compute().shape == (600,)


def test_dask_dataframe_with_reordered_columns_gets_scikit_learns_feature_name_error():
    X = make_blobs(300)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    g = quick().fit(dd.from_pandas(df, npartitions=3))
    reordered = dd.from_pandas(df[["c", "a", "b"]], npartitions=3)
    for method in (g.predict, g.predict_proba, g.score_samples, g.score):
        with pytest.raises(ValueError, match="feature names should match"):
            method(reordered)


def test_dask_array_after_a_dataframe_fit_warns_as_numpy_input_does():
    X = make_blobs(300)
    g = quick().fit(dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=3))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        g.predict(da.from_array(X, chunks=100))


def test_dask_dataframe_with_text_column_is_rejected_by_name():
    df = pd.DataFrame({"a": np.arange(10.0), "b": list("abcdefghij")})
    with pytest.raises(TypeError, match="non-numeric column.*'b'"):
        quick().fit(dd.from_pandas(df, npartitions=2))


def test_unknown_chunk_sizes_are_computed():
    X = make_blobs(300)
    Xd = da.from_array(X, chunks=100)
    Xd = Xd[Xd[:, 0] > -1e9]  # boolean mask: chunk sizes become unknown
    assert np.isnan(Xd.shape[0])
    g = quick().fit(Xd)
    assert g.n_features_in_ == 3


def test_integer_input_is_accepted_as_float():
    X = np.round(make_blobs(300) * 10).astype(np.int64)
    g = quick().fit(da.from_array(X, chunks=100))
    assert g.means_.dtype == np.float64


@pytest.mark.parametrize("make_input", [lambda X: X, lambda X: da.from_array(X, chunks=50)])
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.nan, "Input X contains NaN"),
        (np.inf, "Input X contains infinity"),
    ],
)
def test_non_finite_values_are_rejected(make_input, bad, match):
    X = make_blobs(300)
    X[123, 1] = bad
    with pytest.raises(ValueError, match=match):
        quick().fit(make_input(X))


def test_non_finite_error_counts_values_and_names_the_first_row():
    X = make_blobs(300)
    X[[57, 200], 0] = np.nan
    X[250, 2] = np.inf
    with pytest.raises(ValueError, match="3 values are NaN or infinite; the first is in row 57"):
        quick().fit(da.from_array(X, chunks=40))


def test_non_finite_rows_at_predict_time_raise_when_computed():
    X = make_blobs(300)
    g = quick().fit(X)
    X[42] = np.nan
    lazy = g.predict(da.from_array(X, chunks=100))
    with pytest.raises(ValueError, match="first is in row 42"):
        lazy.compute()


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones(10), "Expected 2D array"),
        (np.ones((10, 2, 2)), "Expected 2D array|Found array with dim 3"),
        (np.ones((1, 2)), "minimum of 2 is required"),
        (np.ones((5, 0)), "0 feature"),
    ],
)
@pytest.mark.parametrize("as_dask", [False, True])
def test_malformed_arrays_are_rejected(X, match, as_dask):
    if as_dask:
        X = da.from_array(X)
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(X)


@pytest.mark.parametrize("as_dask", [False, True])
def test_fewer_samples_than_components_is_rejected(as_dask):
    X = make_blobs(6)
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        GaussianMixture(7).fit(da.from_array(X) if as_dask else X)


def test_unknown_covariance_type_is_rejected():
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="banded").fit(make_blobs(30))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights_init": [0.5, 0.5]}, "'weights' should have the shape"),
        ({"weights_init": [0.5, 0.6, -0.1]}, "should be in the range"),
        ({"weights_init": [0.2, 0.2, 0.2]}, "should be normalized"),
        ({"means_init": np.zeros((2, 3))}, "'means' should have the shape"),
        ({"precisions_init": np.ones((3, 3, 2))}, "'full precision' should have the shape"),
        ({"precisions_init": -np.stack([np.eye(3)] * 3)}, "symmetric, positive-definite"),
        ({"covariance_type": "diag", "precisions_init": -np.ones((3, 3))}, "should be positive"),
    ],
)
def test_malformed_initial_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(3, **kwargs).fit(make_blobs(90))


def test_failed_fit_leaves_a_fresh_estimator_unfitted():
    g = GaussianMixture(3, means_init=np.zeros((2, 3)))
    with pytest.raises(ValueError):
        g.fit(make_blobs(90))
    with pytest.raises(NotFittedError):
        check_is_fitted(g)
    assert not hasattr(g, "n_features_in_")


def test_failed_refit_leaves_the_previous_fit_untouched():
    X = make_blobs(300)
    g = quick().fit(X)
    before = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in vars(g).items()}
    X_bad = np.hstack([X, X])
    X_bad[5, 0] = np.nan
    with pytest.raises(ValueError):
        g.fit(da.from_array(X_bad, chunks=100))
    assert set(vars(g)) == set(before)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(g, k), v, err_msg=k)


def test_feature_count_mismatch_at_predict_is_rejected():
    g = quick().fit(make_blobs(300))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        g.predict(np.ones((5, 2)))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        g.predict(da.ones((5, 2)))


def test_non_convergence_warns_with_sklearn_message():
    with pytest.warns(ConvergenceWarning, match="Best performing initialization did not converge"):
        GaussianMixture(3, max_iter=1, random_state=0).fit(make_blobs(300))


@pytest.mark.parametrize("init_params", ["coreset", "k-means||", "kmeans", "k-means++", "random_from_data"])
def test_every_initialisation_finds_the_three_blobs(init_params):
    X = make_blobs(1500, seed=2)
    g = GaussianMixture(3, init_params=init_params, random_state=0, n_init=2)
    g.fit(da.from_array(X, chunks=400))
    centres = np.sort(g.means_[:, 0])
    np.testing.assert_allclose(centres, [-4, 0, 5], atol=0.3)


def test_random_initialisation_is_reproducible_and_chunking_independent():
    X = make_blobs(900)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [
            GaussianMixture(3, init_params=m, random_state=3, max_iter=0).fit(da.from_array(X, chunks=c))
            for m in ("random", "k-means||")
            for c in (900, 128)
        ]
    np.testing.assert_allclose(fits[0].means_, fits[1].means_, rtol=1e-10)
    np.testing.assert_allclose(fits[2].means_, fits[3].means_, rtol=1e-10)


def _tasks_per_pass(X, cache=True):
    """Chunk tasks of one EM pass of a fit on the threaded scheduler."""
    from dask.callbacks import Callback

    keys = []
    with Callback(pretask=lambda key, dsk, state: keys.append(key)):
        GaussianMixture(2, max_iter=1, tol=0, cache=cache, init_params="random", random_state=0).fit(X)
    per_pass = {}
    for key in keys:
        if isinstance(key, tuple) and str(key[0]).startswith("daskem-pass-") and key[1] == 0:
            per_pass[key[0]] = per_pass.get(key[0], 0) + 1
    return list(per_pass.values())[-1]


def test_persisted_single_chunk_is_split_so_every_thread_has_work():
    X = make_blobs(800_000, seed=5)  # 19.2 MB of float64 in one chunk
    assert _tasks_per_pass(da.from_array(X, chunks=-1)) == 16


def test_persisted_chunks_are_not_split_below_one_mebibyte():
    X = make_blobs(100_000, seed=5)  # 2.4 MB: two chunks of 1 MiB and the rest
    assert _tasks_per_pass(da.from_array(X, chunks=-1)) == 3
    assert _tasks_per_pass(make_blobs(900, seed=5)) == 1


def test_streamed_data_keep_their_chunks():
    X = make_blobs(400_000, seed=5)
    assert _tasks_per_pass(da.from_array(X, chunks=-1), cache=False) == 1


def test_persisted_small_chunks_are_merged_but_not_below_16_chunks():
    X = make_blobs(64_000, seed=5)  # 64 chunks of 24 kB
    assert _tasks_per_pass(da.from_array(X, chunks=1000)) == 16
