"""Path rules: which sources are local, and the ``store.zarr::array`` suffix.

The ``::`` rule lives only here (:func:`split_array_path`); :func:`local_path`
applies the same rule, so the readers and the command line agree on what a
source names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# fsspec chains that put a local cache in front of a (remote) filesystem: the
# source is not a path of this machine even though no "://" may follow.
_CACHE_CHAINS = ("simplecache::", "filecache::")


def is_local(fs: AbstractFileSystem) -> bool:
    """Whether `fs` is the local filesystem (plain ``os`` calls then work on its paths)."""
    return isinstance(fs, LocalFileSystem)


def split_array_path(source: str, component: str | None = None) -> tuple[str, str | None]:
    """Split ``"store.zarr::array/path"`` into the store and the array path.

    The text after the last ``::`` is the array path unless it looks like a URL
    or an absolute path, because fsspec's chained URLs
    (``"simplecache::s3://..."``) use ``::`` as well.

    Parameters
    ----------
    source : str
        Path or URL, possibly ending in ``::array/path``.
    component : str, optional
        An array path given separately (``read(..., component=...)``).

    Returns
    -------
    location : str
        `source` without the array path suffix.
    component : str or None
        The array path from the suffix, else `component` as given.

    Raises
    ------
    ValueError
        `source` has an array path suffix and `component` is given too.
    """
    head, sep, tail = source.rpartition("::")
    # fsspec chained URLs ("simplecache::s3://...") also contain "::".
    if sep and tail and "://" not in tail and not tail.startswith("/"):
        if component is not None:
            raise ValueError(
                f"array path given twice: {tail!r} in the source and component={component!r}; use one"
            )
        return head, tail
    return source, component


def local_path(source: str | os.PathLike[str]) -> str | None:
    """The local filesystem path of a source, or None when it is not local.

    Parameters
    ----------
    source : str or os.PathLike
        Path or URL as given to :func:`daskem.io.read` or a writer.

    Returns
    -------
    str or None
        `source` without a leading ``file://`` and without a trailing
        ``::array/path`` (see :func:`split_array_path`); None for URLs
        (``"s3://..."``) and for ``simplecache::`` / ``filecache::`` chains.
        The path is returned as written (not made absolute), so it is a
        prefix of `source` unless ``file://`` was stripped.
    """
    source = os.fspath(source)
    if source.startswith("file://"):
        source = source[len("file://") :]
    elif "://" in source or source.startswith(_CACHE_CHAINS):
        return None
    return split_array_path(source)[0]
