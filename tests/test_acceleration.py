"""Accelerated EM (SQUAREM, acceleration='squarem' and the default 'auto'): the
accepted lower bounds never decrease, fits end no lower than plain EM's, resume is
bit for bit, and every model family and data path either works with it or says
it cannot."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from daskem import GaussianMixture, select_model
from daskem._checkpoint import load_checkpoint, save_checkpoint
from daskem._engine import fit
from daskem._gaussian import GaussianFamily

PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_"]
TOL = 1e-7
# scikit-learn's four types and mclust models with a common orientation, volume or shape
# (where extrapolated Cholesky factors leave the model and are projected back)
TYPES = ["full", "tied", "diag", "spherical", "VEV", "EVE", "EEV", "VEI"]


def overlapping(n=3000, d=3, k=4, seed=0):
    """Clusters that overlap, so that plain EM converges slowly."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(k, d) * 1.6
    scales = rng.uniform(0.6, 1.4, size=(k, d))
    labels = rng.randint(k, size=n)
    return centres[labels] + rng.randn(n, d) * scales[labels]


@pytest.fixture(scope="module")
def X():
    return overlapping()


def _fit(X, sample_weight=None, **params):
    options = dict(n_components=4, tol=TOL, max_iter=2000, random_state=0)
    options.update(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**options).fit(X, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def fits(X):
    """(plain EM, SQUAREM) per covariance type, from the same start."""
    return {t: (_fit(X, covariance_type=t, acceleration=None),
                _fit(X, covariance_type=t, acceleration="squarem")) for t in TYPES}


def test_the_default_is_squarem_for_batch_em(X):
    default = _fit(X, covariance_type="diag", max_iter=50)
    squarem = _fit(X, covariance_type="diag", max_iter=50, acceleration="squarem")
    assert GaussianMixture().acceleration == "auto"
    assert default.lower_bounds_ == squarem.lower_bounds_
    for name in PARAMS:
        assert np.array_equal(getattr(default, name), getattr(squarem, name)), name


@pytest.mark.parametrize("covariance_type", TYPES)
def test_accepted_lower_bounds_never_decrease(fits, covariance_type):
    _, accelerated = fits[covariance_type]
    bounds = np.asarray(accelerated.lower_bounds_)
    assert accelerated.converged_ and len(bounds) >= 2
    assert np.all(np.diff(bounds) >= -1e-13), np.diff(bounds).min()
    assert bounds[-1] == accelerated.lower_bound_


@pytest.mark.parametrize("covariance_type", TYPES)
def test_lower_bounds_never_decrease_beyond_rounding_up_to_the_optimum(X, covariance_type):
    # tol=0: the steps near the optimum, where an extrapolated point off the set the
    # M-step returns (reg_covar added after mclust's constrained fit) lowered the bound by 1e-7
    gm = _fit(X, covariance_type=covariance_type, acceleration="squarem", tol=0.0, max_iter=90)
    steps = np.diff(gm.lower_bounds_)
    assert np.all(steps >= -1e-12 * np.abs(gm.lower_bounds_[1:])), steps.min()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_ends_no_lower_than_plain_em(fits, covariance_type):
    plain, accelerated = fits[covariance_type]
    assert plain.converged_ and accelerated.converged_
    gap = accelerated.lower_bound_ - plain.lower_bound_
    assert gap >= -TOL, (
        f"{covariance_type}: SQUAREM ended at {accelerated.lower_bound_:.10f}, plain EM at "
        f"{plain.lower_bound_:.10f} ({plain.n_iter_} against {accelerated.n_iter_} EM steps)"
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_counts_every_pass_as_an_em_step_and_takes_fewer(fits, covariance_type):
    plain, accelerated = fits[covariance_type]
    # one pass per EM step, extrapolated or not; the initialisation's passes on top
    assert accelerated.n_passes_ - accelerated.n_iter_ == plain.n_passes_ - plain.n_iter_
    assert len(accelerated.iteration_seconds_) == accelerated.n_iter_
    assert len(accelerated.lower_bounds_) <= accelerated.n_iter_
    assert accelerated.n_iter_ < 0.75 * plain.n_iter_, (plain.n_iter_, accelerated.n_iter_)


def test_max_iter_counts_em_steps(X):
    gm = _fit(X, covariance_type="full", acceleration="squarem", max_iter=7, tol=0.0)
    assert gm.n_iter_ == 7 and not gm.converged_


def test_chunking_does_not_change_an_accelerated_fit(X):
    whole = _fit(X, covariance_type="full", acceleration="squarem")
    uneven = _fit(da.from_array(X, chunks=((700, 1300, 1000), (3,))), covariance_type="full",
                  acceleration="squarem")
    assert uneven.n_iter_ == whole.n_iter_
    for name in PARAMS:
        np.testing.assert_allclose(getattr(uneven, name), getattr(whole, name), rtol=1e-8, atol=1e-12)


def test_integer_sample_weights_fit_like_repeated_rows(X):
    counts = np.random.RandomState(4).randint(0, 3, size=len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = GaussianMixture(4, random_state=0, max_iter=0).fit(X, sample_weight=counts.astype(float))
    given = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    weighted = _fit(X, sample_weight=counts.astype(float), acceleration="squarem", **given)
    repeated = _fit(np.repeat(X, counts, axis=0), acceleration="squarem", **given)
    assert weighted.converged_ and repeated.converged_ and weighted.n_iter_ == repeated.n_iter_
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)
    for name in PARAMS:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-7, atol=1e-10)


@pytest.fixture(scope="module")
def checkpointed(X, tmp_path_factory):
    """An accelerated fit with every state it reports saved as a checkpoint."""
    root = tmp_path_factory.mktemp("squarem-checkpoints")
    folders = []
    options = dict(n_components=4, covariance_type="full", n_init=2, max_iter=40, tol=0.0,
                   random_state=3, acceleration="squarem")

    def on_state(state):
        folder = root / f"ck{len(folders):03d}"
        save_checkpoint(folder, state, options, {"source": "memory"})
        folders.append(folder)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = GaussianMixture(**options)
        fit(reference, X, on_state=on_state)
    return reference, folders, options


def test_an_accelerated_fit_checkpoints_at_every_cycle_start(checkpointed):
    reference, folders, _ = checkpointed
    states = [load_checkpoint(f).state for f in folders]
    steps = [len(s.seconds) for s in states if s.init == 1]
    assert steps[0] == 0 and len(steps) > 5
    # a cycle is two EM steps, and a third when the extrapolation is tried
    assert set(np.diff(steps)) <= {2, 3}
    assert any(s.step_bound > 1.0 for s in states)


@pytest.mark.parametrize("which", [0.2, 0.5, 0.7, 0.95])
def test_resume_of_an_accelerated_fit_is_bit_for_bit(checkpointed, X, which):
    reference, folders, options = checkpointed
    state = load_checkpoint(folders[int(which * (len(folders) - 1))]).state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        resumed = GaussianMixture(**options)
        fit(resumed, X, resume=state)
    for name in PARAMS:
        assert np.array_equal(getattr(resumed, name), getattr(reference, name)), name
    assert resumed.lower_bounds_ == reference.lower_bounds_
    assert resumed.n_iter_ == reference.n_iter_


def test_select_model_candidates_are_the_separate_accelerated_fits(X):
    table, best = select_model(X, [2, 3], ["full", "VEV"], random_state=1, tol=1e-5,
                               acceleration="squarem")
    for row in table.itertuples():
        alone = _fit(X, n_components=row.n_components, covariance_type=row.covariance_type,
                     random_state=1, tol=1e-5, acceleration="squarem")
        assert row.n_iter == alone.n_iter_
        np.testing.assert_allclose(row.log_likelihood, alone.score(X) * len(X), rtol=1e-10)
    assert best.acceleration == "squarem"


def test_missing_values_with_acceleration(X):
    holes = X.copy()
    rng = np.random.RandomState(7)
    holes[rng.rand(*holes.shape) < 0.15] = np.nan
    plain = _fit(holes, covariance_type="full", missing="marginalize", acceleration=None)
    accelerated = _fit(holes, covariance_type="full", missing="marginalize", acceleration="squarem")
    assert np.all(np.diff(accelerated.lower_bounds_) >= -1e-13)
    assert accelerated.lower_bound_ >= plain.lower_bound_ - TOL
    assert accelerated.n_iter_ < plain.n_iter_


@pytest.mark.parametrize("model", ["VEV", "EVE", "VEE", "EEV"])
def test_extrapolated_points_keep_the_models_constraints(X, model):
    # reg_covar=0: the extrapolated points alone (no regularisation to take off and add back)
    gm = _fit(X, covariance_type=model, acceleration=None, max_iter=5, reg_covar=0.0)
    family = GaussianFamily(4, covariance_type=model, reg_covar=0.0)
    parameters = family.parameters_from(gm.__dict__)
    vector = family.to_unconstrained(parameters)
    moved = family.from_unconstrained(vector + 0.05 * np.random.RandomState(0).randn(len(vector)),
                                      parameters)
    cov, vol, shapes, orient = moved.covariances, moved.volumes, moved.shapes, moved.orientations
    rebuilt = (orient * (vol[:, None] * shapes)[:, None, :]) @ np.swapaxes(orient, 1, 2)
    np.testing.assert_allclose(rebuilt, cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.prod(shapes, axis=1), 1.0, rtol=1e-10)
    if model[0] == "E":
        np.testing.assert_allclose(vol, vol[0], rtol=1e-10)
    if model[1] == "E":
        np.testing.assert_allclose(shapes, np.broadcast_to(shapes[0], shapes.shape), rtol=1e-8)
    if model[2] == "E":
        np.testing.assert_allclose(np.abs(orient), np.broadcast_to(np.abs(orient[0]), orient.shape),
                                   atol=1e-8)


def test_online_em_refuses_squarem_and_takes_auto(X):
    with pytest.raises(ValueError, match="online EM .* takes acceleration='auto' or None"):
        GaussianMixture(2, algorithm="online", acceleration="squarem").fit(X)
    with pytest.raises(ValueError, match="online EM"):
        GaussianMixture(2, acceleration="squarem").partial_fit(X)
    gm = GaussianMixture(2, algorithm="online", batch_size=500, max_iter=3, random_state=0).fit(X)
    assert gm.acceleration == "auto" and np.all(np.isfinite(gm.means_))


def test_bad_acceleration_is_refused(X):
    with pytest.raises(ValueError, match="'acceleration' parameter"):
        GaussianMixture(2, acceleration="anderson").fit(X)


def test_cli_acceleration_choices_reach_the_model(tmp_path, monkeypatch, X):
    from daskem import load
    from daskem.cli import main

    np.save(tmp_path / "x.npy", X)
    monkeypatch.chdir(tmp_path)
    cluster = ["--workers", "1", "--threads-per-worker", "2", "--no-processes", "--no-dashboard", "--quiet"]
    for choice, expected in [("none", None), ("squarem", "squarem"), (None, "auto")]:
        flag = [] if choice is None else ["--acceleration", choice]
        with pytest.raises(SystemExit) as info:
            main(["fit", "x.npy", "-k", "3", "--random-state", "0", "--out", f"{choice}.npz",
                  *flag, *cluster])
        assert info.value.code == 0
        model = load(tmp_path / f"{choice}.npz")
        assert model.acceleration == expected
    plain = _fit(X, n_components=3, tol=1e-3, max_iter=100, acceleration=None)
    np.testing.assert_allclose(load(tmp_path / "none.npz").means_, plain.means_, rtol=1e-10)
    with pytest.raises(SystemExit) as info:
        main(["fit", "x.npy", "-k", "3", "--bayesian", "--acceleration", "squarem", "--out", "b.npz",
              *cluster])
    assert info.value.code == 2 and not (tmp_path / "b.npz").exists()
