"""Initial mixtures: k-means|| (default), kmeans, k-means++, random, random_from_data.

Every method ends the way scikit-learn's does: responsibilities (hard or soft)
turned into a mixture by one M-step, with weights divided by n_samples.
Only passes over the data are distributed; the small problems (choosing K
centres among a few hundred candidates) run in memory.

Random numbers that depend on a row come from a counter-based hash of
(seed, global row index), so results do not depend on how rows are chunked.
"""

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans

from ._em import blas_limits, m_step
from ._kernels import StatisticsLayout, accumulate_statistics

# k-means|| (Bahmani et al. 2012): rounds of D^2 sampling, each one pass.
KMEANS_PARALLEL_ROUNDS = 2
# Lloyd iterations on the full data for init_params='kmeans' (as KMeans).
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4


def row_uniforms(seed, start, n_rows, n_cols=1):
    """Uniform (0, 1) numbers for rows start..start+n_rows, independent of chunking.

    SplitMix64 of (seed, row * n_cols + col): a counter-based generator, so a
    row gets the same numbers whichever chunk it is in.
    """
    idx = (np.arange(start, start + n_rows, dtype=np.uint64)[:, None] * np.uint64(n_cols)
           + np.arange(n_cols, dtype=np.uint64)[None, :])
    # uint64 arithmetic wraps around by design here
    with np.errstate(over="ignore"):
        x = idx + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    # 53 random bits, shifted off zero so that log(u) is finite
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _sq_distances(z, centres):
    """Squared distances (n, m) of shifted rows to shifted centres."""
    d2 = (
        np.einsum("nd,nd->n", z, z)[:, None]
        - 2.0 * (z @ centres.T)
        + np.einsum("md,md->m", centres, centres)[None, :]
    )
    return np.maximum(d2, 0.0)


def _block_start(block_info):
    return block_info[0]["array-location"][0][0]


def _d2_sample_chunk(block, ctx, block_info=None):
    """Top-l rows of a chunk by Efraimidis-Spirakis keys log(u) / D^2(x).

    Keeping the l largest keys over all chunks samples l rows without
    replacement with probability proportional to D^2, in one pass and with
    no global normaliser.
    """
    n_take = ctx["n_take"]
    z = np.asarray(block, dtype=np.float64) - ctx["shift"]
    if ctx["centres"].shape[0]:
        d2 = _sq_distances(z, ctx["centres"]).min(axis=1)
    else:
        d2 = np.ones(len(z))
    u = row_uniforms(ctx["seed"], _block_start(block_info), len(z))[:, 0]
    with np.errstate(divide="ignore"):
        keys = np.where(d2 > 0, np.log(u) / d2, -np.inf)
    out = np.full((n_take, z.shape[1] + 1), -np.inf)
    top = np.argsort(-keys, kind="stable")[:n_take]
    out[: len(top), 0] = keys[top]
    out[: len(top), 1:] = z[top]
    return out


