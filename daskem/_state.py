"""The plain records a fit passes around: parameters, runs, resumable state, data.

They hold values only (no behaviour beyond small conveniences), so that the
engine, the model families, checkpoints and persistence can share them
without importing each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class MixtureParameters:
    """Weights, means, covariances and precision Cholesky factors (float64).

    The covariances are in the layout of the kernel that serves the model
    (scikit-learn's four types). mclust's models add their decomposition
    Sigma_k = volumes_k orientations_k diag(shapes_k) orientations_k^T, which
    the iterative M-steps continue from (None for the others).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    volumes: np.ndarray | None = None
    shapes: np.ndarray | None = None
    orientations: np.ndarray | None = None

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (self.weights, self.means, self.covariances, self.precisions_cholesky)


@dataclasses.dataclass
class BayesianParameters:
    """The variational posterior of a Bayesian Gaussian mixture, and its priors.

    The names follow scikit-learn's ``BayesianGaussianMixture`` attributes.
    ``weight_concentration`` is (K,) for the Dirichlet distribution prior and
    (2, K), the Beta parameters stacked, for the Dirichlet process;
    ``degrees_of_freedom`` is () for tied covariances. The priors are fixed
    during a fit (0-d arrays for the scalar ones).
    """

    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    weight_concentration_prior: np.ndarray
    mean_precision_prior: np.ndarray
    mean_prior: np.ndarray
    degrees_of_freedom_prior: np.ndarray
    covariance_prior: np.ndarray


# Parameter records by class name, for checkpoints (which store a record's
# fields as arrays and its class name as text).
PARAMETER_TYPES: dict[str, type] = {
    "MixtureParameters": MixtureParameters,
    "BayesianParameters": BayesianParameters,
}


@dataclasses.dataclass
class RunResult:
    """What one run (one initialisation) ends with.

    Attributes
    ----------
    parameters : dataclass
        The model family's parameter record after the last M-step.
    lower_bound : float
        Lower bound of the last iteration (-inf if none ran).
    lower_bounds, seconds : list of float
        Lower bound and wall time of each iteration.
    n_iter : int
        Iterations done.
    converged : bool
    """

    parameters: Any
    lower_bound: float
    lower_bounds: list[float]
    n_iter: int
    converged: bool
    seconds: list[float]


@dataclasses.dataclass
class FitState:
    """Everything a fit needs to resume: the current initialisation's run so far.

    Attributes
    ----------
    init : int
        Index of the current initialisation.
    rng_state : tuple
        State of the random generator after this initialisation was drawn.
    parameters : dataclass
        Parameters after the last M-step (or the initialisation).
    lower_bound : float
        Lower bound of the last iteration (-inf before the first).
    lower_bounds, seconds : list of float
        History of this initialisation's iterations.
    converged : bool
        Whether this initialisation's run has converged.
    best : RunResult or None
        Best finished initialisation so far.
    n_passes : int
        Passes over the data so far, the validation pass included.
    step_bound : float
        Accelerated EM's step bound for the cycle that starts here (1 for
        plain EM).

    With accelerated EM, ``lower_bounds`` holds the accepted bounds and
    ``seconds`` one entry per pass, so it is the longer; the number of EM
    steps is ``len(seconds)``.
    """

    init: int
    rng_state: tuple
    parameters: Any
    lower_bound: float
    lower_bounds: list[float]
    seconds: list[float]
    converged: bool
    best: RunResult | None
    n_passes: int = 0
    step_bound: float = 1.0


@dataclasses.dataclass
class OnlineState:
    """Running normalised statistics of stepwise EM, and the number of updates.

    ``shift`` is the fixed centre the statistics were computed around.
    """

    stats: np.ndarray
    layout: Any
    n_updates: int
    shift: np.ndarray


@dataclasses.dataclass
class FitData:
    """Validated data of a fit.

    Attributes
    ----------
    X : dask.array.Array (n, d)
        Row-chunked data, one chunk along the features (persisted or not).
    shift : ndarray (d,) or None
        The fixed centre subtracted before every product (the data mean).
    sample_weight : dask.array.Array (n, 1) or None
        Row weights chunked like X.
    total_weight : float or None
        Number of rows, or the sum of the weights.
    feature_names : ndarray of str or None
        Column names of DataFrame input, when all are strings.
    holes : daskem._passes.Holes or None
        How passes treat rows with missing values; None when there are none.
    """

    X: Any
    shift: np.ndarray | None
    sample_weight: Any
    total_weight: float | None
    feature_names: np.ndarray | None = None
    holes: Any = None

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype


@dataclasses.dataclass
class FitResult:
    """What a whole fit returns: the best run and what the fit cost.

    Attributes
    ----------
    best : RunResult
        The run with the best lower bound.
    n_passes : int
        Passes over the data, the validation pass and initialisation
        included (for online EM: rows read over the number of rows, rounded
        up).
    online : OnlineState or None
        The running statistics of the best online run.
    """

    best: RunResult
    n_passes: int
    online: OnlineState | None = None
