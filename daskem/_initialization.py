"""Initial mixtures: coreset (default), k-means||, kmeans, k-means++, random, random_from_data, hc.

Every method ends the way scikit-learn's does: responsibilities (hard or soft),
which the model family turns into a mixture by one M-step (see
:meth:`daskem._gaussian.GaussianFamily.initialization_steps`).
Only passes over the data are distributed; the small problems (choosing K
centres among a few hundred candidates) run in memory.

Random numbers that depend on a row come from a counter-based hash of
(seed, global row index), so results do not depend on how rows are chunked.

Each method is a step generator (see :mod:`daskem._passes`): it yields its
passes, so that many initialisations can share them.
"""

import functools
import hashlib

import numpy as np
from threadpoolctl import ThreadpoolController

from ._kernels import (
    StatisticsLayout,
    accumulate_hard_statistics,
    accumulate_statistics,
    assignment_sums,
)
from ._passes import PassRequest, RowsRequest
from ._scratch import scratch, scratch_take

# k-means|| (Bahmani et al. 2012): rounds of D^2 sampling, each one pass, each
# drawing this many rows per component
KMEANS_PARALLEL_ROUNDS = 5
KMEANS_PARALLEL_OVERSAMPLING = 2
# Lloyd iterations on the full data for init_params='kmeans' (as KMeans), and
# the few that refine k-means|| centres before the first EM iteration.
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4
KMEANS_PARALLEL_LLOYD = 3
# rows of the samples clustered in memory (the coreset, and k-means||'s competing uniform
# sample): at least this many, and this many per component
KMEANS_SAMPLE_ROWS = 10_000
KMEANS_SAMPLE_PER_COMPONENT = 100
# ... and at most this many bytes of rows per chunk (2,016 rows at d=64, 7,710 at d=16)
KMEANS_SAMPLE_BYTES = 2**20
# k-means restarts on k-means||'s uniform sample (in memory: they cost milliseconds)
SAMPLE_RESTARTS = 5
# k-means restarts of the in-memory clustering of the k-means|| candidates
CANDIDATE_RESTARTS = 10
# k-means restarts on the coreset of init_params='coreset' and 'kmeans' (in memory, about 0.2 s for
# 7,710 rows at d=16 and K=16; with 5, one seed of five stopped in a worse optimum of
# 1,000,000 x 16 rows that EM kept)
CORESET_RESTARTS = 20
# ... stopped at a hundred times scikit-learn's default tolerance: the centres only seed one
# hard assignment and EM (the same optima on every seed of RESULTS.md's checks, in 0.12 s
# instead of 0.21 s)
CORESET_KMEANS_TOL = 1e-2
# bytes of one row block's (rows, centres) scores in the nearest-centre search: 1 MiB, where
# 256 KiB made four times as many short NumPy calls, which two threads spent waiting on each
# other for the GIL (the hard statistics of 20 chunks of 50,000 x 16 rows, K=16, on two
# threads: 100 -> 80 ms; one thread unchanged)
_SCORE_BYTES = 2**20
# a D^2 draw's keys by blocks of this many rows (temporaries of 64 KiB, below glibc's mmap
# threshold)
_KEY_ROWS = 8192


def row_uniforms(seed, start, n_rows, n_cols=1):
    """Uniform (0, 1) numbers for rows start..start+n_rows, independent of chunking.

    SplitMix64 of (seed, row * n_cols + col): a counter-based generator, so a
    row gets the same numbers whichever chunk it is in.
    """
    x = np.arange(start, start + n_rows, dtype=np.uint64)[:, None] * np.uint64(n_cols)
    x = x + np.arange(n_cols, dtype=np.uint64)[None, :]
    bits = np.empty_like(x)
    # uint64 arithmetic wraps around by design here; in place, as chunks are large
    with np.errstate(over="ignore"):
        x += np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x ^= np.right_shift(x, np.uint64(shift), out=bits)
            x *= np.uint64(factor)
        x ^= np.right_shift(x, np.uint64(31), out=bits)
    # 53 random bits, shifted off zero so that log(u) is finite
    u = np.right_shift(x, np.uint64(11), out=bits).astype(np.float64)
    u += 0.5
    u /= 2.0**53
    return u


