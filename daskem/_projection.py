"""The projection form of the full-covariance E-step and statistics.

:mod:`daskem._kernels` uses this form or its packed-products one as the cost
model at the end of this module (:func:`full_covariance_form`) chooses per
(K, d, dtype); both fill the same flat statistics vector
(:class:`daskem._kernels.StatisticsLayout`).

How a block of ``n`` rows is processed
--------------------------------------
The shifted rows z = x - c are written, after a column of ones, into
``Z1 = [1, z]`` (n, 1 + d). With P_k the precision Cholesky factor of
component k (P_k P_k^T = Sigma_k^-1, upper triangular) and mu'_k = (mu_k - c)
P_k, the quadratic form is |z P_k - mu'_k|^2, so one product of the rows
with all K factors,

    Y = Z1 @ [[-mu'_1 ... -mu'_K], [P_1 ... P_K]] / sqrt(2)       (n, K d),

gives every component's projected residual, and the weighted log-densities
are ``const_k - sum_j Y[:, k, j]^2``. Y is computed features-major, for
sub-blocks of rows that keep it in the core's cache (``E_BYTES``), then
squared in place and summed over the leading axis (long vector adds; every
call releases the GIL, which np.einsum does not). As P_k is upper
triangular, column j of ``z P_k`` depends on z_1 .. z_j only: the columns
are split into blocks (:func:`_column_splits`) and block [lo, hi) takes
``Z1[:, :1 + hi]`` only, which skips the zero lower-left blocks (5/8 of the
flops of one product with four blocks). A factor that is not upper
triangular is used as one block.

After the log-sum-exp (:func:`daskem._kernels._normalise_in_place`), the
responsibilities R (K, n) give every statistic of component k at once:
with ``Zs = Z1 * sqrt(r_k)``, the symmetric product ``Zs^T Zs`` (numpy runs
``a.T @ a`` as one BLAS syrk) holds N_k (corner), S1_k (first column) and
S2_k. Rows where r_k is exactly 0 (a responsibility under the smallest
normal number; about half of them on the benchmark's separated d=64 data)
add nothing, so a component's rows are gathered first when few enough
(``SPARSE_FRACTION``): the same sums, fewer flops.

Per row this is about 1.25 K d^2 flops in the E-step products and K d^2 (or
fewer) in the M-step's, against 2 K d^2 for the packed form, but on
operands that stay in the cache, where the packed form reads and writes
d(d+1)/2 products per row. It wins for large d and small K (see
:func:`full_covariance_costs`).

float32 data: the E-step runs in float32 as the packed form's does; each
block (at most ``_FLOAT32_SUM_ROWS`` rows) is summed by float32 products
before it is added into the float64 accumulators, the packed form's policy.

Every BLAS call goes through NumPy, which releases the GIL
(scipy.linalg.blas.dsyrk, 5% faster on one thread, keeps it: two threads ran
it 0.86 times as fast as one). Nothing is allocated per block beyond a few
small arrays: every temporary lives in a per-thread workspace (see
:class:`daskem._kernels._Workspace`).
"""

import math
import threading

import numpy as np

# Rows per block (the M-step products' length) and per E-step sub-block
# (whose (rows, K d) projections stay in the core's cache).
BLOCK_ROWS = 1024
E_BYTES = 2**20
_MIN_E_ROWS = 64
# a component's M-step product gathers the rows where its responsibility is
# not zero when they are at most this fraction of the block, for runs of
# components of at most GROUP_ROWS rows together
SPARSE_FRACTION = 0.9
GROUP_ROWS = 8192
_SQRT_HALF = math.sqrt(0.5)
# column blocks of the triangular factors: about this many columns each, at
# most _MAX_SPLITS blocks (d=64, K=8, one thread: 1, 2, 3, 4 and 6 blocks
# took 2,861, 2,663, 2,449, 2,436 and 2,497 ns per row)
_SPLIT_COLUMNS = 16
_MAX_SPLITS = 8


