"""Reading the data and models of a command, and the checks on its output paths."""

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, Optional

from ._errors import BadInput, bad_input


def read_data(source: str, columns: Optional[list[str]] = None, chunks: Optional[int] = None,
              chunk_bytes: Optional[int] = None) -> Any:
    """daskem.io.read with every error it raises turned into BadInput.

    Inside a command's ``dask_client`` block, the default chunking follows
    the cluster's workers (read()'s rule); commands read once before the
    cluster starts (to fail fast on bad input) and again inside it.
    """
    from ..io import read

    with bad_input(ValueError, TypeError, FileNotFoundError):
        return read(source, columns=columns, chunks=chunks, chunk_bytes=chunk_bytes)


def read_weighted_data(source: str, columns: Optional[list[str]], chunks: Optional[int],
                       weight_column: Optional[str] = None,
                       weights: Optional[str] = None,
                       chunk_bytes: Optional[int] = None) -> tuple[Any, Any, Optional[list[str]]]:
    """Features, row weights (or None) and the feature columns used.

    ``weight_column`` names a Parquet column of weights (left out of the
    features); ``weights`` is a Zarr array or .npy file with one weight per row.
    """
    if weight_column and weights:
        raise BadInput("give either --weight-column or --weights, not both")
    if weight_column:
        if columns is None:
            columns = feature_columns(source, None)
            if columns is None:
                raise BadInput(f"--weight-column names a Parquet column, and {source} is not Parquet "
                               "(give --weights for Zarr or .npy data)")
            if weight_column not in columns:
                raise BadInput(f"--weight-column {weight_column!r} is not a column of {source}")
            columns = [c for c in columns if c != weight_column]
        elif weight_column in columns:
            raise BadInput(f"--weight-column {weight_column!r} is also among --columns")
        X = read_data(source, columns, chunks, chunk_bytes)
        return X, read_data(source, [weight_column], chunks, chunk_bytes)[:, 0], columns
    X = read_data(source, columns, chunks, chunk_bytes)
    if not weights:
        return X, None, columns
    import dask.array as da
    import numpy as np

    from ..io import local_path

    path = local_path(weights) or weights
    if not os.path.exists(path) and "://" not in os.fspath(weights):
        raise BadInput(f"--weights: no such file or directory: {weights!r}")
    with bad_input(ValueError, TypeError, OSError, FileNotFoundError):
        if str(path).endswith(".npy"):
            w = da.from_array(np.load(path, mmap_mode="r"))
        else:
            w = da.from_zarr(weights)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or w.shape[0] != X.shape[0]:
        raise BadInput(
            f"--weights {weights!r} has shape {tuple(w.shape)}; expected one weight per row "
            f"({X.shape[0]},)"
        )
    return X, w, columns


def _normalise_source(source: str | os.PathLike[str]) -> str:
    from ..io import local_path

    source = os.fspath(source)
    path = local_path(source)
    if path is None:
        return source
    return os.path.abspath(path) + source[len(path):] if source.startswith(path) else source


def _files_signature(path: str) -> Optional[dict[str, int]]:
    """Count, total size and latest modification of the files of a local source."""
    try:
        if os.path.isfile(path):
            st = os.stat(path)
            return {"files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        count = size = latest = 0
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                st = os.stat(os.path.join(root, name))
                count += 1
                size += st.st_size
                latest = max(latest, st.st_mtime_ns)
        return {"files": count, "bytes": size, "mtime_ns": latest}
    except OSError:
        return None


def data_fingerprint(source: str, X: Any, columns: Optional[list[str]]) -> dict[str, Any]:
    """What identifies the training data: source, columns, shape, dtype, chunking, files."""
    chunks = [int(c) for c in X.chunks[0]]
    fp = {
        "source": _normalise_source(source),
        "columns": columns,
        "shape": [int(n) for n in X.shape],
        "dtype": str(X.dtype),
        "row_chunks": {
            "count": len(chunks),
            "sha256": hashlib.sha256(json.dumps(chunks).encode()).hexdigest(),
        },
    }
    from ..io import local_path

    path = local_path(source)
    if path is not None:
        sig = _files_signature(path)
        if sig is not None:
            fp["files"] = sig
    return fp


def weights_fingerprint(weight_column: Optional[str], weights: Optional[str]) -> dict[str, Any]:
    """What identifies a fit's sample weights, beside :func:`data_fingerprint`: the column's
    name, or the weights file's source and (local files) its count, size and modification."""
    if weight_column:
        return {"weights": weight_column}
    fp: dict[str, Any] = {"weights": _normalise_source(weights)}
    from ..io import local_path

    path = local_path(weights)
    sig = _files_signature(path) if path is not None else None
    if sig is not None:
        fp["weight_files"] = sig
    return fp


# --------------------------------------------------------------------------
# The row chunking of a fit, kept in its checkpoint
# --------------------------------------------------------------------------


# the default chunk size before it followed the cluster (checkpoints of daskem 0.1 hold no chunking)
LEGACY_CHUNK_BYTES = 128 * 2**20


def format_bytes(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))