@functools.lru_cache(maxsize=1)
def _in_memory_pools():
    # after scikit-learn's import, so that its OpenMP runtime is among the pools found
    # (finding them takes milliseconds: once per process)
    import sklearn.cluster  # noqa: F401

    return ThreadpoolController()


def in_memory_threads():
    """One thread for the small clusterings run on the client between passes.

    They take milliseconds to a few tenths of a second, and an OpenMP or BLAS
    pool started for them keeps its threads spinning into the next pass, whose
    tasks it slows (measured: +0.3 s on a 2.2 s initialisation of 1,000,000 x 16
    rows on two cores).
    """
    return _in_memory_pools().limit(limits=1)


def _nearest(rows, centres, shift=None, out=None):
    """(index of the nearest centre, squared distance to it) of every shifted row.

    The argmax of z.c - |c|^2 / 2 is the nearest centre, and |z|^2 minus twice
    that maximum its squared distance; row blocks keep the (rows, centres)
    scores in the core's cache. With ``shift``, ``rows`` are raw and each
    block is shifted into a reused buffer: no shifted copy of the chunk. The
    work arrays are scratch arrays (:func:`daskem._scratch.scratch`), and
    ``out``, a pair of arrays (intp, float64) of ``len(rows)``, takes the
    result.
    """
    n, d = rows.shape
    m = len(centres)
    labels, d2 = (np.empty(n, dtype=np.intp), np.empty(n)) if out is None else out
    if m == 1:
        # one centre: the distance itself, no search (and no cancellation), one subtraction
        # of the shifted centre for all rows (no scores to keep in cache)
        labels[:] = 0
        centre = centres[0] if shift is None else centres[0] + shift
        diff = np.subtract(rows, centre, out=scratch("nearest.rows", (n, d)))
        np.einsum("nd,nd->n", diff, diff, out=d2)
        return labels, d2
    half_norms = 0.5 * np.einsum("md,md->m", centres, centres)
    step = max(256, _SCORE_BYTES // (8 * max(m, d, 1)))
    width = min(n, step)
    scores = scratch("nearest.scores", (width, m))
    # contiguous centres^T: OpenBLAS runs z @ C^T twice as fast with it (d=16, K=16); the
    # flat positions of each row's best score pick them (take_along_axis: 2.5x slower)
    centres_t = np.ascontiguousarray(centres.T)
    row_offsets = np.arange(0, width * m, m)
    picked = scratch("nearest.picked", (width,), np.intp)
    shifted = scratch("nearest.rows", (width, d)) if shift is not None else None
    for s in range(0, n, step):
        e = min(s + step, n)
        zb = rows[s:e] if shift is None else np.subtract(rows[s:e], shift, out=shifted[: e - s])
        np.einsum("nd,nd->n", zb, zb, out=d2[s:e])
        g = np.matmul(zb, centres_t, out=scores[: e - s])
        g -= half_norms
        best = np.argmax(g, axis=1, out=labels[s:e])
        flat = np.add(best, row_offsets[: e - s], out=picked[: e - s])
        d2[s:e] -= 2.0 * np.take(g.reshape(-1), flat)
    return labels, np.maximum(d2, 0.0, out=d2)


def _d2_sample_func(block, ctx, row_start, sample_weight):
    """Top-n rows of a chunk by Efraimidis-Spirakis keys log(u) / (w D^2(x)).

    Keeping the n largest keys over all chunks samples n rows without
    replacement with probability proportional to w D^2, in one pass and with
    no global normaliser. With no centres yet, D^2 = 1 (weighted uniform).
    Each row is (key, z), or (key, global row index, w, z) where
    ``ctx["weights"]`` is set.
    """
    n_take = ctx["n_take"]
    block = np.asarray(block)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    # chunk-sized work arrays from the pass task's scratch: worker processes fault every fresh page in
    keys = scratch("d2.keys", (len(block),))
    for s in range(0, len(block), _KEY_ROWS):
        rows = block[s : s + _KEY_ROWS]
        part = np.log(row_uniforms(ctx["seed"], row_start + s, len(rows))[:, 0])
        if len(ctx["centres"]):
            d2 = _nearest(rows, ctx["centres"], shift=ctx["shift"])[1]
            if w is not None:
                d2 *= w[s : s + _KEY_ROWS]
        elif w is None:
            keys[s : s + len(rows)] = part  # every row drawable, weighing 1
            continue
        else:
            d2 = w[s : s + _KEY_ROWS]
        drawable = d2 > 0
        np.divide(part, d2, out=part, where=drawable)
        part[~drawable] = -np.inf
        keys[s : s + len(rows)] = part
    first = 3 if ctx.get("weights") else 1
    out = np.full((n_take, block.shape[1] + first), -np.inf)
    # the n largest keys, in decreasing order (a partition first: n is small against a chunk)
    if len(keys) <= n_take:
        top = np.arange(len(keys))
    else:
        top = np.argpartition(np.negative(keys, out=scratch("d2.negated", keys.shape)), n_take - 1)[:n_take]
    top = top[np.argsort(-keys[top], kind="stable")]
    out[: len(top), 0] = keys[top]
    if first == 3:
        out[: len(top), 1] = row_start + top
        out[: len(top), 2] = 1.0 if w is None else w[top]
    drawn = scratch_take("d2.rows", block, top)
    np.subtract(drawn, ctx["shift"], out=out[: len(top), first:], dtype=np.float64)
    return out.reshape(-1)


def _d2_request(shift, centres, n_take, seed, weights=False):
    ctx = {"shift": shift, "centres": centres, "n_take": n_take, "seed": seed, "weights": weights}
    return PassRequest(_d2_sample_func, ctx, n_take * (len(shift) + 1 + 2 * weights), top=n_take)


def _d2_rows(tops):
    """The sampled shifted rows of a D^2 request's result (chunks may have had fewer)."""
    return tops[np.isfinite(tops[:, 0]), 1:]


def d2_sample_steps(shift, centres, n_take, seed):
    """Step generator: n_take shifted rows sampled by w D^2 in one pass."""
    return _d2_rows((yield _d2_request(shift, centres, n_take, seed)))


def _shifted_chunk(block, shift, name):
    """The chunk's shifted rows (float64) and (labels, distances) arrays for
    :func:`_nearest`, all from the pass task's scratch arrays named after
    ``name``: worker processes fault every page of a fresh large array in."""
    block = np.asarray(block)
    z = np.subtract(block, shift, out=scratch(name + ".rows", block.shape), dtype=np.float64)
    return z, (scratch(name + ".labels", (len(z),), np.intp), scratch(name + ".distances", (len(z),)))


def _hard_statistics_func(block, ctx, row_start, sample_weight):
    """Statistics of a chunk with every row assigned to its nearest centre."""
    layout = ctx["layout"]
    out = np.zeros(layout.size)
    z, nearest = _shifted_chunk(block, ctx["shift"], "hard")
    accumulate_hard_statistics(out, layout, z, _nearest(z, ctx["centres"], out=nearest)[0], sample_weight)
    out[layout.offsets[4]] = len(z) if sample_weight is None else sample_weight.sum()
    return out


def hard_statistics_steps(shift, centres, covariance_type):
    """Step generator: statistics of the hard assignment to ``centres`` (one pass)."""
    layout = StatisticsLayout(covariance_type, len(centres), len(shift))
    ctx = {"shift": shift, "centres": centres, "layout": layout}
    stats = yield PassRequest(_hard_statistics_func, ctx, layout.size)
    return stats, layout


def _first_centre_steps(n_samples, shift, rng, weighted):
    """Step generator: a seed for later draws and one uniformly chosen row.

    With sample weights the row is drawn by weight in one pass (so that a
    zero-weight row is never chosen); without, it is fetched by index.
    """
    seed = int(rng.randint(np.iinfo(np.int64).max))
    first = int(rng.randint(n_samples))  # drawn in both cases: same stream
    if weighted:
        centre = yield from d2_sample_steps(shift, np.empty((0, len(shift))), 1, seed)
    else:
        centre = (yield RowsRequest(np.array([first]))) - shift
    return seed, centre


def _centre_sums_func(block, ctx, row_start, sample_weight):
    """Rows assigned to their nearest centre, for each set of centres in ``ctx["centre_sets"]``:
    [counts (K), sums (K d), inertia] per set, then the sum of w |z|^2 of the chunk.

    Counts and sums only: a Lloyd pass needs no second moments, so it costs a
    small fraction of an EM pass.
    """
    z, nearest = _shifted_chunk(block, ctx["shift"], "lloyd")
    w = np.ones(len(z)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    parts = []
    for centres in ctx["centre_sets"]:
        k = len(centres)
        labels, distances = _nearest(z, centres, out=nearest)
        counts, sums, _ = assignment_sums(z, labels, k, w)
        parts += [counts, sums.reshape(-1), [float(w @ distances)]]
    parts.append([float(np.einsum("n,nd,nd->", w, z, z))])
    return np.concatenate(parts)


def assignment_steps(shift, centre_sets):
    """Step generator: each set's counts, sums and inertia of the rows nearest to its centres
    (one pass for all the sets).

    Returns
    -------
    assignments : list of (counts (K,), sums (K, d), inertia)
        Sums of the shifted rows; inertia is the weighted sum of squared
        distances to the nearest centre.
    variance : float
        The data's mean variance over features (scikit-learn's scale for
        its k-means tolerance).
    """
    d = len(shift)
    ctx = {"shift": shift, "centre_sets": list(centre_sets)}
    size = sum(len(c) * (d + 1) + 1 for c in ctx["centre_sets"]) + 1
    out = yield PassRequest(_centre_sums_func, ctx, size)
    assignments, offset = [], 0
    for centres in ctx["centre_sets"]:
        k = len(centres)
        counts = out[offset : offset + k]
        sums = out[offset + k : offset + k + k * d].reshape(k, d)
        assignments.append((counts, sums, float(out[offset + k + k * d])))
        offset += k * (d + 1) + 1
    counts, sums = assignments[0][:2]
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    variance = float(out[-1] / total / d - np.sum(mean**2) / d)
    return assignments, variance


def centre_sums_steps(shift, centres):
    """Step generator: counts and sums of the rows nearest to each centre (one pass).

    Returns
    -------
    counts : ndarray (K,)
    sums : ndarray (K, d)
        Sums of the shifted rows.
    variance : float
        The data's mean variance over features.
    """
    ((counts, sums, _),), variance = yield from assignment_steps(shift, [centres])
    return counts, sums, variance


def _means(counts, sums, previous):
    """Cluster means; an empty cluster keeps its previous centre."""
    return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1e-300)[:, None], previous)