def _column_splits(d, triangular):
    """[(lo, hi)] column blocks of the projection; rows of P used: [0, hi)."""
    splits = max(1, min(_MAX_SPLITS, d // _SPLIT_COLUMNS)) if triangular else 1
    edges = [round(d * i / splits) for i in range(splits + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def projection_parameters(mu, prec_chol, const, dtype):
    """What the projection kernel needs, built once per iteration.

    Parameters
    ----------
    mu : ndarray (K, d), float64
        Means minus the shift.
    prec_chol : ndarray (K, d, d), float64
        Precision Cholesky factors (upper triangular, as scikit-learn's).
    const : ndarray (K,), float64
        log weight + log det P_k - d/2 log(2 pi) per component (-inf for a
        zero weight).
    dtype : numpy dtype
        The data's dtype; the E-step products run in it.

    Returns
    -------
    dict
        ``proj_blocks``: tuple of (rows, lo, hi, B) with B (rows, K (hi - lo))
        in ``dtype``: block [lo, hi) of the stacked factors, ``Z1[:, :rows]``
        times B; ``proj_const`` (K,) in ``dtype``.
    """
    k, d = mu.shape
    mu_proj = np.einsum("kd,kde->ke", mu, prec_chol)
    triangular = not np.any(np.tril(prec_chol, -1))
    blocks = []
    for lo, hi in _column_splits(d, triangular):
        rows = hi if triangular else d
        B = np.empty((1 + rows, k, hi - lo))
        B[0] = -mu_proj[:, lo:hi]
        B[1:] = np.transpose(prec_chol[:, :rows, lo:hi], (1, 0, 2))
        B *= _SQRT_HALF
        # rows (j, k) of the transposed block: column lo + j of component k
        Bt = np.transpose(B, (2, 1, 0)).reshape((hi - lo) * k, 1 + rows)
        blocks.append((1 + rows, lo, hi, np.ascontiguousarray(Bt, dtype=dtype)))
    return {"proj_blocks": tuple(blocks), "proj_const": const.astype(dtype)}


def e_rows(n_components, d, itemsize):
    """Rows per E-step sub-block: its (rows, K d) projections about E_BYTES."""
    rows = E_BYTES // (itemsize * n_components * d)
    return max(_MIN_E_ROWS, min(BLOCK_ROWS, rows // 16 * 16))


class _Workspace:
    """Every array of the per-block loop, for blocks of ``width`` rows."""

    def __init__(self, blocks, n_components, d, width, sub, dtype):
        k = n_components
        self.Z1 = np.empty((width, 1 + d), dtype=dtype)
        self.Z1[:, 0] = 1.0
        # the projections of a sub-block, features-major: row j K + k holds
        # column j of z P_k - mu'_k
        self.Yt = np.empty((d * k, sub), dtype=dtype)
        self.L = np.empty((k, width), dtype=dtype)
        # names shared with daskem._kernels._Workspace (for _normalise_in_place)
        self.top = np.empty(width, dtype=dtype)
        self.total = np.empty(width, dtype=dtype)
        self.keep = np.empty((k, width), dtype=bool)
        self.root = np.empty((k, width), dtype=dtype)
        self.grams = np.empty((k, 1 + d, 1 + d), dtype=dtype)
        # gathered rows of the M-step (a run of components, or one dense one)
        gather = max(GROUP_ROWS, width)
        self.Zs = np.empty((gather, 1 + d), dtype=dtype)
        self.rows = np.empty(gather, dtype=np.intp)
        self.weights = np.empty(gather, dtype=dtype)


_THREAD = threading.local()
_CACHED_WORKSPACES = 4


def _workspace(kp, n_components, d, width, sub, full_width=True):
    blocks, dtype = kp["proj_blocks"], kp["dtype"]
    if not full_width:
        return _Workspace(blocks, n_components, d, width, sub, dtype)
    cache = getattr(_THREAD, "workspaces", None)
    if cache is None:
        cache = _THREAD.workspaces = {}
    key = (tuple((r, lo, hi) for r, lo, hi, _ in blocks), n_components, d, width, sub, dtype.char)
    ws = cache.get(key)
    if ws is None:
        if len(cache) >= _CACHED_WORKSPACES:
            cache.clear()
        ws = cache[key] = _Workspace(blocks, n_components, d, width, sub, dtype)
    return ws


def _log_prob_into(ws, kp, sub):
    """Weighted log-densities (K, n) of the block in ws.Z1 into ws.L.

    Per sub-block: the products, squared in place and summed over the d
    columns of each component (a sum over the leading axis of a
    features-major buffer: long vector adds; every call releases the GIL,
    which np.einsum does not)."""
    Z1, L = ws.Z1, ws.L
    n = len(Z1)
    k = L.shape[0]
    d = Z1.shape[1] - 1
    for s in range(0, n, sub):
        e = min(n, s + sub)
        Yt = ws.Yt[:, : e - s]
        for n_rows, lo, hi, Bt in kp["proj_blocks"]:
            np.matmul(Bt, Z1[s:e, :n_rows].T, out=Yt[lo * k : hi * k])
        np.square(Yt, out=Yt)
        np.sum(Yt.reshape(d, k, e - s), axis=0, out=L[:, s:e])
    np.subtract(kp["proj_const"][:, None], L, out=L)
    return L


def _add_moments(acc, R, ws):
    """acc[k] += sum_i r_ik [1, z_i] [1, z_i]^T for the block in ws.Z1.

    Rows where r_ik is 0 (about half of them on the benchmark's separated
    d=64 data) add nothing: the rows of a component with at most
    ``SPARSE_FRACTION`` of the block non-zero are gathered first (exact:
    the others would add zeros), for runs of such components at once (at
    most ``GROUP_ROWS`` rows), so that the calls that keep the GIL
    (flatnonzero) or are short stay few (d=64, K=8, one run on two threads:
    gathering per component scaled 1.56x in float64 and 1.21x in float32 from
    one thread to two, runs of components 1.89x and 1.51x).
    """
    Z1 = ws.Z1
    k, n = R.shape
    root = np.sqrt(R, out=ws.root)
    counts = np.count_nonzero(R, axis=1)
    gathered = counts <= SPARSE_FRACTION * n
    j = 0
    while j < k:
        if not gathered[j]:
            np.multiply(Z1, root[j][:, None], out=ws.Zs[:n])
            # numpy computes a.T @ a with one syrk (and mirrors the triangle)
            np.matmul(ws.Zs[:n].T, ws.Zs[:n], out=ws.grams[j])
            j += 1
            continue
        stop, total = j + 1, counts[j]
        while stop < k and gathered[stop] and total + counts[stop] <= GROUP_ROWS:
            total += counts[stop]
            stop += 1
        flat = np.flatnonzero(R[j:stop])  # component-major: (c - j) n + row
        rows, Zs, weight = ws.rows[:total], ws.Zs[:total], ws.weights[:total]
        np.remainder(flat, n, out=rows)
        # mode="clip": with the default "raise", take buffers its output
        np.take(Z1, rows, axis=0, out=Zs, mode="clip")
        np.take(root[j:stop].reshape(-1), flat, out=weight, mode="clip")
        Zs *= weight[:, None]
        a = 0
        for c in range(j, stop):
            b = a + counts[c]
            np.matmul(Zs[a:b].T, Zs[a:b], out=ws.grams[c])
            a = b
        j = stop
    acc += ws.grams


def chunk_statistics(block, kp, layout, sample_weight, normalise, float32_sum_rows):
    """The projection form of :func:`daskem._kernels.chunk_statistics`.

    ``normalise`` is the packed kernel's in-place log-sum-exp; rows of
    float32 data are summed in float32 over at most ``float32_sum_rows``.
    """
    out = np.zeros(layout.size)
    n, d = block.shape
    dtype = kp["dtype"]
    k = len(kp["proj_const"])
    step = BLOCK_ROWS if dtype == np.float64 else min(BLOCK_ROWS, float32_sum_rows)
    sub = min(step, e_rows(k, d, dtype.itemsize))
    acc = np.zeros((k, 1 + d, 1 + d))
    shift = kp["shift"]
    loglik = 0.0
    with np.errstate(under="ignore", over="ignore"):
        for start in range(0, n, step):
            rows = min(step, n - start)
            ws = _workspace(kp, k, d, rows, min(sub, rows), rows == step or rows == n)
            # computed in float64 (shift is float64), rounded once to Z1's dtype
            np.subtract(block[start : start + rows], shift, out=ws.Z1[:, 1:], casting="same_kind")
            R = _log_prob_into(ws, kp, min(sub, rows))
            log_norm = normalise(R, ws)
            if sample_weight is None:
                loglik += float(log_norm.sum(dtype=np.float64))
            else:
                w = sample_weight[start : start + rows]
                loglik += float(log_norm.astype(np.float64) @ w)
                R *= w
            _add_moments(acc, R, ws)
    o = layout.offsets
    iu, ju = layout.triu
    out[o[0] : o[1]] = acc[:, 0, 0]
    out[o[1] : o[2]] = acc[:, 1:, 0].ravel()
    out[o[2] : o[3]] = acc[:, 1 + iu, 1 + ju].ravel()
    out[o[3]] = loglik
    out[o[4]] = n if sample_weight is None else sample_weight.sum()
    return out[None, :]


# ------------------------------------------------------------- cost model


# Nanoseconds per row of chunk_statistics on one thread, fitted (least
# relative squares) to both forms over d in (16, 24, 32, 48, 64, 96, 128) x
# K in (2, 4, ..., 64), float64 and float32 (see full_covariance_costs):
#   packed:     a m + b K m,                 m = 1 + d(d+1)/2 + d (+ d/2)
#   projection: c + e d + f K d^2 + g K d
_FULL_COSTS = {
    "d": ((0.976, 0.108), (0.0, 4.67, 0.00347, 4.68)),
    "f": ((0.852, 0.053), (0.0, 6.67, 0.00254, 1.74)),
}


def full_covariance_costs(n_components, n_features, dtype):
    """Predicted nanoseconds per row of the two full-covariance forms.

    The cost model behind :func:`full_covariance_form`. Measured on one
    thread of the project's machine (AMD EPYC, 2 cores, OpenBLAS 0.3.31,
    shared with other jobs), thread CPU time, minimum of 5 interleaved
    rounds on 8,000-24,000 rows of a random mixture after two EM
    iterations; the fit is within 12% of the measurements (median; 57% at
    most, the packed form at d >= 96, where its feature matrix leaves the
    cache). Measured ns per row (packed / projection):

    ========  =================  ==================
    d, K      float64            float32
    ========  =================  ==================
    16, 8     485 / 774          312 / 514
    16, 64    1,353 / 4,705      725 / 2,422
    32, 4     896 / 883          706 / 456
    48, 8     2,129 / 2,104      1,864 / 1,177
    64, 8     4,309 / 3,673      3,194 / 1,332
    64, 16    5,524 / 6,234      3,365 / 2,209
    64, 64    16,338 / 17,225    8,299 / 7,152
    128, 8    26,880 / 5,678     13,369 / 3,141
    128, 64   65,148 / 46,982    34,213 / 19,850
    ========  =================  ==================

    The model picks the faster form in 82 of the 84 cells; in the other two
    the forms were within 13% (float64, d=64, K=16) and 4% (d=24, K=2).

    Returns
    -------
    (float, float)
        Packed and projection ns per row.
    """
    k, d = n_components, n_features
    m = 1 + d * (d + 1) // 2 + d + (d // 2 if d % 2 == 0 else 0)
    (a, b), (c, e, f, g) = _FULL_COSTS["f" if np.dtype(dtype) == np.float32 else "d"]
    return a * m + b * k * m, c + e * d + f * k * d * d + g * k * d


def full_covariance_form(n_components, n_features, dtype):
    """The form of the full-covariance kernel for K, d and the data's dtype:
    "packed" (one matrix of packed products) or "projection"
    (:mod:`daskem._projection`), whichever :func:`full_covariance_costs`
    predicts faster."""
    packed, projection = full_covariance_costs(n_components, n_features, dtype)
    return "projection" if projection < packed else "packed"
