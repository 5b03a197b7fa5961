"""The engine and the passes under it: drive(), pass counting, and a whole fit of a toy family."""

import dataclasses
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import ChunkReads, make_blobs
from daskem import GaussianMixture, _passes, select_model
from daskem._engine import FitSettings, fit_steps
from daskem._fit_data import new_tally, prepare_data
from daskem._initialization import coreset_steps, kmeans_parallel_steps, lloyd_steps
from daskem._model import MixtureFamily
from daskem._passes import MERGE_BYTES, PassRequest, PassTally, RowsRequest, drive, merge_fan_in


def _column_sums(block, ctx, row_start, sample_weight):
    return np.asarray(block, dtype=np.float64).sum(axis=0) * ctx["scale"]


def _sum_steps(scale, rounds):
    """Asks for the scaled column sums ``rounds`` times; returns the list of results."""
    out = []
    for _ in range(rounds):
        out.append((yield PassRequest(_column_sums, {"scale": scale}, 2)))
    return out


@pytest.fixture
def reads():
    return ChunkReads(np.arange(40.0).reshape(20, 2), 5)


def test_drive_evaluates_all_pending_requests_in_one_pass(reads):
    with dask.config.set(scheduler="threads"):
        short, long = drive(reads.array, [_sum_steps(1.0, 2), _sum_steps(2.0, 3)])
    total = np.arange(40.0).reshape(20, 2).sum(axis=0)
    assert [list(r) for r in short] == [list(total)] * 2
    assert [list(r) for r in long] == [list(2 * total)] * 3
    # three rounds: the longest generator's, each reading every chunk once
    assert reads.counts == {c: 3 for c in range(4)}


def test_drive_counts_its_passes_in_a_tally(reads):
    tally = PassTally(20)
    with dask.config.set(scheduler="threads"):
        drive(reads.array, [_sum_steps(1.0, 2), _sum_steps(1.0, 4)], tally=tally)
    assert tally.passes == 4


def test_drive_fetches_rows_by_index_without_a_pass(reads):
    def steps():
        rows = yield RowsRequest(np.array([7, 2, 7]))
        return rows

    with dask.config.set(scheduler="threads"):
        (rows,) = drive(reads.array, [steps()])
    np.testing.assert_array_equal(rows, [[14.0, 15.0], [4.0, 5.0], [14.0, 15.0]])
    # only the chunks holding rows 2 and 7
    assert set(reads.counts) == {0, 1}


def test_drive_returns_a_failing_generators_error_when_asked():
    def failing():
        yield PassRequest(_column_sums, {"scale": 1.0}, 2)
        raise ValueError("broken model")

    X = da.ones((10, 2), chunks=5)
    with pytest.raises(ValueError, match="broken model"):
        drive(X, [failing(), _sum_steps(1.0, 2)])
    error, ok = drive(X, [failing(), _sum_steps(1.0, 2)], on_error="return")
    assert isinstance(error, ValueError) and len(ok) == 2


def test_pass_tally_counts_partial_passes_by_rows_read():
    tally = PassTally(100, passes=2)
    tally.add(30)
    assert tally.passes == 3
    tally.add(70)
    assert tally.passes == 3
    tally.add()
    assert tally.passes == 4


def test_pass_tally_counts_the_passes_a_step_generator_asks_for():
    tally = PassTally(10)

    def outer():
        first = yield from tally.count(_sum_steps(1.0, 3))
        return len(first)

    gen = outer()
    request = next(gen)
    results = 0
    try:
        while True:
            assert isinstance(request, PassRequest)
            request = gen.send(np.zeros(2))
            results += 1
    except StopIteration as stop:
        assert stop.value == 3
    assert tally.passes == 3


# ------------------------------------------------ a toy family on the engine


def _mean_statistics(block, ctx, row_start, sample_weight):
    z = np.asarray(block, dtype=np.float64) - ctx["centre"]
    return np.concatenate([z.sum(axis=0), [np.sum(z**2), len(z)]])


