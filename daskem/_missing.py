"""Per-chunk kernels for rows with missing values (NaN): exact EM for data
missing at random (Ghahramani and Jordan, 1994; shared notes, "Missing values").

Each row's E-step uses the marginal density of its observed coordinates o,
log pi_k + log N(x_o | mu_o, S_oo), and its statistics the conditional
moments of the missing ones m, x_hat_m = mu_m + S_mo S_oo^-1 (x_o - mu_o)
and C = S_mm - S_mo S_oo^-1 S_om. The statistics vector has the layout of
:class:`daskem._kernels.StatisticsLayout`, so that the complete-data M-step
(:func:`daskem._gaussian.m_step`) runs unchanged on the reduced sum.

Rows are split three ways: complete rows go through the ordinary kernel
(:func:`daskem._kernels.chunk_statistics`, in the data's dtype), rows with
every value missing carry no information and are left out, and rows with
holes are computed here, in float64.

Full and tied covariance
------------------------
Rows with holes are sorted by (|m|, pattern) (:class:`Patterns`) and
processed in slices of rows with the same |m|. Write z for a shifted row
with zeros in its holes (the fill value is the centre c), e = z - (mu - c)
and g = P e for the full precision P = S^-1. Minimising the full quadratic
form over the missing coordinates gives the observed one (shared notes,
Schur complement):

    (x_o - mu_o)^T S_oo^-1 (x_o - mu_o) = e^T P e - g_m^T P_mm^-1 g_m,
    log |S_oo| = log |S| + log |P_mm|,
    x_hat_m - c_m = -P_mm^-1 g_m,   C = P_mm^-1.

* One product z @ [P_1 ... P_K] (rows x d by d x K d, BLAS) gives e^T P e
  and g for every row and component at once.
* P_mm^-1 and log |P_mm| come once per (pattern, component), for thousands
  of patterns at a time, from the vectorised small Cholesky of
  :mod:`daskem._missing_linalg` (from S_oo instead where |m| > |o|); per row
  and component only delta = P_mm^-1 g_m (|m| x |m|) remains.
* Full statistics: y = sqrt(r) z_hat with z_hat = z, -delta in the holes,
  as a (rows, K, d) array; S2_k = sum y_k y_k^T is one batched product (and
  S1 one more), and sum r C is P_mm^-1 times each pattern's responsibility
  sum, added into the pattern's (m, m) block of the packed S2.
* Tied statistics need only the sum over components, sum_k r_k z_hat_k
  z_hat_k^T = w z z^T + z ubar^T + ubar z^T + sum_k r_k u_k u_k^T (w =
  sum_k r_k, u_k = z_hat_k - z, ubar = sum_k r_k u_k): d x d products of
  the rows, not of the rows per component, and P_mm^-1 is one per pattern.

Diag and spherical covariance
-----------------------------
The conditionals are trivial (x_hat_m = mu_m, C = the missing variances),
and the observed log-density is a sum over observed coordinates: three
(rows x d) by (d x K) products with the mask of observed values give it,
and the statistics need only r^T z, r^T z^2 and r^T mask.

Cost: with 20% of 16 columns missing completely at random (97% of the rows
have holes, in some 9,400 patterns per 50,000 rows), full covariance, K=16,
an iteration takes about 5x the complete data's; the time goes to the
rows times all K precisions, P_mm^-1 per (pattern, component), the
completed rows' second moments and the per-row |m| x |m| products
(benchmarks/RESULTS.md, "Missing values"). Diag and spherical take under 2x.

Work arrays
-----------
Every temporary of a slice or a batch is a scratch array of the pass task
(:func:`daskem._scratch.scratch`), named here, reused from slice to slice
and chunk to chunk, and valid until the next slice: distributed's worker
processes map and fault in every fresh array over 128 KiB (see
:class:`daskem._kernels._Workspace`), which had made an iteration with holes
on 2 worker processes 1.75 times as long as after (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ._covariance import log_det_cholesky
from ._kernels import (
    StatisticsLayout,
    chunk_log_prob,
    chunk_predict,
    chunk_predict_proba,
    chunk_score_samples,
    chunk_scores,
    chunk_statistics,
    finite_log_prob,
    kernel_parameters,
    scores_from_log_prob,
)
from ._missing_linalg import PackedBlockSums, Patterns, block_inverse, column_sums, triu_pairs
from ._scratch import scratch, scratch_scope, scratch_take

_LOG_2PI = math.log(2.0 * math.pi)
# Slices of rows with holes are sized so that their (|m|, |m|, rows, K)
# intermediates stay near the cache (about 4 MiB).
_SLICE_BYTES = 4 * 2**20
_MIN_SLICE_ROWS = 64
_MAX_SLICE_ROWS = 8192
# (pattern, component) pairs per batch of P_mm^-1: long vectors for
# spd_inverse whose working set stays in the cache (fastest at 4k-16k)
_BATCH_PAIRS = 8192


# ------------------------------------------------------------------ context


def _dense_parameters(covariance_type, covariances, prec_chol, n_components, n_features):
    """Covariances and precisions as (K, d, d) stacks, from daskem's shapes."""
    k, d = n_components, n_features
    eye = np.eye(d)
    if covariance_type == "full":
        return covariances, prec_chol @ np.swapaxes(prec_chol, 1, 2)
    if covariance_type == "tied":
        prec = prec_chol @ prec_chol.T
        return np.repeat(covariances[None], k, axis=0), np.repeat(prec[None], k, axis=0)
    if covariance_type == "spherical":
        covariances = np.repeat(covariances[:, None], d, axis=1)
        prec_chol = np.repeat(prec_chol[:, None], d, axis=1)
    return covariances[:, None, :] * eye, (prec_chol**2)[:, None, :] * eye


