"""The EM loop: one pass over the chunks per iteration, a tree reduction, the M-step.

An iteration asks for :func:`daskem._kernels.chunk_statistics` on every row
chunk (see :mod:`daskem._passes`: the flat statistics vectors are added up by
Dask's own tree reduction, and the parameters enter the graph as a single
key), then turns the sum into new parameters on the client.
"""

import dataclasses
import time

import numpy as np

from ._covariance import (
    covariances_from_statistics,
    overflow_error,
    precision_cholesky,
)
from ._kernels import StatisticsLayout, chunk_statistics, kernel_parameters
from ._passes import PassRequest


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


def _statistics_func(block, ctx, row_start, sample_weight):
    return chunk_statistics(block, ctx, ctx["layout"], sample_weight)[0]


def statistics_request(parameters, covariance_type, shift, dtype):
    """The pass request for one E-step under ``parameters``: summed statistics."""
    layout = StatisticsLayout(covariance_type, *parameters.means.shape)
    kp = kernel_parameters(
        parameters.weights, parameters.means, parameters.precisions_cholesky,
        covariance_type, shift, dtype,
    )
    return PassRequest(_statistics_func, dict(kp, layout=layout), layout.size), layout


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
    if not np.all(np.isfinite(stats)):
        # the data were checked finite: their squares (or quadratic forms) overflowed
        raise overflow_error(float32)
    resp_sums, s1, s2, _, _ = layout.unpack(stats)
    counts = resp_sums + 10 * eps
    shifted_means = s1 / counts[:, None]
    covariances = covariances_from_statistics(
        layout.covariance_type, resp_sums, counts, shifted_means, s2, reg_covar
    )
    prec_chol = precision_cholesky(covariances, layout.covariance_type, float32)
    weights = counts / (counts.sum() if normalise else n_samples)
    return MixtureParameters(weights, shifted_means + shift, covariances, prec_chol)


def em_steps(
    parameters,
    *,
    covariance_type,
    shift,
    reg_covar,
    tol,
    max_iter,
    dtype,
    lower_bound=-np.inf,
    on_iteration=None,
    history=None,
):
    """EM from ``parameters`` until the per-sample log-likelihood settles.

    A step generator for :func:`daskem._passes.drive`: each iteration yields
    one statistics request (one pass over the data) and runs the M-step on
    the summed result. The E-step under the current parameters gives both
    the statistics and the mean log-likelihood used for the convergence test
    (so, as in scikit-learn, the lower bound of iteration t belongs to the
    parameters before its M-step).

    Parameters
    ----------
    parameters : MixtureParameters
    covariance_type, reg_covar, tol, max_iter
        As in :class:`daskem.GaussianMixture`.
    shift : ndarray (d,)
        Fixed centre subtracted from the data in the kernels.
    dtype : numpy dtype
        The data's dtype.
    lower_bound : float
        Bound to measure the first change against (warm start).
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
    float32 = np.dtype(dtype) == np.float32
    eps = np.finfo(dtype).eps
    lower_bounds, seconds = ([], []) if history is None else (list(history[0]), list(history[1]))
    converged = False
    n_iter = len(lower_bounds)
    for n_iter in range(len(lower_bounds) + 1, max_iter + 1):
        start = time.perf_counter()
        prev = lower_bound
        request, layout = statistics_request(parameters, covariance_type, shift, dtype)
        stats = yield request
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
