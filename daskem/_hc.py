"""mclust's model-based agglomerative hierarchical clustering, its default initialisation.

R mclust 6.0.0 starts EM from ``hclass(hc(X, modelName = "VVV", use = "SVD"), G)``:

- ``use = "SVD"`` transforms the data first: each column centred and divided by its
  standard deviation (R's ``scale``, n - 1 in the denominator; constant columns dropped),
  then Z = X_s V diag(1 / sqrt(s)) from the thin SVD X_s = U diag(s) V^T, so that
  Z = U diag(sqrt(s)): the principal components, each scaled by the square root of its
  singular value. (``"STD"`` stops after the scaling; ``"VARS"`` uses the data as they are.)
- It then merges, from singletons, the two groups whose merge increases the VVV
  classification-likelihood criterion (Banfield and Raftery, 1993; Fraley, 1998) least.
  A group of l points with scatter W and trace t = tr W has the term
  l log(beta (t + alpha) / l) while l <= d, and
  l log(|W / l| + beta (t + alpha) / l) beyond, which regularises small groups; a merge
  costs term(i + j) - term(i) - term(j). mclust's hcVVV defaults: beta = 1 and
  alpha = 1 * tr W(Z / sqrt(n d)) = (total scatter of Z) / (n d), at least machine epsilon.
- Ties go as in mclust's Fortran (hcvvv): the last pair attaining the minimum in its
  column-packed order of slots (pairs (i, j), i < j, by j then i) merges; the merged group
  takes the smaller slot and the last slot moves into the larger one.
- mclust 6.0.0's hcvvv keeps each group's triangular factor R (R^T R = W) in its members'
  data rows but writes R's first row into every row it keeps, so a group of three or more
  points, once it is no longer the group merged last, enters later merge costs with the
  scatter of those stored rows rather than its own (the trace is kept right). Where the
  determinant term matters (data on a large scale, use = "VARS"), that changes mclust's
  merges; ``replicate_mclust=True`` (the default) reproduces it, False uses the true
  scatter. With use = "SVD" the trace term dominates and both agree on the data tried.

Agreement with mclust 6.0.0: every merge identical on Old Faithful and iris (SVD and STD;
faithful with VARS too) and on random data sets; where costs tie exactly in exact
arithmetic (coordinates rounded to a grid, duplicated values), mclust's choice follows its
rounding errors and the merges can differ from there on.

:func:`hierarchical_partitions` returns the partitions of 1..G groups, labelled 0..k-1 in
order of first appearance (as mclust's ``hclass`` numbers them, from 1).
"""

from __future__ import annotations

import numpy as np

USES: tuple[str, ...] = ("SVD", "STD", "VARS")
_CHUNK_ELEMENTS = 4_000_000  # elements of a (rows, n, d) block of initial differences