@dataclasses.dataclass(frozen=True)
class MeanFamily(MixtureFamily):
    """One unit-variance Gaussian whose mean EM moves halfway to the data mean per step.

    Its lower bound is minus half the mean squared distance to the centre:
    an independent, closed-form model to run the engine's loop on.
    """

    n_components: int = 1

    def check(self, n_samples, n_features):
        pass

    def statistics_request(self, parameters, shift, dtype):
        return PassRequest(_mean_statistics, {"centre": parameters}, len(parameters) + 2), None

    def update(self, stats, layout, parameters, shift, dtype):
        d = len(parameters)
        mean_offset, sq, n = stats[:d] / stats[-1], stats[d], stats[-1]
        return parameters + 0.5 * mean_offset, -0.5 * sq / n

    def initialization_steps(self, data, rng, init=0):
        return (yield RowsRequest(np.array([rng.randint(data.X.shape[0])])))[0]

    def n_parameters(self, n_features):
        return n_features

    def attributes(self, parameters):
        return {"means_": parameters}

    def parameters_from(self, attributes):
        return attributes["means_"]

    parameter_attributes = ("means_",)

    def kernel_parameters(self, parameters, dtype):
        raise NotImplementedError

    def sample(self, parameters, n_samples, rng):
        raise NotImplementedError


def _toy_fit(X, **settings):
    family = MeanFamily()
    data = prepare_data(GaussianMixture(), X, None, family, cache=False)
    tally = new_tally(data)
    states = []
    steps = fit_steps(family, FitSettings(**settings), data, tally=tally, on_state=states.append)
    (result,) = drive(data.X, [steps])
    return result, data, states


def test_engine_runs_any_family_through_the_interface():
    X = np.random.RandomState(0).randn(400, 2) + [3.0, -1.0]
    result, data, _ = _toy_fit(da.from_array(X, chunks=100), tol=1e-12, max_iter=200)
    best = result.best
    assert best.converged
    np.testing.assert_allclose(best.parameters, X.mean(axis=0), atol=1e-5)
    assert np.all(np.diff(best.lower_bounds) >= 0)
    # the validation pass plus one per iteration (the first centre is fetched by index)
    assert result.n_passes == 1 + best.n_iter


def test_engine_keeps_the_restart_with_the_best_lower_bound():
    X = np.random.RandomState(1).randn(300, 2)
    result, _, states = _toy_fit(X, n_init=4, max_iter=2, random_state=0, tol=0.0)
    finals = {}
    for s in states:
        finals[s.init] = s.lower_bound
    assert result.best.lower_bound == max(finals.values())
    assert sorted(finals) == [0, 1, 2, 3]


# ---------------------------------------------------- passes of real fits


def test_a_fit_reports_the_passes_it_made_over_the_data():
    X = make_blobs(1200)
    reads = ChunkReads(X, 300)
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, random_state=0, cache=False, init_params="k-means||").fit(reads.array)
    # validation, k-means|| (5 sampling rounds, 1 candidate pass, 1 to 3 Lloyd passes,
    # the final statistics), one per EM iteration
    assert 1 + 8 + gm.n_iter_ <= gm.n_passes_ <= 1 + 10 + gm.n_iter_
    per_chunk = np.array([reads.counts[c] for c in range(4)])
    # the first k-means|| centre is fetched from its own chunk: one read more there
    assert np.all(per_chunk >= gm.n_passes_) and np.all(per_chunk <= gm.n_passes_ + 1)


def test_with_sample_weights_the_kmeans_parallel_start_reads_each_chunk_once_per_pass():
    X = make_blobs(1200)
    reads = ChunkReads(X, 300)
    weights = da.from_array(np.linspace(0.5, 2.0, len(X)), chunks=300)
    with dask.config.set(scheduler="threads"):
        start = GaussianMixture(3, random_state=0, cache=False, max_iter=0,
                                init_params="k-means||").fit(reads.array, sample_weight=weights)
    # with weights the first centre is drawn in a pass too: nothing is fetched by index,
    # and the sample whose k-means competes rides on a pass k-means|| makes anyway
    # (validation, 1 + 5 sampling rounds, the candidates, 1 to 3 Lloyd passes, the
    # final statistics)
    assert all(reads.counts[c] == start.n_passes_ for c in range(4))
    assert 10 <= start.n_passes_ <= 12


def test_the_kmeans_start_reads_a_coreset_then_lloyd_passes():
    X = make_blobs(1200)
    reads = ChunkReads(X, 300)
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = GaussianMixture(3, random_state=0, cache=False, max_iter=0,
                                init_params="kmeans").fit(reads.array)
    # validation, the coreset, one Lloyd pass, the final statistics; nothing by index (the
    # coreset of 1,200 rows is every row, so its k-means has converged and the first Lloyd
    # pass moves the centres by less than the tolerance)
    assert start.n_passes_ == 4
    assert all(reads.counts[c] == start.n_passes_ for c in range(4))
    np.testing.assert_allclose(np.sort(start.means_[:, 0]), [-4, 0, 5], atol=0.3)


