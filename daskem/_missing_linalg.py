"""Missingness patterns and small batched linear algebra for :mod:`daskem._missing`.

Rows with holes are grouped by their pattern of missing values, and every
(pattern, component) pair needs the inverse and the log-determinant of a
small symmetric positive definite block of a precision (or covariance)
matrix. A chunk holds thousands of such pairs of each size, each only a few
values across: ``np.linalg.inv`` loops over them one LAPACK call at a time
(about 0.7 microseconds per 5 x 5 matrix, 1.5 with its log-determinant),
whereas the scalar recurrences of the Cholesky factorisation, written once
per matrix entry as vector operations over some 8,000 pairs (each inner
product one einsum), take about 0.08 microseconds. Every stack here is
therefore *position-major*: (r, r, N), N the pairs.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

from ._covariance import ill_defined_error
from ._scratch import scratch, scratch_take


def spd_inverse(matrices: np.ndarray, name: str = "spd") -> tuple[np.ndarray, np.ndarray]:
    """Inverses and log-determinants of a stack of SPD matrices.

    Parameters
    ----------
    matrices : ndarray of shape (r, r, N)
        N symmetric positive definite r x r matrices, stacked along the
        last axis so that every scalar step is one vector operation.
    name : str
        Names the scratch arrays (:func:`daskem._scratch.scratch`) of the
        work array and the result: the inverse is valid until the next call
        with the same name in the same scratch scope.

    Returns
    -------
    inverse : ndarray of shape (r, r, N)
    log_det : ndarray of shape (N,)
        log |M| of each matrix.

    Raises
    ------
    ValueError
        If a matrix is not (numerically) positive definite.
    """
    r, _, n = matrices.shape
    # Cholesky M = L L^T, entry by entry; each inner product over t is one
    # fused einsum over the N matrices (only the lower triangle is written and read)
    lower = scratch(name + ".lower", (r, r, n))
    pivot = scratch(name + ".pivot", (n,))
    for j in range(r):
        for i in range(j, r):
            entry = lower[i, j]
            if j:
                np.einsum("tn,tn->n", lower[i, :j], lower[j, :j], out=entry)
                np.subtract(matrices[i, j], entry, out=entry)
            else:
                np.copyto(entry, matrices[i, j])
            if i == j:
                if not np.all(entry > 0.0):
                    raise ill_defined_error()
                np.sqrt(entry, out=entry)
                np.divide(1.0, entry, out=pivot)
            else:
                entry *= pivot
    log_det = np.zeros(n)
    for i in range(r):
        log_det += np.log(lower[i, i], out=pivot)
    log_det *= 2.0
    # inv(L) by forward substitution, row by row, overwriting L: entry (i, j)
    # needs L[i, j:i] (not yet overwritten) and inv(L)[j:i, j] (rows above)
    product = scratch(name + ".product", (n,))
    for i in range(r):
        np.divide(-1.0, lower[i, i], out=pivot)
        for j in range(i):
            np.einsum("tn,tn->n", lower[i, j:i], lower[j:i, j], out=product)
            np.multiply(pivot, product, out=lower[i, j])
        np.negative(pivot, out=lower[i, i])
    # M^-1 = inv(L)^T inv(L)
    out = scratch(name + ".inverse", (r, r, n))
    for a in range(r):
        for b in range(a, r):
            np.einsum("un,un->n", lower[b:, a], lower[b:, b], out=out[a, b])
            if b != a:
                out[b, a] = out[a, b]
    return out, log_det


def block_inverse(
    precisions: np.ndarray,
    covariances: np.ndarray,
    log_det: np.ndarray,
    missing: np.ndarray,
    observed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """P_mm^-1 and log |P_mm| for every pattern and component.

    P_mm^-1 is the conditional covariance of the missing values given the
    observed ones (Schur complement). Where fewer values are observed than
    missing, factoring S_oo is cheaper: P_mm^-1 = S_mm - S_mo S_oo^-1 S_om
    and log |P_mm| = log |S_oo| - log |S|.

    Parameters
    ----------
    precisions, covariances : ndarray (K', d, d)
    log_det : ndarray (K',)
        log |S_k|.
    missing, observed : ndarray (n_patterns, m), (n_patterns, d - m)
        Each pattern's missing and observed columns.

    Returns
    -------
    inverse : ndarray (m, m, n_patterns, K')
    log_det_pmm : ndarray (n_patterns, K')
    """
    n_pat, m = missing.shape
    k = precisions.shape[0]
    o = observed.shape[1]
    mt = missing.T
    d = precisions.shape[1]

    def blocks(matrices, rows, cols, name):
        # (len(rows), len(cols), n_pat * K') from a (d * d, K') table: one
        # gather of contiguous K'-rows
        table = np.ascontiguousarray(matrices.reshape(k, d * d).T)
        index = rows[:, None] * d + cols[None, :]
        return scratch_take(name, table, index).reshape(len(rows), len(cols), n_pat * k)

    if m <= o:
        inverse, log_det_pmm = spd_inverse(blocks(precisions, mt, mt, "block.pmm"), "block.pmm_inverse")
    else:
        ot = observed.T
        s_om = blocks(covariances, ot, mt, "block.som")
        inv_oo, log_det_oo = spd_inverse(blocks(covariances, ot, ot, "block.soo"), "block.oo")
        solved = np.einsum("abn,bmn->amn", inv_oo, s_om, out=scratch("block.solved", s_om.shape))
        inverse = blocks(covariances, mt, mt, "block.conditional")
        inverse -= np.einsum("amn,atn->mtn", s_om, solved)
        log_det_pmm = log_det_oo - np.tile(log_det, n_pat)
    return inverse.reshape(m, m, n_pat, k), log_det_pmm.reshape(n_pat, k)


@functools.lru_cache(maxsize=64)
def triu_pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(m)``, cached (it costs tens of microseconds)."""
    return np.triu_indices(m)


class PackedBlockSums:
    """Sums of (m, m) blocks, given by their upper triangles, added into packed d x d matrices.

    Each :meth:`add` sums its blocks into the running total at once, by one
    ``np.bincount`` over the blocks' packed positions: nothing is kept per
    batch (collecting the blocks of a chunk for one sparse product at the
    end held some 1 MiB per batch until then, every page of it faulted in
    afresh on a worker process).

    Parameters
    ----------
    n_features : int
        d.
    width : int
        K', the matrices summed side by side.
    """

    def __init__(self, n_features: int, width: int):
        self.n_features = n_features
        self.width = width
        self._total = np.zeros(n_features * (n_features + 1) // 2 * width)
        # packed position of entry (a, b), a <= b, at a d + b
        a, b = np.triu_indices(n_features)
        self._position = np.zeros(n_features * n_features, dtype=np.intp)
        self._position[a * n_features + b] = np.arange(len(a))

    def add(self, missing: np.ndarray, upper: np.ndarray) -> None:
        """Add blocks.

        Parameters
        ----------
        missing : ndarray (n_blocks, m)
            Ascending columns of each block.
        upper : ndarray (m (m + 1) / 2, n_blocks, K')
            Entries (s, t), s <= t, of each block in ``np.triu_indices(m)``
            order; block p goes to rows and columns ``missing[p]``.
        """
        d, width = self.n_features, self.width
        s, t = triu_pairs(missing.shape[1])
        # columns ascend within a pattern, so (a, b) is an upper-triangle entry
        entry = scratch_take("packed.rows", missing.T, s)
        entry *= d
        entry += scratch_take("packed.columns", missing.T, t)
        target = scratch_take("packed.target", self._position, entry)
        upper = upper.reshape(target.shape + (width,))
        # entry (position, component) of the (d (d + 1) / 2, K') total
        index = np.multiply(target[..., None], width, out=scratch("packed.index", upper.shape, np.intp))
        index += np.arange(width)
        self._total += np.bincount(index.reshape(-1), weights=upper.reshape(-1), minlength=len(self._total))

    def total(self) -> np.ndarray:
        """ndarray (d (d + 1) / 2, K'): the sums, in ``np.triu_indices(d)`` order."""
        return self._total.reshape(-1, self.width).copy()


def column_sums(columns: np.ndarray, values: np.ndarray, n_columns: int) -> np.ndarray:
    """Sums of the rows of ``values`` (n, K) grouped by ``columns`` (n,), (n_columns, K)."""
    n = len(columns)
    onehot = sp.csc_matrix((np.ones(n), columns, np.arange(n + 1)), shape=(n_columns, n))
    return np.asarray(onehot @ values)


class Patterns:
    """Rows with holes sorted by (number of missing values, pattern).

    Parameters
    ----------
    mask : ndarray of shape (n, d), bool
        True where a value is missing; every row has at least one hole and
        one observed value.

    Attributes
    ----------
    order : ndarray (n,)
        Row permutation: sorted rows are ``rows[order]``.
    pattern_of_row : ndarray (n,)
        Pattern index of each *sorted* row (non-decreasing).
    masks : ndarray (n_patterns, d), bool
        The distinct patterns, sorted by their number of holes.
    row_starts : ndarray (n_patterns + 1,)
        Sorted rows [row_starts[p], row_starts[p + 1]) have pattern p.
    groups : list of (n_missing, first_pattern, stop_pattern)
        Runs of patterns with the same number of missing values.
    """

    def __init__(self, mask: np.ndarray):
        n, d = mask.shape
        if d <= 53:
            # the key's bits are the mask's: a float matrix-vector product is
            # exact below 2**24 (float32) or 2**53 (float64) and ten times
            # faster than np.packbits
            small = d <= 16
            ftype = np.float32 if small else np.float64
            flags = scratch("patterns.flags", mask.shape, ftype)
            np.copyto(flags, mask)
            keys = flags @ (2.0 ** np.arange(d)).astype(ftype)
            # 16-bit keys: NumPy's stable sort is then a radix sort
            keys = keys.astype(np.uint16 if small else np.int64)
        else:
            packed = np.ascontiguousarray(np.packbits(mask, axis=1))
            keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        by_key = np.argsort(keys, kind="stable")
        sorted_keys = keys[by_key]
        new = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        firsts = by_key[np.flatnonzero(new)]
        # patterns ordered by their number of holes, then rows by pattern
        pattern_counts = mask[firsts].sum(axis=1)
        by_count = np.argsort(pattern_counts, kind="stable")
        rank = np.empty(len(firsts), dtype=np.intp)
        rank[by_count] = np.arange(len(firsts))
        row_rank = rank[np.cumsum(new) - 1]
        if len(firsts) <= 2**16:
            row_rank = row_rank.astype(np.uint16)
        then = np.argsort(row_rank, kind="stable")
        self.order = by_key[then]
        self.pattern_of_row = row_rank[then].astype(np.intp)
        self.masks = mask[firsts[by_count]]
        pattern_counts = pattern_counts[by_count]
        self.row_starts = np.searchsorted(self.pattern_of_row, np.arange(len(firsts) + 1))
        edges = np.flatnonzero(np.diff(pattern_counts)) + 1
        bounds = np.r_[0, edges, len(firsts)].astype(int)
        self.groups = [
            (int(pattern_counts[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def columns(self, first: int, stop: int, n_missing: int) -> tuple[np.ndarray, np.ndarray]:
        """Missing and observed columns, ascending, of patterns [first, stop)."""
        masks = self.masks[first:stop]
        d = masks.shape[1]
        missing = np.nonzero(masks)[1].reshape(stop - first, n_missing)
        observed = np.nonzero(~masks)[1].reshape(stop - first, d - n_missing)
        return missing, observed
