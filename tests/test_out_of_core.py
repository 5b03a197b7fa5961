"""Fits larger than memory (issue 3), and the data cache policy through the estimator.

``test_fit_larger_than_worker_memory`` writes a Zarr dataset three times the
*total* memory limit of a two-worker process cluster, chunk by chunk on the
workers (neither this process nor any worker ever holds it), reads it with
:func:`daskem.io.read` and fits a mixture to convergence with
``cache='auto'``. It checks that the data were streamed, that no worker was
killed or restarted (the nanny's terminate threshold stays on; spilling and
pausing are off, so persisted data could neither be spilled nor wait: a fit
that kept the data would kill the workers), that neither the workers nor this
process came near holding the data, and that the fitted parameters are the
generating ones.

The worker memory limit (384 MiB) leaves room for what a worker needs before
it holds any data (about 180 MiB once daskem's kernels, Dask's arrays and Zarr
are loaded). The Dask chunks are 16 MiB (``read(..., chunk_bytes=16 MiB)``):
with the fixed 128 MiB chunks read() made before its chunk sizes followed the
cluster, a 384 MiB worker was restarted in the first pass. The fit with
read()'s defaults, on 256 MiB workers and data four times their memory, is in
tests/test_reliability.py.

Cost: about 100 CPU-seconds (write + fit), i.e. about a minute on an idle
2-core machine; the test prints its sizes, times and peaks (``pytest -s``).
"""

import logging
import os
import shutil
import threading
import time

import dask
import numpy as np
import psutil
import pytest
import zarr
from distributed import Client, LocalCluster

import daskem.io
from daskem import GaussianMixture
from daskem.demo import mixture_array

MiB = 2**20

# ---- the large test's sizes --------------------------------------------------
N_WORKERS = 2
WORKER_MEMORY = 384 * MiB
DATA_RATIO = 3  # data size / total memory limit of the workers
N_FEATURES = 64  # many features per row: the cheapest rows per byte to fit
N_COMPONENTS = 3
CHUNK_BYTES = 16 * MiB  # stored chunk = Dask chunk; small next to a worker's headroom

# Spilling and pausing off: nothing is meant to be held, so spilling could only
# hide a fit that keeps the data, and pausing near the limit would only stall.
# The nanny's terminate threshold stays on: crossing it restarts the worker.
CLUSTER_MEMORY_CONFIG = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": 0.95,
}


def _mixture(seed, n_features, n_components):
    """Generating parameters: well-separated means, per-feature scales, weights."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10.0, 10.0, size=(n_components, n_features))
    scales = rng.uniform(0.5, 1.5, size=(n_components, n_features))
    weights = rng.dirichlet(np.full(n_components, 20.0))
    return means, scales, weights


def _match_components(fitted_means, true_means):
    """Index of the fitted component nearest to each true one (must be a permutation)."""
    d2 = ((true_means[:, None, :] - fitted_means[None, :, :]) ** 2).sum(axis=2)
    order = d2.argmin(axis=1)
    assert sorted(order) == list(range(len(true_means))), f"components not matched one to one: {order}"
    return order


class _RSSPeaks:
    """Peak RSS of some processes of this machine, polled from a thread."""

    def __init__(self, pids, interval=0.02):
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(self.procs, 0)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, proc in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
                except psutil.Error:  # a process that died: the test's other checks report it
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class _LogLines(logging.Handler):
    """Collects the messages of one logger at INFO and above."""

    def __init__(self, name):
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self._level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


def _cpu_seconds(pids):
    """User + system CPU seconds used so far by each process."""
    return {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}


def _workers(client):
    """{address: (pid, memory_limit)} of the cluster's workers."""
    pids = client.run(os.getpid)
    limits = {a: w["memory_limit"] for a, w in client.scheduler_info()["workers"].items()}
    assert set(pids) == set(limits)
    return {a: (pids[a], limits[a]) for a in pids}


