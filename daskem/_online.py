"""Online (stepwise) EM: Cappe and Moulines 2009, Liang and Klein 2009.

Running statistics, normalised by the batch weight, are blended with each new
batch's statistics, s <- (1 - g_t) s + g_t s_batch with the step size
g_t = (t + t0)^-alpha (1/2 < alpha <= 1), and the M-step runs after every
batch. A batch is a group of consecutive row chunks, so each update reads
whole chunks once.
"""

import dataclasses

import numpy as np

from ._em import m_step, statistics_request
from ._passes import drive


@dataclasses.dataclass
class OnlineState:
    """Running normalised statistics and the number of updates made."""

    stats: np.ndarray
    layout: object
    n_updates: int


def step_size(t, learning_offset, learning_decay):
    """g_t = (t + t0)^-alpha for the t-th update after the first."""
    return float((t + learning_offset) ** -learning_decay)


def batch_statistics(X, sample_weight, parameters, covariance_type, shift):
    """Normalised statistics of one batch under ``parameters``, and its weight."""
    request, layout = statistics_request(parameters, covariance_type, shift, X.dtype)

    def steps():
        return (yield request)

    (stats,) = drive(X, [steps()], sample_weight)
    weight = layout.unpack(stats)[4]
    return stats / weight, layout, weight


def update(state, batch_stats, layout, learning_offset, learning_decay):
    """Blend a batch's normalised statistics into the running ones.

    The first batch is taken whole; later ones with step g_t.
    """
    if state is None:
        return OnlineState(batch_stats, layout, 1)
    g = step_size(state.n_updates, learning_offset, learning_decay)
    return OnlineState((1 - g) * state.stats + g * batch_stats, layout, state.n_updates + 1)


def online_parameters(state, shift, reg_covar, dtype):
    """The M-step from the running statistics."""
    return m_step(
        state.stats, state.layout, shift, reg_covar, np.finfo(dtype).eps,
        np.dtype(dtype) == np.float32,
    )


def chunk_batches(chunks, batch_size):
    """Group consecutive row chunks into batches of at least ``batch_size`` rows.

    Returns a list of (first_chunk, stop_chunk) pairs.
    """
    batches, first, rows = [], 0, 0
    for i, c in enumerate(chunks):
        rows += c
        if rows >= batch_size:
            batches.append((first, i + 1))
            first, rows = i + 1, 0
    if first < len(chunks):
        if batches and rows < batch_size / 2:
            batches[-1] = (batches[-1][0], len(chunks))
        else:
            batches.append((first, len(chunks)))
    return batches
