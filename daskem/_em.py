"""The EM loop: one pass over the chunks per iteration, a tree reduction, the M-step.

An iteration maps :func:`daskem._kernels.chunk_statistics` over the row chunks
of a Dask array, adds the flat statistics vectors with Dask's own tree
reduction (``split_every``), and turns the sum into new parameters on the
client. The parameters enter each iteration's graph as a single key.
"""

import dataclasses
import time

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from ._covariance import (
    covariances_from_statistics,
    precision_cholesky,
)
from ._kernels import StatisticsLayout, chunk_statistics, kernel_parameters

SPLIT_EVERY = 16


@dataclasses.dataclass
class MixtureParameters:
    """Weights, means, covariances and precision Cholesky factors (float64)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    def as_tuple(self):
        return (self.weights, self.means, self.covariances, self.precisions_cholesky)


@dataclasses.dataclass
class EMResult:
    """What one EM run (one initialisation) ends with."""

    parameters: MixtureParameters
    lower_bound: float
    lower_bounds: list
    n_iter: int
    converged: bool
    seconds: list


def blas_limits(X):
    """Keep BLAS single-threaded while Dask runs several chunks at once.

    Dask's threads already use the cores; BLAS threads on top of them would
    oversubscribe. A single chunk gets the BLAS threads instead.
    """
    if X.numblocks[0] > 1:
        return threadpool_limits(limits=1, user_api="blas")
    return threadpool_limits(limits=None)


def statistics_graph(X, kp, layout, sample_weight=None, split_every=SPLIT_EVERY):
    """The lazy sum of every chunk's statistics: a 1-D Dask array of layout.size.

    ``kp`` is wrapped in one delayed key that all chunk tasks share.
    """
    params_key = dask.delayed(dict(kp, layout=layout), pure=True, traverse=False)
    args = [X, params_key]
    if sample_weight is not None:
        args.append(sample_weight)
    per_chunk = da.map_blocks(
        _chunk_statistics_task,
        *args,
        chunks=(1, layout.size),
        dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    return per_chunk.sum(axis=0, split_every=split_every)


def _chunk_statistics_task(block, kp, sample_weight=None):
    return chunk_statistics(block, kp, kp["layout"], sample_weight)


def compute_statistics(X, kp, layout, sample_weight=None, split_every=SPLIT_EVERY):
    """Run one pass over X and return the summed statistics vector."""
    total = statistics_graph(X, kp, layout, sample_weight, split_every)
    with blas_limits(X):
        (vector,) = dask.compute(total)
    return vector


def m_step(stats, layout, shift, reg_covar, eps, float32=False, normalise=True, n_samples=None):
    """New parameters from summed statistics.

    Parameters
    ----------
    stats : ndarray
        Summed statistics vector.
    layout : StatisticsLayout
    shift : ndarray (d,)
        The centre the statistics were computed around.
    reg_covar : float
    eps : float
        Machine epsilon of the data's dtype; 10 eps is added to every count so
        that an empty component keeps finite parameters (as scikit-learn does).
    float32 : bool
        Whether the data were float32 (only changes the error message).
    normalise : bool
        Weights as counts / sum(counts) (M-step) or counts / n_samples
        (initialisation, scikit-learn's convention).
    n_samples : float, optional
        Divisor of the weights when ``normalise`` is False.

    Returns
    -------
    MixtureParameters
    """
    resp_sums, s1, s2, _, _ = layout.unpack(stats)
    counts = resp_sums + 10 * eps
    shifted_means = s1 / counts[:, None]
    covariances = covariances_from_statistics(
        layout.covariance_type, resp_sums, counts, shifted_means, s2, reg_covar
    )
    prec_chol = precision_cholesky(covariances, layout.covariance_type, float32)
    weights = counts / (counts.sum() if normalise else n_samples)
    return MixtureParameters(weights, shifted_means + shift, covariances, prec_chol)


def run_em(
    X,
    parameters,
    *,
    covariance_type,
    shift,
    reg_covar,
    tol,
    max_iter,
    lower_bound=-np.inf,
    sample_weight=None,
    split_every=SPLIT_EVERY,
    on_iteration=None,
    history=None,
):
    """Iterate EM from ``parameters`` until the per-sample log-likelihood settles.

    Each iteration is one pass: the E-step under the current parameters gives
    both the statistics and the mean log-likelihood used for the convergence
    test (so, as in scikit-learn, the lower bound of iteration t belongs to
    the parameters before its M-step).

    Parameters
    ----------
    X : dask.array.Array (n, d), row-chunked
    parameters : MixtureParameters
    covariance_type, shift, reg_covar, tol, max_iter
        As in :class:`daskem.GaussianMixture`.
    lower_bound : float
        Bound to measure the first change against (warm start).
    sample_weight : dask.array.Array (n, 1), optional
    on_iteration : callable, optional
        Called as ``on_iteration(n_iter, lower_bound, change, parameters,
        seconds)`` after each M-step, e.g. for progress or checkpoints.
    history : tuple of lists, optional
        ``(lower_bounds, seconds)`` of iterations already done (resuming a
        checkpointed run): counting continues after them, up to max_iter.

    Returns
    -------
    EMResult
    """
    n_features = X.shape[1]
    n_components = parameters.means.shape[0]
    layout = StatisticsLayout(covariance_type, n_components, n_features)
    float32 = X.dtype == np.float32
    eps = np.finfo(X.dtype).eps
    lower_bounds, seconds = ([], []) if history is None else (list(history[0]), list(history[1]))
    converged = False
    n_iter = len(lower_bounds)
    for n_iter in range(len(lower_bounds) + 1, max_iter + 1):
        start = time.perf_counter()
        prev = lower_bound
        kp = kernel_parameters(
            parameters.weights, parameters.means, parameters.precisions_cholesky,
            covariance_type, shift, X.dtype,
        )
        stats = compute_statistics(X, kp, layout, sample_weight, split_every)
        _, _, _, loglik_sum, total_weight = layout.unpack(stats)
        lower_bound = loglik_sum / total_weight
        parameters = m_step(stats, layout, shift, reg_covar, eps, float32)
        lower_bounds.append(lower_bound)
        seconds.append(time.perf_counter() - start)
        change = lower_bound - prev
        if on_iteration is not None:
            on_iteration(n_iter, lower_bound, change, parameters, seconds[-1])
        if abs(change) < tol:
            converged = True
            break
    return EMResult(parameters, lower_bound, lower_bounds, n_iter, converged, seconds)
