"""daskem: Gaussian mixture models by Expectation-Maximization on Dask."""

from .gaussian_mixture import GaussianMixture

__version__ = "0.1.0"

__all__ = ["GaussianMixture", "__version__"]
