"""Rules every array read or written follows: 2-D, floating, sized chunks.

Shared by the readers of every format (:mod:`._read`, :mod:`._zarr`,
:mod:`._parquet`, :mod:`._npy`) and by the writers, so each rule and each
error message exists once.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np


def no_columns(columns: object, what: str) -> None:
    """Refuse `columns` for a source that has no named columns."""
    if columns is not None:
        raise ValueError(f"columns= only applies to Parquet and DataFrame sources, not to {what}")


def float_dtype(dtype: Any, what: str) -> np.dtype:
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


def check_shape(shape: Sequence[int], what: str) -> None:
    """Refuse data that are not 2-D or have no rows or no columns."""
    if len(shape) != 2:
        raise ValueError(f"expected 2-D data (samples x features), but {what} has shape {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {tuple(shape)} (need at least one row and one column)")


def rows_per_chunk(n_features: int, dtype: Any, chunk_bytes: float) -> int:
    """Rows of `n_features` values of `dtype` that fit in `chunk_bytes` (at least one)."""
    return max(1, int(chunk_bytes // (n_features * np.dtype(dtype).itemsize)))


def non_numeric_error(what: str, bad_types: Mapping[Hashable, Any]) -> TypeError:
    """The one error for non-numeric columns (a mapping of column to its type)."""
    return TypeError(
        f"non-numeric column(s) in {what}: "
        + ", ".join(f"{c!r} ({t})" for c, t in bad_types.items())
        + "; select numeric columns with columns= (--columns on the command line)"
    )


def as_output(array: da.Array | np.ndarray) -> da.Array:
    """A 1-D or 2-D Dask array with one chunk along axis 1, ready to be written."""
    x = array if isinstance(array, da.Array) else da.asarray(array)
    if x.ndim not in (1, 2):
        raise ValueError(f"can only write 1-D or 2-D arrays, got shape {x.shape}")
    if x.ndim == 2 and len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    return x