def kmeans_parallel_steps(n_samples, shift, n_components, rng, weighted, rounds=None, sample_rows=0):
    """Step generator: K centres by k-means|| (Bahmani et al. 2012).

    One row chosen uniformly (by weight, with sample weights), then
    ``rounds`` passes that each add 2 * n_components rows sampled by D^2,
    then one pass that counts the rows nearest to each candidate and sums
    them. The candidates are clustered in memory by weighted k-means (with
    restarts: they are few) and each cluster's centre is the mean of the
    rows its candidates gathered, so no further pass is needed.

    With ``sample_rows``, the first round's pass also draws that many rows
    uniformly (by weight), for a k-means of the sample to compete with.

    Returns
    -------
    centres : ndarray (K, d)
        Shifted centres.
    variance : float
        The data's mean variance over features.
    sample : ndarray (n, d) or None
        The shifted sample, if asked for (and ``rounds`` > 0).
    """
    seed, candidates = yield from _first_centre_steps(n_samples, shift, rng, weighted)
    n_rounds = KMEANS_PARALLEL_ROUNDS if rounds is None else rounds
    sample = None
    for r in range(n_rounds):
        request = _d2_request(shift, candidates, KMEANS_PARALLEL_OVERSAMPLING * n_components, seed + r + 1)
        if r == 0 and sample_rows:
            # with no centres, D^2 = 1: the uniform draw (by weight), in the same pass
            tops, sample_tops = yield (request, _d2_request(shift, np.empty((0, len(shift))), sample_rows,
                                                            seed + n_rounds + 1))
            sample = _d2_rows(sample_tops)
        else:
            tops = yield request
        candidates = np.vstack([candidates, _d2_rows(tops)])
    counts, sums, variance = yield from centre_sums_steps(shift, candidates)
    keep = counts > 0
    counts, sums, candidates = counts[keep], sums[keep], candidates[keep]
    if len(candidates) <= n_components:
        # too few distinct candidates: the clusters left over start empty, on the first one
        labels = np.arange(len(candidates))
        fallback = np.repeat(candidates[:1], n_components, axis=0)
    else:
        from sklearn.cluster import KMeans  # here: Dask workers need not import scikit-learn

        km = KMeans(n_clusters=n_components, n_init=CANDIDATE_RESTARTS,
                    random_state=rng.randint(2**31 - 1))
        with in_memory_threads():
            labels = km.fit(candidates, sample_weight=counts).labels_
        fallback = km.cluster_centers_
    assign = np.zeros((n_components, len(candidates)))
    assign[labels, np.arange(len(candidates))] = 1.0
    return _means(assign @ counts, assign @ sums, fallback), variance, sample


