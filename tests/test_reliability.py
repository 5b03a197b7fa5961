"""Defaults that never kill a worker, and computations that notice when no worker is left (issue 19).

* Chunk sizes follow the cluster: read()'s rule (1/32 of the smallest memory
  limit per thread, 1 to 128 MiB), its log line and its warning, on stub and
  in-process clusters; then a fit with read()'s defaults on a process
  ``LocalCluster`` of 2 workers x 256 MiB over Zarr data four times their
  total memory converges with no worker restarted.
* The no-workers watchdog (``daskem._cluster.no_workers_watch``), on a plain
  ``dask scheduler`` (no ``distributed.scheduler.no-workers-timeout``) with
  real ``dask worker`` processes on 127.0.0.1: ``daskem fit --no-workers-timeout
  60 --checkpoint`` exits 1 between 60 and 90 s after its only worker is
  SIGKILLed, with the message and its checkpoint kept, and ``--resume`` once a
  worker with another memory limit joins writes the model of an undisturbed
  fit (the checkpoint's row chunking is reused); a worker back within the
  timeout lets a fit finish normally; a ``daskem predict`` and a ``score`` on
  a cluster without workers stop after their timeout.

The 60 s CLI case runs in the background from the first test on (its CLI mostly
waits), beside the other tests; the last test collects it. Every process is
torn down in a ``finally``; servers listen on 127.0.0.1 only.
"""

import logging
import os
import signal
import threading
import time
import warnings

import dask
import dask.array as da
import numpy as np
import psutil
import pytest
import zarr
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning
from test_real_cluster import RealCluster, _assert_same_model, _cli, _CLIRun, _warm_imports

import daskem
from conftest import make_blobs
from daskem import GaussianMixture, NoWorkersError
from daskem._checkpoint import has_checkpoint, load_checkpoint
from daskem._cluster import NO_WORKERS_TIMEOUT_KEY, no_workers_timeout, no_workers_watch
from daskem._engine import fit as engine_fit
from daskem.cli import main
from daskem.demo import mixture_array
from daskem.io import ChunkSizeWarning, auto_chunk_bytes, read, write_zarr
from daskem.io._sizing import warn_if_too_large

MiB = 2**20
pytestmark = pytest.mark.timeout(300)


