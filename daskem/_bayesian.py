"""The variational Gaussian family: scikit-learn's BayesianGaussianMixture as a model family.

Variational inference (Bishop 2006, section 10.2; Blei and Jordan 2006 for the
Dirichlet process) needs the same per-component statistics as EM: the counts,
sums and second moments that the per-chunk kernel of :mod:`daskem._kernels`
reduces. So one variational iteration is one pass:

* the E-step is the EM kernel with other per-component constants: the
  expected log-weights E[log pi_k] (digammas of the Dirichlet or the
  stick-breaking Beta parameters) plus the expectation terms of the
  Normal-Wishart posterior, -d/2 log nu_k + 1/2 (E[log |Lambda_k|] - d / beta_k),
  with the posterior's means and scale matrices in the quadratic form;
* the M-step turns the statistics into the posterior's parameters with the
  priors (scikit-learn's conventions, covariances normalised by the degrees
  of freedom);
* the lower bound needs sum_ik r_ik log r_ik, which the statistics give too:
  log r_ik = log p_ik - log p(x_i), and log p_ik is linear in the features the
  statistics sum, so sum_ik r_ik log p_ik comes from N, S1 and S2 under the
  E-step's parameters, and sum_i log p(x_i) is the kernel's log-likelihood sum.

The data-dependent priors (the data's mean and covariance, as scikit-learn
defaults them) take one pass before the first initialisation
(:meth:`BayesianFamily.bind`), and none when the user gives them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np
from scipy.special import betaln, digamma, gammaln

from . import _covariance
from ._covariance import covariances_from_statistics, log_det_cholesky, overflow_error, precision_cholesky
from ._gaussian import kernel_statistics_request, sample_mixture
from ._initialization import initial_statistics_steps
from ._kernels import StatisticsLayout, kernel_parameters
from ._model import MixtureFamily
from ._passes import PassRequest
from ._state import BayesianParameters, FitData
from ._validation import check_n_samples, check_prior_covariance, check_prior_mean

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
_FITTED = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_",
           "covariances_", "precisions_cholesky_")
_PRIORS = ("weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
           "degrees_of_freedom_prior_", "covariance_prior_")


def _moments_func(block, ctx, row_start, sample_weight):
    """[sum w, sum w z, sum w z z^T (or its diagonal)] of a chunk, z = x - shift."""
    z = np.asarray(block, dtype=np.float64) - ctx["shift"]
    w = np.ones(len(z)) if sample_weight is None else sample_weight
    second = (z.T * w) @ z if ctx["full"] else w @ (z * z)
    return np.concatenate([[w.sum()], w @ z, np.ravel(second)])


@dataclasses.dataclass(frozen=True)
class Priors:
    """The priors of a fit, scikit-learn's ``*_prior_`` attributes (float64)."""

    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray


@dataclasses.dataclass(frozen=True)
class BayesianFamily(MixtureFamily):
    """Variational Gaussian mixtures with a Dirichlet (process) prior on the weights.

    Parameters are those of :class:`daskem.BayesianGaussianMixture`;
    ``priors`` is set by :meth:`bind` once the data are known.
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    init_params: str = "auto"
    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: Any = None
    mean_precision_prior: Any = None
    mean_prior: Any = None
    degrees_of_freedom_prior: Any = None
    covariance_prior: Any = None
    priors: Priors | None = None
    supports_online = False
    supports_criteria = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BayesianFamily:
        """The family of an estimator's ``get_params()``."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "priors"]
        return cls(**{name: params[name] for name in names if name in params})

    @property
    def dirichlet_process(self) -> bool:
        return self.weight_concentration_prior_type == "dirichlet_process"

    # ------------------------------------------------------------ priors

    def _given_priors(self, n_features: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The user's mean and covariance priors, checked (float64), or None."""
        mean = None if self.mean_prior is None else check_prior_mean(self.mean_prior, n_features)
        cov = None
        if self.covariance_prior is not None:
            cov = check_prior_covariance(self.covariance_prior, self.covariance_type, n_features)
        return mean, cov

    def check(self, n_samples: int, n_features: int) -> None:
        check_n_samples(n_samples, self.n_components)
        self._given_priors(n_features)
        dof = self.degrees_of_freedom_prior
        if dof is not None and not dof > n_features - 1.0:
            raise ValueError(
                "The parameter 'degrees_of_freedom_prior' should be greater than %d, but got %.3f."
                % (n_features - 1, dof)
            )

    def bind(self, data: FitData) -> Generator:
        """The family with its priors: scikit-learn's defaults from the data where not given.

        The mean prior defaults to the data mean and the covariance prior to
        the data covariance (``np.cov``, ddof=1; its diagonal for 'diag',
        the mean of that for 'spherical'), weighted with sample weights; one
        pass gathers both, only when one of them is needed.
        """
        d = data.n_features
        mean, cov = self._given_priors(d)
        weighted = data.sample_weight is not None
        if cov is None or (mean is None and weighted):
            full = self.covariance_type in ("full", "tied")
            size = 1 + d + (d * d if full else d)
            sums = yield PassRequest(_moments_func, {"shift": data.shift, "full": full}, size)
            total, mean_z = sums[0], sums[1 : 1 + d] / sums[0]
            second = sums[1 + d :].reshape((d, d) if full else (d,))
            spread = (second - total * (np.outer(mean_z, mean_z) if full else mean_z**2)) / (total - 1)
            if mean is None:
                mean = data.shift + mean_z if weighted else data.shift
            if cov is None:
                cov = {
                    "full": lambda: np.atleast_2d(spread),
                    "tied": lambda: np.atleast_2d(spread),
                    "diag": lambda: spread,
                    "spherical": lambda: np.asarray(spread.mean()),
                }[self.covariance_type]()
        if mean is None:
            mean = data.shift
        priors = Priors(
            weight_concentration=(1.0 / self.n_components if self.weight_concentration_prior is None
                                  else float(self.weight_concentration_prior)),
            mean_precision=1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
            mean=np.asarray(mean, dtype=np.float64),
            degrees_of_freedom=(float(d) if self.degrees_of_freedom_prior is None
                                else float(self.degrees_of_freedom_prior)),
            covariance=np.asarray(cov, dtype=np.float64),
        )
        return dataclasses.replace(self, priors=priors)

    # --------------------------------------------------------------- E-step

    def _log_weights(self, p: BayesianParameters) -> np.ndarray:
        """Per-component constants of the E-step: E[log pi_k] plus the Normal-Wishart terms."""
        if p.weight_concentration.ndim == 2:
            a, b = p.weight_concentration
            digamma_sum = digamma(a + b)
            expected = digamma(a) - digamma_sum + np.hstack(
                (0, np.cumsum(digamma(b) - digamma_sum)[:-1])
            )
        else:
            expected = digamma(p.weight_concentration) - digamma(np.sum(p.weight_concentration))
        d = p.means.shape[1]
        dof = p.degrees_of_freedom
        log_lambda = d * math.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), 0)
        return expected - 0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / p.mean_precision)

    def kernel_parameters(self, parameters: BayesianParameters, dtype: np.dtype, holes: bool = False) -> dict:
        if holes:
            raise ValueError("BayesianGaussianMixture does not take missing values")
        # the mixture's mean is a good fixed centre for data it was fitted on
        weights = _weights(parameters.weight_concentration)
        shift = weights @ parameters.means
        return self._kernel_parameters(parameters, shift, dtype)

    def _kernel_parameters(self, p: BayesianParameters, shift: np.ndarray, dtype: np.dtype) -> dict:
        return kernel_parameters(None, p.means, p.precisions_cholesky, self.covariance_type, shift,
                                 dtype, log_weights=self._log_weights(p))

    def statistics_request(self, parameters, shift, dtype):
        layout = StatisticsLayout(self.covariance_type, *parameters.means.shape)
        return kernel_statistics_request(self._kernel_parameters(parameters, shift, dtype), layout), layout

    def _sum_resp_log_prob(self, p: BayesianParameters, resp_sums, s1, s2, shift) -> float:
        """sum_ik r_ik log p_ik from the statistics of the E-step under ``p`` (see module doc)."""
        d = p.means.shape[1]
        cov = self.covariance_type
        const = self._log_weights(p) + log_det_cholesky(p.precisions_cholesky, cov, d) \
            - 0.5 * d * math.log(2 * math.pi)
        mu = p.means - shift
        prec = _covariance.precisions_from_cholesky(p.precisions_cholesky, cov)
        if cov == "full":
            lin = np.einsum("kde,ke->kd", prec, mu)
            quad = (np.einsum("kde,kde->k", prec, s2) - 2 * np.einsum("kd,kd->k", lin, s1)
                    + resp_sums * np.einsum("kd,kd->k", lin, mu))
        elif cov == "tied":
            lin = mu @ prec
            quad = np.array([np.sum(prec * s2) - 2 * np.sum(lin * s1)
                             + np.sum(resp_sums * np.einsum("kd,kd->k", lin, mu))])
        elif cov == "diag":
            quad = np.sum(prec * (s2 - 2 * mu * s1 + resp_sums[:, None] * mu**2), axis=1)
        else:
            quad = prec * (s2 - 2 * np.sum(mu * s1, axis=1) + resp_sums * np.sum(mu**2, axis=1))
        return float(const @ resp_sums - 0.5 * np.sum(quad))

    # --------------------------------------------------------------- M-step

    def posterior(self, stats: np.ndarray, layout: StatisticsLayout, shift: np.ndarray,
                dtype: np.dtype) -> BayesianParameters:
        """The variational posterior from summed statistics, with scikit-learn's conventions."""
        float32 = np.dtype(dtype) == np.float32
        if not np.all(np.isfinite(stats)):
            raise overflow_error(float32)
        pri = self.priors
        cov_type, k = self.covariance_type, self.n_components
        resp_sums, s1, s2, _, _ = layout.unpack(stats)
        nk = resp_sums + 10 * np.finfo(dtype).eps
        xk = s1 / nk[:, None]  # shifted, as the prior mean below
        sk = covariances_from_statistics(cov_type, resp_sums, nk, xk, s2, self.reg_covar)
        if self.dirichlet_process:
            concentration = np.stack([
                1.0 + nk,
                pri.weight_concentration + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0)),
            ])
        else:
            concentration = pri.weight_concentration + nk
        beta0, mean0 = pri.mean_precision, pri.mean - shift
        mean_precision = beta0 + nk
        means = (beta0 * mean0 + nk[:, None] * xk) / mean_precision[:, None]
        diff = xk - mean0
        if cov_type == "full":
            dof = pri.degrees_of_freedom + nk
            outer = diff[:, :, None] * diff[:, None, :]
            covariances = (pri.covariance + nk[:, None, None] * sk
                           + (nk * beta0 / mean_precision)[:, None, None] * outer)
            covariances /= dof[:, None, None]
        elif cov_type == "tied":
            dof = np.asarray(pri.degrees_of_freedom + nk.sum() / k)
            covariances = (pri.covariance + sk * nk.sum() / k
                           + beta0 / k * np.dot((nk / mean_precision) * diff.T, diff))
            covariances = covariances / dof
        elif cov_type == "diag":
            dof = pri.degrees_of_freedom + nk
            covariances = pri.covariance + nk[:, None] * (sk + (beta0 / mean_precision)[:, None] * diff**2)
            covariances /= dof[:, None]
        else:
            dof = pri.degrees_of_freedom + nk
            covariances = pri.covariance + nk * (sk + beta0 / mean_precision * np.mean(diff**2, 1))
            covariances /= dof
        return BayesianParameters(
            weight_concentration=concentration,
            mean_precision=mean_precision,
            means=means + shift,
            degrees_of_freedom=dof,
            covariances=covariances,
            precisions_cholesky=precision_cholesky(covariances, cov_type, float32),
            weight_concentration_prior=np.asarray(pri.weight_concentration),
            mean_precision_prior=np.asarray(pri.mean_precision),
            mean_prior=pri.mean,
            degrees_of_freedom_prior=np.asarray(pri.degrees_of_freedom),
            covariance_prior=pri.covariance,
        )

    def _lower_bound(self, p: BayesianParameters, sum_resp_log_resp: float) -> float:
        """scikit-learn's variational lower bound (a total, not a mean) for posterior ``p``."""
        d = p.means.shape[1]
        dof = p.degrees_of_freedom
        log_det = log_det_cholesky(p.precisions_cholesky, self.covariance_type, d) - 0.5 * d * np.log(dof)
        # the log(pi) terms are left out, as scikit-learn does
        wishart = -(dof * log_det + dof * d * 0.5 * math.log(2.0)
                    + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, None])), 0))
        # tied: one Wishart shared by the K components
        log_wishart = float(np.sum(wishart)) * (self.n_components if self.covariance_type == "tied" else 1)
        c = p.weight_concentration
        if c.ndim == 2:
            log_norm_weight = -float(np.sum(betaln(c[0], c[1])))
        else:
            log_norm_weight = float(gammaln(np.sum(c)) - np.sum(gammaln(c)))
        return (-sum_resp_log_resp - log_wishart - log_norm_weight
                - 0.5 * d * float(np.sum(np.log(p.mean_precision))))

    def update(self, stats, layout, parameters, shift, dtype):
        resp_sums, s1, s2, loglik_sum, _ = layout.unpack(stats)
        # log r_ik = log p_ik - log p(x_i), and sum_k r_ik = 1
        sum_resp_log_resp = self._sum_resp_log_prob(parameters, resp_sums, s1, s2, shift) - loglik_sum
        new = self.posterior(stats, layout, shift, dtype)
        return new, self._lower_bound(new, sum_resp_log_resp)

    def initialization_steps(self, data: FitData, rng: np.random.RandomState, init: int = 0) -> Generator:
        """The posterior after one variational M-step from the initial responsibilities."""
        method = "coreset" if self.init_params == "auto" else self.init_params
        stats, layout = yield from initial_statistics_steps(
            method, data, self.n_components, self.covariance_type, rng
        )
        return self.posterior(stats, layout, data.shift, data.dtype)

    # ------------------------------------------------- model and attributes

    def n_parameters(self, n_features: int) -> int:
        raise ValueError(
            "BIC and AIC are not defined for a variational mixture (scikit-learn defines neither)"
        )

    @property
    def parameter_attributes(self) -> tuple[str, ...]:
        return _FITTED + _PRIORS

    def attributes(self, parameters: BayesianParameters, dtype: Any = np.float64) -> dict[str, Any]:
        p = parameters
        values = dict(zip(_FITTED + _PRIORS, (
            p.weight_concentration, p.mean_precision, p.means, p.degrees_of_freedom, p.covariances,
            p.precisions_cholesky, p.weight_concentration_prior, p.mean_precision_prior, p.mean_prior,
            p.degrees_of_freedom_prior, p.covariance_prior,
        ), strict=True))
        out = {}
        for name, value in values.items():
            value = np.asarray(value, dtype=np.float64)
            # scikit-learn's forms: scalars as floats, the Dirichlet process's Beta pair as a tuple
            out[name] = float(value) if value.ndim == 0 else value
        c = out["weight_concentration_"]
        if c.ndim == 2:
            out["weight_concentration_"] = (c[0], c[1])
        for name in ("means_", "covariances_", "precisions_cholesky_"):
            out[name] = np.asarray(out[name], dtype=dtype)
        out["weights_"] = _weights(p.weight_concentration).astype(dtype)
        out["precisions_"] = np.asarray(
            _covariance.precisions_from_cholesky(p.precisions_cholesky, self.covariance_type), dtype=dtype
        )
        return out

    def parameters_from(self, attributes: Mapping[str, Any]) -> BayesianParameters:
        values = {name: np.asarray(attributes[name], dtype=np.float64) for name in _FITTED + _PRIORS}
        c = values["weight_concentration_"]
        k = self.n_components
        if c.shape != ((2, k) if self.dirichlet_process else (k,)):
            raise ValueError(f"weight_concentration_ has shape {c.shape} for {k} components "
                             f"and the {self.weight_concentration_prior_type} prior")
        means = values["means_"]
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(f"means_ has shape {means.shape}, expected ({k}, n_features)")
        d = means.shape[1]
        shape = _covariance.covariance_shape(self.covariance_type, k, d)
        expected = {
            "mean_precision_": (k,), "degrees_of_freedom_": () if self.covariance_type == "tied" else (k,),
            "covariances_": shape, "precisions_cholesky_": shape, "mean_prior_": (d,),
            "covariance_prior_": shape[1:] if self.covariance_type != "tied" else shape,
        }
        for name, want in expected.items():
            if values[name].shape != want:
                raise ValueError(f"{name} has shape {values[name].shape}, expected {want}")
        return BayesianParameters(*(values[name] for name in _FITTED + _PRIORS))

    def sample(self, parameters, n_samples, rng):
        return sample_mixture(_weights(parameters.weight_concentration), parameters.means,
                              parameters.covariances, self.covariance_type, n_samples, rng)


def _weights(concentration: np.ndarray) -> np.ndarray:
    """Mixture weights from the Dirichlet (K,) or stick-breaking Beta (2, K) parameters."""
    concentration = np.asarray(concentration, dtype=np.float64)
    if concentration.ndim == 2:
        a, b = concentration
        total = a + b
        weights = a / total * np.hstack((1, np.cumprod(b / total)[:-1]))
        return weights / np.sum(weights)
    return concentration / np.sum(concentration)
