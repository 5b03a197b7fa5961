"""Per-chunk kernels: the E-step and the sufficient statistics of one block of rows.

Everything here runs inside a Dask task on one chunk of rows (all features).
The chunk is processed in row blocks small enough for the intermediates to
stay in cache. Data are shifted by a fixed centre ``c`` near the data mean
before any product, so that the raw second moments added up across chunks
keep their digits (see shared notes, "Stable merging").

How a block is processed (one design for the four covariance types)
-------------------------------------------------------------------
A block of ``n`` shifted rows z becomes a feature matrix ``F`` of
(logical) shape ``(m, n)``:

* full: ``[1; packed products z_a z_b, a <= b; z]``, m = 1 + d(d+1)/2 + d
  (+ d/2 unused duplicate products for even d; see :class:`daskem._features._Features`);
* tied: ``[1; z]``, m = 1 + d (plus the shared ``sum z z^T``);
* diag: ``[1; z; z^2]``, m = 1 + 2d;
* spherical: ``[1; z; |z|^2]``, m = 1 + d + 1.

The quadratic forms use (z - mu)^T L (z - mu) = <z z^T, L> - 2 mu^T L z +
mu^T L mu, so every component's weighted log-density is one row of a single
matrix product ``W F`` with a (K, m) matrix ``W`` prepared once per iteration
by :func:`kernel_parameters` (constants, linear terms and the packed
precisions, off-diagonals counted twice; tied adds the shared |P^T z|^2).
After an in-place log-sum-exp over the K rows, the responsibilities ``R``
(K, n) give every statistic of the block in one more product ``R F^T``: its
columns are N, the second moments and S1, which :class:`daskem._features._Features` puts in
the order of :class:`StatisticsLayout`. Full covariance stores F as one
features-major buffer; the other types keep z and its squares in separate
contiguous (n, .) arrays (each product above is then split along m), whose
filling is three times cheaper than writing columns of one (n, m) buffer;
diag and spherical use that one (n, m) buffer where its single, wider product
saves more than its filling costs (up to 16 features, or 64 components and
more: ``daskem._features._features``).
Per row, full covariance costs about 2 K d^2 flops in two BLAS-3 products
(against 4 K d^2 for the projection form scikit-learn uses), plus K
exponentials. For large d and small K that matrix of d(d+1)/2 products per
row makes the kernel memory-bound, and the projection form of
:mod:`daskem._projection` (the rows times all K Cholesky factors, then one
symmetric product per component) is faster: :func:`full_covariance_form`
chooses per (K, d, dtype) from a cost model (``kp["form"]``).

The other types' products take the rows-major z and z^2 as the left
operand, ``z @ Wt`` into a transposed view of L, with W's columns
transposed once per iteration (``kp["Wt"]``): OpenBLAS runs that about twice
as fast as ``W @ z.T`` when the block stays in the core's cache, which
their block size (``daskem._features._ROWS_BLOCK_BYTES``) sees to.

Why this shape (cProfile of the first version on one 100k-row chunk, full,
d=16, K=16, one thread): 40% of the time in scipy's logsumexp (per-call
overhead and reductions on 780-row blocks), 30% in the E-step's projections
and their (n, K d) temporaries, 24% in the M-step's fancy-indexed z[:, iu] *
z[:, ju]. Now the two products take most of the time (at 20-50% of the
measured matrix-multiply peak, benchmarks/RESULTS.md) and exp comes next.

The products run in the data's dtype (float32 data: float32 GEMMs, about
twice as fast); each block's statistics are added into float64 accumulators.
For float32 data the full-covariance M-step product is split into short row
runs so that its rounding stays near float64-accumulation accuracy; the
other types' M-step products are small enough to run in float64.

Statistics are returned as one flat float64 vector per chunk (layout in
:class:`StatisticsLayout`) so that Dask's own tree reduction can add them up.
"""

import math
import threading

import numpy as np

from . import _projection
from ._covariance import log_det_cholesky
from ._features import _add_moments, _block_rows, _features, _weighted_products
from ._projection import full_covariance_costs, full_covariance_form  # noqa: F401 (the cost model)
from ._scratch import scratch, scratch_take

