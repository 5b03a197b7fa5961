"""daskem on a real multi-process Dask cluster on 127.0.0.1.

A scheduler and workers run as separate processes (``dask scheduler`` /
``dask worker`` with a scheduler file), as in deploy/slurm. The tests fit
through the Python API (``Client(scheduler_file=...)``) and the CLI
(``DASK_SCHEDULER_ADDRESS``, ``--scheduler-file``, ``--scheduler tcp://``),
SIGKILL a worker in the middle of a fit (results must equal an undisturbed
run with the same chunking to 1e-12), SIGKILL the CLI itself and resume from
its checkpoint, and kill every worker: with the scheduler's no-workers timeout
the fit fails with NoWorkerError (CLI exit code 1, then ``--resume``), without
it the fit waits and finishes once a replacement worker joins. Workers that
cannot import daskem, or have another version of it installed, make a fit (and
the CLI) fail at once with a message naming them.

Workers run without a nanny so that SIGKILL really removes them. Every process
is torn down in a ``finally``; servers listen on 127.0.0.1 only.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, get_task_stream
from distributed.scheduler import NoWorkerError
from sklearn.exceptions import ConvergenceWarning

import daskem
from conftest import make_blobs
from daskem._engine import fit
from daskem.io import read, write_zarr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK_ROWS = 1000
N_ROWS = 24_000
FIT = dict(n_components=3, covariance_type="full", tol=0.0, max_iter=6, random_state=0)

pytestmark = pytest.mark.timeout(180)


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # one BLAS thread per Dask thread, as in the deploy recipes
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def _warm_imports(client):
    """Import on every worker what the first fit would import anyway (seconds)."""
    # a builtin, so nothing from this test module has to be importable there
    client.run(exec, "import daskem._gaussian, daskem._initialization, daskem._kernels, daskem.io, zarr")


class RealCluster:
    """A ``dask scheduler`` subprocess and ``dask worker`` subprocesses on 127.0.0.1."""

    def __init__(self, directory, scheduler_env=None, scheduler_args=(), worker_args=()):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.scheduler_file = os.path.join(self.dir, "scheduler.json")
        self.workers = []
        self._logs = []
        self.worker_args = list(worker_args)
        self.scheduler = self._spawn(
            "scheduler",
            [sys.executable, "-m", "distributed.cli.dask_scheduler",
             "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", self.scheduler_file,
             "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
             "--idle-timeout", "600s", *scheduler_args],
            _env(**(scheduler_env or {})),
        )
        deadline = time.monotonic() + 60
        while not self._scheduler_file_ready():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start:\n" + self.logs())
            time.sleep(0.05)
        with open(self.scheduler_file) as f:
            self.address = json.load(f)["address"]
        assert re.match(r"(tcp|tls)://127\.0\.0\.1:\d+$", self.address), self.address

    def _scheduler_file_ready(self):
        try:
            with open(self.scheduler_file) as f:
                return "address" in json.load(f)
        except (OSError, ValueError):
            return False

    def _spawn(self, name, args, env):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        self._logs.append(log)
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

    def add_workers(self, n, prelude=None, **env):
        """Start n single-threaded workers (no nanny); return their Popen objects.

        ``prelude``: Python code the worker process runs before starting the
        worker; ``env``: extra environment variables.
        """
        launch = ["-m", "distributed.cli.dask_worker"]
        if prelude is not None:
            launch = ["-c", prelude + "\nfrom distributed.cli.dask_worker import main\nmain()"]
        new = []
        for _ in range(n):
            i = len(self.workers)
            proc = self._spawn(
                f"worker-{i}",
                [sys.executable, *launch,
                 "--scheduler-file", self.scheduler_file,
                 "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--name", f"worker-{i}",
                 "--local-directory", os.path.join(self.dir, f"worker-{i}"),
                 "--death-timeout", "60", *self.worker_args],
                _env(**env),
            )
            self.workers.append(proc)
            new.append(proc)
        return new

    def worker_address(self, client, proc):
        """Address of the worker running in ``proc``."""
        pids = client.run(os.getpid)
        for addr, pid in pids.items():
            if pid == proc.pid:
                return addr
        raise LookupError(f"no worker with pid {proc.pid} in {pids}")

    def logs(self):
        out = []
        for log in self._logs:
            log.flush()
            with open(log.name) as f:
                out.append(f"--- {os.path.basename(log.name)}\n{f.read()[-3000:]}")
        return "\n".join(out)

    def close(self):
        procs = self.workers + [self.scheduler]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self._logs:
            log.close()


def _connect(cluster, n_workers):
    client = Client(cluster.address, timeout="30s")
    try:
        client.wait_for_workers(n_workers, timeout=90)
        _warm_imports(client)
    except BaseException:
        client.close()
        raise
    return client


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "blobs.zarr")
    X = make_blobs(N_ROWS, seed=3)
    write_zarr(da.from_array(X, chunks=(CHUNK_ROWS, 3)), path)
    return path


@pytest.fixture(scope="module")
def references(data_path):
    """Undisturbed fits with the local threaded scheduler, same chunking, by max_iter."""
    cache = {}

    def get(max_iter=FIT["max_iter"], cached=False):
        # cached fits merge small chunks before persisting: compare like with like
        if (max_iter, cached) not in cache:
            with dask.config.set(scheduler="threads"):
                cache[max_iter, cached] = _fit(
                    read(data_path, chunks=CHUNK_ROWS), cache=cached, max_iter=max_iter
                )
        return cache[max_iter, cached]

    return get


@pytest.fixture(scope="module")
def reference(references):
    return references()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Scheduler + 2 workers shared by the tests below (victims are added per test)."""
    c = RealCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.add_workers(2)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def client(cluster):
    with _connect(cluster, 2) as c:
        yield c


