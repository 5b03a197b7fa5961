"""Synthetic data for ``daskem demo``: well-separated Gaussian components in a Zarr store."""

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


def demo_mixture(n_components=4, n_features=2, random_state=0):
    """Components on a circle (radius grows with K) with random rotations and scales."""
    rng = np.random.RandomState(random_state)
    radius = 4.0 + 2.0 * n_components
    angles = 2 * np.pi * np.arange(n_components) / n_components
    means = np.zeros((n_components, n_features))
    means[:, 0] = radius * np.cos(angles)
    means[:, 1] = radius * np.sin(angles)
    if n_features > 2:
        means[:, 2:] = rng.uniform(-3, 3, size=(n_components, n_features - 2))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        q, _ = np.linalg.qr(rng.randn(n_features, n_features))
        scales = rng.uniform(0.4, 1.5, size=n_features)
        covariances[k] = (q * scales**2) @ q.T
    weights = rng.dirichlet(np.full(n_components, 5.0))
    return DemoTruth(weights, means, covariances)


def make_demo_zarr(path, n_rows=300_000, n_components=4, n_features=2, random_state=0,
                   chunk_rows=50_000):
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
