"""Files written by daskem 0.1.0 (before the engine refactoring) keep loading and resuming.

The fixtures in tests/fixtures/legacy were written by that version's code;
make_legacy_fixtures.py there records how.
"""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import GaussianMixture
from daskem._checkpoint import load_checkpoint
from daskem._engine import fit

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "legacy")
PARAMS = ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"]
# the options the checkpoint's fit ran with (make_legacy_fixtures.py); 0.1.0 ran plain EM
CHECKPOINT_OPTIONS = dict(n_components=3, covariance_type="full", n_init=2, max_iter=8, tol=0.0,
                          random_state=5, acceleration=None)


@pytest.fixture(scope="module")
def data():
    return np.load(os.path.join(HERE, "data.npy"))


def test_a_model_file_from_0_1_0_loads_and_predicts_as_it_did(data):
    gm = daskem.load(os.path.join(HERE, "model.npz"))
    assert isinstance(gm, GaussianMixture) and gm.covariance_type == "tied"
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    assert not hasattr(gm, "n_passes_")  # that version did not count passes
    assert gm.acceleration is None  # that version ran plain EM
    frame = pd.DataFrame(data, columns=["a", "b", "c"])
    expected = np.load(os.path.join(HERE, "model_expected.npz"))
    np.testing.assert_array_equal(gm.predict_proba(frame), expected["predict_proba"])
    np.testing.assert_array_equal(gm.score_samples(frame), expected["score_samples"])


def test_a_model_file_from_0_1_0_saves_again_with_the_same_parameters(data, tmp_path):
    gm = daskem.load(os.path.join(HERE, "model.npz"))
    gm.save(tmp_path / "again.npz")
    again = daskem.load(tmp_path / "again.npz")
    for name in PARAMS + ["lower_bounds_"]:
        np.testing.assert_array_equal(getattr(again, name), getattr(gm, name))


def test_a_checkpoint_from_0_1_0_resumes_to_the_uninterrupted_fit(data):
    saved = load_checkpoint(os.path.join(HERE, "checkpoint"))
    assert (saved.state.init, saved.n_iter) == (1, 2)
    assert saved.state.n_passes == 0  # not recorded by that version
    gm = GaussianMixture(**CHECKPOINT_OPTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit(gm, data, resume=saved.state)
    uninterrupted = daskem.load(os.path.join(HERE, "checkpoint_final_model.npz"))
    for name in PARAMS + ["lower_bounds_"]:
        np.testing.assert_array_equal(getattr(gm, name), getattr(uninterrupted, name))
    assert gm.n_iter_ == uninterrupted.n_iter_ == 8
