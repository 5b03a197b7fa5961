"""Fit on selected columns of a Parquet dataset; write probabilities back to Parquet.

    python examples/parquet_fit.py                 # 2,000,000 rows in 8 files
    python examples/parquet_fit.py --rows 4000     # or DASKEM_EXAMPLE_ROWS=4000

The dataset is a directory of Parquet files with an id, a text column and four
numeric features. daskem.io.read takes only the named columns and makes chunks
of whole row groups (about 128 MiB each), reading one chunk per task; nothing
is loaded up front. Predicted probabilities go to a Parquet directory with one
file per chunk, written atomically (all files or none). This example uses
Dask's threaded scheduler; add a distributed.Client to run it on a cluster.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

import daskem
from daskem.io import read, write_parquet

FEATURES = ["height", "width", "depth", "mass"]


def write_dataset(path, n_rows, n_files=8, seed=0):
    """A Parquet directory: n_files files, each with row groups of 50,000 rows."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 1.0, 0.5, 30.0], [2.5, 4.0, 2.0, 20.0]])
    bounds = np.linspace(0, n_rows, n_files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        labels = rng.integers(3, size=hi - lo)
        values = centres[labels] + rng.standard_normal((hi - lo, 4)) * [0.3, 0.3, 0.3, 2.0]
        frame = pd.DataFrame(values, columns=FEATURES)
        frame.insert(0, "id", np.arange(lo, hi))
        frame.insert(1, "batch", f"batch-{i}")               # a text column we do not use
        frame.to_parquet(os.path.join(path, f"part-{i:03d}.parquet"), row_group_size=50_000)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=int(os.environ.get("DASKEM_EXAMPLE_ROWS", 2_000_000)))
    p.add_argument("--out-dir", default=os.environ.get("DASKEM_EXAMPLE_DIR"))
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="daskem-parquet-")

    dataset = os.path.join(out_dir, "measurements.parquet")
    write_dataset(dataset, args.rows)
    X = read(dataset, columns=FEATURES)       # lazy; "id" and "batch" are never read
    print(f"{dataset}: {X.shape[0]} rows, columns {FEATURES}, {len(X.chunks[0])} chunk(s)")

    gm = daskem.GaussianMixture(n_components=3, covariance_type="diag", random_state=0)
    start = time.perf_counter()
    gm.fit(X)
    print(f"converged: {gm.converged_} after {gm.n_iter_} iterations "
          f"in {time.perf_counter() - start:.1f} s; BIC {gm.bic(X):.1f}")

    target = os.path.join(out_dir, "probabilities.parquet")
    write_parquet(gm.predict_proba(X), target, columns=[f"p{k}" for k in range(3)])
    first = pd.read_parquet(target).head(3)
    print(f"probabilities written to {target}:\n{first.round(4).to_string()}")


if __name__ == "__main__":
    main()
