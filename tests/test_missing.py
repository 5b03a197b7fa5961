"""Missing values: GaussianMixture(missing='raise' | 'drop' | 'marginalize') and impute().

Reference comparisons run plain EM against the in-memory EM of tests/missing_reference.py,
written from the formulas (pattern by pattern, with scipy), from identical parameters.
"""

import os
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from missing_reference import dense_covariances, reference_em
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

import daskem
from conftest import make_blobs
from daskem import BayesianGaussianMixture, GaussianMixture, select_model

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
UNEVEN = ((100, 37, 263, 1, 499), 3)


def with_holes(X, fraction=0.2, seed=0, empty_rows=(5, 400)):
    """X with values missing completely at random, and some rows with nothing observed."""
    rng = np.random.RandomState(seed)
    Xh = X.copy()
    Xh[rng.rand(*X.shape) < fraction] = np.nan
    Xh[list(empty_rows)] = np.nan
    return Xh


@pytest.fixture(scope="module")
def data():
    X = make_blobs(900, seed=3)
    return X, with_holes(X)


def start(Xh, covariance_type):
    """Initial parameters (a 0-iteration fit) for both implementations."""
    return GaussianMixture(3, covariance_type=covariance_type, max_iter=0, random_state=0,
                           missing="marginalize").fit(Xh)


def fit_from(Xin, init, covariance_type, max_iter, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, covariance_type=covariance_type, max_iter=max_iter, tol=0,
                               missing="marginalize", acceleration=None, weights_init=init.weights_,
                               means_init=init.means_, precisions_init=init.precisions_, **kw).fit(Xin)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("input_kind", ["numpy", "uneven dask"])
