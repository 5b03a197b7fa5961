""":func:`read`: any supported source as a row-chunked floating Dask array.

Paths are dispatched by format to :mod:`._zarr`, :mod:`._parquet` and
:mod:`._npy`; in-memory sources (NumPy and Dask arrays, DataFrames, xarray
DataArrays) are converted here.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
from fsspec.core import url_to_fs

from ._checks import check_shape, float_dtype, no_columns, non_numeric_error, rows_per_chunk
from ._npy import read_npy
from ._parquet import PARQUET_SUFFIXES, parquet_columns, parquet_files, read_parquet
from ._paths import split_array_path
from ._sizing import WorkerMemory, auto_chunk_bytes, log_chunking, warn_if_too_large, worker_memory
from ._zarr import is_zarr, read_zarr

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd


def read(
    source: Any,
    columns: Iterable[Hashable] | None = None,
    chunks: int | None = None,
    storage_options: dict[str, Any] | None = None,
    component: str | None = None,
    chunk_bytes: int | None = None,
) -> da.Array:
    """Open data as a 2-D floating Dask array chunked by rows only.

    Nothing is computed and the data are not scanned: NaN/inf checks happen
    later, when the model is fitted.

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array, DataFrame or DataArray
        Where the data are. A path or URL (local path, ``file://`` or any
        fsspec URL) may point to

        * a Zarr array, or a Zarr group holding it (see `component`);
        * a Parquet file or a directory of Parquet files;
        * a ``.npy`` file on the local filesystem (memory-mapped, read lazily
          one chunk at a time).

        In-memory sources: a NumPy array, a Dask array, a pandas or Dask
        DataFrame (numeric columns) or an xarray DataArray (2-D).
    columns : list, optional
        Columns to use, for Parquet and DataFrame sources only. By default
        all columns, which must then all be numeric.
    chunks : int, optional
        Rows per chunk. For Zarr it is rounded to a whole number of stored
        chunks (shards when sharded), for Parquet chunks are made of whole row
        groups. By default chunks are sized to at most `chunk_bytes` (and at
        least one stored chunk or row group), except that a Dask array keeps
        its row chunks (unless they exceed `chunk_bytes` once its column
        blocks are merged). Chunks too large for the workers of the active
        distributed client get a :class:`~daskem.io.ChunkSizeWarning`.
    storage_options : dict, optional
        Passed to fsspec (and Zarr) for URLs.
    component : str, optional
        Path of the array inside a Zarr group, e.g. ``"features/X"``. Can also
        be given as a suffix of the source: ``"store.zarr::features/X"``.
        Without it, a group holding exactly one 2-D array uses that array.
    chunk_bytes : int, optional
        Largest size of one chunk (as floats) when `chunks` is not given. By
        default it follows the cluster: with an active distributed client,
        1/32 of the smallest memory limit per thread of its workers, between
        1 MiB and 128 MiB; without a client, or before its cluster has
        workers with memory limits, 128 MiB. The choice is logged (logger
        ``daskem``, INFO).

    Returns
    -------
    dask.array.Array
        Shape ``(n_samples, n_features)``, dtype float32 (for float32 and
        float16 data) or float64 (everything else: other floats, integers and
        booleans), exactly one chunk along axis 1 and known chunk sizes.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    TypeError
        Unknown source type, or non-numeric data or columns.
    ValueError
        Not 2-D, empty, a missing column or Zarr array, or a path whose
        format cannot be recognised.

    Notes
    -----
    Known chunk sizes sometimes cost a pass: over a Dask array with unknown
    chunk sizes, and over a Dask DataFrame whose partition lengths are not
    known. Zarr, Parquet (footers only) and .npy sources need no pass.
    """
    if chunks is not None and (
        not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1
    ):
        raise ValueError(f"chunks must be a positive number of rows, got {chunks!r}")
    if chunk_bytes is not None and not chunk_bytes > 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
    memory = worker_memory()  # of the active distributed client's workers, if any
    reason = None
    if chunks is None and chunk_bytes is None:
        chunk_bytes, reason = auto_chunk_bytes(memory=memory)
    x = _read(source, columns, chunks, storage_options, component, chunk_bytes)
    _check_chunking(x, source, chunks, chunk_bytes, reason, memory)
    return x


def _read(
    source: Any,
    columns: Iterable[Hashable] | None,
    chunks: int | None,
    storage_options: dict[str, Any] | None,
    component: str | None,
    chunk_bytes: float,
) -> da.Array:
    if isinstance(source, (str, os.PathLike)):
        return _read_path(os.fspath(source), columns, chunks, storage_options, component, chunk_bytes)
    if component is not None:
        raise ValueError("component= only applies to Zarr paths")

    # Look types up in sys.modules: a DataFrame or DataArray can only exist if its
    # library is already imported, so read() never pays for importing them.
    xr = sys.modules.get("xarray")
    if xr is not None and isinstance(source, xr.DataArray):
        no_columns(columns, "an xarray DataArray")
        return _from_array_like(source.data, chunks, chunk_bytes, "xarray DataArray")
    if xr is not None and isinstance(source, xr.Dataset):
        raise TypeError("got an xarray Dataset; pass one of its variables (a DataArray) instead")

    dd = sys.modules.get("dask.dataframe")
    if dd is not None and isinstance(source, dd.DataFrame):
        return _from_dask_frame(source, columns, chunks, chunk_bytes)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(source, pd.DataFrame):
        return _from_pandas(source, columns, chunks, chunk_bytes)
    if (dd is not None and isinstance(source, dd.Series)) or (
        pd is not None and isinstance(source, pd.Series)
    ):
        # No len(): on a Dask Series it would compute.
        raise ValueError("expected 2-D data (samples x features), got a 1-D Series; use series.to_frame()")

    if isinstance(source, (np.ndarray, da.Array)):
        no_columns(columns, "an array")
        return _from_array_like(source, chunks, chunk_bytes, type(source).__name__)
    raise TypeError(
        f"cannot read data from a {type(source).__module__}.{type(source).__qualname__}; expected a "
        "path or URL (Zarr, Parquet, .npy), a NumPy or Dask array, a pandas or Dask DataFrame, "
        "or an xarray DataArray"
    )


def _check_chunking(
    x: da.Array, source: Any, chunks: int | None, chunk_bytes: float, reason: str | None,
    memory: WorkerMemory,
) -> None:
    """Log the chunk size the rule picked; warn about chunks too large for the workers."""
    what = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__}"
    row_bytes = x.shape[1] * x.dtype.itemsize
    # Dask collections keep their own row chunks unless merging column blocks resized them
    kept = dask.is_dask_collection(source) and not (
        isinstance(source, da.Array) and source.chunks[0] != x.chunks[0]
    )
    if reason is not None and not kept:
        log_chunking(what, x.chunks[0][0], row_bytes, reason)
    if chunks is not None:
        cause = f"chunks={chunks}"
    elif reason is None:
        cause = f"chunk_bytes={chunk_bytes}"
    else:
        cause = "its stored chunks, shards, row groups or Dask chunks"
    warn_if_too_large(max(x.chunks[0]) * row_bytes, what, cause, memory=memory)


# ---- paths -------------------------------------------------------------------


def _read_path(
    source: str,
    columns: Iterable[Hashable] | None,
    chunks: int | None,
    storage_options: dict[str, Any] | None,
    component: str | None,
    chunk_bytes: float,
) -> da.Array:
    """Open a path or URL, telling the format by Zarr metadata or magic bytes."""
    kind, fs, where, location, component = _locate(source, component, storage_options)
    if kind == "zarr":
        no_columns(columns, "a Zarr array")
        return read_zarr(fs, where, location, component, chunks, storage_options, chunk_bytes)
    if kind == "parquet":
        return read_parquet(fs, where, location, columns, chunks, chunk_bytes)
    no_columns(columns, "a .npy file")
    return read_npy(fs, where, location, chunks, chunk_bytes)


def _locate(source: str, component: str | None, storage_options: dict[str, Any] | None
            ) -> tuple[str, Any, Any, str, str | None]:
    """(format, filesystem, path or Parquet files, location, Zarr component) of a path or URL."""
    location, component = split_array_path(source, component)
    fs, path = url_to_fs(location, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file or directory: {location!r}")
    if component is not None or is_zarr(fs, path):
        return "zarr", fs, path, location, component
    if fs.isdir(path):
        files = parquet_files(fs, path)
        if not files:
            raise ValueError(
                f"cannot tell the format of directory {location!r}: it holds neither Zarr metadata "
                f"nor Parquet files ({', '.join(PARQUET_SUFFIXES)})"
            )
        return "parquet", fs, files, location, None
    with fs.open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PAR1":
        return "parquet", fs, [path], location, None
    if magic == b"\x93NUMPY":
        return "npy", fs, path, location, None
    raise ValueError(f"cannot tell the format of file {location!r}: expected Parquet, .npy or Zarr")


def column_names(source: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
                 ) -> list[str] | None:
    """The names of the columns that :func:`read` reads from ``source`` by default.

    Parameters
    ----------
    source : str or os.PathLike
        A path or URL, as for :func:`read`.
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Returns
    -------
    list of str or None
        A Parquet source's columns (all but a pandas index), in order; None
        for Zarr arrays and .npy files, whose features have no names.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read`, for a missing path or an unknown format.
    """
    kind, fs, where, _, _ = _locate(os.fspath(source), None, storage_options)
    return parquet_columns(fs, where) if kind == "parquet" else None


# ---- arrays in memory or in Dask ---------------------------------------------


def _from_array_like(x: np.ndarray | da.Array, chunks: int | None, chunk_bytes: float, what: str) -> da.Array:
    """NumPy or Dask array -> row-chunked float Dask array."""
    if isinstance(x, da.Array):
        return _from_dask_array(x, chunks, chunk_bytes, what)
    check_shape(np.shape(x), what)
    dtype = float_dtype(x.dtype, what)
    # Convert in memory once: the array is already resident, and a graph made only of
    # NumPy chunks lets cache_decision see that persisting it is free.
    x = np.asarray(x, dtype=dtype)
    rows = chunks or rows_per_chunk(x.shape[1], dtype, chunk_bytes)
    return da.from_array(x, chunks=(rows, x.shape[1]))


def _from_dask_array(x: da.Array, chunks: int | None, chunk_bytes: float, what: str) -> da.Array:
    if x.ndim != 2:
        raise ValueError(f"expected 2-D data (samples x features), but {what} has shape {x.shape}")
    if any(math.isnan(c) for c in x.chunks[0]):
        # Known chunk sizes are needed to line outputs up with inputs; costs one pass.
        x = x.compute_chunk_sizes()
    check_shape(x.shape, what)
    dtype = float_dtype(x.dtype, what)
    if chunks is not None:
        x = x.rechunk({0: chunks, 1: -1})
    elif len(x.chunks[1]) > 1:
        # Keep the caller's row chunks unless merging column blocks makes them too big.
        if max(x.chunks[0]) * x.shape[1] * dtype.itemsize > chunk_bytes:
            x = x.rechunk({0: rows_per_chunk(x.shape[1], dtype, chunk_bytes), 1: -1})
        else:
            x = x.rechunk({1: -1})
    return x.astype(dtype) if x.dtype != dtype else x


# ---- DataFrames --------------------------------------------------------------


def _select_frame_columns(
    columns: Iterable[Hashable] | None,
    all_columns: Iterable[Hashable],
    dtypes: Mapping[Hashable, Any],
    what: str,
) -> list[Hashable]:
    """Validate requested DataFrame columns: present and numeric."""
    import pandas as pd

    if columns is None:
        columns = list(all_columns)
    else:
        columns = list(columns)
        available = set(all_columns)
        missing = [c for c in columns if c not in available]
        if missing:
            raise ValueError(f"column(s) {missing} not found in {what}; available: {list(all_columns)}")
    bad = [
        c
        for c in columns
        if not pd.api.types.is_numeric_dtype(dtypes[c]) or pd.api.types.is_complex_dtype(dtypes[c])
    ]
    if bad:
        raise non_numeric_error(what, {c: dtypes[c] for c in bad})
    if not columns:
        raise ValueError(f"{what} is empty: it has no columns")
    return columns


def _frame_dtype(dtypes: Mapping[Hashable, Any], columns: list[Hashable]) -> np.dtype:
    """Common float dtype for the selected DataFrame columns."""
    kinds = [np.dtype(getattr(dtypes[c], "numpy_dtype", dtypes[c])) for c in columns]
    return float_dtype(np.result_type(*kinds), "DataFrame")


def _from_pandas(
    df: pd.DataFrame, columns: Iterable[Hashable] | None, chunks: int | None, chunk_bytes: float
) -> da.Array:
    columns = _select_frame_columns(columns, df.columns, df.dtypes, "pandas DataFrame")
    dtype = _frame_dtype(df.dtypes, columns)
    # na_value turns nullable-dtype missing values (pd.NA) into NaN.
    x = df[columns].to_numpy(dtype=dtype, na_value=np.nan)
    return _from_array_like(x, chunks, chunk_bytes, "pandas DataFrame")


def _from_dask_frame(
    ddf: dd.DataFrame, columns: Iterable[Hashable] | None, chunks: int | None, chunk_bytes: float
) -> da.Array:
    columns = _select_frame_columns(columns, ddf.columns, ddf.dtypes, "Dask DataFrame")
    dtype = _frame_dtype(ddf.dtypes, columns)
    # lengths=True computes partition lengths so chunk sizes are known.
    x = ddf[columns].astype(dtype).to_dask_array(lengths=True)
    return _from_array_like(x, chunks, chunk_bytes, "Dask DataFrame")
