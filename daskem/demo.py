"""Synthetic mixture data: ``daskem demo``'s Zarr store, and lazy arrays of any size."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class DemoTruth:
    """The mixture the demo data were drawn from."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def mean_error(self, fitted_means):
        """Largest distance from a true mean to the nearest fitted mean."""
        fitted_means = np.asarray(fitted_means)
        dist = np.linalg.norm(self.means[:, None, :] - fitted_means[None, :, :], axis=2)
        return float(dist.min(axis=1).max())


# Distance between neighbouring means on the demo's circle: 2.6 to 6 standard
# deviations of the components (0.5 to 1.2), so that they overlap and plain EM
# needs dozens of iterations to pull them apart (33 to 41 for the default mixture
# on 2,000,000 rows, tol=1e-5, against 4 to 8 for well-separated ones; 15 steps
# with SQUAREM, the default).
NEIGHBOUR_DISTANCE = 3.1


def demo_mixture(n_components=4, n_features=2, random_state=0):
    """Overlapping components on a circle, with random rotations and scales.

    Neighbouring means are :data:`NEIGHBOUR_DISTANCE` apart, whatever the
    number of components; further features (n_features > 2) get means drawn
    in [-3, 3].
    """
    rng = np.random.RandomState(random_state)
    radius = NEIGHBOUR_DISTANCE / 2 / np.sin(np.pi / max(n_components, 2))
    angles = 2 * np.pi * np.arange(n_components) / n_components
    means = np.zeros((n_components, n_features))
    means[:, 0] = radius * np.cos(angles)
    means[:, 1] = radius * np.sin(angles)
    if n_features > 2:
        means[:, 2:] = rng.uniform(-3, 3, size=(n_components, n_features - 2))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        q, _ = np.linalg.qr(rng.randn(n_features, n_features))
        scales = rng.uniform(0.5, 1.2, size=n_features)
        covariances[k] = (q * scales**2) @ q.T
    weights = rng.dirichlet(np.full(n_components, 10.0))
    return DemoTruth(weights, means, covariances)


def make_demo_zarr(path, n_rows=2_000_000, n_components=4, n_features=2, random_state=0,
                   chunk_rows=100_000):
    """Write ``n_rows`` samples of :func:`demo_mixture` to a Zarr v3 array at ``path``.

    Returns the :class:`DemoTruth`. Rows are drawn and written one chunk at a
    time, shuffled across components.
    """
    import zarr

    truth = demo_mixture(n_components, n_features, random_state)
    rng = np.random.RandomState(random_state + 1)
    chol = np.linalg.cholesky(truth.covariances)
    z = zarr.create_array(path, shape=(n_rows, n_features), chunks=(chunk_rows, n_features),
                          dtype="float64", zarr_format=3)
    for start in range(0, n_rows, chunk_rows):
        m = min(chunk_rows, n_rows - start)
        labels = rng.choice(n_components, size=m, p=truth.weights)
        noise = rng.standard_normal((m, n_features))
        z[start:start + m] = truth.means[labels] + np.einsum("nij,nj->ni", chol[labels], noise)
    return truth


def _draw_mixture_chunk(means, scales, weights, seed, out_dtype, block_info=None):
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, block_info[None]["chunk-location"][0]])
    counts = rng.multinomial(stop - start, weights)
    x = rng.standard_normal((stop - start, means.shape[1]))
    row = 0
    for k, c in enumerate(counts):
        x[row : row + c] *= scales[k]
        x[row : row + c] += means[k]
        row += c
    return x.astype(out_dtype, copy=False)


def mixture_array(n_rows, chunk_rows, means, scales, weights, seed, dtype=np.float64):
    """A lazy Dask array of samples from a mixture of axis-aligned Gaussians.

    Every chunk is drawn by its own generator (seeded by ``[seed, chunk
    index]``), so any worker can draw any chunk and the data never exist in
    one place; rows of one component are contiguous within a chunk (EM does
    not care about row order, and this avoids per-row fancy indexing).

    Parameters
    ----------
    n_rows, chunk_rows : int
    means, scales : ndarray (K, d)
        Component means and per-feature standard deviations.
    weights : ndarray (K,)
    seed : int
    dtype : numpy dtype, default float64

    Returns
    -------
    dask.array.Array (n_rows, d)
    """
    import dask.array as da

    n_features = means.shape[1]
    n_chunks = -(-n_rows // chunk_rows)
    row_chunks = tuple(min(chunk_rows, n_rows - i * chunk_rows) for i in range(n_chunks))
    return da.map_blocks(
        _draw_mixture_chunk, means=means, scales=scales, weights=weights, seed=seed,
        out_dtype=dtype, dtype=dtype, chunks=(row_chunks, (n_features,)),
        meta=np.empty((0, 0), dtype),
    )
