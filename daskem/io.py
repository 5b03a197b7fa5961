"""Reading input data as row-chunked Dask arrays, deciding whether to cache it,
and writing results atomically.

Every array returned by :func:`read` is 2-D, floating (float32 or float64) and
chunked by rows only: each chunk holds all features, so the EM kernels can work
on one block of whole samples at a time.

Zarr sources may name an array inside a group in two ways::

    read("data/store.zarr", component="features/X")
    read("data/store.zarr::features/X")

The suffix form also works for fsspec URLs (``"s3://bucket/store.zarr::X"``).
The text after the last ``::`` is taken as the array path unless it looks like
a URL or an absolute path, because fsspec's chained URLs
(``"simplecache::s3://..."``) use ``::`` as well.
"""

from __future__ import annotations

import math
import os
import posixpath
import shutil
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
from dask.base import get_scheduler, tokenize
from dask.utils import format_bytes, natural_sort_key
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "read",
    "cache_decision",
    "write_zarr",
    "write_parquet",
    "write_output",
]

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def read(
    source,
    columns=None,
    chunks=None,
    storage_options=None,
    component=None,
    chunk_bytes=128 * 2**20,
):
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
        groups. By default chunks are sized near `chunk_bytes`, except that a
        Dask array keeps its row chunks (unless they exceed `chunk_bytes` once
        its column blocks are merged).
    storage_options : dict, optional
        Passed to fsspec (and Zarr) for URLs.
    component : str, optional
        Path of the array inside a Zarr group, e.g. ``"features/X"``. Can also
        be given as a suffix of the source: ``"store.zarr::features/X"``.
        Without it, a group holding exactly one 2-D array uses that array.
    chunk_bytes : int, default 128 MiB
        Target size of one chunk (as floats) when `chunks` is not given.

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
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")

    if isinstance(source, (str, os.PathLike)):
        return _read_path(os.fspath(source), columns, chunks, storage_options, component, chunk_bytes)
    if component is not None:
        raise ValueError("component= only applies to Zarr paths")

    # Look types up in sys.modules: a DataFrame or DataArray can only exist if its
    # library is already imported, so read() never pays for importing them.
    xr = sys.modules.get("xarray")
    if xr is not None and isinstance(source, xr.DataArray):
        _no_columns(columns, "an xarray DataArray")
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
        _no_columns(columns, "an array")
        return _from_array_like(source, chunks, chunk_bytes, type(source).__name__)
    raise TypeError(
        f"cannot read data from a {type(source).__module__}.{type(source).__qualname__}; expected a "
        "path or URL (Zarr, Parquet, .npy), a NumPy or Dask array, a pandas or Dask DataFrame, "
        "or an xarray DataArray"
    )


def _no_columns(columns, what):
    if columns is not None:
        raise ValueError(f"columns= only applies to Parquet and DataFrame sources, not to {what}")


