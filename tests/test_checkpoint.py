"""Checkpoint files: every FitState written during a fit reads back exactly, and
resuming from any of them gives the uninterrupted fit bit for bit."""

import os
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import make_blobs
from daskem import GaussianMixture
from daskem._checkpoint import (
    FILENAME,
    checkpoint_file,
    differences,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from daskem._engine import fit

PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_"]
OPTIONS = dict(n_components=3, n_init=2, max_iter=6, tol=0.0, init_params="random", random_state=5,
               acceleration=None)
DATA = {"source": "/data/x.zarr", "shape": [900, 3], "dtype": "float64"}


def _fit(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(covariance_type="full", **OPTIONS)
        fit(gm, X, **kw)
    return gm


@pytest.fixture(scope="module")
def X():
    return da.from_array(make_blobs(900, seed=2), chunks=300)


@pytest.fixture(scope="module")
def saved(X, tmp_path_factory):
    """Uninterrupted fit; every state written to its own checkpoint folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    folders = []

    def on_state(state):
        folder = root / f"ck{len(folders):03d}"
        save_checkpoint(folder, state, OPTIONS, DATA)
        folders.append((folder, state.init, len(state.lower_bounds), state.best is not None))

    return _fit(X, on_state=on_state), folders


def test_a_checkpoint_after_every_initialisation_and_iteration(saved):
    _, folders = saved
    # per initialisation: one state when drawn, then one per iteration
    assert [(init, n) for _, init, n, _ in folders] == [
        (i, n) for i in range(2) for n in range(OPTIONS["max_iter"] + 1)
    ]
    assert [best for _, init, _, best in folders] == [init == 1 for _, init, _, _ in folders]
    for folder, *_ in folders:
        assert os.listdir(folder) == [FILENAME]  # no temporary files left


def test_states_read_back_exactly(saved, X):
    _, folders = saved
    folder = folders[-3][0]
    ck = load_checkpoint(folder)
    assert ck.options == OPTIONS and ck.data == DATA
    state = ck.state
    assert state.init == 1 and len(state.lower_bounds) == ck.n_iter == OPTIONS["max_iter"] - 2
    assert state.rng_state[0] == "MT19937" and state.rng_state[1].dtype == np.uint32
    assert state.lower_bound == state.lower_bounds[-1]
    assert state.best is not None and state.best.n_iter == OPTIONS["max_iter"]
    assert ck.meta["versions"]["numpy"] == np.__version__
    first = load_checkpoint(folders[0][0]).state
    assert first.lower_bound == -np.inf and first.lower_bounds == [] and first.best is None


@pytest.mark.parametrize("index", [0, 3, 6, 7, 9, 13])
def test_resume_from_any_checkpoint_is_bit_for_bit(saved, X, index):
    reference, folders = saved
    state = load_checkpoint(folders[index][0]).state
    resumed = _fit(X, resume=state)
    for name in PARAMS:
        assert np.array_equal(getattr(resumed, name), getattr(reference, name)), name
    assert resumed.lower_bounds_ == reference.lower_bounds_
    assert resumed.lower_bound_ == reference.lower_bound_
    assert resumed.n_iter_ == reference.n_iter_


def test_a_fit_resumed_twice_is_still_bit_for_bit(saved, X, tmp_path):
    reference, folders = saved
    first_resume = load_checkpoint(folders[3][0]).state

    def interrupt_again(state):
        # keep the state two iterations further on, as a second crash would
        done = len(state.lower_bounds)
        if state.init == first_resume.init and done == len(first_resume.lower_bounds) + 2:
            save_checkpoint(tmp_path, state, OPTIONS, DATA)

    _fit(X, resume=first_resume, on_state=interrupt_again)
    second = load_checkpoint(tmp_path)
    assert second.n_iter == len(first_resume.lower_bounds) + 2
    resumed = _fit(X, resume=second.state)
    for name in PARAMS:
        assert np.array_equal(getattr(resumed, name), getattr(reference, name)), name
    assert resumed.lower_bounds_ == reference.lower_bounds_
    assert resumed.n_iter_ == reference.n_iter_


def test_passes_are_counted_across_a_resume(saved, X):
    reference, folders = saved
    state = load_checkpoint(folders[9][0]).state
    assert 0 < state.n_passes < reference.n_passes_
    resumed = _fit(X, resume=state)
    # the resumed process validates the data once more
    assert resumed.n_passes_ == reference.n_passes_ + 1


def test_overwrite_is_atomic(tmp_path, saved):
    _, folders = saved
    a, b = load_checkpoint(folders[2][0]).state, load_checkpoint(folders[5][0]).state
    save_checkpoint(tmp_path, a, OPTIONS, DATA)
    save_checkpoint(tmp_path, b, OPTIONS, DATA)
    assert os.listdir(tmp_path) == [FILENAME]
    assert load_checkpoint(tmp_path).n_iter == len(b.lower_bounds)


def test_missing_and_corrupted_checkpoints(tmp_path, saved):
    assert not has_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_checkpoint(tmp_path)
    good = open(checkpoint_file(saved[1][4][0]), "rb").read()
    path = checkpoint_file(tmp_path)
    for content in (good[: len(good) // 2], b"{}", b"junk"):
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(ValueError, match="not a usable daskem checkpoint file") as info:
            load_checkpoint(tmp_path)
        assert path in str(info.value)
    # a model file is not a checkpoint
    model = GaussianMixture(1).fit(make_blobs(30))
    model.save(path)
    with pytest.raises(ValueError, match="format is 'daskem-model'"):
        load_checkpoint(tmp_path)


def test_differences():
    assert differences(OPTIONS, dict(OPTIONS)) == []
    diffs = differences(
        {**OPTIONS, "data": {"shape": [1, 2]}}, {**OPTIONS, "tol": 0.1, "data": {"shape": [1, 3]}}
    )
    assert diffs == ["data.shape: checkpoint [1, 2], now [1, 3]", "tol: checkpoint 0.0, now 0.1"]