# ---------------------------------------------------------------------------
# Larger than memory
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute on an idle 2-core machine; generous under load
def test_fit_larger_than_worker_memory(tmp_path):
    means, scales, weights = _mixture(7, N_FEATURES, N_COMPONENTS)
    row_bytes = N_FEATURES * 8
    n_rows = DATA_RATIO * N_WORKERS * WORKER_MEMORY // row_bytes
    chunk_rows = CHUNK_BYTES // row_bytes
    path = str(tmp_path / "large.zarr")

    this_process = psutil.Process()
    client_rss_before = this_process.memory_info().rss
    t0 = time.perf_counter()
    try:
        with dask.config.set(CLUSTER_MEMORY_CONFIG), LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            memory_limit=WORKER_MEMORY,
            host="127.0.0.1",
            dashboard_address=":0",
            processes=True,
        ) as cluster, Client(cluster) as client:
            workers_before = _workers(client)
            assert len(workers_before) == N_WORKERS
            assert all(limit == WORKER_MEMORY for _, limit in workers_before.values())
            total_limit = sum(limit for _, limit in workers_before.values())
            pids = [pid for pid, _ in workers_before.values()]

            cpu_before = _cpu_seconds(pids + [this_process.pid])
            with _RSSPeaks(pids + [this_process.pid]) as rss, _LogLines("daskem") as log:
                # Written on the workers, one chunk per task; uncompressed so that
                # the bytes on disk are the array's bytes.
                t_write = time.perf_counter()
                mixture_array(n_rows, chunk_rows, means, scales, weights, seed=11).to_zarr(
                    path, compressors=None
                )
                t_write = time.perf_counter() - t_write

                X = daskem.io.read(path, chunk_bytes=CHUNK_BYTES)
                assert X.shape == (n_rows, N_FEATURES) and X.dtype == np.float64
                assert X.nbytes >= DATA_RATIO * total_limit
                assert X.chunksize[0] * row_bytes <= CHUNK_BYTES

                t_fit = time.perf_counter()
                gm = GaussianMixture(
                    N_COMPONENTS, covariance_type="diag", cache="auto", random_state=0
                ).fit(X)
                t_fit = time.perf_counter() - t_fit
            cpu_after = _cpu_seconds(pids + [this_process.pid])

            workers_after = _workers(client)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    elapsed = time.perf_counter() - t0

    on_disk = n_rows * row_bytes
    peaks = {pid: rss.peak[pid] for pid in pids}
    client_growth = rss.peak[this_process.pid] - client_rss_before
    cpu = {pid: cpu_after[pid] - cpu_before[pid] for pid in cpu_before}
    print(
        f"\nout-of-core fit: {on_disk / 2**30:.2f} GiB ({n_rows} x {N_FEATURES} float64) vs "
        f"{N_WORKERS} x {WORKER_MEMORY // MiB} MiB worker limits ({on_disk / total_limit:.1f}x); "
        f"write {t_write:.1f}s, fit {t_fit:.1f}s ({gm.n_iter_} EM iterations, "
        f"{np.round(gm.iteration_seconds_, 1).tolist()} s), whole test {elapsed:.1f}s; CPU seconds "
        f"for write + fit: workers {sum(cpu[p] for p in pids):.0f}, this process (client, "
        f"scheduler) {cpu[this_process.pid]:.0f}; load average {os.getloadavg()[0]:.1f}; "
        f"peak worker RSS {[round(p / MiB) for p in peaks.values()]} MiB; "
        f"this process grew by at most {client_growth / MiB:.0f} MiB"
    )

    # streamed, as decided by cache='auto'
    assert any(line.startswith("data cache: streamed (") for line in log.lines), log.lines
    assert not any(line.startswith("data cache: persisted") for line in log.lines), log.lines

    # no worker was killed or restarted: same addresses, same processes
    assert workers_after == workers_before
    # ... and none came near its limit, nor did this process hold the data
    for pid, peak in peaks.items():
        assert peak < 0.95 * WORKER_MEMORY, f"worker {pid} peaked at {peak / MiB:.0f} MiB"
    assert client_growth < on_disk / 8

    # converged, to the generating mixture
    assert gm.converged_
    order = _match_components(gm.means_, means)
    np.testing.assert_allclose(gm.means_[order], means, atol=0.02)
    np.testing.assert_allclose(gm.covariances_[order], scales**2, rtol=0.02)
    np.testing.assert_allclose(gm.weights_[order], weights, atol=0.002)


