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

from ._atomic import replace_local_file as replace_local_file

# The public API is __all__. The names imported "as" themselves are for other daskem
# modules only (the path rules, the temporary-sibling naming, the cache policy), so
# that each is defined once, in this package, and imported from one place.
from ._atomic import temporary_sibling as temporary_sibling
from ._atomic import temporary_siblings as temporary_siblings
from ._cache import cache_data as cache_data
from ._cache import cache_decision
from ._cache import chunks_for_persisting as chunks_for_persisting
from ._parquet import write_parquet
from ._paths import local_path as local_path
from ._paths import split_array_path as split_array_path
from ._read import column_names as column_names
from ._read import read
from ._sizing import ChunkSizeWarning
from ._sizing import auto_chunk_bytes as auto_chunk_bytes
from ._write import write_output
from ._zarr import write_zarr

__all__ = [
    "read",
    "cache_decision",
    "ChunkSizeWarning",
    "write_zarr",
    "write_parquet",
    "write_output",
]