def _fit(X, on_iteration=None, **kwargs):
    gm = daskem.GaussianMixture(**{**FIT, **kwargs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: runs max_iter iterations
        fit(gm, X, on_iteration=on_iteration)
    return gm


def _assert_same_model(a, b, rtol=1e-12):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=0, err_msg=name)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol, atol=0)
    assert a.n_iter_ == b.n_iter_


def _cli_args(data_path, out, max_iter=FIT["max_iter"], *extra):
    """`daskem fit` with the options of FIT and the same chunking as the references."""
    return ["fit", data_path, "--out", out, "--n-components", str(FIT["n_components"]),
            "--covariance-type", FIT["covariance_type"], "--tol", "0", "--max-iter", str(max_iter),
            "--random-state", str(FIT["random_state"]), "--chunks", str(CHUNK_ROWS),
            "--cache", "false", "--log-json", *extra]


def _cli(args, timeout=150):
    """Run the daskem CLI of this checkout; returns (exit code, stdout, JSON events, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "daskem.cli", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, _events(proc.stderr), proc.stderr


def _events(text):
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


class _CLIRun:
    """`daskem ... --log-json` in the background; calls ``at(event)`` on each JSON event."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "daskem.cli", *args], env=env or _env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []

    def follow(self, at, timeout=150):
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stderr:
                self.stderr.append(line)
                for event in _events(line):
                    at(event)
            self.proc.wait()
        finally:
            timer.cancel()
        return self.proc.returncode, _events("".join(self.stderr))

    def text(self):
        return "".join(self.stderr)


needs_cli = pytest.mark.skipif(
    importlib.util.find_spec("daskem.cli") is None, reason="daskem.cli is not there yet"
)


# ---------------------------------------------------------------------------
# Fitting on the cluster
# ---------------------------------------------------------------------------


def test_fit_through_python_api(cluster, client, data_path, reference):
    X = read(data_path, chunks=CHUNK_ROWS)
    with get_task_stream(client) as ts:
        gm = _fit(X, cache=False)
    workers_used = {t["worker"] for t in ts.data}
    assert workers_used and workers_used <= set(client.scheduler_info()["workers"])
    _assert_same_model(gm, reference)
    assert gm.n_iter_ == FIT["max_iter"]

    # the scheduler-file connection of deploy/slurm works the same way
    with Client(scheduler_file=cluster.scheduler_file, set_as_default=False) as other:
        assert other.scheduler.address == cluster.address


def test_fit_cached_on_cluster(client, data_path, references):
    """cache=True persists the chunks on the workers; same result."""
    gm = _fit(read(data_path, chunks=CHUNK_ROWS), cache=True)
    _assert_same_model(gm, references(cached=True))


# ---------------------------------------------------------------------------
# Losing workers
# ---------------------------------------------------------------------------


class _Killer:
    """Kill ``procs`` while the fit is running.

    Armed by the iteration callback at ``at_iter``; waits (in a thread) until
    one of the victims is processing tasks of the next iteration, then
    SIGKILLs every victim, so chunks and partial sums held by them are lost.
    """

    def __init__(self, client, cluster, procs, at_iter=2):
        self.client, self.procs, self.at_iter = client, procs, at_iter
        self.addresses = [cluster.worker_address(client, p) for p in procs]
        self.thread = None
        self.killed_while_processing = None
        self.killed_at = None

    def __call__(self, n_iter, lower_bound, change, params, seconds):
        if n_iter == self.at_iter and self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self):
        deadline = time.monotonic() + 5
        busy = False
        while time.monotonic() < deadline:
            try:
                processing = self.client.processing(workers=self.addresses)
            except Exception:
                break
            if any(processing.get(a) for a in self.addresses):
                busy = True
                break
            time.sleep(0.002)
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()
        self.killed_while_processing = busy
        self.killed_at = time.monotonic()


