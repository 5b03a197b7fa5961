"""Passes over the data, shared by every computation that needs one.

Each step of daskem that reads the data (an EM iteration, a k-means|| round,
a Lloyd step) is written as a generator that *yields a request* and receives
its result. :func:`drive` runs any number of such generators together: in
each round it evaluates the requests of all of them in a single pass over the
chunks, so that a grid of models (``select_model``) reads every chunk once per
iteration, and a single fit runs through exactly the same code.

Two kinds of requests:

* :class:`PassRequest`: a per-chunk function whose results are combined over
  all chunks by Dask's tree reduction, either added up (sufficient
  statistics) or merged by keeping the rows with the largest keys (weighted
  sampling without replacement).
* :class:`RowsRequest`: a few rows by global index (initial centres); all
  pending ones are fetched together, reading only the chunks that hold them.

A generator may also yield a tuple of PassRequests: they run in the same pass,
and it receives the tuple of their results.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Generator

import dask
import numpy as np
from dask.base import get_scheduler
from threadpoolctl import ThreadpoolController

from ._cluster import current_client, no_workers_watch
from ._scratch import scratch_scope

try:
    from dask.task_spec import DataNode, List, Task, TaskRef
except ImportError:  # older dask: the same classes before they had a public module
    from dask._task_spec import DataNode, List, Task, TaskRef

SPLIT_EVERY = 16
# bytes of the vectors one merge takes in (it holds them and a stacked copy): vectors of
# sampled rows (up to 1 MiB per chunk) merge a few at a time, so that the merges fit on
# workers with little memory to spare
MERGE_BYTES = 4 * 2**20
# bytes of per-chunk result vectors a pass over worker-held chunks may send to the client
GATHER_BYTES = 64 * 2**20


@dataclasses.dataclass
class PassRequest:
    """One per-chunk computation to run in the next pass.

    Attributes
    ----------
    func : callable
        ``func(block, ctx, row_start, sample_weight)`` returning a 1-D float64
        vector of length ``size`` (``sample_weight`` is None or (n,)).
    ctx : dict
        Parameters of ``func``; shipped once per pass as part of one key.
    size : int
        Length of the vector ``func`` returns.
    top : int
        0: vectors add up over chunks. n > 0: the vector is n rows of
        ``size // n`` values whose first column is a key; merging keeps the
        n rows with the largest keys. The result is then that (n, width)
        array.
    holes : bool
        Whether ``func`` takes rows with missing values (NaN) itself. Other
        functions get rows with holes as :class:`Holes` says.
    """

    func: object
    ctx: dict
    size: int
    top: int = 0
    holes: bool = False


@dataclasses.dataclass(frozen=True)
class Holes:
    """How passes treat the rows with missing values (NaN) of data that have some.

    ``mode='drop'``: such rows weigh nothing, for every request (fits on the
    complete rows). ``mode='marginalize'``: requests that take holes
    (:attr:`PassRequest.holes`, the EM statistics) get the rows as they
    are; the others (initialisation) get the holes filled with ``fill``, the
    column means, and rows with no observed value weigh nothing. Rows
    fetched by index come with their holes filled.
    """

    mode: str
    fill: np.ndarray

    def __dask_tokenize__(self):
        return ("Holes", self.mode, self.fill.tobytes())


@dataclasses.dataclass
class RowsRequest:
    """Rows of the data by global index, returned as a float64 array."""

    indices: np.ndarray


@functools.lru_cache(maxsize=1)
def _threadpool_controller():
    # finding the loaded BLAS libraries takes milliseconds: do it once
    return ThreadpoolController()


def blas_limits(X):
    """Keep BLAS single-threaded while Dask runs several chunks at once.

    Dask's threads already use the cores; BLAS threads on top of them would
    oversubscribe. A single chunk gets the BLAS threads instead.
    """
    controller = _threadpool_controller()
    if X.numblocks[0] > 1:
        return controller.limit(limits=1, user_api="blas")
    return controller.limit(limits=None)


def _evaluate(block, requests, start, sample_weight=None, holes=None):
    with scratch_scope():
        return _evaluate_in_scope(block, requests, start, sample_weight, holes)


def _evaluate_in_scope(block, requests, start, sample_weight=None, holes=None):
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if holes is not None:
        block = np.asarray(block)
        missing = np.isnan(block)
        if missing.any():
            as_they_are = [r.holes and holes.mode == "marginalize" for r in requests]
            if all(as_they_are):  # an EM pass under 'marginalize': no filled copy
                return np.concatenate([r.func(block, r.ctx, start, w) for r in requests])
            kept = ~(missing.any(axis=1) if holes.mode == "drop" else missing.all(axis=1))
            filled = np.where(missing, holes.fill.astype(block.dtype), block)
            w_kept = kept.astype(np.float64) if w is None else w * kept
            parts = [r.func(block, r.ctx, start, w) if raw else r.func(filled, r.ctx, start, w_kept)
                     for r, raw in zip(requests, as_they_are, strict=True)]
            return np.concatenate(parts)
    parts = [r.func(block, r.ctx, start, w) for r in requests]
    return np.concatenate(parts)


def _combine(vectors, segments):
    """Merge per-chunk vectors segment by segment (associative)."""
    if not any(top for _, _, top in segments):
        x = np.stack(vectors)
        return np.concatenate([x[:, lo:hi].sum(axis=0) for lo, hi, _ in segments])
    out = []
    for lo, hi, top in segments:
        if not top:
            out.append(np.stack([v[lo:hi] for v in vectors]).sum(axis=0))
        else:
            out.append(_merge_top([v[lo:hi] for v in vectors], top))
    return np.concatenate(out)


def _merge_top(parts, top):
    """The ``top`` rows of largest key (column 0) of flat top-n segments that hold
    ``top`` rows each, in decreasing order (ties: in the parts' order).

    Only the keys are copied together: the segments of a D^2 draw are large
    (a coreset's: 3,856 rows per chunk), and a worker process faults every
    page of a fresh large array in.
    """
    width = len(parts[0]) // top
    rows = [p.reshape(top, width) for p in parts]
    keys = np.concatenate([r[:, 0] for r in rows])
    best = np.argsort(-keys, kind="stable")[:top]
    source, index = np.divmod(best, top)
    merged = np.empty((top, width))
    for j, r in enumerate(rows):
        mine = source == j
        merged[mine] = r[index[mine]]
    return merged.reshape(-1)


def _split_segments(segments):
    """Positions of the summed and the top-n segments of a pass's vector, and each kind's
    segments within a vector of that kind alone."""
    summed = [(lo, hi) for lo, hi, top in segments if not top]
    tops = [(lo, hi, top) for lo, hi, top in segments if top]

    def packed(parts, with_top):
        bounds = np.concatenate([[0], np.cumsum([p[1] - p[0] for p in parts])]).astype(int)
        return tuple((int(bounds[i]), int(bounds[i + 1]), p[2] if with_top else 0)
                     for i, p in enumerate(parts))

    def positions(parts):
        return np.concatenate([np.arange(p[0], p[1]) for p in parts]) if parts else np.zeros(0, dtype=int)

    return positions(summed), packed(summed, False), positions(tops), packed(tops, True)


def _evaluate_group(blocks, starts, sample_weights=None, *, requests, segments, holes=None):
    """:func:`_evaluate` over several chunks of one worker.

    Returns each chunk's summed segments, in order (the client adds them up
    in the threaded scheduler's order), and the top-n segments merged over
    the group here: the top n of all rows is the top n of the groups' top n,
    so only n rows per request leave the worker.
    """
    weights = [None] * len(blocks) if sample_weights is None else sample_weights
    with scratch_scope():  # the chunks of the group share the work arrays
        vectors = [_evaluate(block, requests, start, w, holes)
                   for block, start, w in zip(blocks, starts, weights, strict=True)]
    sum_at, _, top_at, _ = _split_segments(segments)
    tops = _combine(vectors, [s for s in segments if s[2]]) if len(top_at) else None
    return [v[sum_at] for v in vectors], tops


def _merge_tree(vectors, segments, split_every):
    """The merges of a pass's tree over per-chunk vectors, done in memory in the
    order the task graph would do them (so that the sums agree bit for bit)."""
    layer = list(vectors)
    while len(layer) > 1:
        layer = [_combine(layer[j : j + split_every], segments) for j in range(0, len(layer), split_every)]
    return layer[0]


def _merge_groups(group_results, groups, segments, split_every):
    """The pass's vector from :func:`_evaluate_group`'s results: the summed segments
    by :func:`_merge_tree` over the chunks in chunk order, the top-n ones merged over
    the groups."""
    sum_at, sum_segments, top_at, top_segments = _split_segments(segments)
    vectors = [None] * sum(len(g) for g in groups)
    for indices, (results, _) in zip(groups, group_results, strict=True):
        for i, vector in zip(indices, results, strict=True):
            vectors[i] = vector
    out = np.empty(sum(hi - lo for lo, hi, _ in segments))
    if len(sum_at):
        out[sum_at] = _merge_tree(vectors, sum_segments, split_every)
    if len(top_at):
        out[top_at] = _combine([tops for _, tops in group_results], top_segments)
    return out


def merge_fan_in(vector_size: int, split_every: int = SPLIT_EVERY) -> int:
    """Vectors per merge of a pass whose per-chunk vectors have ``vector_size`` values:
    ``split_every``, fewer for large vectors (:data:`MERGE_BYTES`), at least 2."""
    return max(2, min(split_every, MERGE_BYTES // max(8 * vector_size, 1)))


def _chunk_keys(array):
    """The keys of a (n, d) array's row chunks (one chunk along axis 1)."""
    return [row[0] for row in array.__dask_keys__()]


class PassGraph:
    """The task graph of the data's chunks, built once for many passes.

    Every pass adds its own tasks to a copy of this graph (one per chunk and
    a tree of merges) and hands it to the scheduler directly: the data's
    graph is neither rebuilt nor re-optimised per pass, which costs more
    than the tasks themselves for small chunks. Chunks held by the workers
    of a distributed cluster are read by one task per worker thread instead,
    merged on the client in the same order (:meth:`_worker_groups`).

    Parameters
    ----------
    X : dask.array.Array (n, d), a single chunk along axis 1
    sample_weight : dask.array.Array (n, 1), optional
        Chunked like X's rows.
    holes : Holes, optional
        How rows with missing values are treated (data that have some).
    """

    def __init__(self, X, sample_weight=None, holes=None):
        if X.numblocks[1] != 1:
            raise ValueError("the data must be one chunk along the features")
        self.X = X
        self.get = get_scheduler(collections=[X])
        self.graph = dict(X.__dask_graph__())
        self.keys = _chunk_keys(X)
        self.starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int).tolist()
        self.weight_keys = None
        if sample_weight is not None:
            self.graph.update(sample_weight.__dask_graph__())
            self.weight_keys = _chunk_keys(sample_weight)
        self.holes = holes
        self.group_workers = None
        # chunks held in the memory of a distributed cluster's workers
        from distributed import Future  # a dependency, imported when a pass needs it

        held = all(isinstance(self.graph.get(key), Future) for key in self.keys)
        self.client = current_client([X]) if held else None
        self.weights_held = self.weight_keys is None or all(
            isinstance(self.graph.get(key), Future) for key in self.weight_keys)
        self.groups = None

    def _worker_groups(self):
        """Chunk indices grouped by the worker that holds them, split by its threads.

        On a distributed cluster each task costs the scheduler and the
        workers milliseconds (measured: 2.5 ms on two shared cores), which a
        pass pays for every chunk; one task per (worker, thread) over the
        chunks that worker holds, returning the chunks' vectors, and the
        merges on the client in chunk order (the threaded scheduler's tree,
        so the sums agree bit for bit whatever the placement) make a pass
        cost a few tasks and no transfer between workers: 20 chunks of
        1,000,000 x 16 rows on 2 worker processes, diag, K=8, 130 -> 86 ms
        per iteration (threaded: 89 ms). Workers that hold more rows per thread
        than the others give chunks to them (:func:`_balance`). None until every chunk is held by
        some worker (a persist still running), and for data read from
        storage by the pass itself, or for sample weights not held as well.
        """
        if self.client is None or self.groups is not None:
            return self.groups
        if not self.weights_held:
            return None  # weights still to be computed: the graph computes them with the pass
        try:
            holders = self.client.who_has([self.graph[key] for key in self.keys])
            threads = self.client.nthreads()
        except Exception:  # noqa: BLE001 - grouping is an optimisation: run ungrouped
            return None
        by_worker: dict = {worker: [] for worker, n in threads.items() if n > 0}
        for i, key in enumerate(self.keys):
            workers = holders.get(key) or []
            if not workers:
                return None
            by_worker.setdefault(sorted(workers)[0], []).append(i)
        slots = {worker: max(int(threads.get(worker, 1)), 1) for worker in by_worker}
        moved = _balance(by_worker, slots, self.X.chunks[0])
        groups, placed = [], []
        for worker, indices in sorted(by_worker.items()):
            if not indices:
                continue
            parts = min(slots[worker], len(indices))
            split = [list(map(int, part)) for part in np.array_split(sorted(indices), parts)]
            groups += split
            placed += [worker] * len(split)
        self.groups = groups
        # groups given chunks another worker holds are placed on their own worker (else the
        # scheduler would run them where most of their chunks are)
        self.group_workers = placed if moved else None
        return groups

    def run(self, requests, split_every=SPLIT_EVERY):
        """Evaluate ``requests`` in one pass over the row chunks.

        Returns
        -------
        list
            One result per request: the summed vector, or the (top, width) rows.
        """
        offsets = np.concatenate([[0], np.cumsum([r.size for r in requests])])
        split_every = merge_fan_in(int(offsets[-1]), split_every)
        segments = tuple((int(offsets[i]), int(offsets[i + 1]), r.top) for i, r in enumerate(requests))
        name = "daskem-pass-" + uuid.uuid4().hex
        # the client merges the per-chunk vectors of a grouped pass itself: only while
        # they are small (else the merges run on the workers, chunk by chunk)
        small = len(self.keys) * int(offsets[-1]) * 8 <= GATHER_BYTES
        groups = self._worker_groups() if small else None
        if groups is not None:
            with blas_limits(self.X), no_workers_watch(collections=[self.X]):
                results = self.client.gather(self._submit_groups(name, list(requests), segments, groups))
            # merged here: no task waits for another worker's result
            return _split_results(_merge_groups(results, groups, segments, split_every), segments)
        graph = dict(self.graph)
        params = name + "-requests"
        graph[params] = DataNode(params, list(requests))
        layer = []
        for i, (key, start) in enumerate(zip(self.keys, self.starts, strict=True)):
            args = [TaskRef(key), TaskRef(params), start]
            args.append(None if self.weight_keys is None else TaskRef(self.weight_keys[i]))
            if self.holes is not None:
                args.append(self.holes)
            layer.append((name, 0, i))
            graph[layer[-1]] = Task(layer[-1], _evaluate, *args)
        level = 0
        while len(layer) > 1:
            level += 1
            merged = []
            for j in range(0, len(layer), split_every):
                key = (name, level, j // split_every)
                children = List(*(TaskRef(k) for k in layer[j : j + split_every]))
                graph[key] = Task(key, _combine, children, segments)
                merged.append(key)
            layer = merged
        with blas_limits(self.X), no_workers_watch(collections=[self.X]):
            vector = self.get(graph, layer[0])
        return _split_results(vector, segments)

    def _submit_groups(self, name, requests, segments, groups):
        """One task per group of chunks, submitted with the chunks' futures; their futures.

        Mapped at once (one message to the scheduler) rather than computed
        as a graph: on two worker processes a pass of trivial work takes
        19-23 ms so (one ``submit`` per group: 21-26 ms) against 27-30 ms
        through ``Client.get``, which tokenises and ships the graph each
        time.
        """
        chunks = [self.graph[key] for key in self.keys]
        weights = None if self.weight_keys is None else [self.graph[key] for key in self.weight_keys]

        def submit(numbers, **placement):
            return self.client.map(
                _evaluate_group,
                [[chunks[i] for i in groups[g]] for g in numbers],
                [[self.starts[i] for i in groups[g]] for g in numbers],
                [None if weights is None else [weights[i] for i in groups[g]] for g in numbers],
                requests=requests, segments=segments, holes=self.holes,
                key=[f"{name}-group-{g}" for g in numbers], pure=False, **placement,
            )

        if self.group_workers is None:
            return submit(range(len(groups)))
        # each worker's groups are consecutive (see _worker_groups); the placement is a
        # preference: should the worker leave, another one runs its groups
        return [future for worker in dict.fromkeys(self.group_workers)
                for future in submit([g for g, w in enumerate(self.group_workers) if w == worker],
                                     workers=[worker], allow_other_workers=True)]


def _balance(by_worker: dict, threads: dict, chunk_rows: tuple) -> bool:
    """Move chunks from the worker with the most rows per thread to the one with the
    fewest while that lowers the largest load; whether any moved.

    distributed places persisted chunks as it sees fit (six chunks on two workers: often
    four and two), and a pass over held chunks runs where they are, so without this the
    most loaded worker sets every pass's time. A moved chunk is sent to its new worker in
    the first pass only: later passes run on the copy already there (no transfer in 17
    passes; tests/test_em_properties.py checks it).
    """
    load = {w: sum(chunk_rows[i] for i in indices) for w, indices in by_worker.items()}
    moved = False
    while len(load) > 1:
        per_thread = {w: load[w] / threads[w] for w in load}
        busiest = max(sorted(load), key=per_thread.__getitem__)
        idlest = min(sorted(load), key=per_thread.__getitem__)
        if not by_worker[busiest]:
            break
        i = by_worker[busiest][-1]
        after = max((load[busiest] - chunk_rows[i]) / threads[busiest],
                    (load[idlest] + chunk_rows[i]) / threads[idlest])
        if after >= per_thread[busiest]:
            break
        by_worker[idlest].append(by_worker[busiest].pop())
        load[busiest] -= chunk_rows[i]
        load[idlest] += chunk_rows[i]
        moved = True
    return moved


def _split_results(vector, segments):
    """A pass's vector cut into one result per request."""
    vector = np.asarray(vector).reshape(-1)
    results = []
    for lo, hi, top in segments:
        part = vector[lo:hi]
        results.append(part.reshape(top, -1) if top else part)
    return results


class PassTally:
    """Counts the passes one fit makes over its data.

    Rows read are added up and divided by the number of rows, rounded up, so
    that passes over batches of rows (online EM) count by the share of the
    rows they read. Fetching a few rows by index (:class:`RowsRequest`) reads
    only the chunks that hold them and is not counted.

    Parameters
    ----------
    n_rows : int
        Rows of the whole data.
    passes : int
        Passes already made (a resumed fit).
    """

    def __init__(self, n_rows: int, passes: int = 0):
        self.n_rows = max(int(n_rows), 1)
        self.rows_read = int(passes) * self.n_rows

    @property
    def passes(self) -> int:
        return -(-self.rows_read // self.n_rows)

    def add(self, rows: int | None = None) -> None:
        """Count one pass over ``rows`` rows (by default all of them)."""
        self.rows_read += self.n_rows if rows is None else int(rows)

    def count(self, steps: Generator, rows: int | None = None) -> Generator:
        """Run the step generator ``steps``, counting each pass it asks for.

        Use as ``result = yield from tally.count(steps)``; ``rows`` is the
        number of rows the passes run over (by default all).
        """
        value = None
        while True:
            try:
                request = steps.send(value)
            except StopIteration as stop:
                return stop.value
            if isinstance(request, (PassRequest, tuple)):
                self.add(rows)
            value = yield request


def fetch_rows(X, indices):
    """Rows of X at the given global indices, in the given order (float64)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return np.empty((0, X.shape[1]))
    order = np.argsort(indices, kind="stable")
    unique, inverse = np.unique(indices[order], return_inverse=True)
    with no_workers_watch(collections=[X]):
        (rows,) = dask.compute(X[unique])
    out = np.empty((len(indices), X.shape[1]))
    out[order] = np.asarray(rows, dtype=np.float64)[inverse]
    return out


def drive(X, steps, sample_weight=None, split_every=SPLIT_EVERY, on_error="raise", tally=None,
          holes=None):
    """Run step generators together, one pass per round for all of them.

    Parameters
    ----------
    X : dask.array.Array
    steps : list of generators
        Each yields PassRequest or RowsRequest objects, receives their
        results, and returns its final value.
    sample_weight : dask.array.Array (n, 1), optional
    on_error : {'raise', 'return'}
        What to do when a generator raises: re-raise, or return the
        exception object as that generator's result.
    tally : PassTally, optional
        Counts the passes over X that this call makes (shared by all steps).
    holes : Holes, optional
        How rows with missing values are treated, where the data have some.

    Returns
    -------
    list
        Each generator's return value (or exception).
    """
    results = [None] * len(steps)
    pending = {}
    graph = None

    def advance(i, value):
        try:
            pending[i] = steps[i].send(value)
        except StopIteration as stop:
            pending.pop(i, None)
            results[i] = stop.value
        except Exception as exc:  # noqa: BLE001 - reported per step
            pending.pop(i, None)
            if on_error == "raise":
                raise
            results[i] = exc

    for i in range(len(steps)):
        advance(i, None)
    while pending:
        rows = {i: r for i, r in pending.items() if isinstance(r, RowsRequest)}
        if rows:
            wanted = np.concatenate([r.indices for r in rows.values()])
            fetched = fetch_rows(X, wanted)
            if holes is not None:
                fetched = np.where(np.isnan(fetched), holes.fill, fetched)
            pos = 0
            for i, r in rows.items():
                advance(i, fetched[pos : pos + len(r.indices)])
                pos += len(r.indices)
            continue
        order = list(pending)
        if graph is None:
            graph = PassGraph(X, sample_weight, holes)
        # a tuple of requests: all in this pass, their results back as a tuple
        groups = [pending[i] if isinstance(pending[i], tuple) else (pending[i],) for i in order]
        outputs = iter(graph.run([r for group in groups for r in group], split_every))
        if tally is not None:
            tally.add(X.shape[0])
        for i, group in zip(order, groups, strict=True):
            values = tuple(next(outputs) for _ in group)
            advance(i, values if isinstance(pending[i], tuple) else values[0])
    return results