def lloyd_steps(shift, centres, variance=None, max_iter=LLOYD_MAX_ITER, tol=LLOYD_TOL, challenger=None):
    """Step generator: Lloyd iterations on the full data, counts and sums only, one pass each.

    Stops as scikit-learn's KMeans does: when the centres' total squared
    shift is at most ``tol`` times the data's mean variance (by default the
    one the first pass measures). With ``challenger`` (other centres), the
    first pass assigns the rows to both sets and the iterations go on from
    the set with the lower inertia over all rows (``centres`` on a tie).
    Returns the centres.
    """
    threshold = None if variance is None else tol * (variance if variance > 0 else 1.0)
    for i in range(max_iter):
        sets = [centres] if challenger is None or i else [centres, challenger]
        assignments, measured = yield from assignment_steps(shift, sets)
        best = min(range(len(sets)), key=lambda j: (assignments[j][2], j))
        centres = sets[best]
        counts, sums, _ = assignments[best]
        if threshold is None:
            threshold = tol * (measured if measured > 0 else 1.0)
        new = _means(counts, sums, centres)
        moved = float(np.sum((new - centres) ** 2))
        centres = new
        if moved <= threshold:
            break
    return centres


def _rows_key(rows):
    """A key for in-memory results that depend on these rows alone (and the caller's arguments)."""
    return hashlib.sha1(np.ascontiguousarray(rows).tobytes()).hexdigest(), rows.shape


