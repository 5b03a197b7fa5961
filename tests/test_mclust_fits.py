"""mclust's 14 covariance models in GaussianMixture, against R mclust 6.0.0's stored fits.

The fixtures (tests/fixtures/mclust, written by make_mclust_fixtures.R) hold, for Old
Faithful and iris, each model and G = 1..4: mclust's log-likelihood, BIC, ICL, df and
parameters, and mclust's own choice by BIC. Every comparison runs plain EM.
"""

import json
import os
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import GaussianMixture, select_model
from daskem._checkpoint import load_checkpoint, save_checkpoint
from daskem._engine import fit

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "mclust")
MODELS = ["EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV"]
CLOSED_FORMS = ["EII", "VII", "EEI", "EVI", "VVI", "EEE", "EEV", "EVV", "VVV"]
ALIASES = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
# plain EM, as mclust runs
SETTINGS = dict(n_init=5, reg_covar=0.0, tol=1e-8, max_iter=3000, random_state=0, acceleration=None)


@pytest.fixture(scope="module")
def reference():
    with open(os.path.join(HERE, "mclust_reference.json")) as f:
        return json.load(f)


def dataset(name):
    return pd.read_csv(os.path.join(HERE, f"{name}.csv")).to_numpy(dtype=float)


@pytest.fixture(scope="module", params=["faithful", "iris"])
def grid(request):
    """Every model and G = 1..4 in one select_model grid (shared passes)."""
    X = dataset(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table, best = select_model(X, n_components=range(1, 5), covariance_types="all", **SETTINGS)
    return request.param, X, table, best


def fits_of(reference, name):
    return [f for f in reference["fits"] if f["data"] == name]


def row_of(table, fit_):
    return table[(table.covariance_type == fit_["model"]) & (table.n_components == fit_["G"])].iloc[0]


def test_every_case_fits_and_reaches_at_least_mclusts_log_likelihood(grid, reference):
    name, _, table, _ = grid
    assert table.error.isna().all()  # mclust fitted every case too
    for f in fits_of(reference, name):
        ours, theirs = row_of(table, f).log_likelihood, f["loglik"]
        if f["G"] == 1:
            # one component: a closed form, or an M-step iterated to sqrt(eps) (EVE, VVE)
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=f"{f['model']} G=1")
        else:
            assert ours >= theirs - 1e-9 * abs(theirs), (f["model"], f["G"], ours, theirs)


def test_free_parameters_are_mclusts_df(grid, reference):
    name, _, table, _ = grid
    for f in fits_of(reference, name):
        assert row_of(table, f).n_parameters == f["df"], (f["model"], f["G"])


def test_bic_is_mclusts_negated_where_the_fits_agree(grid, reference):
    name, _, table, _ = grid
    for f in fits_of(reference, name):
        row = row_of(table, f)
        if abs(row.log_likelihood - f["loglik"]) <= 1e-6 * abs(f["loglik"]):
            np.testing.assert_allclose(row.bic, -f["bic"], rtol=1e-6)


def test_icl_is_mclusts_negated_where_the_fits_agree(grid, reference):
    """Wherever the log-likelihoods agree to 1e-6: always for K = 1 (where ICL = BIC), and for
    K > 1 wherever both reach the same optimum (daskem's restarts often find better ones).
    ICL's classification term depends on the parameters to first order, unlike the
    log-likelihood at its optimum, and mclust stops at a relative change of 1e-5: measured
    agreement 5e-6 (faithful) and 3e-5 (iris)."""
    name, _, table, _ = grid
    agreeing = set()
    for f in fits_of(reference, name):
        row = row_of(table, f)
        if abs(row.log_likelihood - f["loglik"]) > 1e-6 * abs(f["loglik"]):
            assert f["G"] > 1 and row.log_likelihood > f["loglik"]
            continue
        rtol = 1e-6 if f["G"] == 1 else 1e-4
        np.testing.assert_allclose(row.icl, -f["icl"], rtol=rtol, err_msg=f"{f['model']} G={f['G']}")
        if f["G"] > 1 and f["model"] in CLOSED_FORMS:
            agreeing.add(f["model"])
    # on Old Faithful every closed-form model but VII (1.7e-6 apart at G=2) meets mclust's
    # optimum for some K > 1, and so its ICL is checked there
    assert len(agreeing) >= (8 if name == "faithful" else 1), sorted(agreeing)


def _precisions(model, sigma):
    """Precisions of covariances in the estimator's shape: scikit-learn's for VII, VVI, EEE."""
    precision = np.linalg.inv(sigma)
    return {"VII": lambda: precision[:, 0, 0], "VVI": lambda: np.diagonal(precision, axis1=1, axis2=2),
            "EEE": lambda: precision[0]}.get(model, lambda: precision)()


