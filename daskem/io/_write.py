""":func:`write_output`: the writer chosen by the target's extension."""

from __future__ import annotations

import os
import posixpath
from typing import Any, Literal

import dask.array as da
import numpy as np

from ._parquet import write_parquet
from ._zarr import write_zarr


def write_output(
    array: da.Array | np.ndarray,
    target: str | os.PathLike[str],
    format: Literal["zarr", "parquet"] | None = None,
    **kwargs: Any,
) -> None:
    """Write with :func:`write_zarr` or :func:`write_parquet`, chosen by extension.

    Parameters
    ----------
    array : dask.array.Array or numpy.ndarray
        1-D or 2-D array to write.
    target : str or os.PathLike
        Output path or URL; ``.zarr`` selects Zarr, ``.parquet`` or ``.pq``
        selects Parquet.
    format : {"zarr", "parquet"}, optional
        Overrides the extension.
    **kwargs
        Passed to the writer (``storage_options``, ``overwrite``, ``name`` for
        Zarr, ``columns`` for Parquet).
    """
    if format is None:
        ext = posixpath.splitext(os.fspath(target).rstrip("/"))[1].lower()
        format = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}.get(ext)
        if format is None:
            raise ValueError(
                f"cannot tell the output format of {os.fspath(target)!r}: use a .zarr, .parquet or .pq "
                "target, or pass format='zarr' or format='parquet'"
            )
    if format == "zarr":
        return write_zarr(array, target, **kwargs)
    if format == "parquet":
        return write_parquet(array, target, **kwargs)
    raise ValueError(f"format must be 'zarr' or 'parquet', got {format!r}")