_SAMPLE_KMEANS_CACHE: dict = {}


def _sample_kmeans(rows, n_components, rng, weights=None, restarts=SAMPLE_RESTARTS, tol=1e-4):
    """K centres by scikit-learn's KMeans (``restarts`` restarts) of sampled rows, in memory.

    The centres depend on the rows, their weights, K and the seed alone, so
    the last few are kept: the candidates of a model-selection grid that
    share K and a seed (every covariance type) cluster their common sample
    once.
    """
    distinct = np.unique(rows, axis=0)
    if len(distinct) <= n_components:
        # no more distinct rows than components: each is a centre, the others repeat them
        return distinct[np.arange(n_components) % len(distinct)]
    from sklearn.cluster import KMeans  # here: Dask workers need not import scikit-learn

    seed = int(rng.randint(2**31 - 1))
    weight_key = None if weights is None else _rows_key(weights)
    key = (*_rows_key(rows), weight_key, n_components, seed, restarts, tol)
    cached = _SAMPLE_KMEANS_CACHE.get(key)
    if cached is None:
        km = KMeans(n_clusters=n_components, n_init=restarts, random_state=seed, tol=tol)
        with in_memory_threads():
            cached = km.fit(rows, sample_weight=weights).cluster_centers_
        if len(_SAMPLE_KMEANS_CACHE) >= 16:
            _SAMPLE_KMEANS_CACHE.clear()
        _SAMPLE_KMEANS_CACHE[key] = cached
    return cached.copy()


