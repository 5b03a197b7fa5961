"""Every script in examples/ runs on small data and prints what it promises.

Each example runs in a subprocess with DASKEM_EXAMPLE_ROWS small and its
outputs in a temporary directory; the tests check the exit code, a key line of
output and the files written. The examples that talk to a cluster through
DASK_SCHEDULER_ADDRESS are pointed at an in-process cluster of this test
process (threads on 127.0.0.1), which is cheaper than worker processes.
"""

import importlib.util
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import daskem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
# a local cluster of threads in the `daskem` process: quick to start
SMALL_LOCAL_CLUSTER = "--workers 1 --threads-per-worker 2 --no-processes"

pytestmark = pytest.mark.timeout(300)


def test_every_example_is_tested():
    tested = {"local_numpy.py", "out_of_core_zarr.py", "parquet_fit.py", "remote_cluster.py",
              "scheduled_batch.sh", "prefect_flow.py"}
    present = {n for n in os.listdir(EXAMPLES) if n.endswith((".py", ".sh"))}
    assert present == tested


@pytest.fixture
def bin_dir(tmp_path):
    """`daskem` and `python` on PATH resolve to this interpreter and this checkout."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, args in (("daskem", '-m daskem.cli "$@"'), ("python", '"$@"')):
        path = d / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d


@pytest.fixture
def env(tmp_path, bin_dir):
    e = dict(os.environ)
    e.pop("DASK_SCHEDULER_ADDRESS", None)
    e.update(
        PATH=os.pathsep.join([str(bin_dir), e.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join([REPO, e.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        DASKEM_EXAMPLE_ROWS="3000",
        DASKEM_EXAMPLE_DIR=str(tmp_path / "out"),
        DASKEM_NO_PREFECT="1",
        DASKEM_RETRY_DELAY="1",
        OMP_NUM_THREADS="1",
    )
    return e


@pytest.fixture(scope="module")
def scheduler_address():
    """An in-process cluster (threads) on 127.0.0.1 for the examples to connect to."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


def run(args, env, timeout=240):
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr


def run_example(name, *args, env):
    path = os.path.join(EXAMPLES, name)
    cmd = ["bash", path] if name.endswith(".sh") else [sys.executable, path]
    return run([*cmd, *args], env)


def test_local_numpy(env, tmp_path):
    proc, out = run_example("local_numpy.py", env=env)
    assert proc.returncode == 0, out
    assert "fitted 3 components to 3000 rows x 2 features" in proc.stdout
    assert "converged: True" in proc.stdout
    error = float(proc.stdout.split("nearest fitted mean: ")[1].split()[0])
    assert error < 0.5
    assert daskem.load(str(tmp_path / "out" / "model.npz")).n_components == 3


def test_out_of_core_zarr(env, tmp_path):
    proc, out = run_example("out_of_core_zarr.py", "--workers", "1", "--read-chunk-rows", "750",
                            env=env)
    assert proc.returncode == 0, out
    assert "reading it as 4 chunk(s)" in proc.stdout   # 4 stored chunks of 750 rows
    assert "streamed fit: converged: True" in proc.stdout
    assert "labels written to" in proc.stdout
    counts = eval(proc.stdout.split("rows per component: ")[1].splitlines()[0])
    assert sum(counts) == 3000
    assert os.path.isdir(tmp_path / "out" / "labels.zarr")


def test_parquet_fit(env, tmp_path):
    proc, out = run_example("parquet_fit.py", env=env)
    assert proc.returncode == 0, out
    assert "columns ['height', 'width', 'depth', 'mass']" in proc.stdout
    assert "converged: True" in proc.stdout
    assert "probabilities written to" in proc.stdout
    import pandas as pd

    proba = pd.read_parquet(tmp_path / "out" / "probabilities.parquet")
    assert list(proba.columns) == ["p0", "p1", "p2"] and len(proba) == 3000
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.slow
def test_remote_cluster_without_address_starts_a_local_cluster(env):
    proc, out = run_example("remote_cluster.py", env=env)
    assert proc.returncode == 0, out
    assert "DASK_SCHEDULER_ADDRESS is not set: started a local cluster at tcp://127.0.0.1:" in proc.stdout
    assert "converged: True" in proc.stdout


