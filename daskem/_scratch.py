"""Scratch arrays: work arrays a pass task reuses from one block of rows, and one chunk,
to the next.

distributed's nanny starts worker processes with MALLOC_TRIM_THRESHOLD_=65536,
which turns off glibc's adaptive mmap threshold: every temporary over 128 KiB
is mapped, faulted in page by page and unmapped again, each time it is made
(benchmarks/RESULTS.md, issue 18). A kernel that asks for its large
temporaries here gets the same memory back within a :func:`scratch_scope`,
which a pass opens per task (:mod:`daskem._passes`).
"""

import contextlib
import math
import threading
from collections.abc import Iterator

import numpy as np

_THREAD = threading.local()


@contextlib.contextmanager
def scratch_scope() -> Iterator[None]:
    """Keep this thread's :func:`scratch` arrays for reuse until the block ends.

    A pass opens one per task (over one chunk, or a worker's group of
    chunks): the arrays are as large as a chunk's rows, so they are given up
    when the task ends, not kept in a worker between passes. Nested scopes
    share the outermost one's arrays.
    """
    outer = getattr(_THREAD, "scratch", None)
    if outer is None:
        # the buffers by (name, dtype), and their views by name, then (shape, dtype)
        _THREAD.scratch = ({}, {})
    try:
        yield
    finally:
        if outer is None:
            _THREAD.scratch = None


def scratch(name: str, shape: tuple, dtype=np.float64) -> np.ndarray:
    """An uninitialised work array of ``shape``, reused within a :func:`scratch_scope`.

    One buffer per (name, dtype) in the thread's scope, grown to the largest
    size asked for; a fresh array outside any scope. A worker process maps
    every temporary over 128 KiB afresh (see :class:`daskem._kernels._Workspace`),
    and faulting its pages in costs about 1 us per 4 KiB page on the
    project's machine (a shifted copy of a 50,000 x 16 chunk: 1.6 ms). A caller must
    not hand the array on, nor ask for the same name again while it uses it.
    ``shape`` is a tuple. A view asked for again is the one made before (a
    kernel asks for some 25 arrays per slice of rows: making each view anew
    cost 0.6 us, as much as the slices' arithmetic saved).
    """
    scope = getattr(_THREAD, "scratch", None)
    if scope is None:
        return np.empty(shape, dtype=dtype)
    buffers, views = scope
    known = views.get(name)
    if known is not None:
        view = known.get((shape, dtype))
        if view is not None:
            return view
    kind = np.dtype(dtype)
    size = math.prod(shape)
    buffer = buffers.get((name, kind.char))
    if buffer is None or len(buffer) < size:
        buffer = buffers[name, kind.char] = np.empty(size, dtype=kind)
        known = views[name] = {}  # the views of a smaller buffer are given up
    elif known is None:
        known = views[name] = {}
    view = known[shape, dtype] = buffer[:size].reshape(shape)
    return view


def scratch_take(name: str, a: np.ndarray, indices: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.take(a, indices, axis)`` into the :func:`scratch` array ``name``.

    ``indices`` is an array of valid indices and ``axis`` is non-negative.
    With ``out``, ``np.take``'s default ``mode='raise'`` writes into a fresh
    temporary of the result's size first and copies it over (NumPy buffers
    ``out`` against a bad index): the page faults and the copy this function
    exists to avoid. ``mode='clip'`` writes ``out`` directly.
    """
    shape = a.shape[:axis] + indices.shape + a.shape[axis + 1 :]
    return np.take(a, indices, axis=axis, out=scratch(name, shape, a.dtype.type), mode="clip")