def test_marginalize_matches_the_reference_em(data, covariance_type, input_kind):
    _, Xh = data
    init = start(Xh, covariance_type)
    Xin = Xh if input_kind == "numpy" else da.from_array(Xh, chunks=UNEVEN)
    ours = fit_from(Xin, init, covariance_type, 6)
    ref = reference_em(Xh, init.weights_, init.means_, init.covariances_, covariance_type, 6, reg_covar=1e-6)
    for name in ["weights", "means", "covariances"]:
        np.testing.assert_allclose(getattr(ours, name + "_"), ref[-1][name], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.lower_bounds_, [r["lower_bound"] for r in ref], rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_with_no_holes_marginalize_is_todays_fit(covariance_type):
    X = da.from_array(make_blobs(600, seed=4), chunks=150)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=10, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = GaussianMixture(**params).fit(X)
        marginal = GaussianMixture(missing="marginalize", **params).fit(X)
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_"]:
        np.testing.assert_array_equal(getattr(marginal, name), getattr(plain, name))
    assert marginal.lower_bounds_ == plain.lower_bounds_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_is_the_marginal_density_of_the_observed_values(data, covariance_type):
    _, Xh = data
    gm = fit_from(Xh, start(Xh, covariance_type), covariance_type, 3)
    covs = dense_covariances(gm.covariances_, covariance_type, 3, Xh.shape[1])
    scores = gm.score_samples(da.from_array(Xh, chunks=UNEVEN)).compute()
    for i in [0, 1, 2, 3, 5, 17, 400, 899]:
        o = ~np.isnan(Xh[i])
        expected = 0.0 if not o.any() else np.log(sum(
            w * multivariate_normal(m[o], c[np.ix_(o, o)]).pdf(Xh[i, o])
            for w, m, c in zip(gm.weights_, gm.means_, covs, strict=True)))
        np.testing.assert_allclose(scores[i], expected, rtol=1e-10, atol=1e-12)


def test_rows_with_nothing_observed_carry_no_information(data):
    _, Xh = data
    gm = fit_from(Xh, start(Xh, "full"), "full", 4)
    np.testing.assert_allclose(gm.predict_proba(Xh[[5, 400]]), np.tile(gm.weights_, (2, 1)), rtol=1e-12)
    np.testing.assert_array_equal(gm.score_samples(Xh[[5, 400]]), [0.0, 0.0])
    kept = ~np.isnan(Xh).all(axis=1)
    assert not kept[5] and not kept[400]
    np.testing.assert_allclose(gm.score(Xh), gm.score_samples(Xh)[kept].mean(), rtol=1e-12)
    np.testing.assert_allclose(gm.bic(Xh), -2 * gm.score_samples(Xh).sum()
                               + gm._n_parameters() * np.log(kept.sum()), rtol=1e-12)
    # and the fit left them out: the same fit without them
    same = fit_from(Xh[kept], start(Xh, "full"), "full", 4)
    np.testing.assert_allclose(same.means_, gm.means_, rtol=1e-10)


def test_scoring_rows_with_nothing_observed_alone_is_one_clear_error(data):
    _, Xh = data
    gm = fit_from(Xh, start(Xh, "full"), "full", 2)
    for method in (gm.score, gm.bic, gm.aic, gm.icl):
        with pytest.raises(ValueError, match="no row with an observed value"):
            method(np.full((3, Xh.shape[1]), np.nan))


def test_imputing_a_row_too_far_to_score_is_one_clear_error_instead_of_nan(data):
    _, Xh = data
    gm = fit_from(Xh, start(Xh, "full"), "full", 2)
    far = np.full((1, Xh.shape[1]), np.nan)
    far[0, 0] = 1e200
    for method in (gm.impute, gm.predict_proba, gm.score_samples):
        with pytest.raises(ValueError, match="overflow float64"):
            method(far)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_lower_bound_never_decreases_and_chunkings_agree(data, covariance_type):
    _, Xh = data
    fits = []
    for chunks in (900, 200, UNEVEN):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(3, covariance_type=covariance_type, missing="marginalize", tol=0,
                                 max_iter=40, random_state=0, acceleration=None)
            fits.append(gm.fit(da.from_array(Xh, chunks=chunks)))
    assert np.all(np.diff(fits[0].lower_bounds_) >= -1e-12)
    for other in fits[1:]:
        np.testing.assert_allclose(other.means_, fits[0].means_, rtol=1e-10)
        np.testing.assert_allclose(other.covariances_, fits[0].covariances_, rtol=1e-10)
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_impute_is_the_conditional_mean(data, covariance_type):
    _, Xh = data
    gm = fit_from(Xh, start(Xh, covariance_type), covariance_type, 3)
    filled = gm.impute(da.from_array(Xh, chunks=UNEVEN))
    assert isinstance(filled, da.Array) and filled.chunks == da.from_array(Xh, chunks=UNEVEN).chunks
    filled = filled.compute()
    covs = dense_covariances(gm.covariances_, covariance_type, 3, Xh.shape[1])
    observed = ~np.isnan(Xh)
    np.testing.assert_array_equal(filled[observed], Xh[observed])
    for i in np.flatnonzero((~observed).any(axis=1))[:40]:
        o, m = observed[i], ~observed[i]
        if not o.any():
            np.testing.assert_allclose(filled[i], gm.weights_ @ gm.means_, rtol=1e-10)
            continue
        post = np.array([w * multivariate_normal(mu[o], c[np.ix_(o, o)]).pdf(Xh[i, o])
                         for w, mu, c in zip(gm.weights_, gm.means_, covs, strict=True)])
        post /= post.sum()
        conditional = [mu[m] + c[np.ix_(m, o)] @ np.linalg.solve(c[np.ix_(o, o)], Xh[i, o] - mu[o])
                       for mu, c in zip(gm.means_, covs, strict=True)]
        np.testing.assert_allclose(filled[i, m], post @ np.array(conditional), rtol=1e-10, atol=1e-12)


def test_impute_beats_column_means_on_data_missing_completely_at_random():
    X = make_blobs(3000, seed=5)
    Xh = with_holes(X, fraction=0.3, seed=6, empty_rows=())
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(Xh)
    holes = np.isnan(Xh)
    ours = np.sqrt(np.mean((gm.impute(Xh)[holes] - X[holes]) ** 2))
    means = np.where(holes, np.nanmean(Xh, axis=0), Xh)
    theirs = np.sqrt(np.mean((means[holes] - X[holes]) ** 2))
    assert ours < 0.8 * theirs, (ours, theirs)


def test_drop_fits_the_complete_rows_and_says_how_many_it_left_out(data, caplog):
    _, Xh = data
    complete = ~np.isnan(Xh).any(axis=1)
    params = dict(n_components=3, random_state=0, max_iter=5, tol=0)
    with warnings.catch_warnings(), caplog.at_level("INFO", logger="daskem"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        init = GaussianMixture(max_iter=0, **{k: v for k, v in params.items() if k != "max_iter"}).fit(
            Xh[complete])
        kw = dict(weights_init=init.weights_, means_init=init.means_, precisions_init=init.precisions_)
        dropped = GaussianMixture(missing="drop", **params, **kw).fit(da.from_array(Xh, chunks=UNEVEN))
        alone = GaussianMixture(**params, **kw).fit(Xh[complete])
    np.testing.assert_allclose(dropped.means_, alone.means_, rtol=1e-9)
    np.testing.assert_allclose(dropped.covariances_, alone.covariances_, rtol=1e-9)
    np.testing.assert_allclose(dropped.lower_bounds_, alone.lower_bounds_, rtol=1e-9)
    assert "missing='drop'" in caplog.text and f"weight {complete.sum()}" in caplog.text
    with pytest.raises(ValueError, match="Input X contains NaN"):
        dropped.predict(Xh)


def test_bad_input_gets_clear_errors(data):
    X, Xh = data
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GaussianMixture(3).fit(Xh)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GaussianMixture(3).fit(da.from_array(Xh, chunks=300))
    for mode in ("drop", "marginalize"):
        bad = X.copy()
        bad[7, 1] = np.inf
        with pytest.raises(ValueError, match="infinity"):
            GaussianMixture(3, missing=mode).fit(da.from_array(bad, chunks=300))
    empty = Xh.copy()
    empty[:, 2] = np.nan
    with pytest.raises(ValueError, match="column 2 has no observed value"):
        GaussianMixture(3, missing="marginalize").fit(da.from_array(empty, chunks=300))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        BayesianGaussianMixture(n_components=2).fit(Xh)


@pytest.mark.parametrize(("mode", "rows"), [
    ("drop", "complete rows"), ("marginalize", "rows with an observed value"),
])
def test_fewer_usable_rows_than_components_is_scikit_learns_error(mode, rows):
    X = np.random.default_rng(0).normal(size=(6, 2))
    X[2:, 0] = np.nan
    if mode == "marginalize":
        X[2:, 1] = np.nan  # four rows with nothing observed
    with pytest.raises(ValueError, match=f"n_components = 3, n_samples = 2 \\(the {rows}"):
        GaussianMixture(3, missing=mode).fit(X)


def test_select_model_and_online_em_take_holes(data):
    X, Xh = data
    table, best = select_model(Xh, n_components=[2, 3], covariance_types=["full", "diag", "EVE"],
                               missing="marginalize", random_state=0)
    assert table.error.isna().all() and best.n_components == 3
    online = GaussianMixture(3, missing="marginalize", algorithm="online", batch_size=300, max_iter=3,
                             random_state=0).fit(da.from_array(Xh, chunks=150))
    assert np.all(np.isfinite(online.means_))
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(da.from_array(Xh, chunks=150))
    gm.partial_fit(Xh[:200])
    assert np.all(np.isfinite(gm.covariances_))


def test_integer_weights_fit_like_repeated_rows_with_holes(data):
    _, Xh = data
    w = np.random.RandomState(1).randint(0, 3, size=len(Xh))
    init = start(Xh, "diag")
    weighted = GaussianMixture(3, covariance_type="diag", max_iter=4, tol=0, missing="marginalize",
                               weights_init=init.weights_, means_init=init.means_,
                               precisions_init=init.precisions_)
    repeated = GaussianMixture(**weighted.get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted.fit(Xh, sample_weight=w)
        repeated.fit(np.repeat(Xh, w, axis=0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-9)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-9)


def test_mclust_models_take_holes(data):
    _, Xh = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type="VEV", missing="marginalize", tol=0, max_iter=25,
                             random_state=0).fit(da.from_array(Xh, chunks=300))
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)
    assert gm.orientations_.shape == (3, 3, 3)


def test_model_files_keep_the_missing_setting(data, tmp_path):
    _, Xh = data
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(Xh)
    gm.save(tmp_path / "m.npz")
    loaded = daskem.load(tmp_path / "m.npz")
    assert loaded.missing == "marginalize"
    np.testing.assert_array_equal(loaded.score_samples(Xh), gm.score_samples(Xh))


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "daskem", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=180, env=env)