# Rows per float32 M-step product: float32 sums of at most this many terms
# are added into the float64 accumulators. 1024 is as accurate as 512 (the
# float32 E-step dominates the error) and fewer calls make float32 17% faster
# on two threads (benchmarks/RESULTS.md).
_FLOAT32_SUM_ROWS = 1024
# Which form the full-covariance statistics take: None lets the cost model
# choose (full_covariance_form); "packed" or "projection" forces one. For tests
# and benchmarks; kernel_parameters(..., form=...) does the same per call.
FULL_FORM = None
# logs of the smallest responsibilities computed exactly (see _normalise_in_place):
# exp of these is the smallest normal float64 / float32 value (about)
_LOG_TINY = {"d": -708.0, "f": -87.0}


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


# -------------------------------------------------------------- parameters


def kernel_parameters(weights, means, precisions_cholesky, covariance_type, shift, dtype,
                      log_weights=None, form=None):
    """Precompute, once per iteration, what every chunk task needs.

    The result is small (K x m, with m about d(d+3)/2 at most) and enters
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
    log_weights : ndarray (K,), optional
        The per-component constants to use instead of log(weights): the
        variational mixture's expected log-weights plus its expectation
        terms (``weights`` is then ignored).
    form : {None, "packed", "projection"}, optional
        Full covariance only: the form of :func:`chunk_statistics` (None:
        ``FULL_FORM``, else :func:`full_covariance_form`'s choice).

    Returns
    -------
    dict
        ``W`` (K, m): the weighted log-density of component k is ``W[k] @ F``
        for the feature matrix F of a block (plus ``-|P^T z|^2 / 2`` for
        tied, with ``proj`` = P^T). Full covariance adds ``form`` and, for
        the projection form, the stacked factors of
        :func:`daskem._projection.projection_parameters`.
    """
    means = np.asarray(means, dtype=np.float64)
    n_components, d = means.shape
    mu = means - shift
    prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
    if log_weights is None:
        with np.errstate(divide="ignore"):
            log_weights = np.log(np.asarray(weights, dtype=np.float64))
    log_weights = np.asarray(log_weights, dtype=np.float64)
    const = np.broadcast_to(
        log_weights
        + log_det_cholesky(prec_chol, covariance_type, d)
        - 0.5 * d * math.log(2 * math.pi),
        (n_components,),
    ).astype(np.float64)
    dtype = np.dtype(dtype)
    kp = {
        "covariance_type": covariance_type,
        "shift": np.asarray(shift, dtype=np.float64),
        "dtype": dtype,
        "const": const,
    }
    # (z - mu)^T L (z - mu) = <z z^T, L> - 2 (L mu)^T z + |P^T mu|^2
    if covariance_type == "full":
        prec = prec_chol @ np.swapaxes(prec_chol, 1, 2)
        mu_proj = np.einsum("kd,kde->ke", mu, prec_chol)
        linear, second = np.einsum("kde,ke->kd", prec, mu), prec
    elif covariance_type == "tied":
        mu_proj = mu @ prec_chol
        linear, second = mu @ (prec_chol @ prec_chol.T), None
        kp["proj"] = np.ascontiguousarray(prec_chol.T, dtype=dtype)
    elif covariance_type == "diag":
        prec = prec_chol**2
        mu_proj = mu * prec_chol
        linear, second = mu * prec, prec
    else:
        prec = prec_chol**2
        mu_proj = mu * prec_chol[:, None]
        linear, second = mu * prec[:, None], prec
    feat = _features(covariance_type, d, n_components)
    W = feat.coefficients(const - 0.5 * np.sum(mu_proj**2, axis=1), linear, second)
    # a zero weight makes W[k, 0] = -inf, and every product of that row -inf
    kp["W"] = np.ascontiguousarray(W, dtype=dtype)
    if not feat.features_major:
        kp["Wt"] = feat.transposed_weights(kp["W"])
    if covariance_type == "full":
        form = form or FULL_FORM or full_covariance_form(n_components, d, dtype)
        if form not in ("packed", "projection"):
            raise ValueError("form must be 'packed' or 'projection', got %r" % (form,))
        kp["form"] = form
        if form == "projection":
            kp.update(_projection.projection_parameters(mu, prec_chol, const, dtype))
    return kp