class _LogLines(logging.Handler):
    """Messages of the ``daskem`` logger at INFO and above."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.logger = logging.getLogger("daskem")
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


def _fit(X, **kwargs):
    gm = GaussianMixture(**{**OUTAGE_FIT, **kwargs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: runs max_iter iterations
        return gm.fit(X)


# ---------------------------------------------------------------------------
# The 60 s CLI outage, in the background
# ---------------------------------------------------------------------------

# 16 float64 features, 98 MiB, streamed: two chunks under the first worker's rule (2 GiB:
# 64 MiB chunks), one under the second's (4 GiB: 128 MiB), so that --resume must reuse the
# checkpoint's chunking to continue bit for bit
OUTAGE_ROWS, OUTAGE_FEATURES = 800_000, 16
OUTAGE_FIT = dict(n_components=3, covariance_type="full", tol=0.0, max_iter=8, random_state=0)
OUTAGE_TIMEOUT = 60


def _outage_args(data_path, out, checkpoint, address, *extra):
    return ["fit", data_path, "--out", out, "-k", str(OUTAGE_FIT["n_components"]), "--tol", "0",
            "--max-iter", str(OUTAGE_FIT["max_iter"]), "--random-state", str(OUTAGE_FIT["random_state"]),
            "--checkpoint", checkpoint, "--scheduler", address, "--cache", "false", "--log-json", *extra]


class _Outage:
    """`daskem fit --no-workers-timeout 60` losing its only worker, then `--resume`, in a thread."""

    def __init__(self, root):
        self.root = str(root)
        self.data = os.path.join(self.root, "outage.zarr")
        self.out = os.path.join(self.root, "model.npz")
        self.checkpoint = os.path.join(self.root, "ckpt")
        rng = np.random.default_rng(5)
        means = rng.uniform(-5, 5, size=(3, OUTAGE_FEATURES))
        scales = rng.uniform(0.5, 1.5, size=(3, OUTAGE_FEATURES))
        with dask.config.set(scheduler="threads"):
            mixture_array(OUTAGE_ROWS, 8192, means, scales, np.array([0.3, 0.3, 0.4]), seed=2).to_zarr(
                self.data, compressors=None)
        # a plain scheduler: no distributed.scheduler.no-workers-timeout
        self.cluster = RealCluster(os.path.join(self.root, "cluster"))
        self.cluster.worker_args = ["--memory-limit", "2GiB"]
        (self.victim,) = self.cluster.add_workers(1)
        self.started_fit = threading.Event()
        self.result = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            # not as the default client: this thread must not touch Dask's global config
            with Client(self.cluster.address, timeout="30s", set_as_default=False) as client:
                client.wait_for_workers(1, timeout=90)
                _warm_imports(client)
            run = _CLIRun(_outage_args(self.data, self.out, self.checkpoint, self.cluster.address,
                                       "--no-workers-timeout", str(OUTAGE_TIMEOUT)))

            def at(event):
                self.started_fit.set()
                if event["event"] == "iteration" and event["iteration"] == 2 and "killed" not in self.result:
                    self.victim.send_signal(signal.SIGKILL)
                    self.victim.wait()
                    self.result["killed"] = time.monotonic()

            self.result["code"], self.result["events"] = run.follow(at, timeout=200)
            self.result["exited"] = time.monotonic()
            self.result["stderr"] = run.text()
            self.result["checkpoint"] = has_checkpoint(self.checkpoint)
            if self.result["checkpoint"]:
                self.result["chunking"] = load_checkpoint(self.checkpoint).data.get("chunking")
            self.result["model_written"] = os.path.exists(self.out)
            # a worker with another memory limit (so another chunk size by read()'s rule) joins
            self.cluster.worker_args = ["--memory-limit", "4GiB"]
            self.cluster.add_workers(1)
            # not as the default client: this thread must not touch Dask's global config
            with Client(self.cluster.address, timeout="30s", set_as_default=False) as client:
                client.wait_for_workers(1, timeout=90)
                _warm_imports(client)
            self.result["resume"] = _cli(_outage_args(self.data, self.out, self.checkpoint,
                                                      self.cluster.address, "--resume"), timeout=150)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.result["error"] = e
            self.started_fit.set()

    def close(self):
        self.cluster.close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    o = _Outage(tmp_path_factory.mktemp("outage"))
    try:
        yield o
    finally:
        o.close()


@pytest.mark.slow
def test_the_cli_outage_starts(outage):
    """The first test starts the 60 s case (see the last test), which then runs beside the others."""
    assert outage.started_fit.wait(120), outage.cluster.logs()
    assert "error" not in outage.result, outage.result.get("error")


# ---------------------------------------------------------------------------
# read()'s rule
# ---------------------------------------------------------------------------


class _StubClient:
    def __init__(self, workers):
        self.workers = workers

    def scheduler_info(self, n_workers=-1):
        return {"workers": self.workers}


@pytest.mark.parametrize("workers, size, reason", [
    ({}, 128 * MiB, "the default 128.00 MiB (the cluster has no workers yet)"),
    ({"a": {"memory_limit": 0, "nthreads": 4}}, 128 * MiB, "have no memory limit"),
    ({"a": {"memory_limit": 256 * MiB, "nthreads": 1}, "b": {"memory_limit": 2**30, "nthreads": 1}},
     8 * MiB, "1/32 of the 256.00 MiB memory limit / 1 thread(s) of the smallest of 2 worker(s)"),
    # the smallest memory per thread decides: 1 GiB over 4 threads
    ({"a": {"memory_limit": 2**30, "nthreads": 4}, "b": {"memory_limit": 512 * MiB, "nthreads": 1}},
     8 * MiB, "1.00 GiB memory limit / 4 thread(s)"),
    ({"a": {"memory_limit": 2**36, "nthreads": 8}}, 128 * MiB, "the largest"),
    ({"a": {"memory_limit": 16 * MiB, "nthreads": 1}}, 1 * MiB, "the smallest"),
])
def test_the_chunk_size_rule(workers, size, reason):
    got, why = auto_chunk_bytes(_StubClient(workers))
    assert got == size and reason in why, why


@pytest.mark.parametrize("limit, threads, chunk, warns", [
    (256 * MiB, 1, 8 * MiB, False),     # the rule's
    (256 * MiB, 1, 16 * MiB, False),
    (256 * MiB, 1, 32 * MiB, True),     # restarts a worker in benchmarks/MEMORY.md
    (512 * MiB, 1, 128 * MiB, True),
    (2**30, 1, 128 * MiB, False),
    (2**30, 4, 128 * MiB, True),
    (2**32, 4, 128 * MiB, False),
])
def test_chunks_too_large_for_the_workers(limit, threads, chunk, warns):
    """Too large: three chunks per thread do not fit in the memory limit beside the worker process."""
    client = _StubClient({"a": {"memory_limit": limit, "nthreads": threads},
                          "b": {"memory_limit": 2**36, "nthreads": 1}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_if_too_large(chunk, "'data.zarr'", "chunks=1000", client=client) == warns
    assert len(caught) == warns
    if warns:
        assert issubclass(caught[0].category, ChunkSizeWarning)
        assert "'data.zarr' (chunks=1000)" in str(caught[0].message)
        assert caught[0].filename == __file__  # points at the caller, outside daskem


def test_read_without_a_client_uses_the_default_and_logs_it(tmp_path):
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=(40_000, 8), chunks=(1000, 8), dtype="f8")
    z[:] = 1.0
    with _LogLines() as log:
        X = read(str(tmp_path / "x.zarr"))
    assert X.numblocks[0] == 1  # 2.4 MiB: one chunk of at most 128 MiB
    assert any("the default 128.00 MiB (no distributed client)" in line for line in log.lines), log.lines


# in-process workers measure this whole process's memory: no thresholds for them
NO_MEMORY_THRESHOLDS = {f"distributed.worker.memory.{k}": False
                        for k in ("target", "spill", "pause", "terminate")}


def test_read_in_a_cluster_follows_its_workers(tmp_path):
    """No workers yet: the default, logged; workers of 512 MiB: 16 MiB chunks; too large: a warning."""
    path = str(tmp_path / "x.zarr")
    z = zarr.create_array(path, shape=(65_536, 8), chunks=(4096, 8), dtype="f8")
    z[:] = 1.0
    # 256 MiB of zeros, not materialised: read() only slices it into chunks
    X = np.zeros((2**22, 8))
    with dask.config.set(NO_MEMORY_THRESHOLDS), LocalCluster(
        n_workers=0, threads_per_worker=1, memory_limit=512 * MiB, processes=False, dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        with _LogLines() as log:
            assert read(X).numblocks[0] == 2
        assert any("the default 128.00 MiB (the cluster has no workers yet)" in line for line in log.lines)
        cluster.scale(1)
        client.wait_for_workers(1, timeout=30)
        with _LogLines() as log, warnings.catch_warnings():
            warnings.simplefilter("error", ChunkSizeWarning)
            assert read(X).chunksize[0] * 64 == 16 * MiB
            # Zarr: whole stored chunks of at most 16 MiB (here all 4 MiB in one)
            assert read(path).numblocks[0] == 1
        assert any("16.00 MiB, 1/32 of the 512.00 MiB memory limit / 1 thread(s)" in line
                   for line in log.lines), log.lines
        # 128 MiB chunks: three per thread do not fit in 512 MiB beside the worker process
        with pytest.warns(ChunkSizeWarning, match=r"row chunks of 128\.00 MiB .*chunks=2097152.*512\.00 MiB "
                                                  r"memory limit.*at most 106\.67 MiB fit"):
            read(X, chunks=2**21)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ChunkSizeWarning)
            read(X, chunks=2**20)  # 64 MiB: fits


def test_the_no_workers_timeout_setting(monkeypatch):
    assert no_workers_timeout() == 300
    with dask.config.set({NO_WORKERS_TIMEOUT_KEY: "10 minutes"}):
        assert no_workers_timeout() == 600
    with dask.config.set({NO_WORKERS_TIMEOUT_KEY: None}):
        assert no_workers_timeout() == float("inf")
    # what `--no-workers-timeout inf` sets, and "inf" from YAML or the environment
    for forever in (float("inf"), "inf", "Infinity"):
        with dask.config.set({NO_WORKERS_TIMEOUT_KEY: forever}):
            assert no_workers_timeout() == float("inf")
    assert no_workers_timeout(12.5) == 12.5
    monkeypatch.setenv("DASK_DASKEM__NO_WORKERS_TIMEOUT", "45")
    dask.config.refresh()
    try:
        assert no_workers_timeout() == 45
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    with pytest.raises(ValueError, match="no_workers_timeout"):
        GaussianMixture(no_workers_timeout=-1).fit(make_blobs(60))
    assert daskem.BayesianGaussianMixture(no_workers_timeout=30).get_params()["no_workers_timeout"] == 30


def test_the_cli_refuses_a_bad_no_workers_timeout(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", str(tmp_path / "m.npz"), str(tmp_path / "x.zarr"), "--no-workers-timeout", "0"])
    assert info.value.code == 2 and "--no-workers-timeout" in capsys.readouterr().err


def test_the_watchdog_in_process():
    """An in-process cluster: no worker for 1 s stops a pass; a worker within 2 s lets it finish."""
    X = da.from_array(make_blobs(3000), chunks=500)
    with LocalCluster(n_workers=0, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        started = time.monotonic()
        with pytest.raises(NoWorkersError, match=r"had no worker for \d+ s, longer than the no-workers "
                                                 r"timeout of 1 s"):
            with no_workers_watch(1.0):
                X.sum().compute()
        assert time.monotonic() - started < 30
        threading.Timer(1.0, cluster.scale, args=(1,)).start()
        with no_workers_watch(5.0):
            assert np.isclose(X.sum().compute(), make_blobs(3000).sum())


def test_watches_of_many_blocks_and_threads_share_one_watchdog_thread():
    """Starting a thread per watch cost every pass on worker processes 4-6 ms."""
    X = da.from_array(make_blobs(3000), chunks=500)
    seen = []  # the watchdog threads alive inside each block (kept, so identities stay unique)

    def watched_sums():
        for _ in range(10):
            with no_workers_watch(60.0):
                X.sum().compute()
                seen.extend(t for t in threading.enumerate() if t.name == "daskem-no-workers-watch")

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        runners = [threading.Thread(target=watched_sums) for _ in range(3)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
    assert len(seen) >= 30 and len({id(t) for t in seen}) == 1


# ---------------------------------------------------------------------------
# A fit with read()'s defaults on 2 x 256 MiB workers, data 4x their memory
# ---------------------------------------------------------------------------

SMALL_WORKER = 256 * MiB
N_FEATURES = 64  # many features per row: the cheapest rows per byte to fit
STORED_ROWS = 4096  # 2 MiB stored chunks


@pytest.mark.slow
@pytest.mark.timeout(900)  # about half a minute on an idle 2-core machine
def test_fit_with_read_defaults_on_small_workers(tmp_path):
    """Dask's default memory thresholds (pause at 80%, restart at 95%): what a user gets.

    Worker processes take about 190 MiB with daskem's modules loaded, so a
    256 MiB worker has 15 MiB to its pause threshold and 50 MiB to its restart:
    read()'s rule gives 8 MiB chunks, whose passes need about 20 MiB
    (benchmarks/MEMORY.md), so the workers may pause for a moment, never restart.
    """
    rng = np.random.default_rng(7)
    means = rng.uniform(-10.0, 10.0, size=(3, N_FEATURES))
    scales = rng.uniform(0.5, 1.5, size=(3, N_FEATURES))
    weights = rng.dirichlet(np.full(3, 20.0))
    row_bytes = N_FEATURES * 8
    n_rows = 2 * 2 * SMALL_WORKER // row_bytes  # twice the two workers' memory
    path = str(tmp_path / "large.zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=SMALL_WORKER, host="127.0.0.1",
                      dashboard_address=":0", processes=True) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        # written on the workers, one stored chunk per task, uncompressed
        mixture_array(n_rows, STORED_ROWS, means, scales, weights, seed=11).to_zarr(path, compressors=None)
        peaks = dict.fromkeys(pids.values(), 0)
        stop = threading.Event()

        def poll():
            while not stop.wait(0.02):
                for pid in peaks:
                    try:
                        peaks[pid] = max(peaks[pid], psutil.Process(pid).memory_info().rss)
                    except psutil.Error:
                        pass

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            with _LogLines() as log:
                X = read(path)  # read()'s defaults
                assert X.nbytes >= 2 * 2 * SMALL_WORKER
                gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
        finally:
            stop.set()
            poller.join()
        # an explicit chunking too large for these workers is warned about, naming the sizes
        with pytest.warns(ChunkSizeWarning, match=r"128\.00 MiB .*chunks=262144.*256\.00 MiB memory limit"):
            read(path, chunks=128 * MiB // row_bytes)
        assert client.run(os.getpid) == pids, "a worker was restarted"
    assert X.chunksize[0] * row_bytes == 8 * MiB, X.chunksize
    assert any("1/32 of the 256.00 MiB memory limit / 1 thread(s)" in line for line in log.lines), log.lines
    assert any(line.startswith("data cache: streamed") for line in log.lines), log.lines
    assert all(peak < 0.95 * SMALL_WORKER for peak in peaks.values()), peaks
    assert gm.converged_
    d2 = ((means[:, None, :] - gm.means_[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(gm.means_[d2.argmin(axis=1)], means, atol=0.05)


# ---------------------------------------------------------------------------
# The watchdog on real processes
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("blobs") / "blobs.zarr")
    write_zarr(da.from_array(make_blobs(24_000, seed=3), chunks=(1000, 3)), path)
    return path


@pytest.mark.slow
def test_a_worker_back_within_the_timeout_lets_the_fit_finish(tmp_path, blobs_path):
    with dask.config.set(scheduler="threads"):
        reference = _fit(read(blobs_path, chunks=1000), cache=False)
    cluster = RealCluster(tmp_path / "cluster")
    try:
        (victim,) = cluster.add_workers(1)
        with Client(cluster.address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=90)
            _warm_imports(client)
            replaced = {}

            def kill_then_replace(n_iter, *args):
                if n_iter == 2 and not replaced:
                    victim.send_signal(signal.SIGKILL)
                    replaced["timer"] = threading.Timer(4.0, cluster.add_workers, args=(1,))
                    replaced["timer"].start()

            gm = GaussianMixture(**OUTAGE_FIT, cache=False, no_workers_timeout=20)
            started = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                engine_fit(gm, read(blobs_path, chunks=1000), on_iteration=kill_then_replace)
            replaced["timer"].join()
            assert victim.poll() == -signal.SIGKILL
            assert time.monotonic() - started < 90
    finally:
        cluster.close()
    _assert_same_model(gm, reference)


@pytest.mark.slow
def test_the_watchdog_stops_a_predict_and_a_score(tmp_path, blobs_path):
    """A scheduler without workers: `daskem predict` exits 1 after its timeout, writing nothing;
    ``score`` raises NoWorkersError after the estimator's."""
    model = str(tmp_path / "model.npz")
    gm = GaussianMixture(3, random_state=0).fit(make_blobs(3000))
    gm.save(model)
    cluster = RealCluster(tmp_path / "cluster")
    try:
        out = str(tmp_path / "labels.zarr")
        started = time.monotonic()
        code, _, events, stderr = _cli(["predict", model, blobs_path, "--out", out, "--scheduler",
                                        cluster.address, "--no-workers-timeout", "5", "--log-json"],
                                       timeout=120)
        seconds = time.monotonic() - started
        assert code == 1, stderr
        assert 5 <= seconds < 60, seconds
        message = events[-1]["message"]
        assert "NoWorkersError" in message and cluster.address in message and "timeout of 5 s" in message
        assert not os.path.exists(out)
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".labels.zarr")]

        with Client(cluster.address, timeout="30s"):
            gm.set_params(no_workers_timeout=3)
            started = time.monotonic()
            with pytest.raises(NoWorkersError, match=cluster.address):
                gm.score(read(blobs_path))
            assert 3 <= time.monotonic() - started < 40
    finally:
        cluster.close()