def missing_statistics_context(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    precisions_cholesky: np.ndarray,
    covariance_type: str,
    shift: np.ndarray,
    dtype: np.dtype,
    layout: StatisticsLayout | None = None,
) -> dict:
    """Everything the missing-value kernels need, precomputed once per iteration.

    Parameters
    ----------
    weights : ndarray (K,)
    means : ndarray (K, d)
    covariances, precisions_cholesky : ndarray
        daskem's arrays, shaped by :func:`daskem._covariance.covariance_shape`.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    shift : ndarray (d,)
        The fixed centre c: statistics are of the shifted data x - c.
    dtype : numpy dtype
        The data's dtype (complete rows are computed in it).
    layout : StatisticsLayout, optional
        Built from the shapes when not given.

    Returns
    -------
    dict
        ``layout``, ``covariance_type``, ``shift`` (d,), ``dtype``,
        ``weights`` (K,), ``log_weights`` (K,), ``means`` (K, d),
        ``covariances`` and ``precisions`` (K, d, d) float64 for every type,
        ``log_det`` (K,) = log |S_k|, ``kernel`` (the complete-data
        :func:`daskem._kernels.kernel_parameters` in ``dtype``), and derived
        arrays for the rows with holes: ``centred_means`` (K, d) = mu - c
        and ``const`` (K,) = log pi - log |S| / 2 (full and tied: minus
        (mu - c)^T P (mu - c) / 2); full and tied also ``precision_columns``
        (d, d K') with [a, j K' + k] = P_k[a, j] (K' = 1 for tied) and
        ``precision_means`` b (K, d) = P (mu - c); diag and spherical
        ``variances`` (K, d).
    """
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    k, d = means.shape
    dtype = np.dtype(dtype)
    if layout is None:
        layout = StatisticsLayout(covariance_type, k, d)
    dense_cov, dense_prec = _dense_parameters(covariance_type, covariances, prec_chol, k, d)
    log_det = np.broadcast_to(-2.0 * log_det_cholesky(prec_chol, covariance_type, d), (k,)).copy()
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    centred = means - shift
    ctx = {
        "layout": layout,
        "covariance_type": covariance_type,
        "shift": shift,
        "dtype": dtype,
        "weights": weights,
        "log_weights": log_weights,
        "means": means,
        "covariances": dense_cov,
        "precisions": dense_prec,
        "log_det": log_det,
        "kernel": kernel_parameters(weights, means, prec_chol, covariance_type, shift, dtype),
        "centred_means": centred,
        "const": log_weights - 0.5 * log_det,
    }
    if covariance_type in ("full", "tied"):
        stack = dense_prec if covariance_type == "full" else dense_prec[:1]
        b = np.einsum("kab,kb->ka", dense_prec, centred)
        # (z - mu')^T P (z - mu') = z^T P z - 2 b^T z + mu'^T b, the last term in const
        ctx["const"] = ctx["const"] - 0.5 * np.einsum("ka,ka->k", b, centred)
        ctx["precision_columns"] = np.ascontiguousarray(stack.transpose(1, 2, 0).reshape(d, -1))
        ctx["precision_means"] = b
    else:
        ctx["variances"] = np.ascontiguousarray(np.diagonal(dense_cov, axis1=1, axis2=2))
    return ctx


