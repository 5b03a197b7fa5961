"""The mixture engine: a whole fit of any model family, from data to fitted attributes.

A fit is the same for every model family (:mod:`daskem._model`):

1. :func:`daskem._fit_data.prepare_data` validates the data (one pass: finiteness and the
   column means, which become the fixed shift of every product), checks the
   sample weights and applies the cache policy (:mod:`daskem.io._cache`);
2. :func:`fit_steps` runs the restarts (``n_init``), warm start or resume,
   each initialisation followed by :func:`em_steps`, and keeps the run with
   the best lower bound; it is a step generator (:mod:`daskem._passes`), so
   that :func:`daskem.select_model` runs a whole grid of them in shared
   passes; :func:`fit_online` is the stepwise-EM counterpart;
3. :func:`fit` drives one of them alone, warns when the best run did not
   converge, and sets the estimator's fitted attributes
   (:func:`fitted_attributes`), restoring the estimator if anything fails.

Estimators call these functions; they never run a loop of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import dask
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from . import _online
from ._acceleration import CheckpointHook, squarem_steps
from ._cluster import no_workers_watch
from ._fit_data import new_tally, prepare_data, set_feature_names, weight_to_fit
from ._model import MixtureFamily
from ._passes import Holes, PassTally, drive
from ._registry import family_of
from ._state import FitData, FitResult, FitState, OnlineState, RunResult
from ._validation import as_dask_array, check_fitted_input, check_sample_weight, summarise_data

IterationHook = Callable[[int, float, float, Any, float], None]
"""``on_iteration(n_iter, lower_bound, change, parameters, seconds)`` after each iteration."""
StateHook = Callable[[FitState], None]
"""``on_state(state)`` after each initialisation and iteration, with what resuming needs."""

CONVERGENCE_MESSAGE = (
    "Best performing initialization did not converge. "
    "Try different init parameters, or increase max_iter, "
    "tol, or check for degenerate data."
)


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """The estimator parameters that steer a fit, whatever the model family.

    The names and meanings are those of :class:`daskem.GaussianMixture`.
    """

    n_init: int = 1
    max_iter: int = 100
    tol: float = 1e-3
    random_state: Any = None
    warm_start: bool = False
    verbose: int = 0
    verbose_interval: int = 10
    cache: bool | str = "auto"
    algorithm: str = "batch"
    batch_size: int | None = None
    learning_decay: float = 0.51
    learning_offset: float = 1.0
    acceleration: str | None = None
    no_workers_timeout: float | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FitSettings:
        """The settings in an estimator's ``get_params()`` (others are the family's)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: params[name] for name in names if name in params})

    @property
    def accelerated(self) -> bool:
        """Whether batch EM runs SQUAREM ('auto' does; online EM is never accelerated)."""
        return self.acceleration in ("auto", "squarem")

    def check_online(self) -> None:
        """Raise ValueError where the settings ask online EM for what only batch EM does."""
        if self.acceleration == "squarem":
            raise ValueError(
                f"acceleration={self.acceleration!r} extrapolates batch EM steps; online EM "
                "(algorithm='online', partial_fit) takes acceleration='auto' or None"
            )


@dataclasses.dataclass
class WarmStart:
    """Where a warm-started fit continues from: the fitted model and its bound."""

    parameters: Any
    lower_bound: float
    online: OnlineState | None = None


# ---------------------------------------------------------------- small rules


def has_converged(change: float, tol: float) -> bool:
    """The convergence test of every iteration: the lower bound moved less than tol."""
    return abs(change) < tol


def is_better(result: RunResult, best: RunResult | None) -> bool:
    """Whether ``result`` replaces ``best`` (a best run with bound -inf always gives way)."""
    return best is None or result.lower_bound > best.lower_bound or best.lower_bound == -np.inf


@contextlib.contextmanager
def rollback_on_failure(obj: Any) -> Iterator[None]:
    """Restore every attribute of ``obj`` if the block raises (an estimator stays as it was)."""
    previous = dict(obj.__dict__)
    try:
        yield
    except BaseException:
        obj.__dict__.clear()
        obj.__dict__.update(previous)
        raise


