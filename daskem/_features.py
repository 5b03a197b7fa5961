"""The feature matrices of the packed-products kernels: layout, filling, products.

:mod:`daskem._kernels` turns a block of rows into one feature matrix per
covariance type (its module docstring explains the design); this module
holds that matrix's layout (:class:`_Features`), the two products with it
(:func:`_weighted_products`, :func:`_add_moments`) and the block size.
"""

import functools

import numpy as np

# Bytes of the feature matrix of one row block; sized to stay in cache.
_BLOCK_BYTES = 2 * 2**20
# Rows-major types (tied, diag, spherical): bytes of the block's z and its
# squares in float64. 1.5 MiB: diag 1,536 rows at d=64 and 6,144 at d=16,
# spherical 2,979 at d=64. Against 2 MiB of features before, ns per row
# (one 50,000-row chunk on one thread, min of 15 rounds; 1,000,000 rows in
# 20 chunks on two threads, median of 9 paired rounds): diag d=64 K=8 216
# against 291 (1.37x on two threads), diag d=16 K=8 81 against 101,
# spherical d=64 K=8 1.10x and 1.11x (with half its rows: 1.13x on one
# thread but 0.86x on two, where every NumPy call hands the GIL over).
_ROWS_BLOCK_BYTES = 3 * 2**19
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 8192
# diag and spherical: when one product over the rows [1, z, z^2] (the joint layout) beats a
# product per part. Whole-kernel time, joint against parts, paired medians on two threads:
# d=16: diag 0.74x (K=16) and 0.77x (K=64), spherical 0.86x (K=8) and 0.83x (K=64), but diag
# K=8 loses (its products alone 1.4x); d=64: 0.83-0.87x at K=64, 1.04-1.14x at K=8 and 16,
# where the products dominate and two narrow ones run as fast as one wide one.
_JOINT_MAX_FEATURES = 16
_JOINT_DIAG_MIN_COMPONENTS = 16
_JOINT_COMPONENTS = 64


