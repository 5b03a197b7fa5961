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

from . import _covariance, _mclust
from ._covariance import (
    COVARIANCE_TYPES,
    covariances_from_statistics,
    overflow_error,
    precision_cholesky,
)
from ._initialization import initial_statistics_steps
from ._kernels import (
    PREDICTIONS,
    StatisticsLayout,
    chunk_statistics,
    kernel_parameters,
)
from ._missing import (
    impute_chunk,
    missing_chunk_statistics,
    missing_predict,
    missing_predict_proba,
    missing_score_samples,
    missing_scores,
    missing_statistics_context,
)
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
DECOMPOSITION_ATTRIBUTES = ("volumes_", "shapes_", "orientations_")

_MISSING_PREDICTIONS = {"score_samples": missing_score_samples, "predict": missing_predict,
                        "predict_proba": missing_predict_proba, "scores": missing_scores}

# Every covariance_type name: scikit-learn's four and mclust's fourteen.
COVARIANCE_NAMES = COVARIANCE_TYPES + _mclust.MODELS
# The kernel (statistics layout) that serves each of mclust's models: the
# diagonal and spherical ones need only the diagonal or the trace of the
# scatter matrices, so they run the cheaper kernels.
_MCLUST_KERNEL = {"EII": "spherical", "EEI": "diag", "VEI": "diag", "EVI": "diag"}


def resolve_covariance(name: str) -> tuple[str, str | None]:
    """(kernel type, mclust model or None) of a covariance_type name.

    scikit-learn's four types and their mclust names (VII, VVI, EEE, VVV)
    are the same model, fitted and shaped the same way: no mclust model.
    """
    if name in COVARIANCE_TYPES:
        return name, None
    if name in _mclust.SKLEARN_EQUIVALENT:
        return _mclust.SKLEARN_EQUIVALENT[name], None
    if name not in _mclust.MODELS:
        raise ValueError(f"unknown covariance_type {name!r}")
    return _MCLUST_KERNEL.get(name, "full"), name


def _as_full(array: np.ndarray, kernel: str) -> np.ndarray:
    """(K, d, d) matrices from a kernel layout's covariances (or precision factors)."""
    if kernel == "full":
        return array
    if kernel == "diag":
        return np.stack([np.diag(a) for a in array])
    raise ValueError(f"no full form for {kernel!r} here")  # pragma: no cover


def _from_full(array: np.ndarray, kernel: str) -> np.ndarray:
    """A kernel layout's covariances (or precision factors) from (K, d, d) matrices."""
    if kernel == "full":
        return array
    diagonals = np.diagonal(array, axis1=1, axis2=2)
    return diagonals.copy() if kernel == "diag" else diagonals[:, 0].copy()


def _check_model_form(precisions: np.ndarray, model: str, kernel: str) -> None:
    """An mclust model with diagonal (or spherical) covariances takes initial precisions
    of that form: (K, d, d) matrices that are diagonal (or multiples of the identity)."""
    if kernel == "full":
        return
    diagonals = np.diagonal(precisions, axis1=1, axis2=2)
    scale = np.abs(diagonals).max(axis=1)[:, None, None]
    off_diagonal = precisions - diagonals[:, :, None] * np.eye(precisions.shape[1])
    if np.any(np.abs(off_diagonal) > 1e-12 * scale):
        raise ValueError(f"precisions_init for covariance_type={model!r} must be diagonal "
                         f"matrices (the model's covariances are diagonal)")
    if kernel == "spherical" and np.any(np.abs(diagonals - diagonals[:, :1]) > 1e-12 * scale[:, 0]):
        raise ValueError(f"precisions_init for covariance_type={model!r} must be multiples of "
                         f"the identity (the model's covariances are spherical)")


def _expand(array: np.ndarray, kernel: str, n_features: int) -> np.ndarray:
    if kernel == "spherical":
        return array[:, None, None] * np.eye(n_features)
    return _as_full(array, kernel)


def _mclust_fit(model, kernel, counts, covariances, reg_covar, previous):
    """mclust's M-step for ``model`` from unconstrained covariances (K, d, d) with weights
    ``counts`` (the scatter W_k = counts_k covariances_k): (covariances in the kernel's
    layout, the decomposition fields)."""
    result = _mclust.m_step_covariances(model, counts, covariances * counts[:, None, None],
                                        reg_covar, previous)
    decomposition = {"volumes": result.volumes, "shapes": result.shapes,
                     "orientations": result.orientations}
    return _from_full(result.covariances, kernel), decomposition