class _Verbose:
    """scikit-learn's ``verbose`` messages, printed to stdout."""

    def __init__(self, settings: FitSettings):
        self.level, self.interval = settings.verbose, settings.verbose_interval

    def init_begin(self, init: int) -> None:
        if self.level >= 1:
            print("Initialization %d" % init)

    def iteration(self, n_iter: int, change: float, start: float) -> None:
        if n_iter % self.interval == 0:
            if self.level == 1:
                print("  Iteration %d" % n_iter)
            elif self.level >= 2:
                print("  Iteration %d\t time lapse %.5fs\t ll change %.5f"
                      % (n_iter, time.perf_counter() - start, change))

    def init_end(self, lower_bound: float, converged: bool, start: float) -> None:
        word = "converged" if converged else "did not converge"
        if self.level == 1:
            print("Initialization %s." % word)
        elif self.level >= 2:
            print("Initialization %s. time lapse %.5fs\t lower bound %.5f."
                  % (word, time.perf_counter() - start, lower_bound))


# ------------------------------------------------------------------ batch EM


def em_steps(
    family: MixtureFamily,
    parameters: Any,
    data: FitData,
    *,
    tol: float,
    max_iter: int,
    lower_bound: float = -np.inf,
    history: tuple[list[float], list[float]] | None = None,
    on_iteration: IterationHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    step_bound: float = 1.0,
) -> Generator[Any, Any, RunResult]:
    """EM from ``parameters`` until the lower bound settles.

    Each iteration yields the family's statistics request (one pass over
    the data) and runs its update on the summed result. The E-step under
    the current parameters gives both the statistics and the lower bound
    used for the convergence test, so, as in scikit-learn, the lower bound
    of iteration t belongs to the parameters before its M-step.

    Parameters
    ----------
    family : MixtureFamily
    parameters
        The family's parameter record to start from.
    data : FitData
    tol, max_iter
        As in :class:`daskem.GaussianMixture`.
    lower_bound : float
        Bound to measure the first change against (warm start, resume).
    history : tuple of lists, optional
        ``(lower_bounds, seconds)`` of iterations already done (resuming a
        checkpointed run): counting continues after them, up to max_iter.
    on_iteration : callable, optional
        See :data:`IterationHook`.
    on_checkpoint : callable, optional
        After every iteration, with what resuming needs (see
        :data:`daskem._acceleration.CheckpointHook`).
    step_bound : float
        Unused by plain EM (the accelerated runs' state).

    Returns
    -------
    RunResult
    """
    lower_bounds, seconds = ([], []) if history is None else (list(history[0]), list(history[1]))
    converged = False
    n_iter = len(seconds)
    for n_iter in range(len(seconds) + 1, max_iter + 1):
        start = time.perf_counter()
        prev = lower_bound
        request, layout = family.statistics_request(parameters, data.shift, data.dtype)
        stats = yield request
        parameters, lower_bound = family.update(stats, layout, parameters, data.shift, data.dtype)
        lower_bounds.append(lower_bound)
        seconds.append(time.perf_counter() - start)
        change = lower_bound - prev
        converged = has_converged(change, tol)
        if on_iteration is not None:
            on_iteration(n_iter, lower_bound, change, parameters, seconds[-1])
        if on_checkpoint is not None:
            on_checkpoint(parameters, lower_bound, list(lower_bounds), list(seconds), converged, 1.0)
        if converged:
            break
    return RunResult(parameters, lower_bound, lower_bounds, n_iter, converged, seconds)


