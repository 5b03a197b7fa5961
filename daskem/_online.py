"""Online (stepwise) EM: Cappe and Moulines 2009, Liang and Klein 2009.

Running statistics, normalised by the batch weight, are blended with each new
batch's statistics, s <- (1 - g_t) s + g_t s_batch with the step size
g_t = (t + t0)^-alpha (1/2 < alpha <= 1), and the M-step runs after every
batch. A batch is a group of consecutive row chunks, so each update reads
whole chunks once. The loop over batches is the engine's
(:func:`daskem._engine.fit_online`); this module holds the arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._passes import PassRequest, drive
from ._state import OnlineState


def step_size(t: int, learning_offset: float, learning_decay: float) -> float:
    """g_t = (t + t0)^-alpha for the t-th update after the first."""
    return float((t + learning_offset) ** -learning_decay)


def batch_statistics(
    X: Any, sample_weight: Any, request: PassRequest, layout: Any, holes: Any = None
) -> tuple[np.ndarray, float]:
    """Normalised statistics of one batch (one pass over it) and its weight."""

    def steps():
        return (yield request)

    (stats,) = drive(X, [steps()], sample_weight, holes=holes)
    weight = layout.unpack(stats)[4]
    return (stats / weight if weight > 0 else stats), weight


def update(
    state: OnlineState | None,
    batch_stats: np.ndarray,
    layout: Any,
    shift: np.ndarray,
    learning_offset: float,
    learning_decay: float,
) -> OnlineState:
    """Blend a batch's normalised statistics into the running ones.

    The first batch is taken whole; later ones with step g_t.
    """
    if state is None:
        return OnlineState(batch_stats, layout, 1, shift)
    g = step_size(state.n_updates, learning_offset, learning_decay)
    return OnlineState((1 - g) * state.stats + g * batch_stats, layout, state.n_updates + 1, shift)


def chunk_batches(chunks: tuple[int, ...], batch_size: int) -> list[tuple[int, int]]:
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
