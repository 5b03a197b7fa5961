"""select_model: a whole grid of mixtures fitted in shared passes over the data."""

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import ChunkReads, make_blobs
from daskem import GaussianMixture, select_model

GRID = dict(n_components=[1, 2, 3, 4], covariance_types=("full", "diag", "spherical", "tied"))


def test_grid_models_equal_separate_fits_with_the_same_seed():
    X = make_blobs(900)
    Xd = da.from_array(X, chunks=200)
    table, best = select_model(Xd, random_state=0, n_init=2, **GRID)
    assert len(table) == 16
    for _, row in table.iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            alone = GaussianMixture(
                row.n_components, covariance_type=row.covariance_type, random_state=0, n_init=2
            ).fit(Xd)
        assert row.n_iter == alone.n_iter_
        np.testing.assert_allclose(row.bic, alone.bic(Xd), rtol=1e-9)
        np.testing.assert_allclose(row.aic, alone.aic(Xd), rtol=1e-9)
        np.testing.assert_allclose(row.log_likelihood, alone.score(Xd) * len(X), rtol=1e-9)
    (best_row,) = table[table.bic == table.bic.min()].itertuples()
    assert (best.n_components, best.covariance_type) == (best_row.n_components, best_row.covariance_type)


def test_bic_picks_the_generating_number_of_components():
    table, best = select_model(make_blobs(1500), random_state=0, **GRID)
    assert best.n_components == 3
    assert best.covariance_type == "full"
    assert table.loc[table.bic.idxmin(), "n_components"] == 3


def test_the_grid_reads_each_chunk_once_per_pass_of_its_longest_fit():
    X = make_blobs(1200)
    reads = ChunkReads(X, 300)
    with dask.config.set(scheduler="threads"):
        table, _ = select_model(reads.array, random_state=0, cache=False, **GRID)
    n_chunks = 4
    assert sorted(reads.counts) == list(range(n_chunks))
    # the longest candidate's passes (validation, k-means|| and EM) + one pass scoring
    # every final model
    passes = table.n_passes.max() + 1
    per_chunk = np.array([reads.counts[c] for c in range(n_chunks)])
    # the first k-means|| centre of each candidate is fetched from its own chunk
    assert np.all(per_chunk >= passes) and np.all(per_chunk <= passes + 1)
    separate = table.n_passes.sum()
    assert per_chunk.max() * 5 < separate


def test_sample_weights_reach_every_candidate():
    X = make_blobs(600)
    w = np.random.RandomState(0).randint(0, 3, size=len(X))
    table, _ = select_model(X, sample_weight=w, random_state=0, n_components=[2], covariance_types=["diag"])
    alone = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(table.bic[0], alone.bic(X, sample_weight=w), rtol=1e-9)


def test_a_failing_candidate_is_reported_not_fatal():
    X = np.repeat(make_blobs(30), 3, axis=0)
    table, best = select_model(
        X, n_components=[1, 40], covariance_types=["full"], reg_covar=0, random_state=0
    )
    failed = table[table.n_components == 40].iloc[0]
    assert "ill-defined empirical covariance" in failed.error
    assert np.isnan(failed.bic)
    assert best.n_components == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"criterion": "likelihood"}, "criterion must be one of"),
        ({"covariance_types": ["banded"]}, "covariance_type"),
        ({"means_init": np.zeros((2, 3))}, "does not take means_init"),
        ({"n_components": []}, "must not be empty"),
    ],
)
def test_bad_grid_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_model(make_blobs(60), **kwargs)
