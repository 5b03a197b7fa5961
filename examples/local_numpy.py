"""Fit a Gaussian mixture to a NumPy array with every core of this machine.

    python examples/local_numpy.py                   # 1,000,000 rows
    python examples/local_numpy.py --rows 2000       # or DASKEM_EXAMPLE_ROWS=2000

NumPy input is cut into row chunks that Dask's threaded scheduler processes
on all cores: there is no cluster to start and no data is copied between
processes. (A LocalCluster of worker *processes* would first ship the array
to its workers; for data already in memory, threads are the right choice.)
The model is saved to a temporary directory (or --out-dir) and loaded back.
"""

import argparse
import os
import tempfile
import time

import numpy as np

import daskem


def make_data(n_rows, seed=0):
    """Three 2-D Gaussian clusters of different shapes; returns X and the true means."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [6.0, 6.0], [-5.0, 7.0]])
    scales = [np.eye(2), np.array([[1.0, 0.6], [0.0, 0.5]]), np.diag([0.5, 2.0])]
    labels = rng.choice(3, size=n_rows, p=[0.5, 0.3, 0.2])
    X = np.empty((n_rows, 2))
    for k in range(3):
        idx = labels == k
        X[idx] = rng.standard_normal((idx.sum(), 2)) @ scales[k] + means[k]
    return X, means


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=int(os.environ.get("DASKEM_EXAMPLE_ROWS", 1_000_000)))
    p.add_argument("--out-dir", default=os.environ.get("DASKEM_EXAMPLE_DIR"))
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="daskem-local-numpy-")
    os.makedirs(out_dir, exist_ok=True)

    X, true_means = make_data(args.rows)
    gm = daskem.GaussianMixture(n_components=3, covariance_type="full", random_state=0)
    start = time.perf_counter()
    gm.fit(X)                                   # NumPy in: Dask threads on every core
    seconds = time.perf_counter() - start
    print(f"fitted {gm.n_components} components to {X.shape[0]} rows x {X.shape[1]} features "
          f"in {seconds:.1f} s ({os.cpu_count()} cores)")
    print(f"converged: {gm.converged_} after {gm.n_iter_} iterations; "
          f"mean log-likelihood {gm.score(X):.4f}")
    for k in np.argsort(-gm.weights_):
        print(f"  component {k}: weight {gm.weights_[k]:.3f}  mean {np.round(gm.means_[k], 2)}")
    error = np.linalg.norm(true_means[:, None] - gm.means_[None], axis=2).min(axis=1).max()
    print(f"largest distance from a true mean to the nearest fitted mean: {error:.3f}")

    labels = gm.predict(X)                      # NumPy in, NumPy out
    path = os.path.join(out_dir, "model.npz")
    gm.save(path)
    again = daskem.load(path)
    assert np.array_equal(again.predict(X[:1000]), labels[:1000])
    print(f"model written to {path}")


if __name__ == "__main__":
    main()