@pytest.mark.parametrize("name", ["faithful", "iris"])
def test_icl_of_mclusts_own_parameters_is_mclusts(reference, name):
    """daskem's icl() from mclust's fitted parameters (set as a 0-iteration fit): those of
    its EM, where Mclust's summary reports one more M-step (its ICL is of the EM's)."""
    X = dataset(name)
    d = X.shape[1]
    for f in fits_of(reference, name):
        if f["G"] == 1 or f["model"] not in CLOSED_FORMS:
            continue
        p = f.get("em", f["parameters"])
        sigma = np.asarray(p["sigma"], dtype=float).reshape(f["G"], d, d)
        gm = GaussianMixture(f["G"], covariance_type=f["model"], max_iter=0,
                             weights_init=np.atleast_1d(p["pro"]) / np.sum(p["pro"]),
                             means_init=np.asarray(p["mean"], dtype=float).reshape(f["G"], d),
                             precisions_init=_precisions(f["model"], sigma), reg_covar=0).fit(X)
        np.testing.assert_allclose(gm.score(X) * len(X), f["loglik"], rtol=1e-6)
        np.testing.assert_allclose(gm.bic(X), -f["bic"], rtol=1e-6)
        np.testing.assert_allclose(gm.icl(X), -f["icl"], rtol=1e-6)


def test_select_model_picks_a_model_at_least_as_good_as_mclusts_choice(grid, reference):
    name, X, table, best = grid
    choice = reference["best"][name]
    assert table.bic.min() <= -choice["bic"] + 1e-6 * abs(choice["bic"])
    assert (best.covariance_type, best.n_components) == (choice["model"], choice["G"])
    np.testing.assert_allclose(best.bic(X), table.bic.min(), rtol=1e-10)


