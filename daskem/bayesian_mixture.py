"""BayesianGaussianMixture: scikit-learn's variational mixture over daskem's mixture engine.

The class holds the parameters and their constraints; fitting, predictions,
scores, sampling and saving are shared with :class:`daskem.GaussianMixture`
(:mod:`daskem._estimator`); the model family it registers
(:class:`daskem._bayesian.BayesianFamily`) supplies the variational updates.
"""

from __future__ import annotations

from numbers import Real

from sklearn.utils._param_validation import Interval, StrOptions

from . import _covariance
from ._bayesian import PRIOR_TYPES, BayesianFamily
from ._estimator import MIXTURE_CONSTRAINTS, MixtureEstimator
from ._registry import register

# Components whose weight is above this are "active" in summaries: with a
# Dirichlet-process prior, the others are switched off by the data.
ACTIVE_WEIGHT = 0.01


class BayesianGaussianMixture(MixtureEstimator):
    """Variational Bayesian Gaussian mixture fitted over chunked Dask arrays.

    The parameters, attributes and methods are those of scikit-learn's
    :class:`sklearn.mixture.BayesianGaussianMixture`; the data may be a
    NumPy array, a Dask array (rows in any chunking, all features in each
    chunk) or a Dask DataFrame of numeric columns. Each variational
    iteration is one pass over the data, as an EM iteration is; with
    ``covariance_prior`` (or, with sample weights, ``mean_prior``) left to
    the data, one more pass finds the data's covariance before the first
    initialisation.

    Parameters
    ----------
    n_components : int, default=1
        Number of components offered; the prior decides how many are used.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (a total
        over the rows, as in scikit-learn, not a mean).
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {'auto', 'coreset', 'k-means||', 'kmeans', 'k-means++', 'random', \
'random_from_data'}, default='auto'
        As in :class:`daskem.GaussianMixture`: 'auto' is 'coreset' (on
        overlapping clusters it reached the best lower bound on every seed
        where 'k-means||' fell short on four of six, in fewer passes;
        benchmarks/RESULTS.md).
    weight_concentration_prior_type : {'dirichlet_process', \
'dirichlet_distribution'}, default='dirichlet_process'
        The stick-breaking Dirichlet process or a Dirichlet distribution.
    weight_concentration_prior : float, default=None
        gamma_0 (or alpha_0); None means 1 / n_components. Small values let
        the data switch components off.
    mean_precision_prior : float, default=None
        beta_0; None means 1.
    mean_prior : array-like of shape (n_features,), default=None
        m_0; None means the data mean (weighted, with sample weights).
    degrees_of_freedom_prior : float, default=None
        nu_0; None means n_features.
    covariance_prior : float or array-like, default=None
        The Wishart prior's covariance; None means the data covariance
        (its diagonal for 'diag', their mean for 'spherical').
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
    verbose : int, default=0
    verbose_interval : int, default=10
    cache : {'auto', True, False}, default='auto'
        As in :class:`daskem.GaussianMixture`.
    no_workers_timeout : float, default=None
        As in :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        In the data's dtype.
    weight_concentration_ : ndarray, or tuple of two for the Dirichlet process
    mean_precision_, degrees_of_freedom_ : ndarray (float for tied dof)
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, \
degrees_of_freedom_prior_, covariance_prior_
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, \
n_passes_, iteration_seconds_, feature_names_in_
        As in :class:`daskem.GaussianMixture`; the lower bounds are
        scikit-learn's variational bound.

    Notes
    -----
    Not available: online EM and ``partial_fit``, missing values, BIC and
    AIC (scikit-learn defines neither for this model). Unlike scikit-learn,
    float32 data give float32 ``weights_``, ``means_``, ``covariances_``,
    ``precisions_`` and ``precisions_cholesky_``, as GaussianMixture's do.
    """

    _parameter_constraints: dict = {
        **MIXTURE_CONSTRAINTS,
        "covariance_type": [StrOptions(set(_covariance.COVARIANCE_TYPES))],
        "weight_concentration_prior_type": [StrOptions(set(PRIOR_TYPES))],
        "weight_concentration_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_precision_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "covariance_prior": [None, "array-like", Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="auto",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        cache="auto",
        no_workers_timeout=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.no_workers_timeout = no_workers_timeout


register(BayesianGaussianMixture, BayesianFamily.from_params)
