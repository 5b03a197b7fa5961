"""SQUAREM: EM accelerated by squared extrapolation (Varadhan and Roland 2008).

Let F be one EM step (one pass: the E-step at theta gives the lower bound
L(theta) and the M-step F(theta)). A cycle makes three passes:

1. at theta0: L(theta0) and theta1 = F(theta0);
2. at theta1: L(theta1) and theta2 = F(theta1);
3. r = theta1 - theta0, v = theta2 - 2 theta1 + theta0, alpha = -|r| / |v|
   clipped to [-step_bound, -1], theta' = theta0 - 2 alpha r + alpha^2 v; at
   theta': L(theta') and theta'' = F(theta').

theta'' starts the next cycle if L(theta') >= L(theta1); otherwise theta2
does (a plain EM step, so the safeguard costs one pass and never a lower
bound). EM never lowers the bound, so the accepted bounds never decrease.
The step bound starts at 1 (plain EM) and grows fourfold each time a
cycle is accepted at it, SQUAREM's own step-length control.

Extrapolation runs in unconstrained coordinates that the model family
defines (log weights, means, Cholesky factors with log diagonals), so
theta' is a valid mixture; the pass at theta' ends with an ordinary M-step,
so theta'' satisfies every constraint of the model. A theta' the family
cannot use (a covariance that is not positive definite, an M-step that
fails from its responsibilities) counts as a rejected cycle.

Every pass counts as one EM step (``n_iter``, ``max_iter``); the lower
bounds recorded are the accepted ones. Resuming from a checkpoint restarts
the cycle in progress from its theta0, which is deterministic, so a
resumed fit equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ._model import MixtureFamily
from ._state import FitData, RunResult

# the step bound's growth when a cycle is accepted at the bound (SQUAREM's mstep)
STEP_GROWTH = 4.0

CheckpointHook = Callable[[Any, float, list, list, bool, float], None]
"""``on_checkpoint(parameters, lower_bound, lower_bounds, seconds, converged, step_bound)``."""


def squarem_steps(
    family: MixtureFamily,
    parameters: Any,
    data: FitData,
    *,
    tol: float,
    max_iter: int,
    converged: Callable[[float, float], bool],
    lower_bound: float = -np.inf,
    history: tuple[list[float], list[float]] | None = None,
    step_bound: float = 1.0,
    on_iteration: Callable | None = None,
    on_checkpoint: CheckpointHook | None = None,
) -> Generator[Any, Any, RunResult]:
    """Accelerated EM from ``parameters``: a step generator like :func:`daskem._engine.em_steps`.

    Parameters
    ----------
    family : MixtureFamily
        Must provide ``to_unconstrained`` and ``from_unconstrained``.
    parameters
        theta0 of the first cycle.
    data : FitData
    tol, max_iter
        ``max_iter`` counts passes (EM steps), accepted or not.
    converged : callable
        ``converged(change, tol)``, the engine's convergence test.
    lower_bound : float
        The last accepted bound (warm start, resume).
    history : tuple of lists, optional
        ``(accepted lower bounds, seconds of every pass)`` so far.
    step_bound : float
        The step bound of the cycle to start (1 for a new run).
    on_iteration : callable, optional
        ``on_iteration(n_iter, lower_bound, change, parameters, seconds)``
        after every pass, with the latest accepted bound.
    on_checkpoint : callable, optional
        Called at the start of every cycle with what resuming needs.

    Returns
    -------
    RunResult
    """
    lower_bounds, seconds = ([], []) if history is None else (list(history[0]), list(history[1]))
    state = {"lower_bound": lower_bound, "converged": False}

    def em_pass(theta, tentative=False):
        """One pass at theta: (L(theta), F(theta)), or None for a failed tentative pass."""
        start = time.perf_counter()
        request, layout = family.statistics_request(theta, data.shift, data.dtype)
        stats = yield request
        try:
            new, bound = family.update(stats, layout, theta, data.shift, data.dtype)
        except ValueError:
            if not tentative:
                raise
            new, bound = None, -np.inf
        seconds.append(time.perf_counter() - start)
        return bound, new

    def accept(bound):
        change = bound - state["lower_bound"]
        state["lower_bound"] = bound
        lower_bounds.append(bound)
        state["converged"] = converged(change, tol)
        return change

    def report(change, theta):
        if on_iteration is not None:
            on_iteration(len(seconds), state["lower_bound"], change, theta, seconds[-1])

    theta0 = parameters
    latest = parameters  # F of the last accepted point: what the run returns
    first = True
    while len(seconds) < max_iter:
        # the caller holds the state this call started from; later cycles are new states
        if on_checkpoint is not None and not first:
            on_checkpoint(theta0, state["lower_bound"], list(lower_bounds), list(seconds), False, step_bound)
        first = False
        bound0, theta1 = yield from em_pass(theta0)
        latest = theta1
        report(accept(bound0), theta1)
        if state["converged"] or len(seconds) >= max_iter:
            break
        bound1, theta2 = yield from em_pass(theta1)
        latest = theta2
        report(accept(bound1), theta2)
        if state["converged"] or len(seconds) >= max_iter:
            break
        x0, x1, x2 = (family.to_unconstrained(t) for t in (theta0, theta1, theta2))
        r, v = x1 - x0, x2 - 2.0 * x1 + x0
        norm_v = float(np.linalg.norm(v))
        alpha = -float(np.linalg.norm(r)) / norm_v if norm_v > 0 else -1.0
        alpha = min(-1.0, max(-step_bound, alpha))
        extrapolated = None
        if alpha < -1.0:
            try:
                extrapolated = family.from_unconstrained(x0 - 2.0 * alpha * r + alpha**2 * v, theta0)
            except ValueError:  # not a valid mixture: fall back to the EM step
                extrapolated = None
        if extrapolated is None:
            if alpha == -1.0 == -step_bound:  # at the bound 1 "extrapolating" gives the EM step
                step_bound *= STEP_GROWTH
            theta0 = theta2
            continue
        bound_x, theta_x = yield from em_pass(extrapolated, tentative=True)
        if theta_x is not None and bound_x >= bound1:
            latest = theta_x
            report(accept(bound_x), theta_x)
            if state["converged"]:
                break
            if alpha == -step_bound:
                step_bound *= STEP_GROWTH
            theta0 = theta_x
        else:
            report(0.0, theta2)
            theta0 = theta2
    return RunResult(latest, state["lower_bound"], lower_bounds, len(seconds), state["converged"], seconds)
