"""The command line's model selection and sample weights, in subprocesses."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr

import daskem
from conftest import make_blobs

FAST = ["--workers", "1", "--threads-per-worker", "2", "--no-processes", "--no-dashboard"]


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "daskem", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("select")
    X = make_blobs(1500)
    w = np.random.RandomState(0).randint(0, 3, size=len(X)).astype(float)
    z = zarr.create_array(tmp / "data.zarr", shape=X.shape, chunks=(500, 3), dtype="f8")
    z[:] = X
    zw = zarr.create_array(tmp / "weights.zarr", shape=w.shape, chunks=(500,), dtype="f8")
    zw[:] = w
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "w": w}).to_parquet(tmp / "data.parquet")
    return tmp, X, w


def test_select_prints_the_table_writes_the_best_model_and_the_plot(files):
    tmp, X, _ = files
    r = run("select", "data.zarr", "-k", "1-4", "--covariance-type", "full,diag", "--out", "best.npz",
            "--plot", "bic.png", "--random-state", "0", "--json", *FAST, cwd=tmp)
    assert r.returncode == 0, r.stderr
    table = pd.DataFrame(json.loads(r.stdout))
    assert len(table) == 8
    best = daskem.load(tmp / "best.npz")
    assert (best.n_components, best.covariance_type) == (3, "full")
    np.testing.assert_allclose(table.bic.min(), best.bic(X), rtol=1e-9)
    png = (tmp / "bic.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_fit_with_a_weight_column_equals_the_python_fit(files):
    tmp, X, w = files
    r = run("fit", "data.parquet", "-k", "3", "--weight-column", "w", "--random-state", "0",
            "--out", "weighted.npz", *FAST, cwd=tmp)
    assert r.returncode == 0, r.stderr
    model = daskem.load(tmp / "weighted.npz")
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    alone = daskem.GaussianMixture(3, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(model.means_, alone.means_, rtol=1e-9)


def test_fit_with_a_weights_array_equals_the_python_fit(files):
    tmp, X, w = files
    r = run("fit", "data.zarr", "-k", "3", "--weights", "weights.zarr", "--random-state", "0",
            "--out", "weighted2.npz", *FAST, cwd=tmp)
    assert r.returncode == 0, r.stderr
    alone = daskem.GaussianMixture(3, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(daskem.load(tmp / "weighted2.npz").means_, alone.means_, rtol=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["select", "data.zarr", "-k", "0-3", "--out", "x.npz"], "counts must be positive"),
        (["select", "data.zarr", "-k", "1-1000000000", "--out", "x.npz"], "more than 10000 counts"),
        (["select", "data.zarr", "--covariance-type", "banded", "--out", "x.npz"],
         "invalid --covariance-type"),
        (["fit", "data.parquet", "--weight-column", "nope", "--out", "x.npz"], "'nope' is not a column"),
        (["fit", "data.zarr", "--weights", "missing.zarr", "--out", "x.npz"], "no such file"),
        (["fit", "data.zarr", "--weights", "data.zarr", "--out", "x.npz"], "expected one weight per row"),
    ],
)
def test_bad_selection_and_weight_arguments_exit_2_and_write_nothing(files, args, message):
    tmp, _, _ = files
    r = run(*args, *FAST, cwd=tmp)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "x.npz").exists()


def test_negative_weights_exit_2(files, tmp_path):
    tmp, X, _ = files
    z = zarr.create_array(tmp_path / "neg.zarr", shape=(len(X),), chunks=(500,), dtype="f8")
    z[:] = -1.0
    r = run("fit", tmp / "data.zarr", "--weights", tmp_path / "neg.zarr", "--out", tmp_path / "x.npz",
            *FAST, cwd=tmp_path)
    assert r.returncode == 2 and "Negative values" in r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_a_weights_path_in_a_config_file_is_relative_to_the_file(files, tmp_path):
    tmp, X, w = files
    (tmp / "conf").mkdir(exist_ok=True)
    (tmp / "conf" / "fit.toml").write_text(
        'data = "../data.zarr"\nweights = "../weights.zarr"\nout = "from_config.npz"\n'
        "n_components = 3\nrandom_state = 0\n")
    r = run("fit", "--config", tmp / "conf" / "fit.toml", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    alone = daskem.GaussianMixture(3, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(daskem.load(tmp / "conf" / "from_config.npz").means_, alone.means_,
                               rtol=1e-9)


def test_resuming_with_a_rewritten_weights_file_is_refused(files, tmp_path):
    tmp, X, w = files
    weights = tmp_path / "w.zarr"
    zarr.create_array(weights, shape=w.shape, chunks=(500,), dtype="f8")[:] = w
    fit = ["fit", tmp / "data.zarr", "-k", "3", "--weights", weights, "--max-iter", "2", "--tol", "0",
           "--out", tmp_path / "m.npz", "--checkpoint", tmp_path / "ck", *FAST]
    # --strict keeps the checkpoint of a fit that did not converge
    assert run(*fit, "--strict", cwd=tmp_path).returncode == 3
    zarr.create_array(weights, shape=w.shape, chunks=(500,), dtype="f8", overwrite=True)[:] = w[::-1]
    r = run(*fit, "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "data weight_files" in r.stderr, r.stderr
    assert not (tmp_path / "m.npz").exists()
