"""daskem: Gaussian mixture models by Expectation-Maximization on Dask.

The public names are imported on first use, so that Dask workers, which only
need the per-chunk kernels, do not pay for importing scikit-learn.
"""

import importlib
import os
from typing import Any

from ._version import __version__

_LAZY = {
    "GaussianMixture": "daskem.gaussian_mixture",
    "BayesianGaussianMixture": "daskem.bayesian_mixture",
    "select_model": "daskem.selection",
    "read": "daskem.io",
    "NoWorkersError": "daskem._cluster",
}

__all__ = ["BayesianGaussianMixture", "GaussianMixture", "NoWorkersError", "load", "read", "select_model",
           "__version__"]


def load(path: "str | os.PathLike[str]") -> Any:
    """Load a model written by :meth:`GaussianMixture.save` (no pickle involved).

    The file names its estimator class; daskem builds that class.
    """
    from .persistence import load_model

    return load_model(path)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'daskem' has no attribute %r" % name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