def _float_dtype(dtype, what):
    """The float dtype the data are converted to; TypeError for non-numeric data."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        # float16 is too imprecise for EM statistics; long double is not worth it.
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    if dtype.kind == "c":
        raise TypeError(f"{what} has complex dtype {dtype}; only integer, boolean and float data can be used")
    raise TypeError(f"{what} has non-numeric dtype {dtype}; only integer, boolean and float data can be used")


def _check_shape(shape, what):
    if len(shape) != 2:
        raise ValueError(f"expected 2-D data (samples x features), but {what} has shape {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {tuple(shape)} (need at least one row and one column)")


def _rows_per_chunk(n_features, dtype, chunk_bytes):
    return max(1, int(chunk_bytes // (n_features * np.dtype(dtype).itemsize)))


def _from_array_like(x, chunks, chunk_bytes, what):
    """NumPy or Dask array -> row-chunked float Dask array."""
    if isinstance(x, da.Array):
        return _from_dask_array(x, chunks, chunk_bytes, what)
    _check_shape(np.shape(x), what)
    dtype = _float_dtype(x.dtype, what)
    # Convert in memory once: the array is already resident, and a graph made only of
    # NumPy chunks lets cache_decision see that persisting it is free.
    x = np.asarray(x, dtype=dtype)
    rows = chunks or _rows_per_chunk(x.shape[1], dtype, chunk_bytes)
    return da.from_array(x, chunks=(rows, x.shape[1]))


def _from_dask_array(x, chunks, chunk_bytes, what):
    if x.ndim != 2:
        raise ValueError(f"expected 2-D data (samples x features), but {what} has shape {x.shape}")
    if any(math.isnan(c) for c in x.chunks[0]):
        # Known chunk sizes are needed to line outputs up with inputs; costs one pass.
        x = x.compute_chunk_sizes()
    _check_shape(x.shape, what)
    dtype = _float_dtype(x.dtype, what)
    if chunks is not None:
        x = x.rechunk({0: chunks, 1: -1})
    elif len(x.chunks[1]) > 1:
        # Keep the caller's row chunks unless merging column blocks makes them too big.
        if max(x.chunks[0]) * x.shape[1] * dtype.itemsize > chunk_bytes:
            x = x.rechunk({0: _rows_per_chunk(x.shape[1], dtype, chunk_bytes), 1: -1})
        else:
            x = x.rechunk({1: -1})
    return x.astype(dtype) if x.dtype != dtype else x


def _non_numeric_error(what, bad_types):
    """The one error for non-numeric columns (a mapping of column to its type)."""
    return TypeError(
        f"non-numeric column(s) in {what}: "
        + ", ".join(f"{c!r} ({t})" for c, t in bad_types.items())
        + "; select numeric columns with columns= (--columns on the command line)"
    )


def _select_frame_columns(columns, all_columns, dtypes, what):
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
        raise _non_numeric_error(what, {c: dtypes[c] for c in bad})
    if not columns:
        raise ValueError(f"{what} is empty: it has no columns")
    return columns


def _frame_dtype(dtypes, columns):
    """Common float dtype for the selected DataFrame columns."""
    kinds = [np.dtype(getattr(dtypes[c], "numpy_dtype", dtypes[c])) for c in columns]
    return _float_dtype(np.result_type(*kinds), "DataFrame")


def _from_pandas(df, columns, chunks, chunk_bytes):
    columns = _select_frame_columns(columns, df.columns, df.dtypes, "pandas DataFrame")
    dtype = _frame_dtype(df.dtypes, columns)
    # na_value turns nullable-dtype missing values (pd.NA) into NaN.
    x = df[columns].to_numpy(dtype=dtype, na_value=np.nan)
    return _from_array_like(x, chunks, chunk_bytes, "pandas DataFrame")


def _from_dask_frame(ddf, columns, chunks, chunk_bytes):
    columns = _select_frame_columns(columns, ddf.columns, ddf.dtypes, "Dask DataFrame")
    dtype = _frame_dtype(ddf.dtypes, columns)
    # lengths=True computes partition lengths so chunk sizes are known.
    x = ddf[columns].astype(dtype).to_dask_array(lengths=True)
    return _from_array_like(x, chunks, chunk_bytes, "Dask DataFrame")


# ---- paths -----------------------------------------------------------------


def _is_local(fs):
    return isinstance(fs, LocalFileSystem)


def _split_component(source, component):
    """Split ``"store.zarr::array/path"`` into store and component."""
    head, sep, tail = source.rpartition("::")
    # fsspec chained URLs ("simplecache::s3://...") also contain "::".
    if sep and tail and "://" not in tail and not tail.startswith("/"):
        if component is not None:
            raise ValueError(
                f"array path given twice: {tail!r} in the source and component={component!r}; use one"
            )
        return head, tail
    return source, component


def _read_path(source, columns, chunks, storage_options, component, chunk_bytes):
    location, component = _split_component(source, component)
    fs, path = url_to_fs(location, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file or directory: {location!r}")

    if component is not None or _is_zarr(fs, path):
        _no_columns(columns, "a Zarr array")
        return _read_zarr(fs, path, location, component, chunks, storage_options, chunk_bytes)
    if fs.isdir(path):
        files = _parquet_files(fs, path)
        if not files:
            raise ValueError(
                f"cannot tell the format of directory {location!r}: it holds neither Zarr metadata "
                f"nor Parquet files ({', '.join(_PARQUET_SUFFIXES)})"
            )
        return _read_parquet(fs, files, location, columns, chunks, chunk_bytes)

    with fs.open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PAR1":
        return _read_parquet(fs, [path], location, columns, chunks, chunk_bytes)
    if magic == b"\x93NUMPY":
        _no_columns(columns, "a .npy file")
        return _read_npy(fs, path, location, chunks, chunk_bytes)
    raise ValueError(f"cannot tell the format of file {location!r}: expected Parquet, .npy or Zarr")


def _is_zarr(fs, path):
    return fs.isdir(path) and any(fs.exists(f"{path}/{m}") for m in _ZARR_MARKERS)


def _zarr_arrays(group):
    """``name (shape)`` for every array in a group, for error messages."""
    import zarr

    names = [
        f"{name} {tuple(node.shape)}"
        for name, node in group.members(max_depth=None)
        if isinstance(node, zarr.Array)
    ]
    return ", ".join(sorted(names)) or "none"


def _read_zarr(fs, path, location, component, chunks, storage_options, chunk_bytes):
    import zarr

    # zarr handles local paths natively (file:// URLs are reduced to paths).
    if _is_local(fs):
        node = zarr.open(path, mode="r")
    else:
        node = zarr.open(location, mode="r", storage_options=storage_options or {})

    if isinstance(node, zarr.Array):
        if component is not None:
            raise ValueError(f"{location!r} is a Zarr array, not a group; it has no component {component!r}")
        array, what = node, f"Zarr array {location!r}"
    elif component is not None:
        try:
            array = node[component]
        except KeyError:
            raise ValueError(
                f"Zarr group {location!r} has no array {component!r}; arrays: {_zarr_arrays(node)}"
            ) from None
        if not isinstance(array, zarr.Array):
            raise ValueError(
                f"{component!r} in {location!r} is a group, not an array; arrays: {_zarr_arrays(node)}"
            )
        what = f"Zarr array {component!r} in {location!r}"
    else:
        candidates = [
            (name, a)
            for name, a in node.members(max_depth=None)
            if isinstance(a, zarr.Array) and a.ndim == 2
        ]
        if len(candidates) != 1:
            raise ValueError(
                f"Zarr group {location!r} holds {len(candidates)} 2-D arrays; choose one with "
                f"component='name' or '{location}::name'. Arrays: {_zarr_arrays(node)}"
            )
        name, array = candidates[0]
        what = f"Zarr array {name!r} in {location!r}"

    _check_shape(array.shape, what)
    dtype = _float_dtype(array.dtype, what)
    # Dask chunks must cover whole stored chunks (whole shards when sharded) so
    # no stored chunk is decoded by two tasks.
    block = (getattr(array, "shards", None) or array.chunks)[0]
    if chunks is not None:
        n_blocks = max(1, round(chunks / block))
    else:
        n_blocks = max(1, round(_rows_per_chunk(array.shape[1], dtype, chunk_bytes) / block))
    rows = min(n_blocks * block, array.shape[0])
    x = da.from_array(array, chunks=(rows, array.shape[1]))
    return x.astype(dtype) if x.dtype != dtype else x


# ---- .npy ----------------------------------------------------------------


class _NpyRows:
    """Array-like over a .npy file that memory-maps it on every read.

    Holding only the path (not a memmap) keeps tasks small when shipped to
    distributed workers: a pickled memmap would carry the whole file.
    """

    def __init__(self, path):
        mm = np.load(path, mmap_mode="r")
        self.path, self.shape, self.dtype, self.ndim = path, mm.shape, mm.dtype, mm.ndim

    def __getitem__(self, key):
        # Copy so the chunk is plain memory and the mapping is released.
        return np.array(np.load(self.path, mmap_mode="r")[key])


def _read_npy(fs, path, location, chunks, chunk_bytes):
    if not _is_local(fs):
        raise ValueError(f".npy sources must be on the local filesystem (memory-mapped), got {location!r}")
    rows_of = _NpyRows(path)
    what = f".npy file {location!r}"
    _check_shape(rows_of.shape, what)
    dtype = _float_dtype(rows_of.dtype, what)
    rows = chunks or _rows_per_chunk(rows_of.shape[1], dtype, chunk_bytes)
    stat = os.stat(path)
    name = "read-npy-" + tokenize(path, stat.st_size, stat.st_mtime_ns, rows)
    x = da.from_array(
        rows_of, chunks=(rows, rows_of.shape[1]), name=name, meta=np.empty((0, 0), rows_of.dtype)
    )
    return x.astype(dtype) if x.dtype != dtype else x


# ---- Parquet ---------------------------------------------------------------


def _parquet_files(fs, path):
    """Parquet files under a directory, in natural order (part.2 before part.10)."""
    files = [
        f
        for f in fs.find(path)
        if f.lower().endswith(_PARQUET_SUFFIXES)
        # Hidden and underscore files (_metadata, .crc, temp files) are not data.
        and not any(p.startswith((".", "_")) for p in f[len(path) :].split("/") if p)
    ]
    return sorted(files, key=natural_sort_key)


class _ParquetRows:
    """Array-like over the row groups of Parquet files, read with pyarrow.

    ``pieces`` lists ``(file, row_group, n_rows)`` in order; Dask chunk
    boundaries fall on row-group boundaries, so each read is whole row groups.
    """

    def __init__(self, fs, pieces, columns, dtype):
        self.fs, self.pieces, self.columns = fs, pieces, columns
        self.offsets = np.cumsum([0] + [n for _, _, n in pieces])
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.offsets[-1]), len(columns))
        self.ndim = 2

    def __getitem__(self, key):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        start, stop, step = rows.indices(self.shape[0])
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets, stop, side="left"))
        out = np.empty((int(self.offsets[last] - self.offsets[first]), len(self.columns)), self.dtype)
        pos, i = 0, first
        while i < last:
            # Read consecutive row groups of the same file in one call.
            j = i
            while j < last and self.pieces[j][0] == self.pieces[i][0]:
                j += 1
            with self.fs.open(self.pieces[i][0], "rb") as f:
                table = pq.ParquetFile(f).read_row_groups(
                    [rg for _, rg, _ in self.pieces[i:j]], columns=self.columns
                )
            for k, name in enumerate(self.columns):
                # Casting to float turns nulls into NaN in to_numpy.
                col = table.column(name).cast(pa.from_numpy_dtype(self.dtype))
                out[pos : pos + table.num_rows, k] = col.to_numpy()
            pos += table.num_rows
            i = j
        base = start - int(self.offsets[first])
        return out[base : base + (stop - start)][::step, cols]


def _read_parquet(fs, files, location, columns, chunks, chunk_bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Footers only: row counts per row group give known chunk sizes without reading data.
    metas = []
    for f in files:
        with fs.open(f, "rb") as fh:
            metas.append(pq.read_metadata(fh))
    schema = metas[0].schema.to_arrow_schema()
    what = f"Parquet source {location!r}"
    if columns is None:
        index_cols = (schema.pandas_metadata or {}).get("index_columns", [])
        columns = [
            n for n in schema.names if n not in index_cols and not n.startswith("__index_level_")
        ]
    else:
        columns = list(columns)
    for f, md in zip(files, metas):
        names = md.schema.to_arrow_schema().names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"column(s) {missing} not found in {what} (file {f}); available: {names}")
    types = {n: schema.field(n).type for n in columns}
    bad = [
        c
        for c, t in types.items()
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))
    ]
    if bad:
        raise _non_numeric_error(what, {c: types[c] for c in bad})
    if not columns:
        raise ValueError(f"{what} is empty: it has no columns")
    dtype = _float_dtype(np.result_type(*[t.to_pandas_dtype() for t in types.values()]), what)

    pieces = [
        (f, rg, md.row_group(rg).num_rows)
        for f, md in zip(files, metas)
        for rg in range(md.num_row_groups)
        if md.row_group(rg).num_rows > 0
    ]
    n_rows = sum(n for _, _, n in pieces)
    _check_shape((n_rows, len(columns)), what)

    # Group consecutive row groups (across files) into chunks of at most the target
    # rows; a single row group larger than that is a chunk on its own.
    target = chunks or _rows_per_chunk(len(columns), dtype, chunk_bytes)
    row_chunks, acc = [], 0
    for _, _, n in pieces:
        if acc and acc + n > target:
            row_chunks.append(acc)
            acc = 0
        acc += n
    row_chunks.append(acc)

    reader = _ParquetRows(fs, pieces, columns, dtype)
    name = "read-parquet-" + tokenize(fs.protocol, pieces, columns, str(dtype), row_chunks)
    return da.from_array(
        reader,
        chunks=(tuple(row_chunks), (len(columns),)),
        name=name,
        meta=np.empty((0, 0), dtype),
    )


# --------------------------------------------------------------------------
# Caching
# --------------------------------------------------------------------------


def _in_memory(X):
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


def _current_client():
    try:
        from distributed import default_client

        # default_client only returns an existing client; it never connects anywhere.
        return default_client()
    except (ImportError, ValueError):
        return None


def cache_decision(X, cache="auto", client=None):
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
          the sum of the workers' memory limits; a worker without a limit
          (``memory_limit == 0``) makes it the total memory of this machine;
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

    client = client if client is not None else _current_client()
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
            budget = sum(limits)
            where = f"memory limit of {len(limits)} worker(s)"
    else:
        budget = psutil.virtual_memory().available
        where = "available memory of this machine"

    persist = nbytes <= budget / 2
    return persist, (
        f"auto: data size {format_bytes(nbytes)} is {'at most' if persist else 'more than'} "
        f"half of {format_bytes(budget)} ({where})"
    )


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _compute(*collections):
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
        dask.compute(*collections)


def _remove(fs, path):
    if _is_local(fs):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    elif fs.exists(path):
        fs.rm(path, recursive=True)


def _rename(fs, src, dst):
    if _is_local(fs):
        os.replace(src, dst)  # atomic within one filesystem
    else:
        fs.mv(src, dst, recursive=True)  # object stores: copy + delete, not atomic


def _atomic_write(target, storage_options, overwrite, write):
    """Run ``write(fs, tmp_path)`` then move ``tmp_path`` into place at target.

    The temporary path is a hidden sibling of the target
    (``.{basename}.tmp-{uuid}``) so the final move stays on the same
    filesystem or bucket. If anything fails, the temporary path is removed and
    the error re-raised; an existing target is then left untouched. With
    `overwrite`, the old target is set aside, the new one moved in, and the
    old one deleted only after that move succeeded.
    """
    fs, path = url_to_fs(os.fspath(target), **(storage_options or {}))
    path = path.rstrip("/") or path
    if fs.exists(path) and not overwrite:
        raise FileExistsError(f"output already exists: {os.fspath(target)!r} (pass overwrite=True to replace it)")
    parent, base = posixpath.split(path)
    tmp = posixpath.join(parent, f".{base}.tmp-{uuid.uuid4().hex}")
    if _is_local(fs):
        os.makedirs(parent, exist_ok=True)
    try:
        write(fs, tmp)
        if fs.exists(path):
            old = posixpath.join(parent, f".{base}.old-{uuid.uuid4().hex}")
            _rename(fs, path, old)
            try:
                _rename(fs, tmp, path)
            except BaseException:
                _rename(fs, old, path)
                raise
            _remove(fs, old)
        else:
            _rename(fs, tmp, path)
    except BaseException:
        _remove(fs, tmp)
        raise


def _as_output(array):
    """A 1-D or 2-D Dask array with one chunk along axis 1."""
    x = array if isinstance(array, da.Array) else da.asarray(array)
    if x.ndim not in (1, 2):
        raise ValueError(f"can only write 1-D or 2-D arrays, got shape {x.shape}")
    if x.ndim == 2 and len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    return x


def write_zarr(array, target, storage_options=None, overwrite=False, name=None):
    """Write a Dask array to a Zarr v3 array, streaming chunk by chunk, atomically.

    The output is written to a hidden temporary sibling of `target` and moved
    into place only once complete; on failure nothing is left behind.

    Parameters
    ----------
    array : dask.array.Array or numpy.ndarray
        1-D (e.g. labels) or 2-D (e.g. probabilities), chunked by rows. Zarr
        chunks follow the Dask row chunks; irregular row chunks are first
        rechunked to the largest one, and unknown chunk sizes are computed
        first (an extra pass).
    target : str or os.PathLike
        Local path or fsspec URL of the Zarr store to create.
    storage_options : dict, optional
        Passed to fsspec and Zarr for URLs.
    overwrite : bool, default False
        Replace an existing target, only after the new output is complete.
    name : str, optional
        Write a Zarr group at `target` with the array at this path inside it
        (read back with ``read(target, component=name)``). By default `target`
        is the array itself.

    Raises
    ------
    FileExistsError
        `target` exists and `overwrite` is False; raised before any computation.
    """
    import zarr

    x = _as_output(array)

    def write(fs, tmp):
        nonlocal x
        if any(math.isnan(c) for c in x.chunks[0]):
            # Inside write(): only after the target check, as this computes.
            x = x.compute_chunk_sizes()
        rows = x.chunks[0]
        # Zarr needs regular chunks, and each Dask chunk must fill whole Zarr chunks so
        # no two tasks write the same stored chunk.
        if len(rows) > 1 and (len(set(rows[:-1])) > 1 or rows[-1] > rows[0]):
            x = x.rechunk({0: max(rows)})
        zarr_chunks = (max(x.chunks[0][0], 1),) + x.shape[1:]
        if _is_local(fs):
            store, options = tmp, {}
        else:
            store, options = fs.unstrip_protocol(tmp), {"storage_options": storage_options or {}}
        z = zarr.create_array(
            store, name=name, shape=x.shape, chunks=zarr_chunks, dtype=x.dtype, zarr_format=3, **options
        )
        _compute(da.store(x, z, lock=False, compute=False))

    _atomic_write(target, storage_options, overwrite, write)


def _write_parquet_part(block, fs, path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    block = np.asarray(block)
    data = {columns[0]: block} if block.ndim == 1 else {c: block[:, j] for j, c in enumerate(columns)}
    with fs.open(path, "wb") as f:
        pq.write_table(pa.table(data), f)


def write_parquet(array, target, columns=None, storage_options=None, overwrite=False):
    """Write a Dask array to a Parquet directory, one file per row chunk, atomically.

    Files are named ``part.{i}.parquet`` (zero-padded, in row order) inside
    `target`. The directory is written to a hidden temporary sibling and moved
    into place only once complete; on failure nothing is left behind.

    Parameters
    ----------
    array : dask.array.Array or numpy.ndarray
        1-D (e.g. labels) or 2-D (e.g. probabilities), chunked by rows.
    target : str or os.PathLike
        Local path or fsspec URL of the directory to create.
    columns : list of str, optional
        Column names. Default ``["label"]`` for 1-D and ``["p0", ..., "pK-1"]``
        for 2-D arrays.
    storage_options : dict, optional
        Passed to fsspec for URLs.
    overwrite : bool, default False
        Replace an existing target, only after the new output is complete.

    Raises
    ------
    FileExistsError
        `target` exists and `overwrite` is False; raised before any computation.
    """
    x = _as_output(array)
    n_cols = 1 if x.ndim == 1 else x.shape[1]
    if columns is None:
        columns = ["label"] if x.ndim == 1 else [f"p{i}" for i in range(n_cols)]
    columns = [str(c) for c in columns]
    if len(columns) != n_cols or len(set(columns)) != n_cols:
        raise ValueError(f"need {n_cols} distinct column names for shape {x.shape}, got {columns}")

    def write(fs, tmp):
        fs.makedirs(tmp, exist_ok=True)
        blocks = x.to_delayed().ravel()
        width = max(5, len(str(len(blocks) - 1)))
        parts = [
            dask.delayed(_write_parquet_part)(b, fs, f"{tmp}/part.{i:0{width}d}.parquet", columns)
            for i, b in enumerate(blocks)
        ]
        _compute(*parts)

    _atomic_write(target, storage_options, overwrite, write)


def write_output(array, target, format=None, **kwargs):
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