@pytest.mark.parametrize("model", ["VII", "VVI", "EEE", "VVV"])
def test_mclusts_names_of_sklearns_types_are_the_same_fits(model):
    X = da.from_array(dataset("iris"), chunks=40)
    params = dict(n_components=3, init_params="k-means||", random_state=0, max_iter=20, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(covariance_type=model, **params).fit(X)
        theirs = GaussianMixture(covariance_type=ALIASES[model], **params).fit(X)
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"]:
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    assert not hasattr(ours, "volumes_")


@pytest.mark.parametrize("reg_covar", [0.0, 1e-2])
@pytest.mark.parametrize("model", sorted(set(MODELS) - set(ALIASES)))
def test_the_other_models_show_full_covariances_and_their_decomposition(model, reg_covar):
    X = dataset("iris")
    # the model is fitted to the regularised covariances: its constraints hold exactly
    gm = GaussianMixture(3, covariance_type=model, random_state=0, reg_covar=reg_covar).fit(X)
    k, d = 3, X.shape[1]
    assert gm.covariances_.shape == gm.precisions_.shape == gm.precisions_cholesky_.shape == (k, d, d)
    assert gm.volumes_.shape == (k,) and gm.shapes_.shape == (k, d) and gm.orientations_.shape == (k, d, d)
    rebuilt = (gm.orientations_ * (gm.volumes_[:, None] * gm.shapes_)[:, None, :]) @ np.swapaxes(
        gm.orientations_, 1, 2)
    # the decomposition is that of the fitted (regularised) covariances
    np.testing.assert_allclose(rebuilt, gm.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gm.precisions_, np.linalg.inv(gm.covariances_), rtol=1e-8)
    np.testing.assert_allclose(np.prod(gm.shapes_, axis=1), 1.0, rtol=1e-8)
    # the letters' constraints: E = equal across components, I = identity
    volume, shape, orientation = model
    if volume == "E":
        np.testing.assert_allclose(gm.volumes_, gm.volumes_[0], rtol=1e-6)
    if shape == "E":
        first = np.broadcast_to(np.sort(gm.shapes_[:1], axis=1), gm.shapes_.shape)
        np.testing.assert_allclose(np.sort(gm.shapes_, axis=1), first, rtol=1e-4)
    if shape == "I":
        np.testing.assert_allclose(gm.shapes_, 1.0, rtol=1e-8)
    if orientation in "IE":
        covs = gm.covariances_
        if orientation == "I":
            np.testing.assert_allclose(covs * (1 - np.eye(d)), 0.0, atol=1e-12)
        else:  # a common orientation: the covariances commute
            np.testing.assert_allclose(covs[0] @ covs[1], covs[1] @ covs[0], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("model", ["EVE", "VEI", "EEV"])
def test_model_files_and_checkpoints_keep_mclusts_models(model, tmp_path):
    X = da.from_array(dataset("faithful"), chunks=70)
    params = dict(n_components=3, covariance_type=model, n_init=2, max_iter=8, tol=0.0, random_state=2)
    folders = []

    def keep(state):
        folder = tmp_path / f"ck{len(folders)}"
        save_checkpoint(folder, state, params, {})
        folders.append(folder)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = GaussianMixture(**params)
        fit(reference, X, on_state=keep)
        resumed = GaussianMixture(**params)
        fit(resumed, X, resume=load_checkpoint(folders[2 * len(folders) // 3]).state)
    for name in ["weights_", "means_", "covariances_", "volumes_", "shapes_", "orientations_"]:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    reference.save(tmp_path / "m.npz")
    loaded = daskem.load(tmp_path / "m.npz")
    for name in ["covariances_", "precisions_cholesky_", "volumes_", "shapes_", "orientations_"]:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(reference, name), err_msg=name)
    np.testing.assert_array_equal(loaded.predict_proba(X), reference.predict_proba(X))


def test_hc_initialisation_clusters_a_sample_and_reads_no_pass():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(3000, 2) + c for c in ([0, 0], [6, 0], [0, 6])])
    gm = GaussianMixture(3, covariance_type="VVV", init_params="hc", hc_sample_size=500,
                         max_iter=0, random_state=0).fit(da.from_array(X, chunks=1000))
    assert gm.n_passes_ == 1  # the validation pass; the sample's rows are fetched by index
    np.testing.assert_allclose(np.sort(gm.weights_), [1 / 3] * 3, atol=0.05)
    with pytest.raises(ValueError, match="does not take sample weights"):
        GaussianMixture(3, init_params="hc").fit(X, sample_weight=np.ones(len(X)))


def test_auto_initialisation_starts_mclusts_names_from_hc_and_restarts_from_the_coreset():
    from daskem._gaussian import GaussianFamily

    for name, first, second in [("EVE", "hc", "coreset"), ("full", "coreset", "coreset")]:
        family = GaussianFamily(3, covariance_type=name, init_params="auto")
        assert (family.init_method(0), family.init_method(1)) == (first, second)
    assert GaussianFamily(3, covariance_type="EVE").init_method(0, weighted=True) == "coreset"
    assert GaussianMixture().init_params == "auto"


@pytest.mark.parametrize(("model", "form"), [
    ("EII", "multiples of the identity"), ("EEI", "diagonal"), ("VEI", "diagonal"), ("EVI", "diagonal"),
])
def test_initial_precisions_of_the_wrong_form_for_the_model_are_one_clear_error(model, form):
    X = dataset("faithful")
    correlated = np.array([[[2.0, 0.5], [0.5, 1.0]]] * 2)
    not_spherical = np.array([np.diag([2.0, 1.0])] * 2)
    given = not_spherical if model == "EII" else correlated
    with pytest.raises(ValueError, match=f"precisions_init for covariance_type='{model}' must be {form}"):
        GaussianMixture(2, covariance_type=model, precisions_init=given).fit(X)


def test_initial_precisions_of_the_models_form_start_the_fit_from_them():
    X = dataset("faithful")
    precisions = np.array([np.diag([1.0, 0.01]), np.diag([4.0, 0.04])])
    gm = GaussianMixture(2, covariance_type="VEI", precisions_init=precisions, max_iter=0,
                         weights_init=[0.5, 0.5], means_init=[[2.0, 55.0], [4.5, 80.0]]).fit(X)
    np.testing.assert_allclose(gm.precisions_, precisions, rtol=1e-12)


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
@pytest.mark.parametrize("model", sorted(set(MODELS) - set(ALIASES)))
def test_every_model_fits_from_starts_of_one_row_per_component(model, init_params):
    # these starts give each component one row: a zero scatter, defined by reg_covar
    X = dataset("faithful")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=model, init_params=init_params, max_iter=20,
                             random_state=1).fit(X)
    assert np.isfinite(gm.lower_bound_) and np.all(np.diff(gm.lower_bounds_) > -1e-10)


@pytest.mark.parametrize("n_components", [1, 2])
@pytest.mark.parametrize("model", sorted(set(MODELS) - set(ALIASES)))
def test_every_model_fits_data_with_a_constant_column(model, n_components):
    X = np.column_stack([dataset("faithful"), np.full(272, 3.0)])
    gm = GaussianMixture(n_components, covariance_type=model, random_state=0).fit(X)
    np.testing.assert_allclose(gm.means_[:, 2], 3.0, rtol=1e-12)
    np.testing.assert_array_less(0.0, np.linalg.eigvalsh(gm.covariances_))