# ------------------------------------------------------------------ E-step


def _log_prob_into(L, parts, z, kp, ws=None):
    """Weighted log-densities (K, n) of a block into L, from its feature
    parts and shifted rows z (d, n) (see :meth:`daskem._features._Features.fill`); ``ws``
    holds the temporaries (see :class:`_Workspace`)."""
    _weighted_products(kp["W"], parts, L, None if ws is None else ws.product, kp.get("Wt"))
    if kp["covariance_type"] == "tied":
        n = L.shape[1]
        y = kp["proj"] @ z if ws is None else np.matmul(kp["proj"], z, out=ws.projection[:, :n])
        np.square(y, out=y)
        L -= 0.5 * y.sum(axis=0)
    return L


def _normalise_in_place(L, ws=None, top=None, responsibilities=True):
    """Log-sum-exp over components (axis 0); L becomes the responsibilities
    (with ``responsibilities=False``, a work array: predictions need only the sums).

    Returns the per-row log-likelihood log p(x) = logsumexp_k L[k] (in
    ``ws.total`` when a workspace holds the temporaries). ``top``, the
    largest of each column when the caller has it, is overwritten.
    """
    if top is None:
        top = L.max(axis=0) if ws is None else np.max(L, axis=0, out=ws.top)
    if not np.all(np.isfinite(top)):
        # a row every component gives probability 0 (or a NaN): keep -inf
        top[~np.isfinite(top)] = 0.0
    L -= top
    tiny = _LOG_TINY[L.dtype.char]
    if L.min() < tiny:
        # exp is several times slower where its result is subnormal or zero;
        # responsibilities below the smallest normal number (3.3e-308 in
        # float64, 1.6e-38 in float32) are set to zero instead.
        keep = L > tiny if ws is None else np.greater(L, tiny, out=ws.keep)
        np.maximum(L, tiny, out=L)
        np.exp(L, out=L)
        L *= keep
    else:
        np.exp(L, out=L)
    total = L.sum(axis=0) if ws is None else np.sum(L, axis=0, out=ws.total)
    if responsibilities:
        L /= total
    with np.errstate(divide="ignore"):
        log_norm = np.log(total, out=total)
    log_norm += top
    return log_norm


class _Workspace:
    """Work arrays for blocks of ``width`` rows: the feature buffer, L (K, n) and
    every temporary of the per-block loop.

    Nothing is allocated per block: glibc maps and unmaps allocations of more
    than 128 KiB each time when MALLOC_TRIM_THRESHOLD_ is set, as distributed's
    nanny sets it for worker processes, and the page faults made a worker's
    kernel 2.4 times slower than the same kernel in the client.
    """

    def __init__(self, feat, n_components, width, dtype):
        dtype = np.dtype(dtype)
        self.__dict__.update(feat.workspace_arrays(width, dtype))
        self.L = np.empty((n_components, width), dtype=dtype)
        self.product = np.empty((n_components, width), dtype=dtype)
        self.keep = np.empty((n_components, width), dtype=bool)
        self.top = np.empty(width, dtype=dtype)
        self.total = np.empty(width, dtype=dtype)
        # predictions reduce over the components in float64 (see _log_prob_blocks)
        self.top64 = self.top if dtype == np.float64 else np.empty(width)
        if dtype != np.float64:
            self.L64 = np.empty((n_components, width))
        if feat.features_major:
            self.products = feat.product_views(self.F)
        elif dtype == np.float32:
            # float32 data: the M-step products of these types run in float64
            self.R64 = np.empty((n_components, width))
            self.__dict__.update(feat.workspace_arrays(width, np.float64, suffix="64"))
        if feat.covariance_type == "tied":
            self.projection = np.empty((feat.d, width), dtype=dtype)


_THREAD = threading.local()
_CACHED_WORKSPACES = 4


