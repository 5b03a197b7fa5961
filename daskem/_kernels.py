"""Per-chunk kernels: the E-step and the sufficient statistics of one block of rows.

Everything here runs inside a Dask task on one chunk of rows (all features).
The chunk is processed in row blocks small enough for the intermediates to
stay in cache. Data are shifted by a fixed centre ``c`` near the data mean
before any product, so that the raw second moments added up across chunks
keep their digits (see shared notes, "Stable merging").

How a block is processed (one design for the four covariance types)
-------------------------------------------------------------------
A block of ``n`` shifted rows z becomes a feature matrix ``F`` of shape
``(m, n)`` (features by rows, so that building it is a handful of contiguous
vector operations):

* full: ``[1; z; packed upper triangle of z z^T]``, m = 1 + d + d(d+1)/2;
* tied: ``[1; z]``, m = 1 + d (plus the shared ``sum z z^T``);
* diag: ``[1; z; z^2]``, m = 1 + 2d;
* spherical: ``[1; z; |z|^2]``, m = 1 + d + 1.

The quadratic forms use (z - mu)^T L (z - mu) = <z z^T, L> - 2 mu^T L z +
mu^T L mu, so every component's weighted log-density is one row of a single
matrix product ``W F`` with a (K, m) matrix ``W`` prepared once per iteration
by :func:`kernel_parameters` (constants, linear terms and the packed
precisions; tied adds the shared |P^T z|^2). After the log-sum-exp, the
responsibilities ``R`` (K, n) give every statistic of the block in one more
product ``R F^T``: its columns are N, S1 and the (packed) second moments, in
the order of :class:`StatisticsLayout`.

The products run in the data's dtype (float32 data: float32 GEMMs, about
twice as fast); each block's statistics are added into float64 accumulators,
and the float32 M-step product is split into short row runs so that its
rounding stays near float64-accumulation accuracy.

Statistics are returned as one flat float64 vector per chunk (layout in
:class:`StatisticsLayout`) so that Dask's own tree reduction can add them up.
"""

import math

import numpy as np
import scipy.sparse as sp

from ._covariance import log_det_cholesky

# Bytes of the feature matrix of one row block; sized to stay in cache.
_BLOCK_BYTES = 2 * 2**20
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 8192
# Rows per float32 M-step product: float32 sums of at most this many terms
# are added into the float64 accumulators.
_FLOAT32_SUM_ROWS = 512


class StatisticsLayout:
    """Where each sufficient statistic lives in a chunk's flat float64 vector.

    The vector holds, in order: responsibility sums N (K), first moments S1
    (K x d), second moments (shape by covariance type; full is stored as the
    packed upper triangle), the sum of per-row log-likelihoods, and the number
    (or total weight) of rows.
    """

    def __init__(self, covariance_type, n_components, n_features):
        k, d = n_components, n_features
        self.covariance_type = covariance_type
        self.n_components, self.n_features = k, d
        self.triu = np.triu_indices(d)
        n_packed = len(self.triu[0])
        self.second_shape = {
            "full": (k, n_packed),
            "tied": (d, d),
            "diag": (k, d),
            "spherical": (k,),
        }[covariance_type]
        sizes = [k, k * d, int(np.prod(self.second_shape)), 1, 1]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.size = int(self.offsets[-1])

    def __dask_tokenize__(self):
        return ("StatisticsLayout", self.covariance_type, self.n_components, self.n_features)

    def _part(self, vector, i):
        return vector[self.offsets[i] : self.offsets[i + 1]]

    def unpack(self, vector):
        """Split a statistics vector into (N, S1, S2, loglik_sum, n_rows).

        S2 comes back unpacked: (K, d, d) for full covariance.
        """
        k, d = self.n_components, self.n_features
        s2 = self._part(vector, 2).reshape(self.second_shape)
        if self.covariance_type == "full":
            full = np.zeros((k, d, d))
            full[:, self.triu[0], self.triu[1]] = s2
            full[:, self.triu[1], self.triu[0]] = s2
            s2 = full
        return (
            self._part(vector, 0).copy(),
            self._part(vector, 1).reshape(k, d).copy(),
            s2,
            float(self._part(vector, 3)[0]),
            float(self._part(vector, 4)[0]),
        )

    def pack_from_second_moments(self, n, s1, s2_full_or_native, loglik, n_rows):
        """Build a statistics vector from parts (S2 unpacked for full)."""
        s2 = s2_full_or_native
        if self.covariance_type == "full":
            s2 = s2[:, self.triu[0], self.triu[1]]
        return np.concatenate(
            [np.ravel(n), np.ravel(s1), np.ravel(s2), [loglik], [n_rows]]
        ).astype(np.float64)


