"""BayesianGaussianMixture: scikit-learn's variational mixture, one pass per iteration."""

import json
import os
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SklearnBayesian

import daskem
from conftest import make_blobs
from daskem import BayesianGaussianMixture, GaussianMixture
from daskem._checkpoint import load_checkpoint, save_checkpoint
from daskem._engine import fit

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PRIOR_TYPES = ["dirichlet_process", "dirichlet_distribution"]
POSTERIOR = ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_",
             "mean_precision_", "degrees_of_freedom_"]
PRIORS = ["weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
          "degrees_of_freedom_prior_", "covariance_prior_"]
# attributes scikit-learn's initialisation sets, which a warm start continues from
STATE = ["weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_", "covariances_",
         "precisions_cholesky_"] + PRIORS
K = 4




def _sklearn_from(X, resp, max_iter, **params):
    """scikit-learn's fit from given initial responsibilities."""
    est = SklearnBayesian(n_components=K, max_iter=max_iter, tol=0, **params)
    est._initialize_parameters = lambda X, random_state, xp=None: est._initialize(X, resp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X)


def _daskem_from(X, X_sklearn, resp, max_iter, **params):
    """daskem's fit continuing (warm start) from scikit-learn's initial posterior."""
    start = _sklearn_from(X_sklearn, resp, 0, **params)
    est = BayesianGaussianMixture(n_components=K, max_iter=max_iter, tol=0, warm_start=True, **params)
    for name in STATE + ["lower_bound_", "converged_"]:
        setattr(est, name, getattr(start, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X)


@pytest.fixture(scope="module")
def data():
    X = make_blobs(600, seed=1)
    resp = np.random.RandomState(0).uniform(size=(len(X), K))
    return X, resp / resp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("input_kind", ["numpy", "uneven dask"])
def test_matches_sklearn_from_identical_responsibilities(data, covariance_type, prior_type, input_kind):
    X, resp = data
    params = dict(covariance_type=covariance_type, weight_concentration_prior_type=prior_type)
    Xin = X if input_kind == "numpy" else da.from_array(X, chunks=((100, 37, 262, 1, 200), 3))
    ref = _sklearn_from(X, resp, 6, **params)
    ours = _daskem_from(Xin, X, resp, 6, **params)
    for name in POSTERIOR + PRIORS:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(np.concatenate(ours.weight_concentration_ if prior_type == PRIOR_TYPES[0]
                                              else [ours.weight_concentration_]),
                               np.concatenate(ref.weight_concentration_ if prior_type == PRIOR_TYPES[0]
                                              else [ref.weight_concentration_]), rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bounds_, np.ravel(ref.lower_bounds_), rtol=1e-6)
    assert ours.n_iter_ == ref.n_iter_ == 6
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ours.score_samples(Xin)), ref.score_samples(X), rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_row_chunking_does_not_change_the_fit(covariance_type):
    X = make_blobs(900, seed=4)
    fits = []
    for chunks in (900, 200, ((450, 1, 99, 350), 3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(BayesianGaussianMixture(n_components=5, covariance_type=covariance_type,
                                                max_iter=15, tol=0, random_state=0)
                        .fit(da.from_array(X, chunks=chunks)))
    for other in fits[1:]:
        for name in POSTERIOR:
            np.testing.assert_allclose(getattr(other, name), getattr(fits[0], name), rtol=1e-10,
                                       atol=1e-12, err_msg=name)
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(covariance_type, prior_type):
    X = make_blobs(900, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = BayesianGaussianMixture(n_components=6, covariance_type=covariance_type,
                                     weight_concentration_prior_type=prior_type, max_iter=60, tol=0,
                                     random_state=1).fit(da.from_array(X, chunks=250))
    bounds = np.asarray(gm.lower_bounds_)
    assert len(bounds) == 60
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_process_switches_off_the_components_the_data_do_not_need(seed):
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])  # 8 standard deviations apart
    X = np.vstack([rng.randn(700, 2) + c for c in centres])
    gm = BayesianGaussianMixture(n_components=10, weight_concentration_prior=1e-3, max_iter=500,
                                 random_state=seed).fit(da.from_array(X, chunks=500))
    assert gm.converged_
    assert int((gm.weights_ > 0.01).sum()) == 3
    active = gm.means_[gm.weights_ > 0.01]
    distances = np.linalg.norm(centres[:, None, :] - active[None, :, :], axis=2)
    assert np.all(distances.min(axis=1) < 0.2)  # one active component on every cluster


def test_sklearn_estimator_checks_pass():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(BayesianGaussianMixture())


@pytest.mark.parametrize("estimator", [GaussianMixture(3, random_state=0),
                                       BayesianGaussianMixture(n_components=3, random_state=0)],
                         ids=["GaussianMixture", "BayesianGaussianMixture"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_data_give_float32_fitted_arrays(estimator, covariance_type):
    X = make_blobs(600, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = estimator.set_params(covariance_type=covariance_type).fit(da.from_array(X, chunks=200))
    for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        assert getattr(gm, name).dtype == np.float32, name
    reference = estimator.set_params().fit(X.astype(np.float64))
    np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-3, atol=1e-3)


def test_float32_fits_keep_their_dtype_through_a_model_file(tmp_path):
    X = make_blobs(300, dtype=np.float32)
    for est in (GaussianMixture(2, random_state=0), BayesianGaussianMixture(n_components=2, random_state=0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X)
        est.save(tmp_path / "m.npz")
        loaded = daskem.load(tmp_path / "m.npz")
        assert loaded.means_.dtype == loaded.covariances_.dtype == np.float32
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_a_component_left_with_a_single_row_fits_without_regularisation():
    """scikit-learn's test_gaussian_mixture_setting_best_params (its issue #18216)."""
    rnd = np.random.RandomState(0)
    X = rnd.uniform(size=(30, 3))
    means_init = np.array([
        [0.670637869618158, 0.21038256107384043, 0.12892629765485303],
        [0.09394051075844147, 0.5759464955561779, 0.929296197576212],
        [0.5033230372781258, 0.9569852381759425, 0.08654043447295741],
        [0.18578301420435747, 0.5531158970919143, 0.19388943970532435],
        [0.4548589928173794, 0.35182513658825276, 0.568146063202464],
        [0.609279894978321, 0.7929063819678847, 0.9620097270828052],
    ])
    precisions_init = np.array([999999.999604483, 999999.9990869573, 553.7603944542167,
                                204.78596008931834, 15.867423501783637, 85.4595728389735])
    weights_init = [0.03333333333333341, 0.03333333333333341, 0.06666666666666674,
                    0.06666666666666674, 0.7000000000000001, 0.10000000000000007]
    gmm = GaussianMixture(covariance_type="spherical", reg_covar=0, means_init=means_init,
                          weights_init=weights_init, random_state=rnd, n_components=6,
                          precisions_init=precisions_init, max_iter=1)
    with pytest.warns(ConvergenceWarning):
        gmm.fit(X)
    assert not gmm.converged_
    for attr in ["weights_", "means_", "covariances_", "precisions_cholesky_", "n_iter_",
                 "lower_bound_", "lower_bounds_"]:
        assert hasattr(gmm, attr)
    assert np.all(np.isfinite(gmm.covariances_)) and np.all(gmm.covariances_ > 0)
    assert gmm.n_iter_ == 1


def test_integer_sample_weights_fit_like_repeated_rows():
    X = make_blobs(300, seed=2)
    w = np.random.RandomState(0).randint(0, 3, size=len(X))
    params = dict(n_components=3, max_iter=10, tol=0, init_params="random_from_data", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = BayesianGaussianMixture(**params).fit(X, sample_weight=w)
        start = BayesianGaussianMixture(**{**params, "max_iter": 0}).fit(X, sample_weight=w)
        repeated = BayesianGaussianMixture(**{**params, "warm_start": True})
        for name in STATE + ["lower_bound_", "converged_"]:
            setattr(repeated, name, getattr(start, name))
        repeated.fit(np.repeat(X, w, axis=0))
    for name in POSTERIOR + PRIORS:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-8,
                                   err_msg=name)


def test_resume_from_a_checkpoint_is_bit_for_bit(tmp_path):
    X = da.from_array(make_blobs(600, seed=3), chunks=150)
    params = dict(n_components=4, n_init=2, max_iter=6, tol=0, random_state=3)
    states = []

    def keep(state):
        folder = tmp_path / f"ck{len(states)}"
        save_checkpoint(folder, state, params, {})
        states.append(folder)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = BayesianGaussianMixture(**params)
        fit(reference, X, on_state=keep)
        resumed = BayesianGaussianMixture(**params)
        fit(resumed, X, resume=load_checkpoint(states[9]).state)
    for name in POSTERIOR + PRIORS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    assert resumed.lower_bounds_ == reference.lower_bounds_


def test_model_file_round_trip_for_both_prior_types(tmp_path):
    X = make_blobs(300)
    for prior_type in PRIOR_TYPES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = BayesianGaussianMixture(n_components=3, weight_concentration_prior_type=prior_type,
                                         random_state=0).fit(X)
        gm.save(tmp_path / "b.npz")
        loaded = daskem.load(tmp_path / "b.npz")
        assert type(loaded) is BayesianGaussianMixture
        assert type(loaded.weight_concentration_) is type(gm.weight_concentration_)
        for name in POSTERIOR + PRIORS:
            np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name), err_msg=name)
        np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))


