"""GaussianMixture: scikit-learn's estimator interface over daskem's mixture engine.

The class holds the parameters and their constraints; the methods it shares
with the other estimators are in :mod:`daskem._estimator`, and every one of
them hands off to the engine (:mod:`daskem._engine`: fitting) or to
:mod:`daskem._predict` (applying the fitted model). The model family it
registers (:class:`daskem._gaussian.GaussianFamily`) supplies the M-step,
initialisation and the mapping to the fitted attributes.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import Interval, StrOptions

from . import _engine, _predict
from ._estimator import MIXTURE_CONSTRAINTS, MixtureEstimator
from ._gaussian import COVARIANCE_NAMES, GaussianFamily
from ._registry import register


class GaussianMixture(MixtureEstimator):
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
    covariance_type : str, default='full'
        scikit-learn's 'full', 'tied', 'diag', 'spherical', or one of R
        mclust's 14 models: 'EII', 'VII', 'EEI', 'VEI', 'EVI', 'VVI',
        'EEE', 'VEE', 'EVE', 'VVE', 'EEV', 'VEV', 'EVV', 'VVV' (volume,
        shape and orientation each Equal, Variable or the Identity). VII,
        VVI, EEE and VVV are spherical, diag, tied and full, attributes
        included; the ten others have (K, d, d) covariances and expose their
        decomposition as ``volumes_``, ``shapes_`` and ``orientations_``.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample
        log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonals of the empirical
        covariances. mclust's models are fitted to the regularised ones, so
        that their constraints hold exactly and a constant column or a
        component on few rows leaves the M-step defined; for the models
        linear in the covariances (EII, VII, EEI, VVI, EEE, EEV, VVV) this is
        reg_covar added to every fitted covariance, as in scikit-learn.
    max_iter : int, default=100
        Number of EM iterations; 0 returns the initialisation.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {'auto', 'coreset', 'k-means||', 'kmeans', 'k-means++', \
'random', 'random_from_data', 'hc'}, default='auto'
        Initialisation. 'auto' is 'coreset' for scikit-learn's four
        covariance names; for mclust's fourteen it is 'hc' for the first
        start and 'coreset' for the restarts (see
        :meth:`daskem._gaussian.GaussianFamily.init_method`). Pass the same
        method explicitly to compare 'full' with 'VVV' (they are the same
        model). 'coreset' is k-means of a lightweight coreset (Bachem, Lucic
        and Krause 2018) in memory: up to 10,000 rows (at most 1 MiB of
        rows), half drawn by weight and half by squared distance to the
        data's mean, each weighted so that the coreset's inertia estimates
        the data's, clustered by scikit-learn's KMeans with 20 restarts (to
        tol=1e-2); one more pass assigns every row to its nearest centre.
        Two passes in all, and rows far from the bulk (a small cluster far away) are drawn
        far more often than by a uniform sample. 'k-means||' is scalable
        k-means (Bahmani et al. 2012) over the Dask array: a few passes of
        D^2 oversampling, a weighted clustering of the candidates in memory,
        and up to three Lloyd passes of counts and sums; k-means of a
        uniform sample of up to 10,000 rows (drawn in the first sampling
        pass) competes with the candidates' clustering, and the first Lloyd
        pass keeps the centres with the lower inertia over all rows. 'kmeans'
        is k-means on the whole data: the coreset's centres as seeds (one
        pass), then Lloyd passes of counts and sums to scikit-learn's
        convergence rule. 'hc' is mclust's model-based
        hierarchical clustering of a random sample of ``hc_sample_size``
        rows. The others have scikit-learn's meanings.
    weights_init, means_init, precisions_init : array-like, default=None
        User-given initial parameters, as in scikit-learn. For mclust's
        models that are not scikit-learn's types, precisions are (K, d, d)
        matrices: diagonal for EEI, VEI and EVI, multiples of the identity
        for EII.
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
    hc_sample_size : int, default=2000
        Rows clustered by ``init_params='hc'`` (mclust's ``subset``).
    missing : {'raise', 'drop', 'marginalize'}, default='raise'
        Missing values (NaN). 'raise': scikit-learn's error. 'drop': fit on
        the complete rows (the count left out is logged); predictions on
        rows with holes still raise. 'marginalize': exact EM for values
        missing at random (Ghahramani and Jordan 1994): each row's E-step
        uses the marginal density of its observed coordinates, the M-step
        the conditional moments of the missing ones; predictions, scores,
        BIC and AIC take rows with holes too. A row with no observed value
        carries no information: the fit skips it, ``score_samples`` gives
        0.0 for it, ``predict_proba`` the weights, and it counts in neither
        ``score``'s mean nor the n of BIC. Initialisation sees the holes
        filled with the column means. Infinity is an error in every mode.
    acceleration : {'auto', 'squarem', None}, default='auto'
        'squarem' extrapolates every two EM steps (SQUAREM, Varadhan and
        Roland 2008) with a safeguard that never accepts a lower bound below
        plain EM's: it reaches convergence in fewer passes (see
        benchmarks/RESULTS.md). ``n_iter_`` and ``max_iter`` count EM steps
        (one pass each), ``lower_bounds_`` holds the accepted bounds, which
        never decrease. None is plain EM, step for step scikit-learn's: use
        it to compare with scikit-learn from identical parameters. 'auto' is
        'squarem' for batch EM and plain stepwise EM for
        ``algorithm='online'`` (which 'squarem' refuses).
    no_workers_timeout : float, default=None
        Seconds the fit (and ``score``, ``bic``, ``aic``) waits while the
        cluster of the active distributed client has no worker, before it
        stops with :class:`daskem.NoWorkersError`; workers back within it let
        the fit go on. None uses the Dask setting
        ``daskem.no-workers-timeout`` (300 s unless set); ``math.inf``
        waits forever. No effect without a distributed client.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
    lower_bounds_ : list of float
    n_features_in_ : int
    n_passes_ : int
        Passes over the data the fit made, the validation pass and the
        initialisation included (online EM: rows read over the rows,
        rounded up).
    iteration_seconds_ : list of float
        Wall time of each iteration.
    online_state_ : OnlineState or None
        The running normalised statistics of online EM (``partial_fit`` or
        ``algorithm='online'``), from which ``partial_fit`` and warm starts
        continue and which model files keep; None after batch EM.
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Notes
    -----
    Empty components. A component that loses all its responsibility keeps a
    count of 10 machine epsilons (as in scikit-learn): its weight becomes
    tiny but positive, its mean moves to the centre of the data and its
    covariance to ``reg_covar * I``. No NaN is produced; with
    ``reg_covar=0`` the fit raises the ill-defined-covariance error instead.
    A diagonal or spherical variance that cancellation leaves at or below
    zero (a component holding a single row, for instance) is set to the
    rounding error of its computation, so such a component fits even with
    ``reg_covar=0``, as in scikit-learn.

    Fitted arrays keep the data's dtype (float32 data give float32
    attributes, as in scikit-learn 1.9); statistics and M-steps are float64.
    """

    _parameter_constraints: dict = {
        **MIXTURE_CONSTRAINTS,
        "covariance_type": [StrOptions(set(COVARIANCE_NAMES))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "algorithm": [StrOptions({"batch", "online"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(Real, 0.0, None, closed="left")],
        "acceleration": [StrOptions({"auto", "squarem"}), None],
        "hc_sample_size": [Interval(Integral, 2, None, closed="left")],
        "missing": [StrOptions({"raise", "drop", "marginalize"})],
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
        init_params="auto",
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
        acceleration="auto",
        no_workers_timeout=None,
        hc_sample_size=2000,
        missing="raise",
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
        self.acceleration = acceleration
        self.no_workers_timeout = no_workers_timeout
        self.hc_sample_size = hc_sample_size
        self.missing = missing

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        algorithm: str | None = None,
        batch_size: int | None = None,
    ) -> GaussianMixture:
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
        return super().fit(X, sample_weight=sample_weight)

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> GaussianMixture:
        """One stepwise-EM update from a batch of rows.

        The first call initialises the model from this batch (with
        ``init_params``); each call then blends the batch's statistics into
        the running ones with step (t + learning_offset)^-learning_decay and
        runs the M-step. A model fitted by batch EM continues from its
        parameters, which count as the first update (their running
        statistics are those their M-step gives back); a saved online model
        continues where it stopped. ``n_iter_`` counts the updates and
        ``lower_bound_`` is the mean log-likelihood of the last batch under
        the parameters before its update.

        Parameters
        ----------
        X : array-like or Dask array of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or Dask array of shape (n_samples,), optional

        Returns
        -------
        self : GaussianMixture
        """
        _engine.partial_fit(self, X, sample_weight)
        return self

    # ------------------------------------------------------------- scores

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion on X; lower is better.

        With ``sample_weight``, the log-likelihood is weighted and the sample
        size is the total weight.
        """
        return _predict.criteria(self, X, sample_weight)["bic"]

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion on X; lower is better."""
        return _predict.criteria(self, X, sample_weight)["aic"]

    def impute(self, X: Any) -> Any:
        """X with each missing value (NaN) replaced by its conditional mean under the mixture.

        A hole x_m of a row with observed values x_o becomes
        sum_k p(k | x_o) E[x_m | x_o, k]; a row with no observed value
        becomes the mixture's mean; observed values are unchanged. Lazy for
        Dask input, chunked like it; for any fitted model, whatever
        ``missing`` it was fitted with.

        Returns
        -------
        ndarray or dask.array.Array of the shape and dtype of X
        """
        return _predict.apply_kernel(self, X, "impute", n_columns="same")

    def icl(self, X: Any, sample_weight: Any = None) -> float:
        """Integrated completed likelihood on X, in scikit-learn's sign: lower is better.

        mclust's ICL (Biernacki, Celeux and Govaert 2000) negated:
        ``bic(X) - 2 sum_i log max_k p(k | x_i)``; it adds to BIC the entropy
        of the classification, so it prefers well-separated components.
        """
        return _predict.criteria(self, X, sample_weight)["icl"]

    def _n_parameters(self) -> int:
        # scikit-learn's name, for code written against it
        return _predict.n_parameters(self)


register(GaussianMixture, GaussianFamily.from_params)
