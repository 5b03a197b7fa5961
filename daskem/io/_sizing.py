"""Row chunk sizes that follow the cluster: the rule, its log line and its warning.

The rule (README "Data in, results out", deploy/README "Sizing"): with a
distributed client whose workers have memory limits, a chunk is

    min(128 MiB, max(1 MiB, M / 32))

where M is the smallest memory per thread of the workers (each worker's
memory limit divided by its threads). Per thread, a pass holds about its
chunk (the validation pass), twice its chunk (the statistics of an EM pass,
the next chunk read ahead included) or 1.8 times its chunk (predictions and
their writes), plus fixed row blocks of a few MiB: at most
:data:`TASK_MEMORY_MULTIPLE` times (benchmarks/MEMORY.md). So the chunks in
flight take under a tenth of a worker's memory, leaving the rest to the
worker process itself (:data:`WORKER_PROCESS_BYTES`) and to Dask's spill and
pause thresholds. Without a client, with one whose cluster has no worker yet
(a Slurm or Kubernetes job still pending), or whose workers have no memory
limit, the default of 128 MiB applies. The choice is logged (logger
``daskem``, INFO).

Chunks too large for some worker, that is whose tasks (``TASK_MEMORY_MULTIPLE``
chunks per thread) would not fit in its memory limit beside the worker
process, get a :class:`ChunkSizeWarning` naming the sizes: an explicit
``chunks=``, or stored chunks, shards or Dask chunks that large.
"""

from __future__ import annotations

import inspect
import logging
import typing
import warnings
from typing import Any

from dask.utils import format_bytes

from .._cluster import current_client

logger = logging.getLogger("daskem")

MiB = 2**20
# The default chunk size, and the largest the rule picks.
DEFAULT_CHUNK_BYTES = 128 * MiB
# The smallest chunk the rule picks: below it the scheduler's cost per task dominates.
MIN_CHUNK_BYTES = 1 * MiB
# A chunk is a worker's memory per thread over this.
MEMORY_PER_THREAD_PER_CHUNK = 32
# What a pass holds at most per thread, in chunks, besides fixed row blocks
# (measured in benchmarks/MEMORY.md: 1x, 2x and 1.8x).
TASK_MEMORY_MULTIPLE = 3
# A worker process with daskem's kernels, Dask's arrays and Zarr loaded, before
# any data (measured 180 to 193 MiB, benchmarks/MEMORY.md).
WORKER_PROCESS_BYTES = 192 * MiB


class ChunkSizeWarning(UserWarning):
    """Row chunks too large for the memory of the cluster's workers."""


class WorkerMemory(typing.NamedTuple):
    """What the cluster's workers allow: the rule's input and the largest chunk that fits.

    ``per_thread`` is None without a distributed client, without workers, or
    when no worker has a memory limit; ``where`` then says which.
    """

    per_thread: float | None
    where: str
    fits: float | None = None
    fits_where: str = ""


def _workers(client: Any) -> dict:
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # distributed releases before n_workers= existed
        return client.scheduler_info()["workers"]


def _describe(limit: float, threads: int, n_workers: int) -> str:
    return (f"{format_bytes(limit)} memory limit / {threads} thread(s) of the smallest of "
            f"{n_workers} worker(s)")


def worker_memory(client: Any = None) -> WorkerMemory:
    """The memory of the cluster's workers that chunk sizes follow (one scheduler call)."""
    client = client if client is not None else current_client()
    if client is None:
        return WorkerMemory(None, "no distributed client")
    try:
        workers = _workers(client)
    except Exception as e:  # noqa: BLE001 - sizing must not fail a read
        return WorkerMemory(None, f"the cluster's workers could not be listed ({type(e).__name__})")
    if not workers:
        return WorkerMemory(None, "the cluster has no workers yet")
    limited = [(w.get("memory_limit") or 0, max(int(w.get("nthreads") or 1), 1)) for w in workers.values()]
    limited = [(limit, threads) for limit, threads in limited if limit > 0]
    if not limited:
        return WorkerMemory(None, "the cluster's workers have no memory limit")
    limit, threads = min(limited, key=lambda lt: lt[0] / lt[1])
    tight, tight_threads = min(limited, key=lambda lt: (lt[0] - WORKER_PROCESS_BYTES) / lt[1])
    fits = max(tight - WORKER_PROCESS_BYTES, 0) / (TASK_MEMORY_MULTIPLE * tight_threads)
    return WorkerMemory(limit / threads, _describe(limit, threads, len(workers)),
                        fits, _describe(tight, tight_threads, len(workers)))


def memory_per_thread(client: Any = None) -> tuple[float | None, str]:
    """The smallest memory limit per thread of the cluster's workers, and where it comes from."""
    memory = worker_memory(client)
    return memory.per_thread, memory.where


def auto_chunk_bytes(client: Any = None, memory: WorkerMemory | None = None) -> tuple[int, str]:
    """The chunk size of the rule for the current cluster, and the reason (for the log).

    ``memory`` is :func:`worker_memory`'s answer, if already known.
    """
    memory = memory if memory is not None else worker_memory(client)
    if memory.per_thread is None:
        return DEFAULT_CHUNK_BYTES, f"the default {format_bytes(DEFAULT_CHUNK_BYTES)} ({memory.where})"
    share = memory.per_thread / MEMORY_PER_THREAD_PER_CHUNK
    size = int(min(DEFAULT_CHUNK_BYTES, max(MIN_CHUNK_BYTES, share)))
    rule = f"1/{MEMORY_PER_THREAD_PER_CHUNK} of the {memory.where}"
    if size < share:
        return size, f"{format_bytes(size)}, the largest ({rule} is more)"
    if size > share:
        return size, f"{format_bytes(size)}, the smallest ({rule} is less)"
    return size, f"{format_bytes(size)}, {rule}"


def log_chunking(what: str, rows: int, row_bytes: int, reason: str) -> None:
    logger.info("row chunks of %s: %d rows (%s) per chunk, sized %s",
                what, rows, format_bytes(rows * row_bytes), reason)


def warn_if_too_large(
    chunk_bytes: float, what: str, cause: str, client: Any = None, memory: WorkerMemory | None = None,
) -> bool:
    """Warn when chunks of ``chunk_bytes`` are too large for the workers; True if it warned.

    ``cause`` says where the size comes from (``"chunks=1000000"``, ``"its
    stored chunks"``), for the message; ``memory`` is :func:`worker_memory`'s
    answer, if already known.
    """
    memory = memory if memory is not None else worker_memory(client)
    if memory.fits is None or chunk_bytes <= memory.fits:
        return False
    suggested, _ = auto_chunk_bytes(memory=memory)
    warnings.warn(
        f"row chunks of {format_bytes(int(chunk_bytes))} for {what} ({cause}) are too large for the "
        f"cluster's workers: {memory.fits_where}, and a pass holds up to {TASK_MEMORY_MULTIPLE} times "
        f"its chunk per thread beside the worker process itself (about "
        f"{format_bytes(WORKER_PROCESS_BYTES)}). Chunks of at most {format_bytes(int(memory.fits))} fit "
        f"(read() picks {format_bytes(suggested)} by default); workers may pass their memory limit "
        "and be restarted.",
        ChunkSizeWarning,
        stacklevel=_outside_daskem(),
    )
    return True


def _outside_daskem() -> int:
    """The stack level of the first caller outside daskem (where a warning should point)."""
    level, frame = 0, inspect.currentframe()  # level 0: this frame, 1: the warning's caller
    while frame is not None and frame.f_globals.get("__name__", "").startswith("daskem"):
        level, frame = level + 1, frame.f_back
    return level