# --------------------------------------------------------- rows with holes


class _Batch:
    """Patterns of one batch (full / tied) and what their slices add up.

    ``missing`` (n_pat, m) columns, ``inverse`` (m, m, n_pat, K') P_mm^-1,
    ``log_det`` (n_pat, K') log |P_mm|, ``row_starts`` (n_pat + 1,) sorted
    rows of each pattern; for the statistics ``resp`` (n_pat, K), the sums
    of r over each pattern's rows, and (tied) ``row_blocks`` (m (m + 1) / 2,
    n_pat), the sums of the rows' own (m, m) blocks over each pattern's rows.
    """

    __slots__ = ("missing", "inverse", "log_det", "row_starts", "resp", "row_blocks")


class _Slice:
    """Rows with holes of one slice and their E-step.

    ``rows`` (indices into the rows with holes), ``z`` (B, d) float64
    shifted rows with zeros in the holes, ``log_prob`` (B, K). Full and tied
    also: ``local`` (B,) each row's pattern in ``batch``, ``offset`` (its
    first row's place in the batch), ``last`` (whether the slice ends its
    batch), ``missing`` (B, m) columns, ``flat`` (m, B) the holes' indices
    in the flattened (B, d) slice and ``delta`` (m, B, K) with x_hat_m -
    c_m = -delta. Diag and spherical also ``mask`` (B, d) and ``squares`` (B, d),
    z * z. The arrays are scratch arrays: valid until the next slice.
    """

    __slots__ = ("rows", "z", "log_prob", "local", "batch", "last", "offset", "missing", "flat", "delta",
                 "mask", "squares")


def _shifted(X, rows, shift, name):
    """Shifted float64 rows ``X[rows]`` with zeros in their holes, in the
    scratch array ``name`` (with ``name + '.raw'`` for the gathered rows)."""
    shape = (len(rows), X.shape[1])
    # np.take: several times faster than fancy indexing for gathering rows
    raw = scratch_take(name + ".raw", X, rows)
    z = np.subtract(raw, shift, out=scratch(name, shape))
    # the holes are NaN: fmax and fmin both give 0 there, and x + 0 elsewhere
    low = np.fmin(z, 0.0, out=raw if raw.dtype == np.float64 else scratch(name + ".low", shape))
    np.fmax(z, 0.0, out=z)
    z += low
    return z