def _workspace(feat, n_components, width, dtype, full_width=True):
    """A workspace for this thread; full-width ones are kept for the next chunk
    (a shorter last block gets a fresh one)."""
    if not full_width:
        return _Workspace(feat, n_components, width, dtype)
    cache = getattr(_THREAD, "workspaces", None)
    if cache is None:
        cache = _THREAD.workspaces = {}
    key = (feat.covariance_type, feat.d, n_components, width, np.dtype(dtype).char)
    ws = cache.get(key)
    if ws is None:
        if len(cache) >= _CACHED_WORKSPACES:
            cache.clear()
        ws = cache[key] = _Workspace(feat, n_components, width, dtype)
    return ws


# ------------------------------------------------------------ statistics


def _weighted_blocks(block, kp):
    """(start, stop, ws, parts, z, L) of each row block of raw rows: the thread's
    workspace, the block's feature parts and shifted rows (see
    :meth:`daskem._features._Features.fill`), and L (K, rows) = ``ws.L``, the
    weighted log-densities in the data's dtype."""
    block = np.asarray(block)
    n, d = block.shape
    k = kp["W"].shape[0]
    feat = _features(kp["covariance_type"], d, k)
    step = _block_rows(feat, kp["dtype"].itemsize)
    for start in range(0, n, step):
        rows = min(step, n - start)
        ws = _workspace(feat, k, rows, kp["dtype"], rows == step or rows == n)
        parts, z = feat.fill(ws, block[start : start + rows], kp["shift"])
        yield start, start + rows, ws, parts, z, _log_prob_into(ws.L, parts, z, kp, ws)


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
    resp : ndarray (n, K)
        Responsibilities (hard assignments: :func:`accumulate_hard_statistics`).
    sample_weight : ndarray (n,), optional
    """
    cov = layout.covariance_type
    z64 = np.asarray(z64, dtype=np.float64)
    n, d = z64.shape
    feat = _features(cov, d, layout.n_components)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    G = np.zeros((layout.n_components, feat.m))
    second = None
    if cov == "tied":
        # the shared second moment counts every row once, whatever resp is
        second = (z64.T if w is None else z64.T * w) @ z64
    resp = np.asarray(resp, dtype=np.float64)
    step = _block_rows(feat, 8)
    zero = np.zeros(d)
    for start in range(0, n, step):
        z = z64[start : start + step]
        rows = len(z)
        ws = _workspace(feat, 0, rows, np.float64, rows == step or rows == n)
        parts, _ = feat.fill(ws, z, zero)
        r = resp[start : start + rows]
        if w is not None:
            r = r * w[start : start + rows, None]
        _add_moments(G, r.T, parts)
    feat.add_statistics(out, layout, G, second)


def assignment_sums(z, labels, n_components, sample_weight=None):
    """Weighted counts (K,) and sums (K, d) of rows assigned to components ``labels``,
    and the sparse (rows, K) assignment matrix that gave them (weights as its values).

    One sparse product for the sums: several times faster than a bincount
    over every (component, feature) pair.
    """
    import scipy.sparse as sp  # here: the EM kernels do without it

    w = np.ones(len(z)) if sample_weight is None else sample_weight
    assign = sp.csr_matrix((w, labels, np.arange(len(z) + 1)), shape=(len(z), n_components))
    return np.bincount(labels, weights=w, minlength=n_components), np.asarray(assign.T @ z), assign


def accumulate_hard_statistics(out, layout, z64, labels, sample_weight=None):
    """:func:`accumulate_statistics` for every row assigned to one component, ``labels``.

    diag and spherical: the (rows, components) assignment matrix, sparse,
    times the rows and their squares. full and tied: the rows sorted by
    component, and each component's moments one product over its own rows
    (n d^2 flops for full covariance instead of the K n d^2 of
    responsibilities that are mostly zero).
    """
    z64 = np.asarray(z64, dtype=np.float64)
    k, d = layout.n_components, z64.shape[1]
    labels = np.asarray(labels)
    o, cov = layout.offsets, layout.covariance_type
    second = out[o[2] : o[3]].reshape(layout.second_shape)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if cov in ("diag", "spherical"):
        # no copy of the rows in component order: one product per moment
        counts, sums, assign = assignment_sums(z64, labels, k, w)
        out[o[0] : o[1]] += counts
        out[o[1] : o[2]] += sums.reshape(-1)
        squares = np.asarray(assign.T @ np.multiply(z64, z64, out=scratch("hard.squares", z64.shape)))
        second += squares if cov == "diag" else squares.sum(axis=1)
        return
    # small integers sort by radix: ten times faster than a merge sort of intp
    order = np.argsort(labels.astype(np.int16) if k <= 2**15 else labels, kind="stable")
    sizes = np.bincount(labels, minlength=k)
    comps = np.flatnonzero(sizes)
    ends = np.cumsum(sizes)[comps]
    starts = ends - sizes[comps]
    z_sorted = scratch_take("hard.sorted", z64, order)
    if sample_weight is None:
        weight_sums, wz = sizes.astype(np.float64)[comps], z_sorted
    else:
        w_sorted = w[order]
        wz = np.multiply(z_sorted, w_sorted[:, None], out=scratch("hard.weighted", z64.shape))
        weight_sums = np.add.reduceat(w_sorted, starts)
    out[o[0] : o[1]][comps] += weight_sums
    out[o[1] : o[2]].reshape(k, d)[comps] += np.add.reduceat(wz, starts, axis=0)
    if cov == "tied":
        second += wz.T @ z_sorted
    else:
        for c, lo, hi in zip(comps, starts, ends, strict=True):
            second[c] += (wz[lo:hi].T @ z_sorted[lo:hi])[layout.triu]


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
    block = np.asarray(block)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if kp.get("form") == "projection":
        return _projection.chunk_statistics(block, kp, layout, sample_weight,
                                            _normalise_in_place, _FLOAT32_SUM_ROWS)
    out = np.zeros(layout.size)
    n, d = block.shape
    cov = layout.covariance_type
    dtype = kp["dtype"]
    k = kp["W"].shape[0]
    feat = _features(cov, d, k)
    step = _block_rows(feat, dtype.itemsize)
    G = np.zeros((k, feat.m))
    second = np.zeros((d, d)) if cov == "tied" else None
    # float32 data: the M-step products of full covariance sum few rows at a
    # time into float64 accumulators; the other types' M-step products are
    # cheap (about 4 K d flops per row), so they run in float64 outright
    float32 = dtype == np.float32
    sum_rows = _FLOAT32_SUM_ROWS if float32 and cov == "full" else step
    upcast = float32 and cov != "full"
    loglik = 0.0
    with np.errstate(under="ignore", over="ignore"):
        for start, stop, ws, parts, z, R in _weighted_blocks(block, kp):
            rows = stop - start
            log_norm = _normalise_in_place(R, ws)
            if sample_weight is None:
                loglik += float(log_norm.sum(dtype=np.float64))
            else:
                w = sample_weight[start : start + rows]
                loglik += float(log_norm.astype(np.float64) @ w)
                R *= w
            if upcast:
                np.copyto(ws.R64, R)
                R = ws.R64
                parts, z = feat.float64_parts(ws)
            for s in range(0, rows, sum_rows):
                e = min(rows, s + sum_rows)
                _add_moments(G, R, parts, s, e)
                if cov == "tied":
                    zs = z[:, s:e]
                    zw = zs if sample_weight is None else zs * w[s:e]
                    second += zw @ zs.T
    feat.add_statistics(out, layout, G, second)
    out[layout.offsets[3]] = loglik
    out[layout.offsets[4]] = n if sample_weight is None else sample_weight.sum()
    return out[None, :]


# -------------------------------------------------------------- prediction


def _overflow_error(dtype: np.dtype) -> ValueError:
    float32 = np.dtype(dtype) == np.float32
    name, limit = ("float32", "1e19") if float32 else ("float64", "1e154")
    return ValueError(
        f"Scoring X failed because the squared deviations of some row from every component "
        f"overflow {name} (deviations of about {limit} or more). Scale the input data"
        + (", or pass float64 data instead of float32." if float32 else ".")
    )


def finite_log_prob(log_prob: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``log_prob`` (n, K), or one clear error where a finite row's densities overflowed.

    A finite row has a finite log-density under every component of positive
    weight; a row whose largest one is not finite was too far from the
    components for ``dtype`` (its responsibilities would be NaN, its label
    arbitrary).
    """
    if len(log_prob) and not np.isfinite(log_prob.max(axis=1)).all():
        raise _overflow_error(dtype)
    return log_prob