def _mclust_covariances(model, kernel, resp_sums, counts, shifted_means, second, reg_covar, previous):
    """An mclust model's M-step from the kernel's statistics: (covariances in the kernel's
    layout, the decomposition fields)."""
    d = shifted_means.shape[1]
    unconstrained = covariances_from_statistics(kernel, resp_sums, counts, shifted_means, second, 0.0)
    return _mclust_fit(model, kernel, counts, _expand(unconstrained, kernel, d), reg_covar, previous)


def _previous(parameters: MixtureParameters | None, kernel: str) -> _mclust.MclustCovariances | None:
    if parameters is None or parameters.volumes is None:
        return None
    d = parameters.means.shape[1]
    return _mclust.MclustCovariances(_expand(parameters.covariances, kernel, d), parameters.volumes,
                                     parameters.shapes, parameters.orientations)


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
    model: str | None = None,
    previous: MixtureParameters | None = None,
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
    model : str, optional
        One of mclust's models served by the layout's kernel (see
        :func:`resolve_covariance`); None for scikit-learn's M-step.
    previous : MixtureParameters, optional
        The parameters the statistics were computed under: mclust's iterative
        M-steps start from their decomposition.

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
    kernel = layout.covariance_type
    decomposition = {}
    if model is None:
        covariances = covariances_from_statistics(kernel, resp_sums, counts, shifted_means, s2, reg_covar)
    else:
        covariances, decomposition = _mclust_covariances(
            model, kernel, resp_sums, counts, shifted_means, s2, reg_covar, _previous(previous, kernel)
        )
    prec_chol = precision_cholesky(covariances, kernel, float32)
    weights = counts / (counts.sum() if normalise else n_samples)
    return MixtureParameters(weights, shifted_means + shift, covariances, prec_chol, **decomposition)