# ---------------------------------------------------------------- features


def _n_feature_rows(covariance_type, d):
    """m: rows of the feature matrix [1; z; second-order terms]."""
    return 1 + d + {
        "full": d * (d + 1) // 2,
        "tied": 0,
        "diag": d,
        "spherical": 1,
    }[covariance_type]


def _block_rows(n_rows_features, itemsize):
    """Rows per block so that the (m, rows) feature matrix is about _BLOCK_BYTES."""
    rows = _BLOCK_BYTES // (itemsize * n_rows_features)
    return int(np.clip(rows, _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS)) // 16 * 16


def _fill_features(F, covariance_type, d):
    """Write the second-order rows of F from its rows 1..d (z^T), in place.

    F : (m, n) with row 0 equal to 1 and rows 1..d holding the shifted rows
    transposed. The packed products follow ``np.triu_indices(d)``'s order.
    """
    z = F[1 : 1 + d]
    if covariance_type == "full":
        off = 1 + d
        for i in range(d):
            np.multiply(z[i], z[i:], out=F[off : off + d - i])
            off += d - i
    elif covariance_type == "diag":
        np.multiply(z, z, out=F[1 + d :])
    elif covariance_type == "spherical":
        np.einsum("ij,ij->j", z, z, out=F[1 + d])


def _features_into(F, block, shift, covariance_type):
    """Fill F (m, n) from a block of n raw rows: [1; (x - c)^T; second order]."""
    d = block.shape[1]
    F[0] = 1.0
    # computed in float64 (shift is float64), rounded once to F's dtype
    np.subtract(block.T, shift[:, None], out=F[1 : 1 + d], casting="same_kind")
    _fill_features(F, covariance_type, d)
    return F


def _statistics_from_products(out, layout, G, second=None):
    """Add a (K, m) product R F^T (and tied's shared second moment) to ``out``."""
    o = layout.offsets
    d = layout.n_features
    out[o[0] : o[1]] += G[:, 0]
    out[o[1] : o[2]] += G[:, 1 : 1 + d].ravel()
    if layout.covariance_type == "tied":
        out[o[2] : o[3]] += second.ravel()
    else:
        out[o[2] : o[3]] += G[:, 1 + d :].ravel()


# -------------------------------------------------------------- parameters


def kernel_parameters(weights, means, precisions_cholesky, covariance_type, shift, dtype):
    """Precompute, once per iteration, what every chunk task needs.

    The result is small (K x m, with m = 1 + d + d(d+1)/2 at most) and enters
    the graph as one key that all chunk tasks reference.

    Parameters
    ----------
    weights : ndarray (K,)
    means : ndarray (K, d)
    precisions_cholesky : ndarray
    covariance_type : str
    shift : ndarray (d,)
        The fixed centre c subtracted from every row.
    dtype : numpy dtype
        The data's dtype; the E-step products run in it.

    Returns
    -------
    dict
        ``W`` (K, m): weighted log-density of component k is ``W[k] @ F``
        for the feature matrix F of a block (plus ``-|P^T z|^2 / 2`` for tied,
        with ``proj`` = P^T).
    """
    means = np.asarray(means, dtype=np.float64)
    n_components, d = means.shape
    mu = means - shift
    prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(weights, dtype=np.float64))
    const = np.broadcast_to(
        log_weights
        + log_det_cholesky(prec_chol, covariance_type, d)
        - 0.5 * d * math.log(2 * math.pi),
        (n_components,),
    ).astype(np.float64)
    dtype = np.dtype(dtype)
    W = np.zeros((n_components, _n_feature_rows(covariance_type, d)))
    kp = {
        "covariance_type": covariance_type,
        "shift": np.asarray(shift, dtype=np.float64),
        "dtype": dtype,
    }
    if covariance_type == "full":
        # L_k = P_k P_k^T; mu^T L mu = |P_k^T mu_k|^2
        prec = prec_chol @ np.swapaxes(prec_chol, 1, 2)
        mu_proj = np.einsum("kd,kde->ke", mu, prec_chol)
        W[:, 0] = const - 0.5 * np.sum(mu_proj**2, axis=1)
        W[:, 1 : 1 + d] = np.einsum("kde,ke->kd", prec, mu)
        iu, ju = np.triu_indices(d)
        # off-diagonal entries of <z z^T, L> appear twice
        W[:, 1 + d :] = np.where(iu == ju, -0.5, -1.0) * prec[:, iu, ju]
    elif covariance_type == "tied":
        prec = prec_chol @ prec_chol.T
        mu_proj = mu @ prec_chol
        W[:, 0] = const - 0.5 * np.sum(mu_proj**2, axis=1)
        W[:, 1:] = mu @ prec
        kp["proj"] = np.ascontiguousarray(prec_chol.T, dtype=dtype)
    elif covariance_type == "diag":
        prec = prec_chol**2
        W[:, 0] = const - 0.5 * np.sum(mu**2 * prec, axis=1)
        W[:, 1 : 1 + d] = mu * prec
        W[:, 1 + d :] = -0.5 * prec
    else:
        prec = prec_chol**2
        W[:, 0] = const - 0.5 * np.sum(mu**2, axis=1) * prec
        W[:, 1 : 1 + d] = mu * prec[:, None]
        W[:, 1 + d] = -0.5 * prec
    # rows of W that are -inf (zero weight) stay -inf in every product
    kp["W"] = np.ascontiguousarray(W, dtype=dtype)
    kp["const"] = const
    return kp