def test_dask_input_gives_lazy_outputs():
    X = da.from_array(make_blobs(300), chunks=100)
    gm = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    for out in (gm.predict(X), gm.predict_proba(X), gm.score_samples(X)):
        assert isinstance(out, da.Array) and out.chunks[0] == X.chunks[0]


def test_no_online_em_and_no_information_criteria():
    gm = BayesianGaussianMixture()
    assert not hasattr(gm, "partial_fit") and not hasattr(gm, "bic") and not hasattr(gm, "aic")
    with pytest.raises(TypeError):
        BayesianGaussianMixture(algorithm="online")


@pytest.mark.parametrize(
    "params",
    [
        {"degrees_of_freedom_prior": 1.5},
        {"mean_prior": [0.0, 1.0]},
        {"covariance_prior": np.eye(2)},
        {"covariance_prior": -np.eye(3)},
        {"covariance_type": "diag", "covariance_prior": [1.0, -1.0, 1.0]},
        {"covariance_type": "diag", "covariance_prior": [1.0, 1.0]},
        {"weight_concentration_prior": -1.0},
        {"weight_concentration_prior_type": "stick"},
        {"covariance_type": "spherical", "covariance_prior": 0.0},
    ],
)
def test_bad_priors_get_sklearns_errors(params):
    X = make_blobs(60)
    with pytest.raises((ValueError, TypeError)) as theirs:
        SklearnBayesian(n_components=2, **params).fit(X)
    with pytest.raises(type(theirs.value)) as ours:
        BayesianGaussianMixture(n_components=2, **params).fit(da.from_array(X, chunks=20))
    assert str(ours.value).replace("daskem", "sklearn") == str(theirs.value)