def fit_steps(
    family: MixtureFamily,
    settings: FitSettings,
    data: FitData,
    *,
    tally: PassTally,
    warm: WarmStart | None = None,
    resume: FitState | None = None,
    on_iteration: IterationHook | None = None,
    on_state: StateHook | None = None,
) -> Generator[Any, Any, FitResult]:
    """Step generator of a whole batch fit: every initialisation and its EM run.

    Runs under :func:`daskem._passes.drive`, alone (:func:`fit`) or beside
    other fits (:func:`daskem.select_model`).

    Parameters
    ----------
    family : MixtureFamily
    settings : FitSettings
    data : FitData
    tally : PassTally
        Counts this fit's passes (see :func:`new_tally`).
    warm : WarmStart, optional
        Continue from a fitted model (one run, no initialisation).
    resume : FitState, optional
        A state from ``on_state`` to continue from; with the same data and
        chunking the result equals an uninterrupted fit bit for bit.
    on_iteration, on_state : callable, optional
        See :data:`IterationHook` and :data:`StateHook`.

    Returns
    -------
    FitResult
    """
    n_init = 1 if warm is not None else settings.n_init
    rng = check_random_state(settings.random_state)
    verbose = _Verbose(settings)
    family = yield from tally.count(family.bind(data))
    best, first_init = (None, 0) if resume is None else (resume.best, resume.init)
    for init in range(first_init, n_init):
        verbose.init_begin(init)
        start = time.perf_counter()
        resuming = resume is not None and init == resume.init
        history = None
        if resuming:
            rng.set_state(resume.rng_state)
            params, lower_bound = resume.parameters, resume.lower_bound
            history = (list(resume.lower_bounds), list(resume.seconds))
        elif warm is None:
            params = yield from tally.count(family.initialization_steps(data, rng, init))
            lower_bound = -np.inf
        else:
            params, lower_bound = warm.parameters, warm.lower_bound
        state = FitState(init, rng.get_state(), params, lower_bound,
                         *(history or ([], [])), False, best, tally.passes)
        if not resuming and on_state is not None:
            on_state(state)
        if settings.max_iter == 0:
            best = RunResult(params, -np.inf, [], 0, False, [])
            continue
        if resuming and resume.converged:
            result = RunResult(params, lower_bound, list(resume.lower_bounds),
                               len(resume.seconds), True, list(resume.seconds))
        else:
            run = squarem_steps if settings.accelerated else em_steps
            extra = {"converged": has_converged} if settings.accelerated else {}
            result = yield from tally.count(run(
                family, params, data, tol=settings.tol, max_iter=settings.max_iter,
                lower_bound=lower_bound, history=history,
                step_bound=resume.step_bound if resuming else 1.0,
                on_iteration=_progress_hook(verbose, start, on_iteration),
                on_checkpoint=_checkpoint_hook(state, tally, on_state), **extra,
            ))
        verbose.init_end(result.lower_bound, result.converged, start)
        if is_better(result, best):
            best = result
    return FitResult(best, tally.passes)


def _progress_hook(verbose: _Verbose, start: float, on_iteration: IterationHook | None) -> IterationHook:
    def hook(n_iter, lower_bound, change, params, seconds):
        verbose.iteration(n_iter, change, start)
        if on_iteration is not None:
            on_iteration(n_iter, lower_bound, change, params, seconds)
    return hook


def _checkpoint_hook(state: FitState, tally: PassTally, on_state: StateHook | None):
    if on_state is None:
        return None

    def hook(params, lower_bound, lower_bounds, seconds, converged, step_bound):
        state.parameters, state.lower_bound = params, lower_bound
        state.lower_bounds, state.seconds = lower_bounds, seconds
        state.converged, state.step_bound = converged, step_bound
        state.n_passes = tally.passes
        on_state(state)
    return hook


# ----------------------------------------------------------------- online EM


def _initial_parameters(family: MixtureFamily, data: FitData, rng: np.random.RandomState,
                        tally: PassTally) -> Any:
    """Initial parameters from ``data`` (the whole data, or one batch of an online fit)."""
    steps = tally.count(family.initialization_steps(data, rng), rows=data.X.shape[0])
    (params,) = drive(data.X, [steps], data.sample_weight, holes=data.holes)
    return params


def _batch_data(X: Any, sample_weight: Any, total: float, shift: np.ndarray, holes: Holes | None,
                tally: PassTally) -> FitData | None:
    """One batch of an online fit, of rows or weights summing to ``total``, as data to
    initialise from; None when no row of it carries weight.

    With missing values the batch's usable weight (its complete rows under
    missing='drop', its rows with an observed value under 'marginalize') is
    known only from a look at its values: one pass over the batch.
    """
    if holes is not None:
        summary = summarise_data(X, sample_weight, allow_missing=True, every_column_observed=False)
        tally.add(X.shape[0])
        total = summary.complete_weight if holes.mode == "drop" else summary.observed_weight
    return FitData(X, shift, sample_weight, total, holes=holes) if total > 0 else None


def _first_batch_parameters(
    family: MixtureFamily, batch: Callable[[int], tuple[Any, Any]], totals: list[float],
    order: np.ndarray, shift: np.ndarray, rng: np.random.RandomState, tally: PassTally,
    holes: Holes | None,
) -> Any:
    """Initial parameters from the first batch in ``order`` that has a row the fit uses
    (under missing values a batch may have none; batches of zero sample weight are
    left out before). ``totals``: each batch's rows, or sum of weights."""
    for i in order:
        data = _batch_data(*batch(i), totals[i], shift, holes, tally)
        if data is not None:
            return _initial_parameters(family, data, rng, tally)
    raise ValueError("no batch has a row that carries weight: nothing to initialise from")