# ------------------------------------------------------------------ E-step


def _log_prob_into(L, F, kp, n_features):
    """Weighted log-densities (K, n) of a block into L, from its features F."""
    np.matmul(kp["W"], F, out=L)
    if kp["covariance_type"] == "tied":
        y = kp["proj"] @ F[1 : 1 + n_features]
        np.square(y, out=y)
        L -= 0.5 * y.sum(axis=0)
    return L


def _normalise_in_place(L):
    """Log-sum-exp over components (axis 0); L becomes the responsibilities.

    Returns the per-row log-likelihood log p(x) = logsumexp_k L[k].
    """
    top = L.max(axis=0)
    if not np.all(np.isfinite(top)):
        # a row every component gives probability 0 (or a NaN): keep -inf
        top[~np.isfinite(top)] = 0.0
    L -= top
    np.exp(L, out=L)
    total = L.sum(axis=0)
    with np.errstate(divide="ignore"):
        log_norm = np.log(total)
    log_norm += top
    L /= total
    return log_norm


def _block_log_prob(block, kp):
    """(n, K) float64 weighted log-densities of raw rows, block by block."""
    cov = kp["covariance_type"]
    n, d = block.shape
    m = kp["W"].shape[1]
    step = _block_rows(m, kp["dtype"].itemsize)
    F = np.empty((m, min(step, max(n, 1))), dtype=kp["dtype"])
    out = np.empty((n, kp["W"].shape[0]))
    for start in range(0, n, step):
        rows = block[start : start + step]
        Fb = _features_into(F[:, : len(rows)], rows, kp["shift"], cov)
        L = np.empty((kp["W"].shape[0], len(rows)), dtype=kp["dtype"])
        out[start : start + len(rows)] = _log_prob_into(L, Fb, kp, d).T
    return out


def _weighted_log_prob(z, kp):
    """log pi_k + log N(x | mu_k, Sigma_k) for a block of shifted rows, (n, K)."""
    return _block_log_prob(np.asarray(z, dtype=np.float64) + kp["shift"], kp)


# ------------------------------------------------------------ statistics


def accumulate_statistics(out, layout, z64, resp, sample_weight=None):
    """Add one block's sufficient statistics to the flat vector ``out``.

    Parameters
    ----------
    out : ndarray
        Flat float64 statistics vector, updated in place (everything but the
        log-likelihood and the row count).
    layout : StatisticsLayout
    z64 : ndarray (n, d), float64
        Shifted rows.
    resp : ndarray or scipy.sparse matrix (n, K)
        Responsibilities: soft, or a sparse one-hot matrix for hard
        assignments.
    sample_weight : ndarray (n,), optional
    """
    cov = layout.covariance_type
    z64 = np.asarray(z64, dtype=np.float64)
    n, d = z64.shape
    m = _n_feature_rows(cov, d)
    step = _block_rows(m, 8)
    F = np.empty((min(step, max(n, 1)), m))
    sparse = sp.issparse(resp)
    if sparse:
        resp = sp.csr_matrix(resp)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    G = np.zeros((layout.n_components, m))
    second = np.zeros((d, d)) if cov == "tied" else None
    for start in range(0, n, step):
        z = z64[start : start + step]
        rows = len(z)
        FT = F[:rows]  # (rows, m) row-major, filled through its transpose
        Fb = FT.T
        Fb[0] = 1.0
        Fb[1 : 1 + d] = z.T
        _fill_features(Fb, cov, d)
        if w is not None:
            FT *= w[start : start + rows, None]
        r = resp[start : start + rows]
        G += np.asarray(r.T @ FT)
        if cov == "tied":
            second += FT[:, 1 : 1 + d].T @ z
    _statistics_from_products(out, layout, G, second)


