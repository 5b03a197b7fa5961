"""GaussianMixture: scikit-learn's estimator interface over daskem's chunked EM."""

import dataclasses
import logging
import math
import time
import warnings
from numbers import Integral, Real

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _covariance, _online
from ._em import EMResult, MixtureParameters, em_steps
from ._initialization import initialization_steps
from ._passes import check_workers, drive
from ._kernels import (
    chunk_predict,
    chunk_predict_proba,
    chunk_score_samples,
    kernel_parameters,
)
from ._validation import (
    as_dask_array,
    check_means_init,
    check_n_samples,
    check_precisions_init,
    check_sample_weight,
    check_weights_init,
    checked_chunk_function,
    data_summary,
    is_dask_collection,
)

logger = logging.getLogger("daskem")

INIT_METHODS = ("k-means||", "kmeans", "k-means++", "random", "random_from_data")


@dataclasses.dataclass
class FitData:
    """Validated data of a fit: the row-chunked array, its fixed shift, weights."""

    X: object
    shift: np.ndarray
    sample_weight: object
    total_weight: float


@dataclasses.dataclass
class FitState:
    """Everything a fit needs to resume: the current initialisation's run so far.

    Attributes
    ----------
    init : int
        Index of the current initialisation.
    rng_state : tuple
        State of the random generator after this initialisation was drawn.
    parameters : MixtureParameters
        Parameters after the last M-step (or the initialisation).
    lower_bound : float
        Lower bound of the last iteration (-inf before the first).
    lower_bounds, seconds : list of float
        History of this initialisation's iterations.
    converged : bool
        Whether this initialisation's run has converged.
    best : EMResult or None
        Best finished initialisation so far.
    """

    init: int
    rng_state: tuple
    parameters: MixtureParameters
    lower_bound: float
    lower_bounds: list
    seconds: list
    converged: bool
    best: object


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM over chunked Dask arrays.

    The parameters, attributes and methods are those of scikit-learn's
    :class:`sklearn.mixture.GaussianMixture`; the data may be a NumPy array,
    a Dask array (rows in any chunking, all features in each chunk) or a
    Dask DataFrame of numeric columns. Each EM iteration is one pass over the
    data.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Covariance parameterisation of the components.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample
        log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals.
    max_iter : int, default=100
        Number of EM iterations; 0 returns the initialisation.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {'k-means||', 'kmeans', 'k-means++', 'random', \
'random_from_data'}, default='k-means||'
        Initialisation. 'k-means||' is scalable k-means (Bahmani et al.
        2012) over the Dask array: a few passes of D^2 oversampling, then a
        weighted clustering of the candidates in memory. 'kmeans' refines
        that with Lloyd passes until convergence; the others have
        scikit-learn's meanings.
    weights_init, means_init, precisions_init : array-like, default=None
        User-given initial parameters, as in scikit-learn.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Continue from the previous fit (``n_init`` is then ignored).
    verbose : int, default=0
    verbose_interval : int, default=10
    cache : {'auto', True, False}, default='auto'
        Persist the data in (cluster) memory for the fit. 'auto' persists
        when the data fit comfortably in the memory available and otherwise
        re-reads them from storage on every iteration.
    algorithm : {'batch', 'online'}, default='batch'
        'batch' is EM with one pass per iteration. 'online' is stepwise EM
        (Cappe and Moulines 2009): an M-step after every batch of rows, for
        data too large for many passes; ``max_iter`` then counts passes
        (epochs) and ``tol`` applies to the mean log-likelihood of a pass.
    batch_size : int, default=None
        Rows per online batch (whole chunks are grouped up to at least this
        many rows); None means one chunk per batch.
    learning_decay : float in (0.5, 1], default=0.51
        alpha in the online step size g_t = (t + learning_offset)^-alpha.
        Batches of many rows carry little noise, so steps that shrink
        slowly (alpha near 1/2) make the most progress per pass.
    learning_offset : float, default=1.0
        t0 in the online step size.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
    lower_bounds_ : list of float
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Notes
    -----
    Empty components. A component that loses all its responsibility keeps a
    count of 10 machine epsilons (as in scikit-learn): its weight becomes
    tiny but positive, its mean moves to the centre of the data and its
    covariance to ``reg_covar * I``. No NaN is produced; with
    ``reg_covar=0`` the fit raises the ill-defined-covariance error instead.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(_covariance.COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "cache": [StrOptions({"auto"}), "boolean"],
        "algorithm": [StrOptions({"batch", "online"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(Real, 0.0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="k-means||",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        cache="auto",
        algorithm="batch",
        batch_size=None,
        learning_decay=0.51,
        learning_offset=1.0,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.algorithm = algorithm
        self.batch_size = batch_size
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None, sample_weight=None, algorithm=None, batch_size=None):
        """Estimate the parameters with the EM algorithm.

        Parameters
        ----------
        X : array-like, Dask array or Dask DataFrame of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or Dask array of shape (n_samples,), optional
            Non-negative row weights. Integer weights fit like repeated rows,
            zero weights like dropped rows.
        algorithm : {'batch', 'online'}, optional
            Shortcut that sets the ``algorithm`` parameter before fitting.
        batch_size : int, optional
            Shortcut that sets the ``batch_size`` parameter before fitting.

        Returns
        -------
        self : GaussianMixture
        """
        if algorithm is not None:
            self.set_params(algorithm=algorithm)
        if batch_size is not None:
            self.set_params(batch_size=batch_size)
        self._fit(X, sample_weight=sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each row of X.

        Equal to ``fit(X).predict(X)``; lazy for Dask input.
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _fit(self, X, sample_weight=None, on_iteration=None, on_state=None, resume=None):
        """Fit, restoring the estimator's previous state if anything fails.

        Parameters
        ----------
        X : array-like, Dask array or Dask DataFrame
        sample_weight : array-like or Dask array, optional
        on_iteration : callable, optional
            ``on_iteration(n_iter, lower_bound, change, parameters, seconds)``
            after each EM iteration (progress displays).
        on_state : callable, optional
            ``on_state(FitState)`` after each initialisation and each
            iteration, with everything needed to resume (checkpoints).
        resume : FitState, optional
            A state from ``on_state`` to continue from; with the same data
            and chunking the result equals an uninterrupted fit bit for bit.
        """
        self._validate_params()
        previous_state = dict(self.__dict__)
        try:
            data = self._prepare_fit_data(X, sample_weight)
            if self.algorithm == "online":
                result = self._fit_online(data, on_iteration)
            else:
                steps = self._fit_steps(data, on_iteration, on_state, resume)
                (result,) = drive(data.X, [steps], data.sample_weight)
            self._set_fit_result(result)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _prepare_fit_data(self, X, sample_weight=None):
        """Validate X (and weights), find the fixed shift, apply the cache policy.

        Sets ``n_features_in_`` (and ``feature_names_in_``) as scikit-learn's
        validation does.
        """
        check_workers()
        if is_dask_collection(X):
            Xd, _, names = as_dask_array(X, type(self).__name__, ensure_min_samples=2)
            self.n_features_in_ = Xd.shape[1]
            if names is not None and all(isinstance(n, str) for n in names):
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            check_n_samples(Xd.shape[0], self.n_components)
            self._check_initial_parameters(Xd.shape[1])
            # persist first: the validation pass then reads storage only once
            Xd = self._cache(Xd)
            weights = check_sample_weight(sample_weight, Xd)
            shift = data_summary(Xd)
        else:
            Xn = validate_data(
                self, X, dtype=[np.float64, np.float32], ensure_min_samples=2
            )
            check_n_samples(Xn.shape[0], self.n_components)
            self._check_initial_parameters(Xn.shape[1])
            shift = np.mean(Xn, axis=0, dtype=np.float64)
            Xd = self._cache(as_dask_array(Xn, type(self).__name__)[0])
            weights = check_sample_weight(sample_weight, Xd)
        total_weight = Xd.shape[0] if weights is None else float(weights.sum().compute())
        if total_weight <= 0:
            raise ValueError("sample_weight sums to zero: no row carries any weight.")
        return FitData(Xd, shift, weights, total_weight)

    def _check_initial_parameters(self, n_features):
        k = self.n_components
        self._weights_init = None if self.weights_init is None else check_weights_init(self.weights_init, k)
        self._means_init = None if self.means_init is None else check_means_init(self.means_init, k, n_features)
        self._precisions_init = (
            None
            if self.precisions_init is None
            else check_precisions_init(self.precisions_init, self.covariance_type, k, n_features)
        )

    def _initialization_steps(self, data, rng):
        """Step generator: initial parameters, user-given ones overriding."""
        given = (self._weights_init, self._means_init, self._precisions_init)
        if any(p is None for p in given):
            params = yield from initialization_steps(
                self.init_params, data.X.shape, self.n_components, self.covariance_type,
                data.shift, self.reg_covar, rng, data.X.dtype, data.total_weight,
                weighted=data.sample_weight is not None,
            )
        else:
            params = MixtureParameters(None, None, None, None)
        weights, means, covariances, prec_chol = params.as_tuple()
        if self._weights_init is not None:
            weights = self._weights_init
        if self._means_init is not None:
            means = self._means_init
        if self._precisions_init is not None:
            prec_chol = _covariance.precision_cholesky_from_precisions(
                self._precisions_init, self.covariance_type
            )
            covariances = _covariance.covariances_from_cholesky(prec_chol, self.covariance_type)
        return MixtureParameters(weights, means, covariances, prec_chol)

    def _cache(self, X):
        if self.cache is False:
            return X
        from .io import cache_decision

        persist, reason = cache_decision(X, self.cache)
        logger.info("data cache: %s (%s)", "persisted" if persist else "streamed", reason)
        return _chunks_for_persisting(X).persist() if persist else X

    def _fit_steps(self, data, on_iteration=None, on_state=None, resume=None):
        """Step generator of a whole fit: every initialisation and its EM run.

        Returns the best EMResult. Runs under :func:`daskem._passes.drive`,
        alone (``fit``) or beside other models (``select_model``).
        """
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        rng = check_random_state(self.random_state)
        best, first_init = None, 0
        if resume is not None:
            best, first_init = resume.best, resume.init
        for init in range(first_init, n_init):
            self._print_verbose_msg_init_beg(init)
            start = time.perf_counter()
            history = None
            if resume is not None and init == resume.init:
                rng.set_state(resume.rng_state)
                params, lower_bound = resume.parameters, resume.lower_bound
                history = (resume.lower_bounds, resume.seconds)
            elif do_init:
                params = yield from self._initialization_steps(data, rng)
                lower_bound = -np.inf
            else:
                params = MixtureParameters(*self._get_parameters())
                lower_bound = self.lower_bound_
            state = FitState(init, rng.get_state(), params, lower_bound, [], [], False, best)
            if history is None and on_state is not None:
                on_state(state)
            if self.max_iter == 0:
                best = EMResult(params, -np.inf, [], 0, False, [])
                continue
            if resume is not None and init == resume.init and resume.converged:
                result = EMResult(params, lower_bound, list(resume.lower_bounds),
                                  len(resume.lower_bounds), True, list(resume.seconds))
            else:
                result = yield from em_steps(
                    params,
                    covariance_type=self.covariance_type, shift=data.shift,
                    reg_covar=self.reg_covar, tol=self.tol, max_iter=self.max_iter,
                    dtype=data.X.dtype, lower_bound=lower_bound, history=history,
                    on_iteration=self._iteration_hook(on_iteration, on_state, state, start),
                )
            self._print_verbose_msg_init_end(result.lower_bound, result.converged, start)
            if best is None or result.lower_bound > best.lower_bound or best.lower_bound == -np.inf:
                best = result
        return best

    # --------------------------------------------------------------- online

    def _fit_online(self, data, on_iteration=None):
        """Stepwise EM over batches of whole chunks; returns the best EMResult."""
        X, w = data.X, data.sample_weight
        rng = check_random_state(self.random_state)
        batches = _online.chunk_batches(X.chunks[0], self.batch_size or X.chunks[0][0])

        def batch(i):
            lo, hi = batches[i]
            return X.blocks[lo:hi], None if w is None else w.blocks[lo:hi]

        best = None
        for init in range(self.n_init if not (self.warm_start and hasattr(self, "converged_")) else 1):
            self._print_verbose_msg_init_beg(init)
            start = time.perf_counter()
            order = rng.permutation(len(batches))
            if self.warm_start and hasattr(self, "_online_state"):
                params = MixtureParameters(*self._get_parameters())
                state, lower_bound = self._online_state, self.lower_bound_
            else:
                params = self._initialize_on(*batch(order[0]), data.shift, rng)
                state, lower_bound = None, -np.inf
            lower_bounds, seconds, converged, n_iter = [], [], False, 0
            for n_iter in range(1, self.max_iter + 1):
                tick = time.perf_counter()
                if n_iter > 1:
                    order = rng.permutation(len(batches))
                loglik, weight = 0.0, 0.0
                for i in order:
                    params, state, batch_ll, batch_weight = self._online_update(
                        *batch(i), params, state, data.shift
                    )
                    loglik += batch_ll * batch_weight
                    weight += batch_weight
                prev, lower_bound = lower_bound, loglik / weight
                lower_bounds.append(lower_bound)
                seconds.append(time.perf_counter() - tick)
                self._print_verbose_msg_iter_end(n_iter, lower_bound - prev, start)
                if on_iteration is not None:
                    on_iteration(n_iter, lower_bound, lower_bound - prev, params, seconds[-1])
                if abs(lower_bound - prev) < self.tol:
                    converged = True
                    break
            result = EMResult(params, lower_bound, lower_bounds, n_iter, converged, seconds)
            self._print_verbose_msg_init_end(lower_bound, converged, start)
            if best is None or result.lower_bound > best.lower_bound or best.lower_bound == -np.inf:
                best, self._online_state, self._online_shift = result, state, data.shift
        return best

    def _initialize_on(self, X, sample_weight, shift, rng):
        """Initial parameters from one batch of rows."""
        total = X.shape[0] if sample_weight is None else float(sample_weight.sum().compute())
        batch = FitData(X, shift, sample_weight, total)
        (params,) = drive(X, [self._initialization_steps(batch, rng)], sample_weight)
        return params

    def _online_update(self, X, sample_weight, params, state, shift):
        """One stepwise-EM update from a batch: (parameters, state, mean ll, weight)."""
        batch_stats, layout, weight = _online.batch_statistics(
            X, sample_weight, params, self.covariance_type, shift
        )
        state = _online.update(state, batch_stats, layout, self.learning_offset, self.learning_decay)
        params = _online.online_parameters(state, shift, self.reg_covar, X.dtype)
        return params, state, layout.unpack(batch_stats)[3], weight

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from a batch of rows.

        The first call initialises the model from this batch (with
        ``init_params``); each call then blends the batch's statistics into
        the running ones with step (t + learning_offset)^-learning_decay and
        runs the M-step. ``n_iter_`` counts the updates and ``lower_bound_``
        is the mean log-likelihood of the last batch under the parameters
        before its update.

        Parameters
        ----------
        X : array-like or Dask array of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or Dask array of shape (n_samples,), optional

        Returns
        -------
        self : GaussianMixture
        """
        self._validate_params()
        previous_state = dict(self.__dict__)
        try:
            first = not hasattr(self, "means_")
            if first:
                data = self._prepare_fit_data(X, sample_weight)
                self._online_shift = data.shift
                rng = check_random_state(self.random_state)
                params, state = self._initialize_on(data.X, data.sample_weight, data.shift, rng), None
            else:
                Xd = self._predict_input(X)
                Xd = Xd if isinstance(Xd, da.Array) else as_dask_array(Xd, type(self).__name__)[0]
                data_summary(Xd)
                data = FitData(Xd, None, check_sample_weight(sample_weight, Xd), None)
                if not hasattr(self, "_online_shift"):  # continuing a batch fit
                    self._online_shift = self.weights_ @ self.means_ / np.sum(self.weights_)
                params = MixtureParameters(*self._get_parameters())
                state = getattr(self, "_online_state", None)
            params, state, batch_ll, _ = self._online_update(
                data.X, data.sample_weight, params, state, self._online_shift
            )
            self._set_parameters(params.as_tuple())
            self._online_state = state
            self.n_iter_ = state.n_updates
            self.lower_bound_ = batch_ll
            self.lower_bounds_ = ([] if first else list(self.lower_bounds_)) + [batch_ll]
            self.iteration_seconds_ = []
            self.converged_ = False
            for name in ("_weights_init", "_means_init", "_precisions_init"):
                self.__dict__.pop(name, None)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _set_fit_result(self, best):
        """Set the fitted attributes from the best run (warning if not converged)."""
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. "
                "Try different init parameters, or increase max_iter, "
                "tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        self._set_parameters(best.parameters.as_tuple())
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound if self.max_iter > 0 else -np.inf
        self.lower_bounds_ = list(best.lower_bounds)
        self.iteration_seconds_ = list(best.seconds)
        for name in ("_weights_init", "_means_init", "_precisions_init"):
            self.__dict__.pop(name, None)

    def _iteration_hook(self, on_iteration, on_state, state, start):
        def hook(n_iter, lower_bound, change, params, seconds):
            self._print_verbose_msg_iter_end(n_iter, change, start)
            if on_iteration is not None:
                on_iteration(n_iter, lower_bound, change, params, seconds)
            if on_state is not None:
                state.parameters, state.lower_bound = params, lower_bound
                state.lower_bounds.append(lower_bound)
                state.seconds.append(seconds)
                state.converged = abs(change) < self.tol
                on_state(state)
        return hook

    # ----------------------------------------------------------- parameters

    def _get_parameters(self):
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self.precisions_ = _covariance.precisions_from_cholesky(
            self.precisions_cholesky_, self.covariance_type
        )

    def _n_parameters(self):
        """Number of free parameters of the fitted model."""
        return _covariance.n_parameters(
            self.covariance_type, self.n_components, self.means_.shape[1]
        )

    def _kernel_parameters(self, dtype):
        # the mixture's mean is a good fixed centre for data it was fitted on
        shift = self.weights_ @ self.means_ / np.sum(self.weights_)
        return kernel_parameters(
            self.weights_, self.means_, self.precisions_cholesky_,
            self.covariance_type, shift, dtype,
        )

    # ------------------------------------------------------------- predict

    def _predict_input(self, X):
        check_is_fitted(self)
        if is_dask_collection(X):
            Xd, _, _ = as_dask_array(X, type(self).__name__)
            if Xd.shape[1] != self.n_features_in_:
                raise ValueError(
                    "X has %d features, but %s is expecting %d features as input."
                    % (Xd.shape[1], type(self).__name__, self.n_features_in_)
                )
            return Xd
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def _apply(self, X, func, n_columns=None, dtype=np.float64):
        """Run a per-chunk function of the fitted model over X (lazily for Dask)."""
        X = self._predict_input(X)
        kp = self._kernel_parameters(X.dtype)
        if not isinstance(X, da.Array):
            return func(X, kp)
        check_workers(collections=[X])
        kp = dask.delayed(kp, pure=True, traverse=False)
        kwargs = {"drop_axis": 1} if n_columns is None else {"chunks": (X.chunks[0], (n_columns,))}
        return da.map_blocks(
            checked_chunk_function(func), X, kp, dtype=dtype,
            meta=np.empty((0,) * (1 if n_columns is None else 2), dtype=dtype), **kwargs,
        )

    def score_samples(self, X):
        """Log-likelihood of each row of X under the model.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._apply(X, chunk_score_samples)

    def _total_log_likelihood(self, X, sample_weight=None):
        """(sum of w_i log p(x_i), sum of w_i) over the rows of X."""
        scores = self.score_samples(X)
        if sample_weight is None:
            total, n = scores.sum(), X.shape[0]
        else:
            w = sample_weight
            if isinstance(scores, da.Array):
                w = check_sample_weight(w, scores[:, None])[:, 0]
            else:
                w = np.asarray(check_sample_weight(w, da.from_array(scores[:, None])))[:, 0]
            total, n = (scores * w).sum(), w.sum()
        total, n = dask.compute(total, n)
        return float(total), float(n)

    def score(self, X, y=None, sample_weight=None):
        """Mean per-row log-likelihood of X (weighted by ``sample_weight``)."""
        total, n = self._total_log_likelihood(X, sample_weight)
        return total / n

    def predict(self, X):
        """Most probable component of each row of X (int64 labels)."""
        return self._apply(X, chunk_predict, dtype=np.int64)

    def predict_proba(self, X):
        """Posterior probability of each component for each row of X."""
        return self._apply(X, chunk_predict_proba, n_columns=self.n_components)

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on X; lower is better.

        With ``sample_weight``, the log-likelihood is weighted and the sample
        size is the total weight.
        """
        total, n = self._total_log_likelihood(X, sample_weight)
        return -2 * total + self._n_parameters() * math.log(n)

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on X; lower is better."""
        total, _ = self._total_log_likelihood(X, sample_weight)
        return -2 * total + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture, grouped by component.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                "Invalid value for 'n_samples': %d . The sampling requires at "
                "least one sample." % (self.n_components)
            )
        _, n_features = self.means_.shape
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_ / self.weights_.sum())
        cov = self.covariance_type
        parts = []
        for k, (mean, count) in enumerate(zip(self.means_, counts)):
            if cov in ("full", "tied"):
                sigma = self.covariances_[k] if cov == "full" else self.covariances_
                parts.append(rng.multivariate_normal(mean, sigma, int(count)))
            else:
                scale = np.sqrt(self.covariances_[k])
                parts.append(mean + rng.standard_normal(size=(count, n_features)) * scale)
        y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return np.vstack(parts), y

    def save(self, path, **metadata):
        """Write the fitted model to ``path`` in daskem's safe model format.

        No pickle is used: see :func:`daskem.load`. Extra keyword arguments
        are stored as JSON metadata (for example the training data's
        fingerprint).
        """
        from .persistence import save_model

        check_is_fitted(self)
        save_model(self, path, **metadata)

    # ------------------------------------------------------------- verbose

    def _print_verbose_msg_init_beg(self, n_init):
        if self.verbose == 1:
            print("Initialization %d" % n_init)
        elif self.verbose >= 2:
            print("Initialization %d" % n_init)

    def _print_verbose_msg_iter_end(self, n_iter, diff_ll, start):
        if n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print("  Iteration %d" % n_iter)
            elif self.verbose >= 2:
                print("  Iteration %d\t time lapse %.5fs\t ll change %.5f"
                      % (n_iter, time.perf_counter() - start, diff_ll))

    def _print_verbose_msg_init_end(self, lb, converged, start):
        word = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print("Initialization %s." % word)
        elif self.verbose >= 2:
            print("Initialization %s. time lapse %.5fs\t lower bound %.5f."
                  % (word, time.perf_counter() - start, lb))


# Persisted chunks smaller than this are merged: every chunk costs a task per
# pass, and the scheduler's cost per task would outweigh the arithmetic.
_MIN_PERSISTED_CHUNK_BYTES = 16 * 2**20
# Persisted data come in at least this many chunks where they allow it, so
# that every thread of a machine (or a few workers) has a chunk to work on.
_MIN_PERSISTED_CHUNKS = 16
# ... but chunks are not split below this size.
_MIN_SPLIT_CHUNK_BYTES = 2**20


def _chunks_for_persisting(X):
    """Re-chunk rows before persisting: few chunks are split, small ones merged.

    Data in fewer than 16 chunks are split into 16 (each at least 1 MiB):
    one chunk per pass is one task, which leaves all threads but one idle.
    Otherwise small chunks grow towards 16 MiB, but not below 16 chunks in
    all, so that the scheduler's cost per task stays small. The chunking
    depends on the data alone, not on the cluster, so fits stay
    reproducible; it changes results only by rounding (1e-10), and outputs
    of predict follow the caller's array, not this one.
    """
    row_bytes = X.shape[1] * X.dtype.itemsize
    median_rows = int(np.median(X.chunks[0]))
    even_rows = -(-X.shape[0] // _MIN_PERSISTED_CHUNKS)
    if X.numblocks[0] < _MIN_PERSISTED_CHUNKS:
        rows = max(even_rows, _MIN_SPLIT_CHUNK_BYTES // row_bytes)
        return X.rechunk({0: rows}) if rows * 1.5 < median_rows else X
    rows = max(median_rows, min(_MIN_PERSISTED_CHUNK_BYTES // row_bytes, even_rows))
    if rows <= median_rows * 1.5:
        return X
    return X.rechunk({0: rows})