def fit_chunking(X: Any, cache: Any, chunks: Optional[int], chunk_bytes: Optional[int],
                 saved: Optional[dict] = None) -> tuple[Any, Any, dict]:
    """The data as the fit will chunk them, the cache policy to fit with, and the record.

    ``X`` was read with ``chunks`` or ``chunk_bytes``. The record (the
    ``chunking`` of the data fingerprint, so also of every checkpoint) holds
    those two, whether the data are persisted, and the row chunks the fit
    runs on (as ``[rows, count]`` runs): persisted data are re-chunked
    first (:func:`daskem.io.chunks_for_persisting`), so that the record
    is what the engine uses. Resuming (``saved``, the checkpoint's record)
    re-chunks the data to the recorded rows and streams them if the
    interrupted fit did, so that it continues bit for bit whatever the
    workers are now.
    """
    from ..io import cache_decision, chunks_for_persisting

    if saved is not None:
        rows = tuple(int(n) for n, count in saved["rows"] for _ in range(int(count)))
        if sum(rows) != X.shape[0]:
            raise BadInput("cannot resume: the checkpoint's row chunks do not cover the data's rows")
        if rows != tuple(X.chunks[0]):
            X = X.rechunk({0: rows})
        persisted = bool(saved["persisted"])
        return X, (cache if persisted else False), dict(saved)
    persisted, _ = cache_decision(X, cache)
    if persisted:
        X = chunks_for_persisting(X)
    runs: list[list[int]] = []
    for n in X.chunks[0]:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([int(n), 1])
    return X, cache, {"chunks": chunks, "chunk_bytes": chunk_bytes, "persisted": bool(persisted),
                      "rows": runs}


def feature_columns(data: str, columns: Optional[list[str]]) -> Optional[list[str]]:
    """The names of the feature columns a fit reads from DATA: --columns, or a Parquet
    source's columns (None for Zarr and .npy, whose features have no names)."""
    if columns is not None:
        return columns
    from ..io import column_names

    with bad_input(ValueError, FileNotFoundError, OSError):
        return column_names(data)


def model_columns(est: Any, data: str, columns: Optional[list[str]], model_path: str) -> Optional[list[str]]:
    """The columns to read from DATA for a fitted model: --columns when given; for a
    Parquet source, the columns the model was fitted on, by name (so that the file's
    column order does not matter); otherwise all of them (None)."""
    names = getattr(est, "feature_names_in_", None)
    if columns is not None or names is None:
        return columns
    available = feature_columns(data, None)
    if available is None:
        return None
    names = [str(n) for n in names]
    missing = [n for n in names if n not in available]
    if missing:
        raise BadInput(
            f"{data} has no column(s) {', '.join(missing)}: the model {model_path} was fitted on "
            f"columns {', '.join(names)} (pass --columns to read others, in the model's feature order)"
        )
    return names


def check_features(est: Any, X: Any, model_path: str) -> None:
    if X.shape[1] != est.n_features_in_:
        hint = ""
        names = getattr(est, "feature_names_in_", None)
        if names is not None:
            hint = f"; it was fitted on columns {','.join(map(str, names))} (pass --columns)"
        raise BadInput(
            f"the data have {X.shape[1]} feature(s) but the model {model_path} expects "
            f"{est.n_features_in_}{hint}"
        )


def load_model_file(path: str) -> Any:
    from ..persistence import load_model

    with bad_input(ValueError, FileNotFoundError):
        return load_model(path)


# --------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------


def _check_local(path: str | os.PathLike[str], what: str) -> None:
    if "://" in os.fspath(path) or "::" in os.fspath(path):
        raise BadInput(f"{what} must be a local path (or a mounted filesystem), got {os.fspath(path)!r}")


def _check_new_output(path: str | os.PathLike[str], overwrite: bool, what: str = "output") -> None:
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise BadInput(f"{what} already exists: {path!r} (pass --overwrite to replace it)")
    if os.path.isdir(path) and what == "model":
        raise BadInput(f"{what} path is a directory: {path!r}")
    _check_writable_location(path, what)


def _check_writable_location(path: str, what: str) -> None:
    """The folder that will hold a local output can be written (checked before any work:
    a fit that ends unable to write its model has wasted its passes)."""
    if "://" in path:
        return  # a remote store: its writer reports
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(existing):  # the writers create missing folders
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise BadInput(f"cannot write the {what} {path!r}: {existing!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write the {what} {path!r}: the folder {existing!r} is not writable")


@contextlib.contextmanager
def removing_new_temporaries(path: str | os.PathLike[str]) -> Iterator[None]:
    """On failure, remove writer temporaries of ``path`` that appeared during the block.

    The writers clean up after themselves, but failed tasks on a cluster may
    recreate a temporary sibling after that cleanup; ones that were there
    before (another writer's) are left alone.
    """
    import shutil

    from ..io import temporary_siblings

    before = temporary_siblings(path)
    try:
        yield
    except BaseException:
        for p in temporary_siblings(path) - before:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(p)
        raise


def _remove_checkpoint(directory: str) -> None:
    from .._checkpoint import checkpoint_file

    with contextlib.suppress(FileNotFoundError):
        os.remove(checkpoint_file(directory))
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # only if now empty
