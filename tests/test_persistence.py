"""Model files: round trips for every covariance type, atomic writes, and clear errors
for corrupted, truncated, foreign and future files (no pickle anywhere)."""

import json
import os
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import daskem
from conftest import make_blobs
from daskem import GaussianMixture
from daskem.persistence import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    load_model,
    read_model_metadata,
    save_model,
    write_npz_atomic,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
ATTRIBUTES = ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]


@pytest.fixture(scope="module")
def X():
    return make_blobs(600, seed=1)


@pytest.fixture(scope="module")
def fitted(X):
    return {ct: GaussianMixture(3, covariance_type=ct, random_state=0).fit(X) for ct in COVARIANCE_TYPES}


@pytest.fixture
def model_file(tmp_path, fitted):
    path = tmp_path / "model.npz"
    fitted["full"].save(path, data={"source": "blobs", "shape": [600, 3], "dtype": "float64"})
    return path


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, X, fitted, covariance_type):
    gm = fitted[covariance_type]
    path = tmp_path / f"{covariance_type}.npz"
    gm.save(path, data={"source": "in memory", "shape": list(X.shape), "dtype": "float64"})
    loaded = daskem.load(path)
    assert type(loaded) is GaussianMixture
    for name in ATTRIBUTES:
        assert np.array_equal(getattr(loaded, name), getattr(gm, name)), name
        assert getattr(loaded, name).dtype == getattr(gm, name).dtype
    assert loaded.n_iter_ == gm.n_iter_
    assert loaded.converged_ == gm.converged_
    assert loaded.lower_bound_ == gm.lower_bound_
    assert loaded.lower_bounds_ == gm.lower_bounds_
    assert loaded.iteration_seconds_ == gm.iteration_seconds_
    assert loaded.n_features_in_ == 3
    assert not hasattr(loaded, "feature_names_in_")
    assert loaded.get_params() == gm.get_params()
    assert np.array_equal(loaded.predict(X), gm.predict(X))
    assert np.array_equal(loaded.predict_proba(X), gm.predict_proba(X))
    assert np.array_equal(loaded.score_samples(X), gm.score_samples(X))
    assert loaded.bic(X) == gm.bic(X)


def test_metadata_is_self_describing(model_file):
    meta, arrays = read_model_metadata(model_file)
    assert meta["format"] == FORMAT and meta["format_version"] == FORMAT_VERSION
    assert meta["estimator"] == "daskem.gaussian_mixture.GaussianMixture"
    assert meta["covariance_type"] == "full"
    assert meta["n_components"] == 3 and meta["n_features_in_"] == 3
    assert meta["params"]["n_components"] == 3 and meta["params"]["random_state"] == 0
    assert set(meta["fitted"]) == {"n_iter_", "converged_", "lower_bound_", "n_passes_"}
    assert meta["metadata"]["data"] == {"source": "blobs", "shape": [600, 3], "dtype": "float64"}
    assert set(meta["versions"]) >= {"daskem", "dask", "numpy"}
    assert meta["versions"]["daskem"] == daskem.__version__
    # every array loads without pickle and none is an object array
    with np.load(model_file, allow_pickle=False) as npz:
        for name in npz.files:
            assert npz[name].dtype.kind != "O", name
        assert json.loads(npz[META_KEY].tobytes().decode()) == meta
    assert set(arrays) >= {"weights_", "means_", "lower_bounds_", "iteration_seconds_"}


def test_feature_names_random_state_and_array_params_round_trip(tmp_path, X):
    df = pd.DataFrame(X, columns=["x", "y", "z"])
    means_init = np.array([[0.0, 0, 0], [5, 5, 5], [-4, 6, 0]])
    gm = GaussianMixture(3, means_init=means_init, random_state=np.random.RandomState(7)).fit(df)
    gm.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert list(loaded.feature_names_in_) == ["x", "y", "z"]
    assert loaded.feature_names_in_.dtype == object
    assert np.array_equal(loaded.means_init, means_init)
    assert np.array_equal(loaded.predict(df), gm.predict(df))
    # the random generator's state survives: sampling continues identically
    assert np.array_equal(loaded.sample(20)[0], gm.sample(20)[0])


def test_max_iter_zero_model_with_infinite_lower_bound(tmp_path, X):
    gm = GaussianMixture(2, max_iter=0, random_state=0).fit(X)
    assert gm.lower_bound_ == -np.inf
    gm.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.lower_bound_ == -np.inf and loaded.lower_bounds_ == []


