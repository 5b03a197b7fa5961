"""The distributed cluster a computation runs on: its client, its workers, and a watchdog.

:func:`no_workers_watch` is the one guard of every computation daskem runs
on a cluster (fits, model selection, scores, writers, plot samples): when
the cluster has had no worker for longer than the no-workers timeout, it
cancels the computation and raises :class:`NoWorkersError`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import dask
from dask.base import get_scheduler
from dask.utils import parse_timedelta

from ._version import __version__

logger = logging.getLogger("daskem")

# The Dask configuration key of the no-workers timeout (seconds, or a string
# such as "10 minutes"; None waits for workers forever). Also set from the
# environment as DASK_DASKEM__NO_WORKERS_TIMEOUT, or from a Dask YAML file.
NO_WORKERS_TIMEOUT_KEY = "daskem.no-workers-timeout"
DEFAULT_NO_WORKERS_TIMEOUT = 300.0
# What a worker's passes import (the kernels, the passes, the initialisations).
PASS_MODULES = "daskem._initialization"
# The watchdog asks the scheduler for its workers this often (at most), so it
# stops a computation within this long (plus one scheduler round trip) after
# the timeout.
POLL_SECONDS = 2.0


def current_client(collections: list | None = None) -> Any:
    """The distributed Client that would run a computation now, or None.

    None under local schedulers, and for asynchronous clients (their calls
    return coroutines; a synchronous fit cannot run on them anyway). This
    follows Dask's own choice of scheduler, so ``dask.config.set(scheduler=
    "threads")`` inside an active client means no client.
    """
    get = get_scheduler(collections=collections)
    client = getattr(get, "__self__", None)
    if not hasattr(client, "get_versions") or getattr(client, "asynchronous", False):
        return None
    return client


def check_workers(client: Any = None, collections: list | None = None) -> None:
    """Fail fast when workers of a distributed cluster cannot run daskem's tasks.

    A worker without daskem dies on the first task that needs it, the
    scheduler hands the task to the next worker, and once none is left the
    computation waits for workers forever. Workers that join later are not
    checked.

    Parameters
    ----------
    client : distributed.Client, optional
        By default the client that would compute ``collections`` now; with
        none (local schedulers) there is nothing to check.
    collections : list, optional

    Raises
    ------
    RuntimeError
        If a worker cannot import daskem, or has another version of it
        installed than this process.
    """
    if client is None:
        client = current_client(collections)
        if client is None:
            return
    # the installed distributions' versions (None where daskem runs from PYTHONPATH)
    versions = client.get_versions(packages=["daskem"])
    ours = versions["client"]["packages"].get("daskem") or __version__
    theirs = {
        w: (v or {}).get("packages", {}).get("daskem") for w, v in versions["workers"].items()
    }
    imports = client.run(importlib.import_module, "daskem", on_error="return")
    missing = sorted(w for w, r in imports.items() if isinstance(r, ImportError))
    other = sorted(w for w, v in theirs.items() if v is not None and v != ours and w not in missing)
    problems = []
    if missing:
        problems.append(f"{len(missing)} cannot import daskem ({_some(missing)})")
    if other:
        found = ", ".join(sorted({theirs[w] for w in other}))
        problems.append(f"{len(other)} have daskem {found} installed ({_some(other)})")
    if problems:
        raise RuntimeError(
            f"Of the cluster's {len(theirs)} worker(s), {'; '.join(problems)}, while this "
            f"process runs daskem {ours}. Install daskem {ours} in the workers' "
            "environment (the same image or environment as the client's)."
        )
    if imports:
        # The modules of every pass (kernels, passes, SciPy's linear algebra), loaded now
        # rather than by a worker's first task: a worker that imports them while its first
        # chunks are read holds several chunks at once (on 256 MiB workers, a peak of 100%).
        client.run(importlib.import_module, PASS_MODULES, workers=list(imports), on_error="return")


def _some(addresses: list[str], shown: int = 3) -> str:
    more = len(addresses) - shown
    return ", ".join(addresses[:shown]) + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------
# The no-workers watchdog
# --------------------------------------------------------------------------


class NoWorkersError(RuntimeError):
    """The cluster had no worker for longer than the no-workers timeout.

    Attributes
    ----------
    scheduler : str
        The scheduler's address.
    waited : float
        Seconds the computation waited without any worker.
    timeout : float
        The no-workers timeout, in seconds.
    """

    def __init__(self, scheduler: str, waited: float, timeout: float, reachable: bool = True):
        self.scheduler, self.waited, self.timeout, self.reachable = scheduler, waited, timeout, reachable
        where = (f"the scheduler {scheduler} had no worker" if reachable
                 else f"the scheduler {scheduler} could not be reached")
        super().__init__(
            f"{where} for {waited:.0f} s, longer than the no-workers timeout of {timeout:g} s: "
            "the computation was stopped. Start workers (or check the scheduler) and run it again; "
            "a `daskem fit --checkpoint DIR --resume` continues from its last iteration"
        )

    def __reduce__(self):
        return type(self), (self.scheduler, self.waited, self.timeout, self.reachable)


def no_workers_timeout(timeout: float | None = None) -> float:
    """The no-workers timeout in seconds: ``timeout`` if given, else the Dask config setting.

    The setting is ``daskem.no-workers-timeout`` (default 300 s); ``None``
    there, or ``math.inf``, means no timeout (wait for workers forever).
    """
    if timeout is None:
        value = dask.config.get(NO_WORKERS_TIMEOUT_KEY, DEFAULT_NO_WORKERS_TIMEOUT)
        if value is None or value is False:
            return math.inf
        # parse_timedelta knows no infinity: "inf" (a YAML or environment value) and
        # float("inf") (what the CLI sets) both mean no timeout
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity", "none"):
            return math.inf
        if isinstance(value, (int, float)) and math.isinf(value):
            return math.inf
        timeout = parse_timedelta(value, default="seconds")
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"the no-workers timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


_active = threading.local()


@contextlib.contextmanager
def no_workers_watch(timeout: float | None = None, collections: list | None = None) -> Iterator[None]:
    """Stop what runs in the block once the cluster has had no worker for ``timeout`` s.

    A no-op without a distributed client (local schedulers), with no
    timeout, and inside another watch of this thread (the outer one's
    timeout applies). Otherwise one thread shared by every watch of the
    process asks the scheduler for its workers every few seconds, the first
    time a few seconds after the block begins (a block that ends sooner asks
    nothing); once it has seen none for ``timeout`` seconds (none at the
    first look counts from the start of the block), it cancels the futures
    created since the block began, which ends the computation waiting on
    them, and the block raises
    :class:`NoWorkersError`. Workers that come back before the timeout
    reset the clock: the computation goes on. (Futures that other threads
    create on the same client meanwhile are cancelled too: with no worker
    for that long, they could not have run either.) A scheduler that does
    not answer counts as one without workers.

    Parameters
    ----------
    timeout : float, optional
        Seconds; by default :func:`no_workers_timeout` (the
        ``daskem.no-workers-timeout`` Dask setting, 300 s unless set).
    collections : list, optional
        What will be computed: the client is the one that would compute
        them (see :func:`current_client`).

    Raises
    ------
    NoWorkersError
        The cluster had no worker for longer than the timeout.
    """
    if getattr(_active, "on", False):
        yield
        return
    seconds = no_workers_timeout(timeout)
    client = current_client(collections) if math.isfinite(seconds) else None
    if client is None:
        yield
        return
    watchdog = _Watchdog(client, seconds)
    _active.on = True
    watchdog.start()
    try:
        yield
    except Exception as error:
        watchdog.stop()
        if watchdog.fired is not None:
            raise watchdog.error() from error
        raise
    finally:
        _active.on = False
        watchdog.stop()


class _Watchdog:
    """One block's watch of :func:`no_workers_watch`, polled by the shared :class:`_WatchThread`."""

    def __init__(self, client: Any, timeout: float):
        self.client, self.timeout = client, timeout
        self.interval = min(POLL_SECONDS, max(timeout / 4, 0.05))
        self.before = set(client.futures)
        self.started = time.monotonic()
        # the first look only after one interval: a block that ends sooner (most passes
        # of a fit) costs the scheduler no request and the pass no wait for its answer
        self.next_poll = self.started + self.interval
        self.fired: float | None = None  # seconds without workers when it fired
        self.reached = False
        # since when the watch has seen no worker (until a first look, since the block began)
        self._since: float | None = self.started
        self._stopped = False
        self._lock = threading.Lock()  # a cancellation and the end of the block exclude each other
        try:
            self.scheduler = client.scheduler.address
        except Exception:  # noqa: BLE001 - only for the message
            self.scheduler = "(unknown address)"

    def start(self) -> None:
        _watcher.add(self)

    def stop(self) -> None:
        """End the watch: once this returns, it cancels nothing more."""
        with self._lock:
            self._stopped = True
        _watcher.remove(self)

    def error(self) -> NoWorkersError:
        return NoWorkersError(self.scheduler, self.fired, self.timeout, self.reached)

    def _workers(self) -> int | None:
        """Workers the scheduler has now, or None when it did not answer in time."""
        try:
            n = len(self.client.nthreads(callback_timeout=max(self.interval, 1.0)))
        except Exception:  # noqa: BLE001 - an unreachable scheduler counts as no worker
            return None
        self.reached = True
        return n

    def poll(self) -> None:
        """Ask the scheduler for its workers; cancel the block's futures once past the timeout."""
        n = self._workers()
        now = time.monotonic()
        self.next_poll = now + self.interval
        if n:
            self._since = None
        elif self._since is None:
            self._since = now
        if self._since is None or now - self._since < self.timeout:
            return
        with self._lock:
            if self._stopped:
                return
            if self.fired is None:
                self.fired = now - self._since
                logger.info("no workers for %.0f s at %s: stopping the computation",
                            self.fired, self.scheduler)
            # futures of this computation, including any made after firing
            self._cancel_new()

    def _cancel_new(self) -> None:
        from distributed import Future

        keys = [k for k in list(self.client.futures) if k not in self.before]
        if not keys:
            return
        try:
            self.client.cancel([Future(k, self.client) for k in keys],
                               reason="no-workers-timeout",
                               msg=f"no worker for longer than {self.timeout:g} s")
        except Exception:  # noqa: BLE001 - the client may be closing; the block raises anyway
            pass


