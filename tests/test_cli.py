"""The ``daskem`` command line, driven as a real subprocess (``python -m daskem.cli``).

Each subprocess pays Python's and Dask's start-up, so flows are grouped into few
invocations and the bad-input cases run concurrently. Usage errors that stop
before any work (bad flags) are also checked in-process through ``main()``.
"""

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import distributed
import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import make_blobs
from daskem import GaussianMixture, load
from daskem._checkpoint import has_checkpoint, load_checkpoint
from daskem._predict import n_parameters
from daskem.cli import Reporter, main
from daskem.io import read

# a small in-process local cluster: quick to start
CLUSTER = ["--workers", "1", "--threads-per-worker", "2", "--no-processes", "--no-dashboard"]
PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_"]
ENV = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def daskem(*args):
    return [sys.executable, "-m", "daskem.cli", *map(str, args)]


def run(*args, cwd, code=0, timeout=180):
    r = subprocess.run(daskem(*args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == code, f"{args}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def write_zarr(path, array, chunk_rows=500):
    chunks = (max(1, min(chunk_rows, array.shape[0])),) + tuple(max(1, s) for s in array.shape[1:])
    z = zarr.create_array(str(path), shape=array.shape, chunks=chunks, dtype=array.dtype, zarr_format=3)
    z[...] = array
    return str(path)


def assert_png(path, min_size=200):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_size and image.shape[1] >= min_size
    assert image.std() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Good and bad data sets, in one folder."""
    d = tmp_path_factory.mktemp("data")
    X = make_blobs(3000, seed=0)
    write_zarr(d / "blobs.zarr", X)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["name"] = "row"  # a non-numeric column
    df.to_parquet(d / "blobs.parquet", row_group_size=500)
    nan = make_blobs(600, seed=1)
    nan[400, 1] = np.nan
    write_zarr(d / "nan.zarr", nan)
    write_zarr(d / "one_d.zarr", np.arange(10.0))
    write_zarr(d / "three_d.zarr", np.zeros((4, 3, 2)))
    write_zarr(d / "empty.zarr", np.zeros((0, 3)))
    write_zarr(d / "two_rows.zarr", np.ones((2, 3)))
    write_zarr(d / "two_features.zarr", np.ones((50, 2)))
    return d


@pytest.fixture(scope="module")
def model(data):
    """A model fitted by the CLI on Zarr, with JSON log events."""
    r = run("fit", "blobs.zarr", "--n-components", 3, "--random-state", 0, "--out", "model.npz",
            "--log-json", *CLUSTER, cwd=data)
    return data / "model.npz", r


def test_fit_on_zarr(model, data):
    path, r = model
    events = [json.loads(line) for line in r.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "finished"
    assert {"cluster", "init", "iteration", "converged"} <= set(names)
    assert names.index("init") < names.index("iteration") < names.index("converged")
    iterations = [e for e in events if e["event"] == "iteration"]
    assert [e["iteration"] for e in iterations] == list(range(1, len(iterations) + 1))
    assert all(e["command"] == "fit" and "time" in e for e in events)
    assert r.stdout == ""  # with --log-json the events are all there is

    gm = load(path)
    assert gm.n_components == 3 and gm.covariance_type == "full" and gm.converged_
    assert gm.n_iter_ == len(iterations) == len(gm.lower_bounds_)
    assert [e["log_likelihood"] for e in iterations] == gm.lower_bounds_
    # the same fit in-process, from the same chunks
    reference = GaussianMixture(3, random_state=0).fit(read(str(data / "blobs.zarr")))
    for name in PARAMS:
        np.testing.assert_allclose(getattr(gm, name), getattr(reference, name), rtol=1e-10, err_msg=name)
    assert events[0]["shape"] == [3000, 3] and events[0]["options"]["n_components"] == 3


def test_fit_reports_its_passes_over_the_data(model):
    path, r = model
    events = {e["event"]: e for e in map(json.loads, r.stderr.splitlines())}
    gm = load(path)
    # validation, the coreset and its final statistics, one per EM iteration
    assert gm.n_passes_ == 1 + 2 + gm.n_iter_
    assert events["converged"]["n_passes"] == events["finished"]["n_passes"] == gm.n_passes_


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A running cluster (in this process) for --scheduler, --scheduler-file and the env var."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            path = tmp_path_factory.mktemp("scheduler") / "scheduler.json"
            client.write_scheduler_file(str(path))
            yield cluster.scheduler_address, path, client


def test_predict_to_zarr_and_score(model, data, tmp_path, scheduler):
    path, _ = model
    address, _, client = scheduler
    X = make_blobs(3000, seed=0)
    gm = load(path)
    r = run("predict", path, data / "blobs.zarr", "--out", tmp_path / "labels.zarr", "--scheduler", address,
            cwd=tmp_path)
    assert f"cluster at {address}: 1 worker(s), 2 thread(s)" in r.stderr
    labels = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")[:]
    assert labels.dtype == np.int64 and np.array_equal(labels, gm.predict(X))

    env = dict(ENV, DASK_SCHEDULER_ADDRESS=address)
    r = subprocess.run(daskem("score", path, data / "blobs.zarr", "--json"), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert f"cluster at {address}" in r.stderr  # the scheduler from the environment
    assert len(client.scheduler_info()["workers"]) == 1  # the CLI left the cluster running
    scores = json.loads(r.stdout)
    assert scores["n_samples"] == 3000 and scores["n_parameters"] == n_parameters(gm)
    assert scores["mean_log_likelihood"] == pytest.approx(gm.score(X), rel=1e-12)
    assert scores["bic"] == pytest.approx(gm.bic(X), rel=1e-12)
    assert scores["aic"] == pytest.approx(gm.aic(X), rel=1e-12)
    assert sorted(os.listdir(tmp_path)) == ["labels.zarr"]


def test_info(model, data, capsys):
    path, _ = model
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(path)])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "3 (full covariances), 3 feature(s)" in text
    assert "converged" in text and str(data / "blobs.zarr") in text
    info = json.loads(run("info", path, "--json", cwd=data).stdout)
    gm = load(path)
    assert info["format"] == "daskem-model" and info["format_version"] == 1
    assert info["n_components"] == 3 and info["n_features_in"] == 3
    assert info["lower_bounds"] == gm.lower_bounds_
    assert np.array_equal(info["means"], gm.means_)
    assert info["metadata"]["data"]["shape"] == [3000, 3]
    assert info["metadata"]["data"]["source"] == str(data / "blobs.zarr")
    assert set(info["versions"]) >= {"daskem", "dask", "numpy"}


def test_plot(model, data, tmp_path, scheduler):
    path, _ = model
    out = tmp_path / "fig.png"
    run("plot", path, data / "blobs.zarr", "--out", out, "--features", "0,2", "--sample", 1000,
        "--scheduler-file", scheduler[1], "--quiet", cwd=tmp_path)
    assert_png(out)
    assert sorted(os.listdir(tmp_path)) == ["fig.png"]


def test_score_samples_and_plot_without_data_in_process(model, data, tmp_path, scheduler, capsys):
    path, _ = model
    gm = load(path)
    with pytest.raises(SystemExit) as info:
        main(["predict", str(path), str(data / "blobs.zarr"), "--score-samples", "--out",
              str(tmp_path / "ll.zarr"), "--scheduler", scheduler[0], "--quiet"])
    assert info.value.code == 0, capsys.readouterr().err
    scores = zarr.open_array(str(tmp_path / "ll.zarr"), mode="r")[:]
    np.testing.assert_allclose(scores, gm.score_samples(make_blobs(3000, seed=0)), rtol=1e-12)

    with pytest.raises(SystemExit) as info:
        main(["plot", str(path), "--pca", "--out", str(tmp_path / "pca.png"), "--quiet"])
    assert info.value.code == 0, capsys.readouterr().err
    assert_png(tmp_path / "pca.png")


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_plotting_every_covariance_type(covariance_type, tmp_path):
    from daskem import plotting

    X = make_blobs(300, seed=3)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    covs = plotting.component_covariances(gm)
    assert covs.shape == (3, 3, 3)
    np.testing.assert_allclose(gm.predict_proba(X), _proba_from_full(gm, covs, X), rtol=1e-6, atol=1e-9)
    W, labels = plotting.projection(gm, pca=True)
    assert W.shape == (3, 2) and np.allclose(W.T @ W, np.eye(2)) and labels[0].startswith("PC1")
    if covariance_type in ("full", "diag"):
        return  # drawing is the same code for every type; two suffice (saving PNGs is slow)
    for kwargs in ({"sample": X, "features": (1, 2)}, {"sample": None, "pca": True}):
        plotting.save_figure(plotting.plot_model(gm, **kwargs), tmp_path / "f.png")
        assert_png(tmp_path / "f.png")
    one_d = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X[:, :1])
    plotting.save_figure(plotting.plot_model(one_d, X[:, :1]), tmp_path / "g.png")
    assert_png(tmp_path / "g.png")
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png"]


def test_plotting_a_model_with_feature_names_colours_the_rows_without_a_warning(recwarn):
    from daskem import plotting

    X = make_blobs(300, seed=3)
    gm = GaussianMixture(3, random_state=0).fit(pd.DataFrame(X, columns=["a", "b", "c"]))
    fig = plotting.plot_model(gm, X, features=(0, 1))
    (scatter,) = [c for ax in fig.axes for c in ax.collections if len(c.get_offsets()) == len(X)]
    expected = [matplotlib_color(f"C{k}") for k in gm.predict(pd.DataFrame(X, columns=["a", "b", "c"]))]
    np.testing.assert_allclose(scatter.get_facecolors()[:, :3], np.array(expected)[:, :3])
    assert not [w for w in recwarn if "feature names" in str(w.message)]


def matplotlib_color(name):
    import matplotlib.colors

    return matplotlib.colors.to_rgba(name)


def _proba_from_full(gm, covs, X):
    from scipy.stats import multivariate_normal

    parts = zip(gm.weights_, gm.means_, covs, strict=True)
    dens = np.stack([w * multivariate_normal(m, c).pdf(X) for w, m, c in parts], 1)
    return dens / dens.sum(axis=1, keepdims=True)


def test_parquet_fit_from_config_file_with_overriding_flags(data, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "nightly.toml").write_text(
        f'data = "{data / "blobs.parquet"}"\n'
        'out = "models/nightly.npz"          # relative to this file\n'
        'columns = ["a", "b", "c"]\n'
        "n-components = 2\n"
        'covariance_type = "diag"\n'
        "max-iter = 50\n"
        "random_state = 3\n"
        "workers = 1\n"
        "threads-per-worker = 2\n"
        "processes = false\n"
        "dashboard = false\n"
        "quiet = true\n"
    )
    # run from elsewhere; the command line overrides n-components
    run("fit", "--config", jobs / "nightly.toml", "--n-components", 3, cwd=tmp_path)
    gm = load(jobs / "models" / "nightly.npz")
    assert gm.n_components == 3  # flag
    assert gm.covariance_type == "diag" and gm.max_iter == 50 and gm.random_state == 3  # config
    assert list(gm.feature_names_in_) == ["a", "b", "c"]

    # probabilities of the Parquet rows, to Parquet
    out = tmp_path / "proba.parquet"
    run("predict", jobs / "models" / "nightly.npz", data / "blobs.parquet", "--columns", "a,b,c",
        "--proba", "--out", out, "--quiet", *CLUSTER, cwd=tmp_path)
    proba = pd.read_parquet(out)
    assert list(proba.columns) == ["p0", "p1", "p2"] and len(proba) == 3000
    X = pd.read_parquet(data / "blobs.parquet", columns=["a", "b", "c"])
    np.testing.assert_allclose(proba.to_numpy(), gm.predict_proba(X), rtol=1e-12, atol=1e-300)


def _cli(capsys, *args):
    """Run a command in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def parquet_with_holes(tmp_path_factory):
    """Blobs with 10% of the values missing, as Parquet with columns a, b, c; the same rows
    with the columns in another order and an extra one; and a file that lacks column b."""
    d = tmp_path_factory.mktemp("named")
    X = make_blobs(1500, seed=4)
    X[np.random.default_rng(4).random(X.shape) < 0.1] = np.nan
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df.to_parquet(d / "train.parquet")
    df[["c", "a", "b"]].assign(id=np.arange(len(df), dtype=float)).to_parquet(d / "shuffled.parquet")
    df[["a", "c"]].assign(e=0.0).to_parquet(d / "lacking.parquet")
    return d, X


def test_a_fit_on_parquet_records_its_columns_and_later_commands_read_them_by_name(
        parquet_with_holes, scheduler, tmp_path, capsys):
    d, X = parquet_with_holes
    model = tmp_path / "m.npz"
    code, _, err = _cli(capsys, "fit", d / "train.parquet", "-k", 3, "--missing", "marginalize",
                        "--random-state", 0, "--out", model, "--scheduler", scheduler[0], "--quiet")
    assert code == 0, err
    gm = load(model)
    assert list(gm.feature_names_in_) == ["a", "b", "c"]

    scores = []
    for source in ("train.parquet", "shuffled.parquet"):
        code, out, err = _cli(capsys, "score", model, d / source, "--json",
                              "--scheduler", scheduler[0], "--quiet")
        assert code == 0, err
        scores.append(json.loads(out)["mean_log_likelihood"])
    named = pd.DataFrame(X, columns=["a", "b", "c"])
    assert scores[0] == scores[1] == pytest.approx(gm.score(named), rel=1e-12)

    out = tmp_path / "imputed.parquet"
    code, _, err = _cli(capsys, "impute", model, d / "shuffled.parquet", "--out", out,
                        "--scheduler", scheduler[0], "--quiet")
    assert code == 0, err
    imputed = pd.read_parquet(out)
    assert list(imputed.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(imputed.to_numpy(), np.asarray(gm.impute(named)), rtol=1e-12)


def test_a_parquet_source_lacking_a_models_column_is_refused_by_name(parquet_with_holes, scheduler,
                                                                      tmp_path, capsys):
    d, _ = parquet_with_holes
    model = tmp_path / "m.npz"
    code, _, err = _cli(capsys, "fit", d / "train.parquet", "-k", 2, "--missing", "marginalize",
                        "--max-iter", 3, "--out", model, "--scheduler", scheduler[0], "--quiet")
    assert code == 0, err
    out = tmp_path / "labels.parquet"
    code, _, err = _cli(capsys, "predict", model, d / "lacking.parquet", "--out", out,
                        "--scheduler", scheduler[0], "--quiet")
    assert code == 2
    assert "has no column(s) b" in err and "fitted on columns a, b, c" in err and "--columns" in err
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_resume_after_sigkill_is_bit_for_bit(data, tmp_path, monkeypatch, capsys):
    fit = ["fit", data / "blobs.zarr", "-k", 3, "--n-init", 2, "--max-iter", 20, "--tol", 0,
           "--init-params", "random", "--random-state", 1, "--chunks", 500, "--quiet", *CLUSTER]
    # the uninterrupted reference runs meanwhile
    reference = subprocess.Popen(daskem(*fit, "--out", "reference.npz"), cwd=tmp_path, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resumable = fit + ["--out", "model.npz", "--checkpoint", "ckpt"]
    victim = subprocess.Popen(daskem(*resumable), cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and victim.poll() is None:
        if has_checkpoint(tmp_path / "ckpt"):
            state = load_checkpoint(tmp_path / "ckpt").state
            # in the second initialisation, with the first one's result kept as best
            if state.init == 1 and len(state.lower_bounds) >= 3:
                victim.send_signal(signal.SIGKILL)
                killed_at = (state.init, len(state.lower_bounds))
                break
        time.sleep(0.005)
    victim.wait()
    assert killed_at is not None, "the fit ended before it could be killed"
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "model.npz").exists()
    state = load_checkpoint(tmp_path / "ckpt").state
    assert state.init == 1 and state.best is not None and 3 <= len(state.lower_bounds) < 20

    # refused (in-process, to save start-up time): an existing checkpoint without
    # --resume, and a resume with other options or other data
    monkeypatch.chdir(tmp_path)
    other_data = tmp_path / "other.zarr"
    write_zarr(other_data, make_blobs(3000, seed=9))
    for extra, text in [
        ([], "pass --resume to continue it"),
        (["--resume", "--reg-covar", "1e-3"], "reg_covar: checkpoint 1e-06, now 0.001"),
        (["--resume", "--chunks", "1000"], "data row_chunks.count: checkpoint 6, now 3"),
    ]:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in resumable + extra])
        err = capsys.readouterr().err
        assert info.value.code == 2 and text in err and len(err.strip().splitlines()) == 1, err
    argv = [str(other_data) if a == data / "blobs.zarr" else str(a) for a in resumable]
    with pytest.raises(SystemExit) as info:
        main(argv + ["--resume"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "data source: checkpoint" in err and "data files." in err, err
    assert load_checkpoint(tmp_path / "ckpt").n_iter == len(state.lower_bounds)  # untouched
    assert not (tmp_path / "model.npz").exists()

    run(*resumable, "--resume", cwd=tmp_path)
    assert reference.wait(timeout=150) == 0, reference.stderr.read()
    a, b = load(tmp_path / "reference.npz"), load(tmp_path / "model.npz")
    for name in PARAMS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_ and a.lower_bound_ == b.lower_bound_
    assert a.n_iter_ == b.n_iter_ == 20
    assert not os.path.exists(tmp_path / "ckpt")  # removed once the model is written


def test_demo(tmp_path):
    """The README's first command, as it is: 2,000,000 rows streamed from Zarr, dozens of
    iterations, the dashboard's address (its wall time is in benchmarks/RESULTS.md, not here)."""
    r = run("demo", cwd=tmp_path, timeout=240)
    assert_png(tmp_path / "daskem-demo.png")
    summary = re.search(r"demo model: 4 full component\(s\), 2 feature\(s\); converged after (\d+) "
                        r"iteration\(s\).*; 2000000 rows", r.stdout)
    assert summary and int(summary.group(1)) >= 10, r.stdout
    assert "plot written to daskem-demo.png" in r.stdout
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", r.stderr), r.stderr
    assert "iteration" in r.stderr and "2,000,000 rows" in r.stderr
    assert os.listdir(tmp_path) == ["daskem-demo.png"]


# ---------------------------------------------------------------------------
# Bad input: exit code, one line on stderr, no traceback, nothing written
# ---------------------------------------------------------------------------


def test_bad_input(data, model, tmp_path):
    d, m = data, model[0]
    (tmp_path / "corrupt.npz").write_bytes(m.read_bytes()[:700])
    cases = [
        # (what, args, exit code, text in the message)
        ("non-numeric parquet column", ["fit", d / "blobs.parquet", "--out", "m.npz"], 2,
         "(--columns on the command line)"),
        ("nan", ["fit", d / "nan.zarr", "-k", 2, "--out", "m.npz", "--checkpoint", "ck", "-q", *CLUSTER],
         2, "NaN"),
        ("1-D", ["fit", d / "one_d.zarr", "--out", "m.npz"], 2, "expected 2-D data"),
        ("3-D", ["fit", d / "three_d.zarr", "--out", "m.npz"], 2, "expected 2-D data"),
        ("empty", ["fit", d / "empty.zarr", "--out", "m.npz"], 2, "is empty"),
        ("fewer rows than components", ["fit", d / "two_rows.zarr", "-k", 3, "--out", "m.npz"], 2, "fewer"),
        ("feature count mismatch", ["predict", m, d / "two_features.zarr", "--out", "l.zarr"], 2,
         "2 feature(s) but the model"),
        ("missing data", ["fit", d / "missing.zarr", "--out", "m.npz"], 2, "no such file"),
        ("bad flag value", ["fit", d / "blobs.zarr", "--covariance-type", "banana", "--out", "m.npz"], 2,
         "--covariance-type"),
        ("missing model", ["predict", "missing.npz", d / "blobs.zarr", "--out", "l.zarr"], 2,
         "model file not found: 'missing.npz'"),
        ("corrupted model", ["score", "corrupt.npz", d / "blobs.zarr"], 2,
         "'corrupt.npz' is not a usable daskem model file"),
        ("nan at predict", ["predict", m, d / "nan.zarr", "--out", "l.zarr", "-q", *CLUSTER], 2, "NaN"),
        ("no convergence with --strict",
         ["fit", d / "blobs.zarr", "-k", 3, "--max-iter", 1, "--tol", 0, "--strict", "--out", "m.npz",
          "-q", *CLUSTER], 3, "did not converge"),
    ]
    before = sorted(os.listdir(tmp_path))

    def attempt(case):
        return subprocess.run(daskem(*case[1]), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                              timeout=180)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, cases))
    failures = []
    for (what, _, code, text), r in zip(cases, results, strict=True):
        lines = r.stderr.strip().splitlines()
        if (r.returncode != code or len(lines) != 1 or not lines[0].startswith("daskem: error: ")
                or text not in lines[0] or "Traceback" in r.stderr or r.stdout):
            failures.append(f"{what}: exit {r.returncode} (expected {code})\n{r.stderr}{r.stdout}")
    assert not failures, "\n".join(failures)
    assert sorted(os.listdir(tmp_path)) == before  # no output, checkpoint or temporary left


def test_existing_outputs_and_bad_config_files(data, model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.npz").write_bytes(b"keep me")
    (tmp_path / "labels.zarr").mkdir()
    (tmp_path / "bad.toml").write_text('data = "x.zarr"\nn-clusters = 3\n')
    (tmp_path / "broken.toml").write_text('data = "x.zarr\n')
    (tmp_path / "typed.toml").write_text('data = "x.zarr"\nout = "m.npz"\nn_components = "many"\n')
    before = sorted(os.listdir(tmp_path))
    for argv, text in [
        (["fit", str(data / "blobs.zarr"), "--out", "existing.npz"], "model already exists"),
        (["predict", str(model[0]), str(data / "blobs.zarr"), "--out", "labels.zarr"], "pass --overwrite"),
        (["plot", str(model[0]), "--out", "existing.npz"], "pass --overwrite"),
        (["fit", "--config", "bad.toml"], "unknown option 'n-clusters'"),
        (["fit", "--config", "broken.toml"], "invalid TOML"),
        (["fit", "--config", "typed.toml"], "--n-components"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and text in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "existing.npz").read_bytes() == b"keep me"


def test_an_output_that_cannot_be_written_is_refused_before_any_work(data, model, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_bytes(b"not a folder")
    before = sorted(os.listdir(tmp_path))
    for argv, what in [
        (["fit", str(data / "blobs.zarr"), "--out", "a_file/m.npz", "--checkpoint", "ck"], "the model"),
        (["select", str(data / "blobs.zarr"), "-k", "1-2", "--out", "m.npz", "--plot", "a_file/p.png"],
         "the plot"),
        (["predict", str(model[0]), str(data / "blobs.zarr"), "--out", "a_file/deeper/l.zarr"], "the output"),
    ]:
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and f"cannot write {what}" in err and "is not a directory" in err, (argv, err)
    # no model, checkpoint or plot written, not even the select's model before its plot
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("argv,text", [
    (["fit", "x.zarr", "--out", "m.npz", "--n-components", "0"], "--n-components"),
    (["fit", "x.zarr", "--out", "m.npz", "--cache", "sometimes"], "--cache"),
    (["fit", "x.zarr", "--out", "m.npz", "--bogus"], "No such option: --bogus"),
    (["fit", "x.zarr", "--out", "m.npz", "--resume"], "--resume needs --checkpoint"),
    (["fit", "--out", "m.npz"], "missing DATA"),
    (["fit", "x.zarr"], "missing --out"),
    (["fit", "x.zarr", "--out", "m.npz", "--memory-limit", "lots"], "--memory-limit"),
    (["fit", "x.zarr", "--out", "m.npz", "--config", "nowhere.toml"], "config file not found"),
    (["predict", "m.npz", "x.zarr", "--out", "l.csv"], "output format"),
    (["predict", "m.npz", "x.zarr", "--out", "l.zarr", "--proba", "--score-samples"], "at most one"),
    (["predict", "m.npz", "x.zarr"], "--out"),
    (["score", "m.npz"], "DATA"),
    (["plot", "m.npz", "--features", "0,1", "--pca"], "at most one"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors(argv, text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daskem: error: ") and text in lines[0], captured.err
    assert captured.out == "" and os.listdir(tmp_path) == []


def test_help_documents_exit_codes_and_streams(capsys):
    for argv in (["--help"], ["fit", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 success; 1 any other failure; 2 bad usage or bad input" in out
    assert "3 no convergence with --strict" in out
    assert "JSON object per line on stderr" in out
    assert "--checkpoint" in out and "--resume" in out and "--config" in out


def test_help_shows_formulas_and_optional_arguments_as_written(capsys):
    for argv in (["impute", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = " ".join(capsys.readouterr().out.split())
    # square brackets survive Rich's markup, and an optional argument is bracketed once
    assert "E[value | observed values, k]" in out
    assert "[DATA]" in out and "[[DATA]]" not in out


def test_a_malformed_scheduler_address_is_bad_usage(data, model, capsys):
    scheduler = dask.config.get("scheduler", None)
    code, _, err = _cli(capsys, "score", model[0], data / "blobs.zarr", "--scheduler", "notanaddress")
    assert code == 2 and "invalid --scheduler 'notanaddress'" in err, err
    # and no failed client is left as this process's scheduler
    assert dask.config.get("scheduler", None) == scheduler
    with pytest.raises(ValueError):
        distributed.default_client()


# ---------------------------------------------------------------------------
# Progress display
# ---------------------------------------------------------------------------


def _drive(reporter):
    reporter.begin_fit(2, 10)
    reporter.on_init(0)
    reporter.on_iteration(1, -3.5, float("inf"), 0.25)
    reporter.on_iteration(2, -3.25, 0.25, 0.125)
    reporter.on_init(1)
    reporter.on_iteration(1, -3.0, float("inf"), 0.5)
    reporter.end_fit()
    reporter.event("finished", "model written to m.npz", out="m.npz")


def test_live_display_on_a_terminal():
    stream = io.StringIO()
    reporter = Reporter("fit", stream=stream, terminal=True)
    assert reporter.mode == "rich"
    _drive(reporter)
    text = stream.getvalue()
    assert "init 1/2" in text and "init 2/2" in text and "-3.250000" in text and "0.12s/it" in text
    assert "model written to m.npz" in text


def test_plain_lines_and_json_lines_off_a_terminal():
    stream = io.StringIO()
    _drive(Reporter("fit", stream=stream, terminal=False))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "daskem fit: initialisation 1/2"
    assert lines[1].startswith("daskem fit: iteration    1  log-likelihood -3.500000  change inf")
    assert lines[-1] == "daskem fit: model written to m.npz"

    stream = io.StringIO()
    _drive(Reporter("fit", stream=stream, log_json=True, terminal=True))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["init", "iteration", "iteration", "init", "iteration", "finished"]
    assert events[1]["change"] is None and events[2]["change"] == 0.25  # JSON has no infinity

    stream = io.StringIO()
    quiet = Reporter("fit", stream=stream, quiet=True, terminal=True)
    _drive(quiet)
    quiet.error("something\nwent wrong", 2)
    assert stream.getvalue() == "daskem: error: something went wrong\n"


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_local_cluster_profiles_its_workers_only_for_the_dashboard(dashboard):
    # the workers' profiler serves only the dashboard's profile page, and costs CPU
    from daskem.cli._options import ClusterOptions, dask_client

    options = ClusterOptions(workers=1, threads_per_worker=1, processes=False, dashboard=dashboard)
    with dask_client(options, Reporter("fit", stream=io.StringIO(), terminal=False)) as client:
        profiled = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert list(profiled.values()) == [dashboard]


async def _loop_errors_logged_after_abandoning(exceptions):
    """Run on a loop: what asyncio logs for futures failed with ``exceptions`` that nobody
    awaits."""
    import asyncio
    import gc

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(f"{record.getMessage()} {record.exc_info and record.exc_info[1]!r}")

    collect = Collect()
    logging.getLogger("asyncio").addHandler(collect)
    try:
        for exception in exceptions:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exception)
            del future
            gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(collect)
    return collect.messages


@pytest.mark.parametrize("processes", [False, True])
def test_an_abandoned_timeout_of_a_shutdown_stays_off_stderr_but_other_loop_errors_do_not(processes):
    # a loaded machine's worker close can leave a timed-out wait nobody awaits; asyncio then
    # prints "Future exception was never retrieved" after the command's one line of outcome
    # (from the client's loop, and from the workers' loops: they write to the command's stderr)
    from daskem.cli._options import ClusterOptions, dask_client

    options = ClusterOptions(workers=1, threads_per_worker=1, processes=processes, dashboard=False)
    abandoned = [TimeoutError("Timeout"), ValueError("a real loop error")]
    with dask_client(options, Reporter("fit", stream=io.StringIO(), terminal=False)) as client:
        on_workers = client.run(_loop_errors_logged_after_abandoning, abandoned)
        on_client = client.sync(_loop_errors_logged_after_abandoning, abandoned)
    assert len(on_workers) == 1
    for messages in [*on_workers.values(), on_client]:
        assert len(messages) == 1 and "never retrieved" in messages[0], messages
        assert "a real loop error" in messages[0], messages
