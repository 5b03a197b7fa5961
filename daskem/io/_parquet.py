"""Parquet: reading row groups from footers only, and writing one file per chunk atomically."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.utils import natural_sort_key

from ._atomic import atomic_write, compute
from ._checks import as_output, check_shape, float_dtype, non_numeric_error, rows_per_chunk

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def parquet_files(fs: AbstractFileSystem, path: str) -> list[str]:
    """Parquet files under a directory, in natural order (part.2 before part.10)."""
    files = [
        f
        for f in fs.find(path)
        if f.lower().endswith(PARQUET_SUFFIXES)
        # Hidden and underscore files (_metadata, .crc, temp files) are not data.
        and not any(p.startswith((".", "_")) for p in f[len(path) :].split("/") if p)
    ]
    return sorted(files, key=natural_sort_key)


class _ParquetRows:
    """Array-like over the row groups of Parquet files, read with pyarrow.

    ``pieces`` lists ``(file, row_group, n_rows)`` in order; Dask chunk
    boundaries fall on row-group boundaries, so each read is whole row groups.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        pieces: Sequence[tuple[str, int, int]],
        columns: list[str],
        dtype: Any,
    ) -> None:
        self.fs, self.pieces, self.columns = fs, pieces, columns
        self.offsets = np.cumsum([0] + [n for _, _, n in pieces])
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.offsets[-1]), len(columns))
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
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


def default_columns(schema: Any) -> list[str]:
    """The columns read by default from a Parquet schema (pyarrow): all but pandas' index."""
    index_cols = (schema.pandas_metadata or {}).get("index_columns", [])
    return [n for n in schema.names if n not in index_cols and not n.startswith("__index_level_")]


def parquet_columns(fs: AbstractFileSystem, files: list[str]) -> list[str]:
    """The columns :func:`read_parquet` reads by default, from the first file's footer."""
    import pyarrow.parquet as pq

    with fs.open(files[0], "rb") as fh:
        return default_columns(pq.read_metadata(fh).schema.to_arrow_schema())


def read_parquet(
    fs: AbstractFileSystem,
    files: list[str],
    location: str,
    columns: Iterable[Hashable] | None,
    chunks: int | None,
    chunk_bytes: float,
) -> da.Array:
    """Parquet files as a row-chunked float Dask array (see :func:`daskem.io.read`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Footers only: row counts per row group give known chunk sizes without reading data.
    metas = []
    for f in files:
        with fs.open(f, "rb") as fh:
            metas.append(pq.read_metadata(fh))
    what = f"Parquet source {location!r}"
    columns = default_columns(metas[0].schema.to_arrow_schema()) if columns is None else list(columns)
    # every file's schema, not only the first's: a later file may type a column otherwise
    all_types = []
    for f, md in zip(files, metas, strict=True):
        schema = md.schema.to_arrow_schema()
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"column(s) {missing} not found in {what} (file {f}); available: {schema.names}")
        types = {n: schema.field(n).type for n in columns}
        bad = {c: t for c, t in types.items()
               if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))}
        if bad:
            raise non_numeric_error(what if len(files) == 1 else f"{what} (file {f})", bad)
        all_types += types.values()
    if not columns:
        raise ValueError(f"{what} is empty: it has no columns")
    dtype = float_dtype(np.result_type(*[t.to_pandas_dtype() for t in all_types]), what)

    pieces = [
        (f, rg, md.row_group(rg).num_rows)
        for f, md in zip(files, metas, strict=True)
        for rg in range(md.num_row_groups)
        if md.row_group(rg).num_rows > 0
    ]
    n_rows = sum(n for _, _, n in pieces)
    check_shape((n_rows, len(columns)), what)

    # Group consecutive row groups (across files) into chunks of at most the target
    # rows; a single row group larger than that is a chunk on its own.
    target = chunks or rows_per_chunk(len(columns), dtype, chunk_bytes)
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


def _write_parquet_part(block: Any, fs: AbstractFileSystem, path: str, columns: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    block = np.asarray(block)
    data = {columns[0]: block} if block.ndim == 1 else {c: block[:, j] for j, c in enumerate(columns)}
    with fs.open(path, "wb") as f:
        pq.write_table(pa.table(data), f)


def write_parquet(
    array: da.Array | np.ndarray,
    target: str | os.PathLike[str],
    columns: Iterable[Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
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
    x = as_output(array)
    n_cols = 1 if x.ndim == 1 else x.shape[1]
    if columns is None:
        columns = ["label"] if x.ndim == 1 else [f"p{i}" for i in range(n_cols)]
    columns = [str(c) for c in columns]
    if len(columns) != n_cols or len(set(columns)) != n_cols:
        raise ValueError(f"need {n_cols} distinct column names for shape {x.shape}, got {columns}")

    def write(fs: AbstractFileSystem, tmp: str) -> None:
        fs.makedirs(tmp, exist_ok=True)
        blocks = x.to_delayed().ravel()
        width = max(5, len(str(len(blocks) - 1)))
        parts = [
            dask.delayed(_write_parquet_part)(b, fs, f"{tmp}/part.{i:0{width}d}.parquet", columns)
            for i, b in enumerate(blocks)
        ]
        compute(*parts)

    atomic_write(target, storage_options, overwrite, write)
