"""Atomic writing: build the output in a hidden temporary sibling, then move it in.

The naming of temporary siblings (``.{basename}.{kind}-{uuid}``) is defined
here once: :func:`temporary_sibling` makes such names, and
:func:`temporary_siblings` finds the ``tmp`` ones a writer left behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import dask
from dask.base import get_scheduler
from fsspec.core import url_to_fs

from .._cluster import no_workers_watch
from ._paths import is_local, local_path

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def _sibling_prefix(base: str, kind: str) -> str:
    """Start of the name of every `kind` temporary sibling of a file named `base`."""
    return f".{base}.{kind}-"


def temporary_sibling(path: str | os.PathLike[str], kind: str = "tmp", suffix: str = "") -> str:
    """A new hidden name next to `path`: ``.{basename}.{kind}-{uuid}{suffix}``.

    In the same folder (or bucket prefix) as `path`, so that moving it onto
    `path` stays on one filesystem (:func:`os.replace` is then atomic).

    Parameters
    ----------
    path : str or os.PathLike
        Target path: an fsspec path (``"bucket/dir/out.zarr"``) or a local
        os path, relative or absolute; a trailing ``/`` is ignored.
    kind : str, default "tmp"
        ``"tmp"`` for output being written, ``"old"`` for a previous output
        set aside while it is replaced. :func:`temporary_siblings` lists only
        the ``"tmp"`` ones.
    suffix : str, default ""
        Appended after the uuid, e.g. ``".png"`` for writers that pick the
        format from the extension.

    Returns
    -------
    str
        The sibling's path; nothing is created.
    """
    # posixpath, not os.path: fsspec paths always use "/" (and on POSIX both agree).
    path = os.fspath(path)
    path = path.rstrip("/") or path
    parent, base = posixpath.split(path)
    return posixpath.join(parent, f"{_sibling_prefix(base, kind)}{uuid.uuid4().hex}{suffix}")


def temporary_siblings(path: str | os.PathLike[str]) -> set[str]:
    """Hidden temporary siblings the atomic writers make for `path`.

    Only ``tmp`` ones, never ``old`` ones, which may hold a previous output
    being replaced.

    Parameters
    ----------
    path : str or os.PathLike
        Target path or URL, as given to a writer.

    Returns
    -------
    set of str
        Absolute paths of the existing ``.{basename}.tmp-*`` entries next to
        `path`; empty when `path` is not local (see :func:`local_path`) or its
        folder cannot be listed.
    """
    local = local_path(os.fspath(path))
    if local is None:
        return set()
    parent, base = os.path.split(os.path.abspath(local.rstrip("/")))
    prefix = _sibling_prefix(base, "tmp")
    try:
        return {os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)}
    except OSError:
        return set()


def compute(*collections: Any) -> None:
    """Compute collections; on failure, return only once no task is running.

    Dask's local scheduler raises as soon as one task fails while sibling tasks
    are still writing, and those could recreate files in a temporary path we
    have just removed. Running on our own pool and shutting it down (which
    waits for running tasks) before the error propagates avoids that. Other
    schedulers (e.g. distributed) are used as they are, so cleanup after a
    failure is best effort there.
    """
    if get_scheduler(collections=collections) is dask.threaded.get:
        n = dask.config.get("num_workers", None) or dask.threaded.CPU_COUNT
        with ThreadPoolExecutor(n) as pool:
            dask.compute(*collections, scheduler="threads", pool=pool)
    else:
        with no_workers_watch(collections=list(collections)):
            dask.compute(*collections)


def remove(fs: AbstractFileSystem, path: str) -> None:
    """Delete a file or directory tree if it exists."""
    if is_local(fs):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    elif fs.exists(path):
        fs.rm(path, recursive=True)


def rename(fs: AbstractFileSystem, src: str, dst: str) -> None:
    """Move `src` to `dst`: atomically on a local filesystem."""
    if is_local(fs):
        os.replace(src, dst)  # atomic within one filesystem
    else:
        fs.mv(src, dst, recursive=True)  # object stores: copy + delete, not atomic


def atomic_write(
    target: str | os.PathLike[str],
    storage_options: dict[str, Any] | None,
    overwrite: bool,
    write: Callable[[AbstractFileSystem, str], None],
) -> None:
    """Run ``write(fs, tmp_path)`` then move ``tmp_path`` into place at target.

    The temporary path is a hidden sibling of the target
    (``.{basename}.tmp-{uuid}``, see :func:`temporary_sibling`) so the final
    move stays on the same filesystem or bucket. If anything fails, the
    temporary path is removed and the error re-raised; an existing target is
    then left untouched. With `overwrite`, the old target is set aside, the new
    one moved in, and the old one deleted only after that move succeeded.
    """
    fs, path = url_to_fs(os.fspath(target), **(storage_options or {}))
    path = path.rstrip("/") or path
    if fs.exists(path) and not overwrite:
        raise FileExistsError(
            f"output already exists: {os.fspath(target)!r} (pass overwrite=True to replace it)"
        )
    tmp = temporary_sibling(path)
    if is_local(fs):
        os.makedirs(posixpath.dirname(path), exist_ok=True)
    try:
        write(fs, tmp)
        if fs.exists(path):
            old = temporary_sibling(path, "old")
            rename(fs, path, old)
            try:
                rename(fs, tmp, path)
            except BaseException:
                rename(fs, old, path)
                raise
            remove(fs, old)
        else:
            rename(fs, tmp, path)
    except BaseException:
        remove(fs, tmp)
        raise


def replace_local_file(
    path: str | os.PathLike[str], write: Callable[[str], None], suffix: str = ""
) -> None:
    """Write one local file atomically: ``write(tmp)``, then :func:`os.replace` onto `path`.

    Readers see the old file or the new one, never a partial file; on
    failure the temporary file is removed and the old file left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The local file to write (its folder is created if needed).
    write : callable
        ``write(tmp_path)`` writes the whole file (flushing it to disk if
        the caller wants it durable).
    suffix : str
        Ending of the temporary name, for writers that choose the format
        from it (``".png"``).
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temporary_sibling(path, suffix=suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