def test_the_kmeans_start_seeds_its_lloyd_passes_with_the_coreset_starts_centres(monkeypatch):
    from daskem import _initialization

    seeds = {}

    def recording(name, steps):
        def record(shift, centres, *args, **kwargs):
            seeds.setdefault(name, centres.copy())
            return (yield from steps(shift, centres, *args, **kwargs))
        return record

    monkeypatch.setattr(_initialization, "lloyd_steps", recording("kmeans", _initialization.lloyd_steps))
    monkeypatch.setattr(_initialization, "hard_statistics_steps",
                        recording("coreset", _initialization.hard_statistics_steps))
    X = da.from_array(make_blobs(20_000, seed=6), chunks=3_000)
    for init in ("coreset", "kmeans"):
        with dask.config.set(scheduler="threads"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            GaussianMixture(4, random_state=1, max_iter=0, init_params=init).fit(X)
    np.testing.assert_array_equal(seeds["kmeans"], seeds["coreset"])


def test_kmeans_parallel_draws_the_competing_sample_in_its_first_round_without_another_pass():
    X = make_blobs(1200)
    tally = PassTally(len(X))
    steps = kmeans_parallel_steps(len(X), np.zeros(3), 3, np.random.RandomState(0), weighted=False,
                                  sample_rows=50)
    with dask.config.set(scheduler="threads"):
        ((centres, _, sample),) = drive(da.from_array(X, chunks=300), [steps], tally=tally)
    # 5 sampling rounds and the candidates' pass, as without the sample
    assert tally.passes == 6
    assert centres.shape == (3, 3)
    # 50 distinct rows of the data
    assert sample.shape == (50, 3) and len(np.unique(sample, axis=0)) == 50
    assert all(np.any(np.all(X == row, axis=1)) for row in sample)


def test_the_coreset_start_makes_two_passes_after_validation():
    X = make_blobs(30_000)
    reads = ChunkReads(X, 7_000)
    with dask.config.set(scheduler="threads"):
        start = GaussianMixture(3, random_state=0, cache=False, max_iter=0,
                                init_params="coreset").fit(reads.array)
    # validation, the coreset, the final statistics; nothing fetched by index
    assert start.n_passes_ == 3
    assert all(reads.counts[c] == 3 for c in range(len(reads.counts)))
    np.testing.assert_allclose(np.sort(start.means_[:, 0]), [-4, 0, 5], atol=0.1)


def _coreset(X, chunks, sample_weight=None, seed=0):
    shift = X.mean(axis=0)
    steps = coreset_steps(len(X), shift, 3, np.random.RandomState(seed))
    weights = None if sample_weight is None else da.from_array(sample_weight[:, None], chunks=(chunks, 1))
    with dask.config.set(scheduler="threads"):
        ((rows, w),) = drive(da.from_array(X, chunks=(chunks, X.shape[1])), [steps], sample_weight=weights)
    return rows + shift, w


def test_weighted_sums_over_the_coreset_estimate_those_over_the_data():
    X = make_blobs(30_000)
    rows, weights = _coreset(X, 7_000)
    # at most 10,000 rows: 5,000 drawn by weight, 5,000 by squared distance to the mean
    assert 9_000 <= len(rows) <= 10_000
    assert all(np.abs(X - row).max(axis=1).min() < 1e-12 for row in rows[::500])
    z, zc = X - X.mean(axis=0), rows - X.mean(axis=0)
    np.testing.assert_allclose(weights.sum(), len(X), rtol=0.02)
    np.testing.assert_allclose(weights @ zc, np.zeros(3), atol=0.03 * len(X))
    np.testing.assert_allclose(weights @ np.sum(zc**2, axis=1), np.sum(z**2), rtol=0.02)


def test_the_coreset_does_not_depend_on_the_chunking():
    X = make_blobs(30_000)
    rows, weights = _coreset(X, 30_000)
    rows_uneven, weights_uneven = _coreset(X, 4_321)
    np.testing.assert_allclose(rows_uneven, rows, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights_uneven, weights, rtol=1e-12)


def test_a_coreset_of_few_rows_is_every_row_with_its_weight():
    X = make_blobs(600)
    w = np.linspace(0.0, 2.0, len(X))
    rows, weights = _coreset(X, 250, sample_weight=w)
    # the zero-weight row is left out; the others come once each, weighing what they weigh
    assert len(rows) == len(X) - 1
    order = np.lexsort(rows.T)
    expected = np.lexsort(X[1:].T)
    np.testing.assert_allclose(rows[order], X[1:][expected], rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights[order], w[1:][expected], rtol=1e-12)


def test_the_coreset_draws_a_small_cluster_far_away_many_times_more_than_a_uniform_sample():
    rng = np.random.RandomState(0)
    far = np.array([40.0, 40.0, 40.0])
    X = np.vstack([make_blobs(59_970), far + rng.randn(30, 3)])
    X = X[rng.permutation(len(X))]
    rows, weights = _coreset(X, 15_000)
    in_far = np.linalg.norm(rows - far, axis=1) < 5
    # a uniform sample of 10,000 rows would hold 5 of the 30 (0.05%); the second draw
    # takes every one, and each weighs one row
    assert in_far.sum() == 30
    np.testing.assert_allclose(weights[in_far], 1.0, rtol=1e-4)
    start = GaussianMixture(4, random_state=0, max_iter=0, init_params="coreset").fit(
        da.from_array(X, chunks=15_000))
    assert np.linalg.norm(start.means_ - far, axis=1).min() < 1.0


def _blob_rows(n_per_blob=200):
    rng = np.random.RandomState(0)
    centres = np.array([[-10.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    X = np.vstack([c + rng.randn(n_per_blob, 2) for c in centres])
    return X, centres


def test_the_first_lloyd_pass_keeps_the_challenger_when_its_inertia_is_lower():
    X, centres = _blob_rows()
    # two centres share the first blob and none is near the third
    poor = np.array([[-10.5, 0.0], [-9.5, 0.0], [0.0, 0.0]])
    tally = PassTally(len(X))
    with dask.config.set(scheduler="threads"):
        (kept,) = drive(da.from_array(X, chunks=150),
                        [lloyd_steps(np.zeros(2), poor, max_iter=1, challenger=centres)], tally=tally)
    # one pass for both sets; its Lloyd update is the blobs' means
    assert tally.passes == 1
    np.testing.assert_allclose(kept, [X[:200].mean(0), X[200:400].mean(0), X[400:].mean(0)])


def test_the_first_lloyd_pass_keeps_its_own_centres_when_the_challenger_is_worse():
    X, centres = _blob_rows()
    poor = np.array([[-10.5, 0.0], [-9.5, 0.0], [0.0, 0.0]])
    with dask.config.set(scheduler="threads"):
        (kept,) = drive(da.from_array(X, chunks=150),
                        [lloyd_steps(np.zeros(2), centres, max_iter=1, challenger=poor)])
    np.testing.assert_allclose(kept, [X[:200].mean(0), X[200:400].mean(0), X[400:].mean(0)])


def _in_memory_lloyd(X, centres, tol):
    """Lloyd iterations with scikit-learn's stopping rule, from the formulas: (centres, iterations)."""
    threshold = tol * X.var(axis=0).mean()
    for iteration in range(1, 301):
        labels = ((X[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = np.array([X[labels == j].mean(axis=0) if np.any(labels == j) else centres[j]
                        for j in range(len(centres))])
        moved, centres = ((new - centres) ** 2).sum(), new
        if moved <= threshold:
            return centres, iteration
    return centres, 300


def test_lloyd_passes_stop_on_scikit_learns_rule_at_the_in_memory_iterations_centres():
    rng = np.random.RandomState(3)
    X = np.vstack([c + rng.randn(300, 2) for c in ([-2.0, 0.0], [0.0, 1.5], [2.0, 0.0])])
    start = np.array([[-3.0, -1.0], [-2.5, 0.5], [3.0, 1.0]])
    expected, iterations = _in_memory_lloyd(X, start, tol=1e-4)
    assert iterations > 3  # the start is poor: the rule, not the first pass, ends the iterations
    shift = X.mean(axis=0)
    tally = PassTally(len(X))
    with dask.config.set(scheduler="threads"):
        (centres,) = drive(da.from_array(X, chunks=250), [lloyd_steps(shift, start - shift, tol=1e-4)],
                           tally=tally)
    assert tally.passes == iterations
    np.testing.assert_allclose(centres + shift, expected, rtol=1e-10, atol=1e-12)


def test_select_model_reports_the_passes_of_the_whole_grid():
    X = make_blobs(1200)
    reads = ChunkReads(X, 300)
    with dask.config.set(scheduler="threads"):
        table, _ = select_model(reads.array, n_components=[1, 2, 3], covariance_types=["full", "diag"],
                                random_state=0, cache=False, init_params="k-means||")
    per_chunk = np.array([reads.counts[c] for c in range(4)])
    assert np.all(per_chunk >= table.attrs["n_passes"])
    assert np.all(per_chunk <= table.attrs["n_passes"] + 1)
    # each candidate reports the passes it would make alone (validation, 8 to 10 for
    # k-means||, its EM iterations); the grid: its longest candidate's, and one scoring pass
    init = table.n_passes - 1 - table.n_iter
    assert np.all(init >= 8) and np.all(init <= 10)
    assert table.attrs["n_passes"] == table.n_passes.max() + 1


def test_online_passes_count_rows_read():
    X = make_blobs(1200)
    gm = GaussianMixture(3, algorithm="online", batch_size=300, max_iter=2, random_state=0, tol=0.0,
                         init_params="k-means||")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(da.from_array(X, chunks=300))
    # validation (1) + k-means|| on one batch (8 to 10 passes over a quarter of the rows)
    # + 2 epochs, rounded up
    assert gm.n_passes_ in (5, 6)


def test_a_step_may_ask_for_several_requests_in_one_pass(reads):
    def steps():
        both = yield (PassRequest(_column_sums, {"scale": 1.0}, 2),
                      PassRequest(_column_sums, {"scale": 3.0}, 2))
        return both

    tally = PassTally(20)
    with dask.config.set(scheduler="threads"):
        ((ones, threes),) = drive(reads.array, [steps()], tally=tally)
    total = np.arange(40.0).reshape(20, 2).sum(axis=0)
    np.testing.assert_array_equal(ones, total)
    np.testing.assert_array_equal(threes, 3 * total)
    assert tally.passes == 1
    assert reads.counts == {c: 1 for c in range(4)}


def _keyed_rows(block, ctx, row_start, sample_weight):
    """Every row of the chunk as (key, row index, padding), the key a hash of the index."""
    index = np.arange(row_start, row_start + len(block), dtype=np.float64)
    out = np.zeros((ctx["top"], ctx["width"]))
    out[:, 0] = -np.inf
    keys = np.sin(index * 12.9898) * 43758.5453 % 1.0
    best = np.argsort(-keys)[: ctx["top"]]
    out[: len(best), 0], out[: len(best), 1] = keys[best], index[best]
    return out.reshape(-1)


def test_merges_of_large_vectors_take_fewer_vectors_at_a_time():
    assert merge_fan_in(1000) == 16
    # 1 MiB of sampled rows per chunk (a d=16 sample): 4 per merge
    assert merge_fan_in(2**17) == 4
    assert merge_fan_in(10 * MERGE_BYTES) == 2


def _top_steps(top, width):
    return (yield (PassRequest(_keyed_rows, {"top": top, "width": width}, top * width, top=top),))


def test_a_pass_of_large_top_n_vectors_keeps_the_global_top_n_through_small_merges(monkeypatch):
    top, width = 10, MERGE_BYTES // (8 * 10 * 3)  # three chunks' vectors fill one merge
    combine, merged = _passes._combine, []

    def counting_combine(vectors, segments):
        merged.append(len(vectors))
        return combine(vectors, segments)

    monkeypatch.setattr(_passes, "_combine", counting_combine)
    X = da.zeros((400, 2), chunks=(10, 2))
    with dask.config.set(scheduler="threads"):
        ((rows,),) = drive(X, [_top_steps(top, width)])
    index = np.arange(400, dtype=np.float64)
    keys = np.sin(index * 12.9898) * 43758.5453 % 1.0
    np.testing.assert_array_equal(rows[:, 1], index[np.argsort(-keys, kind="stable")[:top]])
    # 40 chunks in merges of at most three vectors (16 at a time for small vectors)
    assert max(merged) == 3 and len(merged) == 14 + 5 + 2 + 1


def test_merging_top_n_segments_keeps_the_largest_keys_and_ties_in_vector_order():
    top, width = 4, 3
    rng = np.random.default_rng(5)
    vectors = []
    for j in range(3):
        rows = np.column_stack([rng.choice([0.5, 0.25, -np.inf], size=top), np.full(top, j),
                                np.arange(top)])
        vectors.append(np.concatenate([[7.0 * j, 1.0], rows.reshape(-1)]))
    merged = _passes._combine(vectors, ((0, 2, 0), (2, 2 + top * width, top)))
    np.testing.assert_array_equal(merged[:2], [21.0, 3.0])
    everything = np.concatenate([v[2:].reshape(top, width) for v in vectors])
    expected = everything[np.argsort(-everything[:, 0], kind="stable")[:top]]
    np.testing.assert_array_equal(merged[2:].reshape(top, width), expected)
