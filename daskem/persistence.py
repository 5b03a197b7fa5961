"""Saving and loading fitted models without pickle.

A model file is a single NumPy ``.npz`` archive (written with :func:`numpy.savez`,
read with ``numpy.load(..., allow_pickle=False)``) holding

* the parameter arrays ``weights_``, ``means_``, ``covariances_``,
  ``precisions_cholesky_``, the fit history ``lower_bounds_`` and
  ``iteration_seconds_``, the scalar ``lower_bound_`` (as a 0-d array, so that
  ``-inf`` and every bit survive) and ``feature_names_in_`` (unicode) if any;
* array-valued estimator parameters (``means_init`` ...) as ``param:NAME``;
* after an online fit, its running statistics ``online:stats`` and their
  centre ``online:shift`` (the number of updates is among the fitted
  scalars), so that ``partial_fit`` continues where it stopped;
* a JSON record ``__daskem__`` (UTF-8 bytes as a uint8 array) describing the
  file: format name and version, the estimator's parameters, the fitted
  scalars, every array's shape, dtype and SHA-256, caller metadata (for
  example the training data's fingerprint) and the versions of daskem, dask
  and NumPy that wrote it.

Nothing in the file is ever executed or unpickled. :func:`load_model` checks
the format, version, checksums and shapes and raises one :class:`ValueError`
naming the file for anything it cannot use (corrupted, truncated, foreign or
newer files).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import zipfile
from typing import Any

import numpy as np

from ._encoding import float_from_json, json_float, random_state_from_json, random_state_to_json
from ._engine import online_state_of, set_fitted
from ._registry import estimator_class, estimator_name, family_of
from ._state import OnlineState
from ._version import __version__
from .io import replace_local_file

__all__ = ["save_model", "load_model", "read_model_metadata", "FORMAT", "FORMAT_VERSION"]

FORMAT = "daskem-model"
FORMAT_VERSION = 1
META_KEY = "__daskem__"

_HISTORY_ARRAYS = ("lower_bound_", "lower_bounds_", "iteration_seconds_")
_ZIP_MAGIC = b"PK\x03\x04"


# --------------------------------------------------------------------------
# JSON with arrays on the side
# --------------------------------------------------------------------------


def encode_value(value, arrays, key):
    """A JSON-safe form of an estimator parameter; arrays go to ``arrays``.

    Arrays (and lists of numbers, which scikit-learn accepts as array-likes)
    are stored as ``{"__array__": name}``; a ``RandomState`` as its state.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return {"__float__": json_float(value)} if not math.isfinite(value) else float(value)
    if isinstance(value, np.random.RandomState):
        return {"__random_state__": random_state_to_json(value.get_state(), arrays, key)}
    if isinstance(value, (np.ndarray, list, tuple)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot store parameter {key!r}: array of dtype {arr.dtype}")
        arrays[key] = arr
        return {"__array__": key}
    raise TypeError(f"cannot store parameter {key!r} of type {type(value).__name__} without pickle")


def decode_value(value, arrays):
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__float__" in value:
            return float_from_json(value["__float__"])
        if "__random_state__" in value:
            raise AssertionError("random states are decoded by the caller")
    return value


def decode_random_state(value, arrays, key):
    rs = np.random.RandomState()
    rs.set_state(random_state_from_json(value["__random_state__"], arrays, key))
    return rs


def versions():
    import dask

    return {
        "daskem": __version__,
        "dask": dask.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _sha256(arr):
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(str(arr.dtype.str).encode())
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------
# The container: one .npz of plain arrays + a JSON record, written atomically
# --------------------------------------------------------------------------


def write_npz_atomic(
    path: str | os.PathLike[str], meta_key: str, meta: dict, arrays: dict[str, np.ndarray],
    fsync: bool = True,
) -> None:
    """Write ``arrays`` plus the JSON ``meta`` (with an array manifest) to ``path``.

    The archive is written to a hidden temporary file in the same directory
    and moved over ``path`` with :func:`os.replace`, so readers see either the
    old file or the new one, never a partial file.
    """
    path = os.fspath(path)
    meta = dict(meta)
    meta["arrays"] = {
        name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": _sha256(a)}
        for name, a in arrays.items()
    }
    payload = json.dumps(meta, allow_nan=False, sort_keys=True).encode("utf-8")
    contents = {meta_key: np.frombuffer(payload, dtype=np.uint8)}
    contents.update(arrays)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **contents)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    replace_local_file(path, write)


def _describe_start(head):
    """A short guess at what a file that is not a .npz archive is."""
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "it looks like a JSON file"
    if head[:4] == b"PAR1":
        return "it is a Parquet file"
    if head[:6] == b"\x93NUMPY":
        return "it is a single .npy array"
    if head[:2] == b"\x80\x04" or head[:2] == b"\x80\x05" or head[:2] == b"\x80\x03":
        return "it looks like a pickle (never loaded by daskem)"
    if not head:
        return "it is empty"
    return "it does not start with a .npz (zip) signature"


def read_npz(
    path: str | os.PathLike[str], meta_key: str, kind: str, format_name: str, format_version: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify an archive written by :func:`write_npz_atomic`.

    Returns ``(meta, arrays)``. Raises FileNotFoundError for a missing file
    and ValueError (naming the file) for anything else wrong with it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a daskem {kind} file")

    def bad(why):
        return ValueError(f"{path!r} is not a usable daskem {kind} file: {why}")

    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise ValueError(f"cannot read daskem {kind} file {path!r}: {e.strerror or e}") from None
    if head[:4] != _ZIP_MAGIC:
        raise bad(_describe_start(head))
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if meta_key not in names:
                raise bad(
                    f"it has no {meta_key!r} record (a .npz archive written by another program?); "
                    f"it holds {', '.join(names[:8]) or 'nothing'}"
                )
            raw = npz[meta_key]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise bad(f"its {meta_key!r} record is not JSON text")
            try:
                meta = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise bad(f"its {meta_key!r} record is not valid JSON ({e})") from None
            if not isinstance(meta, dict) or meta.get("format") != format_name:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise bad(f"format is {found!r}, expected {format_name!r}")
            version = meta.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise bad(f"invalid format version {version!r}")
            if version > format_version:
                raise bad(
                    f"it was written in {format_name} format version {version} by a newer daskem "
                    f"({meta.get('versions', {}).get('daskem', 'unknown version')}); this daskem reads "
                    f"versions up to {format_version}: upgrade daskem to load it"
                )
            manifest = meta.get("arrays")
            if not isinstance(manifest, dict):
                raise bad("its metadata lists no arrays")
            arrays = {}
            for name, info in manifest.items():
                if name not in names:
                    raise bad(f"array {name!r} is missing (truncated or edited file?)")
                a = npz[name]
                if (
                    not isinstance(info, dict)
                    or list(a.shape) != info.get("shape")
                    or a.dtype.str != info.get("dtype")
                    or _sha256(a) != info.get("sha256")
                ):
                    raise bad(f"array {name!r} does not match its checksum (corrupted file)")
                arrays[name] = a
    except ValueError as e:
        if str(e).startswith(repr(path)):
            raise
        if "allow_pickle" in str(e):
            raise bad("it holds pickled Python objects, which daskem never loads") from None
        raise bad(f"corrupted or truncated archive ({_short(e)})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError,
            IndexError, TypeError, UnicodeDecodeError, NotImplementedError) as e:
        raise bad(f"corrupted or truncated archive ({_short(e)})") from None
    return meta, arrays


def _short(e):
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def save_model(estimator: Any, path: str | os.PathLike[str], **metadata: Any) -> None:
    """Write a fitted daskem estimator to ``path`` (a ``.npz`` file).

    The file is written atomically (temporary file in the same directory, then
    :func:`os.replace`); an existing file is replaced. ``metadata`` must be
    JSON-serialisable (non-finite floats allowed) and is stored under
    ``"metadata"``, e.g. ``data={"source": ..., "shape": ...}``.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    family = family_of(estimator)
    arrays = {name: np.asarray(getattr(estimator, name)) for name in family.parameter_attributes}
    arrays["lower_bound_"] = np.asarray(estimator.lower_bound_, dtype=np.float64)
    arrays["lower_bounds_"] = np.asarray(getattr(estimator, "lower_bounds_", []), dtype=np.float64)
    arrays["iteration_seconds_"] = np.asarray(
        getattr(estimator, "iteration_seconds_", []), dtype=np.float64
    )
    feature_names = getattr(estimator, "feature_names_in_", None)
    if feature_names is not None:
        arrays["feature_names_in_"] = np.asarray([str(n) for n in feature_names], dtype=str)

    params = {}
    for name, value in estimator.get_params(deep=False).items():
        params[name] = encode_value(value, arrays, f"param:{name}")

    fitted = {
        "n_iter_": int(estimator.n_iter_),
        "converged_": bool(estimator.converged_),
        "lower_bound_": json_float(estimator.lower_bound_),
    }
    if getattr(estimator, "n_passes_", None) is not None:
        fitted["n_passes_"] = int(estimator.n_passes_)
    online = online_state_of(estimator)
    if online is not None:
        arrays["online:stats"] = np.asarray(online.stats, dtype=np.float64)
        arrays["online:shift"] = np.asarray(online.shift, dtype=np.float64)
        fitted["online_updates"] = int(online.n_updates)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": estimator_name(type(estimator)),
        "params": params,
        "covariance_type": estimator.covariance_type,
        "n_components": int(arrays["means_"].shape[0]),
        "n_features_in_": int(estimator.n_features_in_),
        "fitted": fitted,
        "metadata": _json_safe(metadata),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_npz_atomic(path, META_KEY, meta, arrays)


def _json_safe(obj):
    """Metadata as strict JSON: non-finite floats as strings, arrays as lists."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def read_model_metadata(path: str | os.PathLike[str]) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON record and arrays of a model file, verified but not turned into a model."""
    return read_npz(path, META_KEY, "model", FORMAT, FORMAT_VERSION)


def load_model(path: str | os.PathLike[str]) -> Any:
    """Read a model written by :func:`save_model`; returns the fitted estimator.

    The estimator's class is the one named in the file (see
    :mod:`daskem._registry`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a daskem model (corrupted, truncated, foreign, or
        written by a newer daskem); the message names the file.
    """
    meta, arrays = read_model_metadata(path)
    try:
        return _model_from(meta, arrays)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)!r} is not a usable daskem model file: {_short(e)}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(
            f"{os.fspath(path)!r} is not a usable daskem model file: inconsistent contents "
            f"({type(e).__name__}: {_short(e)})"
        ) from None


