"""Reading ``.npy`` files: memory-mapped, one chunk at a time."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from ._checks import check_shape, float_dtype, rows_per_chunk
from ._paths import is_local

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class _NpyRows:
    """Array-like over a .npy file that memory-maps it on every read.

    Holding only the path (not a memmap) keeps tasks small when shipped to
    distributed workers: a pickled memmap would carry the whole file.
    """

    def __init__(self, path: str) -> None:
        mm = np.load(path, mmap_mode="r")
        self.path, self.shape, self.dtype, self.ndim = path, mm.shape, mm.dtype, mm.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        # Copy so the chunk is plain memory and the mapping is released.
        return np.array(np.load(self.path, mmap_mode="r")[key])


def read_npy(
    fs: AbstractFileSystem, path: str, location: str, chunks: int | None, chunk_bytes: float
) -> da.Array:
    """A local .npy file as a row-chunked float Dask array (see :func:`daskem.io.read`)."""
    if not is_local(fs):
        raise ValueError(f".npy sources must be on the local filesystem (memory-mapped), got {location!r}")
    rows_of = _NpyRows(path)
    what = f".npy file {location!r}"
    check_shape(rows_of.shape, what)
    dtype = float_dtype(rows_of.dtype, what)
    rows = chunks or rows_per_chunk(rows_of.shape[1], dtype, chunk_bytes)
    stat = os.stat(path)
    name = "read-npy-" + tokenize(path, stat.st_size, stat.st_mtime_ns, rows)
    x = da.from_array(
        rows_of, chunks=(rows, rows_of.shape[1]), name=name, meta=np.empty((0, 0), rows_of.dtype)
    )
    return x.astype(dtype) if x.dtype != dtype else x