def _log_prob_blocks(block, kp):
    """(start, stop, L, top) of each row block: L (K, rows) float64, the weighted
    log-densities log pi_k + log N(x | mu_k, Sigma_k) of its rows (a work array,
    overwritten by the next block), and top (rows,) their largest per row; the
    overflow error of :func:`finite_log_prob` where a top is not finite.

    The per-block temporaries are the thread's workspace: a prediction over a
    chunk allocates its result only (worker processes fault every fresh large
    array in), and reductions over the components run along rows of L.
    """
    dtype = kp["dtype"]
    with np.errstate(under="ignore", over="ignore"):
        for start, stop, ws, _, _, L in _weighted_blocks(block, kp):
            if L.dtype != np.float64:
                np.copyto(ws.L64, L)
                L = ws.L64
            top = np.max(L, axis=0, out=ws.top64)
            if not np.isfinite(top).all():
                raise _overflow_error(dtype)
            yield start, stop, L, top


def chunk_log_prob(block: np.ndarray, kp: dict) -> np.ndarray:
    """Weighted log-densities log pi_k + log N(x | mu_k, Sigma_k) of a chunk's rows, (n, K)
    float64 (finite: see :func:`_log_prob_blocks`)."""
    out = np.empty((len(block), kp["W"].shape[0]))
    for start, stop, L, _ in _log_prob_blocks(block, kp):
        out[start:stop] = L.T
    return out


