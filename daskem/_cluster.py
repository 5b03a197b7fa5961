"""The distributed cluster a computation runs on: finding its client, checking its workers."""

from __future__ import annotations

import importlib
from typing import Any

from dask.base import get_scheduler

from ._version import __version__


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


def _some(addresses: list[str], shown: int = 3) -> str:
    more = len(addresses) - shown
    return ", ".join(addresses[:shown]) + (f" and {more} more" if more > 0 else "")