def _sample_size(n_samples, n_features, n_components):
    """Rows of a sample drawn in one pass (the coreset, or k-means||'s uniform sample): every
    chunk sends its best n rows as one vector, so n is bounded by ``KMEANS_SAMPLE_BYTES`` (by d
    alone: the sample does not depend on the chunking; merges take a few such vectors at a
    time, see ``_passes.MERGE_BYTES``)."""
    size = max(KMEANS_SAMPLE_ROWS, KMEANS_SAMPLE_PER_COMPONENT * n_components)
    return min(n_samples, size, max(20 * n_components, KMEANS_SAMPLE_BYTES // (8 * (n_features + 1))))


def _drawn_rows(tops, n_take):
    """(threshold, row indices, weights, shifted rows) of a draw of ``n_take`` rows made with
    one row more: the extra row's key is the threshold its inclusion probabilities need
    (-inf where the draw took every row it could)."""
    tops = tops[np.isfinite(tops[:, 0])]
    threshold = tops[n_take, 0] if len(tops) > n_take else -np.inf
    tops = tops[:n_take]
    return threshold, tops[:, 1].astype(np.int64), tops[:, 2], tops[:, 3:]


def _log_exclusion(draw_weight, threshold):
    """log P(a row is not drawn) = w' tau, for draw weight w' > 0 and the draw's threshold tau
    (a row of zero draw weight is never drawn)."""
    with np.errstate(invalid="ignore"):
        return np.where(draw_weight > 0, draw_weight * threshold, 0.0)


def coreset_steps(n_samples, shift, n_components, rng):
    """Step generator: a weighted sample of the rows that stands for all of them (one pass).

    A lightweight coreset (Bachem, Lucic and Krause 2018): up to half of the
    rows drawn by weight w and half by w |z|^2, the squared distance to the
    data's mean (the shift), so that rows far from the bulk, such as a small
    cluster far away, are drawn many times more often than by a uniform
    sample. Each draw keeps the rows of the largest Efraimidis-Spirakis keys
    log(u) / w'; given the next largest key tau, a row is in a draw with
    probability 1 - exp(w' tau), so in the union of the two (the draws'
    numbers are independent) with probability pi = 1 - exp(w tau_1 + w |z|^2
    tau_2), and it weighs w / pi (Horvitz-Thompson): weighted sums over the
    coreset estimate those over the data without bias, and a row that any
    draw would take weighs what it weighs. With no more rows than the
    coreset holds, it is every row with its weight.

    Returns
    -------
    rows : ndarray (m, d)
        Shifted rows.
    weights : ndarray (m,)
    """
    size = _sample_size(n_samples, len(shift), n_components)
    seed = int(rng.randint(np.iinfo(np.int64).max))
    origin, nowhere = np.zeros((1, len(shift))), np.empty((0, len(shift)))
    if n_samples <= size:
        tops = yield _d2_request(shift, nowhere, n_samples, seed, weights=True)
        _, _, weights, rows = _drawn_rows(tops, n_samples)
        return rows, weights
    half = size // 2
    draws = yield (_d2_request(shift, nowhere, half + 1, seed, weights=True),
                   _d2_request(shift, origin, half + 1, seed + 1, weights=True))
    (tau_uniform, index_u, w_u, rows_u), (tau_far, index_f, w_f, rows_f) = (
        _drawn_rows(tops, half) for tops in draws)
    # a row drawn twice is in the coreset once
    _, first = np.unique(np.concatenate([index_u, index_f]), return_index=True)
    w = np.concatenate([w_u, w_f])[first]
    rows = np.concatenate([rows_u, rows_f])[first]
    log_excluded = (_log_exclusion(w, tau_uniform)
                    + _log_exclusion(w * np.einsum("nd,nd->n", rows, rows), tau_far))
    return rows, w / -np.expm1(log_excluded)


def coreset_kmeans_steps(n_samples, shift, n_components, rng):
    """Step generator: K shifted centres by weighted k-means of a coreset (one pass).

    The coreset (:func:`coreset_steps`) is clustered in memory by
    scikit-learn's KMeans with ``CORESET_RESTARTS`` restarts: it estimates
    the inertia over all rows, so its best clustering is near the best k-means
    clustering of the data, which k-means|| reaches in some ten passes.
    """
    rows, weights = yield from coreset_steps(n_samples, shift, n_components, rng)
    return _sample_kmeans(rows, n_components, rng, weights=weights, restarts=CORESET_RESTARTS,
                          tol=CORESET_KMEANS_TOL)


def _random_resp_func(block, ctx, row_start, sample_weight):
    layout = ctx["layout"]
    out = np.zeros(layout.size)
    z = np.asarray(block, dtype=np.float64) - ctx["shift"]
    resp = row_uniforms(ctx["seed"], row_start, len(z), layout.n_components)
    resp /= resp.sum(axis=1, keepdims=True)
    accumulate_statistics(out, layout, z, resp, sample_weight)
    out[layout.offsets[4]] = len(z) if sample_weight is None else sample_weight.sum()
    return out


def _single_row_statistics(rows, covariance_type):
    """Statistics with component k responsible for row k alone (scikit-learn's
    'k-means++' and 'random_from_data' responsibilities)."""
    layout = StatisticsLayout(covariance_type, len(rows), rows.shape[1])
    out = np.zeros(layout.size)
    accumulate_statistics(out, layout, rows, np.eye(len(rows)))
    return out, layout


def kmeans_plusplus_steps(n_samples, shift, n_components, rng, weighted):
    """Step generator: a uniform row, then one D^2-sampled row per pass."""
    seed, centres = yield from _first_centre_steps(n_samples, shift, rng, weighted)
    for k in range(1, n_components):
        new = yield from d2_sample_steps(shift, centres, 1, seed + k)
        centres = np.vstack([centres, new if len(new) else centres[:1]])
    return centres


_HC_CACHE: dict = {}


def _hierarchical_labels(rows, n_components):
    """The partition of ``rows`` into ``n_components`` groups by mclust's hierarchical clustering.

    The merge sequence depends on the rows alone, not on the model fitted, so
    it is kept for the last few row sets: a model-selection grid clusters its
    sample once, not once per candidate and restart.
    """
    from ._hc import hierarchical_partitions

    key = _rows_key(rows)
    cached = _HC_CACHE.get(key)
    if cached is None or len(cached) < min(n_components, len(rows)):
        if len(_HC_CACHE) >= 4:
            _HC_CACHE.clear()
        cached = _HC_CACHE[key] = hierarchical_partitions(rows, n_components)
    return cached[min(n_components, len(rows)) - 1]


def hc_statistics_steps(data, n_components, covariance_type, rng, sample_size):
    """Step generator: mclust's hierarchical initialisation on a random sample of rows.

    mclust's model-based agglomerative clustering (the VVV criterion on
    SVD-transformed data, mclust 6's defaults; :mod:`daskem._hc`) of at most
    ``sample_size`` rows drawn uniformly (all rows if there are fewer), as
    mclust's ``subset`` option does; the partition into ``n_components``
    groups gives hard responsibilities on the sample, whose statistics are
    scaled to the data's total weight (so the weights are the groups'
    shares of the sample). Fetching the rows reads only the chunks that
    hold them: no pass over the data.
    """
    if data.sample_weight is not None:
        raise ValueError("init_params='hc' does not take sample weights; use 'k-means||' or 'kmeans'")
    n_samples = data.X.shape[0]
    size = min(n_samples, max(int(sample_size), n_components))
    indices = np.sort(rng.choice(n_samples, size=size, replace=False)) if size < n_samples \
        else np.arange(n_samples)
    rows = (yield RowsRequest(indices)) - data.shift
    labels = _hierarchical_labels(rows, n_components)
    layout = StatisticsLayout(covariance_type, n_components, rows.shape[1])
    out = np.zeros(layout.size)
    accumulate_statistics(out, layout, rows, np.eye(n_components)[labels])
    out[layout.offsets[4]] = size
    return out * (data.total_weight / size), layout


def initial_statistics_steps(method, data, n_components, covariance_type, rng, hc_sample_size=2000):
    """Step generator for the statistics of the initial responsibilities by ``method``.

    Parameters
    ----------
    method : {'coreset', 'k-means||', 'kmeans', 'k-means++', 'random', 'random_from_data', 'hc'}
    data : FitData
        The data (its shape, shift and whether it carries sample weights).
    n_components : int
    covariance_type : str
        Which second moments to gather (a :class:`StatisticsLayout` type).
    rng : numpy.random.RandomState
    hc_sample_size : int
        Rows clustered by 'hc'.

    Returns
    -------
    stats : ndarray
        Summed statistics of the responsibilities (hard or soft).
    layout : StatisticsLayout
    """
    n_samples = data.X.shape[0]
    # rows with missing values may weigh nothing: draw centres by weight then
    shift, weighted = data.shift, data.sample_weight is not None or data.holes is not None
    if method in ("coreset", "k-means||", "kmeans"):
        if method == "coreset":
            # k-means of the coreset needs no Lloyd passes: its centres are the data's
            centres = yield from coreset_kmeans_steps(n_samples, shift, n_components, rng)
        elif method == "k-means||":
            # k-means of a uniform sample (drawn in the first round's pass) competes with
            # the candidates' clustering: on overlapping clusters its restarts find better
            # optima, k-means|| finds small clusters far away; the first Lloyd pass keeps
            # the lower inertia
            size = _sample_size(n_samples, len(shift), n_components)
            centres, variance, sample = yield from kmeans_parallel_steps(
                n_samples, shift, n_components, rng, weighted, sample_rows=size)
            challenger = None if sample is None else _sample_kmeans(sample, n_components, rng)
            centres = yield from lloyd_steps(shift, centres, variance, max_iter=KMEANS_PARALLEL_LLOYD,
                                             challenger=challenger)
        else:
            # Lloyd passes from the coreset's centres: they start at the best optimum the
            # coreset's restarts found (a uniform sample's five restarts stopped in worse
            # ones, which the passes kept, on 6 of 12 fits in benchmarks/RESULTS.md)
            centres = yield from coreset_kmeans_steps(n_samples, shift, n_components, rng)
            centres = yield from lloyd_steps(shift, centres, max_iter=LLOYD_MAX_ITER)
        # the second moments only now, for the M-step of the final assignment
        stats, layout = yield from hard_statistics_steps(shift, centres, covariance_type)
    elif method == "random":
        layout = StatisticsLayout(covariance_type, n_components, len(shift))
        seed = int(rng.randint(np.iinfo(np.int64).max))
        ctx = {"shift": shift, "layout": layout, "seed": seed}
        stats = yield PassRequest(_random_resp_func, ctx, layout.size)
    elif method == "k-means++":
        rows = yield from kmeans_plusplus_steps(n_samples, shift, n_components, rng, weighted)
        stats, layout = _single_row_statistics(rows, covariance_type)
    elif method == "hc":
        stats, layout = yield from hc_statistics_steps(data, n_components, covariance_type, rng,
                                                       hc_sample_size)
    elif method == "random_from_data":
        indices = rng.choice(n_samples, size=n_components, replace=False)
        rows = (yield RowsRequest(indices)) - shift
        stats, layout = _single_row_statistics(rows, covariance_type)
    else:  # pragma: no cover - validated by the estimator
        raise ValueError("Unknown init_params %r" % method)
    return stats, layout
