"""Shared test data."""

import threading

import dask.array as da
import numpy as np
import pytest


def traced_peak(func, *args):
    """``func(*args)`` and the peak of the memory it allocated meanwhile (``tracemalloc``)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = func(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_blobs(n=900, seed=0, dtype=np.float64, offset=0.0):
    """Three well-separated, differently shaped Gaussian clusters in 3-D."""
    rng = np.random.RandomState(seed)
    a = rng.randn(n // 3, 3) + [0, 0, 0]
    b = rng.randn(n // 3, 3) @ np.array([[1.0, 0.6, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.7]]) + [5, 5, 5]
    c = rng.randn(n - 2 * (n // 3), 3) * [1.0, 2.0, 0.5] + [-4, 6, 0]
    X = np.vstack([a, b, c]) + offset
    return X[rng.permutation(len(X))].astype(dtype)


@pytest.fixture
def blobs():
    return make_blobs()


class ChunkReads:
    """A Dask array whose chunks count how often they are read."""

    def __init__(self, X, chunks):
        self.counts = {}
        self.lock = threading.Lock()
        base = da.from_array(X, chunks=(chunks, -1))
        self.array = base.map_blocks(self._read, dtype=X.dtype)

    def _read(self, block, block_info=None):
        key = block_info[0]["chunk-location"][0]
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
        return block
