"""The data cache policy: whether to persist the data before fitting, and how.

:func:`cache_data` is the one entry point for estimators: it applies
:func:`cache_decision`, logs the reason, and re-chunks persisted data with
:func:`chunks_for_persisting`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Literal

import dask.array as da
import numpy as np
from dask.utils import format_bytes

from .._cluster import current_client
from ._sizing import WORKER_PROCESS_BYTES, auto_chunk_bytes

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger("daskem")

# Persisted chunks smaller than this are merged: every chunk costs a task per
# pass, and the scheduler's cost per task would outweigh the arithmetic.
MIN_PERSISTED_CHUNK_BYTES = 16 * 2**20
# Persisted data come in at least this many chunks where they allow it, so
# that every thread of a machine (or a few workers) has a chunk to work on.
MIN_PERSISTED_CHUNKS = 16
# ... but chunks are not split below this size.
MIN_SPLIT_CHUNK_BYTES = 2**20


def _in_memory(X: da.Array) -> bool:
    """True when every task of X's graph is data already in memory.

    This approximates "the graph does no I/O": chunks of an array made from
    NumPy, or of an array already persisted (locally: NumPy chunks; on a
    cluster: futures). A memmap counts as disk, not memory.
    """
    from distributed import Future

    for value in X.__dask_graph__().values():
        if type(value).__name__ == "DataNode":  # dask's wrapper for literal data
            value = value.value
        if isinstance(value, Future):
            continue
        if isinstance(value, np.ndarray) and not isinstance(value, np.memmap):
            continue
        return False
    return True


def cache_decision(
    X: da.Array | np.ndarray,
    cache: bool | Literal["auto"] = "auto",
    client: Client | None = None,
) -> tuple[bool, str]:
    """Decide whether to persist X in (cluster) memory before fitting.

    EM reads the data once per iteration, so keeping it in memory pays off
    whenever it fits comfortably.

    Parameters
    ----------
    X : dask.array.Array or numpy.ndarray
        The data, as returned by :func:`read`.
    cache : {"auto", True, False}
        True or False forces the decision. ``"auto"`` persists when X is
        already in memory (persisting is then free) or when ``X.nbytes`` is at
        most half of the memory available to the computation:

        * with a distributed client (`client`, or the current default client),
          the sum of the workers' memory limits, less the worker processes
          themselves (:data:`daskem.io._sizing.WORKER_PROCESS_BYTES`, 192 MiB
          each, which small workers cannot spare: workers of 384 MiB or less
          never persist); a worker without a limit (``memory_limit == 0``)
          makes it the total memory of this machine;
        * without a client, the available memory of this machine.
    client : distributed.Client, optional
        The client the computation will run on.

    Returns
    -------
    persist : bool
        Whether to persist X.
    reason : str
        One line explaining the decision, for logging.
    """
    if cache is True or cache is False:
        return cache, f"forced by cache={cache}"
    if not (isinstance(cache, str) and cache == "auto"):
        raise ValueError(f"cache must be 'auto', True or False, got {cache!r}")
    if not isinstance(X, da.Array):
        return True, "auto: data is a NumPy array already in memory, so persisting is free"

    nbytes = X.nbytes
    if math.isnan(nbytes):
        return False, "auto: data size is unknown (unknown chunk sizes), not persisting"
    if _in_memory(X):
        return True, "auto: data is already in memory (NumPy-backed or persisted), so persisting is free"

    import psutil

    client = client if client is not None else current_client(collections=[X])
    if client is not None:
        try:
            workers = client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # distributed releases before n_workers= existed
            workers = client.scheduler_info()["workers"]
        limits = [w.get("memory_limit") or 0 for w in workers.values()]
        if not limits:
            return False, "auto: the cluster has no workers yet, so its memory is unknown; not persisting"
        if 0 in limits:
            budget = psutil.virtual_memory().total
            where = "total memory of this machine; some workers have no memory limit"
        else:
            # half of each worker's limit, less the worker process itself
            room = sum(max(0, limit / 2 - WORKER_PROCESS_BYTES) for limit in limits)
            persist = nbytes <= room
            return persist, (
                f"auto: data size {format_bytes(nbytes)} is {'at most' if persist else 'more than'} "
                f"{format_bytes(room)}: half of {format_bytes(sum(limits))} (memory limit of "
                f"{len(limits)} worker(s)) less {format_bytes(WORKER_PROCESS_BYTES)} per worker process"
            )
    else:
        budget = psutil.virtual_memory().available
        where = "available memory of this machine"

    persist = nbytes <= budget / 2
    return persist, (
        f"auto: data size {format_bytes(nbytes)} is {'at most' if persist else 'more than'} "
        f"half of {format_bytes(budget)} ({where})"
    )


def chunks_for_persisting(X: da.Array, max_chunk_bytes: float | None = None) -> da.Array:
    """Re-chunk rows before persisting: few chunks are split, small ones merged.

    Data in fewer than 16 chunks are split into 16 (each at least 1 MiB):
    one chunk per pass is one task, which leaves all threads but one idle.
    Otherwise small chunks grow towards 16 MiB, but not below 16 chunks in
    all, so that the scheduler's cost per task stays small, and not beyond
    ``max_chunk_bytes`` (by default the chunk size of read()'s rule for the
    active cluster, :func:`daskem.io.auto_chunk_bytes`, which is 16 MiB or
    more unless workers have under 512 MiB per thread). So the chunking
    depends on the data alone, except on such small workers; it changes
    results only by rounding (1e-10), and outputs of predict follow the
    caller's array, not this one.
    """
    if max_chunk_bytes is None:
        max_chunk_bytes, _ = auto_chunk_bytes()
    row_bytes = X.shape[1] * X.dtype.itemsize
    median_rows = int(np.median(X.chunks[0]))
    even_rows = -(-X.shape[0] // MIN_PERSISTED_CHUNKS)
    if X.numblocks[0] < MIN_PERSISTED_CHUNKS:
        rows = max(even_rows, MIN_SPLIT_CHUNK_BYTES // row_bytes)
        return X.rechunk({0: rows}) if rows * 1.5 < median_rows else X
    merged = min(MIN_PERSISTED_CHUNK_BYTES, max_chunk_bytes)
    rows = max(median_rows, min(int(merged // row_bytes), even_rows))
    if rows <= median_rows * 1.5:
        return X
    return X.rechunk({0: rows})


def cache_data(X: da.Array, cache: bool | Literal["auto"]) -> da.Array:
    """Persist X before fitting when the cache policy says so.

    Parameters
    ----------
    X : dask.array.Array
        The data, as returned by :func:`read`.
    cache : {"auto", True, False}
        False returns X untouched without deciding anything; otherwise see
        :func:`cache_decision`.

    Returns
    -------
    dask.array.Array
        X itself when streamed; when persisted, X re-chunked by
        :func:`chunks_for_persisting` and persisted. The decision and its
        reason are logged at INFO level on the ``"daskem"`` logger.
    """
    if cache is False:
        return X
    persist, reason = cache_decision(X, cache)
    logger.info("data cache: %s (%s)", "persisted" if persist else "streamed", reason)
    return chunks_for_persisting(X).persist() if persist else X
