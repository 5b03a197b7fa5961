"""The EM Gaussian family: scikit-learn's GaussianMixture as a model family.

The E-step is the per-chunk kernel of :mod:`daskem._kernels` (responsibilities
and sufficient statistics in one pass); the M-step turns the reduced
statistics into weights, means and covariances with scikit-learn's
conventions (see :func:`m_step`); the covariance algebra is in
:mod:`daskem._covariance`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from . import _covariance
from ._covariance import (
    covariances_from_statistics,
    overflow_error,
    precision_cholesky,
)
from ._initialization import initial_statistics_steps
from ._kernels import StatisticsLayout, chunk_statistics, kernel_parameters
from ._model import MixtureFamily
from ._passes import PassRequest
from ._state import FitData, MixtureParameters
from ._validation import (
    check_means_init,
    check_n_samples,
    check_precisions_init,
    check_weights_init,
)

PARAMETER_ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _statistics_func(block, ctx, row_start, sample_weight):
    return chunk_statistics(block, ctx, ctx["layout"], sample_weight)[0]


def kernel_statistics_request(kp: dict, layout: StatisticsLayout) -> PassRequest:
    """The pass request for one E-step with the per-chunk kernel: summed statistics."""
    return PassRequest(_statistics_func, dict(kp, layout=layout), layout.size)


def statistics_request(
    parameters: MixtureParameters, covariance_type: str, shift: np.ndarray, dtype: np.dtype
) -> tuple[PassRequest, StatisticsLayout]:
    """The pass request for one E-step under ``parameters``: summed statistics."""
    layout = StatisticsLayout(covariance_type, *parameters.means.shape)
    kp = kernel_parameters(
        parameters.weights, parameters.means, parameters.precisions_cholesky,
        covariance_type, shift, dtype,
    )
    return kernel_statistics_request(kp, layout), layout


def sample_mixture(
    weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, covariance_type: str,
    n_samples: int, rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn from a Gaussian mixture, grouped by component: (X, y), as scikit-learn draws."""
    n_features = means.shape[1]
    counts = rng.multinomial(n_samples, weights / weights.sum())
    parts = []
    for k, (mean, count) in enumerate(zip(means, counts, strict=True)):
        if covariance_type in ("full", "tied"):
            sigma = covariances[k] if covariance_type == "full" else covariances
            parts.append(rng.multivariate_normal(mean, sigma, int(count)))
        else:
            scale = np.sqrt(covariances[k])
            parts.append(mean + rng.standard_normal(size=(count, n_features)) * scale)
    y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
    return np.vstack(parts), y


def m_step(
    stats: np.ndarray,
    layout: StatisticsLayout,
    shift: np.ndarray,
    reg_covar: float,
    eps: float,
    float32: bool = False,
    normalise: bool = True,
    n_samples: float | None = None,
) -> MixtureParameters:
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