def test_cli_fits_with_holes_and_imputes_atomically(data, tmp_path):
    X, Xh = data
    np.save(tmp_path / "holes.npy", Xh)
    local = ["--workers", "1", "--threads-per-worker", "1", "--no-processes", "--quiet"]
    r = _cli("fit", "holes.npy", "-k", 3, "--missing", "marginalize", "--random-state", 0, "--out", "m.npz",
             *local, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert daskem.load(tmp_path / "m.npz").missing == "marginalize"
    r = _cli("impute", "m.npz", "holes.npy", "--out", "filled.zarr", *local, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    filled = zarr.open_array(str(tmp_path / "filled.zarr"), mode="r")[:]
    np.testing.assert_allclose(filled, daskem.load(tmp_path / "m.npz").impute(Xh), rtol=1e-12)
    # bad input: exit 2, one line, nothing written
    np.save(tmp_path / "wide.npy", np.hstack([Xh, Xh]))
    r = _cli("impute", "m.npz", "wide.npy", "--out", "bad.zarr", *local, cwd=tmp_path)
    assert r.returncode == 2 and "feature" in r.stderr and not (tmp_path / "bad.zarr").exists()
    r = _cli("fit", "holes.npy", "-k", 3, "--out", "raise.npz", *local, cwd=tmp_path)
    assert r.returncode == 2 and "NaN" in r.stderr and not (tmp_path / "raise.npz").exists()


def test_a_failure_in_the_middle_of_impute_leaves_nothing_at_the_target(data, tmp_path):
    """A chunk that fails half-way (infinity in the last stored chunk) stops the write:
    the target does not exist and no temporary sibling is left."""
    _, Xh = data
    bad = Xh.copy()
    bad[-1, 0] = np.inf
    z = zarr.create_array(str(tmp_path / "bad.zarr"), shape=bad.shape, chunks=(100, 3), dtype="f8")
    z[:] = bad
    gm = GaussianMixture(3, missing="marginalize", random_state=0).fit(Xh)
    gm.save(tmp_path / "m.npz")
    r = _cli("impute", "m.npz", "bad.zarr", "--out", "out.zarr", "--chunks", 100, "--workers", "1",
             "--no-processes", "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "infinity" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.zarr", "m.npz"]