def chunk_log_resp(block, kp):
    """Log-responsibilities of a chunk's rows, (n, K) float64."""
    out = np.empty((len(block), kp["W"].shape[0]))
    for start, stop, L, top in _log_prob_blocks(block, kp):
        out[start:stop] = L.T
        log_norm = _normalise_in_place(L, top=top, responsibilities=False)
        out[start:stop] -= log_norm[:, None]
    return out


def chunk_predict_proba(block, kp):
    """Responsibilities of a chunk's rows, (n, K) float64."""
    out = chunk_log_resp(block, kp)
    return np.exp(out, out=out)


def chunk_score_samples(block, kp):
    """Per-row log-likelihood log p(x), (n,) float64."""
    out = np.empty(len(block))
    for start, stop, L, top in _log_prob_blocks(block, kp):
        out[start:stop] = _normalise_in_place(L, top=top, responsibilities=False)
    return out


def scores_from_log_prob(log_prob):
    """:func:`chunk_scores` of rows' weighted log-densities (n, K)."""
    log_norm = _log_sum_exp_rows(log_prob)
    top = log_prob.max(axis=1) if log_prob.shape[1] else log_norm
    return np.column_stack([log_norm, top - log_norm, np.ones(len(log_prob))])


def _log_sum_exp_rows(log_prob):
    """logsumexp over axis 1 of an (n, K) float64 array (max-subtract-exp-sum)."""
    top = log_prob.max(axis=1) if log_prob.shape[1] else np.full(len(log_prob), -np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore", divide="ignore"):
        return np.log(np.exp(log_prob - top[:, None]).sum(axis=1)) + top


def chunk_scores(block, kp):
    """Per row: log p(x), the largest log-responsibility and 1 (the row has an observed
    value), (n, 3) float64: the sums of score, BIC and ICL."""
    out = np.empty((len(block), 3))
    out[:, 2] = 1.0
    for start, stop, L, top in _log_prob_blocks(block, kp):
        # the largest log-responsibility: top - log p(x) (top is overwritten below)
        out[start:stop, 1] = top
        log_norm = _normalise_in_place(L, top=top, responsibilities=False)
        out[start:stop, 0] = log_norm
        out[start:stop, 1] -= log_norm
    return out


def chunk_predict(block, kp):
    """Most probable component of each row, (n,) int64."""
    out = np.empty(len(block), dtype=np.int64)
    for start, stop, L, _ in _log_prob_blocks(block, kp):
        out[start:stop] = np.argmax(L, axis=0)
    return out


PREDICTIONS = {"score_samples": chunk_score_samples, "predict": chunk_predict,
               "predict_proba": chunk_predict_proba, "scores": chunk_scores}
"""The per-chunk prediction functions of complete rows, by kind."""