def transform(X: np.ndarray, use: str = "SVD") -> np.ndarray:
    """The data as mclust's ``hc(use = ...)`` clusters them.

    Parameters
    ----------
    X : array-like of shape (n, d)
    use : {'SVD', 'STD', 'VARS'}, default 'SVD'

    Returns
    -------
    ndarray of shape (n, d') float64; d' drops constant columns ('SVD', 'STD').

    Raises
    ------
    ValueError
        For an unknown ``use`` or data without a non-constant column.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}")
    use = use.upper()
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}; got {use!r}")
    if use == "VARS":
        return X.copy()
    centred = X - X.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = centred / np.sqrt(np.sum(centred**2, axis=0) / (X.shape[0] - 1))
    scaled = scaled[:, np.all(np.isfinite(scaled), axis=0)]
    if scaled.shape[1] == 0:
        raise ValueError("the data have no non-constant column to cluster")
    if use == "STD":
        return scaled
    _, s, vt = np.linalg.svd(scaled, full_matrices=False)
    if not np.all(s > s[0] * max(scaled.shape) * np.finfo(np.float64).eps):
        # (mclust divides by the square root of a zero singular value regardless)
        raise ValueError("the scaled data are rank deficient: the SVD transform would divide by zero")
    return (scaled @ vt.T) / np.sqrt(s)


def hierarchical_partitions(
    X: np.ndarray,
    max_components: int,
    use: str = "SVD",
    alpha: float = 1.0,
    beta: float = 1.0,
    replicate_mclust: bool = True,
) -> list[np.ndarray]:
    """mclust's default hierarchical initialisation: the partitions into 1..G groups.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The data (a few thousand rows at most: the pairwise merge costs take n^2 floats).
    max_components : int
        G, the largest number of groups wanted.
    use : {'SVD', 'STD', 'VARS'}, default 'SVD'
        mclust's ``hcUse`` (its default 'SVD'); see :func:`transform`.
    alpha, beta : float, default 1
        mclust's ``hcVVV`` regularisation: the trace term uses beta and
        alpha * tr W(Z / sqrt(n d)).
    replicate_mclust : bool, default True
        Reproduce mclust 6.0.0's hcvvv, which for a group of three or more points, once
        it is no longer the group merged last, sees another scatter than the group's own
        (see :func:`_stored_scatter`). False: the criterion with the true scatter matrices.

    Returns
    -------
    list of ndarray of shape (n,)
        Element k - 1 labels the rows with 0..k-1, for k = 1..min(G, n).

    Raises
    ------
    ValueError
        For fewer than two rows, a non-positive ``max_components`` or an unknown ``use``.
    """
    if int(max_components) < 1:
        raise ValueError(f"max_components must be at least 1; got {max_components}")
    n = np.shape(X)[0]
    merges = merge_pairs(X, use, alpha, beta, replicate_mclust)
    return _partitions(n, merges, min(int(max_components), n))


def merge_pairs(
    X: np.ndarray,
    use: str = "SVD",
    alpha: float = 1.0,
    beta: float = 1.0,
    replicate_mclust: bool = True,
) -> np.ndarray:
    """The n - 1 merges of mclust's ``hc(X, modelName = "VVV", use = use)``, in order.

    Parameters
    ----------
    X : array-like of shape (n, d)
    use : {'SVD', 'STD', 'VARS'}, default 'SVD'
    alpha, beta : float, default 1
    replicate_mclust : bool, default True
        See :func:`hierarchical_partitions`.

    Returns
    -------
    ndarray of shape (n - 1, 2), int
        Row m: the two groups joined by the m-th merge, each named by its smallest row
        (0-based), the smaller first: mclust's ``t(hc(...))`` less one.
    """
    Z = transform(X, use)
    n, d = Z.shape
    if n < 2:
        raise ValueError(f"hierarchical clustering needs at least 2 rows; got {n}")
    centred = Z - Z.mean(axis=0)
    alpha = max(float(alpha) * float(np.sum(centred**2)) / (n * d), np.finfo(np.float64).eps)
    merges = _merge_sequence(Z, alpha, float(beta), bool(replicate_mclust))
    return np.array(merges, dtype=np.intp).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------


class _Groups:
    """The groups in their slots, their terms, and the packed-order cost bookkeeping.

    ``stored`` holds, per slot, the scatter matrix the criterion sees for that group when
    it meets another: with ``replicate_mclust``, what mclust 6.0.0's hcvvv keeps of it (see
    :func:`_stored_scatter`), else its true scatter. ``fresh`` is the scatter of the group
    merged last (slot ``last``), as mclust keeps its whole factor in memory until the next
    merge.
    """

    def __init__(self, Z: np.ndarray, alpha: float, beta: float, replicate_mclust: bool) -> None:
        n, d = Z.shape
        self.d, self.alpha, self.beta = d, alpha, beta
        self.replicate = replicate_mclust
        self.ablog = float(np.log(beta * alpha))
        self.size = np.ones(n)
        self.mean = Z.copy()
        self.stored = np.zeros((n, d, d))
        self.first_row = np.zeros((n, d))  # the first row of each group's stored factor
        self.trace = np.zeros(n)
        self.term = np.full(n, self.ablog)
        self.members = np.arange(n)  # the group id (its smallest row) in each slot
        self.slots = n
        self.last = -1
        self.fresh = np.zeros((d, d))
        self.fresh_row = np.zeros(d)
        self.cost = np.full((n, n), np.inf)
        rthalf = np.sqrt(0.5)
        rows = max(1, _CHUNK_ELEMENTS // max(1, n * d))
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            v = (Z[start:stop, None, :] - Z[None, :, :]) * rthalf
            pair = 2.0 * np.log(beta * (np.sum(v * v, axis=-1) + alpha) / 2.0) - (self.ablog + self.ablog)
            block = self.cost[start:stop]
            upper = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
            block[upper] = pair[upper]
        self.colmin = np.full(n, np.inf)
        self.colarg = np.zeros(n, dtype=np.intp)
        for j in range(1, n):
            self._recompute_column(j)

    def term_of(self, size, scatter, trace):
        """The criterion's term of groups (vectorised over the leading axis)."""
        size = np.asarray(size, dtype=np.float64)
        base = self.beta * (trace + self.alpha) / size
        out = size * np.log(base)
        big = size > self.d
        if np.any(big):
            sign, logdet = np.linalg.slogdet(scatter[big] / size[big, None, None])
            logdet = np.where(sign > 0.0, logdet, -np.inf)
            b = base[big]
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                value = np.where(
                    logdet <= 0.0,
                    np.log(np.exp(logdet) + b),
                    np.log1p(np.exp(-logdet) * b) + logdet,
                )
            value = np.where(trace[big] == 0.0, np.log(self.alpha * self.beta / size[big]), value)
            out[big] = size[big] * value
        return out

    def _recompute_column(self, j: int) -> None:
        col = self.cost[:j, j]
        last = j - 1 - int(np.argmin(col[::-1]))  # the last minimum, as mclust's '.le.' scan
        self.colmin[j], self.colarg[j] = col[last], last

    def _entries_changed(self, row: int, cols: np.ndarray) -> None:
        """Keep the column minima after cost[row, cols] changed."""
        if cols.size == 0:
            return
        values = self.cost[row, cols]
        best, arg = self.colmin[cols], self.colarg[cols]
        lower = values < best
        equal = values == best
        self.colmin[cols[lower]] = values[lower]
        self.colarg[cols[lower]] = row
        self.colarg[cols[equal]] = np.maximum(arg[equal], row)
        for j in cols[~lower & ~equal & (arg == row)]:
            self._recompute_column(int(j))

    def best_pair(self) -> tuple[int, int]:
        """The pair mclust merges: the minimum cost, the last one in packed order."""
        cols = self.colmin[1 : self.slots]
        low = cols.min()
        j = int(np.flatnonzero(cols == low)[-1]) + 1
        return int(self.colarg[j]), j

    def merge(self, i: int, j: int) -> None:
        """Merge slot j into slot i (i < j); the last slot moves into slot j."""
        ni, nj = self.size[i], self.size[j]
        nij = ni + nj
        delta = self.mean[i] - self.mean[j]
        coef = ni * nj / nij
        outer = coef * np.outer(delta, delta)
        if self.last in (i, j):
            # mclust's factor of the pair, from the last merged group's own factor
            other = j if self.last == i else i
            gram = self.fresh + self.stored[other] + outer
            first = self.fresh_row
            term = self.term_of(np.array([nij]), gram[None], np.array([self._trace(i, j, coef, delta)]))[0]
        else:
            # mclust rebuilds the factor from the two stored factors (j's first)
            gram = self.stored[i] + self.stored[j] + outer
            first = self.first_row[j] if nj > 1 else (self.first_row[i] if ni > 1 else np.sqrt(coef) * delta)
            if self.last < 0:  # the first merge keeps the pair's own term
                term = 2.0 * np.log(self.beta * (self._trace(i, j, coef, delta) + self.alpha) / 2.0)
            else:
                term = self.cost[i, j] + (self.term[i] + self.term[j])
        self.trace[i] = self._trace(i, j, coef, delta)
        self.mean[i] = (ni * self.mean[i] + nj * self.mean[j]) / nij
        self.size[i] = nij
        self.term[i] = term
        row = gram[0] / np.sqrt(gram[0, 0]) if gram[0, 0] > 0.0 else first
        self.fresh, self.fresh_row, self.last = gram, row, i
        self.stored[i] = _stored_scatter(row, int(nij), self.d) if self.replicate else gram
        self.first_row[i] = row
        last = self.slots - 1
        if j != last:
            for name in ("size", "mean", "stored", "first_row", "trace", "term", "members"):
                arr = getattr(self, name)
                arr[j] = arr[last]
            self.cost[:j, j] = self.cost[:j, last]
            self.cost[j, j + 1 : last] = self.cost[j + 1 : last, last]
        self.cost[:, last] = np.inf
        self.cost[last, :] = np.inf
        self.colmin[last] = np.inf
        self.slots = last
        if j != last:
            self._recompute_column(j)
            self._entries_changed(j, np.arange(j + 1, last))
        self._update_costs_of(i)

    def _trace(self, i: int, j: int, coef: float, delta: np.ndarray) -> float:
        return float(self.trace[i] + self.trace[j] + coef * float(delta @ delta))

    def _update_costs_of(self, i: int) -> None:
        others = np.arange(self.slots)
        others = others[others != i]
        if others.size == 0:
            return
        n_o = self.size[others]
        nij = self.size[i] + n_o
        delta = self.mean[i] - self.mean[others]
        coef = self.size[i] * n_o / nij
        scatter = (
            self.fresh + self.stored[others] + coef[:, None, None] * (delta[:, :, None] * delta[:, None, :])
        )
        trace = self.trace[i] + self.trace[others] + coef * np.sum(delta * delta, axis=1)
        cost = self.term_of(nij, scatter, trace) - (self.term[i] + self.term[others])
        below, above = others[others < i], others[others > i]
        self.cost[below, i] = cost[: below.size]
        self.cost[i, above] = cost[below.size :]
        if i > 0:
            self._recompute_column(i)
        self._entries_changed(i, above)