def test_save_is_atomic_and_replaces(tmp_path, fitted, monkeypatch):
    path = tmp_path / "sub" / "model.npz"
    fitted["diag"].save(path)  # creates the folder
    before = path.read_bytes()
    fitted["tied"].save(path)  # replaces
    assert load_model(path).covariance_type == "tied"
    assert sorted(os.listdir(path.parent)) == ["model.npz"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    current = path.read_bytes()
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        fitted["full"].save(path)
    assert path.read_bytes() == current != before
    assert sorted(os.listdir(path.parent)) == ["model.npz"]  # no temporary file left


def test_unfitted_estimator_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(GaussianMixture(2), tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_model(tmp_path / "nope.npz")


def _bad_files(tmp_path, model_file):
    data = model_file.read_bytes()
    files = {}

    def put(name, content):
        p = tmp_path / name
        p.write_bytes(content)
        files[name] = p

    put("empty.npz", b"")
    put("random.npz", np.random.RandomState(0).bytes(2000))
    put("truncated.npz", data[: len(data) // 2])
    put("cut_end.npz", data[:-30])
    flipped = bytearray(data)
    # flip a byte inside the means_ array's data
    with zipfile.ZipFile(model_file) as zf:
        info = zf.getinfo("means_.npy")
    flipped[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 140] ^= 0x55
    put("flipped.npz", bytes(flipped))
    put("json.npz", json.dumps({"format": FORMAT, "weights": [1.0]}).encode())
    put("pickle.npz", b"\x80\x04\x95" + b"\x00" * 20)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3), means=np.zeros((3, 2)))
    files["other.npz"] = other
    obj = tmp_path / "object.npz"
    np.savez(obj, **{META_KEY: np.array([{"format": FORMAT}], dtype=object)})
    files["object.npz"] = obj
    return files


def test_corrupted_truncated_and_foreign_files_give_one_clear_error(tmp_path, model_file):
    expected = {
        "empty.npz": "it is empty",
        "random.npz": "signature",
        "truncated.npz": "corrupted or truncated",
        "cut_end.npz": "corrupted or truncated",
        "flipped.npz": "corrupt",
        "json.npz": "JSON",
        "pickle.npz": "pickle",
        "other.npz": "another program",
        "object.npz": "pickled Python objects",
    }
    for name, path in _bad_files(tmp_path, model_file).items():
        with pytest.raises(ValueError) as info:
            load_model(path)
        message = str(info.value)
        assert str(path) in message, (name, message)
        assert "not a usable daskem model file" in message
        assert expected[name] in message, (name, message)
        assert "\n" not in message


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_model(tmp_path)


def _rewrite(model_file, target, edit_meta=None, edit_arrays=None, keep_manifest=False):
    meta, arrays = read_model_metadata(model_file)
    arrays = dict(arrays)
    manifest = meta.pop("arrays")
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    write_npz_atomic(target, META_KEY, meta, arrays)
    if keep_manifest:  # tampered data with the old checksums
        meta["arrays"] = manifest
        contents = {META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays}
        np.savez(target, **contents)
    return target


def test_future_version_and_other_formats(tmp_path, model_file):
    future = _rewrite(model_file, tmp_path / "future.npz",
                      edit_meta=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="newer daskem.*upgrade daskem") as info:
        load_model(future)
    assert str(future) in str(info.value)

    other = _rewrite(
        model_file, tmp_path / "ckpt.npz", edit_meta=lambda m: m.update(format="daskem-checkpoint")
    )
    with pytest.raises(ValueError, match="format is 'daskem-checkpoint'"):
        load_model(other)


def test_tampered_and_inconsistent_contents(tmp_path, model_file):
    def shift(arrays):
        arrays["means_"] = arrays["means_"] + 1.0

    tampered = _rewrite(model_file, tmp_path / "tampered.npz", edit_arrays=shift, keep_manifest=True)
    with pytest.raises(ValueError, match="checksum"):
        load_model(tampered)

    def drop_component(arrays):
        arrays["weights_"] = arrays["weights_"][:2]

    inconsistent = _rewrite(model_file, tmp_path / "bad_shape.npz", edit_arrays=drop_component)
    with pytest.raises(ValueError, match="bad_shape.npz.*do not fit together|components"):
        load_model(inconsistent)

    def nan_means(arrays):
        arrays["means_"] = arrays["means_"] * np.nan

    with pytest.raises(ValueError, match="NaN"):
        load_model(_rewrite(model_file, tmp_path / "nan.npz", edit_arrays=nan_means))

    bad_param = _rewrite(model_file, tmp_path / "bad_param.npz",
                         edit_meta=lambda m: m["params"].update(covariance_type="banana"))
    with pytest.raises(ValueError, match="bad_param.npz"):
        load_model(bad_param)