def chunk_statistics(block, kp, layout, sample_weight=None):
    """E-step and sufficient statistics of one chunk, as a (1, size) array.

    Parameters
    ----------
    block : ndarray (n, d)
        Rows of the chunk (float32 or float64).
    kp : dict
        From :func:`kernel_parameters`.
    layout : StatisticsLayout
    sample_weight : ndarray (n, 1) or (n,), optional

    Returns
    -------
    ndarray of shape (1, layout.size), float64
    """
    out = np.zeros(layout.size)
    block = np.asarray(block)
    n, d = block.shape
    cov = layout.covariance_type
    dtype = kp["dtype"]
    W = kp["W"]
    k, m = W.shape
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    step = _block_rows(m, dtype.itemsize)
    width = min(step, max(n, 1))
    F = np.empty((m, width), dtype=dtype)
    L = np.empty((k, width), dtype=dtype)
    G = np.zeros((k, m))
    second = np.zeros((d, d)) if cov == "tied" else None
    # float32 products sum few rows at a time into float64 accumulators
    sum_rows = _FLOAT32_SUM_ROWS if dtype == np.float32 else width
    loglik = 0.0
    with np.errstate(under="ignore", over="ignore"):
        for start in range(0, n, step):
            rows = min(step, n - start)
            Fb = _features_into(F[:, :rows], block[start : start + rows], kp["shift"], cov)
            R = _log_prob_into(L[:, :rows], Fb, kp, d)
            log_norm = _normalise_in_place(R)
            if sample_weight is None:
                loglik += float(log_norm.sum(dtype=np.float64))
            else:
                w = sample_weight[start : start + rows]
                loglik += float(log_norm.astype(np.float64) @ w)
                R *= w.astype(dtype, copy=False)
            for s in range(0, rows, sum_rows):
                e = min(rows, s + sum_rows)
                G += R[:, s:e] @ Fb[:, s:e].T
                if cov == "tied":
                    z = Fb[1 : 1 + d, s:e]
                    zw = z if sample_weight is None else z * w[s:e].astype(dtype, copy=False)
                    second += zw @ z.T
    _statistics_from_products(out, layout, G, second)
    out[layout.offsets[3]] = loglik
    out[layout.offsets[4]] = n if sample_weight is None else sample_weight.sum()
    return out[None, :]


# -------------------------------------------------------------- prediction


def _map_row_blocks(block, kp, func):
    return func(_block_log_prob(np.asarray(block), kp))


def _log_sum_exp_rows(log_prob):
    """logsumexp over axis 1 of an (n, K) float64 array (max-subtract-exp-sum)."""
    top = log_prob.max(axis=1) if log_prob.shape[1] else np.full(len(log_prob), -np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore", divide="ignore"):
        return np.log(np.exp(log_prob - top[:, None]).sum(axis=1)) + top


def chunk_log_resp(block, kp):
    """Log-responsibilities of a chunk's rows, (n, K) float64."""
    def log_resp(log_prob):
        return log_prob - _log_sum_exp_rows(log_prob)[:, None]
    return _map_row_blocks(block, kp, log_resp)


def chunk_predict_proba(block, kp):
    """Responsibilities of a chunk's rows, (n, K) float64."""
    return np.exp(chunk_log_resp(block, kp))


def chunk_score_samples(block, kp):
    """Per-row log-likelihood log p(x), (n,) float64."""
    return _map_row_blocks(block, kp, _log_sum_exp_rows)


def chunk_predict(block, kp):
    """Most probable component of each row, (n,) int64."""
    return _map_row_blocks(block, kp, lambda lp: np.argmax(lp, axis=1).astype(np.int64))