class _WatchThread:
    """One thread that polls every open watch of the process when it is due.

    Starting a thread per watch cost a pass 4-6 ms on 2 worker processes (the
    new thread waits for the GIL while the client's event loop holds it);
    adding a watch to a running thread costs a notification.
    """

    def __init__(self) -> None:
        self._watches: set[_Watchdog] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watchdog) -> None:
        with self._changed:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="daskem-no-workers-watch",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def remove(self, watch: _Watchdog) -> None:
        with self._changed:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [w for w in self._watches if w.next_poll <= now]
                if not due:
                    wait = min((w.next_poll for w in self._watches), default=now + 3600.0) - now
                    self._changed.wait(wait)
                    continue
            # outside the lock: a poll waits up to a second for the scheduler
            for watch in due:
                try:
                    watch.poll()
                except Exception:  # noqa: BLE001 - one watch's failure must not end the others'
                    logger.debug("the no-workers watch of %s failed", watch.scheduler, exc_info=True)
                    watch.next_poll = time.monotonic() + watch.interval


_watcher = _WatchThread()


def _new_watch_thread() -> None:
    global _watcher
    _watcher = _WatchThread()


# a forked child has no watch thread, and its locks may have been held at the fork
os.register_at_fork(after_in_child=_new_watch_thread)