@dataclasses.dataclass(frozen=True)
class GaussianFamily(MixtureFamily):
    """Gaussian mixtures fitted by EM, with scikit-learn's four covariance types.

    Parameters
    ----------
    n_components, covariance_type, reg_covar, init_params
        As in :class:`daskem.GaussianMixture`.
    weights_init, means_init, precisions_init : array-like or None
        User-given initial values, as the user gave them (checked against
        the data's shape by :meth:`check`).
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    init_params: str = "k-means||"
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    supports_online = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GaussianFamily:
        """The family of an estimator's ``get_params()``."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: params[name] for name in names if name in params})

    # ------------------------------------------------------------ checks

    def given_parameters(self, n_features: int) -> tuple[Any, Any, Any]:
        """The user's initial weights, means and precisions, checked (float64) or None."""
        k = self.n_components
        return (
            None if self.weights_init is None else check_weights_init(self.weights_init, k),
            None if self.means_init is None else check_means_init(self.means_init, k, n_features),
            None if self.precisions_init is None else check_precisions_init(
                self.precisions_init, self.covariance_type, k, n_features
            ),
        )

    def check(self, n_samples: int, n_features: int) -> None:
        check_n_samples(n_samples, self.n_components)
        self.given_parameters(n_features)

    # ---------------------------------------------------------------- EM

    def statistics_request(self, parameters, shift, dtype):
        return statistics_request(parameters, self.covariance_type, shift, dtype)

    def update(self, stats, layout, parameters, shift, dtype):
        _, _, _, loglik_sum, total_weight = layout.unpack(stats)
        new = m_step(
            stats, layout, shift, self.reg_covar, np.finfo(dtype).eps, np.dtype(dtype) == np.float32
        )
        return new, loglik_sum / total_weight

    def initialization_steps(self, data: FitData, rng: np.random.RandomState) -> Generator:
        """Initial parameters by ``init_params``, user-given values overriding.

        As in scikit-learn, the method's responsibilities become a mixture by
        one M-step with the weights divided by the number of rows (the total
        weight, with sample weights).
        """
        weights_init, means_init, precisions_init = self.given_parameters(data.n_features)
        if weights_init is None or means_init is None or precisions_init is None:
            stats, layout = yield from initial_statistics_steps(
                self.init_params, data, self.n_components, self.covariance_type, rng
            )
            params = m_step(
                stats, layout, data.shift, self.reg_covar, np.finfo(data.dtype).eps,
                data.dtype == np.float32, normalise=False, n_samples=data.total_weight,
            )
        else:
            params = MixtureParameters(None, None, None, None)
        weights, means, covariances, prec_chol = params.as_tuple()
        if weights_init is not None:
            weights = weights_init
        if means_init is not None:
            means = means_init
        if precisions_init is not None:
            prec_chol = _covariance.precision_cholesky_from_precisions(
                precisions_init, self.covariance_type
            )
            covariances = _covariance.covariances_from_cholesky(prec_chol, self.covariance_type)
        return MixtureParameters(weights, means, covariances, prec_chol)

    # ------------------------------------------------- model and attributes

    def n_parameters(self, n_features: int) -> int:
        return _covariance.n_parameters(self.covariance_type, self.n_components, n_features)

    @property
    def parameter_attributes(self) -> tuple[str, ...]:
        return PARAMETER_ATTRIBUTES

    def attributes(self, parameters: MixtureParameters, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        attributes = {
            "weights_": parameters.weights,
            "means_": parameters.means,
            "covariances_": parameters.covariances,
            "precisions_cholesky_": parameters.precisions_cholesky,
            "precisions_": _covariance.precisions_from_cholesky(
                parameters.precisions_cholesky, self.covariance_type
            ),
        }
        return {name: np.asarray(value, dtype=dtype) for name, value in attributes.items()}

    def parameters_from(self, attributes: Mapping[str, Any]) -> MixtureParameters:
        # float64 inside, whatever the attributes' dtype
        weights, means, covariances, prec_chol = (
            np.asarray(attributes[name], dtype=np.float64) for name in PARAMETER_ATTRIBUTES
        )
        if weights.ndim != 1 or means.ndim != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(f"weights {weights.shape} and means {means.shape} do not fit together")
        k, d = means.shape
        if k != self.n_components:
            raise ValueError(f"{k} components in the arrays, {self.n_components} in the parameters")
        shape = _covariance.covariance_shape(self.covariance_type, k, d)
        for name, a in (("covariances_", covariances), ("precisions_cholesky_", prec_chol)):
            if a.shape != shape:
                raise ValueError(
                    f"{name} has shape {a.shape}, expected {shape} for {self.covariance_type!r}"
                )
        return MixtureParameters(weights, means, covariances, prec_chol)

    def to_unconstrained(self, parameters: MixtureParameters) -> np.ndarray:
        """log weights, means, and the covariances' Cholesky factors with log diagonals."""
        cov = np.asarray(parameters.covariances, dtype=np.float64)
        if self.covariance_type in ("full", "tied"):
            stack = cov if self.covariance_type == "full" else cov[None]
            chol = np.linalg.cholesky(stack)
            d = chol.shape[-1]
            diag = np.arange(d)
            chol[:, diag, diag] = np.log(chol[:, diag, diag])
            rows, cols = np.tril_indices(d)
            scale = chol[:, rows, cols].ravel()
        else:
            scale = np.log(cov).ravel()
        return np.concatenate([np.log(parameters.weights), np.ravel(parameters.means), scale])

    def from_unconstrained(self, vector: np.ndarray, like: MixtureParameters) -> MixtureParameters:
        k, d = like.means.shape
        log_weights, rest = vector[:k], vector[k:]
        weights = np.exp(log_weights - log_weights.max())
        weights /= weights.sum()
        means, scale = rest[: k * d].reshape(k, d), rest[k * d :]
        with np.errstate(over="raise", invalid="raise"):
            try:
                if self.covariance_type in ("full", "tied"):
                    n = 1 if self.covariance_type == "tied" else k
                    chol = np.zeros((n, d, d))
                    rows, cols = np.tril_indices(d)
                    chol[:, rows, cols] = scale.reshape(n, -1)
                    diag = np.arange(d)
                    chol[:, diag, diag] = np.exp(chol[:, diag, diag])
                    cov = chol @ np.swapaxes(chol, 1, 2)
                    cov = cov if self.covariance_type == "full" else cov[0]
                else:
                    cov = np.exp(scale).reshape(np.shape(like.covariances))
            except FloatingPointError:
                raise ValueError("extrapolated covariances overflow") from None
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(weights))):
            raise ValueError("extrapolated parameters are not finite")
        return MixtureParameters(weights, means, cov, precision_cholesky(cov, self.covariance_type))

    def kernel_parameters(self, parameters: MixtureParameters, dtype: np.dtype) -> dict:
        # the mixture's mean is a good fixed centre for data it was fitted on
        shift = parameters.weights @ parameters.means / np.sum(parameters.weights)
        return kernel_parameters(
            parameters.weights, parameters.means, parameters.precisions_cholesky,
            self.covariance_type, shift, dtype,
        )

    def sample(self, parameters, n_samples, rng):
        return sample_mixture(parameters.weights, parameters.means, parameters.covariances,
                              self.covariance_type, n_samples, rng)
