"""Per-chunk kernels: the E-step and the sufficient statistics of one block of rows.

Everything here runs inside a Dask task on one chunk of rows (all features).
The chunk is processed in row blocks small enough for the n x K x d
intermediates to stay in cache. Data are shifted by a fixed centre ``c`` near
the data mean before any product, so that the raw second moments added up
across chunks keep their digits (see shared notes, "Stable merging").

Statistics are returned as one flat float64 vector per chunk (layout in
:class:`StatisticsLayout`) so that Dask's own tree reduction can add them up.
"""

import math

import numpy as np
from scipy.special import logsumexp

from ._covariance import log_det_cholesky

# Bytes of float64 intermediates per row block; sized to stay in L2 cache.
_BLOCK_BYTES = 2 * 2**20
_MIN_BLOCK_ROWS = 64
_MAX_BLOCK_ROWS = 16384


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


def kernel_parameters(weights, means, precisions_cholesky, covariance_type, shift, dtype):
    """Precompute, once per iteration, what every chunk task needs.

    The result is small (K x d x d at most) and enters the graph as one key
    that all chunk tasks reference.

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
    """
    means = np.asarray(means, dtype=np.float64)
    n_components, n_features = means.shape
    mu = means - shift
    prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(weights, dtype=np.float64))
    const = (
        log_weights
        + log_det_cholesky(prec_chol, covariance_type, n_features)
        - 0.5 * n_features * math.log(2 * math.pi)
    )
    kp = {
        "covariance_type": covariance_type,
        "shift": np.asarray(shift, dtype=np.float64),
        "const": np.broadcast_to(const, (n_components,)).astype(np.float64),
        "dtype": np.dtype(dtype),
    }
    if covariance_type == "full":
        # One (d, K*d) matrix: all K projections z P_k in a single product.
        kp["proj"] = np.ascontiguousarray(
            np.transpose(prec_chol, (1, 0, 2)).reshape(n_features, -1), dtype=dtype
        )
        kp["proj_offset"] = np.einsum("kd,kde->ke", mu, prec_chol).reshape(-1).astype(dtype)
    elif covariance_type == "tied":
        kp["proj"] = np.ascontiguousarray(prec_chol, dtype=dtype)
        kp["proj_offset"] = (mu @ prec_chol).astype(dtype)
    elif covariance_type == "diag":
        prec = prec_chol**2
        kp["sq_coef"] = np.ascontiguousarray(prec.T, dtype=dtype)
        kp["lin_coef"] = np.ascontiguousarray((-2.0 * mu * prec).T, dtype=dtype)
        kp["const"] = kp["const"] - 0.5 * np.sum(mu**2 * prec, axis=1)
    else:
        prec = prec_chol**2
        kp["sq_coef"] = prec.astype(dtype)
        kp["lin_coef"] = np.ascontiguousarray((-2.0 * mu * prec[:, None]).T, dtype=dtype)
        kp["const"] = kp["const"] - 0.5 * np.sum(mu**2, axis=1) * prec
    return kp


def _block_rows(n_features, n_columns):
    """Rows per block so that about _BLOCK_BYTES of intermediates are live."""
    per_row = 8 * (2 * n_features + n_columns)
    return int(np.clip(_BLOCK_BYTES // per_row, _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))


def _weighted_log_prob(z, kp):
    """log pi_k + log N(x | mu_k, Sigma_k) for a block of shifted rows, (n, K)."""
    cov = kp["covariance_type"]
    n = z.shape[0]
    if cov == "full":
        y = z @ kp["proj"]
        y -= kp["proj_offset"]
        y *= y
        quad = y.reshape(n, len(kp["const"]), -1).sum(axis=2)
    elif cov == "tied":
        y = z @ kp["proj"]
        diff = y[:, None, :] - kp["proj_offset"][None, :, :]
        quad = np.einsum("nkd,nkd->nk", diff, diff)
    elif cov == "diag":
        quad = (z * z) @ kp["sq_coef"] + z @ kp["lin_coef"]
    else:
        quad = np.einsum("nd,nd->n", z, z)[:, None] * kp["sq_coef"] + z @ kp["lin_coef"]
    return kp["const"] - 0.5 * quad.astype(np.float64, copy=False)


def _shifted(block, kp):
    """The block minus the centre, in the data dtype and in float64."""
    z64 = np.asarray(block, dtype=np.float64) - kp["shift"]
    if kp["dtype"] == np.float64:
        return z64, z64
    return z64.astype(kp["dtype"]), z64


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
    o = layout.offsets
    # weights scale the data side, so that resp may be dense or sparse
    w = np.ones(len(z64)) if sample_weight is None else sample_weight
    zw = z64 if sample_weight is None else z64 * w[:, None]
    out[o[0] : o[1]] += resp.T @ w
    out[o[1] : o[2]] += (resp.T @ zw).ravel()
    cov = layout.covariance_type
    if cov == "full":
        iu, ju = layout.triu
        second = resp.T @ (zw[:, iu] * z64[:, ju])
    elif cov == "tied":
        second = zw.T @ z64
    elif cov == "diag":
        second = resp.T @ (zw * z64)
    else:
        second = resp.T @ np.einsum("nd,nd->n", zw, z64)
    out[o[2] : o[3]] += second.ravel()


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
    n, d = block.shape
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    step = _block_rows(d, layout.n_components * (d + 3))
    loglik = 0.0
    for start in range(0, n, step):
        z, z64 = _shifted(block[start : start + step], kp)
        log_prob = _weighted_log_prob(z, kp)
        log_norm = logsumexp(log_prob, axis=1)
        with np.errstate(under="ignore"):
            resp = np.exp(log_prob - log_norm[:, None])
        w = None if sample_weight is None else sample_weight[start : start + step]
        accumulate_statistics(out, layout, z64, resp, w)
        loglik += log_norm.sum() if w is None else log_norm @ w
    out[layout.offsets[3]] = loglik
    out[layout.offsets[4]] = n if sample_weight is None else sample_weight.sum()
    return out[None, :]


def _map_row_blocks(block, kp, func):
    n, d = block.shape
    step = _block_rows(d, len(kp["const"]) * (d + 3))
    parts = [func(_weighted_log_prob(_shifted(block[s : s + step], kp)[0], kp))
             for s in range(0, n, step)]
    if not parts:
        return func(np.empty((0, len(kp["const"]))))
    return np.concatenate(parts)


def chunk_log_resp(block, kp):
    """Log-responsibilities of a chunk's rows, (n, K) float64."""
    def log_resp(log_prob):
        return log_prob - logsumexp(log_prob, axis=1)[:, None]
    return _map_row_blocks(block, kp, log_resp)


def chunk_predict_proba(block, kp):
    """Responsibilities of a chunk's rows, (n, K) float64."""
    return np.exp(chunk_log_resp(block, kp))


def chunk_score_samples(block, kp):
    """Per-row log-likelihood log p(x), (n,) float64."""
    return _map_row_blocks(block, kp, lambda lp: logsumexp(lp, axis=1))


def chunk_predict(block, kp):
    """Most probable component of each row, (n,) int64."""
    return _map_row_blocks(block, kp, lambda lp: np.argmax(lp, axis=1).astype(np.int64))