# ---------------------------------------------------------------------------
# The 60 s CLI outage: collected last
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cli_exits_1_after_its_no_workers_timeout_then_resumes(outage):
    outage.thread.join(240)
    assert not outage.thread.is_alive(), outage.cluster.logs()
    result = outage.result
    assert "error" not in result, result.get("error")
    assert result["code"] == 1, result["stderr"]
    waited = result["exited"] - result["killed"]
    assert OUTAGE_TIMEOUT <= waited <= OUTAGE_TIMEOUT + 30, waited
    (error,) = [e for e in result["events"] if e["event"] == "error"]
    assert error["exit_code"] == 1
    assert "NoWorkersError" in error["message"] and outage.cluster.address in error["message"]
    assert "timeout of 60 s" in error["message"] and "--resume" in error["message"]
    # the checkpoint is kept, with the chunking of the first worker's rule (2 GiB: 64 MiB chunks)
    assert result["checkpoint"] and not result["model_written"]
    assert result["chunking"]["chunk_bytes"] == 64 * MiB and result["chunking"]["chunks"] is None
    (chunks,) = [e for e in result["events"] if e["event"] == "chunks"]
    assert "1/32 of the 2.00 GiB memory limit" in chunks["message"]

    code, _, events, stderr = result["resume"]
    assert code == 0, stderr
    (resumed,) = [e for e in events if e["event"] == "resume"]
    assert resumed["iteration"] >= 2
    (chunks,) = [e for e in events if e["event"] == "chunks"]
    assert "as the interrupted fit did" in chunks["message"]
    assert not has_checkpoint(outage.checkpoint)
    # bit for bit the undisturbed fit: the same data, streamed in the first worker's chunks
    # (two); the second worker's rule (128 MiB: one chunk) gives another model
    resumed = daskem.load(outage.out)
    with dask.config.set(scheduler="threads"):
        reference = _fit(read(outage.data, chunk_bytes=64 * MiB), cache=False)
        other = _fit(read(outage.data, chunk_bytes=128 * MiB), cache=False)
    assert reference.n_iter_ == resumed.n_iter_ == OUTAGE_FIT["max_iter"]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    assert not np.array_equal(other.means_, resumed.means_)
    np.testing.assert_allclose(other.means_, resumed.means_, rtol=1e-9, atol=1e-12)  # ... to rounding