class _Features:
    """Layout of the feature matrix of a covariance type: m x n, logically.

    Column ranges of W (and of G = R F^T) are split into *parts*, each one
    logical (width, n) view of the block's features: :meth:`fill` returns
    them as ``(lo, hi, view)`` triples, where a ``None`` view stands for the
    row of ones (a broadcast add in the E-step, a row sum in the M-step).

    Full covariance: one part, a features-major buffer (m_total, n). Row 0
    is all ones and rows ``z_row .. z_row + d`` hold the shifted rows
    transposed; before them come the products z_a z_b of every pair a <= b,
    in *cyclic* order: product (s, j) = z_j z_{(j+s) mod d} for offsets s =
    0 .. d//2, which a single broadcast multiplication of z with a strided
    view of [z; z[:d//2]] computes (instead of one call per row of the
    triangle). For even d the last offset repeats d/2 pairs; those get a
    zero coefficient in the E-step and are skipped by the M-step. Rows past
    ``m`` (the cyclic extension) are scratch and take no part in products.

    Other types: parts ones [0, 1), z [1, 1 + d) and, for diag and
    spherical, z^2 or |z|^2 [1 + d, m), each a contiguous rows-major (n, .)
    array, seen transposed. With ``joint`` (diag and spherical), the three
    are columns of one rows-major (n, m) array, a single part [0, m): one
    product per step instead of three (see :func:`_features`).
    """

    def __init__(self, covariance_type, d, joint=False):
        self.covariance_type, self.d = covariance_type, d
        self.joint = joint
        self.features_major = covariance_type == "full"
        if covariance_type == "full":
            self.n_offsets = s_count = d // 2 + 1
            self.z_row = 1 + s_count * d
            self.m = self.z_row + d
            self.m_total = self.m + s_count - 1
            s_idx, j_idx = np.divmod(np.arange(s_count * d), d)
            a, b = j_idx, (j_idx + s_idx) % d
            self.keep = ~((2 * s_idx == d) & (j_idx >= d - s_idx))
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            self.pair = (lo, hi)
            # position of pair (lo, hi) in np.triu_indices(d) order, and the
            # column of G (R F^T) that holds each packed upper-triangle entry
            triu_pos = lo * d - lo * (lo - 1) // 2 + (hi - lo)
            self.packed_source = np.empty(d * (d + 1) // 2, dtype=np.intp)
            self.packed_source[triu_pos[self.keep]] = 1 + np.flatnonzero(self.keep)
        else:
            self.z_row = 1
            self.extra = {"tied": 0, "diag": d, "spherical": 1}[covariance_type]
            self.m = self.m_total = 1 + d + self.extra

    def workspace_arrays(self, n, dtype, suffix=""):
        """Buffers for n rows: the features-major buffer, or z and its squares (named with
        ``suffix``: float64 copies of float32 rows are ``z64``, ``extra64``, ``rows64``)."""
        if self.features_major:
            return {"F": np.empty((self.m_total, n), dtype=dtype)}
        if self.joint:
            rows = np.empty((n, self.m), dtype=dtype)
            rows[:, 0] = 1.0
            arrays = {"rows": rows, "z": rows[:, 1 : 1 + self.d], "extra": rows[:, 1 + self.d :]}
        else:
            arrays = {"z": np.empty((n, self.d), dtype=dtype)}
            if self.extra:
                arrays["extra"] = np.empty((n, self.extra), dtype=dtype)
        return {name + suffix: array for name, array in arrays.items()}

    def product_views(self, F):
        """(z, shifted, out) views of a features-major buffer for :meth:`fill`:
        out[s, j] = z[j] * shifted[s, j] = z_j z_{(j+s) mod d}."""
        d, zr, s_count = self.d, self.z_row, self.n_offsets
        n = F.shape[1]
        row, col = F.strides
        # np.ndarray over the buffer: much cheaper than as_strided
        shifted = np.ndarray(
            (s_count, d, n), dtype=F.dtype, buffer=F, offset=zr * row, strides=(row, row, col)
        )
        return F[zr : zr + d][None], shifted, F[1:zr].reshape(s_count, d, n)

    def fill(self, ws, block, shift):
        """Features of n raw rows into workspace ``ws``.

        Returns
        -------
        parts : list of (lo, hi, view or None)
            See the class docstring.
        z : ndarray (d, n)
            The shifted rows, transposed (a view).
        """
        d, zr = self.d, self.z_row
        if self.features_major:
            F = ws.F
            F[0] = 1.0
            # computed in float64 (shift is float64), rounded once to F's dtype
            np.subtract(block.T, shift[:, None], out=F[zr : zr + d], casting="same_kind")
            s_count = self.n_offsets
            F[zr + d : zr + d + s_count - 1] = F[zr : zr + s_count - 1]
            np.multiply(*ws.products)
            return [(0, self.m, F[: self.m])], F[zr : zr + d]
        z = ws.z
        np.subtract(block, shift, out=z, casting="same_kind")
        if self.covariance_type == "diag":
            np.multiply(z, z, out=ws.extra)
        elif self.covariance_type == "spherical":
            np.einsum("ij,ij->i", z, z, out=ws.extra[:, 0])
        if self.joint:
            return [(0, self.m, ws.rows.T)], z.T
        parts = [(0, 1, None), (1, 1 + d, z.T)]
        if self.extra:
            parts.append((1 + d, self.m, ws.extra.T))
        return parts, z.T

    def float64_parts(self, ws):
        """The parts and z of the last :meth:`fill`, from float64 copies of its float32
        features (the rows-major types' M-step products run in float64)."""
        if self.joint:
            np.copyto(ws.rows64, ws.rows)
            return [(0, self.m, ws.rows64.T)], ws.z64.T
        np.copyto(ws.z64, ws.z)
        parts = [(0, 1, None), (1, 1 + self.d, ws.z64.T)]
        if self.extra:
            np.copyto(ws.extra64, ws.extra)
            parts.append((1 + self.d, self.m, ws.extra64.T))
        return parts, ws.z64.T

    def transposed_weights(self, W):
        """W's columns of the rows-major parts, transposed and contiguous, by the
        part's first column (see :func:`_weighted_products`)."""
        if self.features_major:
            return None
        if self.joint:
            return {0: np.ascontiguousarray(W.T)}
        d = self.d
        return {lo: np.ascontiguousarray(W[:, lo:hi].T)
                for lo, hi in ((1, 1 + d), (1 + d, self.m)) if hi > lo + 1}

    def coefficients(self, const, linear, second):
        """W (K, m) from the constant, linear (K, d) and second-order terms.

        ``second``: full (K, d, d) precisions, diag (K, d), spherical (K,);
        the quadratic coefficient is -1/2 times it.
        """
        k, d, zr = len(const), self.d, self.z_row
        W = np.zeros((k, self.m))
        W[:, 0] = const
        W[:, zr : zr + d] = linear
        cov = self.covariance_type
        if cov == "full":
            lo, hi = self.pair
            # off-diagonal entries of <z z^T, L> appear twice
            coef = np.where(lo == hi, -0.5, -1.0) * second[:, lo, hi]
            W[:, 1:zr] = np.where(self.keep, coef, 0.0)
        elif cov == "diag":
            W[:, 1 + d :] = -0.5 * second
        elif cov == "spherical":
            W[:, 1 + d] = -0.5 * second
        return W

    def add_statistics(self, out, layout, G, second=None):
        """Add a (K, m) product R F^T (and tied's shared z z^T) to ``out``."""
        o = layout.offsets
        d, zr = self.d, self.z_row
        out[o[0] : o[1]] += G[:, 0]
        out[o[1] : o[2]] += G[:, zr : zr + d].ravel()
        cov = self.covariance_type
        if cov == "full":
            out[o[2] : o[3]] += np.take(G, self.packed_source, axis=1).ravel()
        elif cov == "tied":
            out[o[2] : o[3]] += second.ravel()
        else:
            out[o[2] : o[3]] += G[:, 1 + d :].ravel()


def _weighted_products(W, parts, out, tmp=None, Wt=None):
    """out = W F for the parts of a block's features (out and tmp: (K, n)).

    ``Wt``: for rows-major parts (views ``a.T`` of (n, width) arrays, width
    > 1), the part's columns of W transposed and contiguous, ``{lo: (width, K)}``:
    each product is then ``a @ Wt[lo]`` written into ``out.T``, which
    OpenBLAS runs about twice as fast as ``W[:, lo:hi] @ a.T`` (K = 8,
    d = 64: 41 against 95 ns per row on one thread). A part of width 1
    (spherical's |z|^2) is a broadcast product, not a BLAS call: small BLAS
    calls from two threads at once serialise on OpenBLAS's buffer lock.
    """
    first = True
    for lo, hi, view in parts:
        if view is None:
            continue
        target = out if first else tmp
        if hi - lo == 1 and target is not None:
            np.multiply(W[:, lo:hi], view, out=target)
        elif Wt is not None and lo in Wt:
            if target is None:
                out += (view.T @ Wt[lo]).T
            else:
                np.matmul(view.T, Wt[lo], out=target.T)
        elif target is None:
            out += W[:, lo:hi] @ view
        else:
            np.matmul(W[:, lo:hi], view, out=target)
        if not first and target is not None:
            out += tmp
        first = False
    for lo, hi, view in parts:
        if view is None:
            out += W[:, lo:hi]
    return out


def _add_moments(G, R, parts, s=0, e=None):
    """G += R F^T over columns s:e of the block (R: (K, n)); a part of width
    1 without BLAS (a matrix-vector product: see :func:`_weighted_products`)."""
    r = R[:, s:e]
    for lo, hi, view in parts:
        if view is None:
            G[:, lo] += r.sum(axis=1)
        elif hi - lo == 1:
            G[:, lo] += np.einsum("kn,n->k", r, view[0, s:e])
        else:
            G[:, lo:hi] += r @ view[:, s:e].T


def _features(covariance_type, d, n_components):
    """The feature layout of a covariance type for d features and K components: the joint
    one for diag and spherical where it is the faster (see _JOINT_MAX_FEATURES)."""
    few_features = d <= _JOINT_MAX_FEATURES and (
        covariance_type == "spherical" or n_components >= _JOINT_DIAG_MIN_COMPONENTS)
    joint = covariance_type in ("diag", "spherical") and (few_features or n_components >= _JOINT_COMPONENTS)
    return _cached_features(covariance_type, d, joint)


@functools.lru_cache(maxsize=64)
def _cached_features(covariance_type, d, joint):
    return _Features(covariance_type, d, joint)


def _block_rows(feat, itemsize):
    """Rows per block: the (m, rows) feature matrix of full covariance about
    _BLOCK_BYTES; z and its squares of the other types _ROWS_BLOCK_BYTES in
    float64 (the M-step products of float32 data run on float64 copies)."""
    if feat.features_major:
        rows = _BLOCK_BYTES // (itemsize * feat.m_total)
    else:
        rows = _ROWS_BLOCK_BYTES // (8 * (feat.m - 1))
    return min(max(rows, _MIN_BLOCK_ROWS), _MAX_BLOCK_ROWS) // 16 * 16