def _stored_scatter(row: np.ndarray, size: int, d: int) -> np.ndarray:
    """The scatter mclust 6.0.0's hcvvv sees for a merged group when it next meets another.

    hcvvv keeps a group's triangular factor R (R^T R = its scatter) in the data rows of its
    members, but writes R's first row into each of the min(size - 1, d) rows it keeps;
    reading row t back takes its entries from column t on. So the factor it reads has rows
    (0, ..., 0, r_t, ..., r_d), the tails of the first row r, and the scatter it sees is
    their sum of outer products. (Exactly the scatter for groups of two, not beyond.)
    """
    tails = np.triu(np.broadcast_to(row, (d, d)))[: min(size - 1, d)]
    return tails.T @ tails


def _merge_sequence(
    Z: np.ndarray, alpha: float, beta: float, replicate_mclust: bool
) -> list[tuple[int, int]]:
    """The n - 1 merges, as pairs of group ids (a group's id: its smallest row)."""
    groups = _Groups(Z, alpha, beta, replicate_mclust)
    merges = []
    while groups.slots > 1:
        i, j = groups.best_pair()
        a, b = int(groups.members[i]), int(groups.members[j])
        merges.append((min(a, b), max(a, b)))
        groups.members[i] = min(a, b)
        groups.merge(i, j)
    return merges


def _partitions(n: int, merges: np.ndarray, max_components: int) -> list[np.ndarray]:
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # A group's id is its smallest row, and merges join ids a < b, so the union-find roots
    # stay the ids.
    cut = n - max_components  # the merges before the partition into max_components groups
    for a, b in merges[:cut].tolist():
        parent[root(b)] = root(a)
    labels = np.array([root(x) for x in range(n)])
    out = [_first_appearance(labels)]
    for a, b in merges[cut:].tolist():
        labels[labels == b] = a
        out.append(_first_appearance(labels))
    return out[::-1]


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.intp)