def test_remote_cluster_connects_to_the_address(env, scheduler_address, tmp_path):
    env["DASK_SCHEDULER_ADDRESS"] = scheduler_address
    proc, out = run_example("remote_cluster.py", env=env)
    assert proc.returncode == 0, out
    assert f"connected to {scheduler_address}" in proc.stdout
    assert "1 worker(s), 2 thread(s)" in proc.stdout
    assert "model written to" in proc.stdout
    assert daskem.load(str(tmp_path / "out" / "model.npz")).n_components == 4


def _cli_available():
    return importlib.util.find_spec("daskem.cli") is not None


needs_cli = pytest.mark.skipif(not _cli_available(), reason="daskem.cli is not there yet")


@pytest.mark.slow
@needs_cli
def test_scheduled_batch(env, scheduler_address, tmp_path):
    env["DASK_SCHEDULER_ADDRESS"] = scheduler_address   # read by `daskem fit`
    out_dir = tmp_path / "out"
    proc, out = run_example("scheduled_batch.sh", env=env)
    assert proc.returncode == 0, out
    assert "model written to" in proc.stdout
    assert '"event": "finished"' in proc.stderr                # --log-json events
    models = sorted(p for p in os.listdir(out_dir) if p.startswith("model-2"))
    assert len(models) == 1
    assert os.readlink(out_dir / "model-latest.npz") == models[0]
    assert not any(p.startswith("checkpoint-") for p in os.listdir(out_dir))  # removed when done
    assert daskem.load(str(out_dir / models[0])).n_components == 4

    # the same day again: nothing to do
    proc, out = run_example("scheduled_batch.sh", env=env)
    assert proc.returncode == 0, out
    assert "already exists; nothing to do" in proc.stdout


@needs_cli
def test_scheduled_batch_does_not_retry_bad_input(env, tmp_path):
    proc, out = run_example("scheduled_batch.sh", str(tmp_path / "missing.zarr"), env=env)
    assert proc.returncode == 2, out
    assert "attempt 1/3" in proc.stdout and "attempt 2/3" not in proc.stdout
    assert "not retrying" in proc.stderr


@pytest.mark.slow
@needs_cli
def test_prefect_flow_without_prefect(env, scheduler_address, tmp_path):
    env["DASK_SCHEDULER_ADDRESS"] = scheduler_address   # read by `daskem fit` and `daskem score`
    proc, out = run_example("prefect_flow.py", env=env)
    assert proc.returncode == 0, out
    assert "Prefect is not installed: running the steps with subprocess" in proc.stdout
    assert "$ daskem fit" in proc.stdout and "--checkpoint" in proc.stdout and "--resume" in proc.stdout
    assert "refit done:" in proc.stdout
    assert any(p.startswith("model-") for p in os.listdir(tmp_path / "out"))


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), os.path.join(EXAMPLES, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_cli
def test_prefect_flow_commands_parse(monkeypatch):
    """The command lines prefect_flow.py builds are accepted by the CLI parser."""
    from test_deploy import parse_cli

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    flow = _load_example("prefect_flow.py")
    name, params = parse_cli(["daskem", *flow.fit_args("d.zarr", "m.npz", "ckpt", 3, ("--workers", "2"))])
    assert name == "fit" and params["resume"] and params["checkpoint"] == "ckpt"
    assert params["n_components"] == 3 and params["workers"] == 2
    name, params = parse_cli(["daskem", *flow.score_args("m.npz", "d.zarr")])
    assert name == "score" and params["as_json"]


@pytest.mark.skipif(importlib.util.find_spec("prefect") is None, reason="Prefect is not installed")
@needs_cli
def test_prefect_flow_with_prefect(env, tmp_path):  # pragma: no cover - Prefect is optional
    env.pop("DASKEM_NO_PREFECT")
    env["DASKEM_LOCAL_CLUSTER"] = SMALL_LOCAL_CLUSTER
    proc, out = run_example("prefect_flow.py", env=env)
    assert proc.returncode == 0, out
    assert "running as a Prefect flow" in proc.stdout
    assert "refit done:" in proc.stdout