def continued_state(
    family: MixtureFamily, parameters: Any, shift: np.ndarray, lower_bound: float
) -> OnlineState:
    """Running statistics that continue a model fitted by batch EM: its parameters, as one update."""
    stats, layout = family.running_statistics(parameters, shift, lower_bound)
    return OnlineState(stats, layout, 1, shift)


def _online_update(
    family: MixtureFamily, settings: FitSettings, X: Any, sample_weight: Any, params: Any,
    state: OnlineState | None, shift: np.ndarray, tally: PassTally, holes: Holes | None = None,
) -> tuple[Any, OnlineState, float, float]:
    """One stepwise-EM update from a batch: (parameters, state, mean ll, batch weight).

    A batch of no weight (zero sample weights, or no complete row under
    missing='drop') carries no information and leaves the fit as it was.
    """
    request, layout = family.statistics_request(params, shift, X.dtype)
    batch_stats, weight = _online.batch_statistics(X, sample_weight, request, layout, holes)
    tally.add(X.shape[0])
    if weight <= 0:
        return params, state, 0.0, 0.0
    state = _online.update(state, batch_stats, layout, shift,
                           settings.learning_offset, settings.learning_decay)
    params, _ = family.update(state.stats, layout, params, shift, X.dtype)
    return params, state, layout.unpack(batch_stats)[3], weight


def fit_online(
    family: MixtureFamily,
    settings: FitSettings,
    data: FitData,
    *,
    tally: PassTally,
    warm: WarmStart | None = None,
    on_iteration: IterationHook | None = None,
) -> FitResult:
    """Stepwise EM over batches of whole chunks (Cappe and Moulines 2009).

    ``max_iter`` counts passes (epochs) and ``tol`` applies to the mean
    log-likelihood of a pass; batches are visited in a new random order in
    every pass. Returns the best run and the running statistics it ended with.
    """
    if not family.supports_online:
        raise ValueError(f"{type(family).__name__} does not support online EM")
    X, w = data.X, data.sample_weight
    rng = check_random_state(settings.random_state)
    verbose = _Verbose(settings)
    batches = _online.chunk_batches(X.chunks[0], settings.batch_size or X.chunks[0][0])
    if w is None:
        totals = [float(sum(X.chunks[0][lo:hi])) for lo, hi in batches]
    else:  # batches of no weight carry no information (and cannot initialise)
        totals = [float(t) for t in dask.compute(*(w.blocks[lo:hi].sum() for lo, hi in batches))]
        kept = [i for i, total in enumerate(totals) if total > 0]
        batches, totals = [batches[i] for i in kept], [totals[i] for i in kept]

    def batch(i):
        lo, hi = batches[i]
        return X.blocks[lo:hi], None if w is None else w.blocks[lo:hi]

    best, best_state = None, None
    for init in range(1 if warm is not None else settings.n_init):
        verbose.init_begin(init)
        start = time.perf_counter()
        order = rng.permutation(len(batches))
        if warm is not None:
            params, state, lower_bound = warm.parameters, warm.online, warm.lower_bound
            if state is None:
                state = continued_state(family, params, data.shift, lower_bound)
            shift = state.shift
        else:
            shift = data.shift
            params = _first_batch_parameters(family, batch, totals, order, shift, rng, tally,
                                             data.holes)
            state, lower_bound = None, -np.inf
        lower_bounds, seconds, converged, n_iter = [], [], False, 0
        for n_iter in range(1, settings.max_iter + 1):
            tick = time.perf_counter()
            if n_iter > 1:
                order = rng.permutation(len(batches))
            loglik, weight = 0.0, 0.0
            for i in order:
                params, state, batch_ll, batch_weight = _online_update(
                    family, settings, *batch(i), params, state, shift, tally, data.holes
                )
                loglik += batch_ll * batch_weight
                weight += batch_weight
            prev, lower_bound = lower_bound, loglik / weight
            lower_bounds.append(lower_bound)
            seconds.append(time.perf_counter() - tick)
            verbose.iteration(n_iter, lower_bound - prev, start)
            if on_iteration is not None:
                on_iteration(n_iter, lower_bound, lower_bound - prev, params, seconds[-1])
            if has_converged(lower_bound - prev, settings.tol):
                converged = True
                break
        result = RunResult(params, lower_bound, lower_bounds, n_iter, converged, seconds)
        verbose.init_end(lower_bound, converged, start)
        if is_better(result, best):
            best, best_state = result, state
    return FitResult(best, tally.passes, best_state)