# parameters an estimator gained after daskem 0.1.0, and the value that gives
# that version's behaviour (0.1.0 ran plain EM)
_ADDED_PARAMETERS = {"acceleration": None}


def _online_state_from(family, parameters, fitted, arrays):
    """The running statistics of an online fit stored in a model file, or None."""
    if "online:stats" not in arrays:
        return None
    stats, shift = arrays["online:stats"], arrays["online:shift"]
    _, layout = family.statistics_request(parameters, shift, np.float64)
    if stats.shape != (layout.size,) or shift.shape != parameters.means.shape[1:]:
        raise ValueError(
            f"online statistics of shape {stats.shape} around a centre of shape {shift.shape} "
            f"do not fit the model (expected {(layout.size,)} and {parameters.means.shape[1:]})"
        )
    if not (np.all(np.isfinite(stats)) and np.all(np.isfinite(shift))):
        raise ValueError("online statistics hold NaN or infinity")
    n_updates = fitted["online_updates"]
    if not isinstance(n_updates, int) or isinstance(n_updates, bool) or n_updates < 1:
        raise ValueError(f"invalid number of online updates {n_updates!r}")
    return OnlineState(np.array(stats), layout, n_updates, np.array(shift))


def _model_from(meta, arrays):
    cls = estimator_class(meta.get("estimator"))
    raw_params = meta["params"]
    if not isinstance(raw_params, dict):
        raise ValueError("estimator parameters are not a mapping")
    valid = set(cls().get_params())
    unknown = sorted(set(raw_params) - valid)
    if unknown:
        raise ValueError(f"unknown estimator parameter(s) {unknown}")
    # parameters added since a file was written take the value that reproduces
    # the fit it records
    params = {name: value for name, value in _ADDED_PARAMETERS.items() if name in valid}
    for name, value in raw_params.items():
        if isinstance(value, dict) and "__random_state__" in value:
            params[name] = decode_random_state(value, arrays, f"param:{name}")
        else:
            params[name] = decode_value(value, arrays)
    est = cls(**params)
    est._validate_params()
    family = family_of(est)

    if meta.get("covariance_type") != est.covariance_type:
        raise ValueError("covariance type of the metadata and of the parameters differ")
    for name in family.parameter_attributes + _HISTORY_ARRAYS:
        if name not in arrays:
            raise ValueError(f"array {name!r} is missing")
        if arrays[name].dtype.kind != "f":
            raise ValueError(f"array {name!r} has dtype {arrays[name].dtype}, expected floats")
    parameters = family.parameters_from({n: np.array(arrays[n]) for n in family.parameter_attributes})
    k = parameters.means.shape[0]
    if k != meta.get("n_components"):
        raise ValueError(f"{k} components in the arrays, {meta.get('n_components')} in the metadata")
    d = parameters.means.shape[1]
    if d != meta.get("n_features_in_"):
        raise ValueError(f"{d} features in the means, {meta.get('n_features_in_')} in the metadata")
    for name in family.parameter_attributes:
        if not np.all(np.isfinite(arrays[name])):
            raise ValueError(f"{name} holds NaN or infinity")

    fitted = meta["fitted"]
    attributes = {
        **family.attributes(parameters, arrays["means_"].dtype),
        "n_features_in_": d,
        "n_iter_": int(fitted["n_iter_"]),
        "converged_": bool(fitted["converged_"]),
        "lower_bound_": float(arrays["lower_bound_"]),
        "lower_bounds_": [float(x) for x in arrays["lower_bounds_"]],
        "iteration_seconds_": [float(x) for x in arrays["iteration_seconds_"]],
        "feature_names_in_": None,
    }
    if "n_passes_" in fitted:  # files written before daskem counted passes lack it
        attributes["n_passes_"] = int(fitted["n_passes_"])
    attributes["online_state_"] = _online_state_from(family, parameters, fitted, arrays)
    if "feature_names_in_" in arrays:
        names = arrays["feature_names_in_"]
        if names.dtype.kind != "U" or names.shape != (d,):
            raise ValueError(f"feature_names_in_ has dtype {names.dtype} and shape {names.shape}")
        attributes["feature_names_in_"] = np.asarray(names.tolist(), dtype=object)
    set_fitted(est, attributes)
    return est
