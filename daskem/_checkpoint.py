"""Checkpoints of a running fit, for resuming after a crash.

A checkpoint is the file ``checkpoint.npz`` in a directory, in the same safe
container as model files (see :mod:`daskem.persistence`: plain arrays plus a
JSON record, no pickle). It holds one :class:`~daskem._state.FitState`
(the current initialisation's index, the random generator's state, the
current parameters, lower bound, histories and converged flag, and the best
finished initialisation so far), the fit options and the data fingerprint.
Each save replaces the file atomically (temporary file + :func:`os.replace`),
so a process killed at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import numpy as np

from ._encoding import random_state_from_json, random_state_to_json
from ._state import PARAMETER_TYPES, FitState, RunResult
from .persistence import read_npz, versions, write_npz_atomic

FORMAT = "daskem-checkpoint"
FORMAT_VERSION = 1
FILENAME = "checkpoint.npz"
META_KEY = "__daskem__"  # the same record name as model files: each tells its format

@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read back: the state to resume plus what it was made from."""

    state: FitState
    options: dict
    data: dict
    meta: dict

    @property
    def n_iter(self):
        """EM steps (passes) done by the current initialisation."""
        return len(self.state.seconds)


def checkpoint_file(directory: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(directory), FILENAME)


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return os.path.isfile(checkpoint_file(directory))


def _put_parameters(arrays: dict[str, np.ndarray], prefix: str, params: Any) -> str:
    """Store a parameter record's fields as ``prefix.field`` arrays; returns its type's name.

    Fields that are None (optional parts of a record) are left out.
    """
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if value is not None:
            arrays[f"{prefix}.{field.name}"] = np.asarray(value)
    return type(params).__name__


def _get_parameters(arrays: dict[str, np.ndarray], prefix: str, type_name: str) -> Any:
    cls = PARAMETER_TYPES[type_name]
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if key in arrays:
            values[f.name] = np.array(arrays[key])
        elif f.default is dataclasses.MISSING:
            raise KeyError(key)
    return cls(**values)


def save_checkpoint(
    directory: str | os.PathLike[str], state: FitState, options: dict, data: dict
) -> None:
    """Write ``state`` (a FitState) with the fit ``options`` and ``data`` fingerprint.

    Both dicts must be JSON-serialisable; they are compared with those of the
    resuming command by :func:`differences`.
    """
    arrays = {}
    parameters_type = _put_parameters(arrays, "params", state.parameters)
    rng = random_state_to_json(state.rng_state, arrays, "rng")
    arrays["lower_bound"] = np.asarray(state.lower_bound, dtype=np.float64)
    arrays["lower_bounds"] = np.asarray(state.lower_bounds, dtype=np.float64)
    arrays["seconds"] = np.asarray(state.seconds, dtype=np.float64)
    best = None
    if state.best is not None:
        b = state.best
        _put_parameters(arrays, "best.params", b.parameters)
        arrays["best.lower_bound"] = np.asarray(b.lower_bound, dtype=np.float64)
        arrays["best.lower_bounds"] = np.asarray(b.lower_bounds, dtype=np.float64)
        arrays["best.seconds"] = np.asarray(b.seconds, dtype=np.float64)
        best = {"n_iter": int(b.n_iter), "converged": bool(b.converged)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "options": options,
        "data": data,
        "state": {
            "init": int(state.init),
            "n_iter": len(state.seconds),
            "converged": bool(state.converged),
            "rng": rng,
            "best": best,
            "n_passes": int(state.n_passes),
            "parameters_type": parameters_type,
            "step_bound": float(state.step_bound),
        },
        "versions": versions(),
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
    }
    os.makedirs(os.fspath(directory), exist_ok=True)
    write_npz_atomic(checkpoint_file(directory), META_KEY, meta, arrays)


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read the checkpoint in ``directory``.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        There is no checkpoint file in ``directory``.
    ValueError
        The file is corrupted, truncated, foreign or from a newer daskem.
    """
    path = checkpoint_file(directory)
    meta, arrays = read_npz(path, META_KEY, "checkpoint", FORMAT, FORMAT_VERSION)
    try:
        s = meta["state"]
        rng_state = random_state_from_json(s["rng"], arrays, "rng")
        # files written before these fields existed hold Gaussian parameters
        parameters_type = s.get("parameters_type", "MixtureParameters")
        lower_bounds = [float(x) for x in arrays["lower_bounds"]]
        seconds = [float(x) for x in arrays["seconds"]]
        # accelerated EM records one time per pass and only the accepted bounds
        if len(seconds) != s["n_iter"] or len(lower_bounds) > len(seconds):
            raise ValueError("iteration history does not match its count")
        best = None
        if s["best"] is not None:
            best = RunResult(
                _get_parameters(arrays, "best.params", parameters_type),
                float(arrays["best.lower_bound"]),
                [float(x) for x in arrays["best.lower_bounds"]],
                int(s["best"]["n_iter"]),
                bool(s["best"]["converged"]),
                [float(x) for x in arrays["best.seconds"]],
            )
        state = FitState(
            init=int(s["init"]),
            rng_state=rng_state,
            parameters=_get_parameters(arrays, "params", parameters_type),
            lower_bound=float(arrays["lower_bound"]),
            lower_bounds=lower_bounds,
            seconds=seconds,
            converged=bool(s["converged"]),
            best=best,
            n_passes=int(s.get("n_passes", 0)),
            step_bound=float(s.get("step_bound", 1.0)),
        )
        options, data = meta["options"], meta["data"]
        if not isinstance(options, dict) or not isinstance(data, dict):
            raise ValueError("options or data fingerprint missing")
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"{path!r} is not a usable daskem checkpoint file: inconsistent contents "
            f"({type(e).__name__}: {e})"
        ) from None
    return Checkpoint(state, options, data, meta)


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like dicts (empty if equal)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {_show(a)}, now {_show(b)}")
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
