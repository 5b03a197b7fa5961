"""The model-family interface: what the engine needs of a kind of mixture.

The engine (:mod:`daskem._engine`) owns everything a fit does that does not
depend on the model: validating and caching the data, the restarts, warm
start, resume, keeping the best run, convergence, passes, progress and
checkpoints. A model family supplies the rest through the small interface
below, in the spirit of scikit-learn's ``BaseMixture`` hooks:

* the E-step statistics request for the next pass, under given parameters;
* the update from the reduced statistics: new parameters and the lower
  bound of the iteration (the M-step);
* initial parameters, from the statistics of initial responsibilities or
  from values the user gave;
* the number of free parameters;
* the mapping between its parameter record and the estimator's fitted
  attributes, both ways;
* the per-chunk kernel parameters that predictions use.

A family is built from an estimator's parameters (``get_params()``), so one
estimator class maps to one family class through :mod:`daskem._registry`.
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from ._kernels import PREDICTIONS
from ._passes import PassRequest
from ._state import FitData


class MixtureFamily(abc.ABC):
    """A kind of mixture model, as the engine sees it.

    Attributes
    ----------
    n_components : int
    supports_online : bool
        Whether stepwise (online) EM applies: its M-step must accept the
        running, normalised statistics.
    """

    n_components: int
    supports_online: bool = False
    supports_criteria: bool = True
    missing: str = "raise"

    def bind(self, data: FitData) -> Generator:
        """Step generator returning the family fitted to ``data``'s fixed settings.

        Runs once per fit, before any initialisation (for data-dependent
        priors, say). The default has none: no pass, the family itself.
        """
        return self
        yield  # pragma: no cover - makes this function a generator

    @abc.abstractmethod
    def check(self, n_samples: int, n_features: int) -> None:
        """Raise the estimator's errors for data of this shape (before any pass)."""

    @abc.abstractmethod
    def statistics_request(
        self, parameters: Any, shift: np.ndarray, dtype: np.dtype
    ) -> tuple[PassRequest, Any]:
        """The E-step of one iteration: a pass request and the layout of its result."""

    @abc.abstractmethod
    def update(
        self, stats: np.ndarray, layout: Any, parameters: Any, shift: np.ndarray, dtype: np.dtype
    ) -> tuple[Any, float]:
        """The M-step from reduced statistics: (new parameters, lower bound).

        The lower bound belongs to the iteration whose E-step produced
        ``stats`` (for EM, the mean log-likelihood under ``parameters``).
        """

    def running_statistics(
        self, parameters: Any, shift: np.ndarray, lower_bound: float
    ) -> tuple[np.ndarray, Any]:
        """The normalised statistics (and their layout) whose M-step gives back ``parameters``.

        Online EM continuing a model fitted otherwise starts from them.
        Families with ``supports_online`` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support online EM")

    @abc.abstractmethod
    def initialization_steps(self, data: FitData, rng: np.random.RandomState, init: int = 0) -> Generator:
        """Step generator returning the initial parameters (see :mod:`daskem._passes`).

        ``init`` is the index of the initialisation among the fit's restarts.
        """

    @abc.abstractmethod
    def n_parameters(self, n_features: int) -> int:
        """Number of free parameters of the fitted model."""

    @abc.abstractmethod
    def attributes(self, parameters: Any, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        """The estimator's fitted attributes (``weights_``, ...) for a parameter record.

        Arrays are given in ``dtype``, the data's (scikit-learn keeps float32
        fits in float32); the record itself stays float64.
        """

    @abc.abstractmethod
    def parameters_from(self, attributes: Mapping[str, Any]) -> Any:
        """The parameter record for fitted attributes (an estimator's or a model file's).

        Raises
        ------
        ValueError
            If the arrays do not make a model of this family (shapes, values).
        """

    @property
    @abc.abstractmethod
    def parameter_attributes(self) -> tuple[str, ...]:
        """The fitted attributes that :meth:`parameters_from` needs (stored in model files)."""

    @abc.abstractmethod
    def kernel_parameters(self, parameters: Any, dtype: np.dtype, holes: bool = False) -> dict:
        """What the per-chunk prediction kernels need (see :func:`daskem._kernels.kernel_parameters`).

        ``holes``: those of the kernels for rows with missing values (families
        that take them).
        """

    def prediction_function(self, kind: str, holes: bool = False) -> Any:
        """The per-chunk function of a prediction: 'score_samples', 'predict',
        'predict_proba', 'scores' (see :func:`daskem._kernels.chunk_scores`) or
        'impute'; ``holes``: the one for rows with missing values.

        Raises
        ------
        ValueError
            Where the family does not take missing values.
        """
        if holes or kind == "impute":
            raise ValueError(f"{type(self).__name__} does not take missing values")
        return PREDICTIONS[kind]

    def to_unconstrained(self, parameters: Any) -> np.ndarray:
        """The parameters as one vector of unconstrained coordinates (for accelerated EM).

        Raises
        ------
        ValueError
            If the family does not support acceleration.
        """
        raise ValueError(f"{type(self).__name__} does not support accelerated EM")

    def from_unconstrained(self, vector: np.ndarray, like: Any) -> Any:
        """The parameter record of a vector from :meth:`to_unconstrained` (shapes as ``like``).

        Raises
        ------
        ValueError
            If the vector does not make a valid model (a covariance that is
            not positive definite, say).
        """
        raise ValueError(f"{type(self).__name__} does not support accelerated EM")

    @abc.abstractmethod
    def sample(
        self, parameters: Any, n_samples: int, rng: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` rows from the mixture, grouped by component: (X, y)."""