@dataclasses.dataclass(frozen=True)
class GaussianFamily(MixtureFamily):
    """Gaussian mixtures fitted by EM: scikit-learn's four covariance types and mclust's 14 models.

    Parameters
    ----------
    n_components, covariance_type, reg_covar, init_params, hc_sample_size
        As in :class:`daskem.GaussianMixture`.
    weights_init, means_init, precisions_init : array-like or None
        User-given initial values, as the user gave them (checked against
        the data's shape by :meth:`check`).

    Notes
    -----
    Every name is served by one of the four kernels (:func:`resolve_covariance`):
    mclust's VII, VVI, EEE and VVV are scikit-learn's spherical, diag, tied
    and full outright; the ten other models keep their covariances in the
    kernel's layout inside and show them as (K, d, d) attributes, with their
    volumes, shapes and orientations.
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    init_params: str = "auto"
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    hc_sample_size: int = 2000
    missing: str = "raise"
    supports_online = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GaussianFamily:
        """The family of an estimator's ``get_params()``."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: params[name] for name in names if name in params})

    @property
    def kernel_type(self) -> str:
        """The covariance layout of the kernel and statistics (scikit-learn's four types)."""
        return resolve_covariance(self.covariance_type)[0]

    @property
    def model(self) -> str | None:
        """mclust's model, where it is not one of scikit-learn's four types."""
        return resolve_covariance(self.covariance_type)[1]

    # ------------------------------------------------------------ checks

    def given_parameters(self, n_features: int) -> tuple[Any, Any, Any]:
        """The user's initial weights, means and precisions, checked (float64) or None.

        Precisions come in the attributes' shape: (K, d, d) for mclust's models.
        """
        k = self.n_components
        shape_type = self.kernel_type if self.model is None else "full"
        precisions = None
        if self.precisions_init is not None:
            precisions = check_precisions_init(self.precisions_init, shape_type, k, n_features)
            if self.model is not None:
                _check_model_form(precisions, self.model, self.kernel_type)
        return (
            None if self.weights_init is None else check_weights_init(self.weights_init, k),
            None if self.means_init is None else check_means_init(self.means_init, k, n_features),
            precisions,
        )

    def check(self, n_samples: int, n_features: int) -> None:
        check_n_samples(n_samples, self.n_components)
        self.given_parameters(n_features)

    # ---------------------------------------------------------------- EM

    def statistics_request(self, parameters, shift, dtype):
        if self.missing != "marginalize":
            return statistics_request(parameters, self.kernel_type, shift, dtype)
        # rows with holes: their observed coordinates' marginal densities and the conditional
        # moments of the missing ones (complete rows take the same kernel as above)
        layout = StatisticsLayout(self.kernel_type, *parameters.means.shape)
        ctx = self._missing_context(parameters, shift, dtype, layout)
        return PassRequest(missing_chunk_statistics, ctx, layout.size, holes=True), layout

    def _missing_context(self, parameters, shift, dtype, layout=None):
        return missing_statistics_context(
            parameters.weights, parameters.means, parameters.covariances,
            parameters.precisions_cholesky, self.kernel_type, shift, dtype, layout,
        )

    def update(self, stats, layout, parameters, shift, dtype):
        _, _, _, loglik_sum, total_weight = layout.unpack(stats)
        new = m_step(
            stats, layout, shift, self.reg_covar, np.finfo(dtype).eps, np.dtype(dtype) == np.float32,
            model=self.model, previous=parameters,
        )
        return new, loglik_sum / total_weight

    def running_statistics(
        self, parameters: MixtureParameters, shift: np.ndarray, lower_bound: float
    ) -> tuple[np.ndarray, StatisticsLayout]:
        """The normalised statistics whose M-step gives back ``parameters``."""
        layout = StatisticsLayout(self.kernel_type, *parameters.means.shape)
        weights = parameters.weights / np.sum(parameters.weights)
        shifted_means = parameters.means - shift
        second = _covariance.second_moments_from_covariances(
            self.kernel_type, weights, shifted_means, parameters.covariances, self.reg_covar
        )
        loglik = lower_bound if np.isfinite(lower_bound) else 0.0
        stats = layout.pack_from_second_moments(
            weights, weights[:, None] * shifted_means, second, loglik, 1.0
        )
        return stats, layout

    def init_method(self, init: int, weighted: bool = False) -> str:
        """The initialisation method of restart ``init``.

        ``init_params='auto'`` is 'coreset' for scikit-learn's names; for
        mclust's names it is mclust's hierarchical clustering ('hc') for the
        first start, which finds the starts mclust's fits are known by, and
        'coreset' for the restarts, which vary (hc of the same rows would
        give the same start again). With sample weights, which 'hc' does not
        take, it is 'coreset' throughout.
        """
        if self.init_params != "auto":
            return self.init_params
        mclust_name = self.covariance_type in _mclust.MODELS
        return "hc" if mclust_name and init == 0 and not weighted else "coreset"

    def initialization_steps(self, data: FitData, rng: np.random.RandomState, init: int = 0) -> Generator:
        """Initial parameters by ``init_params``, user-given values overriding.

        As in scikit-learn, the method's responsibilities become a mixture by
        one M-step with the weights divided by the number of rows (the total
        weight, with sample weights).
        """
        weights_init, means_init, precisions_init = self.given_parameters(data.n_features)
        kernel = self.kernel_type
        if weights_init is None or means_init is None or precisions_init is None:
            method = self.init_method(init, weighted=data.sample_weight is not None)
            stats, layout = yield from initial_statistics_steps(
                method, data, self.n_components, kernel, rng, hc_sample_size=self.hc_sample_size,
            )
            params = m_step(
                stats, layout, data.shift, self.reg_covar, np.finfo(data.dtype).eps,
                data.dtype == np.float32, normalise=False, n_samples=data.total_weight,
                model=self.model,
            )
        else:
            params = MixtureParameters(None, None, None, None)
        if weights_init is None and means_init is None and precisions_init is None:
            return params
        weights, means, covariances, prec_chol = params.as_tuple()
        if weights_init is not None:
            weights = weights_init
        if means_init is not None:
            means = means_init
        if precisions_init is not None:
            if self.model is not None:
                precisions_init = _from_full(precisions_init, kernel)
            prec_chol = _covariance.precision_cholesky_from_precisions(precisions_init, kernel)
            covariances = _covariance.covariances_from_cholesky(prec_chol, kernel)
        return MixtureParameters(weights, means, covariances, prec_chol)

    # ------------------------------------------------- model and attributes

    def n_parameters(self, n_features: int) -> int:
        if self.model is not None:
            return _mclust.n_parameters(self.model, self.n_components, n_features)
        return _covariance.n_parameters(self.kernel_type, self.n_components, n_features)

    @property
    def parameter_attributes(self) -> tuple[str, ...]:
        return PARAMETER_ATTRIBUTES + (DECOMPOSITION_ATTRIBUTES if self.model is not None else ())

    def attributes(self, parameters: MixtureParameters, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        kernel, d = self.kernel_type, parameters.means.shape[1]
        covariances, prec_chol = parameters.covariances, parameters.precisions_cholesky
        attributes = {"weights_": parameters.weights, "means_": parameters.means}
        if self.model is None:
            attributes.update(
                covariances_=covariances, precisions_cholesky_=prec_chol,
                precisions_=_covariance.precisions_from_cholesky(prec_chol, kernel),
            )
        else:
            full_chol = _expand(prec_chol, kernel, d)
            decomposition = (parameters.volumes, parameters.shapes, parameters.orientations)
            if decomposition[0] is None:  # parameters given by the user
                decomposition = _mclust.decompose(_expand(covariances, kernel, d))
            attributes.update(
                covariances_=_expand(covariances, kernel, d), precisions_cholesky_=full_chol,
                precisions_=_covariance.precisions_from_cholesky(full_chol, "full"),
                volumes_=decomposition[0], shapes_=decomposition[1], orientations_=decomposition[2],
            )
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
        kernel = self.kernel_type
        shape = _covariance.covariance_shape(kernel if self.model is None else "full", k, d)
        for name, a in (("covariances_", covariances), ("precisions_cholesky_", prec_chol)):
            if a.shape != shape:
                raise ValueError(
                    f"{name} has shape {a.shape}, expected {shape} for {self.covariance_type!r}"
                )
        if self.model is None:
            return MixtureParameters(weights, means, covariances, prec_chol)
        decomposition = [attributes.get(name) for name in DECOMPOSITION_ATTRIBUTES]
        decomposition = [None if a is None else np.asarray(a, dtype=np.float64) for a in decomposition]
        return MixtureParameters(weights, means, _from_full(covariances, kernel),
                                 _from_full(prec_chol, kernel), *decomposition)

    def to_unconstrained(self, parameters: MixtureParameters) -> np.ndarray:
        """log weights, means, and the covariances' Cholesky factors with log diagonals."""
        kernel = self.kernel_type
        cov = np.asarray(parameters.covariances, dtype=np.float64)
        if kernel in ("full", "tied"):
            stack = cov if kernel == "full" else cov[None]
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
        kernel = self.kernel_type
        k, d = like.means.shape
        log_weights, rest = vector[:k], vector[k:]
        weights = np.exp(log_weights - log_weights.max())
        weights /= weights.sum()
        means, scale = rest[: k * d].reshape(k, d), rest[k * d :]
        with np.errstate(over="raise", invalid="raise"):
            try:
                if kernel in ("full", "tied"):
                    n = 1 if kernel == "tied" else k
                    chol = np.zeros((n, d, d))
                    rows, cols = np.tril_indices(d)
                    chol[:, rows, cols] = scale.reshape(n, -1)
                    diag = np.arange(d)
                    chol[:, diag, diag] = np.exp(chol[:, diag, diag])
                    cov = chol @ np.swapaxes(chol, 1, 2)
                    cov = cov if kernel == "full" else cov[0]
                else:
                    cov = np.exp(scale).reshape(np.shape(like.covariances))
            except FloatingPointError:
                raise ValueError("extrapolated covariances overflow") from None
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(weights))):
            raise ValueError("extrapolated parameters are not finite")
        if self.model is None:
            return MixtureParameters(weights, means, cov, precision_cholesky(cov, kernel))
        # Extrapolating Cholesky factors loses a common orientation, equal volumes or
        # shapes: the model's fit to the extrapolated covariances (which hold their
        # regularisation already, so none is added) gives the member of the model nearest
        # to them (in likelihood), a point the M-step could return, so EM from it does not
        # lower the bound (measured: by up to 1e-7 per step otherwise).
        cov, decomposition = _mclust_fit(self.model, kernel, weights, _expand(cov, kernel, means.shape[1]),
                                         0.0, _previous(like, kernel))
        return MixtureParameters(weights, means, cov, precision_cholesky(cov, kernel), **decomposition)

    def kernel_parameters(self, parameters: MixtureParameters, dtype: np.dtype,
                          holes: bool = False) -> dict:
        # the mixture's mean is a good fixed centre for data it was fitted on
        shift = parameters.weights @ parameters.means / np.sum(parameters.weights)
        if holes:
            return self._missing_context(parameters, shift, dtype)
        return kernel_parameters(
            parameters.weights, parameters.means, parameters.precisions_cholesky,
            self.kernel_type, shift, dtype,
        )

    def prediction_function(self, kind: str, holes: bool = False) -> Any:
        if kind == "impute":
            return impute_chunk
        return (_MISSING_PREDICTIONS if holes else PREDICTIONS)[kind]

    def sample(self, parameters, n_samples, rng):
        return sample_mixture(parameters.weights, parameters.means, parameters.covariances,
                              self.kernel_type, n_samples, rng)