# ------------------------------------------------------- fitted attributes


def fitted_parameters(estimator: Any, family: MixtureFamily | None = None) -> Any:
    """The parameter record of a fitted estimator, from its public attributes."""
    family = family or family_of(estimator)
    return family.parameters_from({n: getattr(estimator, n) for n in family.parameter_attributes})


def fitted_attributes(
    family: MixtureFamily, result: FitResult, data: FitData, max_iter: int
) -> dict[str, Any]:
    """Every fitted attribute of an estimator after a fit ending with ``result``."""
    best = result.best
    return {
        **family.attributes(best.parameters, data.dtype),
        "converged_": best.converged,
        "n_iter_": best.n_iter,
        "lower_bound_": best.lower_bound if max_iter > 0 else -np.inf,
        "lower_bounds_": list(best.lower_bounds),
        "iteration_seconds_": list(best.seconds),
        "n_passes_": int(result.n_passes),
        "n_features_in_": data.n_features,
        "feature_names_in_": data.feature_names,
        **({"online_state_": result.online} if family.supports_online else {}),
    }


def set_fitted(estimator: Any, attributes: Mapping[str, Any]) -> None:
    """Set fitted attributes; ``feature_names_in_=None`` removes that attribute."""
    for name, value in attributes.items():
        if name == "feature_names_in_":
            set_feature_names(estimator, value)
        else:
            setattr(estimator, name, value)


def online_state_of(estimator: Any) -> OnlineState | None:
    """The running statistics of an estimator's online fit (None after a batch fit)."""
    return getattr(estimator, "online_state_", None)


def warn_if_not_converged(result: FitResult, max_iter: int) -> None:
    """scikit-learn's ConvergenceWarning when the best run did not converge."""
    if not result.best.converged and max_iter > 0:
        warnings.warn(CONVERGENCE_MESSAGE, ConvergenceWarning, stacklevel=_outside_daskem())


def _outside_daskem() -> int:
    """The stack level of the first caller outside daskem (where a warning should point)."""
    level, frame = 2, inspect.currentframe().f_back.f_back
    while frame is not None and frame.f_globals.get("__name__", "").startswith("daskem"):
        level, frame = level + 1, frame.f_back
    return level


def _warm_start(
    estimator: Any, family: MixtureFamily, settings: FitSettings, online: OnlineState | None
) -> WarmStart | None:
    if not (settings.warm_start and hasattr(estimator, "converged_")):
        return None
    parameters = _parameters_to_continue(estimator, family, "warm_start=True",
                                         "Fit with warm_start=False to start afresh.")
    return WarmStart(parameters, estimator.lower_bound_, online)


def _parameters_to_continue(estimator: Any, family: MixtureFamily, what: str, remedy: str) -> Any:
    """The fitted parameters a fit continues from; one clear error where they no longer
    match the estimator's parameters (n_components or covariance_type changed since)."""
    try:
        return fitted_parameters(estimator, family)
    except ValueError as error:
        raise ValueError(f"{what} continues the fitted model, which does not match the "
                         f"estimator's parameters now: {error}. {remedy}") from None


def _check_warm_features(warm: WarmStart | None, data: FitData) -> None:
    if warm is None:
        return
    fitted_features = warm.parameters.means.shape[1]
    if fitted_features != data.n_features:
        raise ValueError(
            f"warm_start=True continues a model fitted on {fitted_features} features, but X has "
            f"{data.n_features} features. Fit with warm_start=False to start afresh."
        )


# ------------------------------------------------------------------ entry points


