"""JSON encodings shared by model files, checkpoints and the command line.

Strict JSON has no NaN or infinity, and a NumPy RandomState is a tuple
holding an array: both need one agreed form. Model files and checkpoints
keep arrays beside their JSON record (see :mod:`daskem.persistence`), so a
random state is stored as its small scalars in JSON and its key array
beside them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np


def json_float(x: Any, nonfinite: Literal["string", "null"] = "string") -> float | str | None:
    """A float as strict JSON.

    Finite floats stay numbers. Non-finite ones become ``"nan"``, ``"inf"``
    or ``"-inf"`` (``nonfinite="string"``, the form model files and
    checkpoints read back exactly) or ``None`` (``nonfinite="null"``, the
    command line's JSON output, where "no value" is what a reader wants).
    ``None`` stays ``None``.
    """
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    if nonfinite == "null":
        return None
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def float_from_json(x: float | str) -> float:
    """The inverse of :func:`json_float` with ``nonfinite="string"``."""
    return float(x)  # float() reads "inf", "-inf" and "nan" too


def random_state_to_json(state: tuple, arrays: dict[str, np.ndarray], key: str) -> dict:
    """The JSON part of a ``RandomState.get_state()`` tuple; its arrays go to ``arrays``.

    The key array is stored as ``key + ".keys"`` and the cached Gaussian as
    ``key + ".cached_gaussian"`` (a 0-d float64 array, so every bit survives).
    """
    name, keys, pos, has_gauss, cached = state
    arrays[key + ".keys"] = np.asarray(keys, dtype=np.uint32)
    arrays[key + ".cached_gaussian"] = np.asarray(cached, dtype=np.float64)
    return {"algorithm": str(name), "pos": int(pos), "has_gauss": int(has_gauss)}


def random_state_from_json(info: dict, arrays: dict[str, np.ndarray], key: str) -> tuple:
    """The ``RandomState`` state tuple written by :func:`random_state_to_json`.

    Raises
    ------
    ValueError, KeyError, TypeError
        If the parts are missing or do not make a valid state.
    """
    state = (
        str(info["algorithm"]),
        np.array(arrays[key + ".keys"], dtype=np.uint32),
        int(info["pos"]),
        int(info["has_gauss"]),
        float(arrays[key + ".cached_gaussian"]),
    )
    np.random.RandomState().set_state(state)  # validates it
    return state