# ---------------------------------------------------------------------------
# The cache policy, through the estimator
# ---------------------------------------------------------------------------


def _blobs(n=3000, seed=0):
    """Three well-separated clusters in 3-D (float64)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 6.0], [-6.0, 6.0, 0.0]])
    X = centres[rng.integers(0, 3, n)] + rng.standard_normal((n, 3))
    return X


class _ReadCounter:
    """Counts, per chunk, how often a Dask array's chunks are materialised."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def __call__(self, block, block_info=None):
        key = block_info[0]["chunk-location"][0]
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
        return block

    def wrap(self, X):
        return X.map_blocks(self, dtype=X.dtype, meta=np.empty((0, 0), X.dtype))


@pytest.fixture
def counted_zarr(tmp_path):
    """A small Zarr array (6 chunks of 500 rows) and a factory of read-counted views."""
    values = _blobs()
    z = zarr.create_array(str(tmp_path / "small.zarr"), shape=values.shape, chunks=(500, 3), dtype="f8")
    z[:] = values

    def open_counted():
        X = daskem.io.read(str(tmp_path / "small.zarr"), chunks=500)
        assert X.numblocks == (6, 1)
        counter = _ReadCounter()
        return counter.wrap(X), counter

    return open_counted


def _fit_counting(open_counted, cache, max_iter):
    X, counter = open_counted()
    with dask.config.set(scheduler="threads"), _LogLines("daskem") as log:
        gm = GaussianMixture(
            3, covariance_type="full", cache=cache, tol=0.0, max_iter=max_iter, random_state=0
        )
        with pytest.warns(Warning, match="did not converge"):
            gm.fit(X)
    assert gm.n_iter_ == max_iter
    assert set(counter.counts) == set(range(6)), counter.counts
    return counter.counts, log.lines, gm


def test_cache_true_reads_storage_a_fixed_number_of_times(counted_zarr):
    few, log_few, gm_few = _fit_counting(counted_zarr, True, 2)
    many, log_many, gm_many = _fit_counting(counted_zarr, True, 8)
    # four times as many EM passes, not one more read of any chunk
    assert many == few
    assert max(few.values()) == 1, few
    assert log_few == ["data cache: persisted (forced by cache=True)"]
    # same start, so the first two iterations agree
    np.testing.assert_allclose(gm_many.lower_bounds_[:2], gm_few.lower_bounds_, rtol=1e-12)


def test_cache_true_reads_storage_once(counted_zarr):
    counts, _, _ = _fit_counting(counted_zarr, True, 2)
    assert counts == dict.fromkeys(range(6), 1)


def test_cache_false_reads_storage_once_per_pass(counted_zarr):
    few, _, _ = _fit_counting(counted_zarr, False, 2)
    many, _, _ = _fit_counting(counted_zarr, False, 8)
    # six more EM iterations: six more reads of every chunk, no more
    assert {k: many[k] - few[k] for k in many} == dict.fromkeys(range(6), 6)


def test_cache_auto_persists_small_data_without_a_cluster(counted_zarr):
    few, log, _ = _fit_counting(counted_zarr, "auto", 2)
    many, _, _ = _fit_counting(counted_zarr, "auto", 8)
    assert many == few
    assert len(log) == 1 and log[0].startswith("data cache: persisted (auto: data size"), log