def test_worker_killed_mid_fit_gives_identical_result(cluster, client, data_path, reference):
    """SIGKILL a worker during iteration 3 of a streaming fit (cache=False).

    Its running tasks and the partial sums it held are lost; the scheduler
    re-reads those chunks from the Zarr store on the other workers. The result
    equals the undisturbed fit with the same chunking.
    """
    (victim,) = cluster.add_workers(1)
    client.wait_for_workers(3, timeout=90)
    _warm_imports(client)
    killer = _Killer(client, cluster, [victim])
    X = read(data_path, chunks=CHUNK_ROWS)

    gm = _fit(X, on_iteration=killer, cache=False)

    killer.thread.join(10)
    assert victim.poll() == -signal.SIGKILL
    assert killer.killed_while_processing, "the victim held no task when it was killed"
    deadline = time.monotonic() + 10
    while killer.addresses[0] in client.scheduler_info()["workers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killer.addresses[0] not in client.scheduler_info()["workers"]
    _assert_same_model(gm, reference)


def test_worker_killed_with_cached_data(cluster, client, data_path, references):
    """Persisted chunks lost with a worker are recomputed from the source."""
    (victim,) = cluster.add_workers(1)
    client.wait_for_workers(3, timeout=90)
    _warm_imports(client)
    killer = _Killer(client, cluster, [victim])

    gm = _fit(read(data_path, chunks=CHUNK_ROWS), on_iteration=killer, cache=True)

    killer.thread.join(10)
    assert victim.poll() == -signal.SIGKILL
    _assert_same_model(gm, references(cached=True))


@needs_cli
def test_cli_killed_then_resumed(cluster, client, data_path, references, tmp_path):
    """The client (`daskem fit --checkpoint`) is SIGKILLed during iteration 4; the
    same command with --resume continues from the checkpoint and ends with the
    model of an uninterrupted fit. Connects through DASK_SCHEDULER_ADDRESS
    (as in the DaskJob), then through --scheduler-file (as in the sbatch script)."""
    model, checkpoint, max_iter = str(tmp_path / "model.npz"), str(tmp_path / "ckpt"), 12
    run = _CLIRun(_cli_args(data_path, model, max_iter, "--checkpoint", checkpoint),
                  env=_env(DASK_SCHEDULER_ADDRESS=cluster.address))

    def kill_after_iteration_3(event):
        # the checkpoint of iteration 3 is written right after this event: the
        # kill lands at the end of iteration 3 or during iteration 4
        if event["event"] == "iteration" and event["iteration"] == 3:
            run.proc.send_signal(signal.SIGKILL)

    code, events = run.follow(kill_after_iteration_3)
    assert code == -signal.SIGKILL, run.text()
    (connected,) = [e for e in events if e["event"] == "cluster" and "workers" in e]
    assert connected["scheduler"] == cluster.address and connected["workers"] >= 2
    assert os.listdir(checkpoint) and not os.path.exists(model)

    code, _, events, stderr = _cli(
        _cli_args(data_path, model, max_iter, "--checkpoint", checkpoint, "--resume",
                  "--scheduler-file", cluster.scheduler_file)
    )
    assert code == 0, stderr
    (resumed,) = [e for e in events if e["event"] == "resume"]
    assert 2 <= resumed["iteration"] < max_iter
    iterations = [e["iteration"] for e in events if e["event"] == "iteration"]
    assert iterations == list(range(resumed["iteration"] + 1, max_iter + 1))
    _assert_same_model(daskem.load(model), references(max_iter))
    # the checkpoint is removed once the model is written (a hidden temporary
    # file of a save cut short by the SIGKILL may remain)
    assert not os.path.exists(checkpoint) or all(n.startswith(".") for n in os.listdir(checkpoint))


# ---------------------------------------------------------------------------
# Losing every worker
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timeout_cluster(tmp_path_factory):
    """A scheduler with distributed.scheduler.no-workers-timeout set, as
    deploy/README.md recommends for batch jobs (workers are added per test)."""
    c = RealCluster(tmp_path_factory.mktemp("timeout-cluster"),
                    scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "2s"})
    try:
        yield c
    finally:
        c.close()


