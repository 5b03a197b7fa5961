"""daskem: Gaussian mixture models by Expectation-Maximization on Dask."""

from .gaussian_mixture import GaussianMixture
from .selection import select_model

__version__ = "0.1.0"


def load(path):
    """Load a model written by :meth:`GaussianMixture.save` (no pickle involved)."""
    from .persistence import load_model

    return load_model(path)


__all__ = ["GaussianMixture", "load", "select_model", "__version__"]
