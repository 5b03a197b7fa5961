"""Zarr: reading an array (possibly inside a group) and writing one atomically."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from ._atomic import atomic_write, compute
from ._checks import as_output, check_shape, float_dtype, rows_per_chunk
from ._paths import is_local

if TYPE_CHECKING:
    import zarr
    from fsspec import AbstractFileSystem

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def is_zarr(fs: AbstractFileSystem, path: str) -> bool:
    """Whether `path` is a directory holding Zarr (v2 or v3) metadata."""
    return fs.isdir(path) and any(fs.exists(f"{path}/{m}") for m in _ZARR_MARKERS)


def _zarr_arrays(group: zarr.Group) -> str:
    """``name (shape)`` for every array in a group, for error messages."""
    import zarr

    names = [
        f"{name} {tuple(node.shape)}"
        for name, node in group.members(max_depth=None)
        if isinstance(node, zarr.Array)
    ]
    return ", ".join(sorted(names)) or "none"


def read_zarr(
    fs: AbstractFileSystem,
    path: str,
    location: str,
    component: str | None,
    chunks: int | None,
    storage_options: dict[str, Any] | None,
    chunk_bytes: float,
) -> da.Array:
    """A Zarr array as a row-chunked float Dask array (see :func:`daskem.io.read`)."""
    import zarr

    # zarr handles local paths natively (file:// URLs are reduced to paths).
    if is_local(fs):
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

    check_shape(array.shape, what)
    dtype = float_dtype(array.dtype, what)
    # Dask chunks must cover whole stored chunks (whole shards when sharded) so
    # no stored chunk is decoded by two tasks.
    block = (getattr(array, "shards", None) or array.chunks)[0]
    if chunks is not None:
        n_blocks = max(1, round(chunks / block))
    else:  # at most chunk_bytes (the rule's size follows the workers' memory), at least one block
        n_blocks = max(1, rows_per_chunk(array.shape[1], dtype, chunk_bytes) // block)
    rows = min(n_blocks * block, array.shape[0])
    x = da.from_array(array, chunks=(rows, array.shape[1]))
    return x.astype(dtype) if x.dtype != dtype else x


def write_zarr(
    array: da.Array | np.ndarray,
    target: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    name: str | None = None,
) -> None:
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

    x = as_output(array)

    def write(fs: AbstractFileSystem, tmp: str) -> None:
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
        if is_local(fs):
            store, options = tmp, {}
        else:
            store, options = fs.unstrip_protocol(tmp), {"storage_options": storage_options or {}}
        z = zarr.create_array(
            store, name=name, shape=x.shape, chunks=zarr_chunks, dtype=x.dtype, zarr_format=3, **options
        )
        compute(da.store(x, z, lock=False, compute=False))

    atomic_write(target, storage_options, overwrite, write)