def test_all_workers_killed_fails_with_no_workers_timeout(timeout_cluster, data_path):
    """With the no-workers timeout on the scheduler, losing every worker fails
    the fit with NoWorkerError within seconds, and the estimator is left as it
    was before ``fit``. Without it the scheduler waits for workers forever
    (see test_all_workers_killed_then_replaced)."""
    procs = timeout_cluster.add_workers(1)
    with _connect(timeout_cluster, 1) as client:
        killer = _Killer(client, timeout_cluster, procs)
        gm = daskem.GaussianMixture(**FIT, cache=False)
        start = time.monotonic()
        with pytest.raises(NoWorkerError, match="without any running workers"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fit(gm, read(data_path, chunks=CHUNK_ROWS), on_iteration=killer)
        assert time.monotonic() - start < 60
        assert all(p.poll() == -signal.SIGKILL for p in procs)
        assert not hasattr(gm, "means_")  # nothing half-fitted


@pytest.mark.slow
@needs_cli
def test_cli_all_workers_killed_exits_1_then_resumes(timeout_cluster, data_path, reference, tmp_path):
    """`daskem fit --checkpoint` loses every worker after iteration 2: it exits
    with code 1 and a NoWorkerError message, keeping the checkpoint; once a
    worker is back, --resume finishes with the uninterrupted fit's model."""
    model, checkpoint = str(tmp_path / "model.npz"), str(tmp_path / "ckpt")
    procs = timeout_cluster.add_workers(1)
    with _connect(timeout_cluster, 1):
        pass
    run = _CLIRun(_cli_args(data_path, model, FIT["max_iter"], "--checkpoint", checkpoint,
                            "--scheduler", timeout_cluster.address))

    def kill_workers_after_iteration_2(event):
        if event["event"] == "iteration" and event["iteration"] == 2:
            for p in procs:
                p.send_signal(signal.SIGKILL)

    code, events = run.follow(kill_workers_after_iteration_2)
    assert code == 1, run.text()
    (error,) = [e for e in events if e["event"] == "error"]
    assert "NoWorkerError" in error["message"] and error["exit_code"] == 1
    assert os.listdir(checkpoint) and not os.path.exists(model)

    timeout_cluster.add_workers(1)
    with _connect(timeout_cluster, 1):
        pass
    code, _, events, stderr = _cli(
        _cli_args(data_path, model, FIT["max_iter"], "--checkpoint", checkpoint, "--resume",
                  "--scheduler", timeout_cluster.address)
    )
    assert code == 0, stderr
    assert [e for e in events if e["event"] == "resume"][0]["iteration"] >= 2
    _assert_same_model(daskem.load(model), reference)


def test_all_workers_killed_then_replaced(cluster, client, data_path, reference):
    """Without a no-workers timeout the fit waits; a new worker finishes it,
    with the same result (what an orchestrator restarting workers gives).
    Kills every worker of the shared cluster, so it runs last."""
    alive = [p for p in cluster.workers if p.poll() is None]
    killer = _Killer(client, cluster, alive)
    result = {}

    def fit():
        try:
            result["model"] = _fit(read(data_path, chunks=CHUNK_ROWS), on_iteration=killer, cache=False)
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while killer.killed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killer.killed_at is not None, cluster.logs()
    assert all(p.poll() == -signal.SIGKILL for p in alive)
    thread.join(3)
    assert thread.is_alive(), "the fit should wait for workers, not fail or finish"

    cluster.add_workers(1)
    thread.join(90)
    assert not thread.is_alive(), cluster.logs()
    assert "error" not in result, result.get("error")
    _assert_same_model(result["model"], reference)


# ---------------------------------------------------------------------------
# TLS, as deploy/README.md describes it
# ---------------------------------------------------------------------------


def _readme_blocks():
    with open(os.path.join(REPO, "deploy", "README.md")) as f:
        return re.findall(r"```(\w*)\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.slow
@pytest.mark.tls
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_the_readme_recipe(tmp_path, data_path, reference, monkeypatch):
    """The README's certificate commands, scheduler/worker TLS flags and client
    environment variables give a working mutually-authenticated cluster; a
    client without them cannot connect."""
    blocks = _readme_blocks()
    (make_certs,) = [code for lang, code in blocks if "openssl req -x509" in code]
    out = subprocess.run(["bash", "-e", "-c", make_certs], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

    (servers,) = [code for lang, code in blocks if "dask scheduler --protocol tls" in code]
    flags = {role: code.split("--tls-ca-file")[1].split() for role, code in
             zip(("scheduler", "worker"), servers.split("dask worker"), strict=True)}
    tls_flags = {role: ["--tls-ca-file", *(str(tmp_path / a) if a.endswith(".pem") else a
                                           for a in args if a != "\\")]
                 for role, args in flags.items()}
    assert tls_flags["scheduler"] == ["--tls-ca-file", str(tmp_path / "ca.pem"),
                                      "--tls-cert", str(tmp_path / "scheduler.pem"),
                                      "--tls-key", str(tmp_path / "scheduler-key.pem")]
    c = RealCluster(tmp_path / "cluster", scheduler_args=["--protocol", "tls", *tls_flags["scheduler"]],
                    worker_args=tls_flags["worker"])
    try:
        assert c.address.startswith("tls://")
        c.add_workers(1)
        with pytest.raises(Exception, match="TLS"):
            Client(c.address, timeout="10s", set_as_default=False)   # no client certificate

        (exports,) = [code for lang, code in blocks if "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in code]
        for name, value in re.findall(r"^export (DASK_\w+)=(\S+)", exports, flags=re.M):
            monkeypatch.setenv(name, value.replace("/etc/daskem/tls/", str(tmp_path) + "/"))
        dask.config.refresh()
        try:
            with _connect(c, 1) as client:
                assert client.scheduler.address.startswith("tls://")
                gm = _fit(read(data_path, chunks=CHUNK_ROWS), cache=False)
        finally:
            monkeypatch.undo()
            dask.config.refresh()
        _assert_same_model(gm, reference)
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Workers that cannot run daskem's tasks
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_cluster(tmp_path_factory):
    """Scheduler + a good worker, one that cannot import daskem, one with daskem 0.0.1 installed.

    Without the check, a task reaching the second worker kills it (a cluster of
    such workers only then waits forever), and the third runs another
    version's kernels.
    """
    root = tmp_path_factory.mktemp("broken")
    # the metadata pip leaves for an installed distribution, found before this checkout's
    old = root / "old-install" / "daskem-0.0.1.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: daskem\nVersion: 0.0.1\n")
    c = RealCluster(root / "cluster")
    try:
        good, = c.add_workers(1)
        blocked, = c.add_workers(1, prelude="import sys; sys.modules['daskem'] = None")
        other, = c.add_workers(1, PYTHONPATH=os.pathsep.join([str(old.parent), REPO]))
        with Client(c.address, timeout="30s") as client:
            client.wait_for_workers(3, timeout=90)
            c.addresses = {name: c.worker_address(client, proc)
                           for name, proc in [("good", good), ("blocked", blocked), ("other", other)]}
        yield c
    finally:
        c.close()


def test_fit_on_workers_that_cannot_run_daskem_fails_fast(broken_cluster):
    gm = daskem.GaussianMixture(2, random_state=0)
    started = time.monotonic()
    with Client(broken_cluster.address, timeout="30s"):
        with pytest.raises(RuntimeError) as info:
            gm.fit(make_blobs(600, seed=4))
    message = str(info.value)
    assert f"1 cannot import daskem ({broken_cluster.addresses['blocked']})" in message
    assert f"1 have daskem 0.0.1 installed ({broken_cluster.addresses['other']})" in message
    assert f"runs daskem {daskem.__version__}" in message
    assert broken_cluster.addresses["good"] not in message
    assert not hasattr(gm, "means_")
    assert time.monotonic() - started < 30
    # nothing was sent to the workers: all three are still there
    assert all(w.poll() is None for w in broken_cluster.workers)


def test_predict_on_workers_that_cannot_run_daskem_fails_when_called(broken_cluster):
    X = make_blobs(600, seed=4)
    gm = daskem.GaussianMixture(2, random_state=0).fit(X)  # no client yet: threads
    with Client(broken_cluster.address, timeout="30s"):
        with pytest.raises(RuntimeError, match="1 cannot import daskem"):
            gm.predict(da.from_array(X, chunks=200))
    assert all(w.poll() is None for w in broken_cluster.workers)


@needs_cli
def test_cli_on_workers_that_cannot_run_daskem_exits_1_and_writes_nothing(
    broken_cluster, data_path, tmp_path
):
    out = str(tmp_path / "model.npz")
    code, stdout, events, stderr = _cli(_cli_args(data_path, out, 2, "--scheduler", broken_cluster.address),
                                        timeout=60)
    assert code == 1, stderr
    assert "cannot import daskem" in events[-1]["message"]
    assert "have daskem 0.0.1 installed" in events[-1]["message"]
    assert not os.path.exists(out)
