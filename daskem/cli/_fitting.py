"""Fitting from the command line: the engine's fit with the progress display."""

from typing import Any, Callable, Optional

from ._report import Reporter


def fit_with_progress(est: Any, X: Any, reporter: Reporter, sample_weight: Any = None,
                      resume: Any = None, save_state: Optional[Callable[[Any], None]] = None) -> None:
    """Fit ``est`` to ``X``, reporting every initialisation and iteration on ``reporter``.

    ``save_state`` gets the EM state after every iteration (the checkpoint of ``fit``);
    ``resume`` is a saved state to continue from. The progress display is closed on the
    way out, whatever happens.
    """
    from .._engine import fit

    def on_state(s):
        if not s.seconds:
            reporter.on_init(s.init)
        if save_state is not None:
            save_state(s)

    def on_iteration(n_iter, lower_bound, change, parameters, seconds):
        reporter.on_iteration(n_iter, lower_bound, change, seconds)

    try:
        fit(est, X, sample_weight, on_iteration=on_iteration, on_state=on_state, resume=resume)
    finally:
        reporter.end_fit()
