"""mclust's model-based hierarchical clustering (daskem._hc) against R mclust 6.0.0's hc().

The references (tests/fixtures/mclust, made by make_mclust_fixtures.R) are mclust's
``hc(X, modelName = "VVV", use = ...)`` merges and ``hclass(hc, 1:9)`` partitions for
Old Faithful and iris.
"""

import functools
import json
import pathlib

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from daskem import _hc

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "mclust"
DATASETS = ("faithful", "iris")


@functools.lru_cache(maxsize=None)
def reference():
    return json.loads((FIXTURES / "mclust_reference.json").read_text())["hc"]


@functools.lru_cache(maxsize=None)
def dataset(name):
    return np.loadtxt(FIXTURES / f"{name}.csv", delimiter=",", skiprows=1)


def mclust_merges(name, key="merges"):
    """mclust's merges, 0-based, shape (n - 1, 2)."""
    return np.asarray(reference()[name][key], dtype=np.intp).reshape(-1, 2) - 1


@pytest.mark.parametrize("name", DATASETS)
def test_svd_transform_is_mclusts(name):
    X = dataset(name)
    expected = np.asarray(reference()[name]["transformed"]).reshape(X.shape[0], -1)
    Z = _hc.transform(X, "SVD")
    signs = np.sign(np.sum(Z * expected, axis=0))  # an SVD fixes its vectors up to sign
    np.testing.assert_allclose(Z * signs, expected, atol=1e-12)
    # Z = U diag(sqrt(s)): centred, orthogonal columns with squared norms the singular values
    gram = Z.T @ Z
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-10)


@pytest.mark.parametrize("name", DATASETS)
def test_partitions_are_mclust_hclass(name):
    X = dataset(name)
    partitions = _hc.hierarchical_partitions(X, 9)
    assert len(partitions) == 9
    for k, labels in enumerate(partitions, start=1):
        expected = np.asarray(reference()[name]["partitions"][str(k)]) - 1
        np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("use", ["SVD", "STD"])
def test_every_merge_is_mclusts(name, use):
    key = "merges" if use == "SVD" else f"merges_{use}"
    np.testing.assert_array_equal(_hc.merge_pairs(dataset(name), use=use), mclust_merges(name, key))


def test_mclust_6_0_0s_stored_factor_is_reproduced():
    """On the raw faithful data the determinant term matters, and mclust 6.0.0's hcvvv sees
    its stored (first-row) factors for groups of three or more: only that reproduces it."""
    X, expected = dataset("faithful"), mclust_merges("faithful", "merges_VARS")
    np.testing.assert_array_equal(_hc.merge_pairs(X, use="VARS"), expected)
    textbook = _hc.merge_pairs(X, use="VARS", replicate_mclust=False)
    assert not np.array_equal(textbook, expected)


def test_raw_iris_agrees_up_to_a_tie_of_one_rounding_error():
    """iris on its raw scale (use = "VARS"): identical for 67 merges, then two merges whose
    costs differ by 1e-15 (equal in exact arithmetic) go the other way."""
    X, expected = dataset("iris"), mclust_merges("iris", "merges_VARS")
    merges = _hc.merge_pairs(X, use="VARS")
    np.testing.assert_array_equal(merges[:67], expected[:67])
    ours = _hc._partitions(len(X), merges, 9)
    theirs = _hc._partitions(len(X), expected, 9)
    agreement = [adjusted_rand_score(a, b) for a, b in zip(ours[1:], theirs[1:], strict=True)]
    assert min(agreement) > 0.5


def brute_force_merges(Z, alpha, beta=1.0):
    """The textbook VVV criterion, every cost from scratch (for continuous data: no ties)."""
    n, d = Z.shape
    groups = [[i] for i in range(n)]

    def term(members):
        pts = Z[members]
        size = len(members)
        centred = pts - pts.mean(axis=0)
        scatter = centred.T @ centred
        base = beta * (np.trace(scatter) + alpha) / size
        if size <= d:
            return size * np.log(base)
        return size * np.log(np.linalg.det(scatter / size) + base)

    terms = [term(g) for g in groups]
    merges = []
    while len(groups) > 1:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                cost = term(groups[a] + groups[b]) - terms[a] - terms[b]
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        _, a, b = best
        merged = groups[a] + groups[b]
        merges.append((min(groups[a]), min(groups[b])))
        groups[a], terms[a] = merged, term(merged)
        del groups[b], terms[b]
    return np.sort(np.array(merges), axis=1)


def test_the_textbook_criterion_against_a_brute_force_search():
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(size=(25, 3)), rng.normal(size=(20, 3)) * 0.5 + 2.0])
    Z = _hc.transform(X, "VARS")
    alpha = np.sum((Z - Z.mean(axis=0)) ** 2) / Z.size
    expected = brute_force_merges(Z, alpha)
    np.testing.assert_array_equal(_hc.merge_pairs(X, use="VARS", replicate_mclust=False), expected)


def test_partitions_are_nested_and_labelled_by_first_appearance():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(150, 3)) + shift for shift in (0.0, 4.0, 8.0)])
    partitions = _hc.hierarchical_partitions(X, 6)
    for k, labels in enumerate(partitions, start=1):
        assert labels.shape == (450,) and labels.dtype.kind == "i"
        _, first = np.unique(labels, return_index=True)
        assert np.unique(labels).tolist() == list(range(k))
        assert np.all(np.diff(first) > 0)  # label order = order of first appearance
        if k > 1:
            coarse = partitions[k - 2]
            # every group of the finer partition lies inside one group of the coarser
            for label in range(k):
                assert len(np.unique(coarse[labels == label])) == 1
    assert adjusted_rand_score(np.repeat([0, 1, 2], 150), partitions[2]) > 0.9


def test_more_components_than_rows_gives_every_partition():
    X = np.array([[0.0, 0.0], [1.0, 0.2], [0.1, 1.0], [3.0, 3.0]])
    partitions = _hc.hierarchical_partitions(X, 10)
    assert len(partitions) == 4
    np.testing.assert_array_equal(partitions[-1], [0, 1, 2, 3])
    np.testing.assert_array_equal(partitions[0], [0, 0, 0, 0])


def test_transforms_and_their_errors():
    X = dataset("iris")
    std = _hc.transform(X, "STD")
    np.testing.assert_allclose(std.std(axis=0, ddof=1), 1.0)
    np.testing.assert_array_equal(_hc.transform(X, "vars"), X)
    # a constant column is dropped, as mclust's dropCols does
    with_constant = np.column_stack([X, np.ones(len(X))])
    np.testing.assert_allclose(np.abs(_hc.transform(with_constant)), np.abs(_hc.transform(X)), atol=1e-12)
    with pytest.raises(ValueError, match="use must be one of"):
        _hc.transform(X, "PCA")
    with pytest.raises(ValueError, match="rank deficient"):
        _hc.transform(np.column_stack([X[:, 0], 2.0 * X[:, 0]]))
    with pytest.raises(ValueError, match="non-constant"):
        _hc.transform(np.ones((5, 2)))
    with pytest.raises(ValueError, match="at least 1"):
        _hc.hierarchical_partitions(X, 0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        _hc.merge_pairs(X[:1], use="VARS")