def test_cli_fits_a_bayesian_mixture_and_reports_its_active_components(tmp_path):
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(700, 2) + c for c in ([0, 0], [8, 0], [0, 8])])
    np.save(tmp_path / "x.npy", X)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "daskem", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    r = cli("fit", "x.npy", "-k", "10", "--bayesian", "--weight-concentration-prior", "1e-3",
            "--random-state", "0", "--max-iter", "500", "--out", "m.npz", "--workers", "1",
            "--threads-per-worker", "1", "--no-processes")
    assert r.returncode == 0, r.stderr
    assert "3 of 10 component(s) active (weight > 0.01)" in r.stdout
    model = daskem.load(tmp_path / "m.npz")
    assert isinstance(model, BayesianGaussianMixture) and model.weight_concentration_prior_ == 1e-3
    scores = json.loads(cli("score", "m.npz", "x.npy", "--json", "--workers", "1",
                            "--no-processes").stdout)
    assert "bic" not in scores and "aic" not in scores and "n_parameters" not in scores
    np.testing.assert_allclose(scores["mean_log_likelihood"], model.score(X), rtol=1e-12)
    info = json.loads(cli("info", "m.npz", "--json").stdout)
    assert info["estimator"] == "BayesianGaussianMixture" and info["active_components"] == 3
    assert info["n_parameters"] is None
    r = cli("fit", "x.npy", "--weight-concentration-prior", "1e-3", "--out", "g.npz")
    assert r.returncode == 2 and "needs --bayesian" in r.stderr


def test_the_default_start_is_the_coreset_as_for_gaussian_mixture():
    X = da.from_array(make_blobs(3_000, seed=4), chunks=700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = {init: BayesianGaussianMixture(n_components=3, max_iter=0, random_state=2,
                                              init_params=init).fit(X)
                for init in ("auto", "coreset", "k-means||")}
    assert BayesianGaussianMixture().init_params == "auto"
    np.testing.assert_array_equal(fits["auto"].means_, fits["coreset"].means_)
    # the priors' pass, validation, the coreset and its statistics: k-means|| makes more
    assert fits["auto"].n_passes_ == fits["coreset"].n_passes_ == 4 < fits["k-means||"].n_passes_