def _slice_rows(n_missing, n_features, n_components):
    per_row = 8 * n_components * max(n_missing * n_missing, n_features)
    return max(_MIN_SLICE_ROWS, min(_MAX_SLICE_ROWS, _SLICE_BYTES // per_row))


def _hole_slices(X: np.ndarray, rows: np.ndarray, mask: np.ndarray, ctx: dict) -> Iterator[_Slice]:
    """The E-step of rows with holes, slice by slice.

    ``X[rows]`` (n, d): rows that each have at least one hole and one
    observed value; ``mask`` (n, d): their NaN mask. ``_Slice.rows``
    index ``rows``.
    """
    n, d = len(rows), X.shape[1]
    k = len(ctx["weights"])
    if ctx["covariance_type"] in ("diag", "spherical"):
        step = _slice_rows(1, d, k)
        for start in range(0, n, step):
            s = _Slice()
            s.rows = np.arange(start, min(n, start + step))
            s.mask = mask[start : start + step]
            s.z = _shifted(X, rows[start : start + step], ctx["shift"], "missing.slice")
            s.log_prob, s.squares = _diagonal_log_prob(s.z, s.mask, ctx)
            yield s
        return
    stack = slice(0, 1) if ctx["covariance_type"] == "tied" else slice(None)
    k_stack = len(ctx["log_det"][stack])
    patterns = Patterns(mask)
    # sorted once, so that every slice is a contiguous run of rows
    z = _shifted(X, scratch_take("missing.order", rows, patterns.order), ctx["shift"], "missing.sorted")
    for n_missing, p0, p1 in patterns.groups:
        # P_mm^-1 for a long run of patterns at once (long vectors for spd_inverse)
        per_batch = max(1, _BATCH_PAIRS // k_stack)
        step = _slice_rows(n_missing, d, k)
        for q0 in range(p0, p1, per_batch):
            q1 = min(p1, q0 + per_batch)
            batch = _Batch()
            batch.missing, observed = patterns.columns(q0, q1, n_missing)
            batch.inverse, batch.log_det = block_inverse(
                ctx["precisions"][stack], ctx["covariances"][stack], ctx["log_det"][stack],
                batch.missing, observed,
            )
            batch.row_starts = patterns.row_starts[q0 : q1 + 1]
            batch.resp = None
            lo, hi = int(batch.row_starts[0]), int(batch.row_starts[-1])
            for start in range(lo, hi, step):
                stop = min(hi, start + step)
                s = _Slice()
                s.rows = patterns.order[start:stop]
                s.z = z[start:stop]
                s.local = patterns.pattern_of_row[start:stop] - q0
                s.batch, s.last, s.offset = batch, stop == hi, start - lo
                _conditional_e_step(s, ctx)
                yield s


def _conditional_e_step(s, ctx):
    """log pi_k + log N(x_o | mu_o, S_oo) and delta = P_mm^-1 g_m of a full /
    tied slice (all its rows with m holes)."""
    z = s.z
    n, d = z.shape
    batch = s.batch
    m = batch.missing.shape[1]
    s.missing = missing = scratch_take("missing.columns", batch.missing, s.local)
    b = ctx["precision_means"]
    k = len(b)
    # G[i, j, k] = (P_k z_i)_j: the full quadratic forms and g = P e = G - b
    columns = ctx["precision_columns"]
    G = np.matmul(z, columns, out=scratch("missing.G", (n, columns.shape[1]))).reshape(n, d, -1)
    quadratic = np.matmul(z[:, None, :], G, out=scratch("missing.quadratic", (n, 1, G.shape[2])))[:, 0]
    linear = np.matmul(z, b.T, out=scratch("missing.linear", (n, k)))
    linear *= 2.0
    log_prob = np.subtract(quadratic, linear, out=scratch("missing.log_prob", (n, k)))
    s.flat = np.add(missing.T, np.arange(0, n * d, d), out=scratch("missing.flat", (m, n), np.intp))
    full_g = scratch_take("missing.full_g", G.reshape(n * d, -1), s.flat)
    # (m, B, K) also for tied's K' = 1
    g = scratch_take("missing.g", b.T, missing.T)
    np.subtract(full_g, g, out=g)
    # position-major (m, m, B, K'): contiguous for the products below
    first, last = int(s.local[0]), int(s.local[-1]) + 1
    if last - first == n:
        inverse = batch.inverse[:, :, first:last]  # one row per pattern: no copy
    else:
        inverse = scratch_take("missing.inverse_rows", batch.inverse, s.local, axis=2)
    if inverse.shape[-1] == 1:
        # tied: one P_mm^-1 per pattern for every component, a batched product
        # per row (two to five times faster than the einsum here)
        delta = scratch("missing.delta", (n, m, k))
        np.matmul(inverse[..., 0].transpose(2, 0, 1), g.transpose(1, 0, 2), out=delta)
        s.delta = delta.transpose(1, 0, 2)
    else:
        s.delta = np.einsum("stik,tik->sik", inverse, g, out=scratch("missing.delta", (m, n, k)))
    # observed quadratic form = full one - g^T P_mm^-1 g; log |S_oo| = log |S| + log |P_mm|
    g *= s.delta
    log_prob -= np.sum(g, axis=0, out=linear)
    log_prob *= -0.5
    log_prob += ctx["const"] - 0.5 * (d - m) * _LOG_2PI
    half_log_det = scratch_take("missing.log_det", batch.log_det, s.local)
    half_log_det *= 0.5
    log_prob -= half_log_det
    s.log_prob = log_prob


def _diagonal_log_prob(z, mask, ctx):
    """log pi_k + sum over observed j of log N(x_j | mu_kj, var_kj), (n, K), and z * z
    (scratch arrays, valid until the next call)."""
    var, mu = ctx["variances"], ctx["centred_means"]
    n, k = len(z), len(var)
    observed = np.subtract(1.0, mask, out=scratch("missing.observed", mask.shape))
    inv_var = 1.0 / var
    const = -0.5 * (np.log(var) + mu * mu * inv_var + _LOG_2PI)
    log_prob = np.matmul(observed, const.T, out=scratch("missing.log_prob", (n, k)))
    log_prob += ctx["log_weights"]
    term = np.matmul(z, (mu * inv_var).T, out=scratch("missing.term", (n, k)))
    log_prob += term
    squares = np.multiply(z, z, out=scratch("missing.squares", z.shape))
    log_prob += np.matmul(squares, -0.5 * inv_var.T, out=term)
    return log_prob, squares


def _normalise(log_prob):
    """Responsibilities (n, K) and per-row log-likelihoods of (n, K) log-densities."""
    # components along the rows: the reductions run over long contiguous rows
    resp = scratch("missing.resp", log_prob.shape[::-1])
    np.copyto(resp, log_prob.T)
    top = resp.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    resp -= top
    with np.errstate(under="ignore"):
        np.exp(resp, out=resp)
    total = resp.sum(axis=0)
    resp /= total
    with np.errstate(divide="ignore"):
        return resp.T, np.log(total) + top


# -------------------------------------------------------------- statistics


def _add_full_statistics(s, rw, n1, s1, s2, c_packed):
    """Add a full slice's N, S1, second moments (s2 (K, d, d)) and, at the
    end of its batch, the conditional covariances (packed, (., K))."""
    n, d = s.z.shape
    m, _, k = s.delta.shape
    # sqrt(r) times the expected shifted rows z_hat = z with -delta in the
    # holes, y (B, K, d): S2 = sum y y^T in one batched product. Both are
    # component-major underneath, root (K, B) and y (K, B, d), so that each
    # component's rows are contiguous operands of the products below (with
    # y rows-major the products ran 1.5 times as long)
    root = np.sqrt(rw.T, out=scratch("missing.root", rw.shape[::-1])).T
    y = np.einsum("ik,id->ikd", root, s.z, out=scratch("missing.y", (k, n, d)).transpose(1, 0, 2))
    holes = np.multiply(s.delta, root, out=scratch("missing.holes", s.delta.shape))
    np.negative(holes, out=holes)
    rows = scratch("missing.hole_rows", (m, n), np.intp)
    rows[:] = np.arange(n)
    columns = scratch("missing.hole_columns", (m, n), np.intp)
    np.copyto(columns, s.missing.T)
    y[rows.reshape(-1), :, columns.reshape(-1)] = holes.reshape(m * n, k)
    n1 += rw.sum(axis=0)
    s1 += np.matmul(y.transpose(1, 2, 0), root.T[:, :, None])[:, :, 0]
    s2 += np.matmul(y.transpose(1, 2, 0), y.transpose(1, 0, 2))
    _add_block_covariances(s, rw, c_packed)


def _add_tied_statistics(s, rw, n1, s1, s2, c_packed):
    """Add a tied slice's N, S1, shared second moment (s2 (1, d, d)) and the
    packed (m, m) blocks sum_k r (u u^T + C).

    With z_hat_k = z + u_k (u_k in the holes), sum_k r_k z_hat_k z_hat_k^T =
    w z z^T + z ubar^T + ubar z^T + sum_k r_k u_k u_k^T, where w = sum_k r_k
    and ubar = sum_k r_k u_k: no per-component d x d products.
    """
    n, d = s.z.shape
    m, _, k = s.delta.shape
    weighted = np.multiply(s.delta, rw, out=scratch("missing.weighted", s.delta.shape))
    np.negative(weighted, out=weighted)  # r u, (m, B, K)
    cols = scratch("missing.hole_columns", (m, n), np.intp)
    np.copyto(cols, s.missing.T)
    cols = cols.reshape(-1)
    n1 += rw.sum(axis=0)
    s1 += rw.T @ s.z
    s1 += column_sums(cols, weighted.reshape(m * n, k), d).T
    w = rw.sum(axis=1)
    mean_holes = scratch("missing.mean_holes", (n, d))
    mean_holes.fill(0.0)
    np.put(mean_holes, s.flat, weighted.sum(axis=2))
    cross = s.z.T @ mean_holes
    s2[0] += np.multiply(s.z.T, w, out=scratch("missing.weighted_rows", (d, n))) @ s.z + cross + cross.T
    up, vp = triu_pairs(m)
    outer = scratch("missing.outer", (len(up), n))
    for p, (a, b) in enumerate(zip(up, vp, strict=True)):
        # r u_a u_b = -(r u_a) delta_b, summed over the components
        np.einsum("ik,ik->i", weighted[a], s.delta[b], out=outer[p])
    np.negative(outer, out=outer)
    _add_block_covariances(s, rw, c_packed, outer)


def _add_block_covariances(s, rw, c_packed, row_blocks=None):
    """+ sum r C: P_mm^-1 times each pattern's responsibility sum, at the end of a batch;
    with ``row_blocks`` (m (m + 1) / 2, B), the rows' own blocks summed over each pattern's
    rows as well (added into the packed sums once per pattern, not once per row)."""
    batch = s.batch
    first, last = int(s.local[0]), int(s.local[-1]) + 1
    runs = np.maximum(batch.row_starts[first:last] - batch.row_starts[0] - s.offset, 0)
    if batch.resp is None:
        n_pat = len(batch.row_starts) - 1
        batch.resp = np.zeros((n_pat, rw.shape[1]))
        batch.row_blocks = None if row_blocks is None else np.zeros((len(row_blocks), n_pat))
    batch.resp[first:last] += np.add.reduceat(rw, runs, axis=0)
    if row_blocks is not None:
        batch.row_blocks[:, first:last] += np.add.reduceat(row_blocks, runs, axis=1)
    if s.last:
        m = batch.missing.shape[1]
        up, vp = triu_pairs(m)
        resp = batch.resp if c_packed.width > 1 else batch.resp.sum(axis=1, keepdims=True)
        blocks = batch.inverse.reshape((m * m,) + batch.inverse.shape[2:])
        upper = scratch_take("missing.upper", blocks, up * m + vp)
        upper *= resp
        if batch.row_blocks is not None:
            upper += batch.row_blocks[:, :, None]
        c_packed.add(batch.missing, upper)


def _add_diagonal_statistics(s, rw, n1, s1, s2, ctx):
    """Add a diag / spherical slice's N, S1 and per-coordinate second moments (K, d)."""
    mu = ctx["centred_means"]
    holes = scratch("missing.holes_flags", s.mask.shape)
    np.copyto(holes, s.mask)
    in_holes = rw.T @ holes
    n1 += rw.sum(axis=0)
    s1 += rw.T @ s.z + in_holes * mu
    s2 += rw.T @ s.squares + in_holes * (mu * mu + ctx["variances"])


def _hole_statistics(X, rows, mask, weights, ctx):
    """Statistics vector of the rows with holes ``X[rows]`` (float64 throughout)."""
    layout = ctx["layout"]
    cov = layout.covariance_type
    k, d = layout.n_components, layout.n_features
    conditional = cov in ("full", "tied")
    k_stack = 1 if cov == "tied" else k
    n1, s1 = np.zeros(k), np.zeros((k, d))
    s2 = np.zeros((k_stack, d, d) if conditional else (k, d))
    c_packed = PackedBlockSums(d, k_stack)
    loglik = 0.0
    for s in _hole_slices(X, rows, mask, ctx):
        resp, row_loglik = _normalise(s.log_prob)
        if weights is None:
            loglik += float(row_loglik.sum())
            rw = resp
        else:
            w = weights[s.rows]
            loglik += float(row_loglik @ w)
            rw = np.multiply(resp, w[:, None], out=scratch("missing.weighted_resp", resp.shape))
        if cov == "full":
            _add_full_statistics(s, rw, n1, s1, s2, c_packed)
        elif cov == "tied":
            _add_tied_statistics(s, rw, n1, s1, s2, c_packed)
        else:
            _add_diagonal_statistics(s, rw, n1, s1, s2, ctx)
    if conditional:
        a, b = np.triu_indices(d)
        s2[:, a, b] += c_packed.total().T
        s2[:, b, a] = s2[:, a, b]
        s2 = s2[0] if cov == "tied" else s2
    elif cov == "spherical":
        s2 = s2.sum(axis=1)
    total = len(rows) if weights is None else float(weights.sum())
    return layout.pack_from_second_moments(n1, s1, s2, loglik, total)


def _split_rows(block):
    """NaN mask and the indices of complete rows, rows with holes, empty rows."""
    mask = np.isnan(block, out=scratch("missing.mask", block.shape, bool))
    d = block.shape[1]
    # counts by a float32 matrix-vector product: exact, and faster than sum
    flags = scratch("missing.flags", block.shape, np.float32)
    np.copyto(flags, mask)
    n_missing = np.matmul(flags, np.ones(d, dtype=np.float32), out=scratch("missing.counts", (len(block),),
                                                                           np.float32))
    complete = np.flatnonzero(n_missing == 0)
    holes = np.flatnonzero((n_missing > 0) & (n_missing < d))
    empty = np.flatnonzero(n_missing == d)
    return mask, complete, holes, empty


def missing_chunk_statistics(
    block: np.ndarray, ctx: dict, row_start: int = 0, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """E-step and sufficient statistics of a chunk whose rows may have NaNs.

    The signature of a :class:`daskem._passes.PassRequest` function.

    Parameters
    ----------
    block : ndarray (n, d)
        Rows of the chunk (float32 or float64); NaN marks a missing value.
    ctx : dict
        From :func:`missing_statistics_context`.
    row_start : int
        Global index of the first row (unused).
    sample_weight : ndarray (n,), optional

    Returns
    -------
    ndarray of shape (ctx["layout"].size,), float64
        The vector of :func:`daskem._kernels.chunk_statistics` in the same
        layout: responsibility sums, first and second moments of the
        expected shifted rows (with the conditional covariances), the sum
        of observed-data log-likelihoods and the number (total weight) of
        rows with at least one observed value.
    """
    layout = ctx["layout"]
    block = np.asarray(block)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    mask, complete, holes, _ = _split_rows(block)
    if len(complete) == len(block):
        return chunk_statistics(block, ctx["kernel"], layout, w)[0]
    out = np.zeros(layout.size)
    if len(complete):
        rows = scratch_take("missing.complete", block, complete)
        out += chunk_statistics(rows, ctx["kernel"], layout, None if w is None else w[complete])[0]
    if len(holes):
        holes_mask = scratch_take("missing.holes_mask", mask, holes)
        out += _hole_statistics(block, holes, holes_mask, None if w is None else w[holes], ctx)
    return out


# -------------------------------------------------------------- prediction


def _hole_log_prob(X, rows, mask, ctx):
    out = np.empty((len(rows), len(ctx["weights"])))
    # the slices' work arrays reused (predictions run outside a pass's scratch scope)
    with scratch_scope():
        for s in _hole_slices(X, rows, mask, ctx):
            out[s.rows] = finite_log_prob(s.log_prob, np.float64)
    return out


def _log_sum_exp(log_prob):
    return _normalise(log_prob)[1]


def missing_log_prob(block: np.ndarray, ctx: dict) -> np.ndarray:
    """log pi_k + log N(x_o | mu_o, S_oo) of each row and component.

    Parameters
    ----------
    block : ndarray (n, d)
    ctx : dict
        From :func:`missing_statistics_context`.

    Returns
    -------
    ndarray (n, K), float64
        Complete rows as the complete-data kernel gives them; a row with
        every value missing gets log pi_k (its log-sum-exp is 0).
    """
    block = np.asarray(block)
    mask, complete, holes, empty = _split_rows(block)
    out = np.empty((len(block), len(ctx["weights"])))
    if len(complete):
        out[complete] = chunk_log_prob(np.take(block, complete, axis=0), ctx["kernel"])
    if len(holes):
        out[holes] = _hole_log_prob(block, holes, mask[holes], ctx)
    out[empty] = ctx["log_weights"]
    return out


def _per_row(block, ctx, complete_func, hole_func, empty_value, shape, dtype):
    block = np.asarray(block)
    mask, complete, holes, empty = _split_rows(block)
    out = np.empty((len(block),) + shape, dtype=dtype)
    if len(complete):
        out[complete] = complete_func(np.take(block, complete, axis=0), ctx["kernel"])
    if len(holes):
        out[holes] = hole_func(_hole_log_prob(block, holes, mask[holes], ctx))
    out[empty] = empty_value
    return out


def missing_score_samples(block: np.ndarray, ctx: dict) -> np.ndarray:
    """Observed-data log-likelihood of each row, (n,) float64 (0.0 for empty rows)."""
    return _per_row(block, ctx, chunk_score_samples, _log_sum_exp, 0.0, (), np.float64)


def missing_predict_proba(block: np.ndarray, ctx: dict) -> np.ndarray:
    """p(k | x_o) of each row, (n, K) float64 (the weights for empty rows)."""
    w = ctx["weights"]
    return _per_row(
        block, ctx, chunk_predict_proba, lambda lp: _normalise(lp)[0], w / w.sum(), w.shape, np.float64
    )


def missing_predict(block: np.ndarray, ctx: dict) -> np.ndarray:
    """Most probable component given the observed values, (n,) int64."""
    return _per_row(
        block, ctx, chunk_predict, lambda lp: np.argmax(lp, axis=1),
        int(np.argmax(ctx["weights"])), (), np.int64,
    )


def missing_scores(block: np.ndarray, ctx: dict) -> np.ndarray:
    """Per row: log p(x_o), the largest log p(k | x_o), and whether any value is observed,
    (n, 3) float64 (see :func:`daskem._kernels.chunk_scores`; an empty row gives zeros)."""
    return _per_row(block, ctx, chunk_scores, scores_from_log_prob, 0.0, (3,), np.float64)


def _impute_holes(X, rows, mask, ctx, out):
    """Write the conditional means of the holes of ``X[rows]`` into ``out[rows]``."""
    shift = ctx["shift"]
    for s in _hole_slices(X, rows, mask, ctx):
        resp, _ = _normalise(finite_log_prob(s.log_prob, np.float64))
        at = rows[s.rows]
        if ctx["covariance_type"] in ("diag", "spherical"):
            filled = resp @ ctx["means"]
            out[at] = np.where(s.mask, filled, X[at])
        else:
            values = shift[s.missing] - np.einsum("sik,ik->is", s.delta, resp)
            out[at[:, None], s.missing] = values


def impute_chunk(block: np.ndarray, ctx: dict) -> np.ndarray:
    """Replace each NaN by its conditional mean under the mixture.

    x_m becomes sum_k p(k | x_o) E[x_m | x_o, k]; a row with every value
    missing becomes the mixture's mean.

    Parameters
    ----------
    block : ndarray (n, d)
    ctx : dict
        From :func:`missing_statistics_context`.

    Returns
    -------
    ndarray (n, d)
        Same dtype as ``block``; observed values unchanged.
    """
    block = np.asarray(block)
    mask, _, holes, empty = _split_rows(block)
    out = block.copy()
    if len(holes):
        # the slices' work arrays reused (predictions run outside a pass's scratch scope)
        with scratch_scope():
            _impute_holes(block, holes, mask[holes], ctx, out)
    if len(empty):
        w = ctx["weights"]
        out[empty] = w @ ctx["means"] / w.sum()
    return out