def fit(
    estimator: Any,
    X: Any,
    sample_weight: Any = None,
    *,
    on_iteration: IterationHook | None = None,
    on_state: StateHook | None = None,
    resume: FitState | None = None,
) -> FitResult:
    """Fit ``estimator`` to X and set its fitted attributes.

    The estimator's parameters choose the model family (through
    :mod:`daskem._registry`) and the fit's settings; if anything fails, the
    estimator is left exactly as it was.

    Parameters
    ----------
    estimator : a registered daskem estimator
    X : array-like, Dask array or Dask DataFrame of shape (n_samples, n_features)
    sample_weight : array-like or Dask array of shape (n_samples,), optional
    on_iteration, on_state : callable, optional
        See :data:`IterationHook` and :data:`StateHook` (batch EM only for
        ``on_state``).
    resume : FitState, optional
        Continue an interrupted batch fit from this state.

    Returns
    -------
    FitResult
    """
    estimator._validate_params()
    family = family_of(estimator)
    settings = FitSettings.from_params(estimator.get_params(deep=False))
    if settings.algorithm == "online":
        settings.check_online()
    with rollback_on_failure(estimator), no_workers_watch(settings.no_workers_timeout):
        warm = _warm_start(estimator, family, settings, online_state_of(estimator))
        data = prepare_data(estimator, X, sample_weight, family, settings.cache)
        _check_warm_features(warm, data)
        tally = new_tally(data, resume)
        if settings.algorithm == "online":
            result = fit_online(family, settings, data, tally=tally, warm=warm,
                                on_iteration=on_iteration)
        else:
            steps = fit_steps(family, settings, data, tally=tally, warm=warm, resume=resume,
                              on_iteration=on_iteration, on_state=on_state)
            (result,) = drive(data.X, [steps], data.sample_weight, holes=data.holes)
        warn_if_not_converged(result, settings.max_iter)
        set_fitted(estimator, fitted_attributes(family, result, data, settings.max_iter))
    return result


def partial_fit(estimator: Any, X: Any, sample_weight: Any = None) -> None:
    """One stepwise-EM update of ``estimator`` from a batch of rows.

    The first call on an unfitted estimator initialises it from this batch
    (with ``init_params``); each call then blends the batch's statistics
    into the running ones and runs the M-step. A model fitted by batch EM
    continues from its parameters, which count as one update, around the
    mixture's mean. On failure the estimator is left as it was.
    """
    estimator._validate_params()
    family = family_of(estimator)
    settings = FitSettings.from_params(estimator.get_params(deep=False))
    if not family.supports_online:
        raise ValueError(f"{type(estimator).__name__} does not support partial_fit")
    settings.check_online()
    online_state = online_state_of(estimator)
    with rollback_on_failure(estimator), no_workers_watch(settings.no_workers_timeout):
        first = not hasattr(estimator, "means_")
        if first:
            data = prepare_data(estimator, X, sample_weight, family, settings.cache)
            tally = new_tally(data)
            rng = check_random_state(settings.random_state)
            params = _initial_parameters(family, data, rng, tally)
            shift, previous_passes = data.shift, 0
        else:
            allow_missing = family.missing != "raise"
            Xd = check_fitted_input(estimator, X, allow_nan=allow_missing)
            if isinstance(Xd, np.ndarray):
                Xd = as_dask_array(Xd, type(estimator).__name__, allow_nan=allow_missing)[0]
            weights = check_sample_weight(sample_weight, Xd)
            # a column may be missing from one batch: the model has its parameters
            summary = summarise_data(Xd, weights, allow_missing, every_column_observed=False)
            weight_to_fit(summary, family.missing)
            params = _parameters_to_continue(estimator, family, "partial_fit",
                                             "Use a new estimator to start afresh.")
            if online_state is None:  # continuing a batch fit: the mixture's mean is near the data's
                shift = params.weights @ params.means / np.sum(params.weights)
                online_state = continued_state(family, params, shift, estimator.lower_bound_)
            shift = online_state.shift
            holes = Holes(family.missing, shift) if summary.n_missing else None
            data = FitData(Xd, None, weights, None, holes=holes)
            tally = new_tally(data)
            previous_passes = getattr(estimator, "n_passes_", 0)
        params, state, batch_ll, _ = _online_update(
            family, settings, data.X, data.sample_weight, params, online_state, shift, tally,
            data.holes,
        )
        set_fitted(estimator, {
            **family.attributes(params, data.dtype),
            "n_iter_": state.n_updates,
            "lower_bound_": batch_ll,
            "lower_bounds_": ([] if first else list(estimator.lower_bounds_)) + [batch_ll],
            "iteration_seconds_": [],
            "converged_": False,
            "n_passes_": previous_passes + tally.passes,
            "online_state_": state,
        })

