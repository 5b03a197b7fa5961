"""What the command's event loops do with an error no coroutine handled.

On a loaded machine a worker's close can give up waiting for its stream to the
scheduler while the wait's timeout is still armed: the timeout fires later on a
future nobody awaits, and asyncio prints "Future exception was never retrieved"
with a TimeoutError, after the command's one line of outcome (seen in CI, where
it broke the one-line contract of a bad-input exit). It says nothing about the
command, so it goes to the debug log; every other unhandled loop error is
reported as before.
"""

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger("daskem")


def _is_abandoned_timeout(context: dict) -> bool:
    return (context.get("message") == "Future exception was never retrieved"
            and isinstance(context.get("exception"), TimeoutError))


def quiet_loop(loop: Any) -> None:
    """Send the loop's abandoned timeouts to the debug log (once per loop)."""
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_abandoned_timeouts", False):
        return  # an earlier command of this process (tests, notebooks) installed it

    def handle(loop: Any, context: dict) -> None:
        if _is_abandoned_timeout(context):
            logger.debug("abandoned timeout in distributed: %r", context)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handle.quiets_abandoned_timeouts = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handle)


class QuietLoopPlugin(WorkerPlugin):
    """Installs :func:`quiet_loop` on a worker's loop: the command's own worker
    processes write to the command's stderr."""

    name = "daskem-quiet-loop"

    def setup(self, worker: Any) -> None:
        quiet_loop(worker.loop.asyncio_loop)


def quiet_abandoned_timeouts(client: Any, own_workers: bool) -> None:
    """Quiet the client's loop and, for the command's own cluster, its workers' loops."""
    quiet_loop(client.loop.asyncio_loop)
    if own_workers:
        client.register_plugin(QuietLoopPlugin())
