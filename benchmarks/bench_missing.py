"""Missing values at scale (issue 16): per-iteration cost, and accuracy against the truth.

Data: 1,000,000 x 16 rows from bench_em.py's mixture of K=16 full-covariance components
(float64, 20 chunks, persisted), and the same rows with 20% of the values missing
completely at random.

1. Per EM iteration: missing='marginalize' on the data with holes against the complete
   data, from the same starting parameters, ``--iters`` iterations, medians of
   ``iteration_seconds_`` (iterations 2..), the two alternating over ``--rounds``; on the
   threaded scheduler and on a LocalCluster of 2 worker processes x 1 thread with the data
   persisted on the workers (``--schedulers``).
2. Accuracy: the fitted mixture against the generating one (components matched to the
   true ones by their means) for 'marginalize', 'drop' (complete rows only) and filling
   the holes with column means: the largest error of a mean, the mean absolute error of
   the weights, and the relative Frobenius error of the covariances, each fit run to
   convergence (tol=1e-4) from the same k-means|| start.

Usage::

    python benchmarks/bench_missing.py                 # about 10 minutes
    python benchmarks/bench_missing.py --n 100000 --iters 3 --rounds 1 --schedulers processes
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import Mixture  # noqa: E402


def truth_and_data(n, d, k, fraction, seed=0):
    mix = Mixture(d, k, seed)
    rng = np.random.RandomState(seed + 1)
    labels = rng.randint(k, size=n)
    z = rng.randn(n, d) * mix.scales[labels]
    X = np.empty_like(z)
    covariances = np.empty((k, d, d))
    for j, r in enumerate(mix.rotations):
        sel = labels % len(mix.rotations) == j
        X[sel] = z[sel] @ r
    for c in range(k):
        r = mix.rotations[c % len(mix.rotations)]
        covariances[c] = r.T @ np.diag(mix.scales[c] ** 2) @ r
    X += mix.centres[labels]
    Xh = X.copy()
    Xh[rng.rand(n, d) < fraction] = np.nan
    weights = np.bincount(labels, minlength=k) / n
    return X, Xh, (weights, mix.centres, covariances)


def errors(gm, truth):
    weights, means, covariances = truth
    cost = ((gm.means_[:, None, :] - means[None]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    order = cols[np.argsort(rows)]
    mean_err = float(np.max(np.linalg.norm(gm.means_ - means[order], axis=1)))
    weight_err = float(np.mean(np.abs(gm.weights_ - weights[order])))
    cov_err = float(np.max([np.linalg.norm(gm.covariances_[i] - covariances[order[i]]) /
                            np.linalg.norm(covariances[order[i]]) for i in range(len(order))]))
    return mean_err, weight_err, cov_err


@contextlib.contextmanager
def scheduler(kind):
    """None for the threaded scheduler, else a client of 2 worker processes x 1 thread."""
    if kind == "threads":
        yield None
        return
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="8GiB",
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        yield client


def per_iteration(X, Xh, chunks, args, client):
    """Median seconds per EM iteration of the complete data and of the data with holes."""
    import dask.array as da

    from daskem import GaussianMixture

    Xd, Xhd = da.from_array(X, chunks=chunks), da.from_array(Xh, chunks=chunks)
    if client is None:
        Xd, Xhd = Xd.persist(), Xhd.persist()
    else:
        from distributed import wait

        Xd, Xhd = client.persist(Xd), client.persist(Xhd)
        wait([Xd, Xhd])
    start = GaussianMixture(args.k, max_iter=0, random_state=0).fit(Xd)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    complete, holes = [], []
    for r in range(args.rounds):
        for name in (("complete", "holes") if r % 2 == 0 else ("holes", "complete")):
            data, target = (Xd, complete) if name == "complete" else (Xhd, holes)
            gm = GaussianMixture(args.k, max_iter=args.iters, tol=0, missing="marginalize",
                                 acceleration=None, **init).fit(data)
            target.extend(gm.iteration_seconds_[1:])
        print(f"round {r + 1}", file=sys.stderr, flush=True)
    return statistics.median(complete), statistics.median(holes)


def main(argv=None):
    import dask.array as da

    from daskem import GaussianMixture

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--schedulers", default="threads,processes",
                   help="threads, processes (2 worker processes x 1 thread)")
    args = p.parse_args(argv)
    X, Xh, truth = truth_and_data(args.n, args.d, args.k, args.fraction)
    chunks = (-(-args.n // 20), args.d)
    warnings.simplefilter("ignore")
    timings = {}
    for kind in args.schedulers.split(","):
        with scheduler(kind) as client:
            timings[kind] = per_iteration(X, Xh, chunks, args, client)
    n_complete = int((~np.isnan(Xh).any(axis=1)).sum())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}. {args.n:,} x {args.d}, "
          f"K={args.k}, full covariance, float64, 20 chunks persisted; {args.fraction:.0%} of the values "
          f"missing completely at random ({n_complete:,} complete rows).\n")
    print("| scheduler | complete data, s per EM iteration | with holes, missing='marginalize' | "
          "against complete data |")
    print("|---|---|---|---|")
    for kind, (c, h) in timings.items():
        where = "threaded (2 threads)" if kind == "threads" else "2 worker processes x 1 thread"
        print(f"| {where} | {c:.3f} | {h:.3f} | **{h / c:.2f}x** (target: at most 3x) |")
    print()
    fits = {}
    for name in ("marginalize", "drop", "column means", "complete data (reference)"):
        if name == "column means":
            data, mode = np.where(np.isnan(Xh), np.nanmean(Xh, axis=0), Xh), "raise"
        elif name.startswith("complete"):
            data, mode = X, "raise"
        else:
            data, mode = Xh, name
        t0 = time.perf_counter()
        gm = GaussianMixture(args.k, tol=1e-4, missing=mode, random_state=0).fit(
            da.from_array(data, chunks=chunks))
        fits[name] = (errors(gm, truth), time.perf_counter() - t0, gm.n_iter_)
        print(f"{name}: {fits[name][1]:.1f} s", file=sys.stderr, flush=True)
    print("| fit | largest error of a mean | mean error of a weight | largest relative error of a "
          "covariance | EM iterations | wall (s) |")
    print("|---|---|---|---|---|---|")
    for name, ((m, w, cv), seconds, n_iter) in fits.items():
        print(f"| {name} | {m:.4f} | {w:.1e} | {cv:.4f} | {n_iter} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