def _d2_sample(X, shift, centres, n_take, seed):
    """Sample n_take rows (shifted) with probability proportional to D^2."""
    ctx = dask.delayed(
        {"shift": shift, "centres": centres, "n_take": n_take, "seed": seed},
        pure=True, traverse=False,
    )
    tops = da.map_blocks(
        _d2_sample_chunk, X, ctx,
        chunks=(n_take, X.shape[1] + 1), dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    with blas_limits(X):
        (tops,) = dask.compute(tops)
    tops = tops[np.isfinite(tops[:, 0])]
    best = np.argsort(-tops[:, 0], kind="stable")[:n_take]
    return tops[best, 1:]


def _hard_statistics_chunk(block, ctx):
    """Statistics of a chunk with every row assigned to its nearest centre."""
    layout = ctx["layout"]
    out = np.zeros(layout.size)
    z = np.asarray(block, dtype=np.float64) - ctx["shift"]
    step = 8192
    for s in range(0, len(z), step):
        zb = z[s : s + step]
        labels = _sq_distances(zb, ctx["centres"]).argmin(axis=1)
        resp = sp.csr_matrix(
            (np.ones(len(zb)), (np.arange(len(zb)), labels)),
            shape=(len(zb), layout.n_components),
        )
        accumulate_statistics(out, layout, zb, resp)
    out[layout.offsets[4]] = len(z)
    return out[None, :]


def hard_statistics(X, shift, centres, covariance_type):
    """One pass: sufficient statistics of the hard assignment to ``centres``."""
    layout = StatisticsLayout(covariance_type, len(centres), X.shape[1])
    ctx = dask.delayed(
        {"shift": shift, "centres": centres, "layout": layout}, pure=True, traverse=False
    )
    per_chunk = da.map_blocks(
        _hard_statistics_chunk, X, ctx, chunks=(1, layout.size), dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    with blas_limits(X):
        (stats,) = dask.compute(per_chunk.sum(axis=0, split_every=16))
    return stats, layout


def _merge_candidates(stats, layout, labels, n_components):
    """Statistics of K clusters from those of the candidates assigned to them."""
    n, s1, s2, _, n_rows = layout.unpack(stats)
    assign = np.zeros((n_components, len(labels)))
    assign[labels, np.arange(len(labels))] = 1.0
    merged = StatisticsLayout(layout.covariance_type, n_components, layout.n_features)
    s2_merged = s2 if layout.covariance_type == "tied" else np.tensordot(assign, s2, axes=1)
    return merged.pack_from_second_moments(assign @ n, assign @ s1, s2_merged, 0.0, n_rows), merged


def kmeans_parallel(X, shift, n_components, covariance_type, rng, rounds=KMEANS_PARALLEL_ROUNDS):
    """k-means|| centres and the hard-assignment statistics that go with them.

    One uniformly chosen row, then ``rounds`` passes that each add
    2 * n_components rows sampled by D^2, then one pass that assigns every
    row to its nearest candidate and gathers per-candidate statistics. The
    candidates are clustered in memory by weighted k-means, and their
    statistics are added up per cluster: no further pass is needed.

    Returns
    -------
    stats : ndarray
        Summed statistics of the K clusters.
    layout : StatisticsLayout
    centres : ndarray (K, d)
        Shifted cluster centres.
    """
    seed = int(rng.randint(np.iinfo(np.int64).max))
    n_samples = X.shape[0]
    first = int(rng.randint(n_samples))
    candidates = np.asarray(X[first : first + 1].compute(), dtype=np.float64) - shift
    for r in range(rounds):
        new = _d2_sample(X, shift, candidates, 2 * n_components, seed + r + 1)
        candidates = np.vstack([candidates, new])
    stats, layout = hard_statistics(X, shift, candidates, covariance_type)
    counts = layout.unpack(stats)[0]
    keep = counts > 0
    candidates, stats_keep = candidates[keep], None
    if len(candidates) <= n_components:
        centres = candidates
        labels = np.arange(len(candidates))
    else:
        km = KMeans(n_clusters=n_components, n_init=1, random_state=rng.randint(2**31 - 1))
        labels = km.fit(candidates, sample_weight=counts[keep]).labels_
    # re-index the statistics to the kept candidates
    n, s1, s2, _, n_rows = layout.unpack(stats)
    kept = StatisticsLayout(covariance_type, int(keep.sum()), X.shape[1])
    stats_keep = kept.pack_from_second_moments(
        n[keep], s1[keep], s2 if covariance_type == "tied" else s2[keep], 0.0, n_rows
    )
    merged, merged_layout = _merge_candidates(stats_keep, kept, labels, n_components)
    mn, ms1 = merged_layout.unpack(merged)[:2]
    centres = ms1 / np.maximum(mn, 1e-300)[:, None]
    return merged, merged_layout, centres


def lloyd(X, shift, centres, covariance_type, max_iter=LLOYD_MAX_ITER, tol=LLOYD_TOL, variance=1.0):
    """Lloyd iterations on the full data, one pass each; final hard statistics."""
    threshold = tol * variance
    for _ in range(max_iter):
        stats, layout = hard_statistics(X, shift, centres, covariance_type)
        n, s1 = layout.unpack(stats)[:2]
        new = np.where(n[:, None] > 0, s1 / np.maximum(n, 1e-300)[:, None], centres)
        shift_sq = np.sum((new - centres) ** 2)
        centres = new
        if shift_sq <= threshold:
            break
    return stats, layout


def _random_resp_chunk(block, ctx, block_info=None):
    layout = ctx["layout"]
    out = np.zeros(layout.size)
    z = np.asarray(block, dtype=np.float64) - ctx["shift"]
    resp = row_uniforms(ctx["seed"], _block_start(block_info), len(z), layout.n_components)
    resp /= resp.sum(axis=1, keepdims=True)
    accumulate_statistics(out, layout, z, resp)
    out[layout.offsets[4]] = len(z)
    return out[None, :]


def random_statistics(X, shift, n_components, covariance_type, rng):
    """One pass: statistics of uniformly random, row-normalised responsibilities."""
    layout = StatisticsLayout(covariance_type, n_components, X.shape[1])
    seed = int(rng.randint(np.iinfo(np.int64).max))
    ctx = dask.delayed({"shift": shift, "layout": layout, "seed": seed}, pure=True, traverse=False)
    per_chunk = da.map_blocks(
        _random_resp_chunk, X, ctx, chunks=(1, layout.size), dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    (stats,) = dask.compute(per_chunk.sum(axis=0, split_every=16))
    return stats, layout


def _single_row_statistics(rows, covariance_type, n_features):
    """Statistics with component k responsible for row k alone (scikit-learn's
    'k-means++' and 'random_from_data' responsibilities)."""
    layout = StatisticsLayout(covariance_type, len(rows), n_features)
    out = np.zeros(layout.size)
    accumulate_statistics(out, layout, rows, np.eye(len(rows)))
    return out, layout


def kmeans_plusplus_rows(X, shift, n_components, rng):
    """k-means++ seeding over Dask: a uniform row, then one D^2-sampled row per pass."""
    seed = int(rng.randint(np.iinfo(np.int64).max))
    first = int(rng.randint(X.shape[0]))
    centres = np.asarray(X[first : first + 1].compute(), dtype=np.float64) - shift
    for k in range(1, n_components):
        new = _d2_sample(X, shift, centres, 1, seed + k)
        if len(new) == 0:  # every row coincides with a centre
            new = centres[:1]
        centres = np.vstack([centres, new])
    return centres


def initial_parameters(X, method, n_components, covariance_type, shift, reg_covar, rng, n_samples):
    """Initial MixtureParameters by ``method`` (an ``init_params`` value).

    Parameters
    ----------
    X : dask.array.Array
    method : {'k-means||', 'kmeans', 'k-means++', 'random', 'random_from_data'}
    n_components : int
    covariance_type : str
    shift : ndarray (d,)
    reg_covar : float
    rng : numpy.random.RandomState
    n_samples : float
        Divisor of the initial weights (scikit-learn divides by n_samples).

    Returns
    -------
    MixtureParameters
    """
    n_features = X.shape[1]
    if method in ("k-means||", "kmeans"):
        stats, layout, centres = kmeans_parallel(X, shift, n_components, covariance_type, rng)
        if method == "kmeans":
            variance = float(np.mean(np.var(centres, axis=0))) or 1.0
            stats, layout = lloyd(X, shift, centres, covariance_type, variance=variance)
    elif method == "random":
        stats, layout = random_statistics(X, shift, n_components, covariance_type, rng)
    elif method == "k-means++":
        rows = kmeans_plusplus_rows(X, shift, n_components, rng)
        stats, layout = _single_row_statistics(rows, covariance_type, n_features)
    elif method == "random_from_data":
        idx = np.sort(rng.choice(X.shape[0], size=n_components, replace=False))
        rows = np.asarray(X[idx].compute(), dtype=np.float64) - shift
        # keep component k on the k-th drawn row, as scikit-learn does
        stats, layout = _single_row_statistics(rows, covariance_type, n_features)
    else:  # pragma: no cover - validated by the estimator
        raise ValueError("Unknown init_params %r" % method)
    eps = np.finfo(X.dtype).eps
    return m_step(
        stats, layout, shift, reg_covar, eps, X.dtype == np.float32,
        normalise=False, n_samples=n_samples,
    )
