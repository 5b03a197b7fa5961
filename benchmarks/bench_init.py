"""Quality of the initialisations: which optimum each start leads EM to (issue 18).

For ``init_params`` in ``--inits`` (default: the coreset start and k-means||), whole
default fits (tol=1e-4, threaded scheduler, 20 row chunks), one per seed:

* on the overlapping clusters of bench_solution.py (``--cases``; ``--covariance-types``,
  full by default): the final mean log-likelihood of each fit, and how many fits end within
  1e-3 of the best one any fit reached;
* on 15 overlapping clusters plus one small cluster far away (``--far``: rows of the small
  cluster, its centre 40 from the origin; 1,000,000 x 16, K=16): how many fits put a mean
  within 1.0 of the small cluster's centre.

Usage::

    python benchmarks/bench_init.py                             # about 15 minutes
    python benchmarks/bench_init.py --cases slow --far 500 --seeds 0,1
    python benchmarks/bench_init.py --inits kmeans --covariance-types full,diag --far "" --seeds 0,1,2
"""

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import Mixture  # noqa: E402
from bench_solution import CASES, CHUNKS, TOL, overlapping_data  # noqa: E402

FAR_DISTANCE = 40.0
BEST_WITHIN = 1e-3


def fit(X, k, init, seed, covariance_type="full"):
    import dask.array as da

    from daskem import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xd = da.from_array(X, chunks=(-(-len(X) // CHUNKS), X.shape[1]))
        return GaussianMixture(k, covariance_type=covariance_type, tol=TOL, random_state=seed,
                               init_params=init).fit(Xd)


def far_cluster_data(n_small, n=1_000_000, d=16):
    mix = Mixture(d, 15, seed=3)
    mix.centres *= 0.5
    far = np.full(d, FAR_DISTANCE / np.sqrt(d))
    X = np.vstack([mix.rows(n - n_small, 1), far + np.random.RandomState(5).randn(n_small, d)])
    return X[np.random.RandomState(6).permutation(n)], far


def row(label, cells):
    return "| " + " | ".join([label, *cells]) + " |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inits", default="coreset,k-means||")
    p.add_argument("--cases", default="slow,big")
    p.add_argument("--covariance-types", default="full")
    p.add_argument("--far", default="500,100", help="rows of the small far cluster, per data set")
    p.add_argument("--seeds", default="0,1,2,3,4")
    args = p.parse_args(argv)
    inits, seeds = args.inits.split(","), [int(s) for s in args.seeds.split(",")]
    lines = [row("data", inits), "|---" * (len(inits) + 1) + "|"]
    for case in filter(None, args.cases.split(",")):
        n, d, k = CASES[case]
        X = overlapping_data(n, d, k, np.float64)
        for cov in args.covariance_types.split(","):
            scores = {init: [fit(X, k, init, seed, cov).score(X) for seed in seeds] for init in inits}
            best = max(max(s) for s in scores.values())
            cells = [f"{sum(s >= best - BEST_WITHIN for s in scores[i])} of {len(seeds)} "
                     f"(median {np.median(scores[i]):.6f}; {', '.join(f'{v:.6f}' for v in scores[i])})"
                     for i in inits]
            lines.append(row(f"{n:,} x {d}, K={k}, {cov}: at the best optimum ({best:.6f})", cells))
    for n_small in filter(None, args.far.split(",")):
        X, far = far_cluster_data(int(n_small))
        cells = []
        for init in inits:
            found = sum(np.linalg.norm(fit(X, 16, init, seed).means_ - far, axis=1).min() < 1.0
                        for seed in seeds)
            cells.append(f"{found} of {len(seeds)}")
        lines.append(row(f"far cluster of {int(n_small)} rows in 1,000,000 x 16, K=16: found", cells))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
